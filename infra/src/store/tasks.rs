//! Tasks: admission, routing, start, progress and the one terminal reply, and the
//! deadline index the backstop sweeps.

use super::scripts::{
    ADMIT_ROUTE_SCRIPT, ADMIT_SCRIPT, FINISH_SCRIPT, FORGET_UNPUBLISHED_SCRIPT, PROGRESS_SCRIPT, ROUTED_SCRIPT,
    START_SCRIPT,
};
use super::Store;
use crate::error::InfraError;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::time::Duration;
use warmlane_shared::keys::RECENT_TASKS;
use warmlane_shared::reply::{field, stage};
use warmlane_shared::{now_ms, ErrorCode, FallbackCause, LaneHealth, Reply, ValidRequest};

/// `FINISH`'s answer to a `done` reply for a task whose cancel was asked for: the
/// `cancelled` reply is written instead, and the caller hears that its reply was not.
const CANCEL_WINS: i64 = -2;

/// Preconditions of [`Store::finish`] besides "not yet terminal".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishWhen {
    /// Any task that has no terminal reply yet (workers, the expired-queue reaper).
    NotTerminal,
    /// Only a task still `pending` (the deadline backstop).
    Pending,
    /// Only a task id never seen (a refusal at admission).
    Absent,
    /// Only a task id never seen or a task still `pending`: a refused message (one
    /// that does not decode, or names a lane that does not exist) never ends a task
    /// a worker is running or has answered.
    Unstarted,
}

impl FinishWhen {
    fn as_arg(self) -> &'static str {
        match self {
            FinishWhen::NotTerminal => "any",
            FinishWhen::Pending => "pending",
            FinishWhen::Absent => "absent",
            FinishWhen::Unstarted => "unstarted",
        }
    }
}

/// What a terminal write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// This reply is the task's terminal reply.
    Written,
    /// A cancel was asked for while the run went on: the task was answered
    /// `cancelled` instead of this `done`.
    CancelWon,
    /// The task had its terminal reply already (a cancel of a pending task, the
    /// backstop, a redelivery's earlier run); nothing was written.
    NotWritten,
}

/// What a worker learns when it starts a delivered task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The task already has its terminal reply (a redelivery after completion): ack and skip.
    AlreadyFinished,
    /// This is delivery number `n` (1 for the first).
    Attempt(u32),
}

/// How a worker came to start a task, for [`Store::start_as`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedBy {
    /// The broker marked the delivery redelivered.
    pub redelivered: bool,
    /// When the run began, unix ms.
    pub started_at_ms: u64,
}

impl Store {
    /// Writes the `pending` hash and the deadline; false when the task id is already in use.
    pub async fn admit(&self, req: &ValidRequest, deadline_ms: u64) -> Result<bool, InfraError> {
        let mut c = self.conn.clone();
        let submitted = req.submitted_at_ms.unwrap_or_else(now_ms);
        let created: i64 = ADMIT_SCRIPT
            .key(self.keys.task(&req.task_id))
            .key(self.keys.deadlines())
            .key(self.keys.recent())
            .arg(&req.task_id)
            .arg(&req.model)
            .arg(submitted)
            .arg(deadline_ms)
            .arg(self.task_ttl_s)
            .arg(req.steps)
            .arg(RECENT_TASKS)
            .invoke_async(&mut c)
            .await?;
        Ok(created == 1)
    }

    /// Admits a request and reads its lane's health in one round trip. `None` when the
    /// task id is already in use; else the health and whether a fallback record exists.
    pub async fn admit_and_read_lane(
        &self,
        req: &ValidRequest,
        deadline_ms: u64,
        dedicated: bool,
        heartbeat_ttl_ms: u64,
    ) -> Result<Option<(LaneHealth, bool)>, InfraError> {
        let mut c = self.conn.clone();
        let now = now_ms();
        let (created, warm, cause, fallback): (i64, u32, String, i64) = ADMIT_ROUTE_SCRIPT
            .key(self.keys.task(&req.task_id))
            .key(self.keys.deadlines())
            .key(self.keys.lane_workers(&req.model))
            .key(self.keys.lane_disabled(&req.model))
            .key(self.keys.lane_fallback(&req.model))
            .key(self.keys.recent())
            .arg(&req.task_id)
            .arg(&req.model)
            .arg(req.submitted_at_ms.unwrap_or(now))
            .arg(deadline_ms)
            .arg(self.task_ttl_s)
            .arg(req.steps)
            .arg(now.saturating_sub(heartbeat_ttl_ms))
            .arg(RECENT_TASKS)
            .invoke_async(&mut c)
            .await?;
        if created != 1 {
            return Ok(None);
        }
        let health =
            LaneHealth { dedicated, warm_workers: warm, disabled: FallbackCause::parse(&cause), consumers: None };
        Ok(Some((health, fallback == 1)))
    }

    /// Records where a pending task went and its new deadline.
    pub async fn routed(
        &self,
        task_id: &str,
        lane: &str,
        cause: Option<FallbackCause>,
        deadline_ms: u64,
    ) -> Result<(), InfraError> {
        self.invoke_routed(task_id, lane, cause, deadline_ms, None).await.map(drop)
    }

    /// [`Store::routed`] to the degraded queue, through its admission guard: the
    /// task takes one of `limit` places (`degraded.max_depth`), held until a worker
    /// starts it or it is answered (or its deadline passes, should its producer die
    /// before the publish). False, and nothing recorded, when every place is taken: the queue
    /// is full, whatever the broker would say (a quorum queue accepts a few
    /// publishes past `x-max-length`, and producers race).
    pub async fn routed_degraded(
        &self,
        task_id: &str,
        cause: FallbackCause,
        deadline_ms: u64,
        limit: u32,
    ) -> Result<bool, InfraError> {
        let lane = warmlane_shared::settings::DEGRADED_LANE;
        Ok(self.invoke_routed(task_id, lane, Some(cause), deadline_ms, Some(limit)).await? != -1)
    }

    async fn invoke_routed(
        &self,
        task_id: &str,
        lane: &str,
        cause: Option<FallbackCause>,
        deadline_ms: u64,
        limit: Option<u32>,
    ) -> Result<i64, InfraError> {
        let mut c = self.conn.clone();
        Ok(ROUTED_SCRIPT
            .key(self.keys.task(task_id))
            .key(self.keys.deadlines())
            .key(self.keys.degraded_admitted())
            .arg(task_id)
            .arg(lane)
            .arg(deadline_ms)
            .arg(cause.map(FallbackCause::as_str).unwrap_or(""))
            .arg(now_ms())
            .arg(limit.map(|l| l.to_string()).unwrap_or_default())
            .invoke_async(&mut c)
            .await?)
    }

    /// Marks a delivered task `processing` and counts the attempt.
    pub async fn start(&self, req: &ValidRequest, lane: &str, worker_id: &str) -> Result<Started, InfraError> {
        let now = now_ms();
        self.start_as(req, lane, worker_id, StartedBy { redelivered: false, started_at_ms: now }).await
    }

    /// [`Store::start`] with how the delivery came: a redelivery of a task with no
    /// attempt count yet counts its earlier delivery too (a lane worker runs a first
    /// delivery without this call and records the attempt with the reply, see
    /// [`Store::finish_run`]); a late claim gives the time its run began.
    pub async fn start_as(
        &self,
        req: &ValidRequest,
        lane: &str,
        worker_id: &str,
        by: StartedBy,
    ) -> Result<Started, InfraError> {
        let mut c = self.conn.clone();
        let n: i64 = START_SCRIPT
            .key(self.keys.task(&req.task_id))
            .key(self.keys.deadlines())
            .key(self.keys.degraded_admitted())
            .arg(&req.task_id)
            .arg(lane)
            .arg(worker_id)
            .arg(now_ms())
            .arg(&req.model)
            .arg(self.task_ttl_s)
            .arg(req.steps)
            .arg(if by.redelivered { "1" } else { "0" })
            .arg(by.started_at_ms)
            .invoke_async(&mut c)
            .await?;
        Ok(if n < 0 { Started::AlreadyFinished } else { Started::Attempt(n as u32) })
    }

    /// Records `step/steps` while the task is processing, and its stage: `denoising`
    /// until the last step, then `decoding` (the VAE decode and the video encode that
    /// follow it). Returns false when the run should stop: a cancel was asked for, or
    /// the task already has its reply.
    pub async fn progress(&self, task_id: &str, step: u32, steps: u32) -> Result<bool, InfraError> {
        let mut c = self.conn.clone();
        let wrote: i64 = PROGRESS_SCRIPT
            .key(self.keys.task(task_id))
            .arg(format!("{step}/{steps}"))
            .arg(now_ms())
            .arg(if step < steps { stage::DENOISING } else { stage::DECODING })
            .invoke_async(&mut c)
            .await?;
        Ok(wrote >= 0)
    }

    /// Writes the terminal reply exactly once. Returns whether this call wrote it.
    /// `when` narrows it further: the backstop leaves started tasks alone, and a
    /// refusal of a new request never touches a task that already exists.
    pub async fn finish(&self, reply: &Reply, when: FinishWhen) -> Result<bool, InfraError> {
        Ok(self.finish_with(reply, when, None).await? == Finished::Written)
    }

    /// A worker's reply to the run it made. `first`: a first delivery a lane worker ran
    /// without [`Store::start`] (its worker id and when the run began); the task then
    /// also records attempt 1, the worker and the start, unless a late start did.
    pub async fn finish_run(&self, reply: &Reply, first: Option<(&str, u64)>) -> Result<Finished, InfraError> {
        self.finish_with(reply, FinishWhen::NotTerminal, first).await
    }

    async fn finish_with(
        &self,
        reply: &Reply,
        when: FinishWhen,
        first: Option<(&str, u64)>,
    ) -> Result<Finished, InfraError> {
        let wrote = self.invoke_finish(reply, when, first).await?;
        if wrote == CANCEL_WINS {
            let cancelled = super::cancelled_reply(&reply.task_id, reply.lane.as_deref(), true);
            self.invoke_finish(&cancelled, when, first).await?;
            return Ok(Finished::CancelWon);
        }
        Ok(if wrote == 1 { Finished::Written } else { Finished::NotWritten })
    }

    async fn invoke_finish(
        &self,
        reply: &Reply,
        when: FinishWhen,
        first: Option<(&str, u64)>,
    ) -> Result<i64, InfraError> {
        let mut c = self.conn.clone();
        let mut script = FINISH_SCRIPT.prepare_invoke();
        script
            .key(self.keys.task(&reply.task_id))
            .key(self.keys.reply(&reply.task_id))
            .key(self.keys.deadlines())
            .key(self.keys.recent())
            .key(self.keys.cancelled())
            .key(self.keys.cancels())
            .key(self.keys.degraded_admitted())
            .arg(&reply.task_id)
            .arg(reply.task_status().as_str())
            .arg(reply.to_msgpack())
            .arg(now_ms())
            .arg(self.reply_ttl_s)
            .arg(self.task_ttl_s)
            .arg(when.as_arg())
            .arg(first.map(|(worker, _)| worker).unwrap_or(""))
            .arg(first.map(|(_, at)| at).unwrap_or(0))
            .arg(RECENT_TASKS)
            // Only a cancel answers a pending task `cancelled`: it is announced in the same script.
            .arg(if when == FinishWhen::Pending && reply.code == Some(ErrorCode::Cancelled) { "1" } else { "" })
            .arg(self.cancelled_horizon(now_ms()));
        let mut pairs: Vec<(&str, String)> = vec![(field::MESSAGE, reply.message.clone())];
        if let Some(code) = reply.code {
            pairs.push((field::CODE, code.as_str().to_string()));
        }
        if let Some(reason) = &reply.reason {
            pairs.push((field::REASON, reason.clone()));
        }
        if let Some(lane) = &reply.lane {
            pairs.push((field::LANE, lane.clone()));
        }
        if let Some(result) = &reply.result {
            pairs.push((field::RESULT, result.uri.clone()));
            pairs.push((field::CONTENT_TYPE, result.content_type.clone()));
            if let Some(preview) = &result.preview_uri {
                pairs.push((field::PREVIEW, preview.clone()));
            }
        }
        if let Some(ms) = reply.timings.inference_ms {
            pairs.push((field::INFERENCE_MS, ms.to_string()));
        }
        if let Some(ms) = reply.timings.queued_ms {
            pairs.push((field::QUEUED_MS, ms.to_string()));
        }
        for (k, v) in pairs {
            script.arg(k).arg(v);
        }
        Ok(script.invoke_async(&mut c).await?)
    }

    /// The task hash (empty when unknown or expired).
    pub async fn task(&self, task_id: &str) -> Result<HashMap<String, String>, InfraError> {
        let mut c = self.conn.clone();
        Ok(c.hgetall(self.keys.task(task_id)).await?)
    }

    /// Waits up to `timeout` for the terminal reply (BLPOP on a dedicated connection,
    /// so the shared one is never blocked). The reply is consumed.
    pub async fn wait_reply(&self, task_id: &str, timeout: Duration) -> Result<Option<Reply>, InfraError> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout + Duration::from_secs(5)));
        let mut c = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let secs = timeout.as_secs_f64().max(0.01);
        let popped: Option<(String, Vec<u8>)> = c.blpop(self.keys.reply(task_id), secs).await?;
        match popped {
            None => Ok(None),
            Some((_, body)) => Reply::from_msgpack(&body)
                .map(Some)
                .map_err(|e| InfraError::Corrupt { what: "reply", source: e.into() }),
        }
    }

    /// The deadline of the earliest task still `pending` on `lane`, among the first
    /// `scan` entries of the deadline index (which also holds other lanes' tasks).
    pub async fn earliest_pending_on(&self, lane: &str, scan: usize) -> Result<Option<u64>, InfraError> {
        let mut c = self.conn.clone();
        let earliest: Vec<(String, u64)> =
            c.zrange_withscores(self.keys.deadlines(), 0, scan.saturating_sub(1) as isize).await?;
        for (task_id, deadline) in earliest {
            let (status, on): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(self.keys.task(&task_id))
                .arg(field::STATUS)
                .arg(field::LANE)
                .query_async(&mut c)
                .await?;
            if status.as_deref() == Some("pending") && on.as_deref() == Some(lane) {
                return Ok(Some(deadline));
            }
        }
        Ok(None)
    }

    /// Pending task ids whose deadline is at or before `at_ms`.
    pub async fn overdue(&self, at_ms: u64, limit: usize) -> Result<Vec<String>, InfraError> {
        let mut c = self.conn.clone();
        Ok(c.zrangebyscore_limit(self.keys.deadlines(), "-inf", at_ms, 0, limit as isize).await?)
    }

    /// Removes a task that was admitted but never handed to the broker (still
    /// `pending`), so that its caller may submit the same task_id again. Returns
    /// whether it was removed; a task in any other state is left alone.
    pub async fn forget_unpublished(&self, task_id: &str) -> Result<bool, InfraError> {
        let mut c = self.conn.clone();
        let n: i64 = FORGET_UNPUBLISHED_SCRIPT
            .key(self.keys.task(task_id))
            .key(self.keys.deadlines())
            .key(self.keys.degraded_admitted())
            .arg(task_id)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Deletes a finished task's hash and any unread reply, so that admission accepts
    /// its id again (a dead letter being replayed).
    pub async fn reopen(&self, task_id: &str) -> Result<(), InfraError> {
        let mut c = self.conn.clone();
        let _: () =
            redis::pipe().del(self.keys.task(task_id)).del(self.keys.reply(task_id)).query_async(&mut c).await?;
        Ok(())
    }

    /// Drops a deadline entry (its task is gone or no longer pending).
    pub async fn forget_deadline(&self, task_id: &str) -> Result<(), InfraError> {
        let mut c = self.conn.clone();
        let _: i64 = c.zrem(self.keys.deadlines(), task_id).await?;
        Ok(())
    }
}
