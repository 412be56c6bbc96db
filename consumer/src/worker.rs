//! The worker: connect, warm up, heartbeat, consume one message at a time, and
//! shut down gracefully.
//!
//! A lane worker loads its model before it consumes and before its heartbeat says
//! `warm`, so no routed request waits for a load. Prefetch is 1 and acks are
//! manual; the degraded worker's prefetch is `degraded.window`, the deliveries it
//! holds and chooses among ([`crate::window`]). The broker connection is re-established with capped backoff and the
//! topology re-declared; a delivery whose outcome could not be recorded is
//! requeued. On shutdown the in-flight task finishes, the consumer is cancelled,
//! and the worker leaves the lane's ready set at once.
//!
//! The consume loop runs on a lane thread of its own (a one-thread runtime) and
//! calls the engine inline, without a hop to another thread per task. The runtime
//! that called [`run`] keeps everything that must go on while a generation runs:
//! the broker connection's own tasks (AMQP heartbeats, so a long generation does not
//! cost the delivery), the worker's heartbeat, progress writes and load records.

use crate::claim;
use crate::ctx::{lock, Ctx, Status};
use crate::engine::Engine;
use crate::session::{handle_or_requeue, Served, Session};
use crate::upkeep::{self, WarmUpError};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warmlane_infra::amqp::{self, Publisher};
use warmlane_infra::backoff::Backoff;
use warmlane_infra::{Endpoint, InfraError, Report, Service, Store};
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::{now_ms, Settings, Topology, WorkerState};

/// How a worker is set up. `{:?}` redacts the URLs' passwords.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// RabbitMQ.
    pub amqp: Endpoint,
    /// Redis.
    pub redis: Endpoint,
    /// Name prefix.
    pub prefix: String,
    /// `degraded` or a model with a dedicated lane.
    pub lane: String,
    /// Where the engine writes videos: the file store, or scratch for a remote store.
    pub results_dir: PathBuf,
    /// Where results are kept and for how long (default: the file store at
    /// `results_dir`, kept forever).
    pub results: crate::results::ResultsConfig,
    /// Worker id in heartbeats.
    pub worker_id: String,
    /// Unload the lane model after this long idle (FR-019); `None` keeps it.
    pub idle_evict: Option<Duration>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("amqp", &self.amqp)
            .field("redis", &self.redis)
            .field("prefix", &self.prefix)
            .field("lane", &self.lane)
            .field("results_dir", &self.results_dir)
            .field("results", &self.results)
            .field("worker_id", &self.worker_id)
            .field("idle_evict", &self.idle_evict)
            .finish_non_exhaustive()
    }
}

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The lane is neither `degraded` nor a model with a dedicated lane.
    #[error("lane `{0}` is not `degraded` nor a model with a dedicated lane in the settings")]
    UnknownLane(String),
    /// The results directory cannot be created.
    #[error("results directory {}", .path.display())]
    Results {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Warm-up failed: the model could not be loaded.
    #[error(transparent)]
    WarmUp(#[from] WarmUpError),
    /// Redis or the broker failed at start.
    #[error(transparent)]
    Infra(#[from] InfraError),
    /// The lane thread could not start.
    #[error("cannot start the lane thread")]
    LaneThread(#[source] std::io::Error),
    /// The lane thread's runtime could not be built.
    #[error("cannot build the lane thread's runtime")]
    LaneRuntime(#[source] std::io::Error),
    /// The lane thread ended without a result.
    #[error("the lane thread of `{0}` ended without a result (it panicked)")]
    LanePanicked(String),
}

/// Runs a worker until `shutdown` resolves.
pub async fn run(
    cfg: WorkerConfig,
    engine: Box<dyn Engine>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let is_lane = cfg.lane != DEGRADED_LANE;
    if is_lane && !cfg.settings.model(&cfg.lane).is_some_and(|m| m.dedicated_lane) {
        return Err(WorkerError::UnknownLane(cfg.lane.clone()));
    }
    let results_dir = cfg.results.work_dir(&cfg.results_dir);
    std::fs::create_dir_all(&results_dir)
        .map_err(|source| WorkerError::Results { path: results_dir.clone(), source })?;
    let store = connect_store(&cfg).await?;
    check_broker(&cfg.amqp).await?;
    let ctx = Arc::new(Ctx {
        settings: cfg.settings.clone(),
        store: store.clone(),
        background: tokio::runtime::Handle::current(),
        background_store: store,
        publisher: Arc::new(Publisher::new(&cfg.amqp)?),
        topology: Topology::new(&cfg.prefix),
        lane: cfg.lane.clone(),
        worker_id: cfg.worker_id.clone(),
        results: cfg.results.store_or_files(&results_dir),
        results_dir,
        engine: Arc::new(Mutex::new(engine)),
        status: Arc::new(Mutex::new(Status::starting(&cfg.lane, now_ms()))),
        claims: Arc::default(),
        cancels: Arc::new(crate::cancel::Cancels::new(Duration::from_secs(cfg.settings.lanes.task_ttl_s))),
    });
    let heartbeat = tokio::spawn(upkeep::heartbeat_loop(ctx.clone()));
    let cancels = tokio::spawn(crate::cancel::listen(ctx.store.clone(), ctx.cancels.clone()));
    let sweeper = cfg.results.ttl.map(|ttl| tokio::spawn(crate::results::sweep_loop(ctx.results.clone(), ttl)));
    // Only a lane worker starts first deliveries unclaimed (crate::claim).
    let claimer = claim::claim_after(&cfg.settings).filter(|_| is_lane).map(|after| {
        tokio::spawn(claim::claim_late_runs(
            ctx.claims.clone(),
            after,
            ctx.store.clone(),
            ctx.lane.clone(),
            ctx.worker_id.clone(),
        ))
    });
    let stop_background = || {
        heartbeat.abort();
        cancels.abort();
        if let Some(sweeper) = &sweeper {
            sweeper.abort();
        }
        if let Some(claimer) = &claimer {
            claimer.abort();
        }
    };
    if is_lane {
        if let Err(e) = upkeep::warm_up(&ctx).await {
            stop_background();
            return Err(e.into());
        }
    }
    // A lane worker starts first deliveries unclaimed only once it hears cancels.
    if is_lane && !ctx.cancels.wait_heard(Duration::from_secs(10)).await {
        tracing::warn!("not subscribed to cancels yet; claiming every delivery until then");
    }
    let result = run_lane_thread(&ctx, &cfg, shutdown).await;
    stop_background();
    ctx.set_state(WorkerState::Draining);
    if let Err(e) = ctx.store.remove_worker(&ctx.worker_id, &ctx.lane).await {
        tracing::warn!(error = %Report(&e), "could not remove the worker's heartbeat");
    }
    lock(&ctx.engine).release();
    tracing::info!(lane = %ctx.lane, worker = %ctx.worker_id, "worker stopped");
    result
}

/// Fails when the broker cannot be used with these settings (a certificate not
/// trusted, a host name the certificate does not name), before the model loads. A
/// broker that is down or slow is no error here: the consume loop waits for it.
async fn check_broker(endpoint: &Endpoint) -> Result<(), InfraError> {
    match tokio::time::timeout(Duration::from_secs(5), amqp::open(endpoint)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "checked".into()).await;
            Ok(())
        }
        Ok(Err(e)) if e.is_misconfigured() => Err(e),
        Ok(Err(_)) | Err(_) => Ok(()),
    }
}

async fn connect_store(cfg: &WorkerConfig) -> Result<Store, InfraError> {
    let connect = || Store::connect(&cfg.redis, &cfg.prefix, &cfg.settings);
    warmlane_infra::backoff::retry_while("Redis", Duration::from_secs(60), connect, InfraError::is_retryable).await
}

/// Runs the consume loop on a thread of its own with a one-thread runtime, which
/// calls the engine inline. The calling runtime keeps the broker connection's own
/// tasks (AMQP heartbeats among them), the worker's heartbeat and progress writes, so
/// a generation of any length blocks none of them. Resolves when the lane thread
/// ends: on `shutdown` after the in-flight task, or on an error. If this future is
/// dropped, the lane thread stops after its in-flight task as well.
async fn run_lane_thread(
    ctx: &Arc<Ctx>,
    cfg: &WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let (ctx, cfg) = (ctx.clone(), cfg.clone());
    let lane = cfg.lane.clone();
    std::thread::Builder::new()
        .name(format!("lane-{lane}"))
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(consume_loop(&ctx, &cfg, stop_rx)),
                Err(e) => Err(WorkerError::LaneRuntime(e)),
            };
            let _ = done_tx.send(result);
        })
        .map_err(WorkerError::LaneThread)?;
    tokio::pin!(shutdown);
    let ended = tokio::select! {
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            done_rx.await
        }
        r = &mut done_rx => r,
    };
    ended.unwrap_or(Err(WorkerError::LanePanicked(lane)))
}

async fn consume_loop(
    outer: &Arc<Ctx>,
    cfg: &WorkerConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    // Resolves on a stop request, or when `run` is gone (the sender dropped).
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(shutdown);
    // Redis for this thread's own calls (start, finish): served by this runtime.
    let store = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        store = connect_store(cfg) => store?,
    };
    let ctx = &Arc::new(outer.with_store(store));
    let mut backoff = Backoff::reconnect();
    let queue = ctx.topology.queue_of_lane(&ctx.lane);
    loop {
        let session = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            s = open_consumer(ctx, &cfg.amqp, &queue) => s,
        };
        let session = match session {
            Ok(s) => s,
            // A certificate not trusted, a URL that does not parse: stop, as at start.
            Err(e) if e.is_misconfigured() => return Err(e.into()),
            Err(e) => {
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if e.is_retryable() {
                    tracing::warn!(error = %Report(&e), retry_in_ms, "cannot consume; retrying");
                } else {
                    // A refused declaration (a queue declared with other arguments) fails
                    // the same way until an operator changes the broker or the settings.
                    tracing::error!(error = %Report(&e), retry_in_ms, "the broker refuses what this worker declares or consumes; retrying");
                }
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        tracing::info!(queue = %queue, worker = %ctx.worker_id, "consuming");
        let served = if ctx.is_degraded() {
            crate::window::serve(ctx, cfg.idle_evict, session, &mut shutdown, &mut backoff).await
        } else {
            serve(ctx, cfg, session, &mut shutdown, &mut backoff).await
        };
        if served == Served::Stopped {
            return Ok(());
        }
    }
}

/// Handles deliveries one at a time until shutdown or a broken stream; between
/// deliveries, once a second, runs the idle upkeep.
async fn serve(
    ctx: &Arc<Ctx>,
    cfg: &WorkerConfig,
    session: Session,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    backoff: &mut Backoff,
) -> Served {
    let (_conn, channel, mut deliveries) = session;
    loop {
        let idle_check = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = &mut *shutdown => {
                let _ = channel.basic_cancel(ctx.worker_id.as_str().into(), BasicCancelOptions::default()).await;
                return Served::Stopped;
            }
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => handle_or_requeue(ctx, &channel, &delivery, backoff).await,
                Some(Err(e)) => {
                    tracing::warn!(error = %Report(&e), "delivery stream failed; reconnecting");
                    return Served::Lost;
                }
                None => {
                    tracing::warn!("delivery stream ended; reconnecting");
                    return Served::Lost;
                }
            },
            _ = idle_check => {
                upkeep::evict_if_idle(ctx, cfg.idle_evict);
                upkeep::rewarm_on_demand(ctx).await;
                upkeep::maintain_engine(ctx).await;
            }
        }
    }
}

async fn open_consumer(ctx: &Ctx, endpoint: &Endpoint, queue: &str) -> Result<Session, InfraError> {
    // Opened on the background runtime, which then runs the connection's heartbeats.
    let (endpoint, redacted) = (endpoint.clone(), endpoint.redacted());
    let conn = ctx
        .background
        .spawn(async move { amqp::connect(&endpoint, Duration::from_secs(5)).await })
        .await
        .map_err(|e| InfraError::connect(Service::Broker, redacted, e))??;
    let channel = conn.create_channel().await.map_err(InfraError::broker("opening a channel"))?;
    amqp::declare(&channel, &ctx.topology.declarations(&ctx.settings)).await?;
    // Lane workers take one delivery at a time; the degraded worker holds its window.
    let prefetch = if ctx.is_degraded() { u16::try_from(ctx.settings.degraded.window).unwrap_or(u16::MAX) } else { 1 };
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(InfraError::broker("setting the prefetch"))?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            ctx.worker_id.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(InfraError::broker(format!("consuming {queue}")))?;
    Ok((conn, channel, consumer))
}
