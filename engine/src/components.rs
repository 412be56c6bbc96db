//! Creating ONNX Runtime sessions for pipeline components, with the execution
//! provider asked for and a loud fallback to CPU when it cannot be used.
//!
//! Why a fallback and not a failure: a worker on a host whose driver or library lacks
//! CUDA should still serve (slowly) and be visibly degraded, not crash-loop. Why loud:
//! a silent CPU fallback on a GPU fleet looks like a 50x slowdown with no cause, so it
//! is an `error!` on `warmlane::engine` and the effective provider is recorded in
//! [`crate::PipelineMemory`] and every [`crate::Generation`].

use crate::error::EngineError;
use crate::memory::{self, MemorySample};
use crate::ports::{self, Declared, Elem, Ports};
use crate::runtime::Runtime;
use ort::session::Session;
use ort::value::{Outlet, TensorElementType};
use std::path::{Path, PathBuf};
use std::time::Instant;
use warmlane_shared::settings::pipeline::ComponentRole;
use warmlane_shared::settings::pipeline::{Placement, Provider};
use warmlane_shared::settings::PipelineSettings;

/// One component: its file, its settings and (when loaded) its session.
pub(crate) struct Component {
    pub(crate) role: ComponentRole,
    pub(crate) path: PathBuf,
    pub(crate) placement: Placement,
    pub(crate) requested: Provider,
    pub(crate) effective: Provider,
    pub(crate) session: Option<Session>,
    /// The graph's tensors bound to the engine's slots, checked when the session loads.
    pub(crate) ports: Ports,
    /// RSS growth measured at the last load, bytes.
    pub(crate) rss_bytes: i64,
    /// Device memory growth measured at the last load, bytes.
    pub(crate) device_bytes: Option<i64>,
    pub(crate) load_ms: u64,
    pub(crate) file_bytes: u64,
}

impl Component {
    pub(crate) fn new(role: ComponentRole, path: PathBuf, placement: Placement, requested: Provider) -> Self {
        let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Component {
            role,
            path,
            placement,
            requested,
            effective: requested,
            session: None,
            ports: Ports::default(),
            rss_bytes: 0,
            device_bytes: None,
            load_ms: 0,
            file_bytes,
        }
    }

    /// Creates the session if it is not loaded, measuring what it cost, and binds its
    /// tensors to the slots `settings` name. A graph that does not match the settings
    /// is a load error naming the field (the session is dropped).
    pub(crate) fn ensure(
        &mut self,
        model: &str,
        settings: &PipelineSettings,
        memory_limit: Option<u64>,
    ) -> Result<(), EngineError> {
        if self.session.is_some() {
            return Ok(());
        }
        let before = memory::sample();
        let started = Instant::now();
        let (session, effective) = build_session(model, self.role, &self.path, self.requested, memory_limit)?;
        let inputs: Vec<Declared> = session.inputs().iter().map(declared).collect();
        let outputs: Vec<Declared> = session.outputs().iter().map(declared).collect();
        self.ports = ports::resolve(self.role, settings, &inputs, &outputs).map_err(|why| EngineError::Load {
            component: self.role.as_str(),
            path: self.path.display().to_string(),
            source: format!("models.{model}.pipeline.{why}").into(),
        })?;
        let after = memory::sample();
        self.session = Some(session);
        self.effective = effective;
        self.load_ms = started.elapsed().as_millis() as u64;
        self.rss_bytes = memory::delta(before.rss, after.rss);
        self.device_bytes = device_delta(&before, &after);
        tracing::info!(
            target: "warmlane::engine",
            model,
            component = self.role.as_str(),
            provider = effective.as_str(),
            rss_delta = self.rss_bytes,
            device_delta = ?self.device_bytes,
            load_ms = self.load_ms,
            "component loaded"
        );
        Ok(())
    }

    /// Drops the session; returns true if one was loaded.
    pub(crate) fn release(&mut self) -> bool {
        self.session.take().is_some()
    }
}

/// A graph input or output as [`ports::resolve`] sees it.
fn declared(outlet: &Outlet) -> Declared {
    let dtype = outlet.dtype();
    let elem = match dtype.tensor_type() {
        Some(TensorElementType::Float32) => Some(Elem::F32),
        Some(TensorElementType::Int64) => Some(Elem::I64),
        Some(TensorElementType::Int32) => Some(Elem::I32),
        _ => None,
    };
    let shape = dtype.tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    Declared { name: outlet.name().to_string(), elem, shape }
}

fn device_delta(before: &MemorySample, after: &MemorySample) -> Option<i64> {
    Some(memory::delta(before.device_used?, after.device_used?))
}

/// Builds a session for `path` on `requested`, falling back to CPU (with an error log)
/// when the CUDA provider cannot be registered or the session cannot start on it.
pub(crate) fn build_session(
    model: &str,
    role: ComponentRole,
    path: &Path,
    requested: Provider,
    memory_limit: Option<u64>,
) -> Result<(Session, Provider), EngineError> {
    let runtime = Runtime::init()?;
    let load_error = |e: ort::Error| EngineError::Load {
        component: role.as_str(),
        path: path.display().to_string(),
        source: Box::new(e),
    };
    if requested == Provider::Cuda {
        match build_cuda(runtime, path, memory_limit) {
            Ok(session) => return Ok((session, Provider::Cuda)),
            Err(reason) => {
                tracing::error!(
                    target: "warmlane::engine",
                    model,
                    component = role.as_str(),
                    requested = "cuda",
                    effective = "cpu",
                    %reason,
                    "CUDA execution provider unavailable: falling back to CPU"
                );
            }
        }
    }
    let session =
        Session::builder(runtime.environment()).map_err(load_error)?.commit_from_file(path).map_err(load_error)?;
    Ok((session, Provider::Cpu))
}

/// A session on the CUDA provider with the arena settings of the memory contract:
/// grow by exactly what is requested, cap at `memory_limit`. Any failure is returned
/// as text for the fallback log.
#[cfg(feature = "cuda")]
fn build_cuda(runtime: &Runtime, path: &Path, memory_limit: Option<u64>) -> Result<Session, String> {
    use ort::ep::{ArenaExtendStrategy, CUDA};
    let mut ep = CUDA::default().with_arena_extend_strategy(ArenaExtendStrategy::SameAsRequested);
    if let Some(limit) = memory_limit {
        ep = ep.with_memory_limit(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    let builder = Session::builder(runtime.environment()).map_err(|e| e.to_string())?;
    let mut builder = builder.with_execution_providers([ep.build().error_on_failure()]).map_err(|e| e.to_string())?;
    builder.commit_from_file(path).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn build_cuda(_runtime: &Runtime, _path: &Path, _memory_limit: Option<u64>) -> Result<Session, String> {
    Err("this build of warmlane-engine has no CUDA support (feature `cuda` disabled)".into())
}
