//! Memory readings, the one place that reads `/proc` and NVML: process RSS from
//! `/proc/<pid>/status` (`VmRSS`), the host's `MemTotal`, and, where an NVIDIA GPU
//! and driver exist, device memory through NVML (initialised once per process).
//!
//! Why measured and not estimated: the memory manager decides what to release from
//! what loading actually cost on this host (weights, arenas, prepacked copies), so
//! every component load and every generation records real before/after figures.
//! NVML is loaded dynamically; when it is missing, device figures are `None`.

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;
use serde::Serialize;
use std::sync::OnceLock;

/// One reading of process and device memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemorySample {
    /// Resident set size of this process, bytes.
    pub rss: u64,
    /// Device memory used on GPU 0 (all processes), bytes; `None` without NVML.
    pub device_used: Option<u64>,
    /// Device memory used by this process on GPU 0, bytes, where the driver reports it.
    pub device_process: Option<u64>,
}

/// Reads process RSS and device memory now.
pub fn sample() -> MemorySample {
    let (device_used, device_process) = device_figures();
    MemorySample { rss: rss_bytes(), device_used, device_process }
}

/// Resident set size of this process in bytes (0 where `/proc` is unavailable).
/// `VmRSS` is in kB, which avoids assuming a page size (64 KiB on some arm64 hosts).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|t| kb_field(&t, "VmRSS:")).unwrap_or(0)
}

/// RSS of another process, bytes; `None` once it is gone (or reaped).
pub fn rss_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|t| kb_field(&t, "VmRSS:"))
}

/// The host's `MemTotal`, bytes.
pub fn host_total_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| kb_field(&t, "MemTotal:"))
}

/// A `Name:   123 kB` field of a `/proc` file, in bytes.
pub fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::init() {
        Ok(nvml) => Some(nvml),
        Err(error) => {
            tracing::debug!(target: "warmlane::engine", %error, "NVML unavailable; device memory not measured");
            None
        }
    })
    .as_ref()
}

/// True when NVML found at least one device.
pub fn device_available() -> bool {
    nvml().and_then(|n| n.device_count().ok()).is_some_and(|count| count > 0)
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

fn device_figures() -> (Option<u64>, Option<u64>) {
    let Some(device) = nvml().and_then(|n| n.device_by_index(0).ok()) else {
        return (None, None);
    };
    let used = device.memory_info().ok().map(|m| m.used);
    let pid = std::process::id();
    let process = device.running_compute_processes().ok().and_then(|procs| {
        procs.into_iter().find(|p| p.pid == pid).and_then(|p| match p.used_gpu_memory {
            UsedGpuMemory::Used(bytes) => Some(bytes),
            UsedGpuMemory::Unavailable => None,
        })
    });
    (used, process)
}

/// Signed difference `after - before` in bytes, saturating.
pub fn delta(before: u64, after: u64) -> i64 {
    let diff = i128::from(after) - i128::from(before);
    diff.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_measured_and_moves() {
        let before = rss_bytes();
        assert!(before > 0);
        // `black_box` keeps the optimiser from removing an allocation nobody reads.
        let block = std::hint::black_box(vec![1_u8; 64 << 20]);
        let during = rss_bytes();
        assert!(during >= before + (48 << 20), "{before} -> {during}");
        drop(std::hint::black_box(block));
        assert_eq!(delta(10, 4), -6);
    }

    #[test]
    fn reads_proc_fields() {
        assert_eq!(kb_field("Name:\tx\nVmRSS:\t  1024 kB\n", "VmRSS:"), Some(1 << 20));
        assert_eq!(kb_field("MemTotal:       16384 kB\nMemFree: 1 kB\n", "MemTotal:"), Some(16384 * 1024));
        assert_eq!(kb_field("VmPeak: 5 kB\n", "VmRSS:"), None);
        assert!(host_total_bytes().is_some_and(|t| t > 0));
        assert!(rss_of(std::process::id()).is_some_and(|r| r > 0));
        assert_eq!(rss_of(u32::MAX), None);
    }
}
