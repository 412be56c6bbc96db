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

use crate::error::{InfraError, Service};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;
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
    /// Connects (the connection manager reconnects by itself afterwards).
    pub async fn connect(url: &str, prefix: &str, settings: &Settings) -> Result<Store, InfraError> {
        let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| InfraError::Connect {
            service: Service::Redis,
            url: crate::config::redact_url(url),
            source,
        };
        let client = Client::open(url).map_err(|e| connect_err(Box::new(e)))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new_with_config(client.clone(), store_reconnect()),
        )
        .await
        .map_err(|e| connect_err(Box::new(e)))?
        .map_err(|e| connect_err(Box::new(e)))?;
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
