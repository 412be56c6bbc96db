//! [`Publisher`]: the producer's and the workers' way to publish, with confirms, on
//! a pooled connection and one cached confirm channel.

use super::{check_url, declare, open, publish, Published};
use crate::endpoint::Endpoint;
use crate::error::{InfraError, Service};
use deadpool::managed::{Metrics, Pool, PoolError, RecycleError, RecycleResult};
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedRwLockReadGuard, RwLock};
use warmlane_shared::topology::Declarations;

/// At most one channel is replaced after a nack within this time (see
/// [`Publisher::publish`]): a full lane queue nacks every publish and must not cost a
/// channel open each.
const RENEW_AFTER_NACK_EVERY: Duration = Duration::from_millis(250);

/// The publisher's pool opens its connections with [`open`].
struct Broker(Endpoint);

impl deadpool::managed::Manager for Broker {
    type Type = Connection;
    type Error = InfraError;

    async fn create(&self) -> Result<Connection, InfraError> {
        open(&self.0).await
    }

    async fn recycle(&self, conn: &mut Connection, _: &Metrics) -> RecycleResult<InfraError> {
        if conn.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message("the connection is closed"))
        }
    }
}

type Pooled = deadpool::managed::Object<Broker>;

/// A pooled connection with one cached confirm channel, rebuilt after a failure.
///
/// lapin channels multiplex concurrent publishes, each with its own confirm, so one
/// channel serves every caller (their frames written one publish at a time, see
/// [`publish`]); a channel error drops it and the next publish opens a new one on a
/// (possibly new) pooled connection.
///
/// Connections are opened on the runtime the publisher was created on, whichever
/// runtime publishes later: lapin runs a connection's heartbeats on the runtime that
/// opened it, and a worker publishes from a lane thread that is busy while its
/// engine runs.
pub struct Publisher {
    pool: Pool<Broker>,
    home: Option<tokio::runtime::Handle>,
    cached: Mutex<Option<Cached>>,
    order: Mutex<()>,
    renewed_after_nack: Mutex<Option<std::time::Instant>>,
    url: String,
}

/// The cached confirm channel, its connection, and the publishes using it: each
/// holds a read lease from the moment it takes the channel until its confirm is in,
/// so a replaced channel is closed only once nothing uses it.
struct Cached {
    conn: Pooled,
    channel: Channel,
    in_use: Arc<RwLock<()>>,
}

impl Publisher {
    /// A publisher for `endpoint`; connects lazily.
    pub fn new(endpoint: &Endpoint) -> Result<Publisher, InfraError> {
        check_url(endpoint.url())?;
        let url = endpoint.redacted();
        let pool = Pool::builder(Broker(endpoint.clone())).build().map_err(|e| InfraError::Connect {
            service: Service::Broker,
            url: url.clone(),
            source: Box::new(e),
        })?;
        let home = tokio::runtime::Handle::try_current().ok();
        Ok(Publisher {
            pool,
            home,
            cached: Mutex::new(None),
            order: Mutex::new(()),
            renewed_after_nack: Mutex::new(None),
            url,
        })
    }

    /// The confirm channel, opening one when there is none or it closed.
    pub async fn channel(&self) -> Result<Channel, InfraError> {
        self.lease().await.map(|(channel, _)| channel)
    }

    /// The confirm channel and a lease on it, both taken under the cache's lock.
    async fn lease(&self) -> Result<(Channel, OwnedRwLockReadGuard<()>), InfraError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.conn.status().connected() && c.channel.status().connected() {
                return Ok((c.channel.clone(), c.in_use.clone().read_owned().await));
            }
        }
        *cached = None;
        let conn = self.pooled().await?;
        let channel = conn.create_channel().await.map_err(InfraError::broker("opening a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(InfraError::broker("enabling confirms"))?;
        let in_use = Arc::new(RwLock::new(()));
        let lease = in_use.clone().read_owned().await;
        *cached = Some(Cached { conn, channel: channel.clone(), in_use });
        Ok((channel, lease))
    }

    /// Publishes and waits for the confirm; a channel failure drops the cached channel,
    /// and so does a nack, at most once per [`RENEW_AFTER_NACK_EVERY`]: a channel that
    /// published to a quorum queue whose leader was lost may go on nacking every
    /// publish (seen on RabbitMQ 3.10, until the lost node returned), while a new
    /// channel's publishes are accepted at once.
    pub async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<Published, InfraError> {
        let (channel, lease) = self.lease().await?;
        let leased = OwnedRwLockReadGuard::rwlock(&lease).clone();
        let result = publish(&channel, &self.order, exchange, key, body, props).await;
        drop(lease);
        let renew = match result {
            Err(_) => true,
            Ok(Published::Nacked) => self.nack_renewal_due().await,
            Ok(_) => false,
        };
        if renew {
            self.forget(&leased).await;
        }
        result
    }

    /// Whether a nack may replace the channel now (the last such renewal was at least
    /// [`RENEW_AFTER_NACK_EVERY`] ago); notes the renewal when it may.
    async fn nack_renewal_due(&self) -> bool {
        let mut last = self.renewed_after_nack.lock().await;
        let due = last.is_none_or(|at| at.elapsed() >= RENEW_AFTER_NACK_EVERY);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// Drops the cached channel when it is still the one `leased` belongs to, so the
    /// next publish opens a new one; the dropped channel is closed once the publishes
    /// holding a lease on it have their confirms.
    async fn forget(&self, leased: &Arc<RwLock<()>>) {
        let mut cached = self.cached.lock().await;
        let Some(old) = cached.take_if(|c| Arc::ptr_eq(&c.in_use, leased)) else { return };
        drop(cached);
        let Cached { conn, channel, in_use } = old;
        drop(conn);
        tokio::spawn(async move {
            let _unused = in_use.write().await;
            if channel.status().connected() {
                let _ = channel.close(200, "replaced".into()).await;
            }
        });
    }

    /// Declares the topology on the publisher's channel.
    pub async fn declare(&self, decl: &Declarations) -> Result<(), InfraError> {
        let channel = self.channel().await?;
        let result = declare(&channel, decl).await;
        if result.is_err() {
            *self.cached.lock().await = None;
        }
        result
    }

    async fn pooled(&self) -> Result<Pooled, InfraError> {
        let pool = self.pool.clone();
        let got = match &self.home {
            Some(home) => home
                .spawn(async move { pool.get().await })
                .await
                .map_err(|e| InfraError::connect(Service::Broker, self.url.clone(), e))?,
            None => pool.get().await,
        };
        got.map_err(|e| match e {
            PoolError::Backend(e) => e,
            other => InfraError::connect(Service::Broker, self.url.clone(), other),
        })
    }

    /// A fresh channel without confirms on the pooled connection, for passive checks.
    pub async fn channel_plain(&self) -> Result<Channel, InfraError> {
        let conn = self.pooled().await?;
        conn.create_channel().await.map_err(InfraError::broker("opening a channel"))
    }

    /// Whether the broker answers now (for readiness probes).
    pub async fn is_connected(&self) -> bool {
        self.channel().await.is_ok()
    }
}
