//! Retention: results older than `results_ttl_s` are deleted. Whether one has
//! expired is [`expired`], a pure function of its name, modification time, the
//! clock and the TTL; [`sweep`] lists the store and deletes what it says.
//!
//! Only a task's own files are ever deleted: names shaped like results
//! ([`is_result_name`]) whose task has its `<task_id>.json` (the metadata file the
//! engine writes last) and a video or preview in the same listing ([`doomed`]).
//! Anything else an operator keeps in the directory or bucket stays: an
//! `intro.mp4`, or `inference_settings.json` in a results directory set to the
//! wrong place. Videos go before their `.json`, so a task whose delete failed is
//! still recognised at the next sweep.

use super::{Listed, ResultStore, ResultsError, RESULT_EXTENSIONS};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};
use warmlane_shared::request::task_id_ok;

/// Whether `name` is one of a task's result files: `<task_id>.mp4`, `.gif` or `.json`.
pub fn is_result_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(id, ext)| RESULT_EXTENSIONS.contains(&ext) && task_id_ok(id))
}

/// Whether the stored `name`, last written at `modified`, is past its `ttl` at
/// `now` (`None`: kept forever). A time in the future (clock skew between hosts)
/// is not expired.
pub fn expired(name: &str, modified: SystemTime, now: SystemTime, ttl: Option<Duration>) -> bool {
    let Some(ttl) = ttl else { return false };
    is_result_name(name) && now.duration_since(modified).is_ok_and(|age| age >= ttl)
}

/// The names of `listing` to delete at `now`: the expired files of tasks whose
/// `<id>.json` and `<id>.mp4` or `<id>.gif` are listed, each task's `.json` after
/// its video and preview. Pure.
pub fn doomed(listing: &[(String, SystemTime)], now: SystemTime, ttl: Option<Duration>) -> Vec<String> {
    let stem = |name: &str, ext: &str| name.strip_suffix(ext).map(str::to_string);
    let media: HashSet<String> =
        listing.iter().filter_map(|(name, _)| stem(name, ".mp4").or_else(|| stem(name, ".gif"))).collect();
    let marked: HashSet<String> = listing.iter().filter_map(|(name, _)| stem(name, ".json")).collect();
    let task = |name: &str| {
        name.rsplit_once('.').map(|(id, _)| id.to_string()).filter(|id| media.contains(id) && marked.contains(id))
    };
    let mut doomed: Vec<String> = listing
        .iter()
        .filter(|(name, modified)| expired(name, *modified, now, ttl) && task(name).is_some())
        .map(|(name, _)| name.clone())
        .collect();
    doomed.sort_by_key(|name| (name.ends_with(".json"), name.clone()));
    doomed
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// The results deleted.
    pub deleted: Vec<String>,
    /// Entries left in place (within the TTL, or not results).
    pub kept: usize,
    /// Deletes that failed (tried again at the next sweep).
    pub failed: Vec<ResultsError>,
}

/// Deletes the results of `store` expired at `now`. A listing that fails is the
/// error; a delete that fails is counted and the sweep goes on.
pub async fn sweep(store: &ResultStore, ttl: Option<Duration>, now: SystemTime) -> Result<Swept, ResultsError> {
    let mut swept = Swept::default();
    if ttl.is_none() {
        return Ok(swept);
    }
    let listing: Vec<(String, SystemTime)> =
        store.list().await?.into_iter().map(|Listed { name, modified, .. }| (name, modified)).collect();
    let doomed = doomed(&listing, now, ttl);
    swept.kept = listing.len() - doomed.len();
    // A task whose video could not be deleted keeps its `.json`, and with it its
    // place in the next sweep.
    let mut unfinished: HashSet<String> = HashSet::new();
    for name in doomed {
        let id = name.rsplit_once('.').map_or(name.as_str(), |(id, _)| id).to_string();
        if name.ends_with(".json") && unfinished.contains(&id) {
            swept.kept += 1;
            continue;
        }
        match store.delete(&name).await {
            Ok(()) => swept.deleted.push(name),
            Err(e) => {
                unfinished.insert(id);
                swept.failed.push(e);
            }
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_expired_results_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let ago = |s: u64| now - Duration::from_secs(s);
        let cases = [
            ("t-1.mp4", ago(86_400), Some(day), true),
            ("t-1.gif", ago(90_000), Some(day), true),
            ("t_1.json", ago(86_401), Some(day), true),
            ("t-1.mp4", ago(86_399), Some(day), false),
            ("t-1.mp4", now + Duration::from_secs(60), Some(day), false),
            ("t-1.mp4", ago(999_999), None, false),
            ("t-1.mp4", ago(1), Some(Duration::ZERO), true),
            ("notes.txt", ago(999_999), Some(day), false),
            ("t-1.mp4.partial", ago(999_999), Some(day), false),
            (".t-1.mp4.partial", ago(999_999), Some(day), false),
            ("t 1.mp4", ago(999_999), Some(day), false),
            (".mp4", ago(999_999), Some(day), false),
            ("t-1.MP4", ago(999_999), Some(day), false),
            ("t-1", ago(999_999), Some(day), false),
        ];
        for (name, modified, ttl, want) in cases {
            assert_eq!(expired(name, modified, now, ttl), want, "{name} {modified:?} {ttl:?}");
        }
        assert!(!is_result_name(&format!("{}.mp4", "a".repeat(65))), "a task id is at most 64 characters");
    }

    #[test]
    fn only_a_tasks_own_files_are_doomed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let old = now - Duration::from_secs(7_200);
        let hour = Some(Duration::from_secs(3_600));
        let cases: [(&[&str], &[&str]); 8] = [
            (&["t.json", "t.mp4", "t.gif"], &["t.gif", "t.mp4", "t.json"]),
            (&["t.gif", "t.json"], &["t.gif", "t.json"]),
            (&["intro.mp4"], &[]),
            (&["intro.mp4", "intro.gif"], &[]),
            (&["inference_settings.json"], &[]),
            (&["t.json", "u.mp4"], &[]),
            (&["notes.txt", "t.mp4", "t.json", "u.gif"], &["t.mp4", "t.json"]),
            (&["a.json", "a.mp4", "b.json", "b.mp4"], &["a.mp4", "b.mp4", "a.json", "b.json"]),
        ];
        for (listed, want) in cases {
            let listing: Vec<(String, SystemTime)> = listed.iter().map(|n| (n.to_string(), old)).collect();
            assert_eq!(doomed(&listing, now, hour), want, "{listed:?}");
        }
        let fresh_video = vec![("t.mp4".to_string(), now), ("t.json".to_string(), old)];
        assert_eq!(doomed(&fresh_video, now, hour), ["t.json"], "each file by its own age");
        assert!(doomed(&fresh_video, now, None).is_empty(), "no TTL, nothing doomed");
    }

    #[tokio::test]
    async fn the_file_sweeper_deletes_only_expired_results() {
        let dir = std::env::temp_dir().join(format!("warmlane-sweep-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.mp4")).expect("dir");
        let store = ResultStore::files(&dir);
        let now = SystemTime::now();
        let hour = Duration::from_secs(3_600);
        let files = [
            ("old.mp4", 2 * hour),
            ("old.gif", 2 * hour),
            ("old.json", 2 * hour),
            ("new.json", hour / 2),
            ("intro.mp4", 9 * hour),
            ("new.mp4", hour / 2),
            ("keep.txt", 9 * hour),
            ("inference_settings.json", 9 * hour),
        ];
        for (name, age) in files {
            let file = std::fs::File::create(dir.join(name)).expect("create");
            file.set_modified(now - age).expect("set mtime");
        }
        let swept = sweep(&store, Some(hour), now).await.expect("sweep");
        let mut deleted = swept.deleted.clone();
        deleted.sort();
        assert_eq!(deleted, ["old.gif", "old.json", "old.mp4"]);
        assert!(swept.failed.is_empty() && swept.kept == 5, "{swept:?}");
        let left = [
            ("old.mp4", false),
            ("old.json", false),
            ("new.mp4", true),
            ("new.json", true),
            ("intro.mp4", true),
            ("keep.txt", true),
            ("sub.mp4", true),
            ("inference_settings.json", true),
        ];
        for (name, left) in left {
            assert_eq!(dir.join(name).exists(), left, "{name}");
        }
        let forever = sweep(&store, None, now + hour * 1_000).await.expect("sweep");
        assert!(forever.deleted.is_empty() && dir.join("new.mp4").exists(), "a TTL of none keeps everything");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
