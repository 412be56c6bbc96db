//! The producer binary's subcommands, as library functions so tests can call them.

use crate::cli::{Cli, Command};
use crate::error::ProducerError;
use crate::producer::Producer;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use warmlane_shared::{now_ms, FallbackCause, Settings};

/// Errors of a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The settings file is bad.
    #[error("settings: {0}")]
    Settings(#[from] warmlane_shared::SettingsError),
    /// Broker, Redis or a refusal.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// Bad input on the command line or in a file.
    #[error("{0}")]
    Input(String),
}

/// Runs a subcommand until it ends or `shutdown` resolves.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), CommandError> {
    let settings = Arc::new(cli.connect.load_settings()?);
    if let Command::CheckSettings = cli.command {
        println!("{}: {} models, ok", settings.source.display(), settings.models.len());
        return Ok(());
    }
    let c = &cli.connect;
    let producer = Arc::new(Producer::connect(settings.clone(), &c.amqp_url, &c.redis_url, &c.prefix).await?);
    match cli.command {
        Command::CheckSettings => Ok(()),
        Command::Submit { file, wait } => submit(&producer, &file, wait).await,
        Command::Serve(args) => Ok(crate::http::serve(producer, args, c.amqp_url.clone(), shutdown).await?),
        Command::Dead(cmd) => Ok(crate::deadq::run(&producer, cmd).await?),
        Command::Reaper => Ok(crate::reaper::run(producer, c.amqp_url.clone(), shutdown).await?),
        Command::Lanes => {
            let status = lanes_status(&producer).await?;
            println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            Ok(())
        }
        Command::Disable { model, cause, note } => {
            known_lane(&settings, &model)?;
            let cause = match FallbackCause::parse(&cause) {
                Some(c @ (FallbackCause::Manual | FallbackCause::Quota)) => c,
                _ => return Err(CommandError::Input(format!("--cause must be manual or quota, got `{cause}`"))),
            };
            producer.store().disable_lane(&model, cause, &note).await?;
            println!("lane {model} disabled ({})", cause.as_str());
            Ok(())
        }
        Command::Enable { model } => {
            known_lane(&settings, &model)?;
            let was = producer.store().enable_lane(&model).await?;
            println!("lane {model} enabled{}", if was { "" } else { " (it was not disabled)" });
            Ok(())
        }
    }
}

fn known_lane(settings: &Settings, model: &str) -> Result<(), CommandError> {
    if settings.lane_models().any(|m| m == model) {
        Ok(())
    } else {
        let known: Vec<&str> = settings.lane_models().collect();
        Err(CommandError::Input(format!("`{model}` has no dedicated lane; lanes: {}", known.join(", "))))
    }
}

async fn submit(producer: &Producer, file: &std::path::Path, wait: u64) -> Result<(), CommandError> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map_err(|e| CommandError::Input(format!("stdin: {e}")))?;
    } else {
        text = std::fs::read_to_string(file).map_err(|e| CommandError::Input(format!("{}: {e}", file.display())))?;
    }
    let mut body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CommandError::Input(format!("not JSON: {e}")))?;
    if let Some(obj) = body.as_object_mut() {
        obj.entry("v").or_insert(1.into());
        obj.entry("task_id").or_insert_with(|| uuid::Uuid::new_v4().simple().to_string().into());
    }
    let admission = producer.submit_json(&body).await?;
    println!(
        "{}",
        serde_json::json!({"task_id": admission.task_id, "lane": admission.lane, "fallback_cause": admission.fallback.map(|c| c.as_str())})
    );
    if wait > 0 {
        match producer.store().wait_reply(&admission.task_id, Duration::from_secs(wait)).await? {
            Some(reply) => println!("{}", serde_json::to_string(&reply).unwrap_or_default()),
            None => {
                return Err(CommandError::Input(format!(
                    "no reply within {wait} s; the task is still running or queued"
                )))
            }
        }
    }
    Ok(())
}

/// Per-lane status: readiness, workers, fallback, queue depth.
pub async fn lanes_status(producer: &Producer) -> Result<serde_json::Value, ProducerError> {
    let settings = producer.settings();
    let store = producer.store();
    let workers = store.workers().await?;
    let depths = crate::amqp::queue_depths(producer).await.unwrap_or_default();
    let mut lanes = serde_json::Map::new();
    for model in settings.models.keys() {
        let m = &settings.models[model];
        let health = store.lane_health(model, m.dedicated_lane, settings.lanes.heartbeat_ttl_ms).await?;
        let disabled = store.lane_disabled(model).await?;
        let fallback = store.fallback(model).await?;
        let ready = warmlane_shared::route(&health) == warmlane_shared::Route::Lane;
        lanes.insert(
            model.clone(),
            serde_json::json!({
                "ready": ready,
                "dedicated": m.dedicated_lane,
                "warm_workers": health.warm_workers,
                "queue_depth": depths.get(&producer.topology().lane_queue(model)).copied(),
                "cold_starts": store.loads(model).await?,
                "disabled": disabled.map(|(cause, since, note)| serde_json::json!({"cause": cause, "since_ms": since, "note": note})),
                "fallback": fallback.map(|f| serde_json::json!({"active": true, "cause": f.cause, "since_ms": f.since_ms, "for_ms": now_ms().saturating_sub(f.since_ms)})),
            }),
        );
    }
    let degraded_workers = workers.iter().filter(|w| w.lane == warmlane_shared::settings::DEGRADED_LANE).count();
    Ok(serde_json::json!({
        "lanes": lanes,
        "degraded": {
            "queue_depth": depths.get(&producer.topology().degraded_queue()).copied(),
            "max_depth": settings.degraded.max_depth,
            "max_wait_ms": settings.degraded.max_wait_ms,
            "workers": degraded_workers,
            "cold_starts": store.loads(warmlane_shared::settings::DEGRADED_LANE).await?,
        },
        "workers": workers,
    }))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
