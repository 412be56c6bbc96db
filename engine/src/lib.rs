//! The warmlane engine: ONNX Runtime video pipelines kept warm in a worker process.
//!
//! A pipeline is three ONNX components named in `inference_settings.json`
//! (`models.<name>.pipeline`): a text encoder, a denoiser run in a sampler loop, and a
//! VAE decoder. The engine loads them once, generates videos as MP4 (H.264) with a
//! GIF preview beside each,
//! measures what every component costs in memory, and cleans up after every
//! generation whatever its outcome. The modules:
//!
//! - [`runtime`]: finding and loading `libonnxruntime` once per process.
//! - [`pipeline`]: [`Pipeline`], the public operations (load, warm up, generate, release).
//! - [`job`]: the plain data in and out ([`Job`], [`Generation`], [`LoadOptions`], memory records).
//! - [`error`]: [`EngineError`] and its one mapping to the contract's error codes.
//! - [`memory`]: RSS and NVML readings.
//! - `components`: sessions per component, CUDA with a loud CPU fallback.
//! - `sampling`: the stages of one generation (encode, denoise loop, decode).
//! - [`schedule`]: sampler schedules and update rules (pure).
//! - [`tokenizer`], [`rng`]: deterministic prompt ids and initial noise.
//! - `output`: [`Video`], the decoded frames, as MP4 or GIF, and atomic file writes.
//! - `h264`: RGB to YUV 4:2:0 (BT.601) and OpenH264 encoding; `mp4`: the faststart MP4 muxer.
//! - `cleanup`: the post-generation cleanup and its log line.
//! - `trim`: `malloc_trim`, the only `unsafe` in the crate.
// Workspace lints (Cargo.toml) apply; the engine also documents every public item.
#![warn(missing_docs)]

mod cleanup;
mod components;
pub mod error;
mod h264;
pub mod job;
pub mod memory;
mod mp4;
mod output;
pub mod park;
pub mod pipeline;
mod ports;
pub mod rng;
pub mod runtime;
mod sampling;
pub mod schedule;
pub mod tokenizer;
mod trim;

pub use error::{classify_ort_message, EngineError, LIBRARY_NOT_FOUND};
pub use h264::FPS;
pub use job::{
    go_on, ComponentMemory, FaultPlan, Generation, Job, LoadOptions, MemoryFigures, PipelineMemory, Progress,
    StageTimings, Trace,
};
pub use memory::MemorySample;
pub use output::Video;
pub use pipeline::Pipeline;
pub use runtime::Runtime;
pub use tokenizer::{Tokenizer, Tokens};
pub use warmlane_shared::settings::pipeline::{ComponentRole, Placement, Provider, Sampler};
pub use warmlane_shared::settings::PipelineSettings;

#[cfg(test)]
mod tests {
    /// The consumer moves a pipeline into a blocking task; it must stay `Send`.
    #[test]
    fn pipeline_and_runtime_cross_threads() {
        fn is_send<T: Send>() {}
        fn is_sync<T: Sync>() {}
        is_send::<crate::Pipeline>();
        is_sync::<crate::Runtime>();
    }
}
