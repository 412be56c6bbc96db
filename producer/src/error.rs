//! Errors of the producer library: a refusal of the request, or a failure of the
//! infrastructure behind it.

use warmlane_infra::InfraError;
use warmlane_shared::Rejection;

/// What can go wrong between a caller and the broker or Redis.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The request was refused with a contract code (validation, duplicate id, overload).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// RabbitMQ or Redis failed; the cause is kept.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl ProducerError {
    /// Whether the failure is of infrastructure (retry later), not of the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ProducerError::Infra(_))
    }

    /// Whether the request certainly was not queued (so its admission may be undone).
    pub fn is_unpublished(&self) -> bool {
        matches!(self, ProducerError::Infra(e) if e.is_unpublished())
    }
}
