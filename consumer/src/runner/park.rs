//! The degraded worker's parked pipelines: the ORT form of recently used pipelines,
//! kept in sealed memfds in the worker (not in a runner), so a switch back to one of
//! them maps its bytes instead of reading and converting the `.onnx` files.
//!
//! Why in the worker: a runner exits on every switch (its memory must come back, and
//! the kernel is the reliable way), so only the worker outlives it. The bytes are
//! host memory, bounded by `--host-park-bytes` with least-recently-used eviction
//! ([`evictions`], pure). A runner that loads cold writes the ORT form into memfds of
//! its own; the worker adopts them (opens `/proc/<runner>/fd/<n>` and seals them)
//! before that runner can exit, and later offers them as `/proc/<worker>/fd/<n>`.

use super::protocol::{ParkRequest, ParkedPart};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use warmlane_engine::ComponentRole;

/// The share of the host's memory parked bytes may use when `--host-park-bytes` is
/// not given.
pub const DEFAULT_HOST_SHARE: u64 = 4;

/// `--host-park-bytes` by default: a quarter of the memory this worker may use, the
/// host's MemTotal or its container's memory limit, whichever is smaller (parked
/// memfds are charged to the container); 0, parking off, when neither can be read.
pub fn default_budget(host_total_bytes: Option<u64>, cgroup_limit_bytes: Option<u64>) -> u64 {
    let total = match (host_total_bytes, cgroup_limit_bytes) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    };
    total.map_or(0, |t| t / DEFAULT_HOST_SHARE)
}

/// The default budget on this host (see [`default_budget`]).
pub fn default_budget_here() -> u64 {
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| cgroup_limit(&text));
    default_budget(warmlane_engine::memory::host_total_bytes(), cgroup)
}

/// A cgroup memory limit file's value: `max` (v2) or a number; v1 writes a number near
/// `i64::MAX` for no limit.
pub fn cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&n| n < 1 << 60)
}

/// Which parked models to evict, least recently used first, so that `incoming` bytes
/// fit in `budget` beside the rest; `None` when they do not fit even alone. `parked`
/// is in LRU order (least recent first) as `(model, bytes)`.
pub fn evictions(parked: &[(&str, u64)], budget: u64, incoming: u64) -> Option<Vec<String>> {
    if incoming > budget {
        return None;
    }
    let mut held: u64 = parked.iter().map(|(_, b)| b).sum();
    let mut out = Vec::new();
    for (model, bytes) in parked {
        if held + incoming <= budget {
            break;
        }
        held -= bytes;
        out.push((*model).to_string());
    }
    Some(out)
}

struct Part {
    role: ComponentRole,
    file: File,
    len: u64,
}

struct Entry {
    model: String,
    parts: Vec<Part>,
}

impl Entry {
    fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.len).sum()
    }
}

/// The parked pipelines, least recently used first.
pub struct ParkCache {
    budget: u64,
    entries: Vec<Entry>,
}

impl ParkCache {
    /// An empty cache holding at most `budget` bytes (0: parking off).
    pub fn new(budget: u64) -> ParkCache {
        ParkCache { budget, entries: Vec::new() }
    }

    /// The host budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(Entry::bytes).sum()
    }

    /// The parked models, least recently used first.
    pub fn models(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.model.clone()).collect()
    }

    /// What a runner loading `model` is offered: its parked bytes when held (which
    /// marks it most recently used), else a request to save the ORT form when a
    /// pipeline of `file_bytes` could be kept under the budget.
    pub fn request_for(&mut self, model: &str, file_bytes: u64) -> ParkRequest {
        if let Some(i) = self.entries.iter().position(|e| e.model == model) {
            let entry = self.entries.remove(i);
            let pid = std::process::id();
            let from = entry.parts.iter().map(|p| (p.role, format!("/proc/{pid}/fd/{}", p.file.as_raw_fd()))).collect();
            self.entries.push(entry);
            return ParkRequest { save: false, from };
        }
        ParkRequest { save: self.budget > 0 && file_bytes <= self.budget, from: Vec::new() }
    }

    /// Adopts the memfds a runner (`pid`) wrote for `model`: opens and seals each, then
    /// evicts least recently used pipelines until it fits. Returns the bytes parked; a
    /// memfd that cannot be adopted or whose length changed parks nothing.
    pub fn adopt(&mut self, model: &str, pid: u32, parts: &[ParkedPart]) -> Result<u64, String> {
        let mut adopted = Vec::new();
        for part in parts {
            let path = PathBuf::from(format!("/proc/{pid}/fd/{}", part.fd));
            let (file, len) = warmlane_engine::park::adopt(&path)
                .map_err(|e| format!("cannot adopt {} ({}): {e}", path.display(), part.role.as_str()))?;
            if len != part.len {
                return Err(format!("{} parked {} bytes, the runner said {}", part.role.as_str(), len, part.len));
            }
            adopted.push(Part { role: part.role, file, len });
        }
        self.insert(Entry { model: model.to_string(), parts: adopted })
    }

    fn insert(&mut self, entry: Entry) -> Result<u64, String> {
        self.forget(&entry.model);
        let sizes: Vec<(&str, u64)> = self.entries.iter().map(|e| (e.model.as_str(), e.bytes())).collect();
        let bytes = entry.bytes();
        let Some(evict) = evictions(&sizes, self.budget, bytes) else {
            return Err(format!("{bytes} bytes do not fit the host park budget of {} bytes", self.budget));
        };
        for model in evict {
            tracing::info!(model, "parked pipeline evicted (host park budget)");
            self.forget(&model);
        }
        self.entries.push(entry);
        Ok(bytes)
    }

    /// Drops `model`'s parked bytes (evicted, or found unusable).
    pub fn forget(&mut self, model: &str) {
        self.entries.retain(|e| e.model != model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_table() {
        let parked = [("a", 40), ("b", 30), ("c", 20)];
        let s = |v: &[&str]| Some(v.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        type Case<'a> = (&'a [(&'a str, u64)], u64, u64, Option<Vec<String>>);
        let cases: Vec<Case> = vec![
            (&[], 100, 60, s(&[])),
            (&[], 100, 101, None),
            (&parked, 100, 10, s(&[])),
            (&parked, 100, 11, s(&["a"])),
            (&parked, 100, 60, s(&["a", "b"])),
            (&parked, 100, 100, s(&["a", "b", "c"])),
            (&parked, 100, 101, None),
            (&parked, 0, 1, None),
        ];
        for (parked, budget, incoming, want) in cases {
            assert_eq!(evictions(parked, budget, incoming), want, "{parked:?} budget {budget} + {incoming}");
        }
    }

    #[test]
    fn default_budget_is_a_quarter_of_the_host_or_its_container() {
        let cases = [
            (Some(64 << 30), None, 16 << 30),
            (Some(64 << 30), Some(8 << 30), 2 << 30),
            (Some(8 << 30), Some(64 << 30), 2 << 30),
            (None, Some(4 << 30), 1 << 30),
            (None, None, 0),
        ];
        for (host, cgroup, want) in cases {
            assert_eq!(default_budget(host, cgroup), want, "{host:?} {cgroup:?}");
        }
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("8589934592\n"), Some(8 << 30));
        assert_eq!(cgroup_limit("9223372036854771712\n"), None, "cgroup v1 without a limit");
        assert_eq!(cgroup_limit("garbage"), None);
    }

    fn memfd(len: usize) -> (warmlane_engine::park::ParkTarget, ParkedPart) {
        let target = warmlane_engine::park::ParkTarget::new("test").expect("memfd");
        std::fs::write(target.path(), vec![7_u8; len]).expect("write");
        let part = ParkedPart { role: ComponentRole::Denoiser, fd: target.raw_fd(), len: len as u64 };
        (target, part)
    }

    #[test]
    fn adopted_bytes_are_offered_and_evicted_lru_under_the_budget() {
        let pid = std::process::id();
        let mut cache = ParkCache::new(10_000);
        assert_eq!(cache.request_for("a", 4_000), ParkRequest { save: true, from: vec![] });
        assert_eq!(cache.request_for("huge", 10_001), ParkRequest { save: false, from: vec![] });
        let (_ta, a) = memfd(4_000);
        let (_tb, b) = memfd(5_000);
        let (_tc, c) = memfd(3_000);
        assert_eq!(cache.adopt("a", pid, &[a]), Ok(4_000));
        assert_eq!(cache.adopt("b", pid, &[b]), Ok(5_000));
        // Using `a` makes `b` the least recently used.
        let offer = cache.request_for("a", 4_000);
        assert!(!offer.save && offer.from.len() == 1, "{offer:?}");
        let bytes = std::fs::read(&offer.from[0].1).expect("the offered path maps the bytes");
        assert_eq!(bytes.len(), 4_000);
        assert_eq!(cache.adopt("c", pid, &[c]), Ok(3_000));
        assert_eq!(cache.models(), ["a", "c"], "b evicted, least recently used");
        assert_eq!(cache.bytes(), 7_000);
        assert!(cache.bytes() <= cache.budget());
        // A length that changed between the runner's answer and the adoption parks nothing.
        let (_td, mut d) = memfd(100);
        d.len = 99;
        assert!(cache.adopt("d", pid, &[d]).unwrap_err().contains("the runner said 99"));
        assert_eq!(cache.models(), ["a", "c"]);
        cache.forget("a");
        assert_eq!(cache.request_for("a", 4_000), ParkRequest { save: true, from: vec![] });
    }
}
