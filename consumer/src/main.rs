//! `warmlane-consumer`: parses flags, sets up logging, and runs a worker.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warmlane_consumer::args::{Args, Command};
use warmlane_consumer::results::ResultsConfig;
use warmlane_consumer::runner;
use warmlane_consumer::setup;
use warmlane_consumer::{run, WorkerConfig};
use warmlane_infra::Report;
use warmlane_shared::settings::DEGRADED_LANE;

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
    warmlane_infra::telemetry::init(args.telemetry.json_logs);
    let metrics_addr = args.metrics_addr.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let exporters = warmlane_infra::telemetry::init_exporters(&args.telemetry, metrics_addr.is_some());
    if let (Some(addr), true) = (metrics_addr, exporters.prometheus) {
        warmlane_infra::prometheus::spawn_listener(addr).await;
    }
    let settings = match args.connect.load_settings() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("settings: {}", Report(&e));
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
    // An unknown lane is refused before anything loads or connects.
    if lane != DEGRADED_LANE && !settings.model(&lane).is_some_and(|m| m.dedicated_lane) {
        tracing::error!("{}", warmlane_consumer::worker::WorkerError::UnknownLane(lane));
        return ExitCode::from(2);
    }
    // A CA file that cannot be used is refused before anything loads.
    let endpoints = match warmlane_infra::Endpoints::from_args(&args.connect) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{}", Report(&e));
            return ExitCode::from(2);
        }
    };
    // The degraded worker loads ONNX Runtime only in its runners: check here too.
    if let Err(e) = warmlane_engine::runtime::spin_setting().and(warmlane_engine::runtime::cpu_arena_setting()) {
        tracing::error!("{e}");
        return ExitCode::from(2);
    }
    // A results URL that does not parse, or S3 settings that do not build, stop here.
    let results = match ResultsConfig::from_flags(
        args.results_url.as_deref(),
        args.results_ttl_s.unwrap_or(settings.lanes.task_ttl_s),
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{}", Report(&e));
            return ExitCode::from(2);
        }
    };
    let engine = match setup::engine(&args, &settings, &lane) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{}", Report(&e));
            return ExitCode::from(2);
        }
    };
    let cfg = WorkerConfig {
        settings,
        amqp: endpoints.amqp,
        redis: endpoints.redis,
        prefix: args.connect.prefix.clone(),
        worker_id: args.worker_id.clone().unwrap_or_else(|| setup::default_worker_id(&lane)),
        lane,
        results_dir: args.results_dir.clone(),
        results,
        idle_evict: (args.idle_evict_s > 0).then(|| Duration::from_secs(args.idle_evict_s)),
    };
    let shutdown = async {
        warmlane_infra::shutdown::signal().await;
        tracing::info!("finishing the in-flight task");
    };
    match run(cfg, engine, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("worker: {}", Report(&e));
            ExitCode::FAILURE
        }
    }
}
