//! The reaper: nothing admitted ends without a terminal reply.
//!
//! Two jobs. (1) It consumes `<prefix>.expired`, where the broker dead-letters
//! messages whose TTL ran out: a request that waited past the lane wait on its
//! dedicated lane moves to the degraded queue (FR-021c); one that waited past the
//! degraded wait is answered `queue_overloaded`/`wait_timeout`. (2) As a backstop
//! it sweeps the deadline index and answers `wait_timeout` for any task still
//! `pending` past its deadline, whatever happened to its message.
//!
//! Run it inside `warmlane-producer serve` or alone (`warmlane-producer reaper`);
//! several reapers may run, since every answer is written exactly once.

use crate::error::ProducerError;
use crate::producer::Producer;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use warmlane_infra::amqp::{self, header_str};
use warmlane_infra::backoff::Backoff;
use warmlane_infra::dead_letter::{dead_letter, DeadLetter};
use warmlane_infra::store::FinishWhen;
use warmlane_infra::{Endpoint, InfraError, Report};
use warmlane_shared::error::reason;
use warmlane_shared::metrics as m;
use warmlane_shared::reply::field;
use warmlane_shared::routing::degraded_waited_ms;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::topology::{DEATH_DELIVERY_LIMIT, HEADER_FIRST_DEATH_QUEUE, HEADER_FIRST_DEATH_REASON};
use warmlane_shared::{now_ms, Rejection, Reply, ReplyStatus, TaskStatus, Timings};

/// How often the backstop sweeps the deadline index.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Runs both jobs until `shutdown` resolves; broker outages are retried with backoff.
pub async fn run(
    producer: Arc<Producer>,
    amqp: Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), InfraError> {
    let sweeper = sweep_forever(producer.clone());
    let sampler = crate::metrics_sampler::run(producer.clone(), crate::metrics_sampler::DEFAULT_EVERY);
    let consumer = consume_forever(producer, amqp);
    tokio::select! {
        _ = shutdown => Ok(()),
        r = sweeper => r,
        r = consumer => r,
        () = sampler => Ok(()),
    }
}

async fn sweep_forever(producer: Arc<Producer>) -> Result<(), InfraError> {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_once(&producer).await {
            tracing::warn!(error = %Report(&e), "backstop sweep failed; retrying");
        }
    }
}

/// One pass of the backstop: answers every overdue pending task. Returns how many it answered.
pub async fn sweep_once(producer: &Producer) -> Result<usize, InfraError> {
    let store = producer.store();
    let mut answered = 0;
    for task_id in store.overdue(now_ms(), 256).await? {
        let task = store.task(&task_id).await?;
        let submitted: u64 = task.get("submitted_at_ms").and_then(|s| s.parse().ok()).unwrap_or(0);
        let lane = task.get("lane").cloned();
        let waited = now_ms().saturating_sub(submitted);
        let rejection = Rejection::wait_timeout(waited, producer.settings().degraded.max_wait_ms);
        let reply = Reply::coded(
            &task_id,
            ReplyStatus::Failed,
            lane.as_deref(),
            &rejection,
            Timings { queued_ms: Some(waited), inference_ms: None },
        );
        if store.finish(&reply, FinishWhen::Pending).await? {
            answered += 1;
            count_wait_timeout();
            tracing::warn!(task_id = %task_id, waited_ms = waited, "backstop answered an overdue pending task");
        } else {
            store.forget_deadline(&task_id).await?;
        }
    }
    Ok(answered)
}

fn count_wait_timeout() {
    metrics::counter!(m::WAIT_TIMEOUT_DROPS).increment(1);
    metrics::counter!(m::QUEUE_OVERLOADED, m::TAG_REASON => reason::WAIT_TIMEOUT).increment(1);
}

async fn consume_forever(producer: Arc<Producer>, amqp: Endpoint) -> Result<(), InfraError> {
    let mut backoff = Backoff::reconnect();
    loop {
        match consume_expired(&producer, &amqp, &mut backoff).await {
            Ok(()) => tracing::warn!("expired-queue consumer stopped; reconnecting"),
            Err(e) => tracing::warn!(error = %Report(&e), "expired-queue consumer failed; reconnecting"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn consume_expired(producer: &Producer, endpoint: &Endpoint, backoff: &mut Backoff) -> Result<(), InfraError> {
    let conn = amqp::connect(endpoint, Duration::from_secs(5)).await?;
    let channel = conn.create_channel().await.map_err(InfraError::broker("opening a channel"))?;
    amqp::declare(&channel, &producer.topology().declarations(producer.settings())).await?;
    channel.basic_qos(32, BasicQosOptions::default()).await.map_err(InfraError::broker("setting the prefetch"))?;
    let queue = producer.topology().expired_queue();
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "warmlane-reaper".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(InfraError::broker(format!("consuming {queue}")))?;
    backoff.reset();
    tracing::info!(queue = %queue, "reaper consuming expired messages");
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery.map_err(InfraError::broker("receiving an expired message"))?;
        // On an error it stays unacked: the broker redelivers it after the reconnect.
        handle_expired(producer, &delivery).await?;
        delivery.ack(BasicAckOptions::default()).await.map_err(InfraError::broker("acking an expired message"))?;
    }
    Ok(())
}

/// Handles one dead-lettered message: lane expiry moves degraded, degraded expiry is answered.
pub async fn handle_expired(producer: &Producer, delivery: &lapin::message::Delivery) -> Result<(), InfraError> {
    let props = &delivery.properties;
    let source = header_str(props, HEADER_FIRST_DEATH_QUEUE).unwrap_or_default();
    let lane = producer.topology().lane_of_queue(&source);
    let req = match warmlane_shared::decode_msgpack(&delivery.data, producer.settings()) {
        Ok(req) => req,
        Err(failure) => {
            // Never validated by a worker: it expired before one saw it. Answered as a
            // worker would answer it (the body's task id, else the message id).
            let message_id = props.message_id().as_ref().map(|id| id.as_str().to_string());
            let reply_to = failure.reply_to(message_id.as_deref());
            let answer = reply_to.as_deref().map(|id| (id, FinishWhen::Unstarted));
            let letter = DeadLetter { rejection: &failure.rejection, answer, lane: lane.as_deref() };
            return dead_letter(producer.publisher(), producer.store(), producer.topology(), delivery, letter).await;
        }
    };
    if header_str(props, HEADER_FIRST_DEATH_REASON).as_deref() == Some(DEATH_DELIVERY_LIMIT) {
        return poisoned(producer, delivery, &req, lane.as_deref()).await;
    }
    match lane.as_deref() {
        Some(lane) if lane != DEGRADED_LANE => {
            // A task answered while it waited (cancelled) takes no degraded slot.
            let status = producer.store().task(&req.task_id).await?.remove(field::STATUS);
            if status.as_deref().and_then(TaskStatus::parse).is_some_and(TaskStatus::is_terminal) {
                tracing::info!(task_id = %req.task_id, "lane wait ran out on a task already answered; dropped");
                return Ok(());
            }
            tracing::info!(task_id = %req.task_id, model = %req.model, "lane wait ran out; moving to the degraded queue");
            match producer.move_to_degraded(&req).await {
                Ok(_) | Err(ProducerError::Rejected(_)) => Ok(()),
                Err(ProducerError::Infra(e)) => Err(e),
            }
        }
        _ => {
            let now = now_ms();
            let waited = degraded_waited_ms(amqp::enqueued_ms(props), req.submitted_at_ms, now);
            let rejection = Rejection::wait_timeout(waited, producer.settings().degraded.max_wait_ms);
            let queued = req.submitted_at_ms.map_or(waited, |at| now.saturating_sub(at));
            let reply = Reply::coded(
                &req.task_id,
                ReplyStatus::Failed,
                Some(DEGRADED_LANE),
                &rejection,
                Timings { queued_ms: Some(queued), inference_ms: None },
            );
            if producer.store().finish(&reply, FinishWhen::NotTerminal).await? {
                count_wait_timeout();
                tracing::warn!(task_id = %req.task_id, waited_ms = waited, "degraded wait ran out: queue_overloaded/wait_timeout");
            }
            Ok(())
        }
    }
}

/// A quorum queue dropped the message at its `x-delivery-limit` (`max_attempts`
/// returns): poison, as a worker would have judged it on the next delivery. It goes
/// to the dead queue (kept for replay) and its task is answered
/// `inference_failed`/`poison`; a task already answered (a worker dead-lettered it,
/// then lost its ack) is dropped, as a worker drops its redelivery.
async fn poisoned(
    producer: &Producer,
    delivery: &lapin::message::Delivery,
    req: &warmlane_shared::ValidRequest,
    lane: Option<&str>,
) -> Result<(), InfraError> {
    let status = producer.store().task(&req.task_id).await?.remove(field::STATUS);
    if status.as_deref().and_then(TaskStatus::parse).is_some_and(TaskStatus::is_terminal) {
        // A worker answered it (and dead-lettered it) before its ack was lost.
        tracing::info!(task_id = %req.task_id, "delivery limit reached by a task already answered; dropped");
        return Ok(());
    }
    let limit = producer.settings().lanes.max_attempts;
    let rejection = Rejection::new(
        warmlane_shared::ErrorCode::InferenceFailed,
        reason::POISON,
        format!(
            "delivered more than {limit} times without finishing (the queue's delivery limit); moved to the dead queue"
        ),
    );
    let answer = Some((req.task_id.as_str(), FinishWhen::NotTerminal));
    let letter = DeadLetter { rejection: &rejection, answer, lane };
    dead_letter(producer.publisher(), producer.store(), producer.topology(), delivery, letter).await
}
