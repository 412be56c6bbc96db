//! The narrow interface between the worker loop and inference.
//!
//! The worker needs three things of an engine: make a model resident, generate a
//! validated request, and describe its memory. The shipped implementation is
//! [`crate::ort_engine::OrtEngine`]; tests may supply their own.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;
use warmlane_shared::{ErrorCode, MemorySnapshot, ValidRequest};

/// A finished video.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    /// The video written (`<task_id>.mp4` from the ONNX engine).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The preview beside it (`<task_id>.gif`), when the engine writes one.
    #[serde(default)]
    pub preview_path: Option<PathBuf>,
    /// Frames.
    pub frames: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Inference time.
    pub inference_ms: u64,
}

/// A coded inference failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EngineFailure {
    /// `gpu_oom`, `inference_timeout` or `inference_failed`.
    pub code: ErrorCode,
    /// Detail for logs and the reply (no secrets, no prompt text).
    pub message: String,
}

/// What the worker loop drives. Calls are blocking; the worker makes them one at a
/// time, `generate` inline on its lane thread, warm-up and upkeep on the blocking pool.
pub trait Engine: Send + 'static {
    /// Makes `model` resident, releasing the resident pipeline first when it is another
    /// (an engine holds one pipeline; the memory manager relies on this swap). Returns
    /// the load time when a load happened (a cold start).
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure>;

    /// Generates the request's video into `out_dir`, reporting `(step, steps)`.
    fn generate(
        &mut self,
        req: &ValidRequest,
        lane: &str,
        out_dir: &std::path::Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<Output, EngineFailure>;

    /// The model resident now, if any.
    fn resident(&self) -> Option<String>;

    /// Releases whatever is resident (idle eviction, shutdown).
    fn release(&mut self);

    /// The memory manager's snapshot for the heartbeat; `None` for an engine that
    /// is not under a manager.
    fn memory(&self) -> Option<MemorySnapshot> {
        None
    }

    /// Pipeline loads since start (cold starts and switches). A lane worker's stays at
    /// 1 until recycle or idle eviction (FR-019); tests read it to prove no reload.
    fn loads(&self) -> u64 {
        0
    }

    /// Housekeeping between tasks, called by the worker while idle: the memory manager
    /// releases components idle past their policy and evicts below the headroom.
    fn maintain(&mut self) {}
}
