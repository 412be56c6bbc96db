//! Cancels and the history: `DELETE /tasks/{id}` and `warmlane-producer cancel` end a
//! task here, workers hear of it on a pub/sub channel, and `GET /tasks` lists the
//! recent tasks from a capped index.

use super::scripts::REQUEST_CANCEL_SCRIPT;
use super::{FinishWhen, Store};
use crate::error::InfraError;
use futures_util::{Stream, StreamExt};
use redis::AsyncCommands;
use std::collections::HashMap;
use warmlane_shared::metrics as m;
use warmlane_shared::{now_ms, ErrorCode, Rejection, Reply, ReplyStatus, Timings};

/// What a cancel found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task was pending: it is answered `cancelled` now and will never run (a
    /// worker that receives it skips it).
    Cancelled,
    /// A worker runs it: it stops at its next denoising step and answers `cancelled`.
    Requested,
    /// It had its terminal reply already (`done` or `failed`); nothing changed.
    Finished(String),
    /// No such task, or it expired.
    Unknown,
}

/// The reason of the `cancelled` reply.
pub const CANCELLED_REASON: &str = "cancelled";

/// The terminal reply of a cancelled task.
pub fn cancelled_reply(task_id: &str, lane: Option<&str>, running: bool) -> Reply {
    let message = if running {
        "cancelled by the caller; the run stopped at a denoising step"
    } else {
        "cancelled by the caller before it ran"
    };
    let rejection = Rejection::new(ErrorCode::Cancelled, CANCELLED_REASON, message);
    Reply::coded(task_id, ReplyStatus::Failed, lane, &rejection, Timings::default())
}

impl Store {
    /// Cancels a task: a pending one gets its `cancelled` reply at once, a running
    /// one is flagged for its worker. Either way the workers are told on the cancel
    /// channel, so a pending task is skipped when delivered and a running one stops
    /// at its next step (a worker that missed the announcement still sees the flag or
    /// the reply at its next progress write).
    pub async fn cancel(&self, task_id: &str) -> Result<CancelOutcome, InfraError> {
        // A pending task can start between the two scripts; the second try sees it running.
        for _ in 0..3 {
            // FINISH records and announces the cancel with the reply, in one script.
            if self.finish(&cancelled_reply(task_id, None, false), FinishWhen::Pending).await? {
                metrics::counter!(m::TASKS_CANCELLED, m::TAG_STAGE => "pending").increment(1);
                return Ok(CancelOutcome::Cancelled);
            }
            let mut c = self.conn.clone();
            let status: String = REQUEST_CANCEL_SCRIPT
                .key(self.keys.task(task_id))
                .key(self.keys.cancels())
                .key(self.keys.cancelled())
                .arg(task_id)
                .arg(now_ms())
                .arg(self.cancelled_horizon(now_ms()))
                .invoke_async(&mut c)
                .await?;
            match status.as_str() {
                "" => return Ok(CancelOutcome::Unknown),
                "processing" => return Ok(CancelOutcome::Requested),
                "pending" => continue,
                _ => return Ok(CancelOutcome::Finished(status)),
            }
        }
        Ok(CancelOutcome::Requested)
    }

    /// Cancels older than this (unix ms) are forgotten: their tasks have expired.
    pub(super) fn cancelled_horizon(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.task_ttl_s * 1000)
    }

    /// Task ids cancelled within the task lifetime (a worker catching up after it
    /// subscribed), with when each was cancelled (unix ms).
    pub async fn recent_cancels(&self) -> Result<Vec<(String, u64)>, InfraError> {
        let mut c = self.conn.clone();
        let horizon = self.cancelled_horizon(now_ms());
        Ok(c.zrangebyscore_withscores(self.keys.cancelled(), horizon, "+inf").await?)
    }

    /// The task ids announced on the cancel channel from now on. The stream ends when
    /// the connection is lost; the caller subscribes again.
    pub async fn cancel_announcements(&self) -> Result<impl Stream<Item = String> + Send, InfraError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.keys.cancels()).await?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move { msg.get_payload::<String>().ok() }))
    }

    /// Up to `count` recent task ids from the `skip`-th newest on, newest first, each
    /// with its hash (empty once the task expired; the cap trims such ids in time).
    pub async fn recent_tasks(
        &self,
        skip: usize,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, String>)>, InfraError> {
        let mut c = self.conn.clone();
        let last = (skip + count).saturating_sub(1) as isize;
        let ids: Vec<String> = c.zrevrange(self.keys.recent(), skip as isize, last).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.task(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await?;
        Ok(ids.into_iter().zip(hashes).collect())
    }
}
