//! One delivery, from bytes to exactly one terminal reply and an ack.
//!
//! [`plan`] decides (pure, table-tested); [`handle`] performs the decision: a claim
//! in Redis when the plan asks for one, then the action, then the ack. The ack
//! comes only after the outcome is recorded, so a crash before it means a
//! redelivery, never a lost request; an error means Redis or the broker failed
//! before that, and the caller requeues the delivery.

pub mod plan;

use crate::ctx::Ctx;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use plan::{Action, DeadWhy, Facts, RunEnd, Step};
use warmlane_infra::amqp::message_properties;
use warmlane_infra::dead_letter::{dead_letter, DeadLetter};
use warmlane_infra::store::{FinishWhen, Finished};
use warmlane_infra::{InfraError, Published, Report};
use warmlane_shared::error::reason;
use warmlane_shared::metrics as m;
use warmlane_shared::reply::field;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::{now_ms, ErrorCode, Rejection, Reply, ReplyStatus, Timings, ValidRequest, WorkerState};

/// Handles one delivery and acks it.
pub async fn handle(ctx: &Ctx, channel: &Channel, delivery: &Delivery) -> Result<(), InfraError> {
    let mut facts = Facts::read(delivery, &ctx.settings);
    facts.cancels_heard = ctx.cancels.heard();
    let action = match plan::plan(&facts, &ctx.lane, &ctx.settings, now_ms()) {
        Step::Do(action) => action,
        Step::Claim { req, by } => {
            let started = ctx.store.start_as(req, &ctx.lane, &ctx.worker_id, by).await?;
            plan::after_claim(req, started, &ctx.settings, now_ms())
        }
    };
    perform(ctx, delivery, action).await?;
    // On the channel itself, from this thread: lapin's `Acker` would route the ack
    // through a task on the connection's (background) runtime, a wake-up per task.
    channel
        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
        .await
        .map_err(InfraError::broker("acking a delivery"))
}

async fn perform(ctx: &Ctx, delivery: &Delivery, action: Action<'_>) -> Result<(), InfraError> {
    match action {
        Action::DeadLetter { rejection, reply_to, why } => {
            if why == DeadWhy::Invalid {
                metrics::counter!(m::VALIDATION_REJECTIONS, m::TAG_CODE => rejection.code.as_str(), m::TAG_REASON => rejection.reason.clone()).increment(1);
            }
            // A refused message never ends a task a worker runs; poison ends its own claimed task.
            let when = if why == DeadWhy::Poison { FinishWhen::NotTerminal } else { FinishWhen::Unstarted };
            let answer = reply_to.as_deref().map(|id| (id, when));
            let letter = DeadLetter { rejection: &rejection, answer, lane: Some(&ctx.lane) };
            dead_letter(&ctx.publisher, &ctx.store, &ctx.topology, delivery, letter).await
        }
        Action::Forward(req) => forward(ctx, delivery, req).await,
        Action::WaitTimeout { req, waited_ms } => {
            let rejection = Rejection::wait_timeout(waited_ms, ctx.settings.degraded.max_wait_ms);
            let timings = Timings { queued_ms: Some(queued_ms(req)), inference_ms: None };
            let reply = Reply::coded(&req.task_id, ReplyStatus::Failed, Some(DEGRADED_LANE), &rejection, timings);
            if ctx.store.finish(&reply, FinishWhen::NotTerminal).await? {
                metrics::counter!(m::WAIT_TIMEOUT_DROPS).increment(1);
                metrics::counter!(m::QUEUE_OVERLOADED, m::TAG_REASON => reason::WAIT_TIMEOUT).increment(1);
                tracing::warn!(task_id = %req.task_id, waited_ms, "delivered past the degraded wait: queue_overloaded/wait_timeout");
            }
            Ok(())
        }
        Action::AlreadyAnswered(req) => {
            tracing::info!(task_id = %req.task_id, "redelivered task already has its reply; acking");
            Ok(())
        }
        Action::Run { req, unclaimed, started_at_ms } => run(ctx, req, unclaimed, started_at_ms).await,
    }
}

/// Runs the engine and writes the terminal reply.
async fn run(ctx: &Ctx, req: &ValidRequest, unclaimed: bool, started_at_ms: u64) -> Result<(), InfraError> {
    if ctx.cancels.contains(&req.task_id) {
        // Cancelled while queued: the canceller answered it (this write is a no-op
        // then); it never runs.
        let reply = warmlane_infra::store::cancelled_reply(&req.task_id, Some(&ctx.lane), false);
        ctx.store.finish(&reply, FinishWhen::NotTerminal).await?;
        tracing::info!(task_id = %req.task_id, lane = %ctx.lane, "cancelled while queued; not run");
        return Ok(());
    }
    let queued = queued_ms(req);
    metrics::histogram!(m::QUEUE_WAIT_MS, m::TAG_LANE => ctx.lane.clone()).record(queued as f64);
    tracing::info!(task_id = %req.task_id, model = %req.model, lane = %ctx.lane, queued_ms = queued, "processing");
    ctx.set_state(WorkerState::Busy);
    if unclaimed {
        ctx.claims.arm(req, started_at_ms);
    }
    let result = crate::infer::infer(ctx, req).await;
    if unclaimed {
        ctx.claims.disarm();
    }
    let stored = match &result {
        Ok(out) => Some(crate::results::keep(ctx, &req.task_id, out).await),
        Err(_) => None,
    };
    ctx.set_state(WorkerState::Warm);
    let end = match (&result, &stored) {
        (Err(f), _) => RunEnd::Failed(f),
        (Ok(out), Some(Ok(stored))) => RunEnd::Stored(out, stored),
        (Ok(out), _) => RunEnd::NotStored(out),
    };
    let reply = plan::run_reply(req, &ctx.lane, end, queued);
    let first = unclaimed.then_some((ctx.worker_id.as_str(), started_at_ms));
    let written = ctx.store.finish_run(&reply, first).await?;
    let (outcome, code) = settle(ctx, req, end, written).await;
    if let Ok(out) = &result {
        metrics::histogram!(m::INFERENCE_MS, m::TAG_MODEL => req.model.clone(), m::TAG_LANE => ctx.lane.clone())
            .record(out.inference_ms as f64);
    }
    metrics::counter!(m::TASKS_FINISHED, m::TAG_MODEL => req.model.clone(), m::TAG_LANE => ctx.lane.clone(), m::TAG_OUTCOME => outcome, m::TAG_CODE => code).increment(1);
    ctx.lock_status().tasks += 1;
    tracing::info!(task_id = %req.task_id, model = %req.model, lane = %ctx.lane, outcome, code, "task finished");
    Ok(())
}

/// What became of a run once its reply was written or refused: the outcome and code
/// the task ended with, a running cancel counted, and the files of a video nobody
/// will fetch (the task ended `cancelled`) removed from the store.
async fn settle(ctx: &Ctx, req: &ValidRequest, end: RunEnd<'_>, written: Finished) -> (&'static str, &'static str) {
    let cancelled = match written {
        Finished::Written => matches!(end, RunEnd::Failed(f) if f.code == ErrorCode::Cancelled),
        Finished::CancelWon => true,
        // Someone else answered: a cancel of the task while it read `pending` (counted
        // by the canceller), or the backstop. Only a cancelled task's files go.
        Finished::NotWritten => {
            let code = ctx.store.task(&req.task_id).await.ok().and_then(|mut h| h.remove(field::CODE));
            if let (RunEnd::Stored(out, _), Some("cancelled")) = (end, code.as_deref()) {
                crate::results::discard(ctx, out).await;
            }
            tracing::info!(task_id = %req.task_id, code = code.as_deref().unwrap_or("-"), "the task was answered while it ran; its result is discarded");
            false
        }
    };
    if cancelled {
        metrics::counter!(m::TASKS_CANCELLED, m::TAG_STAGE => "running").increment(1);
        if let RunEnd::Stored(out, _) = end {
            crate::results::discard(ctx, out).await;
        }
        return ("failed", ErrorCode::Cancelled.as_str());
    }
    match end {
        RunEnd::Stored(..) => ("done", "none"),
        RunEnd::Failed(f) => ("failed", f.code.as_str()),
        RunEnd::NotStored(_) => ("failed", ErrorCode::InferenceFailed.as_str()),
    }
}

fn queued_ms(req: &ValidRequest) -> u64 {
    req.submitted_at_ms.map(|t| now_ms().saturating_sub(t)).unwrap_or(0)
}

/// Returns a delivery to its queue after an infrastructure failure.
pub async fn requeue(delivery: &Delivery) {
    if let Err(e) = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await {
        tracing::warn!(error = %Report(&e), "nack failed; the broker redelivers after the channel closes");
    }
}

/// A lane worker got a request for another model (a publisher used the wrong
/// routing key): send it to the right lane, or to the dead queue when there is none.
async fn forward(ctx: &Ctx, delivery: &Delivery, req: &ValidRequest) -> Result<(), InfraError> {
    let props = message_properties(&req.task_id, Default::default());
    let answer = ctx.publisher.publish(&ctx.topology.lanes_exchange(), &req.model, &delivery.data, props).await?;
    if answer == Published::Acked {
        tracing::info!(task_id = %req.task_id, from = %ctx.lane, to = %req.model, "forwarded a request to its model's lane");
        return Ok(());
    }
    let rejection = Rejection::invalid(
        "model",
        format!("model `{}` was published to lane `{}` and has no lane of its own", req.model, ctx.lane),
    );
    let answer = Some((req.task_id.as_str(), FinishWhen::Unstarted));
    let letter = DeadLetter { rejection: &rejection, answer, lane: Some(&ctx.lane) };
    dead_letter(&ctx.publisher, &ctx.store, &ctx.topology, delivery, letter).await
}
