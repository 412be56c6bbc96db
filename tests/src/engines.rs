//! Test-double engines. The shipped worker runs `OrtEngine`; these stand in only
//! where a test needs to hold or fail a worker on purpose.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use warmlane_consumer::{Engine, EngineFailure, Output};
use warmlane_shared::memory::{Backend, BudgetSource};
use warmlane_shared::{ErrorCode, MemorySnapshot, ValidRequest};

/// The snapshot of an engine with no memory manager: the resident model only.
pub fn bare_snapshot(resident: Option<String>) -> MemorySnapshot {
    MemorySnapshot { resident, ..MemorySnapshot::empty(0, BudgetSource::Flag, Backend::Rss) }
}

/// A gate the test opens to let held generations finish.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    entered: u32,
}

impl Gate {
    /// Opens the gate for good.
    pub fn open(&self) {
        let (m, c) = &*self.inner;
        m.lock().unwrap().open = true;
        c.notify_all();
    }

    /// How many generations have reached the gate.
    pub fn entered(&self) -> u32 {
        self.inner.0.lock().unwrap().entered
    }

    /// Waits (polling, up to 10 s) until `n` generations have reached the gate.
    pub async fn wait_entered(&self, n: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.entered() < n {
            assert!(std::time::Instant::now() < deadline, "{n} generations never reached the gate");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn pass(&self) {
        let (m, c) = &*self.inner;
        let mut s = m.lock().unwrap();
        s.entered += 1;
        while !s.open {
            s = c.wait_timeout(s, Duration::from_secs(60)).unwrap().0;
        }
    }
}

/// Writes a tiny file after passing a gate, or fails with a fixed code.
pub struct GateEngine {
    /// Gate to pass before finishing.
    pub gate: Gate,
    /// When set, every generation fails with this code.
    pub fail_with: Option<ErrorCode>,
    resident: Option<String>,
}

impl GateEngine {
    /// An engine that waits on `gate`.
    pub fn new(gate: Gate) -> GateEngine {
        GateEngine { gate, fail_with: None, resident: None }
    }

    /// An engine that passes at once.
    pub fn open() -> GateEngine {
        let gate = Gate::default();
        gate.open();
        GateEngine::new(gate)
    }
}

impl Engine for GateEngine {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure> {
        if self.resident.as_deref() == Some(model) {
            return Ok(None);
        }
        self.resident = Some(model.to_string());
        Ok(Some(Duration::from_millis(1)))
    }

    fn generate(
        &mut self,
        req: &ValidRequest,
        _lane: &str,
        out_dir: &Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<Output, EngineFailure> {
        // Every step but the last runs before the gate, as a real engine's would; a
        // break from progress (a cancel) stops it as it stops a real engine.
        let cancelled = || EngineFailure { code: ErrorCode::Cancelled, message: "cancelled at a step".into() };
        for step in 1..req.steps {
            if progress(step, req.steps).is_break() {
                return Err(cancelled());
            }
        }
        self.gate.pass();
        if progress(req.steps, req.steps).is_break() {
            return Err(cancelled());
        }
        if let Some(code) = self.fail_with {
            return Err(EngineFailure { code, message: "failure forced by the test".into() });
        }
        std::fs::create_dir_all(out_dir)
            .map_err(|e| EngineFailure { code: ErrorCode::InferenceFailed, message: e.to_string() })?;
        let path = out_dir.join(format!("{}.gif", req.task_id));
        std::fs::write(&path, b"GIF89a")
            .map_err(|e| EngineFailure { code: ErrorCode::InferenceFailed, message: e.to_string() })?;
        Ok(Output {
            path,
            bytes: 6,
            preview_path: None,
            frames: req.frames,
            width: req.width,
            height: req.height,
            inference_ms: 0,
        })
    }

    fn resident(&self) -> Option<String> {
        self.resident.clone()
    }

    fn release(&mut self) {
        self.resident = None;
    }

    fn memory(&self) -> Option<MemorySnapshot> {
        Some(bare_snapshot(self.resident.clone()))
    }
}

/// Sleeps a fixed time per generation (and per model switch): a stand-in for a busy
/// GPU in queue tests.
pub struct SleepEngine {
    /// Time each generation takes.
    pub per_task: Duration,
    /// Time each load of another model takes.
    pub switch: Duration,
    resident: Option<String>,
}

impl SleepEngine {
    /// An engine that takes `per_task` per generation and no time to switch models.
    pub fn new(per_task: Duration) -> SleepEngine {
        SleepEngine::with_switch(per_task, Duration::ZERO)
    }

    /// An engine that takes `per_task` per generation and `switch` per model load.
    pub fn with_switch(per_task: Duration, switch: Duration) -> SleepEngine {
        SleepEngine { per_task, switch, resident: None }
    }
}

impl Engine for SleepEngine {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure> {
        if self.resident.as_deref() == Some(model) {
            return Ok(None);
        }
        std::thread::sleep(self.switch);
        self.resident = Some(model.to_string());
        Ok(Some(self.switch))
    }

    fn generate(
        &mut self,
        req: &ValidRequest,
        _lane: &str,
        out_dir: &Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<Output, EngineFailure> {
        std::thread::sleep(self.per_task);
        if progress(req.steps, req.steps).is_break() {
            return Err(EngineFailure { code: ErrorCode::Cancelled, message: "cancelled at a step".into() });
        }
        let path = out_dir.join(format!("{}.gif", req.task_id));
        Ok(Output {
            path,
            bytes: 0,
            preview_path: None,
            frames: req.frames,
            width: req.width,
            height: req.height,
            inference_ms: self.per_task.as_millis() as u64,
        })
    }

    fn resident(&self) -> Option<String> {
        self.resident.clone()
    }

    fn release(&mut self) {
        self.resident = None;
    }
}
