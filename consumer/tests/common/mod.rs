//! Fixtures for the consumer's engine tests: settings pointed at demo or heavy
//! pipelines, validated requests, runner configs and a memory sampler.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use warmlane_consumer::memory::probe;
use warmlane_consumer::runner::RunnerConfig;
use warmlane_shared::{Settings, ValidRequest};

/// Heavy denoiser sizes (MB) of the SC-001 run; phr00t is the larger pipeline.
pub const HEAVY_MB: [(&str, u32); 2] = [("anisora", 200), ("phr00t", 260)];

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("consumer has a parent").to_path_buf()
}

/// A heavy variant of `model` in `.cache/heavy-models/consumer/<model>`, generated once.
pub fn heavy_dir(model: &str, size_mb: u32) -> PathBuf {
    let dir = repo_root().join(".cache/heavy-models/consumer").join(model);
    let manifest = dir.join("manifest.json");
    let ok = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["heavy_bytes"].as_u64())
        .is_some_and(|b| b.abs_diff(u64::from(size_mb) << 20) < 1 << 20);
    if !ok {
        let status = std::process::Command::new("python3")
            .current_dir(repo_root())
            .args(["ops/gen_demo_models.py", "--heavy", "--size-mb", &size_mb.to_string(), "--model", model, "--out"])
            .arg(&dir)
            .status()
            .expect("python3 runs ops/gen_demo_models.py");
        assert!(status.success(), "generating the heavy {model} variant failed");
    }
    dir
}

/// How to edit one model of `inference_settings.json`.
#[derive(Debug, Clone, Default)]
pub struct ModelEdit {
    /// `pipeline.dir` (absolute paths are kept as they are).
    pub dir: Option<PathBuf>,
    /// `memory.weights_bytes`.
    pub weights_bytes: Option<u64>,
    /// `inference_timeout_ms`.
    pub timeout_ms: Option<u64>,
}

/// The repo's settings with edits per model, checked by `Settings::from_json`.
pub fn settings_with(edits: &[(&str, ModelEdit)]) -> Arc<Settings> {
    let root = repo_root();
    let source = root.join("inference_settings.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&source).expect("settings file")).expect("json");
    for (model, e) in edits {
        let m = &mut v["models"][*model];
        if let Some(dir) = &e.dir {
            m["pipeline"]["dir"] = dir.display().to_string().into();
        }
        if let Some(w) = e.weights_bytes {
            m["memory"]["weights_bytes"] = w.into();
        }
        if let Some(t) = e.timeout_ms {
            m["inference_timeout_ms"] = t.into();
        }
    }
    Arc::new(Settings::from_json(&v.to_string(), &source, &root).expect("edited settings are valid"))
}

/// The repo's settings unchanged (demo models).
pub fn demo_settings() -> Arc<Settings> {
    settings_with(&[])
}

/// Settings pointing both models at their heavy variants, with weight estimates.
pub fn heavy_settings() -> Arc<Settings> {
    let edits: Vec<(&str, ModelEdit)> = HEAVY_MB
        .iter()
        .map(|(m, mb)| {
            (
                *m,
                ModelEdit { dir: Some(heavy_dir(m, *mb)), weights_bytes: Some(u64::from(*mb) << 20), timeout_ms: None },
            )
        })
        .collect();
    settings_with(&edits)
}

/// A valid request for `model` (its fixed parameters, the settings' default size).
pub fn request(settings: &Settings, model: &str, task_id: &str) -> ValidRequest {
    let body = serde_json::json!({ "v": 1, "task_id": task_id, "model": model, "prompt": format!("a fox, take {task_id}"), "seed": 7 });
    warmlane_shared::validate_json(&body, settings).unwrap_or_else(|e| panic!("request {task_id}: {:?}", e.rejection))
}

/// A runner config using the package's own binary.
pub fn runner_config() -> RunnerConfig {
    let mut cfg = RunnerConfig::new(PathBuf::from(env!("CARGO_BIN_EXE_warmlane-consumer")));
    cfg.stop_grace = Duration::from_secs(5);
    cfg
}

/// A unique scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo_root().join("target/consumer-tests").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// RSS of this process plus all its direct children, bytes.
pub fn family_rss() -> u64 {
    let me = std::process::id();
    let mut total = probe::rss_of(me).unwrap_or(0);
    for pid in children_of(me) {
        total += probe::rss_of(pid).unwrap_or(0);
    }
    total
}

/// Pids whose parent is `parent` (from `/proc/<pid>/stat`).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string)))
                .flatten()
                .and_then(|ppid| ppid.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// Samples [`family_rss`] every `every` on a thread; `stop` returns the peak.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, u64)>,
}

impl Sampler {
    /// Starts sampling.
    pub fn start(every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            while !flag.load(Ordering::SeqCst) {
                peak = peak.max(family_rss());
                samples += 1;
                std::thread::sleep(every);
            }
            (peak, samples)
        });
        Sampler { stop, handle }
    }

    /// Stops; returns (peak bytes, samples taken).
    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("sampler thread")
    }
}

/// Bytes as MB for printing.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// An engine's memory snapshot as the JSON a heartbeat carries (`null` without one).
pub fn memory_json(engine: &impl warmlane_consumer::Engine) -> serde_json::Value {
    serde_json::to_value(engine.memory()).expect("a snapshot serializes")
}
