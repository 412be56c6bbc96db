//! The release check: a stopped runner's memory is confirmed free before the next
//! pipeline loads (FR-002, FR-003). Pure over what the supervisor read, so every
//! reading is a row in the table test.

/// Where the last prepare's time went, ms (switch-bench's breakdown). Zero for the
/// parts it did not do (no previous runner: no stop).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SwapTimings {
    /// From `Shutdown` to the previous runner reaped.
    pub stop_ms: f64,
    /// The release check (RSS reading; on a GPU, NVML until the runner's memory is gone).
    pub confirm_ms: f64,
    /// Session creation in the runner, parked or from the files (its own clock).
    pub session_ms: f64,
    /// The warm-up run in the runner (its own clock).
    pub warmup_ms: f64,
    /// The whole prepare as the worker saw it; the rest is process hand-over and frames.
    pub total_ms: f64,
    /// Device memory in use on GPU 0 (NVML, all processes) right after the previous
    /// runner's release was checked, before the next load: the floor a switch returns
    /// to. `None` without NVML or without a previous runner.
    pub device_used_after_stop: Option<u64>,
    /// The worker's own RSS at the same moment (the CPU form of that floor).
    pub worker_rss_after_stop: u64,
}

impl SwapTimings {
    /// The mean of each timed part over `all` (zeros for none; the readings after the
    /// stop are not averaged and stay empty).
    pub fn mean(all: &[SwapTimings]) -> SwapTimings {
        let n = all.len().max(1) as f64;
        let mean = |f: fn(&SwapTimings) -> f64| all.iter().map(f).sum::<f64>() / n;
        SwapTimings {
            stop_ms: mean(|t| t.stop_ms),
            confirm_ms: mean(|t| t.confirm_ms),
            session_ms: mean(|t| t.session_ms),
            warmup_ms: mean(|t| t.warmup_ms),
            total_ms: mean(|t| t.total_ms),
            ..SwapTimings::default()
        }
    }

    /// The time outside the named parts: process hand-over and frames.
    pub fn other_ms(&self) -> f64 {
        self.total_ms - self.stop_ms - self.confirm_ms - self.session_ms - self.warmup_ms
    }
}

/// What the release check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseReadings {
    /// The runner's `/proc` entry is gone (it was reaped).
    pub reaped_gone: bool,
    /// Worker RSS when the runner started.
    pub parent_rss_before: u64,
    /// Worker RSS now.
    pub parent_rss_after: u64,
    /// Allowed growth.
    pub rss_tolerance: u64,
    /// Device memory NVML still attributes to the runner (`None` without NVML).
    pub device_bytes_left: Option<u64>,
}

/// Whether a stopped runner's memory is confirmed free (pure).
pub fn confirm_release(r: ReleaseReadings) -> Result<(), String> {
    if !r.reaped_gone {
        return Err("the runner process is still present after waitpid".into());
    }
    if r.parent_rss_after > r.parent_rss_before.saturating_add(r.rss_tolerance) {
        return Err(format!(
            "worker RSS grew from {} to {} bytes while the runner held the pipeline (tolerance {})",
            r.parent_rss_before, r.parent_rss_after, r.rss_tolerance
        ));
    }
    match r.device_bytes_left {
        Some(left) if left > 0 => Err(format!("NVML still shows {left} device bytes for the runner")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_means_and_the_rest() {
        let a =
            SwapTimings { stop_ms: 10.0, session_ms: 100.0, warmup_ms: 20.0, total_ms: 140.0, ..Default::default() };
        let b = SwapTimings { stop_ms: 30.0, confirm_ms: 2.0, total_ms: 180.0, device_used_after_stop: Some(7), ..a };
        let m = SwapTimings::mean(&[a, b]);
        assert_eq!((m.stop_ms, m.confirm_ms, m.session_ms, m.warmup_ms, m.total_ms), (20.0, 1.0, 100.0, 20.0, 160.0));
        assert_eq!(m.device_used_after_stop, None);
        assert_eq!(m.other_ms(), 19.0);
        assert_eq!(a.other_ms(), 10.0);
        assert_eq!(SwapTimings::mean(&[]), SwapTimings::default());
    }

    #[test]
    fn release_check_table() {
        let ok = ReleaseReadings {
            reaped_gone: true,
            parent_rss_before: 100,
            parent_rss_after: 150,
            rss_tolerance: 64,
            device_bytes_left: None,
        };
        let cases = [
            (ok, true),
            (ReleaseReadings { reaped_gone: false, ..ok }, false),
            (ReleaseReadings { parent_rss_after: 165, ..ok }, false),
            (ReleaseReadings { parent_rss_after: 10, ..ok }, true),
            (ReleaseReadings { device_bytes_left: Some(0), ..ok }, true),
            (ReleaseReadings { device_bytes_left: Some(1 << 20), ..ok }, false),
        ];
        for (r, want) in cases {
            assert_eq!(confirm_release(r).is_ok(), want, "{r:?}");
        }
    }
}
