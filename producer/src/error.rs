//! Errors of the producer library, with classifiers for retry decisions.

use warmlane_shared::Rejection;

/// What can go wrong between a caller and the broker or Redis.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The request was refused with a contract code (validation, duplicate id, overload).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// RabbitMQ failed. From a publish: the message was not handed to the broker.
    #[error("broker: {0}")]
    Broker(String),
    /// A publish was written but its confirm never came (the connection dropped
    /// meanwhile): the message may or may not be queued. Never reported as accepted.
    #[error("broker did not confirm the publish: {0}")]
    Unconfirmed(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Connecting failed at start.
    #[error("cannot connect to {what} at {url}: {detail}")]
    Connect {
        /// `RabbitMQ` or `Redis`.
        what: &'static str,
        /// Redacted URL.
        url: String,
        /// The client's message.
        detail: String,
    },
}

impl From<lapin::Error> for ProducerError {
    fn from(e: lapin::Error) -> Self {
        ProducerError::Broker(e.to_string())
    }
}

impl ProducerError {
    /// Whether the failure is of infrastructure (retry later), not of the request.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, ProducerError::Rejected(_))
    }
}
