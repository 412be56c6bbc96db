//! The producer binary's subcommands, as library functions so tests can call them.

use crate::cli::{Cli, Command};
use crate::error::ProducerError;
use crate::http::ServeError;
use crate::producer::Producer;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use warmlane_infra::InfraError;
use warmlane_shared::Settings;

/// How long `serve` and `reaper` keep trying to reach RabbitMQ and Redis at start.
pub const START_RETRY: Duration = Duration::from_secs(60);

/// Errors of a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The settings file is bad.
    #[error("settings: {0}")]
    Settings(#[from] warmlane_shared::SettingsError),
    /// Broker, Redis or a refusal.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// Broker or Redis.
    #[error(transparent)]
    Infra(#[from] InfraError),
    /// The HTTP shim could not start or failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
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
    // Arguments are checked before anything connects.
    if let Command::Disable { model, .. } | Command::Enable { model } = &cli.command {
        known_lane(&settings, model)?;
    }
    let c = &cli.connect;
    let connect = || Producer::connect(settings.clone(), &c.amqp_url, &c.redis_url, &c.prefix);
    // Long-running services wait for the broker and Redis as the workers do (they may
    // start first under compose); one-shot commands fail at once.
    let producer = if matches!(cli.command, Command::Serve(_) | Command::Reaper) {
        let retryable = |e: &ProducerError| matches!(e, ProducerError::Infra(i) if i.is_retryable());
        warmlane_infra::backoff::retry_while("RabbitMQ or Redis", START_RETRY, connect, retryable).await?
    } else {
        connect().await?
    };
    let producer = Arc::new(producer);
    match cli.command {
        Command::CheckSettings => Ok(()),
        Command::Submit { file, wait } => submit(&producer, &file, wait).await,
        Command::Serve(args) => Ok(crate::http::serve(producer, args, c.amqp_url.clone(), shutdown).await?),
        Command::Dead(cmd) => Ok(crate::dead_queue::run(&producer, cmd).await?),
        Command::Reaper => Ok(crate::reaper::run(producer, c.amqp_url.clone(), shutdown).await?),
        Command::Lanes { json } => {
            let status = crate::lanes::status(&producer).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            } else {
                print!("{}", crate::lanes::table(&status));
            }
            Ok(())
        }
        Command::Disable { model, cause, note } => {
            producer.store().disable_lane(&model, cause, &note).await?;
            println!("lane {model} disabled ({})", cause.as_str());
            Ok(())
        }
        Command::Enable { model } => {
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
