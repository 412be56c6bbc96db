//! Following a task: `GET /tasks/{id}` (optionally long-polling with `?wait=N`) and
//! `GET /tasks/{id}/events` (server-sent events); the files are served by
//! [`super::result`].
//!
//! All of them read the Redis task hash, never the reply list: the reply list is
//! consumed by BLPOP and belongs to the AMQP caller. Waiting is a server-side
//! re-read of the hash every ~100 ms, bounded by the configured maximum.

use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};
use warmlane_shared::reply::{field, media};
use warmlane_shared::request::task_id_ok;
use warmlane_shared::TaskStatus;

/// Progress of the sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Steps done.
    pub step: u32,
    /// Steps in all.
    pub steps: u32,
}

/// Timestamps (unix ms) and durations (ms) known so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskTimings {
    /// Admission.
    pub submitted_at_ms: Option<u64>,
    /// A worker took it.
    pub started_at_ms: Option<u64>,
    /// It ended.
    pub finished_at_ms: Option<u64>,
    /// Last change of the hash.
    pub updated_at_ms: Option<u64>,
    /// From admission to the start of inference.
    pub queued_ms: Option<u64>,
    /// Inference duration.
    pub inference_ms: Option<u64>,
}

/// A task as the HTTP client sees it, built from the Redis task hash.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskView {
    /// The task id.
    pub task_id: String,
    /// `pending`, `processing`, `done`, `failed`.
    pub status: String,
    /// Whether no further change will come.
    pub terminal: bool,
    /// The model.
    pub model: Option<String>,
    /// The lane: the model's, or `degraded`.
    pub lane: Option<String>,
    /// Why it went degraded.
    pub fallback_cause: Option<String>,
    /// Sampler progress.
    pub progress: Option<Progress>,
    /// While it runs: `denoising` (the steps `progress` counts), then `decoding` (the
    /// VAE decode and the video encode after the last step).
    pub stage: Option<String>,
    /// Deliveries so far.
    pub attempts: Option<u32>,
    /// Timings.
    pub timings: TaskTimings,
    /// The error of a failed task, in the envelope's shape.
    pub error: Option<ErrorDetailView>,
    /// Where to download the video of a done task (`video/mp4`; `image/gif` for
    /// tasks finished before MP4, see `content_type`).
    pub result_url: Option<String>,
    /// Content type of the video at `result_url`.
    pub content_type: Option<String>,
    /// Where to download the animated GIF preview of a done task, when it has one.
    pub preview_url: Option<String>,
    /// A cancel asked the worker running it to stop (`DELETE /tasks/{id}`); it ends
    /// `failed` with code `cancelled` at its next denoising step.
    pub cancel_requested: bool,
}

/// The error of a failed task (same fields as the error envelope).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorDetailView {
    /// Contract code.
    pub code: String,
    /// Reason of the code.
    pub reason: Option<String>,
    /// For humans.
    pub message: Option<String>,
}

/// Builds the client's view of a task hash; `None` when the hash is empty (unknown or expired).
pub fn task_view(task_id: &str, hash: &HashMap<String, String>) -> Option<TaskView> {
    let status = hash.get(field::STATUS)?.clone();
    let num = |k: &str| hash.get(k).and_then(|v| v.parse::<u64>().ok());
    let text = |k: &str| hash.get(k).filter(|v| !v.is_empty()).cloned();
    let parsed = TaskStatus::parse(&status);
    let terminal = parsed.is_some_and(TaskStatus::is_terminal);
    let done = parsed == Some(TaskStatus::Done);
    let progress = hash.get(field::PROGRESS).and_then(|p| {
        let (step, steps) = p.split_once('/')?;
        let (step, steps) = (step.parse().ok()?, steps.parse().ok()?);
        Some(Progress { step: if done { steps } else { step }, steps })
    });
    let error = hash.get(field::CODE).filter(|c| !c.is_empty()).map(|code| ErrorDetailView {
        code: code.clone(),
        reason: text(field::REASON),
        message: text(field::MESSAGE),
    });
    Some(TaskView {
        task_id: task_id.to_string(),
        terminal,
        model: text(field::MODEL),
        lane: text(field::LANE),
        fallback_cause: text(field::FALLBACK_CAUSE),
        progress,
        stage: text(field::STAGE).filter(|_| !terminal),
        attempts: num(field::ATTEMPTS).map(|a| a as u32),
        timings: TaskTimings {
            submitted_at_ms: num(field::SUBMITTED_AT_MS),
            started_at_ms: num(field::STARTED_AT_MS),
            finished_at_ms: num(field::FINISHED_AT_MS),
            updated_at_ms: num(field::UPDATED_AT_MS),
            queued_ms: num(field::QUEUED_MS),
            inference_ms: num(field::INFERENCE_MS),
        },
        error,
        result_url: (done && hash.contains_key(field::RESULT)).then(|| format!("/tasks/{task_id}/result")),
        content_type: done.then(|| result_content_type(hash)).flatten().map(str::to_string),
        preview_url: (done && hash.contains_key(field::PREVIEW)).then(|| format!("/tasks/{task_id}/preview")),
        cancel_requested: hash.get(field::CANCEL_REQUESTED).is_some_and(|v| v == "1") && !terminal,
        status,
    })
}

/// The content type of a done task's result: the hash's own, else (a task finished
/// before MP4) the one its URI's extension says.
pub fn result_content_type(hash: &HashMap<String, String>) -> Option<&'static str> {
    let named = hash.get(field::CONTENT_TYPE).and_then(|c| [media::MP4, media::GIF].into_iter().find(|m| m == c));
    named.or_else(|| hash.get(field::RESULT).and_then(|uri| media::of(uri)))
}

/// `?wait=N`: seconds to long-poll until the task is terminal.
#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct WaitQuery {
    /// Seconds to wait for a terminal status (clamped to the server's maximum); 0 answers at once.
    pub wait: Option<u64>,
}

pub(super) fn checked_id(id: &str) -> Result<(), ApiError> {
    if task_id_ok(id) {
        Ok(())
    } else {
        Err(ApiError::invalid("task_id", "task_id must be 1-64 characters of [A-Za-z0-9_-]"))
    }
}

pub(super) fn unknown(id: &str) -> ApiError {
    ApiError::NotFound { what: "task", message: format!("no task `{id}` (unknown, or expired after 24 h)") }
}

async fn read_view(state: &AppState, id: &str) -> Result<Option<TaskView>, ApiError> {
    let hash = super::bounded("reading the task", state.backend.task(id)).await?;
    Ok(task_view(id, &hash))
}

/// A task's status, progress, timings, error and result link.
#[utoipa::path(
    get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id"), WaitQuery),
    responses(
        (status = 200, description = "The task (terminal, or the wait ran out)", body = TaskView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown or expired task", body = ErrorBody),
        (status = 422, description = "`invalid_parameter`: bad task id or `wait`", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: Redis is down", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<TaskView>, ApiError> {
    checked_id(&id)?;
    let Query(query) = query.map_err(|_| ApiError::invalid("wait", "wait must be a whole number of seconds"))?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0)).min(state.config.long_poll_max);
    let deadline = Instant::now() + wait;
    loop {
        let view = read_view(&state, &id).await?.ok_or_else(|| unknown(&id))?;
        if view.terminal || Instant::now() + state.config.poll_every > deadline {
            return Ok(Json(view));
        }
        tokio::time::sleep(state.config.poll_every).await;
    }
}

/// Server-sent events: one `task` event (a [`TaskView`]) per change, until terminal.
#[utoipa::path(
    get, path = "/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "`text/event-stream`: `task` events carrying a TaskView on every change; the stream ends after the terminal one, or with a `timeout` event", content_type = "text/event-stream", body = String),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_parameter`: bad task id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    checked_id(&id)?;
    let first = read_view(&state, &id).await?.ok_or_else(|| unknown(&id))?;
    let deadline = Instant::now() + state.config.sse_max;
    let stream = futures_util::stream::unfold(
        Follow { state, id, last: None, next: Some(first), ended: false, deadline },
        follow_step,
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Follow {
    state: AppState,
    id: String,
    last: Option<TaskView>,
    next: Option<TaskView>,
    ended: bool,
    deadline: Instant,
}

async fn follow_step(mut f: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    if f.ended {
        return None;
    }
    loop {
        let view = match f.next.take() {
            Some(v) => v,
            None => {
                if Instant::now() >= f.deadline {
                    f.ended = true;
                    return Some((
                        Ok(Event::default().event("timeout").data("the stream's time limit ran out; GET the task")),
                        f,
                    ));
                }
                tokio::time::sleep(f.state.config.poll_every).await;
                match read_view(&f.state, &f.id).await {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        f.ended = true;
                        return Some((Ok(error_event(&unknown(&f.id))), f));
                    }
                    Err(e) => {
                        tracing::debug!(task_id = %f.id, "task stream: reading the hash failed; retrying");
                        if Instant::now() >= f.deadline {
                            f.ended = true;
                            return Some((Ok(error_event(&e)), f));
                        }
                        continue;
                    }
                }
            }
        };
        if f.last.as_ref() == Some(&view) {
            continue;
        }
        f.ended = view.terminal;
        let event = Event::default().event("task").json_data(&view).unwrap_or_else(|_| Event::default().event("task"));
        f.last = Some(view);
        return Some((Ok(event), f));
    }
}

fn error_event(e: &ApiError) -> Event {
    Event::default().event("error").json_data(serde_json::json!({ "error": e.detail() })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unknown_task_has_no_view() {
        assert!(task_view("t", &HashMap::new()).is_none());
    }

    #[test]
    fn processing_task_shows_progress_without_result() {
        let v = task_view(
            "t",
            &hash(&[
                ("status", "processing"),
                ("progress", "3/8"),
                ("stage", "denoising"),
                ("lane", "anisora"),
                ("started_at_ms", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(v.progress, Some(Progress { step: 3, steps: 8 }));
        assert_eq!(v.stage.as_deref(), Some("denoising"));
        let done = task_view("t", &hash(&[("status", "done"), ("stage", "decoding")])).unwrap();
        assert_eq!(done.stage, None, "a finished task has no stage");
        assert!(!v.terminal && v.result_url.is_none() && v.error.is_none());
        assert_eq!(v.timings.started_at_ms, Some(5));
    }

    #[test]
    fn done_task_links_its_result_and_completes_progress() {
        let v = task_view(
            "t",
            &hash(&[
                ("status", "done"),
                ("progress", "7/8"),
                ("result", "file:///r/t.mp4"),
                ("content_type", "video/mp4"),
                ("preview", "file:///r/t.gif"),
                ("inference_ms", "12"),
            ]),
        )
        .unwrap();
        assert!(v.terminal);
        assert_eq!(v.result_url.as_deref(), Some("/tasks/t/result"));
        assert_eq!(v.content_type.as_deref(), Some("video/mp4"));
        assert_eq!(v.preview_url.as_deref(), Some("/tasks/t/preview"));
        assert_eq!(v.progress, Some(Progress { step: 8, steps: 8 }));
        assert_eq!(v.timings.inference_ms, Some(12));
    }

    #[test]
    fn a_task_done_before_mp4_is_a_gif_without_preview() {
        let v = task_view("t", &hash(&[("status", "done"), ("result", "file:///r/t.gif")])).unwrap();
        assert_eq!(v.content_type.as_deref(), Some("image/gif"));
        assert!(v.preview_url.is_none());
    }

    #[test]
    fn failed_task_carries_its_error() {
        let v = task_view(
            "t",
            &hash(&[("status", "failed"), ("code", "queue_overloaded"), ("reason", "wait_timeout"), ("message", "m")]),
        )
        .unwrap();
        let e = v.error.unwrap();
        assert_eq!((e.code.as_str(), e.reason.as_deref()), ("queue_overloaded", Some("wait_timeout")));
        assert!(v.result_url.is_none());
    }
}
