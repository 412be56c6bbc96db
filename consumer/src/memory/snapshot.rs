//! What crosses boundaries: a pipeline's measured report (runner -> parent, engine ->
//! ledger) and the status snapshot published in the worker heartbeat.
//!
//! The snapshot's field names are read by the HTTP shim: `budget_bytes`, `used_bytes`,
//! `free_bytes`, `pipelines[].model`, `pipelines[].components[].{role, placement,
//! device, bytes, last_used_ms}`. Change them only together with the shim.

use super::budget::BudgetSource;
use serde::{Deserialize, Serialize};
use warmlane_engine::PipelineMemory;
use warmlane_shared::settings::pipeline::{Placement, Provider};

/// One component as measured by the process that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentReport {
    /// `text_encoder`, `denoiser` or `vae_decoder`.
    pub role: String,
    /// Its placement policy from settings.
    pub placement: Placement,
    /// The provider it runs on now.
    pub provider: Provider,
    /// Whether its session is loaded.
    pub loaded: bool,
    /// Bytes attributed to it: device growth at load on CUDA, RSS growth otherwise.
    pub bytes: u64,
}

/// A pipeline as measured by the process that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineReport {
    /// The model.
    pub model: String,
    /// RSS of the process holding it, bytes.
    pub process_rss_bytes: u64,
    /// Device memory of that process, where NVML reports it.
    pub device_process_bytes: Option<u64>,
    /// Per component, in load order.
    pub components: Vec<ComponentReport>,
}

impl PipelineReport {
    /// Converts the engine's measurements. Negative deltas (memory given back by an
    /// unrelated free during the load) count as zero.
    pub fn from_engine(m: &PipelineMemory) -> PipelineReport {
        let components = m
            .components
            .iter()
            .map(|c| {
                let measured = match (c.provider, c.device_bytes) {
                    (Provider::Cuda, Some(device)) => device,
                    _ => c.rss_bytes,
                };
                ComponentReport {
                    role: c.role.as_str().to_string(),
                    placement: c.placement,
                    provider: c.provider,
                    loaded: c.loaded,
                    bytes: if c.loaded { measured.max(0) as u64 } else { 0 },
                }
            })
            .collect();
        PipelineReport {
            model: m.model.clone(),
            process_rss_bytes: m.now.rss,
            device_process_bytes: m.now.device_process,
            components,
        }
    }
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
    /// `text_encoder`, `denoiser` or `vae_decoder`.
    pub role: String,
    /// Policy: `pinned`, `offload_when_idle`, `offload_between_prompts`.
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

/// The manager's status: the heartbeat's `memory` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// The budget, bytes.
    pub budget_bytes: u64,
    /// Where the budget came from.
    pub budget_source: BudgetSource,
    /// Bytes accounted to resident components.
    pub used_bytes: u64,
    /// Budget minus used (0 when over).
    pub free_bytes: u64,
    /// Free bytes below which idle components are evicted.
    pub headroom_bytes: u64,
    /// `nvml` with a GPU, `rss` without.
    pub backend: String,
    /// Resident pipelines.
    pub pipelines: Vec<PipelineStatus>,
    /// Components evicted since start (LRU, idle policy, OOM recovery).
    pub evictions: u64,
    /// OOM retries since start.
    pub oom_retries: u64,
    /// Readings taken when the snapshot was made.
    pub measured: Measured,
}
