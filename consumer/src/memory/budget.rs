//! The worker's memory budget and the per-model estimate, as pure functions.
//!
//! Why pure: the budget decides whether a pipeline may load at all, so it is computed
//! once at start from plain numbers (a flag, the device's total, the host's total) and
//! table-tested; reading those numbers is [`super::probe`]'s job.

use serde::{Deserialize, Serialize};
use warmlane_shared::settings::MemoryEstimate;

/// Default safety margin kept out of the budget (1.5 GB, as in the VRAM offloader).
pub const DEFAULT_MARGIN_BYTES: u64 = 1_500_000_000;

pub use warmlane_shared::memory::BudgetSource;

/// The bytes this worker may use for pipelines and their runtime buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The budget, bytes.
    pub bytes: u64,
    /// Where it came from.
    pub source: BudgetSource,
    /// Total memory of the device or host it was derived from, when known.
    pub total_bytes: Option<u64>,
    /// The margin subtracted from the total.
    pub margin_bytes: u64,
}

/// Why no budget could be set; a startup error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// Neither a flag, a device nor `/proc/meminfo` gave a number.
    #[error("no memory budget: pass --memory-budget-bytes (no GPU found and MemTotal unreadable)")]
    Unknown,
    /// The flag is zero.
    #[error("--memory-budget-bytes must be at least 1, got 0")]
    Zero,
    /// The total is not above the margin.
    #[error("{from:?} total of {total} bytes is not above --memory-margin-bytes {margin}")]
    MarginTooLarge {
        /// Device or host.
        from: BudgetSource,
        /// The total memory.
        total: u64,
        /// The margin.
        margin: u64,
    },
}

/// Picks the budget: the flag if given, else the device's total minus the margin,
/// else the host's total minus the margin.
pub fn resolve_budget(
    flag: Option<u64>,
    device_total: Option<u64>,
    host_total: Option<u64>,
    margin: u64,
) -> Result<Budget, BudgetError> {
    if let Some(bytes) = flag {
        if bytes == 0 {
            return Err(BudgetError::Zero);
        }
        return Ok(Budget { bytes, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 });
    }
    let (source, total) = match (device_total, host_total) {
        (Some(t), _) => (BudgetSource::Device, t),
        (None, Some(t)) => (BudgetSource::Host, t),
        (None, None) => return Err(BudgetError::Unknown),
    };
    if total <= margin {
        return Err(BudgetError::MarginTooLarge { from: source, total, margin });
    }
    Ok(Budget { bytes: total - margin, source, total_bytes: Some(total), margin_bytes: margin })
}

/// Runtime bytes of one generation: latents, activations and frame buffers, which grow
/// with the output's voxels (width x height x frames).
pub fn runtime_bytes(estimate: &MemoryEstimate, width: u32, height: u32, frames: u32) -> u64 {
    let voxels = u64::from(width) * u64::from(height) * u64::from(frames);
    estimate.runtime_bytes_per_voxel.saturating_mul(voxels)
}

/// Weights plus runtime bytes of one generation at the given size.
pub fn estimate_bytes(estimate: &MemoryEstimate, width: u32, height: u32, frames: u32) -> u64 {
    estimate.weights_bytes.saturating_add(runtime_bytes(estimate, width, height, frames))
}

/// The answer of a pre-flight check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitCheck {
    /// Whether the work fits in what is free now (after allowed evictions, see `evictable_bytes`).
    pub fits: bool,
    /// Bytes the work needs on top of what is resident.
    pub required_bytes: u64,
    /// Budget minus what is accounted as used.
    pub free_bytes: u64,
    /// Bytes idle non-pinned components could give back.
    pub evictable_bytes: u64,
    /// The budget.
    pub budget_bytes: u64,
    /// One line for logs and replies: model, size, needed, free, budget.
    pub message: String,
}

impl FitCheck {
    /// True when the work cannot fit even after evicting everything evictable.
    pub fn never_fits(&self) -> bool {
        self.required_bytes > self.free_bytes.saturating_add(self.evictable_bytes)
    }
}

/// Formats bytes as MB with one decimal, for messages.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_sources_in_order() {
        let m = 1_500;
        type Case = (Option<u64>, Option<u64>, Option<u64>, Result<(u64, BudgetSource), BudgetError>);
        let cases: [Case; 7] = [
            (Some(10), Some(80_000), Some(64_000), Ok((10, BudgetSource::Flag))),
            (None, Some(80_000), Some(64_000), Ok((78_500, BudgetSource::Device))),
            (None, None, Some(64_000), Ok((62_500, BudgetSource::Host))),
            (None, None, None, Err(BudgetError::Unknown)),
            (Some(0), Some(80_000), None, Err(BudgetError::Zero)),
            (
                None,
                Some(1_500),
                None,
                Err(BudgetError::MarginTooLarge { from: BudgetSource::Device, total: 1_500, margin: m }),
            ),
            (
                None,
                None,
                Some(1_000),
                Err(BudgetError::MarginTooLarge { from: BudgetSource::Host, total: 1_000, margin: m }),
            ),
        ];
        for (flag, dev, host, want) in cases {
            let got = resolve_budget(flag, dev, host, m).map(|b| (b.bytes, b.source));
            assert_eq!(got, want, "flag {flag:?} device {dev:?} host {host:?}");
        }
    }

    #[test]
    fn estimate_grows_with_voxels() {
        let e = MemoryEstimate { weights_bytes: 1_000, runtime_bytes_per_voxel: 2 };
        let cases = [((8, 8, 1), 1_128), ((64, 64, 8), 1_000 + 2 * 64 * 64 * 8), ((0, 64, 8), 1_000)];
        for ((w, h, f), want) in cases {
            assert_eq!(estimate_bytes(&e, w, h, f), want, "{w}x{h}x{f}");
        }
        let huge = MemoryEstimate { weights_bytes: u64::MAX - 1, runtime_bytes_per_voxel: u64::MAX };
        assert_eq!(estimate_bytes(&huge, 4096, 4096, 81), u64::MAX);
    }
}
