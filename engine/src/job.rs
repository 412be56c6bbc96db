//! The plain data that crosses the engine boundary: what to load, what to generate,
//! and what came back.
//!
//! Why plain structs: the consumer builds a [`Job`] from a validated request and turns
//! a [`Generation`] or an error into a reply; neither needs to know about ONNX Runtime.

use crate::memory::MemorySample;
use crate::tokenizer::Tokens;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use warmlane_shared::settings::pipeline::{ComponentRole, Placement, Provider};

/// Options for [`crate::Pipeline::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Run every component on this provider instead of the one in settings.
    pub provider_override: Option<Provider>,
    /// CUDA arena limit (`gpu_mem_limit`), bytes; `None` leaves ONNX Runtime's default.
    pub memory_limit_bytes: Option<u64>,
    /// Forced failures for tests; the default injects none.
    pub faults: FaultPlan,
    /// Parked bytes to load from, and whether to park what loads from files.
    pub park: crate::park::ParkPlan,
}

/// Test hook: failures to inject into the next generations. Plain data, default none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Fail the denoising loop when it reaches this step (1-based), every generation.
    pub fail_at_step: Option<u32>,
    /// Make the next N denoiser runs fail with a simulated allocation failure, whose
    /// message goes through the same classifier as real ONNX Runtime errors.
    pub oom_next_runs: u32,
}

/// One generation request, already validated by the consumer.
#[derive(Debug, Clone)]
pub struct Job {
    /// The task id; names the output files.
    pub task_id: String,
    /// The lane serving it (for logs): a model name or `degraded`.
    pub lane: String,
    /// The prompt.
    pub prompt: String,
    /// Negative prompt for guidance; `None` uses the empty prompt.
    pub negative_prompt: Option<String>,
    /// Denoiser steps.
    pub steps: u32,
    /// Guidance scale; 1.0 disables guidance (one denoiser pass per step).
    pub cfg: f32,
    /// Seed of the initial latent; same seed, same bytes.
    pub seed: u64,
    /// Width in pixels, a multiple of the pipeline's spatial downsample.
    pub width: u32,
    /// Height in pixels, a multiple of the pipeline's spatial downsample.
    pub height: u32,
    /// Frames of video.
    pub frames: u32,
    /// Limit for the whole generation.
    pub timeout: Duration,
    /// Directory for `<task_id>.mp4`, `<task_id>.gif` and `<task_id>.json`.
    pub out_dir: PathBuf,
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The video written: `<task_id>.mp4` (H.264, yuv420p, [`crate::FPS`] fps, faststart).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The preview written beside it: `<task_id>.gif`, the same frames.
    pub preview_path: PathBuf,
    /// Its size in bytes.
    pub preview_bytes: u64,
    /// Frames in the video (and the preview).
    pub frames: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Time from start to the written file.
    pub inference_ms: u64,
    /// Denoiser runs (steps, or 2 x steps with guidance).
    pub denoiser_calls: u32,
    /// Memory around the run.
    pub memory: MemoryFigures,
    /// The provider the denoiser actually ran on (after any fallback).
    pub provider: Provider,
    /// Time per stage.
    pub timings: StageTimings,
}

/// Time spent per stage of a generation, microseconds (demo stages take well under
/// a millisecond).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimings {
    /// Prompt encoding (both prompts with guidance).
    pub encode_us: u64,
    /// The whole denoising loop.
    pub denoise_us: u64,
    /// VAE decoding.
    pub decode_us: u64,
    /// Encoding and writing the files (MP4, GIF and JSON).
    pub write_us: u64,
}

/// Memory readings around one generation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MemoryFigures {
    /// Before the generation started.
    pub before: MemorySample,
    /// Right after the last run, before cleanup.
    pub after_run: MemorySample,
    /// After cleanup.
    pub after_cleanup: MemorySample,
}

/// Measured memory of one component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentMemory {
    /// Which component.
    pub role: ComponentRole,
    /// Whether its session is loaded now.
    pub loaded: bool,
    /// Its placement from settings.
    pub placement: Placement,
    /// The provider asked for.
    pub requested_provider: Provider,
    /// The provider it runs on (CPU after a fallback).
    pub provider: Provider,
    /// RSS growth measured when its session was last created, bytes.
    pub rss_bytes: i64,
    /// Device memory growth measured then, where NVML works.
    pub device_bytes: Option<i64>,
    /// Session creation time of the last load, milliseconds.
    pub load_ms: u64,
    /// ONNX file size with its external data (`<file>.data`), bytes.
    pub file_bytes: u64,
}

/// Measured memory of a pipeline, per component.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineMemory {
    /// The model name.
    pub model: String,
    /// Per component, in load order.
    pub components: Vec<ComponentMemory>,
    /// Reading before the pipeline was first loaded.
    pub before_load: MemorySample,
    /// Reading right after the first full load.
    pub after_load: MemorySample,
    /// Reading now.
    pub now: MemorySample,
}

impl PipelineMemory {
    /// Sum of the measured RSS of the loaded components, bytes.
    pub fn resident_bytes(&self) -> i64 {
        self.components.iter().filter(|c| c.loaded).map(|c| c.rss_bytes).sum()
    }
}

/// Every intermediate of one generation, for checking the engine against a reference
/// implementation ([`crate::Pipeline::trace`]). Plain data, row-major `f32`.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The prompt's tokens, then the negative prompt's when guided.
    pub tokens: Vec<Tokens>,
    /// Text embeddings of the prompt, `[1, T, D]`.
    pub cond_embeds: Vec<f32>,
    /// Text embeddings of the negative prompt, when guided.
    pub uncond_embeds: Option<Vec<f32>>,
    /// The timestep fed to the denoiser at each step.
    pub timesteps: Vec<f32>,
    /// `[1, C, F, h, w]`.
    pub latent_shape: Vec<usize>,
    /// The latent after each step.
    pub latents: Vec<Vec<f32>>,
    /// The decoded video, `[1, 3, F, H, W]` in [-1, 1] (before any frame cut).
    pub video: Vec<f32>,
    /// Its shape.
    pub video_shape: Vec<usize>,
}

/// What a run calls after every denoising step with `(step, steps)`; a `Break` stops
/// the run after that step with [`crate::EngineError::Cancelled`].
pub type Progress<'a> = dyn FnMut(u32, u32) -> std::ops::ControlFlow<()> + 'a;

/// A [`Progress`] that lets every run go to its end.
pub fn go_on(_step: u32, _steps: u32) -> std::ops::ControlFlow<()> {
    std::ops::ControlFlow::Continue(())
}
