//! [`InfraError`]: what can go wrong talking to RabbitMQ or Redis, with its cause
//! kept as the error's source and classifiers for the caller's next move, in the
//! manner of lapin's `can_be_recovered`.

use std::error::Error;

/// The backing service a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// RabbitMQ.
    Broker,
    /// Redis.
    Redis,
}

impl Service {
    /// The name used in logs and in the HTTP `reason` (`broker`, `redis`).
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Broker => "broker",
            Service::Redis => "redis",
        }
    }

    fn product(self) -> &'static str {
        match self {
            Service::Broker => "RabbitMQ",
            Service::Redis => "Redis",
        }
    }
}

/// A failure of the broker or Redis. The message names the operation; the cause is
/// the [`Error::source`] (print the whole chain with [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// A broker operation failed. From a publish: the message was not handed to the broker.
    #[error("broker: {what}")]
    Broker {
        /// The operation (`publishing`, `declaring queue x`, `acking`, ...).
        what: String,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// The broker refused a message it was handed (a dead letter nacked or returned):
    /// nothing is queued.
    #[error("broker: {0}")]
    Refused(String),
    /// A publish went out on a channel without confirms: it may or may not be queued,
    /// and nothing will say which.
    #[error("broker: {0}")]
    Unconfirmable(String),
    /// A publish was written but its confirm never came (the connection dropped
    /// meanwhile): the message may or may not be queued. Never reported as accepted.
    #[error("the broker did not confirm the publish")]
    Unconfirmed(#[source] lapin::Error),
    /// A publish was written but no confirm came within this time (a broker that
    /// stopped answering): the message may or may not be queued. Never reported as
    /// accepted.
    #[error("the broker did not confirm the publish within {} s", .0.as_secs())]
    ConfirmTimedOut(std::time::Duration),
    /// A Redis command failed.
    #[error("redis")]
    Redis(#[from] redis::RedisError),
    /// Connecting failed (at start, or a pooled connection could not be opened).
    #[error("cannot connect to {} at {url}", .service.product())]
    Connect {
        /// Which service.
        service: Service,
        /// The URL, password redacted.
        url: String,
        /// The client's error (or a timeout).
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// A value read from (or for) Redis does not convert: stored by another version,
    /// or not serialisable.
    #[error("unreadable {what} for Redis")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
}

impl InfraError {
    /// A broker failure during `what`.
    pub fn broker(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> InfraError {
        let what = what.into();
        move |source| InfraError::Broker { what, source }
    }

    /// The service that failed.
    pub fn service(&self) -> Service {
        match self {
            InfraError::Broker { .. }
            | InfraError::Refused(_)
            | InfraError::Unconfirmable(_)
            | InfraError::Unconfirmed(_)
            | InfraError::ConfirmTimedOut(_) => Service::Broker,
            InfraError::Redis(_) | InfraError::Corrupt { .. } => Service::Redis,
            InfraError::Connect { service, .. } => *service,
        }
    }

    /// Whether trying the same operation again later may succeed: the connection
    /// failed or timed out, or the server asked to retry (Redis loading after a
    /// restart). A channel-level refusal (a queue declared with other arguments, a
    /// missing queue), a parse or serialisation failure, a refusal or an unreadable
    /// value will fail the same way. lapin's and redis-rs's own classifiers decide.
    pub fn is_retryable(&self) -> bool {
        match self {
            InfraError::Broker { source, .. } => source.can_be_recovered() && !source.is_amqp_soft_error(),
            InfraError::Unconfirmed(_) | InfraError::ConfirmTimedOut(_) => true,
            InfraError::Connect { .. } => !self.is_misconfigured(),
            InfraError::Redis(e) => !matches!(e.retry_method(), redis::RetryMethod::NoRetry),
            InfraError::Refused(_) | InfraError::Unconfirmable(_) | InfraError::Corrupt { .. } => false,
        }
    }

    /// Whether a connection failed because a setting is wrong, so that waiting will
    /// not help and a service should stop at start with this error: a TLS certificate
    /// the client does not trust or that does not name the host
    /// ([`TlsFailure`](crate::tls::TlsFailure)), a CA file that cannot be used, a URL
    /// that does not parse ([`BadSetting`]).
    pub fn is_misconfigured(&self) -> bool {
        let InfraError::Connect { source, .. } = self else { return false };
        source.is::<crate::tls::TlsFailure>() || source.is::<crate::tls::CaFileError>() || source.is::<BadSetting>()
    }

    /// A failure to connect to `service` at `url` (redacted): a TLS handshake failure
    /// anywhere in `source`'s chain becomes the source itself, named, so that
    /// [`InfraError::is_misconfigured`] sees it.
    pub fn connect(service: Service, url: String, source: impl Error + Send + Sync + 'static) -> InfraError {
        let source: Box<dyn Error + Send + Sync> = match crate::tls::TlsFailure::find(&source) {
            Some(failure) => Box::new(failure),
            None => Box::new(source),
        };
        InfraError::Connect { service, url, source }
    }

    /// Whether a publish that failed this way certainly left nothing queued, so its
    /// admission may be undone. An unconfirmed publish may have been queued.
    pub fn is_unpublished(&self) -> bool {
        matches!(self, InfraError::Broker { .. } | InfraError::Refused(_) | InfraError::Connect { .. })
    }
}

/// A connection setting that cannot work however long one waits (a URL that does
/// not parse, a CA file given for a URL without TLS): the source of an
/// [`InfraError::Connect`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSetting(pub String);

pub use warmlane_shared::error::Report;

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> redis::RedisError {
        redis::RedisError::from(std::io::Error::new(kind, "gone"))
    }

    #[test]
    fn the_chain_is_kept_and_classified() {
        let e = InfraError::Redis(io(std::io::ErrorKind::ConnectionReset));
        assert_eq!(e.service(), Service::Redis);
        assert!(e.is_retryable() && !e.is_unpublished());
        assert!(e.source().is_some(), "the cause is the source");
        assert!(Report(&e).to_string().starts_with("redis: "), "{}", Report(&e));

        let connect = InfraError::Connect {
            service: Service::Broker,
            url: "amqp://guest:***@h/".into(),
            source: "connection refused".into(),
        };
        assert_eq!(
            Report(&connect).to_string(),
            "cannot connect to RabbitMQ at amqp://guest:***@h/: connection refused"
        );
        assert!(connect.is_retryable() && connect.is_unpublished());
        assert!(!connect.is_misconfigured());
        let untrusted = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let tls = InfraError::connect(Service::Broker, "amqps://guest:***@h/".into(), lapin::Error::from(untrusted));
        assert_eq!(
            Report(&tls).to_string(),
            "cannot connect to RabbitMQ at amqps://guest:***@h/: certificate not trusted: invalid peer certificate: UnknownIssuer"
        );
        assert!(tls.is_misconfigured() && !tls.is_retryable(), "a certificate failure is not retried");
        let bad_url = InfraError::Connect {
            service: Service::Redis,
            url: "h".into(),
            source: Box::new(BadSetting("not a Redis URL".into())),
        };
        assert!(bad_url.is_misconfigured() && !bad_url.is_retryable());

        let refused = InfraError::Refused("the dead queue refused a message".into());
        assert!(!refused.is_retryable() && refused.is_unpublished());
        let corrupt = InfraError::Corrupt { what: "reply", source: "bad msgpack".into() };
        assert!(!corrupt.is_retryable());
        assert_eq!(corrupt.service(), Service::Redis);
        let unconfirmable = InfraError::Unconfirmable("no confirms".into());
        assert!(!unconfirmable.is_unpublished(), "it may be queued");

        let loading =
            redis::RedisError::from((redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading), "loading"));
        assert!(InfraError::Redis(loading).is_retryable(), "Redis loading its data after a restart");
        let wrong = redis::RedisError::from((redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError), "no"));
        assert!(!InfraError::Redis(wrong).is_retryable(), "a command Redis refuses fails again");
        let lost = lapin::Error::from(std::io::Error::other("reset"));
        assert!(InfraError::broker("publishing")(lost).is_retryable());
    }
}
