//! Building a worker's engine from its flags: a lane worker runs its model in
//! process, the degraded worker in runner children; both under the memory manager.

use crate::args::Args;
use crate::engine::{Engine, EngineFailure};
use crate::managed::ManagedEngine;
use crate::memory::{BudgetError, MemoryManager};
use crate::ort_engine::OrtEngine;
use crate::runner::{RunnerConfig, RunnerEngine};
use std::sync::Arc;
use std::time::Duration;
use warmlane_shared::settings::pipeline::Provider;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::Settings;

/// Why a worker's engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `--provider` is not `cpu` or `cuda`.
    #[error("--provider must be cpu or cuda, got `{0}`")]
    Provider(String),
    /// No memory budget could be set.
    #[error("memory budget")]
    Budget(#[from] BudgetError),
    /// The runner executable (this binary) could not be found.
    #[error("cannot find the runner executable")]
    Exe(#[source] std::io::Error),
    /// The engine refused to start (ONNX Runtime missing, settings unusable).
    #[error("engine")]
    Engine(#[from] EngineFailure),
}

/// Parses `--provider`.
pub fn provider(flag: Option<&str>) -> Result<Option<Provider>, SetupError> {
    flag.map(|p| Provider::parse(p).ok_or_else(|| SetupError::Provider(p.to_string()))).transpose()
}

/// The engine of a worker serving `lane`.
pub fn engine(args: &Args, settings: &Arc<Settings>, lane: &str) -> Result<Box<dyn Engine>, SetupError> {
    let provider = provider(args.provider.as_deref())?;
    let manager = MemoryManager::from_host(args.memory_budget_bytes.0, args.memory_margin_bytes, args.memory_policy())?;
    let budget = manager.budget();
    tracing::info!(lane, budget_bytes = budget.bytes, source = ?budget.source, "memory budget");
    let manager = Arc::new(manager);
    if lane == DEGRADED_LANE {
        let exe = std::env::current_exe().map_err(SetupError::Exe)?;
        Ok(degraded_engine(args, settings, manager, exe)?)
    } else {
        let inner = OrtEngine::new(settings.clone(), provider)?;
        Ok(Box::new(ManagedEngine::new(inner, settings.clone(), manager)))
    }
}

/// The degraded worker's engine (runner children of `exe`, under `manager`); the GPU
/// kit's `gpu-check` builds it the same way with the worker binary beside it.
pub fn degraded_engine(
    args: &Args,
    settings: &Arc<Settings>,
    manager: Arc<MemoryManager>,
    exe: std::path::PathBuf,
) -> Result<Box<ManagedEngine<RunnerEngine>>, SetupError> {
    let mut cfg = RunnerConfig::new(exe);
    cfg.provider = provider(args.provider.as_deref())?;
    cfg.deadline_margin = Duration::from_millis(args.runner_deadline_margin_ms);
    cfg.host_park_bytes = args.host_park_bytes.unwrap_or_else(crate::runner::park::default_budget_here);
    tracing::info!(host_park_bytes = cfg.host_park_bytes, "parked pipelines: host memory budget");
    let inner = RunnerEngine::new(settings.clone(), cfg)?;
    Ok(Box::new(ManagedEngine::new(inner, settings.clone(), manager)))
}

/// A worker id for heartbeats when `--worker-id` is not given: the lane and a
/// random suffix, unique across hosts and restarts.
pub fn default_worker_id(lane: &str) -> String {
    format!("{lane}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_flags_parse_or_name_the_value() {
        assert_eq!(provider(None).unwrap(), None);
        assert_eq!(provider(Some("cuda")).unwrap(), Some(Provider::Cuda));
        let err = provider(Some("rocm")).unwrap_err();
        assert_eq!(err.to_string(), "--provider must be cpu or cuda, got `rocm`");
    }

    #[test]
    fn default_worker_ids_differ() {
        let (a, b) = (default_worker_id("anisora"), default_worker_id("anisora"));
        assert!(a.starts_with("anisora-") && a.len() == "anisora-".len() + 8, "{a}");
        assert_ne!(a, b);
    }
}
