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
    /// The results store (`s3://`) could not be opened or read.
    #[error(transparent)]
    Results(#[from] warmlane_infra::results::ResultsError),
}

/// Runs a subcommand until it ends or `shutdown` resolves.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), CommandError> {
    // Documentation commands need no settings and no servers.
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "warmlane-producer", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            use clap::CommandFactory;
            let page = clap_mangen::Man::new(Cli::command());
            return page.render(&mut std::io::stdout()).map_err(|e| CommandError::Input(format!("man page: {e}")));
        }
        _ => {}
    }
    let settings = Arc::new(cli.connect.load_settings()?);
    if let Command::CheckSettings = cli.command {
        println!("{}: {} models, ok", settings.source.display(), settings.models.len());
        return Ok(());
    }
    // Arguments are checked before anything connects.
    if let Command::Disable { model, .. } | Command::Enable { model } = &cli.command {
        known_lane(&settings, model)?;
    }
    check_task_id(&cli.command)?;
    if let Command::Serve(args) = &cli.command {
        crate::http::check_args(args)?;
    }
    let c = &cli.connect;
    let endpoints = warmlane_infra::Endpoints::from_args(c)?;
    let connect = || Producer::connect(settings.clone(), &endpoints.amqp, &endpoints.redis, &c.prefix);
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
        Command::CheckSettings | Command::Completions { .. } | Command::Man => Ok(()),
        Command::Submit { file, wait } => submit(&producer, &file, wait).await,
        Command::Serve(args) => Ok(crate::http::serve(producer, args, endpoints.amqp, shutdown).await?),
        Command::Dead(cmd) => Ok(crate::dead_queue::run(&producer, cmd).await?),
        Command::Reaper => Ok(crate::reaper::run(producer, endpoints.amqp, shutdown).await?),
        Command::Lanes { json } => {
            let status = crate::lanes::status(&producer).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            } else {
                print!("{}", crate::lanes::table(&status));
            }
            Ok(())
        }
        Command::Status { task_id } => print_view(task(&producer, &task_id).await?),
        Command::Cancel { task_id } => print_view(cancel(&producer, &task_id).await?),
        Command::Result { task_id, output } => {
            let hash = producer.store().task(&task_id).await?;
            let (bytes, content_type) = save_result(&task_id, &hash, &output).await?;
            if output.as_os_str() != "-" {
                println!("{} ({bytes} B, {content_type})", output.display());
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

/// A task id on the command line is checked before connecting.
fn check_task_id(command: &Command) -> Result<(), CommandError> {
    match command {
        Command::Cancel { task_id } | Command::Status { task_id } | Command::Result { task_id, .. }
            if !warmlane_shared::request::task_id_ok(task_id) =>
        {
            Err(CommandError::Input(format!("`{task_id}` is not a task id (1-64 characters of [A-Za-z0-9_-])")))
        }
        _ => Ok(()),
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
    let admitted = serde_json::json!({"task_id": admission.task_id, "lane": admission.lane, "fallback_cause": admission.fallback.map(|c| c.as_str())});
    if wait == 0 {
        println!("{admitted}");
        return Ok(());
    }
    // stdout gets one JSON document, the terminal reply; the admission goes to the log.
    tracing::info!(task_id = %admission.task_id, lane = %admission.lane, "admitted; waiting for the reply");
    let reply = crate::progress::wait_reply(producer, &admission.task_id, &admission.lane, Duration::from_secs(wait));
    match reply.await? {
        Some(reply) => println!("{}", serde_json::to_string(&reply).unwrap_or_default()),
        None => {
            return Err(CommandError::Input(format!(
                "no reply within {wait} s; the task is still running or queued ({admitted})"
            )))
        }
    }
    Ok(())
}

async fn task(producer: &Producer, task_id: &str) -> Result<crate::http::routes::tasks::TaskView, CommandError> {
    let hash = producer.store().task(task_id).await?;
    crate::http::routes::tasks::task_view(task_id, &hash)
        .ok_or_else(|| CommandError::Input(format!("no task `{task_id}` (unknown, or expired after task_ttl_s)")))
}

fn print_view(view: crate::http::routes::tasks::TaskView) -> Result<(), CommandError> {
    println!("{}", serde_json::to_string_pretty(&view).unwrap_or_default());
    Ok(())
}

/// Cancels a task and returns its view; an unknown or finished task is an input error.
async fn cancel(producer: &Producer, task_id: &str) -> Result<crate::http::routes::tasks::TaskView, CommandError> {
    use warmlane_infra::store::CancelOutcome;
    match producer.store().cancel(task_id).await? {
        CancelOutcome::Unknown => {
            Err(CommandError::Input(format!("no task `{task_id}` (unknown, or expired after task_ttl_s)")))
        }
        CancelOutcome::Finished(status) => {
            Err(CommandError::Input(format!("task `{task_id}` has finished ({status}); there is nothing to cancel")))
        }
        CancelOutcome::Cancelled => {
            tracing::info!(task_id, "cancelled; it will not run");
            task(producer, task_id).await
        }
        CancelOutcome::Requested => {
            tracing::info!(task_id, "running; its worker stops it at the next denoising step");
            task(producer, task_id).await
        }
    }
}

/// Copies a done task's video to `output` (`-`: stdout); returns its size and type.
async fn save_result(
    task_id: &str,
    hash: &std::collections::HashMap<String, String>,
    output: &std::path::Path,
) -> Result<(u64, String), CommandError> {
    let (bytes, content_type) = read_result(task_id, hash, std::env::vars()).await?;
    let written = if output.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().lock().write_all(&bytes)
    } else {
        std::fs::write(output, &bytes)
    };
    written.map_err(|e| CommandError::Input(format!("writing {}: {e}", output.display())))?;
    Ok((bytes.len() as u64, content_type))
}

/// A done task's video and its content type, from its task hash: a `file://` path
/// read from this host's disk, or an `s3://bucket/prefix/<task_id>.<ext>` object
/// read with the S3 settings in `env` (the `AWS_*` variables, as the workers').
pub async fn read_result(
    task_id: &str,
    hash: &std::collections::HashMap<String, String>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Vec<u8>, String), CommandError> {
    use warmlane_infra::ResultStore;
    use warmlane_shared::reply::field;
    let input = |message: String| CommandError::Input(message);
    let status = hash.get(field::STATUS).ok_or_else(|| input(format!("no task `{task_id}`")))?;
    if status != "done" {
        return Err(input(format!("task `{task_id}` is {status}; it has no result")));
    }
    let uri = hash.get(field::RESULT).map(String::as_str).unwrap_or_default();
    let content_type = hash.get(field::CONTENT_TYPE).cloned().unwrap_or_else(|| "video/mp4".into());
    if let Some(path) = uri.strip_prefix("file://") {
        let bytes = std::fs::read(path).map_err(|e| input(format!("reading {path}: {e}")))?;
        return Ok((bytes, content_type));
    }
    // Only the task's own object, `<task_id>.mp4` (or a pre-MP4 `.gif`), is read.
    let stored = uri.strip_prefix("s3://").and_then(|_| uri.rsplit_once('/'));
    let Some((store, name)) =
        stored.filter(|(_, name)| [format!("{task_id}.mp4"), format!("{task_id}.gif")].contains(&name.to_string()))
    else {
        return Err(input(format!(
            "the result `{uri}` is neither a local file nor the task's object in an s3:// store"
        )));
    };
    let store = ResultStore::open_with_env(store, env)?;
    let fetched = store.get(name, None).await?;
    let chunks: Vec<_> = futures_util::TryStreamExt::try_collect(fetched.body).await?;
    Ok((chunks.concat(), content_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[tokio::test]
    async fn only_a_done_task_with_a_local_file_is_saved() {
        let dir = std::env::temp_dir().join(format!("warmlane-result-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let video = dir.join("t.mp4");
        std::fs::write(&video, b"\0\0\0\x18ftypisom").unwrap();
        let hash = |status: &str, uri: &str| -> HashMap<String, String> {
            HashMap::from([("status".to_string(), status.to_string()), ("result".to_string(), uri.to_string())])
        };
        let out = dir.join("copy.mp4");
        let uri = format!("file://{}", video.display());
        let (bytes, kind) = save_result("t", &hash("done", &uri), &out).await.expect("saved");
        assert_eq!(
            (bytes, kind.as_str(), std::fs::read(&out).unwrap()),
            (12, "video/mp4", b"\0\0\0\x18ftypisom".to_vec())
        );
        let cases = [
            (hash("processing", &uri), "is processing"),
            (hash("done", "http://host/t.mp4"), "neither a local file nor the task's object"),
            (hash("done", "s3://bucket/prefix/other.mp4"), "neither a local file nor the task's object"),
            (hash("done", "s3://bucket/prefix/t.json"), "neither a local file nor the task's object"),
            (hash("done", "file:///nonexistent/t.mp4"), "reading /nonexistent/t.mp4"),
            (HashMap::new(), "no task `t`"),
        ];
        for (hash, want) in cases {
            let err = save_result("t", &hash, &dir.join("x.mp4")).await.expect_err(want).to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
