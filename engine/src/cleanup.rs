//! The post-generation cleanup that runs after every generation, success or failure,
//! and its one structured log line.
//!
//! Why one line per generation on its own target: operators (and the tests) follow
//! memory across the fleet by filtering `warmlane::cleanup`; a generation with no line
//! means cleanup was skipped, which is a bug.

use crate::job::MemoryFigures;
use crate::memory::{self, MemorySample};
use crate::trim;

/// What the log line says about the generation.
pub(crate) struct Report<'a> {
    pub(crate) task_id: &'a str,
    pub(crate) model: &'a str,
    pub(crate) lane: &'a str,
    /// `done` or `failed`.
    pub(crate) outcome: &'static str,
    /// The error code string, empty when done.
    pub(crate) code: &'static str,
    pub(crate) provider: &'static str,
    pub(crate) denoiser_calls: u32,
    pub(crate) elapsed_ms: u64,
}

/// Returns freed heap to the OS, reads memory, logs the cleanup line and returns the
/// figures. Run-time tensors are already dropped when this is called: they live only
/// inside the stage functions.
pub(crate) fn finish(report: &Report<'_>, before: MemorySample, after_run: MemorySample) -> MemoryFigures {
    let trimmed = trim::release_free_heap();
    let after = memory::sample();
    tracing::info!(
        target: "warmlane::cleanup",
        task_id = report.task_id,
        model = report.model,
        lane = report.lane,
        outcome = report.outcome,
        code = report.code,
        provider = report.provider,
        denoiser_calls = report.denoiser_calls,
        elapsed_ms = report.elapsed_ms,
        rss_before = before.rss,
        rss_after_run = after_run.rss,
        rss_after = after.rss,
        rss_freed = memory::delta(after.rss, after_run.rss),
        device_used = ?after.device_used,
        device_process = ?after.device_process,
        trimmed,
        "post-generation cleanup"
    );
    MemoryFigures { before, after_run, after_cleanup: after }
}
