//! The engine's run of one request, inline on the lane thread, with what must go on
//! meanwhile handed to the background runtime: the load record (as soon as a load
//! ends) and progress writes (from the first step reported). A panic in the engine
//! is caught and answered `inference_failed`. A cancel stops the run after its
//! current denoising step (`crate::cancel`).

use crate::ctx::{lock, Ctx, Status};
use crate::engine::{EngineFailure, Output};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warmlane_infra::{Report, Store};
use warmlane_shared::metrics as m;
use warmlane_shared::{ErrorCode, ValidRequest};

/// Prepares the model (counting a load and a switch) and generates, inline on the
/// lane thread: no thread hop per task. What must go on while the engine runs goes
/// to the background runtime: a load is recorded there as soon as it ends, and
/// progress is written there (a writer is started at the first step reported).
pub async fn infer(ctx: &Ctx, req: &ValidRequest) -> Result<Output, EngineFailure> {
    let previous = ctx.lock_status().model.clone();
    let mut load_record = None;
    let mut progress_writer: Option<ProgressWriter> = None;
    let stop = Arc::new(AtomicBool::new(false));
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
            // A cancel heard on the channel, or seen by a progress write, stops the run
            // after this step. The last step is written too: decoding and encoding the
            // video follow it, which at real sizes takes seconds.
            let mut progress = |step: u32, steps: u32| {
                if ctx.cancels.contains(&req.task_id) || stop.load(Ordering::Relaxed) {
                    return ControlFlow::Break(());
                }
                match &progress_writer {
                    Some((tx, _)) => {
                        let _ = tx.send((step, steps));
                    }
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel((step, steps));
                        let writer = ctx.background.spawn(write_progress(
                            ctx.background_store.clone(),
                            req.task_id.clone(),
                            rx,
                            stop.clone(),
                        ));
                        progress_writer = Some((tx, writer));
                    }
                }
                ControlFlow::Continue(())
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

/// Writes the latest step until the run ends; raises `stop` when the store says the
/// task was cancelled or already answered.
async fn write_progress(
    store: Store,
    task_id: String,
    mut rx: tokio::sync::watch::Receiver<(u32, u32)>,
    stop: Arc<AtomicBool>,
) {
    loop {
        let (step, steps) = *rx.borrow_and_update();
        match store.progress(&task_id, step, steps).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(task_id, step, "the task was cancelled or answered meanwhile; stopping its run");
                stop.store(true, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %Report(&e), "progress update failed"),
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
            tracing::warn!(error = %Report(&e), "could not count the load");
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
        s.last_load_ms = Some(ms);
        s.model = Some(model.to_string());
    }
    metrics::counter!(m::COLD_STARTS, m::TAG_LANE => lane.to_string(), m::TAG_MODEL => model.to_string()).increment(1);
    metrics::histogram!(m::WARMUP_MS, m::TAG_LANE => lane.to_string(), m::TAG_MODEL => model.to_string())
        .record(ms as f64);
    ms
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> EngineFailure {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    EngineFailure { code: ErrorCode::InferenceFailed, message: format!("the engine panicked: {what}") }
}
