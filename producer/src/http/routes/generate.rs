//! `POST /generate`: a JSON request in the contract's fields, admitted through
//! [`crate::Producer::submit_json`], so it is validated before anything is published.
//!
//! The shim fills in what a web client cannot be expected to send: `v` (1) and a
//! `task_id` (a UUID v4 in simple form). Everything else is the contract's rule.

use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The request body: the contract's request fields; `task_id` and `v` may be left out.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct GenerateRequest {
    /// Wire version; defaults to 1.
    pub v: Option<u32>,
    /// 1-64 chars of `[A-Za-z0-9_-]`, unique; generated when left out.
    pub task_id: Option<String>,
    /// A model of `inference_settings.json` (see `GET /models`).
    pub model: String,
    /// 1 to 2000 characters.
    pub prompt: String,
    /// Up to 2000 characters.
    pub negative_prompt: Option<String>,
    /// Must equal the model's fixed value where one is set (anisora 8, phr00t 4).
    pub steps: Option<u32>,
    /// Must equal the model's fixed value where one is set (phr00t 1.0).
    pub cfg: Option<f64>,
    /// Same seed, same output.
    pub seed: Option<u64>,
    /// Within the model's limits.
    pub width: Option<u32>,
    /// Within the model's limits.
    pub height: Option<u32>,
    /// Within the model's limits.
    pub frames: Option<u32>,
}

/// The answer to an admitted request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The task id (the caller's or the generated one).
    pub task_id: String,
    /// The lane it went to: the model's, or `degraded`.
    pub lane: String,
    /// Where to follow it: `GET` it, with `?wait=N` to long-poll.
    pub status_url: String,
    /// Server-sent events of its progress.
    pub events_url: String,
    /// Why it went degraded (`capacity`, `quota`, `manual`), else null.
    pub fallback_cause: Option<String>,
    /// Admission time, unix ms.
    pub submitted_at_ms: u64,
}

/// Whether a `content-type` is JSON (`application/json`, any parameters).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses the body and fills in `v` and `task_id`; pure.
pub fn prepare_body(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let mut body: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::malformed("body", format!("the body is not valid JSON: {e}")))?;
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::malformed("body", "the request must be a JSON object"));
    };
    obj.entry("v").or_insert(1.into());
    if obj.get("task_id").is_none_or(serde_json::Value::is_null) {
        obj.insert("task_id".into(), uuid::Uuid::new_v4().simple().to_string().into());
    }
    Ok(body)
}

/// Submits one generation request.
#[utoipa::path(
    post, path = "/generate", tag = "tasks",
    request_body(content = GenerateRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Admitted and published with a broker confirm", body = Accepted),
        (status = 400, description = "`malformed_message`: not JSON, not an object, or not `application/json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no `x-api-key`", body = ErrorBody),
        (status = 403, description = "`forbidden`: wrong `x-api-key`", body = ErrorBody),
        (status = 413, description = "`malformed_message`/`body_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_parameter` (reason names the field; a task id in use is reason `task_id`) or `unknown_model`", body = ErrorBody),
        (status = 503, description = "`queue_overloaded`/`queue_full`, or `service_unavailable`: `reason` `broker` (nothing queued; the task_id may be reused), `redis`, or `unconfirmed` (the request may still run; follow GET /tasks/{id}); with `Retry-After`", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn generate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit: state.config.body_limit }
        } else {
            ApiError::malformed("body", "the body could not be read")
        }
    })?;
    if !is_json_content_type(&headers) {
        return Err(ApiError::malformed("content_type", "the body must be sent as `content-type: application/json`"));
    }
    let body = prepare_body(&bytes)?;
    let admission = state.backend.submit_json(&body).await?;
    let status_url = format!("/tasks/{}", admission.task_id);
    let accepted = Accepted {
        events_url: format!("{status_url}/events"),
        status_url,
        task_id: admission.task_id,
        lane: admission.lane,
        fallback_cause: admission.fallback.map(|c| c.as_str().to_string()),
        submitted_at_ms: admission.submitted_at_ms,
    };
    let mut response = (StatusCode::ACCEPTED, Json(&accepted)).into_response();
    if let Ok(location) = HeaderValue::from_str(&accepted.status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_v_and_task_id() {
        let b = prepare_body(br#"{"model":"anisora","prompt":"x"}"#).unwrap();
        assert_eq!(b["v"], 1);
        let id = b["task_id"].as_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(warmlane_shared::request::task_id_ok(id));
        let b = prepare_body(br#"{"task_id":"mine","v":2}"#).unwrap();
        assert_eq!(b["task_id"], "mine");
        assert_eq!(b["v"], 2, "a wrong version is left for the validator to refuse");
    }

    #[test]
    fn non_objects_are_malformed() {
        for body in [&b"[1]"[..], b"nope", b"", b"{\"a\":"] {
            let e = prepare_body(body).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json_content_type(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        assert!(is_json_content_type(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json_content_type(&h));
    }
}
