//! What a worker does with one delivery, decided without I/O.
//!
//! [`plan`] reads the [`Facts`] of a delivery (its decoded body, message id,
//! redelivered flag and degraded entry time) against the settings and the clock,
//! and either acts at once or asks for the task's claim (`START`, which counts the
//! attempt). [`after_claim`] decides from the claim's answer. The rules, in order:
//!
//! 1. A body that does not decode or validate is dead-lettered, and answered at its
//!    task id (from the body, else the message id) when one can be read.
//! 2. A lane worker forwards a request for another model to that model's lane.
//! 3. The degraded worker answers `wait_timeout` for a message older than the
//!    degraded wait (a TTL stops counting once a message is delivered).
//! 4. A first delivery on a warm lane, well before its deadline, runs at once and
//!    is claimed late only if it runs long (`crate::claim`); anything else is claimed.
//! 5. After the claim: a task with its reply already is acked and skipped; one
//!    delivered more often than `max_attempts` is poison (dead-lettered, answered);
//!    else it runs.

use crate::claim;
use crate::engine::{EngineFailure, Output};
pub use crate::results::Stored;
use lapin::message::Delivery;
use warmlane_infra::amqp::enqueued_ms;
use warmlane_infra::store::{Started, StartedBy};
use warmlane_shared::error::reason;
use warmlane_shared::reply::media;
use warmlane_shared::request::DecodeFailure;
use warmlane_shared::routing::degraded_waited_ms;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::{ErrorCode, Rejection, Reply, ReplyStatus, ResultInfo, Settings, Timings, ValidRequest};

/// What the worker knows of a delivery before any I/O (borrowing from the delivery:
/// nothing is copied on the hot path).
#[derive(Debug, Clone, PartialEq)]
pub struct Facts<'d> {
    /// The body, decoded and validated against the settings in force.
    pub request: Result<ValidRequest, DecodeFailure>,
    /// The AMQP `message_id` (the contract sets it to the task id).
    pub message_id: Option<&'d str>,
    /// The broker delivered it before.
    pub redelivered: bool,
    /// When it entered the degraded queue (the producer's header), unix ms.
    pub enqueued_ms: Option<u64>,
    /// The worker hears cancels (subscribed and caught up, see `crate::cancel`).
    /// Without it a first delivery takes `START`, which refuses a cancelled task.
    pub cancels_heard: bool,
}

impl<'d> Facts<'d> {
    /// Reads a delivery: decodes the body and the headers the rules need.
    pub fn read(delivery: &'d Delivery, settings: &Settings) -> Facts<'d> {
        Facts {
            request: warmlane_shared::decode_msgpack(&delivery.data, settings),
            message_id: delivery.properties.message_id().as_ref().map(|id| id.as_str()),
            redelivered: delivery.redelivered,
            enqueued_ms: enqueued_ms(&delivery.properties),
            cancels_heard: false,
        }
    }
}

/// Why a message goes to the dead queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadWhy {
    /// Its body does not decode or validate (counted as a validation rejection).
    Invalid,
    /// It was delivered more often than `max_attempts` without finishing.
    Poison,
}

/// The first decision: act now, or claim the task first.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// Claim the task (`START`), then decide with [`after_claim`].
    Claim {
        /// The request.
        req: &'a ValidRequest,
        /// How the delivery came.
        by: StartedBy,
    },
    /// Act without a claim.
    Do(Action<'a>),
}

/// What the worker does with the delivery before it acks it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<'a> {
    /// Move it to the dead queue, answering `reply_to` when known.
    DeadLetter {
        /// The refusal.
        rejection: Rejection,
        /// The task to answer.
        reply_to: Option<String>,
        /// Why.
        why: DeadWhy,
    },
    /// Publish it to its own model's lane (a publisher used another routing key).
    Forward(&'a ValidRequest),
    /// Answer `queue_overloaded`/`wait_timeout`: it waited too long in the degraded queue.
    WaitTimeout {
        /// The request.
        req: &'a ValidRequest,
        /// How long it waited.
        waited_ms: u64,
    },
    /// Its task has its reply already (a redelivery after completion): skip it.
    AlreadyAnswered(&'a ValidRequest),
    /// Run the engine and answer.
    Run {
        /// The request.
        req: &'a ValidRequest,
        /// Started without `START` (a late claim follows if it runs long).
        unclaimed: bool,
        /// When the run starts, unix ms.
        started_at_ms: u64,
    },
}

/// The decision before any Redis call, for a worker serving `lane` at `now_ms`.
pub fn plan<'a>(facts: &'a Facts<'_>, lane: &str, settings: &Settings, now_ms: u64) -> Step<'a> {
    let req = match &facts.request {
        Ok(req) => req,
        Err(failure) => {
            return Step::Do(Action::DeadLetter {
                rejection: failure.rejection.clone(),
                reply_to: failure.reply_to(facts.message_id),
                why: DeadWhy::Invalid,
            })
        }
    };
    let degraded = lane == DEGRADED_LANE;
    if !degraded && req.model != lane {
        return Step::Do(Action::Forward(req));
    }
    if degraded {
        let waited_ms = degraded_waited_ms(facts.enqueued_ms, req.submitted_at_ms, now_ms);
        if waited_ms > settings.degraded.max_wait_ms {
            return Step::Do(Action::WaitTimeout { req, waited_ms });
        }
    }
    if !degraded && facts.cancels_heard && claim::may_start_unclaimed(settings, req, facts.redelivered, now_ms) {
        return Step::Do(Action::Run { req, unclaimed: true, started_at_ms: now_ms });
    }
    // Only a lane worker runs first deliveries unclaimed, so only there does a
    // redelivery stand for an earlier, uncounted attempt.
    let by = StartedBy { redelivered: facts.redelivered && !degraded, started_at_ms: now_ms };
    Step::Claim { req, by }
}

/// The decision once the claim answered.
pub fn after_claim<'a>(req: &'a ValidRequest, started: Started, settings: &Settings, now_ms: u64) -> Action<'a> {
    match started {
        Started::AlreadyFinished => Action::AlreadyAnswered(req),
        Started::Attempt(n) if n > settings.lanes.max_attempts => Action::DeadLetter {
            rejection: Rejection::new(
                ErrorCode::InferenceFailed,
                reason::POISON,
                format!(
                    "delivered {n} times without finishing (limit {}); moved to the dead queue",
                    settings.lanes.max_attempts
                ),
            ),
            reply_to: Some(req.task_id.clone()),
            why: DeadWhy::Poison,
        },
        Started::Attempt(_) => Action::Run { req, unclaimed: false, started_at_ms: now_ms },
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunEnd<'a> {
    /// A video, kept in the results store.
    Stored(&'a Output, &'a Stored),
    /// The engine failed (or the run was cancelled).
    Failed(&'a EngineFailure),
    /// A video the results store did not take (it is down or refused): the run is
    /// lost, and the task fails `inference_failed`/`storage`.
    NotStored(&'a Output),
}

/// The terminal reply of a run.
pub fn run_reply(req: &ValidRequest, lane: &str, end: RunEnd<'_>, queued_ms: u64) -> Reply {
    let failed = |rejection: &Rejection| {
        let timings = Timings { queued_ms: Some(queued_ms), inference_ms: None };
        Reply::coded(&req.task_id, ReplyStatus::Failed, Some(lane), rejection, timings)
    };
    match end {
        RunEnd::Stored(out, stored) => Reply::done(
            &req.task_id,
            lane,
            ResultInfo {
                uri: stored.uri.clone(),
                frames: out.frames,
                width: out.width,
                height: out.height,
                bytes: out.bytes,
                content_type: media::of(&out.path.to_string_lossy()).unwrap_or(media::MP4).to_string(),
                preview_uri: stored.preview_uri.clone(),
            },
            Timings { queued_ms: Some(queued_ms), inference_ms: Some(out.inference_ms) },
        ),
        RunEnd::Failed(f) => failed(&Rejection::new(f.code, f.code.as_str(), f.message.clone())),
        RunEnd::NotStored(_) => failed(&Rejection::new(
            ErrorCode::InferenceFailed,
            reason::STORAGE,
            "the video was generated but the results store did not take it; retry later",
        )),
    }
}

#[cfg(test)]
mod tests;
