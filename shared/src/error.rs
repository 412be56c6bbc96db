//! The error codes of the contract.
//!
//! One enum, one stable string per variant, one HTTP status per variant. The same
//! string appears in Redis replies, HTTP bodies and metric tags, so it is written
//! exactly once, here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A coded failure, as named in the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A field breaks a rule; the reason names the field.
    InvalidParameter,
    /// The model is not in the settings.
    UnknownModel,
    /// The body is not a decodable request.
    MalformedMessage,
    /// The degraded queue was full (`queue_full`) or the wait ran out (`wait_timeout`).
    QueueOverloaded,
    /// Device memory was exhausted after the bounded retries.
    GpuOom,
    /// Inference ran past the model's limit.
    InferenceTimeout,
    /// Any other inference error.
    InferenceFailed,
    /// The caller cancelled the task (`DELETE /tasks/{id}`, `warmlane-producer cancel`):
    /// a pending task never runs, a running one stops at its next denoising step.
    Cancelled,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidParameter,
        ErrorCode::UnknownModel,
        ErrorCode::MalformedMessage,
        ErrorCode::QueueOverloaded,
        ErrorCode::GpuOom,
        ErrorCode::InferenceTimeout,
        ErrorCode::InferenceFailed,
        ErrorCode::Cancelled,
    ];

    /// The stable string of the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::QueueOverloaded => "queue_overloaded",
            ErrorCode::GpuOom => "gpu_oom",
            ErrorCode::InferenceTimeout => "inference_timeout",
            ErrorCode::InferenceFailed => "inference_failed",
            ErrorCode::Cancelled => "cancelled",
        }
    }

    /// Parses the stable string back; `None` for anything else.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status the shim answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidParameter | ErrorCode::UnknownModel => 422,
            ErrorCode::MalformedMessage => 400,
            ErrorCode::QueueOverloaded => 503,
            ErrorCode::GpuOom | ErrorCode::InferenceFailed => 500,
            ErrorCode::InferenceTimeout => 504,
            ErrorCode::Cancelled => 409,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reasons that travel with `queue_overloaded`.
pub mod reason {
    /// The degraded queue refused the publish at its depth limit.
    pub const QUEUE_FULL: &str = "queue_full";
    /// The message waited past the degraded wait limit.
    pub const WAIT_TIMEOUT: &str = "wait_timeout";
    /// A message was redelivered past the attempt limit.
    pub const POISON: &str = "poison";
    /// With `inference_failed`: the video was made but the results store (S3, or
    /// the results directory) did not take it.
    pub const STORAGE: &str = "storage";
}

/// A coded refusal: what a caller gets back instead of a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The contract code.
    pub code: ErrorCode,
    /// Machine-readable detail: the field name, `queue_full`, `wait_timeout`, ...
    pub reason: String,
    /// For humans; never contains secrets.
    pub message: String,
}

impl Rejection {
    /// Builds a rejection from its three parts.
    pub fn new(code: ErrorCode, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection { code, reason: reason.into(), message: message.into() }
    }

    /// `invalid_parameter` for `field`, with a message that names field, rule and value.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::InvalidParameter, field, message)
    }

    /// `queue_overloaded`/`queue_full`.
    pub fn queue_full(depth: u32) -> Self {
        Rejection::new(
            ErrorCode::QueueOverloaded,
            reason::QUEUE_FULL,
            format!("the degraded queue is full ({depth} waiting); retry later"),
        )
    }

    /// `queue_overloaded`/`wait_timeout`.
    pub fn wait_timeout(waited_ms: u64, limit_ms: u64) -> Self {
        Rejection::new(
            ErrorCode::QueueOverloaded,
            reason::WAIT_TIMEOUT,
            format!("waited {waited_ms} ms, past the {limit_ms} ms limit; retry later"),
        )
    }
}

/// Displays an error with its whole chain of sources, `a: b: c`, for logs and CLI
/// messages (an error's own message leaves its source out).
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut last = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            // Some clients repeat their source in their own message; print it once.
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_prints_a_repeated_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Report(&e).to_string(), "outer: inner");
    }

    #[test]
    fn codes_round_trip_and_map_to_http() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(ErrorCode::QueueOverloaded.http_status(), 503);
        assert_eq!(ErrorCode::InvalidParameter.http_status(), 422);
        assert_eq!(ErrorCode::MalformedMessage.http_status(), 400);
        assert_eq!(ErrorCode::InferenceTimeout.http_status(), 504);
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
