//! The memory snapshot a worker publishes in its heartbeat, and the HTTP shim reads.
//!
//! The worker's memory manager writes it (`consumer::memory`), the shim's
//! `/api/v1/hardware/vram` reads it; both ends use these types, so a renamed field
//! is a compile error rather than a blank dashboard.

use crate::settings::pipeline::{ComponentRole, Placement};
use serde::{Deserialize, Serialize};

/// Where a worker's memory budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    /// `--memory-budget-bytes`.
    Flag,
    /// The GPU's total memory (NVML) minus the margin.
    Device,
    /// The host's `MemTotal` minus the margin (no GPU).
    Host,
}

/// What the memory manager measures against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// NVML readings of a GPU.
    Nvml,
    /// Process memory (no GPU visible).
    Rss,
}

/// Where a component lives now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// A CUDA session: device memory.
    Gpu,
    /// A CPU session: host memory.
    Cpu,
    /// Released; reloaded before its next use.
    Offloaded,
}

/// One component in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Which component.
    pub role: ComponentRole,
    /// Its policy.
    pub placement: Placement,
    /// Where it is now.
    pub device: Device,
    /// Bytes accounted to it now (0 when offloaded).
    pub bytes: u64,
    /// Last use, unix ms.
    pub last_used_ms: u64,
    /// True while a generation uses it (not evictable).
    pub active: bool,
}

/// One pipeline in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// The model.
    pub model: String,
    /// Sum of its components' bytes.
    pub bytes: u64,
    /// Last use of any component, unix ms.
    pub last_used_ms: u64,
    /// Components in load order.
    pub components: Vec<ComponentStatus>,
}

/// Measured figures next to the accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// RSS of the worker process, bytes.
    pub worker_rss_bytes: u64,
    /// RSS of the runner child (degraded worker), bytes.
    pub runner_rss_bytes: Option<u64>,
    /// Device memory used on GPU 0 (all processes), where NVML works.
    pub device_used_bytes: Option<u64>,
}

/// A worker's memory: the heartbeat's `memory` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// The budget, bytes.
    pub budget_bytes: u64,
    /// Where the budget came from.
    pub budget_source: BudgetSource,
    /// Bytes in use: those accounted to resident components, or what the worker's
    /// processes were last measured to hold (RSS; device bytes with NVML) if more.
    pub used_bytes: u64,
    /// Budget minus used (0 when over).
    pub free_bytes: u64,
    /// Free bytes below which idle components are evicted.
    pub headroom_bytes: u64,
    /// What the figures are measured with.
    pub backend: Backend,
    /// Resident pipelines.
    pub pipelines: Vec<PipelineStatus>,
    /// Components evicted since start (LRU, idle policy, OOM recovery).
    pub evictions: u64,
    /// OOM retries since start.
    pub oom_retries: u64,
    /// Readings taken when the snapshot was made.
    pub measured: Measured,
    /// Pipeline loads since start (cold starts and switches).
    #[serde(default)]
    pub loads: u64,
    /// The model resident now, if any.
    #[serde(default)]
    pub resident: Option<String>,
    /// When the snapshot was taken, unix ms. A heartbeat sent while a task holds the
    /// engine repeats the last snapshot; this says how old it is.
    #[serde(default)]
    pub as_of_ms: u64,
}

impl MemorySnapshot {
    /// A snapshot of a budget with nothing resident, taken now by no one: the
    /// base a memory manager (or a test) fills in.
    pub fn empty(budget_bytes: u64, budget_source: BudgetSource, backend: Backend) -> MemorySnapshot {
        MemorySnapshot {
            budget_bytes,
            budget_source,
            used_bytes: 0,
            free_bytes: budget_bytes,
            headroom_bytes: 0,
            backend,
            pipelines: vec![],
            evictions: 0,
            oom_retries: 0,
            measured: Measured::default(),
            loads: 0,
            resident: None,
            as_of_ms: 0,
        }
    }

    /// used / budget, when there is a budget.
    pub fn utilization(&self) -> Option<f64> {
        (self.budget_bytes > 0).then(|| self.used_bytes as f64 / self.budget_bytes as f64)
    }

    /// Models whose pipeline the worker holds.
    pub fn resident_models(&self) -> impl Iterator<Item = &str> {
        self.pipelines.iter().map(|p| p.model.as_str())
    }
}
