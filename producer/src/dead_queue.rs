//! Inspecting and replaying `<prefix>.dead`: `warmlane-producer dead list|replay`.
//!
//! Both commands read with `basic.get` and manual acks on one channel of their
//! own. A message that is not acked stays unacknowledged on that channel, so the
//! next `basic.get` returns the *next* message, never the same one again; closing
//! the channel at the end hands every unacked message back to the queue. `list`
//! therefore never removes anything, and `replay` removes a message only after its
//! new publish was confirmed by the broker.
//!
//! Replay sends the body through [`Producer::submit_msgpack`], the same validation
//! and routing as a new request: a body that is still invalid stays dead. The dead
//! letter's task already had its terminal `failed` reply, so replay reopens it
//! under the same task id (the old hash and any unread reply are deleted) and the
//! client sees it go `pending` again; a task that is pending, processing or done is
//! left alone (its message stays dead and is reported as skipped).

use crate::error::ProducerError;
use crate::producer::Producer;
use clap::Subcommand;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::Channel;
use serde::Serialize;
use warmlane_infra::amqp::header_str;
use warmlane_infra::{InfraError, Report};
use warmlane_shared::topology::{HEADER_ERROR_CODE, HEADER_ERROR_REASON, HEADER_SOURCE_QUEUE};

/// `warmlane-producer dead ...`
#[derive(Debug, Clone, Subcommand)]
pub enum DeadCommand {
    /// List messages in the dead queue (oldest first) without removing them.
    List {
        /// How many messages to show at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Republish dead messages through validation and routing; each is removed from
    /// the dead queue only after its new publish is confirmed. Invalid ones stay dead.
    Replay {
        /// How many messages to look at at most (oldest first).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Replay only the message of this task; the others are left in place.
        #[arg(long)]
        task_id: Option<String>,
    },
}

/// One dead message as `dead list` prints it (one JSON object per line).
/// The body is summarised, never printed: it holds the user's prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadMessage {
    /// `message_id` (the task id when one was known).
    pub message_id: Option<String>,
    /// Task id decoded from the body, when the body is a map with a valid one.
    pub task_id: Option<String>,
    /// Model named in the body, when readable.
    pub model: Option<String>,
    /// `x-warmlane-error-code`.
    pub error_code: Option<String>,
    /// `x-warmlane-error-reason`.
    pub error_reason: Option<String>,
    /// `x-warmlane-source-queue`.
    pub source_queue: Option<String>,
    /// Publish time, unix seconds, when set.
    pub timestamp_s: Option<u64>,
    /// Whether the broker delivered it before (e.g. an earlier `dead list`).
    pub redelivered: bool,
    /// Body size.
    pub bytes: usize,
}

impl DeadMessage {
    /// Summarises a delivery from the dead queue.
    pub fn from_delivery(delivery: &Delivery) -> DeadMessage {
        let props = &delivery.properties;
        let fields = warmlane_shared::request::msgpack_fields(&delivery.data).ok();
        let model = fields.as_ref().and_then(|f| match f.get("model") {
            Some(warmlane_shared::request::Field::Str(s)) => Some(s.clone()),
            _ => None,
        });
        DeadMessage {
            message_id: props.message_id().as_ref().map(|s| s.as_str().to_string()),
            task_id: fields.as_ref().and_then(warmlane_shared::request::recover_task_id),
            model,
            error_code: header_str(props, HEADER_ERROR_CODE),
            error_reason: header_str(props, HEADER_ERROR_REASON),
            source_queue: header_str(props, HEADER_SOURCE_QUEUE),
            timestamp_s: *props.timestamp(),
            redelivered: delivery.redelivered,
            bytes: delivery.data.len(),
        }
    }

    /// The task this message belongs to: the body's id, else the `message_id`.
    pub fn task(&self) -> Option<&str> {
        self.task_id.as_deref().or(self.message_id.as_deref().filter(|s| !s.is_empty()))
    }
}

/// What replay does with a dead message, given its task's status in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayPlan {
    /// Submit it again (the task is unknown, expired, or ended `failed`/`rejected`).
    Submit {
        /// Delete the old task hash and reply first, so admission accepts the id again.
        reopen: bool,
    },
    /// Leave it dead: its task is alive or finished well.
    Skip(&'static str),
}

/// Decides from the task hash's `status` (None when the hash is gone).
pub fn plan(status: Option<&str>) -> ReplayPlan {
    match status {
        None => ReplayPlan::Submit { reopen: false },
        Some("failed") | Some("rejected") => ReplayPlan::Submit { reopen: true },
        Some("done") => ReplayPlan::Skip("task already done"),
        Some(_) => ReplayPlan::Skip("task is pending or processing"),
    }
}

/// What `dead replay` did with one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReplayResult {
    /// Published again (confirmed) and removed from the dead queue.
    Replayed {
        /// Where it was routed: a model's lane or `degraded`.
        lane: String,
    },
    /// Still refused by validation or admission; it stays dead.
    Kept {
        /// `code: reason (message)` of the refusal.
        detail: String,
    },
    /// Not tried: its task is alive or done; it stays dead.
    Skipped {
        /// Why.
        detail: String,
    },
}

/// One line of `dead replay`'s output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    /// The message.
    #[serde(flatten)]
    pub message: DeadMessage,
    /// What happened to it.
    #[serde(flatten)]
    pub result: ReplayResult,
}

/// Runs a dead-queue command, printing one JSON object per message to stdout.
pub async fn run(producer: &Producer, cmd: DeadCommand) -> Result<(), ProducerError> {
    let queue = producer.topology().dead_queue();
    match cmd {
        DeadCommand::List { limit } => {
            let listed = list(producer, limit).await?;
            for m in &listed {
                println!("{}", serde_json::to_string(m).unwrap_or_default());
            }
            eprintln!("{} message(s) shown from {queue}; none removed", listed.len());
        }
        DeadCommand::Replay { limit, task_id } => {
            let done = replay(producer, limit, task_id.as_deref()).await?;
            for r in &done {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            }
            let replayed = done.iter().filter(|r| matches!(r.result, ReplayResult::Replayed { .. })).count();
            eprintln!("{replayed} replayed, {} kept in {queue}", done.len() - replayed);
        }
    }
    Ok(())
}

/// Up to `limit` dead messages, oldest first; none is removed.
pub async fn list(producer: &Producer, limit: usize) -> Result<Vec<DeadMessage>, ProducerError> {
    let channel = producer.publisher().channel_plain().await?;
    let result =
        get_batch(producer, &channel, limit).await.map(|batch| batch.iter().map(DeadMessage::from_delivery).collect());
    close(&channel).await;
    result
}

/// Replays up to `limit` dead messages (only `only`'s when given, looking through
/// the whole queue for it); each is acked only after its new publish is confirmed.
pub async fn replay(producer: &Producer, limit: usize, only: Option<&str>) -> Result<Vec<Replayed>, ProducerError> {
    let channel = producer.publisher().channel_plain().await?;
    let result = replay_on(producer, &channel, limit, only).await;
    close(&channel).await;
    result
}

/// Closing the channel returns every message that was not acked to the queue.
async fn close(channel: &Channel) {
    if let Err(e) = channel.close(200, "done".into()).await {
        tracing::warn!(error = %Report(&e), "closing the dead-queue channel failed; the broker requeues its messages anyway");
    }
}

/// Reads up to `limit` messages without acking them (they go back at channel close).
async fn get_batch(producer: &Producer, channel: &Channel, limit: usize) -> Result<Vec<Delivery>, ProducerError> {
    let queue = producer.topology().dead_queue();
    let mut got = Vec::new();
    while got.len() < limit {
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(InfraError::broker(format!("reading {queue}")))?
        {
            Some(msg) => got.push(msg.delivery),
            None => break,
        }
    }
    Ok(got)
}

async fn replay_on(
    producer: &Producer,
    channel: &Channel,
    limit: usize,
    only: Option<&str>,
) -> Result<Vec<Replayed>, ProducerError> {
    // With a task filter, look through the queue (bounded) so the wanted message is found.
    let scan = if only.is_some() { limit.max(MAX_SCAN) } else { limit };
    let batch = get_batch(producer, channel, scan).await?;
    let mut out = Vec::new();
    for delivery in &batch {
        let message = DeadMessage::from_delivery(delivery);
        if only.is_some_and(|id| message.task() != Some(id)) {
            continue;
        }
        let result = replay_one(producer, channel, delivery, &message).await?;
        let stop = only.is_some() && matches!(result, ReplayResult::Replayed { .. });
        out.push(Replayed { message, result });
        if stop || out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// How many messages `dead replay --task-id` looks through at most.
pub const MAX_SCAN: usize = 10_000;

async fn replay_one(
    producer: &Producer,
    channel: &Channel,
    delivery: &Delivery,
    message: &DeadMessage,
) -> Result<ReplayResult, ProducerError> {
    // Still invalid: leave it dead without touching the task's reply.
    if let Err(failure) = warmlane_shared::decode_msgpack(&delivery.data, producer.settings()) {
        let r = failure.rejection;
        return Ok(ReplayResult::Kept { detail: format!("{}: {} ({})", r.code.as_str(), r.reason, r.message) });
    }
    let store = producer.store();
    let status = match message.task() {
        Some(task) => store.task(task).await?.get("status").cloned(),
        None => None,
    };
    let reopen = match plan(status.as_deref()) {
        ReplayPlan::Skip(why) => return Ok(ReplayResult::Skipped { detail: why.to_string() }),
        ReplayPlan::Submit { reopen } => reopen,
    };
    if let (true, Some(task)) = (reopen, message.task()) {
        store.reopen(task).await?;
    }
    match producer.submit_msgpack(&delivery.data).await {
        Ok(admission) => {
            // The new publish is confirmed: only now may the dead copy go.
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await
                .map_err(InfraError::broker("removing a replayed message from the dead queue"))?;
            tracing::info!(task_id = %admission.task_id, lane = %admission.lane, "dead message replayed");
            Ok(ReplayResult::Replayed { lane: admission.lane })
        }
        Err(ProducerError::Rejected(r)) => {
            Ok(ReplayResult::Kept { detail: format!("{}: {} ({})", r.code.as_str(), r.reason, r.message) })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_plan_follows_the_task_status() {
        assert_eq!(plan(None), ReplayPlan::Submit { reopen: false });
        assert_eq!(plan(Some("failed")), ReplayPlan::Submit { reopen: true });
        assert_eq!(plan(Some("rejected")), ReplayPlan::Submit { reopen: true });
        assert!(matches!(plan(Some("done")), ReplayPlan::Skip(_)));
        assert!(matches!(plan(Some("pending")), ReplayPlan::Skip(_)));
        assert!(matches!(plan(Some("processing")), ReplayPlan::Skip(_)));
    }

    #[test]
    fn the_task_of_a_message_prefers_the_body() {
        let m = |task_id: Option<&str>, message_id: Option<&str>| DeadMessage {
            message_id: message_id.map(str::to_string),
            task_id: task_id.map(str::to_string),
            model: None,
            error_code: None,
            error_reason: None,
            source_queue: None,
            timestamp_s: None,
            redelivered: false,
            bytes: 0,
        };
        assert_eq!(m(Some("a"), Some("b")).task(), Some("a"));
        assert_eq!(m(None, Some("b")).task(), Some("b"));
        assert_eq!(m(None, Some("")).task(), None);
        assert_eq!(m(None, None).task(), None);
    }
}
