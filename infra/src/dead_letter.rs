//! The dead queue: poison and undecodable messages are kept there for inspection
//! and replay, never dropped, and their task (when one can be recovered) still gets
//! its one terminal reply.

use crate::amqp::{message_properties, Published, Publisher};
use crate::error::InfraError;
use crate::store::{FinishWhen, Store};
use lapin::types::{AMQPValue, FieldTable, LongString};
use warmlane_shared::metrics as m;
use warmlane_shared::topology::{DEAD_KEY, HEADER_ERROR_CODE, HEADER_ERROR_REASON, HEADER_SOURCE_QUEUE};
use warmlane_shared::{Rejection, Reply, ReplyStatus, Timings, Topology};

/// A message on its way to the dead queue, and the answer it owes.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Why it is dead: its code and reason go into its headers and the reply.
    pub rejection: &'a Rejection,
    /// The task to answer, and on what condition ([`FinishWhen::Unstarted`] for a
    /// refused message, [`FinishWhen::NotTerminal`] for poison, which its worker claimed).
    pub answer: Option<(&'a str, FinishWhen)>,
    /// The lane it came from, when known.
    pub lane: Option<&'a str>,
}

/// Publishes the delivery's body to `<prefix>.dead` with the error in its headers,
/// then writes the task's reply when the letter names one. The caller acks the
/// original only after this returns Ok, so nothing is lost on a failure.
pub async fn dead_letter(
    publisher: &Publisher,
    store: &Store,
    topology: &Topology,
    delivery: &lapin::message::Delivery,
    letter: DeadLetter<'_>,
) -> Result<(), InfraError> {
    let DeadLetter { rejection, answer, lane } = letter;
    let task_id = answer.map(|(id, _)| id);
    let mut headers = FieldTable::default();
    headers.insert(HEADER_ERROR_CODE.into(), AMQPValue::LongString(LongString::from(rejection.code.as_str())));
    headers.insert(HEADER_ERROR_REASON.into(), AMQPValue::LongString(LongString::from(rejection.reason.clone())));
    let source = delivery.routing_key.as_str().to_string();
    headers.insert(
        HEADER_SOURCE_QUEUE.into(),
        AMQPValue::LongString(LongString::from(lane.map(|l| topology.queue_of_lane(l)).unwrap_or(source))),
    );
    let message_id = task_id
        .map(str::to_string)
        .or_else(|| delivery.properties.message_id().as_ref().map(|s| s.as_str().to_string()))
        .unwrap_or_default();
    let props = message_properties(&message_id, headers);
    match publisher.publish(&topology.dead_exchange(), DEAD_KEY, &delivery.data, props).await? {
        Published::Acked => {}
        other => return Err(InfraError::Refused(format!("the dead queue refused a message ({other:?})"))),
    }
    metrics::counter!(m::DEAD_LETTERED, m::TAG_CODE => rejection.code.as_str()).increment(1);
    tracing::warn!(task_id = task_id.unwrap_or("-"), code = rejection.code.as_str(), reason = %rejection.reason, lane = lane.unwrap_or("-"), "message moved to the dead queue");
    if let Some((task_id, when)) = answer {
        let reply = Reply::coded(task_id, ReplyStatus::Failed, lane, rejection, Timings::default());
        if !store.finish(&reply, when).await? {
            tracing::info!(task_id, "the dead message's task is running or answered; left alone");
        }
    }
    Ok(())
}
