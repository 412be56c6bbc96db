//! The worker: connect, warm up, heartbeat, consume one message at a time, and
//! shut down gracefully.
//!
//! A lane worker loads its model before it consumes and before its heartbeat says
//! `warm`, so no routed request waits for a load. Prefetch is 1 and acks are
//! manual. The broker connection is re-established with capped backoff and the
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
use crate::engine::Engine;
use crate::handle::{self, Ctx, Status};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warmlane_producer::amqp::{self, Publisher};
use warmlane_producer::backoff::Backoff;
use warmlane_producer::store::{Heartbeat, WorkerState};
use warmlane_producer::{ProducerError, Store};
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::{now_ms, FallbackCause, Settings, Topology};

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// Name prefix.
    pub prefix: String,
    /// `degraded` or a model with a dedicated lane.
    pub lane: String,
    /// Where videos go.
    pub results_dir: PathBuf,
    /// Worker id in heartbeats.
    pub worker_id: String,
    /// Unload the lane model after this long idle (FR-019); `None` keeps it.
    pub idle_evict: Option<Duration>,
}

/// Errors that stop a worker at start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The lane is neither `degraded` nor a model with a dedicated lane.
    #[error("lane `{0}` is not `degraded` nor a model with a dedicated lane in the settings")]
    UnknownLane(String),
    /// The results directory cannot be created.
    #[error("results directory {path}: {detail}")]
    Results {
        /// The directory.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// Warm-up failed: the model could not be loaded.
    #[error("warm-up of `{model}` failed: {detail}")]
    WarmUp {
        /// The model.
        model: String,
        /// The engine's error.
        detail: String,
    },
    /// Redis or the broker failed at start.
    #[error(transparent)]
    Infra(#[from] ProducerError),
    /// The lane thread could not start or ended abnormally.
    #[error("lane thread: {0}")]
    Lane(String),
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
    std::fs::create_dir_all(&cfg.results_dir)
        .map_err(|e| WorkerError::Results { path: cfg.results_dir.display().to_string(), detail: e.to_string() })?;
    let store = connect_store(&cfg).await?;
    let ctx = Arc::new(Ctx {
        settings: cfg.settings.clone(),
        store: store.clone(),
        background: tokio::runtime::Handle::current(),
        background_store: store,
        publisher: Arc::new(Publisher::new(&cfg.amqp_url)?),
        topology: Topology::new(&cfg.prefix),
        lane: cfg.lane.clone(),
        worker_id: cfg.worker_id.clone(),
        results_dir: cfg.results_dir.clone(),
        engine: Arc::new(Mutex::new(engine)),
        status: Arc::new(Mutex::new(Status {
            state: if is_lane { WorkerState::Loading } else { WorkerState::Idle },
            model: None,
            loads: 0,
            tasks: 0,
            last_active: Instant::now(),
            memory: serde_json::Value::Null,
            evicted_at_ms: None,
            started_at_ms: now_ms(),
        })),
        claims: Arc::default(),
    });
    let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone()));
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
        if let Some(claimer) = &claimer {
            claimer.abort();
        }
    };
    if is_lane {
        if let Err(e) = warm_up(&ctx).await {
            stop_background();
            return Err(e);
        }
    }
    let result = run_lane_thread(&ctx, &cfg, shutdown).await;
    stop_background();
    ctx.set_state(WorkerState::Draining);
    if let Err(e) = ctx.store.remove_worker(&ctx.worker_id, &ctx.lane).await {
        tracing::warn!(error = %e, "could not remove the worker's heartbeat");
    }
    handle::lock(&ctx.engine).release();
    tracing::info!(lane = %ctx.lane, worker = %ctx.worker_id, "worker stopped");
    result
}

async fn connect_store(cfg: &WorkerConfig) -> Result<Store, ProducerError> {
    let mut backoff = Backoff::reconnect();
    let started = Instant::now();
    loop {
        match Store::connect(&cfg.redis_url, &cfg.prefix, &cfg.settings).await {
            Ok(store) => return Ok(store),
            Err(e) if started.elapsed() > Duration::from_secs(60) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "Redis not reachable; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Loads the lane's model and runs the engine's warm-up before the worker reports `warm`.
async fn warm_up(ctx: &Arc<Ctx>) -> Result<(), WorkerError> {
    let engine = ctx.engine.clone();
    let model = ctx.lane.clone();
    let started = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || handle::lock(&engine).prepare(&model)).await;
    let load = match prepared {
        Ok(Ok(load)) => load.unwrap_or(started.elapsed()),
        Ok(Err(e)) => return Err(WorkerError::WarmUp { model: ctx.lane.clone(), detail: e.to_string() }),
        Err(e) => return Err(WorkerError::WarmUp { model: ctx.lane.clone(), detail: e.to_string() }),
    };
    let ms = handle::note_load(&ctx.status, &ctx.lane, &ctx.lane, load);
    ctx.store.count_load(&ctx.lane).await?;
    ctx.set_state(WorkerState::Warm);
    write_heartbeat(ctx).await;
    tracing::info!(lane = %ctx.lane, warmup_ms = ms, "model warm; lane ready");
    Ok(())
}

async fn heartbeat_loop(ctx: Arc<Ctx>) {
    let every = Duration::from_millis(ctx.settings.lanes.heartbeat_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        write_heartbeat(&ctx).await;
    }
}

async fn write_heartbeat(ctx: &Ctx) {
    // Reading memory must not wait behind a running generation: while a task holds
    // the engine, the last snapshot is sent again, dated by its `as_of_ms`.
    let fresh = ctx.engine.try_lock().ok().map(|engine| engine.memory());
    let status = {
        let mut s = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut memory) = fresh {
            if let Some(obj) = memory.as_object_mut() {
                obj.insert("as_of_ms".into(), now_ms().into());
            }
            s.memory = memory;
        }
        s.clone()
    };
    let hb = Heartbeat {
        worker_id: ctx.worker_id.clone(),
        lane: ctx.lane.clone(),
        model: status.model,
        state: status.state,
        pid: std::process::id(),
        started_at_ms: status.started_at_ms,
        at_ms: now_ms(),
        loads: status.loads,
        tasks: status.tasks,
        memory: status.memory,
    };
    if let Err(e) = ctx.store.heartbeat(&hb, ctx.settings.lanes.heartbeat_ttl_ms).await {
        tracing::warn!(error = %e, "heartbeat failed");
    }
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
                Err(e) => Err(WorkerError::Lane(format!("cannot build the lane runtime: {e}"))),
            };
            let _ = done_tx.send(result);
        })
        .map_err(|e| WorkerError::Lane(format!("cannot start the lane thread: {e}")))?;
    tokio::pin!(shutdown);
    let ended = tokio::select! {
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            done_rx.await
        }
        r = &mut done_rx => r,
    };
    ended.unwrap_or_else(|_| {
        Err(WorkerError::Lane(format!("the lane thread of `{lane}` ended without a result (it panicked)")))
    })
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
            s = open_consumer(ctx, &cfg.amqp_url, &queue) => s,
        };
        let (_conn, channel, mut deliveries) = match session {
            Ok(s) => s,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot consume; retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        tracing::info!(queue = %queue, worker = %ctx.worker_id, "consuming");
        loop {
            let idle_check = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    let _ = channel.basic_cancel(ctx.worker_id.as_str().into(), BasicCancelOptions::default()).await;
                    return Ok(());
                }
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        if let Err(e) = handle::handle(ctx, &channel, &delivery).await {
                            tracing::warn!(error = %e, "could not record a task's outcome; requeueing it");
                            handle::requeue(&delivery).await;
                            tokio::time::sleep(backoff.next_delay()).await;
                        } else {
                            backoff.reset();
                        }
                    }
                    Some(Err(e)) => { tracing::warn!(error = %e, "delivery stream failed; reconnecting"); break; }
                    None => { tracing::warn!("delivery stream ended; reconnecting"); break; }
                },
                _ = idle_check => {
                    evict_if_idle(ctx, cfg.idle_evict);
                    rewarm_on_demand(ctx).await;
                    maintain_engine(ctx).await;
                }
            }
        }
    }
}

type Session = (lapin::Connection, lapin::Channel, lapin::Consumer);

async fn open_consumer(ctx: &Ctx, url: &str, queue: &str) -> Result<Session, ProducerError> {
    // Opened on the background runtime, which then runs the connection's heartbeats.
    let url = url.to_string();
    let conn = ctx
        .background
        .spawn(async move { amqp::connect(&url, Duration::from_secs(5)).await })
        .await
        .map_err(|e| ProducerError::Broker(format!("connecting: {e}")))??;
    let channel = conn.create_channel().await?;
    amqp::declare(&channel, &ctx.topology.declarations(&ctx.settings)).await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            ctx.worker_id.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((conn, channel, consumer))
}

/// Lets the engine's memory manager release components idle past their placement
/// policy and evict below the headroom (only while no task holds the engine).
async fn maintain_engine(ctx: &Ctx) {
    let engine = ctx.engine.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut engine) = engine.try_lock() {
            engine.maintain();
        }
    })
    .await;
}

fn evict_if_idle(ctx: &Ctx, idle_evict: Option<Duration>) {
    let Some(limit) = idle_evict else { return };
    let mut status = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
    if status.model.is_none() || status.state == WorkerState::Busy || status.last_active.elapsed() < limit {
        return;
    }
    if let Ok(mut engine) = ctx.engine.try_lock() {
        engine.release();
        tracing::info!(lane = %ctx.lane, idle_s = limit.as_secs(), "idle eviction: model unloaded (FR-019)");
        status.model = None;
        status.state = if ctx.lane == DEGRADED_LANE { WorkerState::Idle } else { WorkerState::Evicted };
        status.evicted_at_ms = (ctx.lane != DEGRADED_LANE).then(now_ms);
    }
}

/// An evicted lane is not ready, so the producer sends its model's requests to the
/// degraded queue (`capacity`). When such a request arrives after the eviction, the
/// lane worker loads its model again and reports `warm`, and later requests use the
/// lane. A lane an operator disabled (`manual`, `quota`) is not re-warmed.
async fn rewarm_on_demand(ctx: &Arc<Ctx>) {
    let evicted_at = {
        let mut s = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.state != WorkerState::Evicted {
            // A task delivered to the lane itself loaded the model meanwhile.
            s.evicted_at_ms = None;
        }
        match s.evicted_at_ms {
            Some(at) => at,
            None => return,
        }
    };
    let demand = match ctx.store.fallback(&ctx.lane).await {
        Ok(Some(f)) => f.cause == FallbackCause::Capacity.as_str() && f.last_ms.is_some_and(|last| last >= evicted_at),
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "could not read the lane's fallback record");
            false
        }
    };
    if !demand {
        return;
    }
    tracing::info!(lane = %ctx.lane, "requests for an evicted lane went degraded: loading the model again");
    ctx.set_state(WorkerState::Loading);
    match warm_up(ctx).await {
        Ok(()) => ctx.status.lock().unwrap_or_else(|p| p.into_inner()).evicted_at_ms = None,
        Err(e) => {
            // Waits for the next request rather than retrying a failing load every second.
            tracing::error!(lane = %ctx.lane, error = %e, "re-warming the lane failed; it stays evicted");
            let mut s = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
            s.state = WorkerState::Evicted;
            s.evicted_at_ms = Some(now_ms());
        }
    }
}
