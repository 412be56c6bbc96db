//! One delivery, from bytes to exactly one terminal reply and an ack.
//!
//! The message is decoded and validated again (services publish to the exchanges
//! directly). An undecodable or invalid body goes to the dead queue, answered when
//! its task id is known. A redelivery of a finished task is acked and skipped; one
//! delivered more often than `max_attempts` is poison. On the degraded lane a
//! message that waited past the limit is answered `wait_timeout` (a TTL stops
//! counting once a message is delivered, so the worker checks the age itself).
//! The ack comes only after the reply is written, so a crash before it means a
//! redelivery, never a lost request.

use crate::claim::{self, Claims};
use crate::engine::{Engine, EngineFailure, Output};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warmlane_producer::amqp::{header_int, message_properties, Published, Publisher};
use warmlane_producer::store::{FinishWhen, Started, StartedBy, WorkerState};
use warmlane_producer::{ProducerError, Store};
use warmlane_shared::error::reason;
use warmlane_shared::metrics as m;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::topology::HEADER_ENQUEUED_MS;
use warmlane_shared::{
    now_ms, ErrorCode, Rejection, Reply, ReplyStatus, ResultInfo, Settings, Timings, Topology, ValidRequest,
};

/// Live state the heartbeat reports.
#[derive(Debug, Clone)]
pub struct Status {
    /// Current state.
    pub state: WorkerState,
    /// Resident model.
    pub model: Option<String>,
    /// Loads since start.
    pub loads: u64,
    /// Tasks finished since start.
    pub tasks: u64,
    /// Last time a task ended (for idle eviction).
    pub last_active: Instant,
    /// When the worker started, unix ms.
    pub started_at_ms: u64,
    /// When idle eviction unloaded the lane's model, unix ms (None while loaded).
    pub evicted_at_ms: Option<u64>,
    /// The engine's last memory snapshot; a heartbeat sent while a task holds the
    /// engine repeats it (its `as_of_ms` says when it was taken).
    pub memory: serde_json::Value,
}

/// Everything a handler needs, shared by the worker's tasks.
///
/// A worker has two runtimes: the background one (heartbeats, progress writes, the
/// broker connections' own tasks) and the lane thread's, which consumes and runs the
/// engine inline. Each has a `Ctx` with a Redis connection of its own; both share
/// the engine and the status.
#[derive(Clone)]
pub struct Ctx {
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// Redis, served by the runtime this `Ctx` is used on.
    pub store: Store,
    /// The background runtime, which stays responsive while the engine runs.
    pub background: tokio::runtime::Handle,
    /// Redis, served by the background runtime.
    pub background_store: Store,
    /// Publisher for dead letters and lane forwarding (its connections live on the
    /// background runtime).
    pub publisher: Arc<Publisher>,
    /// Names.
    pub topology: Topology,
    /// `degraded` or a model.
    pub lane: String,
    /// This worker.
    pub worker_id: String,
    /// Where videos go.
    pub results_dir: PathBuf,
    /// The engine, called inline on the lane thread (warm-up and maintenance use the
    /// blocking pool).
    pub engine: Arc<Mutex<Box<dyn Engine>>>,
    /// Heartbeat state.
    pub status: Arc<Mutex<Status>>,
    /// The run going unclaimed, for the late claim on the background runtime.
    pub claims: Arc<Claims>,
}

impl Ctx {
    /// The same worker, with `store` for Redis calls made on another runtime.
    pub fn with_store(&self, store: Store) -> Ctx {
        Ctx { store, ..self.clone() }
    }

    /// Updates the heartbeat state.
    pub fn set_state(&self, state: WorkerState) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = state;
        if state != WorkerState::Busy {
            s.last_active = Instant::now();
        }
    }

    fn is_degraded(&self) -> bool {
        self.lane == DEGRADED_LANE
    }
}

/// Handles one delivery and acks it. An error means Redis or the broker failed
/// before the outcome was recorded; the caller nacks with requeue.
pub async fn handle(ctx: &Ctx, channel: &Channel, delivery: &Delivery) -> Result<(), ProducerError> {
    let req = match warmlane_shared::decode_msgpack(&delivery.data, &ctx.settings) {
        Ok(req) => req,
        Err(failure) => {
            metrics::counter!(m::VALIDATION_REJECTIONS, m::TAG_CODE => failure.rejection.code.as_str(), m::TAG_REASON => failure.rejection.reason.clone()).increment(1);
            warmlane_producer::dead::dead_letter(
                &ctx.publisher,
                &ctx.store,
                &ctx.topology,
                delivery,
                &failure.rejection,
                failure.task_id.as_deref(),
                Some(&ctx.lane),
            )
            .await?;
            return ack(channel, delivery).await;
        }
    };
    if !ctx.is_degraded() && req.model != ctx.lane {
        return forward(ctx, channel, delivery, &req).await;
    }
    if ctx.is_degraded() {
        let enqueued = header_int(&delivery.properties, HEADER_ENQUEUED_MS)
            .map(|v| v as u64)
            .or(req.submitted_at_ms)
            .unwrap_or_else(now_ms);
        let waited = now_ms().saturating_sub(enqueued);
        if waited > ctx.settings.degraded.max_wait_ms {
            let rejection = Rejection::wait_timeout(waited, ctx.settings.degraded.max_wait_ms);
            let reply = Reply::coded(
                &req.task_id,
                ReplyStatus::Failed,
                Some(DEGRADED_LANE),
                &rejection,
                Timings { queued_ms: Some(queued_ms(&req)), inference_ms: None },
            );
            if ctx.store.finish(&reply, FinishWhen::NotTerminal).await? {
                metrics::counter!(m::WAIT_TIMEOUT_DROPS).increment(1);
                metrics::counter!(m::QUEUE_OVERLOADED, m::TAG_REASON => reason::WAIT_TIMEOUT).increment(1);
                tracing::warn!(task_id = %req.task_id, waited_ms = waited, "delivered past the degraded wait: queue_overloaded/wait_timeout");
            }
            return ack(channel, delivery).await;
        }
    }
    let started_at_ms = now_ms();
    // A first delivery on a warm lane starts at once and is claimed only if it runs
    // long (crate::claim); every other delivery is claimed before the engine runs.
    let unclaimed =
        !ctx.is_degraded() && claim::may_start_unclaimed(&ctx.settings, &req, delivery.redelivered, started_at_ms);
    let started = if unclaimed {
        Started::Attempt(1)
    } else {
        let by = StartedBy { redelivered: delivery.redelivered && !ctx.is_degraded(), started_at_ms };
        ctx.store.start_as(&req, &ctx.lane, &ctx.worker_id, by).await?
    };
    match started {
        Started::AlreadyFinished => {
            tracing::info!(task_id = %req.task_id, "redelivered task already has its reply; acking");
            return ack(channel, delivery).await;
        }
        Started::Attempt(n) if n > ctx.settings.lanes.max_attempts => {
            let rejection = Rejection::new(
                ErrorCode::InferenceFailed,
                reason::POISON,
                format!(
                    "delivered {n} times without finishing (limit {}); moved to the dead queue",
                    ctx.settings.lanes.max_attempts
                ),
            );
            warmlane_producer::dead::dead_letter(
                &ctx.publisher,
                &ctx.store,
                &ctx.topology,
                delivery,
                &rejection,
                Some(&req.task_id),
                Some(&ctx.lane),
            )
            .await?;
            return ack(channel, delivery).await;
        }
        Started::Attempt(_) => {}
    }
    let queued = queued_ms(&req);
    metrics::histogram!(m::QUEUE_WAIT_MS, m::TAG_LANE => ctx.lane.clone()).record(queued as f64);
    tracing::info!(task_id = %req.task_id, model = %req.model, lane = %ctx.lane, queued_ms = queued, "processing");
    ctx.set_state(WorkerState::Busy);
    if unclaimed {
        ctx.claims.arm(&req, started_at_ms);
    }
    let result = infer(ctx, &req).await;
    if unclaimed {
        ctx.claims.disarm();
    }
    ctx.set_state(WorkerState::Warm);
    let reply = match &result {
        Ok(out) => Reply::done(
            &req.task_id,
            &ctx.lane,
            ResultInfo {
                uri: file_uri(&out.path),
                frames: out.frames,
                width: out.width,
                height: out.height,
                bytes: out.bytes,
            },
            Timings { queued_ms: Some(queued), inference_ms: Some(out.inference_ms) },
        ),
        Err(f) => Reply::coded(
            &req.task_id,
            ReplyStatus::Failed,
            Some(&ctx.lane),
            &Rejection::new(f.code, f.code.as_str(), f.message.clone()),
            Timings { queued_ms: Some(queued), inference_ms: None },
        ),
    };
    if unclaimed {
        ctx.store.finish_first_delivery(&reply, &ctx.worker_id, started_at_ms).await?;
    } else {
        ctx.store.finish(&reply, FinishWhen::NotTerminal).await?;
    }
    let (outcome, code) = match &result {
        Ok(out) => {
            metrics::histogram!(m::INFERENCE_MS, m::TAG_MODEL => req.model.clone(), m::TAG_LANE => ctx.lane.clone())
                .record(out.inference_ms as f64);
            ("done", "none")
        }
        Err(f) => ("failed", f.code.as_str()),
    };
    metrics::counter!(m::TASKS_FINISHED, m::TAG_MODEL => req.model.clone(), m::TAG_LANE => ctx.lane.clone(), m::TAG_OUTCOME => outcome, m::TAG_CODE => code).increment(1);
    {
        let mut s = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
        s.tasks += 1;
    }
    tracing::info!(task_id = %req.task_id, model = %req.model, lane = %ctx.lane, outcome, code, "task finished");
    ack(channel, delivery).await
}

fn queued_ms(req: &ValidRequest) -> u64 {
    req.submitted_at_ms.map(|t| now_ms().saturating_sub(t)).unwrap_or(0)
}

fn file_uri(path: &std::path::Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file://{}", abs.display())
}

/// Acks on the channel itself, from the calling thread: lapin's `Acker` would route
/// the ack through a task on the connection's (background) runtime, one more
/// thread wake-up per task.
async fn ack(channel: &Channel, delivery: &Delivery) -> Result<(), ProducerError> {
    channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
    Ok(())
}

/// Returns a delivery to its queue after an infrastructure failure.
pub async fn requeue(delivery: &Delivery) {
    if let Err(e) = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await {
        tracing::warn!(error = %e, "nack failed; the broker redelivers after the channel closes");
    }
}

/// A lane worker got a request for another model (a publisher used the wrong
/// routing key): send it to the right lane, or to the dead queue when there is none.
async fn forward(ctx: &Ctx, channel: &Channel, delivery: &Delivery, req: &ValidRequest) -> Result<(), ProducerError> {
    let props = message_properties(&req.task_id, Default::default());
    let answer = ctx.publisher.publish(&ctx.topology.lanes_exchange(), &req.model, &delivery.data, props).await?;
    if answer != Published::Acked {
        let rejection = Rejection::invalid(
            "model",
            format!("model `{}` was published to lane `{}` and has no lane of its own", req.model, ctx.lane),
        );
        warmlane_producer::dead::dead_letter(
            &ctx.publisher,
            &ctx.store,
            &ctx.topology,
            delivery,
            &rejection,
            Some(&req.task_id),
            Some(&ctx.lane),
        )
        .await?;
    } else {
        tracing::info!(task_id = %req.task_id, from = %ctx.lane, to = %req.model, "forwarded a request to its model's lane");
    }
    ack(channel, delivery).await
}

/// Prepares the model (counting a load and a switch) and generates, inline on the
/// lane thread: no thread hop per task. What must go on while the engine runs goes
/// to the background runtime: a load is recorded there as soon as it ends, and
/// progress is written there (a writer is started at the first step reported).
async fn infer(ctx: &Ctx, req: &ValidRequest) -> Result<Output, EngineFailure> {
    let previous = ctx.status.lock().unwrap_or_else(|p| p.into_inner()).model.clone();
    let mut load_record = None;
    let mut progress_writer: Option<ProgressWriter> = None;
    let result = {
        let mut engine = lock(&ctx.engine);
        let mut run = || {
            if let Some(load) = engine.prepare(&req.model)? {
                let record = LoadRecord {
                    status: ctx.status.clone(),
                    store: ctx.background_store.clone(),
                    lane: ctx.lane.clone(),
                    model: req.model.clone(),
                    previous: previous.clone(),
                    load,
                };
                load_record = Some(ctx.background.spawn(record.write()));
            }
            // The last step is not written: the terminal reply follows at once.
            let mut progress = |step: u32, steps: u32| {
                if step >= steps {
                    return;
                }
                match &progress_writer {
                    Some((tx, _)) => {
                        let _ = tx.send((step, steps));
                    }
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel((step, steps));
                        let writer =
                            ctx.background.spawn(write_progress(ctx.background_store.clone(), req.task_id.clone(), rx));
                        progress_writer = Some((tx, writer));
                    }
                }
            };
            engine.generate(req, &ctx.lane, &ctx.results_dir, &mut progress)
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut run)).unwrap_or_else(|panic| Err(panicked(panic)))
    };
    // A progress write still in flight is moot once the reply is written (the script
    // only touches a processing task), so it is not waited for.
    if let Some((_, writer)) = progress_writer {
        writer.abort();
    }
    if let Some(record) = load_record {
        let _ = record.await;
    }
    result
}

/// The latest `(step, steps)` and the task on the background runtime writing it.
type ProgressWriter = (tokio::sync::watch::Sender<(u32, u32)>, tokio::task::JoinHandle<()>);

async fn write_progress(store: Store, task_id: String, mut rx: tokio::sync::watch::Receiver<(u32, u32)>) {
    loop {
        let (step, steps) = *rx.borrow_and_update();
        if let Err(e) = store.progress(&task_id, step, steps).await {
            tracing::debug!(error = %e, "progress update failed");
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A model load, recorded on the background runtime while the generation runs.
struct LoadRecord {
    status: Arc<Mutex<Status>>,
    store: Store,
    lane: String,
    model: String,
    previous: Option<String>,
    load: Duration,
}

impl LoadRecord {
    async fn write(self) {
        let LoadRecord { status, store, lane, model, previous, load } = self;
        let ms = note_load(&status, &lane, &model, load);
        if previous.as_deref().is_some_and(|p| p != model) {
            metrics::histogram!(m::MODEL_SWITCH_MS, m::TAG_LANE => lane.clone(), m::TAG_MODEL => model.clone())
                .record(ms as f64);
        }
        if let Err(e) = store.count_load(&lane).await {
            tracing::warn!(error = %e, "could not count the load");
        }
        tracing::info!(lane = %lane, model, from = previous.as_deref().unwrap_or("-"), load_ms = ms, "model loaded (cold start)");
    }
}

/// Records a model load in the heartbeat state and the cold-start metrics; returns
/// its duration in ms. Counting it in Redis is the caller's (whose errors differ).
pub fn note_load(status: &Mutex<Status>, lane: &str, model: &str, load: Duration) -> u64 {
    let ms = load.as_millis() as u64;
    {
        let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
        s.loads += 1;
        s.model = Some(model.to_string());
    }
    metrics::counter!(m::COLD_STARTS, m::TAG_LANE => lane.to_string(), m::TAG_MODEL => model.to_string()).increment(1);
    metrics::histogram!(m::WARMUP_MS, m::TAG_LANE => lane.to_string(), m::TAG_MODEL => model.to_string())
        .record(ms as f64);
    ms
}

/// Locks the engine; a panic in an earlier call does not make it unusable.
pub fn lock(engine: &Mutex<Box<dyn Engine>>) -> std::sync::MutexGuard<'_, Box<dyn Engine>> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> EngineFailure {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    EngineFailure { code: ErrorCode::InferenceFailed, message: format!("the engine panicked: {what}") }
}
