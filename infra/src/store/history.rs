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
            if self.finish(&cancelled_reply(task_id, None, false), FinishWhen::Pending).await? {
                let mut c = self.conn.clone();
                let _: i64 = c.publish(self.keys.cancels(), task_id).await?;
                metrics::counter!(m::TASKS_CANCELLED, m::TAG_STAGE => "pending").increment(1);
                return Ok(CancelOutcome::Cancelled);
            }
            let mut c = self.conn.clone();
            let status: String = REQUEST_CANCEL_SCRIPT
                .key(self.keys.task(task_id))
                .key(self.keys.cancels())
                .arg(task_id)
                .arg(now_ms())
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

    /// The task ids announced on the cancel channel from now on. The stream ends when
    /// the connection is lost; the caller subscribes again.
    pub async fn cancel_announcements(&self) -> Result<impl Stream<Item = String> + Send, InfraError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.keys.cancels()).await?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move { msg.get_payload::<String>().ok() }))
    }

    /// Up to `scan` of the most recent tasks, newest first, each with its hash; ids
    /// whose hash expired are dropped from the index.
    pub async fn recent_tasks(&self, scan: usize) -> Result<Vec<(String, HashMap<String, String>)>, InfraError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.zrevrange(self.keys.recent(), 0, scan.saturating_sub(1) as isize).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.task(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut c).await?;
        let (live, gone): (Vec<_>, Vec<_>) = ids.into_iter().zip(hashes).partition(|(_, h)| !h.is_empty());
        if !gone.is_empty() {
            let gone: Vec<String> = gone.into_iter().map(|(id, _)| id).collect();
            let _: i64 = c.zrem(self.keys.recent(), gone).await?;
        }
        Ok(live)
    }
}
