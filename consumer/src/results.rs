//! The worker's side of the results store: a run's files go to the store named
//! by `--results-url` (default: the file store at `--results-dir`, where the engine
//! writes them, so nothing moves), and expired results are swept.
//!
//! With a remote store the results directory is scratch: the engine writes there,
//! [`keep`] uploads the files (the S3 client retries a request twice) and removes
//! the local copies whether or not the upload succeeded, so a worker's disk never
//! fills. A failed upload fails the task (`inference_failed`/`storage`).
//!
//! All store I/O runs on the background runtime: the S3 client's pooled
//! connections must not live on the lane thread, which stops polling while the
//! engine runs.

use crate::ctx::Ctx;
use crate::engine::Output;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use warmlane_infra::results::{self, Op, ResultsError};
use warmlane_infra::{Report, ResultStore};
use warmlane_shared::metrics as m;

/// How often the worker sweeps expired results: cheap (one listing) and far
/// below any sensible TTL.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Where the results store keeps a run's files: the URIs its reply carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The video (`file:///dir/<task_id>.mp4`, `s3://bucket/prefix/<task_id>.mp4`).
    pub uri: String,
    /// The GIF preview, when the engine wrote one.
    pub preview_uri: Option<String>,
}

/// Where a worker keeps results and for how long.
#[derive(Debug, Clone, Default)]
pub struct ResultsConfig {
    /// The store; `None`: the file store at the worker's results directory.
    pub store: Option<ResultStore>,
    /// Delete results older than this; `None` keeps them forever (and runs no sweeper).
    pub ttl: Option<Duration>,
}

impl ResultsConfig {
    /// From `--results-url` (unset or empty: the file store at the results
    /// directory) and `--results-ttl-s` (0: forever). An S3 store reads the `AWS_*`
    /// environment now, so bad settings stop the worker at start.
    pub fn from_flags(url: Option<&str>, ttl_s: u64) -> Result<ResultsConfig, ResultsError> {
        let store = match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Some(ResultStore::open(url)?),
            None => None,
        };
        Ok(ResultsConfig { store, ttl: (ttl_s > 0).then(|| Duration::from_secs(ttl_s)) })
    }

    /// The store in force for a worker whose results directory is `dir`.
    pub fn store_or_files(&self, dir: &std::path::Path) -> ResultStore {
        self.store.clone().unwrap_or_else(|| ResultStore::files(dir))
    }

    /// Where the engine writes a run's files: a file store's own directory (so the
    /// files are stored where they are written, with no copy left behind), else
    /// `results_dir` (scratch for a remote store, or the default file store).
    pub fn work_dir(&self, results_dir: &std::path::Path) -> PathBuf {
        self.store.as_ref().and_then(|s| s.url().dir()).map_or_else(|| results_dir.to_path_buf(), |d| d.to_path_buf())
    }
}

/// A run's files on the local disk with their names in the store: the video,
/// the preview, and the metadata file when the engine wrote one.
fn files_of(out: &Output) -> Vec<(String, PathBuf)> {
    let json = out.path.with_extension("json");
    let json = json.exists().then_some(json);
    [Some(out.path.clone()), out.preview_path.clone(), json]
        .into_iter()
        .flatten()
        .filter_map(|path| Some((path.file_name()?.to_str()?.to_string(), path)))
        .collect()
}

/// Whether the engine wrote `out` into the file store's own directory (the usual
/// case): then it is stored already.
fn in_place(store: &ResultStore, out: &Output) -> bool {
    store.url().dir().is_some_and(|dir| {
        out.path.parent().and_then(|written| std::path::absolute(written).ok()).is_some_and(|w| w.as_path() == dir)
    })
}

/// The URIs a reply carries for `out` in `store`.
fn uris(store: &ResultStore, out: &Output) -> Stored {
    let uri_of = |path: &PathBuf| Some(store.uri_of(path.file_name()?.to_str()?));
    Stored { uri: uri_of(&out.path).unwrap_or_default(), preview_uri: out.preview_path.as_ref().and_then(uri_of) }
}

/// Puts a run's files in the store and returns the URIs its reply carries. Files
/// the engine wrote into a file store need nothing (and no hop to the background
/// runtime, which would lengthen every task's path).
pub async fn keep(ctx: &Ctx, task_id: &str, out: &Output) -> Result<Stored, ResultsError> {
    if in_place(&ctx.results, out) {
        return Ok(uris(&ctx.results, out));
    }
    let (store, out_bg) = (ctx.results.clone(), out.clone());
    let stored = ctx.background.spawn(async move { put_all(&store, &out_bg).await }).await;
    let stored = stored.unwrap_or_else(|e| {
        let name = out.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Err(ResultsError::Failed { url: ctx.results.url().to_string(), op: Op::Put, name, source: Box::new(e) })
    });
    if let Err(e) = &stored {
        metrics::counter!(m::RESULTS_STORE_FAILURES, m::TAG_OP => Op::Put.as_str()).increment(1);
        tracing::error!(task_id, store = %ctx.results.url(), error = %Report(e), "storing the result failed; the task fails with inference_failed/storage");
    }
    stored
}

async fn put_all(store: &ResultStore, out: &Output) -> Result<Stored, ResultsError> {
    let files = files_of(out);
    let mut put = Ok(());
    for (name, path) in &files {
        put = store.put_file(name, path).await;
        if put.is_err() {
            break;
        }
    }
    if store.url().dir().is_none() {
        // Scratch copies go, stored or not; half a result is not left in the store.
        for (name, path) in &files {
            let _ = tokio::fs::remove_file(path).await;
            if put.is_err() {
                let _ = store.delete(name).await;
            }
        }
    }
    put?;
    Ok(uris(store, out))
}

/// Removes a run's files, local and stored (the task ended `cancelled`: nobody
/// will fetch them).
pub async fn discard(ctx: &Ctx, out: &Output) {
    let (store, files) = (ctx.results.clone(), files_of(out));
    let removed = ctx.background.spawn(async move {
        for (name, path) in files {
            let _ = tokio::fs::remove_file(&path).await;
            if let Err(e) = store.delete(&name).await {
                tracing::warn!(error = %Report(&e), "could not delete a cancelled run's result");
            }
        }
    });
    let _ = removed.await;
}

/// Deletes expired results every [`SWEEP_EVERY`], for the worker's life (spawned
/// only when a TTL is set). Several workers may sweep one store: a delete of a
/// result already gone is no error.
pub async fn sweep_loop(store: ResultStore, ttl: Duration) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match results::sweep(&store, Some(ttl), SystemTime::now()).await {
            Ok(swept) => {
                metrics::counter!(m::RESULTS_EXPIRED).increment(swept.deleted.len() as u64);
                for e in &swept.failed {
                    metrics::counter!(m::RESULTS_STORE_FAILURES, m::TAG_OP => Op::Delete.as_str()).increment(1);
                    tracing::warn!(error = %Report(e), "could not delete an expired result; retried at the next sweep");
                }
                if !swept.deleted.is_empty() {
                    tracing::info!(store = %store.url(), deleted = swept.deleted.len(), kept = swept.kept, "expired results deleted");
                }
            }
            Err(e) => {
                metrics::counter!(m::RESULTS_STORE_FAILURES, m::TAG_OP => Op::List.as_str()).increment(1);
                tracing::warn!(error = %Report(&e), "could not list the results store to sweep it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_the_store_and_the_ttl() {
        let default = ResultsConfig::from_flags(None, 86_400).expect("default");
        assert!(default.store.is_none() && default.ttl == Some(Duration::from_secs(86_400)));
        let forever = ResultsConfig::from_flags(Some(" "), 0).expect("empty is unset");
        assert!(forever.store.is_none() && forever.ttl.is_none());
        let files = ResultsConfig::from_flags(Some("file:///srv/results"), 60).expect("files");
        let dir = std::path::Path::new("/elsewhere");
        assert_eq!(files.store_or_files(dir).url().to_string(), "file:///srv/results");
        assert_eq!(default.store_or_files(dir).url().to_string(), "file:///elsewhere");
        assert_eq!(files.work_dir(dir), std::path::Path::new("/srv/results"), "the engine writes into a file store");
        assert_eq!(default.work_dir(dir), dir, "the default store is the results directory");
        let bad = ResultsConfig::from_flags(Some("ftp://x/y"), 60).expect_err("refused");
        assert!(Report(&bad).to_string().contains("results URL `ftp://x/y`: unsupported scheme"), "{}", Report(&bad));
    }

    #[test]
    fn files_written_into_a_file_store_are_stored_in_place() {
        let out = |path: &str, preview: Option<&str>| Output {
            path: path.into(),
            bytes: 1,
            preview_path: preview.map(PathBuf::from),
            frames: 1,
            width: 8,
            height: 8,
            inference_ms: 0,
        };
        let files = ResultStore::files(std::path::Path::new("/srv/r"));
        let s3 = ResultStore::open_with_env("s3://bucket/p", vec![]).expect("an S3 store");
        let cases = [
            (&files, out("/srv/r/t.mp4", Some("/srv/r/t.gif")), true),
            (&files, out("/srv/r/../r/t.mp4", None), false),
            (&files, out("/scratch/t.mp4", None), false),
            (&s3, out("/srv/r/t.mp4", None), false),
        ];
        for (store, output, want) in cases {
            assert_eq!(in_place(store, &output), want, "{:?} in {}", output.path, store.url());
        }
        let stored = uris(&files, &out("/srv/r/t.mp4", Some("/srv/r/t.gif")));
        assert_eq!(
            stored,
            Stored { uri: "file:///srv/r/t.mp4".into(), preview_uri: Some("file:///srv/r/t.gif".into()) }
        );
        assert_eq!(uris(&s3, &out("/scratch/t.mp4", None)).uri, "s3://bucket/p/t.mp4");
    }
}
