//! The in-process engine: ONNX Runtime pipelines through `warmlane-engine`.
//!
//! It holds at most one pipeline. A lane worker prepares its model once and keeps it
//! (FR-019): `prepare` of the resident model is a no-op and nothing else loads. The
//! degraded worker does not use it directly: ONNX Runtime does not hand all memory
//! back when a session is dropped, so heavy pipelines there run in a runner child
//! ([`crate::runner`]), which itself serves with an `OrtEngine`.

use crate::engine::{Engine, EngineFailure, Output};
use crate::managed::Managed;
use crate::memory::PipelineReport;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_engine::{ComponentRole, EngineError, FaultPlan, Job, LoadOptions, Pipeline, Provider};
use warmlane_shared::{ErrorCode, Settings, ValidRequest};

/// ONNX Runtime engine with a single pipeline slot.
pub struct OrtEngine {
    settings: Arc<Settings>,
    options: LoadOptions,
    slot: Option<Pipeline>,
    loads: u64,
    last_warmup: Duration,
}

impl OrtEngine {
    /// An engine with nothing resident; checks that the ONNX Runtime library loads.
    pub fn new(settings: Arc<Settings>, provider: Option<Provider>) -> Result<OrtEngine, EngineFailure> {
        let options = LoadOptions { provider_override: provider, ..LoadOptions::default() };
        OrtEngine::with_options(settings, options)
    }

    /// An engine with explicit load options (arena limit, injected faults).
    pub fn with_options(settings: Arc<Settings>, options: LoadOptions) -> Result<OrtEngine, EngineFailure> {
        warmlane_engine::Runtime::init().map_err(failure)?;
        Ok(OrtEngine { settings, options, slot: None, loads: 0, last_warmup: Duration::ZERO })
    }

    /// Replaces the injected faults, for the resident pipeline and later loads (test hook).
    pub fn set_faults(&mut self, faults: FaultPlan) {
        self.options.faults = faults;
        if let Some(p) = self.slot.as_mut() {
            p.set_faults(faults);
        }
    }

    /// The warm-up run of the last load.
    pub fn last_warmup(&self) -> Duration {
        self.last_warmup
    }

    /// The resident pipeline's parked memfds (`(role, fd, len)`, see
    /// [`Pipeline::parked_out`]) and the components that loaded from parked bytes.
    pub fn parked(&self) -> (Vec<(ComponentRole, i32, u64)>, Vec<ComponentRole>) {
        self.slot.as_ref().map(|p| (p.parked_out(), p.parked_loads())).unwrap_or_default()
    }

    /// The resident pipeline's measurements.
    pub fn pipeline_report(&self) -> Option<PipelineReport> {
        self.slot.as_ref().map(|p| PipelineReport::from_engine(&p.memory()))
    }
}

/// The engine's error as a coded failure; the message is the whole chain
/// (`inference failed at vae_decoder: <what ONNX Runtime said>`).
pub fn failure(e: EngineError) -> EngineFailure {
    EngineFailure { code: e.code(), message: warmlane_shared::error::Report(&e).to_string() }
}

impl Engine for OrtEngine {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure> {
        if self.slot.as_ref().is_some_and(|p| p.model() == model) {
            return Ok(None);
        }
        let Some(model_settings) = self.settings.model(model) else {
            return Err(EngineFailure {
                code: ErrorCode::InferenceFailed,
                message: format!("model `{model}` is not in the settings"),
            });
        };
        if let Some(old) = self.slot.take() {
            tracing::info!(from = old.model(), to = model, "releasing the resident pipeline before loading another");
            drop(old);
        }
        let started = Instant::now();
        let mut pipeline =
            Pipeline::load(model, &model_settings.pipeline, &self.settings.base_dir, &self.options).map_err(failure)?;
        let warm_up = Instant::now();
        pipeline.warm_up().map_err(failure)?;
        self.last_warmup = warm_up.elapsed();
        self.slot = Some(pipeline);
        self.loads += 1;
        Ok(Some(started.elapsed()))
    }

    fn generate(
        &mut self,
        req: &ValidRequest,
        lane: &str,
        out_dir: &Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<Output, EngineFailure> {
        self.prepare(&req.model)?;
        let timeout_ms = self.settings.model(&req.model).map(|m| m.inference_timeout_ms).unwrap_or(600_000);
        let Some(pipeline) = self.slot.as_mut() else {
            return Err(EngineFailure { code: ErrorCode::InferenceFailed, message: "no pipeline resident".into() });
        };
        let job = Job {
            task_id: req.task_id.clone(),
            lane: lane.to_string(),
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            steps: req.steps,
            cfg: req.cfg as f32,
            seed: req.effective_seed(),
            width: req.width,
            height: req.height,
            frames: req.frames,
            timeout: Duration::from_millis(timeout_ms),
            out_dir: out_dir.to_path_buf(),
        };
        let g = pipeline.generate(&job, progress).map_err(failure)?;
        Ok(Output {
            path: g.path,
            bytes: g.bytes,
            preview_path: Some(g.preview_path),
            frames: g.frames,
            width: g.width,
            height: g.height,
            inference_ms: g.inference_ms,
        })
    }

    fn resident(&self) -> Option<String> {
        self.slot.as_ref().map(|p| p.model().to_string())
    }

    fn release(&mut self) {
        if let Some(p) = self.slot.take() {
            tracing::info!(model = p.model(), "released the resident pipeline");
        }
    }

    fn loads(&self) -> u64 {
        self.loads
    }
}

impl Managed for OrtEngine {
    fn report(&mut self) -> Option<PipelineReport> {
        self.pipeline_report()
    }

    fn release_component(&mut self, role: ComponentRole) -> Result<(), EngineFailure> {
        if let Some(p) = self.slot.as_mut() {
            p.release_component(role);
        }
        Ok(())
    }
}
