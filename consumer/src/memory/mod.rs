//! The device-memory manager: the Rust counterpart of the VRAM monitor and offloader.
//!
//! - [`budget`]: the worker's budget (flag, GPU total minus margin, or host total minus
//!   margin) and the per-model estimate with resolution-aware runtime bytes (pure).
//! - [`policy`]: what each component placement means in time, and the OOM retry cap (pure).
//! - [`ledger`]: the accounting of resident pipelines and components, LRU eviction
//!   plans, the pre-flight check and admission (a plain struct).
//! - [`snapshot`]: the measured reports that feed the ledger (the status snapshot
//!   published in the heartbeat is `warmlane_shared::MemorySnapshot`).
//! - [`probe`]: readings (NVML, `/proc`).
//!
//! [`MemoryManager`] puts the ledger behind a mutex so the engine, the OOM wrapper and
//! the heartbeat share one account. The manager decides; the engines release.

pub mod budget;
pub mod ledger;
pub mod policy;
pub mod probe;
pub mod snapshot;

pub use budget::{Budget, BudgetError, BudgetSource, FitCheck};
pub use ledger::{Ledger, LoadDecision, Victim};
pub use policy::{OomDecision, OomRetry, Policy};
pub use snapshot::PipelineReport;
pub use warmlane_shared::memory::{Measured, MemorySnapshot};

use std::sync::{Mutex, MutexGuard};

/// The shared account of one worker's memory.
#[derive(Debug)]
pub struct MemoryManager {
    ledger: Mutex<Ledger>,
    backend: warmlane_shared::memory::Backend,
}

impl MemoryManager {
    /// A manager with a known budget.
    pub fn new(budget: Budget, policy: Policy) -> MemoryManager {
        MemoryManager { ledger: Mutex::new(Ledger::new(budget, policy)), backend: probe::backend() }
    }

    /// A manager whose budget comes from the flag, else the GPU, else the host.
    pub fn from_host(flag: Option<u64>, margin: u64, policy: Policy) -> Result<MemoryManager, BudgetError> {
        let budget = budget::resolve_budget(flag, probe::device_total_bytes(), probe::host_total_bytes(), margin)?;
        Ok(MemoryManager::new(budget, policy))
    }

    /// The ledger, locked; a panic elsewhere does not poison the account.
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.lock().budget()
    }

    /// The memory this worker's processes hold, in the budget's terms: RSS of the
    /// worker and its runner on CPU; with NVML, the device bytes of both.
    pub fn measure(&self, runner_rss_bytes: Option<u64>, runner_device_bytes: Option<u64>) -> u64 {
        let sample = warmlane_engine::memory::sample();
        match self.backend {
            warmlane_shared::memory::Backend::Nvml => {
                sample.device_process.unwrap_or(0) + runner_device_bytes.unwrap_or(0)
            }
            warmlane_shared::memory::Backend::Rss => sample.rss + runner_rss_bytes.unwrap_or(0),
        }
    }

    /// The status snapshot with current readings, for the heartbeat.
    pub fn snapshot(&self, runner_rss_bytes: Option<u64>) -> MemorySnapshot {
        let sample = warmlane_engine::memory::sample();
        let measured =
            Measured { worker_rss_bytes: sample.rss, runner_rss_bytes, device_used_bytes: sample.device_used };
        self.lock().snapshot(measured, self.backend)
    }
}

/// Unix milliseconds now, the ledger's clock.
pub fn now_ms() -> u64 {
    warmlane_shared::now_ms()
}

#[cfg(test)]
mod stress;
