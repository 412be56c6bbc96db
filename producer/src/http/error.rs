//! [`ApiError`]: every failure of the shim, answered in the contract's envelope
//! `{"error": {"code", "reason", "message"}}`.
//!
//! One exhaustive mapping from error to HTTP status lives in [`ApiError::status`];
//! contract codes keep the status of [`ErrorCode::http_status`]. A few codes exist
//! only in the shim, because the contract has no word for them ([`shim_code`]).
//! 5xx answers never carry internals: the detail goes to the log, the client gets
//! a fixed message. Every 503 carries `Retry-After`.

use crate::error::ProducerError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use warmlane_infra::{InfraError, Report};
use warmlane_shared::{ErrorCode, Rejection};

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Codes that only the HTTP shim answers with (not part of the wire contract).
pub mod shim_code {
    /// 404: no such task, result or route.
    pub const NOT_FOUND: &str = "not_found";
    /// 401: the API or admin key header is missing.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 403: the key is wrong, or admin routes are switched off.
    pub const FORBIDDEN: &str = "forbidden";
    /// 405: the route exists, the method does not.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 409: the task already has its terminal reply (a cancel came too late).
    pub const CONFLICT: &str = "conflict";
    /// 416: a `Range` header asks for bytes past the end of a result file.
    pub const RANGE_NOT_SATISFIABLE: &str = "range_not_satisfiable";
    /// 503: RabbitMQ or Redis is unreachable; retry later.
    pub const SERVICE_UNAVAILABLE: &str = "service_unavailable";
    /// 500: a bug or an unexpected failure inside the shim.
    pub const INTERNAL_ERROR: &str = "internal_error";
    /// Every shim-only code, for documentation and tests.
    pub const ALL: [&str; 8] = [
        NOT_FOUND,
        UNAUTHORIZED,
        FORBIDDEN,
        METHOD_NOT_ALLOWED,
        CONFLICT,
        RANGE_NOT_SATISFIABLE,
        SERVICE_UNAVAILABLE,
        INTERNAL_ERROR,
    ];
}

/// A failure of an HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// A contract refusal: validation, unknown model, overload, malformed body.
    Rejected(Rejection),
    /// The body is larger than the configured limit (413, code `malformed_message`).
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Nothing under this name (404).
    NotFound {
        /// What was looked for: `task`, `result`, `route`.
        what: &'static str,
        /// For humans; never contains secrets.
        message: String,
    },
    /// The key header is missing (401).
    Unauthorized {
        /// The header that was expected.
        header: &'static str,
    },
    /// The key is wrong, or the route is switched off (403).
    Forbidden {
        /// The header that was checked.
        header: &'static str,
        /// For humans.
        message: String,
    },
    /// The method is not served on this path (405).
    MethodNotAllowed,
    /// A cancel of a task that already has its terminal reply (409 `conflict`, reason `finished`).
    Finished {
        /// `done` or `failed`.
        status: String,
    },
    /// A `Range` outside a result file (416, with `Content-Range: bytes */<size>`).
    RangeNotSatisfiable {
        /// The file's size in bytes.
        size: u64,
    },
    /// A dependency is down (503 `service_unavailable`); `reason` names it.
    Unavailable {
        /// `broker`, `redis`, `broker,redis` or `dependency`.
        reason: String,
        /// Logged, never sent.
        detail: String,
    },
    /// A bug (500 `internal_error`); the detail is logged, never sent.
    Internal(String),
}

/// The envelope's inner object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A contract code (`invalid_parameter`, `unknown_model`, `malformed_message`, `queue_overloaded`, ...)
    /// or a shim-only code (`not_found`, `unauthorized`, `forbidden`, `method_not_allowed`, `conflict`,
    /// `service_unavailable`, `internal_error`).
    pub code: String,
    /// Machine-readable detail: the field name, `queue_full`, `body_too_large`, ...
    pub reason: String,
    /// For humans; never contains secrets or internals.
    pub message: String,
}

/// The error envelope of every non-2xx answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ApiError {
    /// `invalid_parameter` naming a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Rejected(Rejection::invalid(field, message))
    }

    /// `malformed_message` with a reason.
    pub fn malformed(reason: &str, message: impl Into<String>) -> ApiError {
        ApiError::Rejected(Rejection::new(ErrorCode::MalformedMessage, reason, message))
    }

    /// The HTTP status: the one exhaustive mapping.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Rejected(r) => contract_status(r.code),
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Finished { .. } => StatusCode::CONFLICT,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The envelope sent to the client.
    pub fn detail(&self) -> ErrorDetail {
        let d = |code: &str, reason: &str, message: String| ErrorDetail {
            code: code.into(),
            reason: reason.into(),
            message,
        };
        match self {
            ApiError::Rejected(r) => d(r.code.as_str(), &r.reason, r.message.clone()),
            ApiError::TooLarge { limit } => {
                d(ErrorCode::MalformedMessage.as_str(), "body_too_large", format!("the body is larger than the limit of {limit} bytes"))
            }
            ApiError::NotFound { what, message } => d(shim_code::NOT_FOUND, what, message.clone()),
            ApiError::Unauthorized { header } => d(shim_code::UNAUTHORIZED, header, format!("the `{header}` header is required")),
            ApiError::Forbidden { header, message } => d(shim_code::FORBIDDEN, header, message.clone()),
            ApiError::MethodNotAllowed => d(shim_code::METHOD_NOT_ALLOWED, "method", "this method is not served on this path".into()),
            ApiError::Finished { status } => d(shim_code::CONFLICT, "finished", format!("the task has finished (`{status}`); there is nothing to cancel")),
            ApiError::RangeNotSatisfiable { size } => {
                d(shim_code::RANGE_NOT_SATISFIABLE, "range", format!("the range is outside the file of {size} bytes"))
            }
            ApiError::Unavailable { reason, .. } if reason == "unconfirmed" => d(
                shim_code::SERVICE_UNAVAILABLE,
                reason,
                "the broker did not confirm the request, so it may or may not run: follow GET /tasks/{task_id}, which ends with a terminal reply either way; the task_id stays taken".into(),
            ),
            ApiError::Unavailable { reason, .. } if reason == warmlane_shared::error::reason::STORAGE => d(
                shim_code::SERVICE_UNAVAILABLE,
                reason,
                "the results store is unavailable; retry later".into(),
            ),
            ApiError::Unavailable { reason, .. } => {
                d(shim_code::SERVICE_UNAVAILABLE, reason, "a backing service (broker or Redis) is unavailable; retry later".into())
            }
            ApiError::Internal(_) => d(shim_code::INTERNAL_ERROR, "internal", "internal error; it has been logged".into()),
        }
    }
}

/// The status of a contract code, from the contract's table.
fn contract_status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::Rejected(r)
    }
}

impl From<InfraError> for ApiError {
    /// `reason` names the service (`broker`, `redis`), or `unconfirmed` for a publish
    /// whose outcome is unknown; the cause chain goes to the log only.
    fn from(e: InfraError) -> Self {
        let reason = match &e {
            InfraError::Unconfirmed(_) | InfraError::ConfirmTimedOut(_) | InfraError::Unconfirmable(_) => "unconfirmed",
            other => other.service().as_str(),
        };
        ApiError::Unavailable { reason: reason.into(), detail: Report(&e).to_string() }
    }
}

impl From<ProducerError> for ApiError {
    fn from(e: ProducerError) -> Self {
        match e {
            ProducerError::Rejected(r) => ApiError::Rejected(r),
            ProducerError::Infra(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Unavailable { reason, detail } => {
                tracing::warn!(reason = %reason, detail = %detail, "answering 503")
            }
            ApiError::Internal(detail) => tracing::error!(detail = %detail, "answering 500"),
            _ => {}
        }
        let mut response = (status, axum::Json(ErrorBody { error: self.detail() })).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let ApiError::RangeNotSatisfiable { size } = self {
            if let Ok(range) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, range);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_codes_keep_their_status() {
        for code in ErrorCode::ALL {
            let e = ApiError::Rejected(Rejection::new(code, "r", "m"));
            assert_eq!(e.status().as_u16(), code.http_status(), "{code}");
            assert_eq!(e.detail().code, code.as_str());
        }
    }

    #[test]
    fn server_errors_do_not_leak_internals() {
        let secret = "amqp://guest:hunter2@10.0.0.1";
        for e in [
            ApiError::Unavailable { reason: "broker".into(), detail: secret.into() },
            ApiError::Internal(secret.into()),
        ] {
            let d = e.detail();
            assert!(!d.message.contains("hunter2") && !d.reason.contains("hunter2"));
            assert!(e.status().is_server_error());
        }
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let r = ApiError::Unavailable { reason: "redis".into(), detail: "x".into() }.into_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        let r = ApiError::Rejected(Rejection::queue_full(25)).into_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn an_unconfirmed_publish_says_the_task_may_still_run() {
        let secret = "amqp://guest:hunter2@10.0.0.1";
        let lost = lapin::Error::from(std::io::Error::other(secret));
        let e = ApiError::from(crate::ProducerError::Infra(InfraError::Unconfirmed(lost)));
        let d = e.detail();
        assert_eq!(
            (e.status().as_u16(), d.code.as_str(), d.reason.as_str()),
            (503, "service_unavailable", "unconfirmed")
        );
        assert!(d.message.contains("GET /tasks/") && !d.message.contains("hunter2"), "{}", d.message);
    }

    #[test]
    fn infrastructure_failures_name_the_service() {
        let redis = ApiError::from(InfraError::Redis(std::io::Error::other("reset").into()));
        let broker = ApiError::from(InfraError::Refused("no confirms".into()));
        for (e, reason) in [(redis, "redis"), (broker, "broker")] {
            assert_eq!((e.status().as_u16(), e.detail().reason), (503, reason.to_string()));
        }
    }

    #[test]
    fn too_large_is_malformed_413() {
        let e = ApiError::TooLarge { limit: 10 };
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.detail().code, "malformed_message");
    }
}
