//! Shared helpers of the integration tests: server URLs, isolated prefixes,
//! edited settings, an in-process fleet, test-double engines, servers a test owns
//! (plain, TLS with its own certificates, or a three-node RabbitMQ cluster),
//! binaries run as watched processes, and the core of `degraded-bench` (shared with
//! its test).
//!
//! Every test runs under its own name prefix, so tests run in parallel and again
//! on the same servers. A missing server fails the test with a message that says
//! how to start it; nothing is skipped.
#![allow(unreachable_pub)]

pub mod cluster;
pub mod degraded_bench;
pub mod engines;
pub mod fleet;
pub mod http;
pub mod moto;
pub mod servers;
pub mod tls_servers;
pub mod watched;

use std::path::PathBuf;
use std::sync::Arc;
use warmlane_shared::Settings;

/// RabbitMQ URL of the tests (`AMQP_URL`, default the local broker).
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Redis URL of the tests (`REDIS_URL`, default the local server).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A unique prefix for one test.
pub fn prefix(name: &str) -> String {
    format!("t-{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The repository's settings with `edit` applied (e.g. shortened limits).
pub fn settings_with(edit: impl FnOnce(&mut serde_json::Value)) -> Arc<Settings> {
    let path = repo_root().join("inference_settings.json");
    let text = std::fs::read_to_string(&path).expect("read inference_settings.json");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("settings are JSON");
    edit(&mut json);
    match Settings::from_json(&json.to_string(), &path, &repo_root()) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("edited settings do not load: {e}"),
    }
}

/// The repository's settings with `edit` applied, written to `dir` for a worker or
/// producer process: the model directories made absolute, since the process reads
/// them relative to the file.
pub fn settings_file(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("inference_settings.json")).expect("read the settings");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("settings are JSON");
    let models: Vec<String> = json["models"].as_object().expect("models").keys().cloned().collect();
    for model in models {
        let abs = repo_root().join("models").join(&model).canonicalize().expect("model dir");
        json["models"][&model]["pipeline"]["dir"] = abs.display().to_string().into();
    }
    edit(&mut json);
    std::fs::create_dir_all(dir).expect("settings dir");
    let path = dir.join("inference_settings.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write the settings");
    path
}

/// A valid JSON request for `model`.
pub fn request(task_id: &str, model: &str) -> serde_json::Value {
    let (steps, cfg) = if model == "phr00t" { (4, 1.0) } else { (8, 5.0) };
    serde_json::json!({"v": 1, "task_id": task_id, "model": model, "prompt": "a paper boat on a river",
                       "steps": steps, "cfg": cfg, "width": 32, "height": 32, "frames": 4, "seed": 42})
}

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}
