//! Readings for the manager: totals for the budget and per-process figures for the
//! release check. Process and device samples come from `warmlane_engine::memory`;
//! what the engine does not expose (the device's total, another process's RSS or
//! device memory) is read here.

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;
use std::sync::OnceLock;

fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().ok()).as_ref()
}

/// `nvml` when a GPU is visible, else `rss`: what the manager measures against.
pub fn backend() -> &'static str {
    if warmlane_engine::memory::device_available() {
        "nvml"
    } else {
        "rss"
    }
}

/// Total memory of GPU 0, bytes, where NVML works.
pub fn device_total_bytes() -> Option<u64> {
    let device = nvml()?.device_by_index(0).ok()?;
    device.memory_info().ok().map(|m| m.total)
}

/// Device memory used by `pid` on GPU 0; `Some(0)` when NVML works and the process
/// holds none, `None` without NVML.
pub fn device_bytes_of(pid: u32) -> Option<u64> {
    let device = nvml()?.device_by_index(0).ok()?;
    let procs = device.running_compute_processes().ok()?;
    Some(
        procs
            .into_iter()
            .filter(|p| p.pid == pid)
            .map(|p| match p.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => bytes,
                UsedGpuMemory::Unavailable => 0,
            })
            .sum(),
    )
}

/// The host's `MemTotal`, bytes.
pub fn host_total_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| kb_field(&t, "MemTotal:"))
}

/// RSS of another process, bytes; `None` once it is gone (or reaped).
pub fn rss_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|t| kb_field(&t, "VmRSS:"))
}

/// A `Name:   123 kB` field of a `/proc` file, in bytes.
pub fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        assert_eq!(kb_field("MemTotal:       16384 kB\nMemFree: 1 kB\n", "MemTotal:"), Some(16384 * 1024));
        assert_eq!(kb_field("VmPeak: 5 kB\n", "VmRSS:"), None);
        assert!(host_total_bytes().is_some_and(|t| t > 0));
        assert!(rss_of(std::process::id()).is_some_and(|r| r > 0));
        assert_eq!(rss_of(u32::MAX), None);
    }
}
