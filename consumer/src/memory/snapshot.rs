//! A pipeline's measured report, as it crosses from the process holding the pipeline
//! (a runner child, or the engine in process) to the ledger. The snapshot the
//! ledger publishes in the heartbeat is `warmlane_shared::MemorySnapshot`, which the
//! HTTP shim reads with the same type.

use serde::{Deserialize, Serialize};
use warmlane_engine::PipelineMemory;
use warmlane_shared::settings::pipeline::{ComponentRole, Placement, Provider};

/// One component as measured by the process that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentReport {
    /// Which component.
    pub role: ComponentRole,
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
                    role: c.role,
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
