//! switch-bench: the degraded worker's model switch, cold and parked, next to the raw
//! load of the incoming pipeline (issue #16 target: parked switch <= 0.3 x cold switch).
//!
//! - raw load: `OrtEngine::prepare` in this process (load + warm-up), the cost a lane
//!   worker pays once;
//! - cold switch: `RunnerEngine::prepare` of the other model while one is resident,
//!   parking off (stop the runner, confirm its memory is back, load the files in the
//!   spare runner, warm up): every switch at real model sizes today;
//! - parked switch: the same with parking on, once both pipelines are parked (the
//!   spare maps the parked ORT form from the worker's memfds);
//! - park write: the first cold load with parking on, which also writes the ORT form
//!   (paid once per model while it stays parked).
//!
//! It also prints where a parked switch's time goes (means): stopping the old
//! runner, confirming the release, session creation and the warm-up run in the new
//! runner; process start is off the critical path (the spare was started after the
//! previous load).
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
use warmlane_consumer::runner::release::SwapTimings;
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

/// Parked switch over cold switch at or under this meets the target.
const TARGET: f64 = 0.3;

#[derive(Default)]
struct Figures {
    raw: Vec<f64>,
    cold: Vec<f64>,
    parked: Vec<f64>,
    park_write: f64,
    breakdown: Vec<SwapTimings>,
    /// One generation right after the switch: from the files, from parked bytes.
    run_cold: Vec<f64>,
    run_parked: Vec<f64>,
}

fn runner(o: &Opts, settings: &Arc<Settings>, host_park_bytes: u64) -> Result<RunnerEngine, String> {
    let cfg = RunnerConfig { host_park_bytes, ..RunnerConfig::new(o.runner_exe.clone()) };
    RunnerEngine::new(settings.clone(), cfg).map_err(|e| e.message)
}

/// One generation of `model` (its fixed steps, the settings' default size), ms of inference.
fn generate(engine: &mut RunnerEngine, settings: &Settings, model: &str) -> Result<f64, String> {
    let body = serde_json::json!({ "v": 1, "task_id": "switch-bench", "model": model, "prompt": "a fox", "seed": 1 });
    let req = warmlane_shared::validate_json(&body, settings).map_err(|e| e.rejection.message)?;
    let out = std::env::temp_dir().join("warmlane-switch-bench");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let output = engine
        .generate(&req, "degraded", &out, &mut |_, _| std::ops::ControlFlow::Continue(()))
        .map_err(|e| e.message)?;
    Ok(output.inference_ms as f64)
}

/// Switches `engine` to `other` then back to `model`; the time of the switch back.
fn switch(engine: &mut RunnerEngine, model: &str, other: &str) -> Result<f64, String> {
    engine.prepare(other).map_err(|e| e.message)?;
    ms(engine.prepare(model).map_err(|e| e.message)?)
}

fn measure(o: &Opts, settings: &Arc<Settings>) -> Result<[Figures; 2], String> {
    let mut figures = [Figures::default(), Figures::default()];
    let mut cold = runner(o, settings, 0)?;
    let mut parked = runner(o, settings, 64 << 30)?;
    for (i, m) in MODELS.iter().enumerate() {
        figures[i].park_write = ms(parked.prepare(m).map_err(|e| e.message)?)?;
    }
    if parked.park().models().len() != MODELS.len() {
        return Err(format!("parking did not keep both pipelines: {:?}", parked.park().models()));
    }
    for _ in 0..o.rounds {
        for (i, m) in MODELS.iter().enumerate() {
            let other = MODELS[1 - i];
            let mut engine = OrtEngine::new(settings.clone(), None).map_err(|e| e.message)?;
            figures[i].raw.push(ms(engine.prepare(m).map_err(|e| e.message)?)?);
            drop(engine);
            figures[i].cold.push(switch(&mut cold, m, other)?);
            let before = (parked.loads(), parked.parked_loads());
            figures[i].parked.push(switch(&mut parked, m, other)?);
            if parked.loads() - before.0 != parked.parked_loads() - before.1 {
                return Err(format!("a switch to {m} or {other} did not load parked bytes"));
            }
            figures[i].breakdown.push(parked.last_swap());
            figures[i].run_cold.push(generate(&mut cold, settings, m)?);
            figures[i].run_parked.push(generate(&mut parked, settings, m)?);
        }
    }
    cold.release();
    parked.release();
    Ok(figures)
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
    let mut figures = measure(&o, &settings)?;
    println!("switch-bench: {} rounds, heavy pipelines from {}", o.rounds, o.heavy_dir.display());
    println!(
        "{:<8} {:>8} {:>9} {:>9} {:>10} {:>10} {:>13} {:>8}",
        "incoming", "weights", "raw ms", "cold ms", "parked ms", "park write", "parked/cold", "verdict"
    );
    let mut all_met = true;
    for (i, m) in MODELS.iter().enumerate() {
        let weights = std::fs::metadata(o.heavy_dir.join(m).join("denoiser.onnx")).map(|md| md.len()).unwrap_or(0);
        let f = &mut figures[i];
        let (r, c, p) = (median(&mut f.raw), median(&mut f.cold), median(&mut f.parked));
        let met = p / c <= TARGET;
        all_met &= met;
        let verdict = if met { "met" } else { "NOT met" };
        println!(
            "{m:<8} {:>5.0} MB {r:>9.0} {c:>9.0} {p:>10.0} {:>10.0} {:>12.2}x {verdict:>8}",
            weights as f64 / 1e6,
            f.park_write,
            p / c
        );
    }
    println!("(medians; target parked/cold <= {TARGET}: {})", if all_met { "met" } else { "NOT met" });
    println!("where a parked switch goes (means, ms): incoming  stop  confirm  session  warm-up  other  total");
    for (i, m) in MODELS.iter().enumerate() {
        let t = SwapTimings::mean(&figures[i].breakdown);
        let (stop, confirm, session, warmup, total, other) =
            (t.stop_ms, t.confirm_ms, t.session_ms, t.warmup_ms, t.total_ms, t.other_ms());
        println!("  {m:<8} {stop:>5.0} {confirm:>8.0} {session:>8.0} {warmup:>8.0} {other:>6.0} {total:>6.0}");
    }
    println!("(process start and ONNX Runtime initialisation are off the critical path: the spare runner)");
    println!("one generation after the switch (medians, ms of inference; parked sessions are not prepacked):");
    for (i, m) in MODELS.iter().enumerate() {
        let f = &mut figures[i];
        let (c, p) = (median(&mut f.run_cold), median(&mut f.run_parked));
        println!("  {m:<8} from files {c:>6.0}   from parked bytes {p:>6.0}   ({:+.1} %)", (p / c - 1.0) * 100.0);
    }
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
