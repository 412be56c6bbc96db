//! The workers' engine wrapped to time each `generate` call to the microsecond.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_consumer::Engine;

/// Time each task spent inside the engine's `generate`, by task id.
pub(crate) type InferenceLog = Arc<std::sync::Mutex<std::collections::HashMap<String, Duration>>>;

/// Wraps the workers' engine to time `generate` to the microsecond (the reply's
/// `inference_ms` is whole milliseconds, too coarse to subtract from a few ms).
pub(crate) struct Timed {
    pub(crate) inner: Box<dyn Engine>,
    pub(crate) log: InferenceLog,
}

impl Engine for Timed {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, warmlane_consumer::EngineFailure> {
        self.inner.prepare(model)
    }

    fn generate(
        &mut self,
        req: &warmlane_shared::ValidRequest,
        lane: &str,
        out_dir: &std::path::Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<warmlane_consumer::Output, warmlane_consumer::EngineFailure> {
        let t = Instant::now();
        let out = self.inner.generate(req, lane, out_dir, progress);
        self.log.lock().unwrap_or_else(|p| p.into_inner()).insert(req.task_id.clone(), t.elapsed());
        out
    }

    fn resident(&self) -> Option<String> {
        self.inner.resident()
    }

    fn release(&mut self) {
        self.inner.release()
    }

    fn memory(&self) -> Option<warmlane_shared::MemorySnapshot> {
        self.inner.memory()
    }
}
