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
