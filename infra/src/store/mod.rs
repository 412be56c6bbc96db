//! The Redis side of the contract: task hashes, exactly-once terminal replies,
//! worker heartbeats, lane flags and the deadline index of the backstop.
//!
//! Every state change that must not race is one Lua script ([`scripts`]): admission
//! refuses a task id already in use, [`Store::start`] refuses a finished task, and
//! [`Store::finish`] pushes the reply only when the hash is not yet terminal, so a
//! redelivered message or a racing reaper can never answer twice.
//!
//! - `tasks`: admission, routing, start, progress, the terminal reply, the backstop's index.
//! - `lanes`: lane health, the disabled flag, fallback records and load counts.
//! - `workers`: heartbeats.
//! - `history`: cancels, the cancel channel, and the recent tasks `GET /tasks` lists.

use crate::endpoint::Endpoint;
use crate::error::{InfraError, Service};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, TlsCertificates};
use std::time::Duration;
use warmlane_shared::keys::Keys;
use warmlane_shared::Settings;

mod history;
mod lanes;
mod scripts;
mod tasks;
mod workers;

pub use history::{cancelled_reply, CancelOutcome, CANCELLED_REASON};
pub use lanes::{ActiveFallback, LaneDisabled};
pub use tasks::{FinishWhen, Finished, Started, StartedBy};

/// Redis access for producer, reaper and workers.
#[derive(Clone)]
pub struct Store {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    reply_ttl_s: u64,
    task_ttl_s: u64,
}

/// The client of `endpoint`. A `rediss://` URL gets the endpoint's CA, or redis-rs's
/// webpki roots without one; redis-rs builds its rustls configuration from the
/// process's provider, which [`crate::tls::install_provider`] makes ring.
pub fn client(endpoint: &Endpoint) -> Result<Client, InfraError> {
    let bad_url = |e: redis::RedisError| InfraError::Connect {
        service: Service::Redis,
        url: endpoint.redacted(),
        source: Box::new(crate::error::BadSetting(format!("not a usable Redis URL ({e})"))),
    };
    if !endpoint.is_tls() {
        return Client::open(endpoint.url()).map_err(bad_url);
    }
    if endpoint.url().ends_with("#insecure") {
        return Err(InfraError::Connect {
            service: Service::Redis,
            url: endpoint.redacted(),
            source: Box::new(crate::error::BadSetting(
                "#insecure turns certificate checks off; warmlane always checks (give the CA with --redis-ca-file)"
                    .into(),
            )),
        });
    }
    crate::tls::install_provider();
    let certificates = TlsCertificates { client_tls: None, root_cert: endpoint.ca().map(|ca| ca.pem().to_vec()) };
    Client::build_with_tls(endpoint.url(), certificates).map_err(bad_url)
}

/// How the shared connection reconnects after Redis went away: 3 tries, 100 ms apart
/// doubling, 1 s connect timeout each. Commands issued meanwhile wait for these tries
/// and then fail, so a caller hears `service_unavailable` within about 1-4 s instead of
/// the client library's default of 6 tries (over 6 s); the next command starts a new
/// round. Workers back off between failed deliveries themselves.
pub fn store_reconnect() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(1))
        .set_connection_timeout(Some(Duration::from_secs(1)))
}

impl Store {
    /// Connects (the connection manager reconnects by itself afterwards); over TLS
    /// for a `rediss://` URL, trusting the endpoint's CA.
    pub async fn connect(endpoint: &Endpoint, prefix: &str, settings: &Settings) -> Result<Store, InfraError> {
        let client = client(endpoint)?;
        let connect_err = |e| InfraError::connect(Service::Redis, endpoint.redacted(), e);
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new_with_config(client.clone(), store_reconnect()),
        )
        .await
        .map_err(|e| InfraError::connect(Service::Redis, endpoint.redacted(), e))?
        .map_err(connect_err)?;
        Ok(Store {
            client,
            conn,
            keys: Keys::new(prefix),
            reply_ttl_s: settings.lanes.reply_ttl_s,
            task_ttl_s: settings.lanes.task_ttl_s,
        })
    }

    /// Key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A clone of the shared connection, for callers with their own commands.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// PING, for readiness probes.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_is_checked_before_it_connects() {
        for url in ["redis://127.0.0.1/", "rediss://:pw@localhost:6380/", "rediss://localhost/2"] {
            client(&Endpoint::new(url)).unwrap_or_else(|e| panic!("{url}: {}", crate::Report(&e)));
        }
        for url in ["redis://:hunter2@127.0.0.1:port/", "rediss://:hunter2@localhost/#insecure", "http://:hunter2@h/"] {
            let e = client(&Endpoint::new(url)).expect_err(url);
            let text = crate::Report(&e).to_string();
            assert!(e.is_misconfigured() && !text.contains("hunter2"), "{url}: {text}");
        }
    }
}
