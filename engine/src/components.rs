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
use crate::park::{Mapping, ParkTarget};
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
    /// Parked bytes the session's initializers point into; dropped after the session.
    pub(crate) mapping: Option<Mapping>,
    /// Where parked bytes for this component can be mapped from (tried before the file).
    pub(crate) parked_from: Option<PathBuf>,
    /// Write the ORT form into a memfd at the next load from the file.
    pub(crate) save: bool,
    /// The memfd the last load from the file wrote the ORT form into.
    pub(crate) saved: Option<ParkTarget>,
    /// Whether the loaded session came from parked bytes.
    pub(crate) from_parked: bool,
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
        let file_bytes = crate::park::model_file_bytes(&path);
        Component {
            role,
            path,
            placement,
            requested,
            effective: requested,
            session: None,
            mapping: None,
            parked_from: None,
            save: false,
            saved: None,
            from_parked: false,
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
        let (session, effective) = self.build(model, memory_limit)?;
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

    /// Drops the session (then the parked bytes it pointed into); returns true if one
    /// was loaded.
    pub(crate) fn release(&mut self) -> bool {
        let was = self.session.take().is_some();
        self.mapping = None;
        was
    }

    /// A session from the parked bytes when there are any and they load, else from the
    /// file (writing the ORT form when asked). Parked bytes that fail are dropped with a
    /// warning naming why; the file is the fallback, so nothing is lost.
    fn build(&mut self, model: &str, memory_limit: Option<u64>) -> Result<(Session, Provider), EngineError> {
        if let Some(from) = self.parked_from.take() {
            match Mapping::open(&from).map_err(|e| e.to_string()).and_then(|mapping| {
                let built = build_parked(self.role, &mapping, self.requested, memory_limit)?;
                Ok((built, mapping))
            }) {
                Ok(((session, effective), mapping)) => {
                    self.mapping = Some(mapping);
                    self.from_parked = true;
                    return Ok((session, effective));
                }
                Err(why) => tracing::warn!(
                    target: "warmlane::engine",
                    model,
                    component = self.role.as_str(),
                    parked = %from.display(),
                    error = %why,
                    "parked bytes did not load; loading from the file"
                ),
            }
        }
        self.from_parked = false;
        // Parked once per load: a reload after the memory manager released the
        // component does not write the ORT form again.
        let target = if std::mem::take(&mut self.save) { park_target(model, self.role) } else { None };
        let built = build_session(model, self.role, &self.path, self.requested, memory_limit, target.as_ref());
        if let Some(t) = target.filter(|t| t.len().is_ok_and(|n| n > 0)) {
            self.saved = Some(t);
        }
        built
    }
}

fn park_target(model: &str, role: ComponentRole) -> Option<ParkTarget> {
    ParkTarget::new(&format!("{model}-{}", role.as_str()))
        .map_err(
            |e| tracing::warn!(target: "warmlane::engine", model, error = %e, "cannot create a memfd to park into"),
        )
        .ok()
}

/// A session from parked ORT-format bytes: initializers point into `mapping` (which
/// must outlive the session) and are not prepacked. Errors as text for the fallback log.
fn build_parked(
    role: ComponentRole,
    mapping: &Mapping,
    requested: Provider,
    memory_limit: Option<u64>,
) -> Result<(Session, Provider), String> {
    let runtime = Runtime::init().map_err(|e| e.to_string())?;
    let text = |e: &dyn std::fmt::Display| format!("{} from parked bytes: {e}", role.as_str());
    let builder = Session::builder(runtime.environment())
        .map_err(|e| text(&e))?
        .with_config_entry("session.use_ort_model_bytes_directly", "1")
        .map_err(|e| text(&e))?
        .with_config_entry("session.use_ort_model_bytes_for_initializers", "1")
        .map_err(|e| text(&e))?
        .with_prepacking(false)
        .map_err(|e| text(&e))?;
    let (mut builder, effective) = match requested {
        Provider::Cuda => (with_cuda(builder, memory_limit)?, Provider::Cuda),
        Provider::Cpu => (without_cpu_arena(builder).map_err(|e| text(&e))?, Provider::Cpu),
    };
    builder.commit_from_memory(mapping.as_slice()).map(|s| (s, effective)).map_err(|e| text(&e))
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
    save: Option<&ParkTarget>,
) -> Result<(Session, Provider), EngineError> {
    let runtime = Runtime::init()?;
    let load_error = |e: ort::Error| EngineError::Load {
        component: role.as_str(),
        path: path.display().to_string(),
        source: Box::new(e),
    };
    if requested == Provider::Cuda {
        let mut built = build_cuda(runtime, path, memory_limit, save);
        if let (Err(CudaFailure::Commit(reason)), Some(target)) = (&built, save) {
            // The provider registered but the session did not start while the parked
            // form was being written (it can fail on its own): try once more on the GPU
            // without it, rather than serve from the CPU; what was written is dropped.
            tracing::warn!(
                target: "warmlane::engine",
                model,
                component = role.as_str(),
                %reason,
                "a CUDA session writing its parked form failed; loading it again without parking"
            );
            if let Err(e) = target.clear() {
                tracing::warn!(target: "warmlane::engine", model, error = %e, "could not clear the parked form");
            }
            built = build_cuda(runtime, path, memory_limit, None);
        }
        match built.map_err(CudaFailure::into_reason) {
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
    let builder = saving(Session::builder(runtime.environment()).map_err(load_error)?, save).map_err(load_error)?;
    let session = without_cpu_arena(builder).map_err(load_error)?.commit_from_file(path).map_err(load_error)?;
    Ok((session, Provider::Cpu))
}

/// CPU sessions allocate from the system allocator, not ONNX Runtime's CPU arena.
///
/// Why: the arena keeps its largest extent for the life of the session. One maximum-size
/// request (1280x720x81) left a lane worker at 7.4 GB RSS for good; the memory manager
/// could neither see nor reclaim it. Run-time arena shrinkage only frees extents with
/// nothing in use at the end of a run, and the output of the last run holds its extent,
/// so the memory stayed until the next request. Without the arena every intermediate is
/// freed when it dies and the worker returns to its post-load RSS after each request
/// (measured: 41 MB after the same request). Large tensors come from `mmap` either way,
/// so the cost is in small allocations (figures in `engine/BENCH.md`).
/// `WARMLANE_ORT_CPU_ARENA=1` keeps the arena.
fn without_cpu_arena(
    builder: ort::session::builder::SessionBuilder,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    let arena = Runtime::init().map(Runtime::cpu_arena).unwrap_or(false);
    Ok(builder.with_execution_providers([ort::ep::CPU::default().with_arena_allocator(arena).build()])?)
}

/// Asks ONNX Runtime to write the optimized graph in ORT format to `save` while the
/// session is created (the ready-to-load form for [`crate::park`]).
fn saving(
    builder: ort::session::builder::SessionBuilder,
    save: Option<&ParkTarget>,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    match save {
        None => Ok(builder),
        Some(target) => Ok(builder
            .with_optimized_model_path(target.path())?
            .with_config_entry("session.save_model_format", "ORT")?),
    }
}

/// Why a CUDA session did not start, as text for the fallback log.
enum CudaFailure {
    /// The builder or the provider's registration failed (no CUDA here).
    Setup(String),
    /// The provider registered; creating the session failed.
    Commit(String),
}

impl CudaFailure {
    fn into_reason(self) -> String {
        match self {
            CudaFailure::Setup(r) | CudaFailure::Commit(r) => r,
        }
    }
}

/// A session on the CUDA provider (see [`with_cuda`]).
fn build_cuda(
    runtime: &Runtime,
    path: &Path,
    memory_limit: Option<u64>,
    save: Option<&ParkTarget>,
) -> Result<Session, CudaFailure> {
    let setup = |e: &dyn std::fmt::Display| CudaFailure::Setup(e.to_string());
    let builder = Session::builder(runtime.environment()).map_err(|e| setup(&e))?;
    let builder = saving(builder, save).map_err(|e| setup(&e))?;
    let mut builder = with_cuda(builder, memory_limit).map_err(CudaFailure::Setup)?;
    builder.commit_from_file(path).map_err(|e| CudaFailure::Commit(e.to_string()))
}

/// Registers the CUDA provider with the arena settings of the memory contract: grow by
/// exactly what is requested, cap at `memory_limit`.
#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    memory_limit: Option<u64>,
) -> Result<ort::session::builder::SessionBuilder, String> {
    use ort::ep::{ArenaExtendStrategy, CUDA};
    let mut ep = CUDA::default().with_arena_extend_strategy(ArenaExtendStrategy::SameAsRequested);
    if let Some(limit) = memory_limit {
        ep = ep.with_memory_limit(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    builder.with_execution_providers([ep.build().error_on_failure()]).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _memory_limit: Option<u64>,
) -> Result<ort::session::builder::SessionBuilder, String> {
    Err("this build of warmlane-engine has no CUDA support (feature `cuda` disabled)".into())
}
