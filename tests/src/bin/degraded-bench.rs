//! `degraded-bench` (issue #16): requests alternating between the two heavy demo
//! pipelines, arriving faster than one degraded worker serves them, run once with FIFO
//! (`degraded.window` = 1) and once switch-aware (`--window`, 8), in the same run,
//! against the real RabbitMQ and Redis (AMQP_URL / REDIS_URL), each mode under a fresh
//! prefix. The worker is the shipped degraded worker: its engine is the runner
//! supervisor (`warmlane-consumer runner` children, ONNX Runtime) under the memory
//! manager, as `warmlane-consumer --lane degraded` builds it. In the FIFO and
//! switch-aware modes parking is off, so every switch is a cold load, as at real model
//! sizes; a third mode runs switch-aware with parking on (the worker's default host
//! budget). The figures and verdicts come from [`warmlane_tests::degraded_bench`].
//!
//! ```text
//! cargo build --release -p warmlane-consumer --bin warmlane-consumer -p warmlane-tests --bin degraded-bench
//! target/release/degraded-bench [--requests 40] [--window 8] [--size-mb 200]
//! ```

use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warmlane_consumer::managed::ManagedEngine;
use warmlane_consumer::memory::MemoryManager;
use warmlane_consumer::runner::{RunnerConfig, RunnerEngine};
use warmlane_consumer::Engine;
use warmlane_shared::Settings;
use warmlane_tests::degraded_bench::{host_line, run_mode, verdict, MODELS};
use warmlane_tests::{repo_root, settings_with};

/// FIFO against switch-aware degraded serving of alternating heavy requests.
#[derive(Debug, Parser)]
struct Args {
    /// Requests per mode, alternating anisora / phr00t.
    #[arg(long, env = "DEGRADED_BENCH_REQUESTS", default_value_t = 40)]
    requests: u32,
    /// `degraded.window` of the switch-aware mode.
    #[arg(long, env = "DEGRADED_BENCH_WINDOW", default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..))]
    window: u32,
    /// Heavy denoiser weights of each pipeline, MB (`ops/gen_demo_models.py --heavy --size-mb`).
    #[arg(long, env = "DEGRADED_BENCH_SIZE_MB", default_value_t = 200)]
    size_mb: u32,
    /// Where the heavy pipelines are generated (`<dir>/<size>mb/<model>`).
    #[arg(long, env = "DEGRADED_BENCH_HEAVY_DIR", default_value = ".cache/heavy-models/degraded-bench")]
    heavy_dir: PathBuf,
    /// The runner executable; by default `warmlane-consumer` beside this binary.
    #[arg(long, env = "DEGRADED_BENCH_RUNNER_EXE")]
    runner_exe: Option<PathBuf>,
}

/// The heavy variant of `model` under `root`, generated when missing or of another size.
fn heavy_model(root: &Path, model: &str, size_mb: u32) -> Result<PathBuf, String> {
    let dir = repo_root().join(root).join(format!("{size_mb}mb")).join(model);
    // The generator is idempotent: it returns at once when the variant is in place.
    let status = std::process::Command::new("python3")
        .current_dir(repo_root())
        .args(["ops/gen_demo_models.py", "--heavy", "--size-mb", &size_mb.to_string(), "--model", model, "--out"])
        .arg(&dir)
        .status()
        .map_err(|e| format!("python3 ops/gen_demo_models.py: {e}"))?;
    if !status.success() {
        return Err(format!("generating the heavy {model} variant failed ({status})"));
    }
    std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The repository's settings with both models on their heavy variants and `window`.
fn settings(dirs: &[PathBuf], size_mb: u32, window: u32) -> Arc<Settings> {
    settings_with(|s| {
        for (model, dir) in MODELS.iter().zip(dirs) {
            s["models"][*model]["pipeline"]["dir"] = dir.display().to_string().into();
            s["models"][*model]["memory"]["weights_bytes"] = (u64::from(size_mb) << 20).into();
        }
        s["degraded"]["window"] = window.into();
    })
}

/// The degraded worker's engine as `warmlane-consumer --lane degraded` builds it
/// (default flags), with `runner_exe` as the runner; parking on or off.
fn degraded_engine(settings: &Arc<Settings>, runner_exe: &Path, park: bool) -> Result<Box<dyn Engine>, String> {
    let args = warmlane_consumer::args::Args::try_parse_from(["warmlane-consumer", "--lane", "degraded"])
        .map_err(|e| e.to_string())?;
    let manager = MemoryManager::from_host(args.memory_budget_bytes.0, args.memory_margin_bytes, args.memory_policy())
        .map_err(|e| format!("memory budget: {e}"))?;
    let mut cfg = RunnerConfig::new(runner_exe.to_path_buf());
    cfg.deadline_margin = Duration::from_millis(args.runner_deadline_margin_ms);
    if park {
        cfg.host_park_bytes = warmlane_consumer::runner::park::default_budget_here();
    }
    let inner = RunnerEngine::new(settings.clone(), cfg).map_err(|e| e.message)?;
    Ok(Box::new(ManagedEngine::new(inner, settings.clone(), Arc::new(manager))))
}

async fn run(args: Args) -> Result<(), String> {
    let runner_exe = match args.runner_exe {
        Some(exe) => exe,
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("warmlane-consumer"),
    };
    if !runner_exe.is_file() {
        return Err(format!("{} not found: cargo build --release -p warmlane-consumer", runner_exe.display()));
    }
    let dirs = MODELS.iter().map(|m| heavy_model(&args.heavy_dir, m, args.size_mb)).collect::<Result<Vec<_>, _>>()?;
    println!(
        "degraded-bench: {} requests alternating {MODELS:?}, heavy pipelines {} MB each, FIFO then window {} (parking off, then on)",
        args.requests, args.size_mb, args.window
    );
    println!("{}", host_line());
    // The worker runs on a runtime of its own (one thread), as a consumer process would.
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("degraded-worker")
        .enable_all()
        .build()
        .map_err(|e| format!("worker runtime: {e}"))?;
    let mut reports = vec![];
    for (name, window, park) in
        [("dbench-fifo", 1, false), ("dbench-aware", args.window, false), ("dbench-parked", args.window, true)]
    {
        let settings = settings(&dirs, args.size_mb, window);
        println!(
            "max_wait_ms {}, max_depth {}, parking {}",
            settings.degraded.max_wait_ms,
            settings.degraded.max_depth,
            if park { "on" } else { "off" }
        );
        let engine = degraded_engine(&settings, &runner_exe, park)?;
        let report = run_mode(name, settings, args.requests, engine, workers.handle()).await?;
        println!("{}", report.line());
        reports.push(report);
    }
    workers.shutdown_background();
    for line in verdict(&reports[0], &reports[1], reports.get(2)) {
        println!("{line}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("degraded-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
