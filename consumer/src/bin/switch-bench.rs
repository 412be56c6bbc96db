//! switch-bench: the degraded worker's model-switch time next to the raw load time of
//! the incoming pipeline (target: switch <= 1.2 x raw load).
//!
//! - raw load: `OrtEngine::prepare` in this process (load + warm-up), the cost a lane
//!   worker pays once;
//! - runner cold start: `RunnerEngine::prepare` from an empty slot (spawn the runner,
//!   initialise ONNX Runtime in it, load + warm-up);
//! - switch: `RunnerEngine::prepare` of the other model while one is resident (stop
//!   the runner, confirm its memory is back, then the cold start).
//!
//! Usage (build the worker binary first; the runner is `warmlane-consumer runner`):
//!   cargo build --release -p warmlane-consumer
//!   target/release/switch-bench [--rounds 5] [--heavy-dir .cache/heavy-models/consumer]
//! The heavy variants come from `ops/gen_demo_models.py --heavy` (the consumer tests
//! generate them: anisora 200 MB, phr00t 260 MB).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_consumer::runner::{RunnerConfig, RunnerEngine};
use warmlane_consumer::Engine;
use warmlane_shared::Settings;

const MODELS: [&str; 2] = ["anisora", "phr00t"];

struct Opts {
    rounds: usize,
    heavy_dir: PathBuf,
    settings: PathBuf,
    runner_exe: PathBuf,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        rounds: 5,
        heavy_dir: PathBuf::from(".cache/heavy-models/consumer"),
        settings: PathBuf::from("inference_settings.json"),
        runner_exe: std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("warmlane-consumer"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => o.rounds = value.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--heavy-dir" => o.heavy_dir = value.into(),
            "--settings" => o.settings = value.into(),
            "--runner-exe" => o.runner_exe = value.into(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

fn settings(o: &Opts) -> Result<Arc<Settings>, String> {
    let text = std::fs::read_to_string(&o.settings).map_err(|e| format!("{}: {e}", o.settings.display()))?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for m in MODELS {
        let dir = std::path::absolute(o.heavy_dir.join(m)).map_err(|e| e.to_string())?;
        if !dir.join("denoiser.onnx").is_file() {
            return Err(format!(
                "{} missing: python3 ops/gen_demo_models.py --heavy --model {m} --out {}",
                dir.display(),
                dir.display()
            ));
        }
        v["models"][m]["pipeline"]["dir"] = dir.display().to_string().into();
    }
    let base = o.settings.parent().map(Path::to_path_buf).unwrap_or_default();
    Settings::from_json(&v.to_string(), &o.settings, &base).map(Arc::new).map_err(|e| e.to_string())
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn ms(d: Option<Duration>) -> Result<f64, String> {
    d.map(|d| d.as_secs_f64() * 1e3).ok_or_else(|| "prepare did not load".to_string())
}

fn run() -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let o = opts()?;
    let settings = settings(&o)?;
    if !o.runner_exe.is_file() {
        return Err(format!("{} not found: cargo build --release -p warmlane-consumer", o.runner_exe.display()));
    }
    let mut raw = [Vec::new(), Vec::new()];
    let mut cold = [Vec::new(), Vec::new()];
    let mut switch = [Vec::new(), Vec::new()];
    let mut runner =
        RunnerEngine::new(settings.clone(), RunnerConfig::new(o.runner_exe.clone())).map_err(|e| e.message)?;
    for _ in 0..o.rounds {
        for (i, m) in MODELS.iter().enumerate() {
            let mut engine = OrtEngine::new(settings.clone(), None).map_err(|e| e.message)?;
            raw[i].push(ms(engine.prepare(m).map_err(|e| e.message)?)?);
            drop(engine);
            runner.release();
            cold[i].push(ms(runner.prepare(m).map_err(|e| e.message)?)?);
            let other = MODELS[1 - i];
            runner.prepare(other).map_err(|e| e.message)?;
            switch[i].push(ms(runner.prepare(m).map_err(|e| e.message)?)?);
        }
    }
    runner.release();
    println!("switch-bench: {} rounds, heavy pipelines from {}", o.rounds, o.heavy_dir.display());
    println!(
        "{:<8} {:>9} {:>14} {:>15} {:>13} {:>8}",
        "incoming", "weights", "raw load ms", "runner cold ms", "switch ms", "ratio"
    );
    for (i, m) in MODELS.iter().enumerate() {
        let weights = std::fs::metadata(o.heavy_dir.join(m).join("denoiser.onnx")).map(|md| md.len()).unwrap_or(0);
        let (r, c, s) = (median(&mut raw[i]), median(&mut cold[i]), median(&mut switch[i]));
        println!("{m:<8} {:>6.0} MB {r:>14.0} {c:>15.0} {s:>13.0} {:>7.2}x", weights as f64 / 1e6, s / r);
    }
    println!(
        "(medians; raw = in-process load + warm-up; switch = stop runner + confirm release + spawn + load + warm-up)"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switch-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
