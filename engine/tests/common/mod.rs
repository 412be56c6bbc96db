//! Shared fixtures for the engine's integration tests: the repo's demo pipelines,
//! jobs, and a tracing capture that records log lines as JSON.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warmlane_engine::{Job, PipelineSettings, Runtime};

/// The repository root (the engine crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("engine has a parent").to_path_buf()
}

/// Loads ONNX Runtime or fails the test with the engine's one-line message.
pub fn init_runtime() -> &'static Runtime {
    match Runtime::init() {
        Ok(runtime) => runtime,
        Err(error) => panic!("{error}"),
    }
}

/// The pipeline settings of a demo model, as proposed for `inference_settings.json`.
pub fn demo_settings(model: &str) -> PipelineSettings {
    let json = match model {
        "anisora" => ANISORA,
        "phr00t" => PHR00T,
        other => panic!("no demo model {other}"),
    };
    serde_json::from_str(json).expect("demo settings parse")
}

pub const ANISORA: &str = r#"{
  "dir": "models/anisora", "sampler": "flow_euler", "flow_shift": 3.0,
  "latent_channels": 4, "spatial_downsample": 8, "temporal_downsample": 1,
  "max_tokens": 32, "vocab_size": 512, "tokenizer": null,
  "text_encoder": { "file": "text_encoder.onnx", "provider": "cpu", "placement": "offload_between_prompts" },
  "denoiser": { "file": "denoiser.onnx", "provider": "cpu", "placement": "offload_when_idle" },
  "vae_decoder": { "file": "vae_decoder.onnx", "provider": "cpu", "placement": "pinned" }
}"#;

pub const PHR00T: &str = r#"{
  "dir": "models/phr00t", "sampler": "flow_euler", "flow_shift": 1.0,
  "latent_channels": 4, "spatial_downsample": 8, "temporal_downsample": 1,
  "max_tokens": 32, "vocab_size": 512, "tokenizer": null,
  "text_encoder": { "file": "text_encoder.onnx", "provider": "cpu", "placement": "offload_between_prompts" },
  "denoiser": { "file": "denoiser.onnx", "provider": "cpu", "placement": "offload_when_idle" },
  "vae_decoder": { "file": "vae_decoder.onnx", "provider": "cpu", "placement": "pinned" }
}"#;

/// A unique scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo_root().join("target").join("engine-tests").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A small job: 32x24, 5 frames.
pub fn job(task_id: &str, steps: u32, cfg: f32, seed: u64, out_dir: &Path) -> Job {
    Job {
        task_id: task_id.into(),
        lane: "test".into(),
        prompt: "a red fox running through snow".into(),
        negative_prompt: Some("blurry".into()),
        steps,
        cfg,
        seed,
        width: 32,
        height: 24,
        frames: 5,
        timeout: Duration::from_secs(60),
        out_dir: out_dir.to_path_buf(),
    }
}

/// Log lines captured as JSON objects.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Every captured line, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("capture lock").clone();
        String::from_utf8_lossy(&bytes).lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// Lines of one target.
    pub fn target(&self, target: &str) -> Vec<serde_json::Value> {
        self.lines().into_iter().filter(|l| l["target"] == target).collect()
    }
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with a thread-local subscriber that captures every event as JSON.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Captured) {
    let captured = Captured::default();
    let sink = captured.0.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || CaptureWriter(sink.clone()))
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    (result, captured)
}
