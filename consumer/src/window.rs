//! The degraded worker's consume loop: it holds up to `degraded.window` deliveries
//! unacked (the channel's prefetch) and lets [`crate::schedule::pick`] choose which
//! to handle next, so requests for the resident model go first and switches are
//! fewer (issue #16). A window of 1 is FIFO, as before.
//!
//! Each delivery goes through [`handle::handle`] exactly once, as in the lane loop:
//! the same claim, `wait_timeout`, dead-letter and reply paths, then its ack. The
//! estimates the scheduler needs are measured here: the wall time of each run, less
//! the load the run recorded ([`crate::ctx::Status::last_load_ms`]), which is the
//! switch. On shutdown or a lost stream, the deliveries still held go back to the
//! queue (nack with requeue; a closed channel requeues them too).

use crate::ctx::{lock, Ctx};
use crate::handle::plan::Facts;
use crate::handle::{self};
use crate::schedule::{self, Estimates, Held, Pick};
use crate::session::{handle_or_requeue, Served, Session};
use crate::upkeep;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_infra::backoff::Backoff;
use warmlane_infra::Report;
use warmlane_shared::now_ms;
use warmlane_shared::routing::degraded_waited_ms;

/// Serves the degraded queue through a window of held deliveries until shutdown or a
/// broken stream.
pub(crate) async fn serve(
    ctx: &Arc<Ctx>,
    idle_evict: Option<Duration>,
    session: Session,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    backoff: &mut Backoff,
) -> Served {
    let (_conn, channel, mut deliveries) = session;
    let window = ctx.settings.degraded.window.max(1) as usize;
    let mut held: Vec<Delivery> = Vec::with_capacity(window);
    let mut estimates = Estimates::default();
    let ended = loop {
        if (&mut *shutdown).now_or_never().is_some() {
            let _ = channel.basic_cancel(ctx.worker_id.as_str().into(), BasicCancelOptions::default()).await;
            break Served::Stopped;
        }
        // Take what the broker has delivered already, without waiting for more.
        let mut lost = None;
        while held.len() < window {
            match deliveries.next().now_or_never() {
                None => break,
                Some(next) => match received(next) {
                    Ok(delivery) => held.push(delivery),
                    Err(served) => {
                        lost = Some(served);
                        break;
                    }
                },
            }
        }
        if let Some(served) = lost {
            break served;
        }
        if held.is_empty() {
            let idle_check = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = &mut *shutdown => {
                    let _ = channel.basic_cancel(ctx.worker_id.as_str().into(), BasicCancelOptions::default()).await;
                    break Served::Stopped;
                }
                next = deliveries.next() => match received(next) {
                    Ok(delivery) => held.push(delivery),
                    Err(served) => break served,
                },
                _ = idle_check => {
                    upkeep::evict_if_idle(ctx, idle_evict);
                    upkeep::rewarm_on_demand(ctx).await;
                    upkeep::maintain_engine(ctx).await;
                }
            }
            continue;
        }
        let (pick, model) = choose(ctx, &held, &estimates);
        match pick {
            Pick::Idle => {}
            Pick::Answer(indices) => {
                let mut answered: Vec<Delivery> = indices.into_iter().rev().map(|i| held.remove(i)).collect();
                answered.reverse();
                for delivery in &answered {
                    handle_or_requeue(ctx, &channel, delivery, backoff).await;
                }
            }
            Pick::Run(i) => {
                let delivery = held.remove(i);
                let before = run_counts(ctx);
                let started = Instant::now();
                handle_or_requeue(ctx, &channel, &delivery, backoff).await;
                if let Some(model) = model {
                    observe(ctx, &mut estimates, &model, before, started.elapsed());
                }
            }
        }
    };
    for delivery in &held {
        handle::requeue(delivery).await;
    }
    ended
}

/// A delivery from the stream, or how the session ends.
fn received(next: Option<Result<Delivery, lapin::Error>>) -> Result<Delivery, Served> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(e)) => {
            tracing::warn!(error = %Report(&e), "delivery stream failed; reconnecting");
            Err(Served::Lost)
        }
        None => {
            tracing::warn!("delivery stream ended; reconnecting");
            Err(Served::Lost)
        }
    }
}

/// Asks the scheduler; returns its pick and, for a run, the model it asks for.
fn choose(ctx: &Ctx, held: &[Delivery], estimates: &Estimates) -> (Pick, Option<String>) {
    let now = now_ms();
    let facts: Vec<Facts<'_>> = held.iter().map(|d| Facts::read(d, &ctx.settings)).collect();
    let view: Vec<Held<'_>> = facts
        .iter()
        .map(|f| {
            let req = f.request.as_ref().ok();
            let waited = degraded_waited_ms(f.enqueued_ms, req.and_then(|r| r.submitted_at_ms), now);
            Held { model: req.map(|r| r.model.as_str()), since_ms: now - waited }
        })
        .collect();
    let resident = lock(&ctx.engine).resident();
    let pick = schedule::pick(&view, resident.as_deref(), now, ctx.settings.degraded.max_wait_ms, estimates);
    let model = match pick {
        Pick::Run(i) => view[i].model.map(str::to_string),
        _ => None,
    };
    if let Pick::Run(i) = pick {
        tracing::debug!(pick = i, held = view.len(), resident = ?resident, model = ?model, "window pick");
    }
    (pick, model)
}

/// `(loads, tasks)` of the worker so far.
fn run_counts(ctx: &Ctx) -> (u64, u64) {
    let s = ctx.lock_status();
    (s.loads, s.tasks)
}

/// Updates the estimates after a handled delivery that ran the engine.
fn observe(ctx: &Ctx, estimates: &mut Estimates, model: &str, before: (u64, u64), took: Duration) {
    let (loads, tasks, last_load_ms) = {
        let s = ctx.lock_status();
        (s.loads, s.tasks, s.last_load_ms)
    };
    if tasks == before.1 {
        return; // answered without a run (expired meanwhile, already answered, poison)
    }
    let mut ms = took.as_millis() as u64;
    if loads > before.0 {
        let load = last_load_ms.unwrap_or(0);
        estimates.observe_switch(model, load);
        ms = ms.saturating_sub(load);
    }
    estimates.observe_inference(model, ms);
}
