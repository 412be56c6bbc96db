//! The handlers, one file per area. Decisions that need no I/O (task views,
//! memory fit, lane waits) are pure functions beside their handler, with unit tests.

pub mod admin;
pub mod dashboard;
pub mod docs;
pub mod generate;
pub mod history;
pub mod result;
pub mod stored;
pub mod system;
pub mod tasks;
pub mod vram;

use super::error::ApiError;
use std::future::Future;
use std::time::Duration;

/// Longest a read of Redis or the broker may take before the shim answers 503.
/// While Redis is away the store's connection manager retries for several seconds;
/// a status page should not hang that long. Admission (`POST /generate`) is not
/// bounded here: cutting it short could leave a published request unreported.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs a read with [`READ_TIMEOUT`]; a timeout is `service_unavailable`.
pub async fn bounded<T, E: Into<ApiError>>(
    what: &'static str,
    read: impl Future<Output = Result<T, E>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ApiError::Unavailable {
            reason: "dependency".into(),
            detail: format!("{what} took longer than {READ_TIMEOUT:?}"),
        }),
    }
}
