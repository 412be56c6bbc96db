//! `warmlane-consumer`: parses flags, sets up logging, and runs a worker.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warmlane_consumer::args::{Args, Command};
use warmlane_consumer::managed::ManagedEngine;
use warmlane_consumer::memory::MemoryManager;
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_consumer::runner::{self, RunnerConfig, RunnerEngine};
use warmlane_consumer::{run, Engine, WorkerConfig};
use warmlane_engine::Provider;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::Settings;

fn main() -> ExitCode {
    let args = Args::parse();
    // The runner child speaks frames on stdout: no runtime, no stdout logging, no metrics.
    if let Some(Command::Runner { model }) = &args.command {
        return runner::child::main(model.as_deref());
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(serve(args)),
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> ExitCode {
    warmlane_producer::telemetry::init(args.telemetry.json_logs);
    warmlane_producer::telemetry::init_metrics(&args.telemetry);
    let settings = match args.connect.load_settings() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("settings: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckSettings) = args.command {
        println!("{}: {} models, ok", settings.source.display(), settings.models.len());
        return ExitCode::SUCCESS;
    }
    let Some(lane) = args.lane.clone() else {
        tracing::error!("--lane is required: a model name or `degraded`");
        return ExitCode::from(2);
    };
    let provider = match args.provider.as_deref().map(OrtEngine::parse_provider).transpose() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("--provider: {e}");
            return ExitCode::from(2);
        }
    };
    // The degraded worker loads ONNX Runtime only in its runners: check here too.
    if let Err(e) = warmlane_engine::runtime::spin_setting() {
        tracing::error!("{e}");
        return ExitCode::from(2);
    }
    let engine = match build_engine(&args, &settings, &lane, provider) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("engine: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = WorkerConfig {
        settings,
        amqp_url: args.connect.amqp_url.clone(),
        redis_url: args.connect.redis_url.clone(),
        prefix: args.connect.prefix.clone(),
        lane,
        results_dir: args.results_dir.clone(),
        worker_id: args
            .worker_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", args.lane.as_deref().unwrap_or("w"), uuid_short())),
        idle_evict: (args.idle_evict_s > 0).then(|| Duration::from_secs(args.idle_evict_s)),
    };
    match run(cfg, engine, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The degraded lane runs pipelines in runner children; a lane worker runs its model
/// in-process. Both are under the memory manager.
fn build_engine(
    args: &Args,
    settings: &Arc<Settings>,
    lane: &str,
    provider: Option<Provider>,
) -> Result<Box<dyn Engine>, String> {
    let manager = MemoryManager::from_host(args.memory_budget_bytes, args.memory_margin_bytes, args.memory_policy())
        .map_err(|e| e.to_string())?;
    let budget = manager.budget();
    tracing::info!(lane, budget_bytes = budget.bytes, source = ?budget.source, "memory budget");
    let manager = Arc::new(manager);
    if lane == DEGRADED_LANE {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the runner executable: {e}"))?;
        let mut cfg = RunnerConfig::new(exe);
        cfg.provider = provider;
        cfg.deadline_margin = Duration::from_millis(args.runner_deadline_margin_ms);
        let inner = RunnerEngine::new(settings.clone(), cfg).map_err(|e| e.message)?;
        Ok(Box::new(ManagedEngine::new(inner, settings.clone(), manager)))
    } else {
        let inner = OrtEngine::new(settings.clone(), provider).map_err(|e| e.message)?;
        Ok(Box::new(ManagedEngine::new(inner, settings.clone(), manager)))
    }
}

fn uuid_short() -> String {
    format!("{:08x}", std::process::id() ^ (warmlane_shared::now_ms() as u32))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing the in-flight task");
}
