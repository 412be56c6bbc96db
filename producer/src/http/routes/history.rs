//! The recent tasks (`GET /tasks`) and cancel (`DELETE /tasks/{id}`).
//!
//! The list reads a capped index of recent task ids (`Keys::recent`) and each task's
//! hash; the filter is a pure function ([`TaskFilter`]) with a table test. A cancel
//! answers a pending task `cancelled` at once (it never runs) and asks the worker
//! of a running one to stop at its next denoising step.

use super::tasks::{checked_id, task_view, unknown, TaskView};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warmlane_infra::store::CancelOutcome;
use warmlane_shared::{ErrorCode, Rejection, Settings};

/// Tasks listed when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;
/// Most tasks one call lists.
pub const MAX_LIMIT: usize = 200;
/// Most recent ids read to fill a filtered page (filters look no further back).
pub const SCAN: usize = 2_000;
/// Ids read per round trip while a filtered page fills.
pub const CHUNK: usize = 100;

/// `?status=&model=&limit=`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct ListQuery {
    /// `pending`, `processing`, `done`, `failed` or `cancelled` (failed with code `cancelled`).
    pub status: Option<String>,
    /// A model of the settings.
    pub model: Option<String>,
    /// How many tasks, 1-200 (default 20).
    pub limit: Option<String>,
}

/// Which tasks a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFilter {
    /// Status wanted (`cancelled` included), if any.
    pub status: Option<String>,
    /// Model wanted, if any.
    pub model: Option<String>,
    /// How many.
    pub limit: usize,
}

/// Statuses `?status=` accepts.
pub const STATUSES: [&str; 5] = ["pending", "processing", "done", "failed", "cancelled"];

impl TaskFilter {
    /// Checks the query: a coded error names the bad parameter.
    pub fn parse(q: &ListQuery, settings: &Settings) -> Result<TaskFilter, ApiError> {
        let status = q.status.as_deref().filter(|s| !s.is_empty());
        if let Some(s) = status.filter(|s| !STATUSES.contains(s)) {
            return Err(ApiError::invalid(
                "status",
                format!("status `{}` is not one of {}", clip(s), STATUSES.join(", ")),
            ));
        }
        let model = q.model.as_deref().filter(|m| !m.is_empty());
        if let Some(m) = model.filter(|m| settings.model(m).is_none()) {
            return Err(ApiError::Rejected(Rejection::new(
                ErrorCode::UnknownModel,
                "model",
                format!("model `{}` is not in the settings", clip(m)),
            )));
        }
        let limit = match q.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(l) => l.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}, got `{}`", clip(l)),
                )
            })?,
        };
        Ok(TaskFilter { status: status.map(str::to_string), model: model.map(str::to_string), limit })
    }

    /// Whether a task belongs in the list.
    pub fn matches(&self, v: &TaskView) -> bool {
        let cancelled = v.error.as_ref().is_some_and(|e| e.code == ErrorCode::Cancelled.as_str());
        let status_ok = match self.status.as_deref() {
            None => true,
            Some("cancelled") => cancelled,
            Some(s) => v.status == s,
        };
        status_ok && self.model.as_ref().is_none_or(|m| v.model.as_ref() == Some(m))
    }
}

/// At most 64 characters of a caller's value in a message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The recent tasks, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskList {
    /// Newest submitted first.
    pub tasks: Vec<TaskView>,
}

/// Recent tasks, newest first, optionally of one status or model.
#[utoipa::path(
    get, path = "/tasks", tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "Recent tasks, newest first (the last 10 000 submitted, within their 24 h lifetime)", body = TaskList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_parameter` (`status`, `limit`) or `unknown_model` (`model`)", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: Redis is down", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::invalid("query", "the query is not status=&model=&limit="))?;
    let filter = TaskFilter::parse(&query, state.backend.settings())?;
    let mut tasks = Vec::with_capacity(filter.limit);
    let mut skip = 0;
    // Unfiltered, one read of `limit`; filtered, chunks until the page is full.
    let chunk = if filter.status.is_none() && filter.model.is_none() { filter.limit } else { CHUNK };
    while tasks.len() < filter.limit && skip < SCAN {
        let recent = super::bounded("listing tasks", state.backend.recent_tasks(skip, chunk)).await?;
        let read = recent.len();
        tasks.extend(recent.iter().filter_map(|(id, hash)| task_view(id, hash)).filter(|v| filter.matches(v)));
        if read < chunk || chunk == filter.limit {
            break;
        }
        skip += chunk;
    }
    tasks.truncate(filter.limit);
    Ok(Json(TaskList { tasks }))
}

/// Cancels a task: a pending one is answered `cancelled` now and never runs; a
/// running one stops at its next denoising step and is answered `cancelled` then.
#[utoipa::path(
    delete, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Cancelled before it ran: the task, `failed` with code `cancelled`", body = TaskView),
        (status = 202, description = "Running: `cancel_requested` is set; it ends `failed`/`cancelled` at its next step", body = TaskView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown or expired task", body = ErrorBody),
        (status = 409, description = "`conflict` (reason `finished`): the task already has its terminal reply", body = ErrorBody),
        (status = 422, description = "`invalid_parameter`: bad task id", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: Redis is down", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    checked_id(&id)?;
    let outcome = super::bounded("cancelling the task", state.backend.cancel(&id)).await?;
    let status = match outcome {
        CancelOutcome::Unknown => return Err(unknown(&id)),
        CancelOutcome::Finished(status) => return Err(ApiError::Finished { status }),
        CancelOutcome::Cancelled => {
            tracing::info!(task_id = %id, "cancelled a pending task");
            StatusCode::OK
        }
        CancelOutcome::Requested => {
            tracing::info!(task_id = %id, "asked the worker to stop a running task");
            StatusCode::ACCEPTED
        }
    };
    let hash = super::bounded("reading the task", state.backend.task(&id)).await?;
    let view = task_view(&id, &hash).ok_or_else(|| unknown(&id))?;
    Ok((status, Json(view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Settings::load(&root.join("inference_settings.json")).expect("repository settings")
    }

    fn q(status: Option<&str>, model: Option<&str>, limit: Option<&str>) -> ListQuery {
        ListQuery { status: status.map(Into::into), model: model.map(Into::into), limit: limit.map(Into::into) }
    }

    #[test]
    fn parse_checks_each_parameter() {
        let s = settings();
        type Want = Result<(Option<&'static str>, Option<&'static str>, usize), (&'static str, &'static str)>;
        let cases: [(ListQuery, Want); 10] = [
            (q(None, None, None), Ok((None, None, 20))),
            (q(Some(""), Some(""), Some("")), Ok((None, None, 20))),
            (q(Some("cancelled"), Some("anisora"), Some("200")), Ok((Some("cancelled"), Some("anisora"), 200))),
            (q(Some("done"), None, Some("1")), Ok((Some("done"), None, 1))),
            (q(Some("finished"), None, None), Err(("invalid_parameter", "status"))),
            (q(None, Some("sora"), None), Err(("unknown_model", "model"))),
            (q(None, None, Some("0")), Err(("invalid_parameter", "limit"))),
            (q(None, None, Some("201")), Err(("invalid_parameter", "limit"))),
            (q(None, None, Some("-3")), Err(("invalid_parameter", "limit"))),
            (q(None, None, Some("ten")), Err(("invalid_parameter", "limit"))),
        ];
        for (query, want) in cases {
            let got = TaskFilter::parse(&query, &s);
            match (got, want) {
                (Ok(f), Ok((status, model, limit))) => {
                    assert_eq!((f.status.as_deref(), f.model.as_deref(), f.limit), (status, model, limit), "{query:?}")
                }
                (Err(e), Err((code, reason))) => {
                    let d = e.detail();
                    assert_eq!((d.code.as_str(), d.reason.as_str()), (code, reason), "{query:?}");
                }
                (got, want) => panic!("{query:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn view(status: &str, model: &str, code: Option<&str>) -> TaskView {
        let mut hash = std::collections::HashMap::new();
        hash.insert("status".to_string(), status.to_string());
        hash.insert("model".to_string(), model.to_string());
        if let Some(c) = code {
            hash.insert("code".to_string(), c.to_string());
        }
        task_view("t", &hash).expect("a view")
    }

    #[test]
    fn matches_status_model_and_cancelled() {
        let f = |status: Option<&str>, model: Option<&str>| TaskFilter {
            status: status.map(Into::into),
            model: model.map(Into::into),
            limit: 20,
        };
        let cancelled = view("failed", "anisora", Some("cancelled"));
        let failed = view("failed", "phr00t", Some("gpu_oom"));
        let done = view("done", "anisora", None);
        let table = [
            (f(None, None), [true, true, true]),
            (f(Some("cancelled"), None), [true, false, false]),
            (f(Some("failed"), None), [true, true, false]),
            (f(Some("done"), None), [false, false, true]),
            (f(None, Some("anisora")), [true, false, true]),
            (f(Some("failed"), Some("phr00t")), [false, true, false]),
        ];
        for (filter, want) in table {
            let got = [&cancelled, &failed, &done].map(|v| filter.matches(v));
            assert_eq!(got, want, "{filter:?}");
        }
    }
}
