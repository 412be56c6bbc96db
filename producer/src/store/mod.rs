//! The Redis side of the contract: task hashes, exactly-once terminal replies,
//! worker heartbeats, lane flags and the deadline index of the backstop.
//!
//! Every state change that must not race is one Lua script: admission refuses a
//! task id already in use, [`Store::start`] refuses a finished task, and
//! [`Store::finish`] pushes the reply only when the hash is not yet terminal, so a
//! redelivered message or a racing reaper can never answer twice.

use crate::error::ProducerError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use warmlane_shared::keys::Keys;
use warmlane_shared::reply::field;
use warmlane_shared::{now_ms, FallbackCause, LaneHealth, Reply, Settings, ValidRequest};

mod scripts;
use scripts::{
    ADMIT_ROUTE_SCRIPT, ADMIT_SCRIPT, FINISH_SCRIPT, FORGET_UNPUBLISHED_SCRIPT, PROGRESS_SCRIPT, ROUTED_SCRIPT,
    START_SCRIPT,
};

/// A lane's active fallback: its requests go to the degraded queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFallback {
    /// The latest cause (`capacity`, `manual`, `quota`).
    pub cause: String,
    /// When the fallback began, unix ms.
    pub since_ms: u64,
    /// When the latest request went degraded, unix ms; an evicted lane worker
    /// re-warms when one arrives after its eviction.
    pub last_ms: Option<u64>,
}

/// Preconditions of [`Store::finish`] besides "not yet terminal".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishWhen {
    /// Any task that has no terminal reply yet (workers, the expired-queue reaper).
    NotTerminal,
    /// Only a task still `pending` (the deadline backstop).
    Pending,
    /// Only a task id never seen (a refusal at admission).
    Absent,
}

impl FinishWhen {
    fn as_arg(self) -> &'static str {
        match self {
            FinishWhen::NotTerminal => "any",
            FinishWhen::Pending => "pending",
            FinishWhen::Absent => "absent",
        }
    }
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

/// A worker's state as its heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Loading its model; not ready.
    Loading,
    /// Model resident, idle.
    Warm,
    /// Model resident, running a task.
    Busy,
    /// Degraded worker with no model resident.
    Idle,
    /// Lane worker whose model was unloaded after idling (FR-019); not ready.
    Evicted,
    /// Shutting down.
    Draining,
}

impl WorkerState {
    /// Whether requests routed to this worker's lane will be served without a load.
    pub fn is_ready(self) -> bool {
        matches!(self, WorkerState::Warm | WorkerState::Busy | WorkerState::Idle)
    }
}

/// One heartbeat, stored as JSON under `<prefix>:worker:<id>` with a TTL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Unique worker id.
    pub worker_id: String,
    /// `degraded` or a model name.
    pub lane: String,
    /// Model resident now, if any.
    pub model: Option<String>,
    /// State.
    pub state: WorkerState,
    /// Process id.
    pub pid: u32,
    /// When the worker started, unix ms.
    pub started_at_ms: u64,
    /// When this heartbeat was written, unix ms.
    pub at_ms: u64,
    /// Model loads since start.
    pub loads: u64,
    /// Tasks finished since start.
    pub tasks: u64,
    /// Memory snapshot (the memory manager's status), free-form JSON.
    #[serde(default)]
    pub memory: serde_json::Value,
}

/// Redis access for producer, reaper and workers.
#[derive(Clone)]
pub struct Store {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    reply_ttl_s: u64,
    task_ttl_s: u64,
}

/// How the shared connection reconnects after Redis went away: 3 tries, 100 ms apart
/// doubling, 1 s connect timeout each. Commands issued meanwhile wait for these tries
/// and then fail, so a caller hears `service_unavailable` within about 1-4 s instead of
/// the client library's default of 6 tries (over 6 s); the next command starts a new
/// round. Workers back off between failed deliveries themselves.
pub fn store_reconnect() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(1))
        .set_connection_timeout(Some(Duration::from_secs(1)))
}

impl Store {
    /// Connects (the connection manager reconnects by itself afterwards).
    pub async fn connect(url: &str, prefix: &str, settings: &Settings) -> Result<Store, ProducerError> {
        let redacted = crate::config::redact_url(url);
        let connect_err = |e: redis::RedisError| ProducerError::Connect {
            what: "Redis",
            url: redacted.clone(),
            detail: e.to_string(),
        };
        let client = Client::open(url).map_err(connect_err)?;
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            ConnectionManager::new_with_config(client.clone(), store_reconnect()),
        )
        .await
        .map_err(|_| ProducerError::Connect { what: "Redis", url: redacted.clone(), detail: "timed out".into() })?
        .map_err(connect_err)?;
        Ok(Store {
            client,
            conn,
            keys: Keys::new(prefix),
            reply_ttl_s: settings.lanes.reply_ttl_s,
            task_ttl_s: settings.lanes.task_ttl_s,
        })
    }

    /// Key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A clone of the shared connection, for callers with their own commands.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// PING, for readiness probes.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
    }

    /// Writes the `pending` hash and the deadline; false when the task id is already in use.
    pub async fn admit(&self, req: &ValidRequest, deadline_ms: u64) -> Result<bool, ProducerError> {
        let mut c = self.conn.clone();
        let submitted = req.submitted_at_ms.unwrap_or_else(now_ms);
        let created: i64 = ADMIT_SCRIPT
            .key(self.keys.task(&req.task_id))
            .key(self.keys.deadlines())
            .arg(&req.task_id)
            .arg(&req.model)
            .arg(submitted)
            .arg(deadline_ms)
            .arg(self.task_ttl_s)
            .arg(req.steps)
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
    ) -> Result<Option<(LaneHealth, bool)>, ProducerError> {
        let mut c = self.conn.clone();
        let now = now_ms();
        let (created, warm, cause, fallback): (i64, u32, String, i64) = ADMIT_ROUTE_SCRIPT
            .key(self.keys.task(&req.task_id))
            .key(self.keys.deadlines())
            .key(self.keys.lane_workers(&req.model))
            .key(self.keys.lane_disabled(&req.model))
            .key(self.keys.lane_fallback(&req.model))
            .arg(&req.task_id)
            .arg(&req.model)
            .arg(req.submitted_at_ms.unwrap_or(now))
            .arg(deadline_ms)
            .arg(self.task_ttl_s)
            .arg(req.steps)
            .arg(now.saturating_sub(heartbeat_ttl_ms))
            .invoke_async(&mut c)
            .await?;
        if created != 1 {
            return Ok(None);
        }
        let health = LaneHealth { dedicated, warm_workers: warm, disabled: FallbackCause::parse(&cause) };
        Ok(Some((health, fallback == 1)))
    }

    /// Records where a pending task went and its new deadline.
    pub async fn routed(
        &self,
        task_id: &str,
        lane: &str,
        cause: Option<FallbackCause>,
        deadline_ms: u64,
    ) -> Result<(), ProducerError> {
        let mut c = self.conn.clone();
        let _: i64 = ROUTED_SCRIPT
            .key(self.keys.task(task_id))
            .key(self.keys.deadlines())
            .arg(task_id)
            .arg(lane)
            .arg(deadline_ms)
            .arg(cause.map(FallbackCause::as_str).unwrap_or(""))
            .arg(now_ms())
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Marks a delivered task `processing` and counts the attempt.
    pub async fn start(&self, req: &ValidRequest, lane: &str, worker_id: &str) -> Result<Started, ProducerError> {
        let now = now_ms();
        self.start_as(req, lane, worker_id, StartedBy { redelivered: false, started_at_ms: now }).await
    }

    /// [`Store::start`] with how the delivery came: a redelivery of a task with no
    /// attempt count yet counts its earlier delivery too (a lane worker runs a first
    /// delivery without this call and records the attempt with the reply, see
    /// [`Store::finish_first_delivery`]); a late claim gives the time its run began.
    pub async fn start_as(
        &self,
        req: &ValidRequest,
        lane: &str,
        worker_id: &str,
        by: StartedBy,
    ) -> Result<Started, ProducerError> {
        let mut c = self.conn.clone();
        let n: i64 = START_SCRIPT
            .key(self.keys.task(&req.task_id))
            .key(self.keys.deadlines())
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

    /// Records `step/steps` while the task is processing.
    pub async fn progress(&self, task_id: &str, step: u32, steps: u32) -> Result<(), ProducerError> {
        let mut c = self.conn.clone();
        let _: i64 = PROGRESS_SCRIPT
            .key(self.keys.task(task_id))
            .arg(format!("{step}/{steps}"))
            .arg(now_ms())
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Writes the terminal reply exactly once. Returns whether this call wrote it.
    /// `when` narrows it further: the backstop leaves started tasks alone, and a
    /// refusal of a new request never touches a task that already exists.
    pub async fn finish(&self, reply: &Reply, when: FinishWhen) -> Result<bool, ProducerError> {
        self.finish_with(reply, when, None).await
    }

    /// [`Store::finish`] for a first delivery a lane worker ran without
    /// [`Store::start`]: the task also records attempt 1, `worker_id` and when the
    /// run began, unless a late start already recorded them.
    pub async fn finish_first_delivery(
        &self,
        reply: &Reply,
        worker_id: &str,
        started_at_ms: u64,
    ) -> Result<bool, ProducerError> {
        self.finish_with(reply, FinishWhen::NotTerminal, Some((worker_id, started_at_ms))).await
    }

    async fn finish_with(
        &self,
        reply: &Reply,
        when: FinishWhen,
        first: Option<(&str, u64)>,
    ) -> Result<bool, ProducerError> {
        let mut c = self.conn.clone();
        let mut script = FINISH_SCRIPT.prepare_invoke();
        script
            .key(self.keys.task(&reply.task_id))
            .key(self.keys.reply(&reply.task_id))
            .key(self.keys.deadlines())
            .arg(&reply.task_id)
            .arg(reply.task_status().as_str())
            .arg(reply.to_msgpack())
            .arg(now_ms())
            .arg(self.reply_ttl_s)
            .arg(self.task_ttl_s)
            .arg(when.as_arg())
            .arg(first.map(|(worker, _)| worker).unwrap_or(""))
            .arg(first.map(|(_, at)| at).unwrap_or(0));
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
        let wrote: i64 = script.invoke_async(&mut c).await?;
        Ok(wrote == 1)
    }

    /// The task hash (empty when unknown or expired).
    pub async fn task(&self, task_id: &str) -> Result<HashMap<String, String>, ProducerError> {
        let mut c = self.conn.clone();
        Ok(c.hgetall(self.keys.task(task_id)).await?)
    }

    /// Waits up to `timeout` for the terminal reply (BLPOP on a dedicated connection,
    /// so the shared one is never blocked). The reply is consumed.
    pub async fn wait_reply(&self, task_id: &str, timeout: Duration) -> Result<Option<Reply>, ProducerError> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout + Duration::from_secs(5)));
        let mut c = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let secs = timeout.as_secs_f64().max(0.01);
        let popped: Option<(String, Vec<u8>)> = c.blpop(self.keys.reply(task_id), secs).await?;
        match popped {
            None => Ok(None),
            Some((_, body)) => Reply::from_msgpack(&body)
                .map(Some)
                .map_err(|e| ProducerError::Broker(format!("undecodable reply: {e}"))),
        }
    }

    /// Health of a lane: fresh ready workers and the disabled flag.
    pub async fn lane_health(
        &self,
        model: &str,
        dedicated: bool,
        heartbeat_ttl_ms: u64,
    ) -> Result<LaneHealth, ProducerError> {
        let mut c = self.conn.clone();
        let since = now_ms().saturating_sub(heartbeat_ttl_ms);
        let (warm, cause): (u32, Option<String>) = redis::pipe()
            .zcount(self.keys.lane_workers(model), since, "+inf")
            .hget(self.keys.lane_disabled(model), "cause")
            .query_async(&mut c)
            .await?;
        Ok(LaneHealth { dedicated, warm_workers: warm, disabled: cause.as_deref().and_then(FallbackCause::parse) })
    }

    /// Takes a lane out of routing with a cause (`manual` by operators, `quota` by the platform).
    pub async fn disable_lane(&self, model: &str, cause: FallbackCause, note: &str) -> Result<(), ProducerError> {
        let mut c = self.conn.clone();
        let _: () = c
            .hset_multiple(
                self.keys.lane_disabled(model),
                &[
                    ("cause", cause.as_str().to_string()),
                    ("since_ms", now_ms().to_string()),
                    ("note", note.to_string()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Puts a lane back into routing.
    pub async fn enable_lane(&self, model: &str) -> Result<bool, ProducerError> {
        let mut c = self.conn.clone();
        let removed: u32 = c.del(self.keys.lane_disabled(model)).await?;
        Ok(removed > 0)
    }

    /// The disabled flag of a lane: (cause, since_ms, note).
    pub async fn lane_disabled(&self, model: &str) -> Result<Option<(String, u64, String)>, ProducerError> {
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(self.keys.lane_disabled(model)).await?;
        Ok(h.get("cause").map(|cause| {
            (
                cause.clone(),
                h.get("since_ms").and_then(|s| s.parse().ok()).unwrap_or(0),
                h.get("note").cloned().unwrap_or_default(),
            )
        }))
    }

    /// Marks a lane's fallback active; returns true when this starts a new activation.
    pub async fn fallback_started(&self, model: &str, cause: FallbackCause) -> Result<bool, ProducerError> {
        let mut c = self.conn.clone();
        let key = self.keys.lane_fallback(model);
        let now = now_ms();
        let (created, ()): (bool, ()) = redis::pipe()
            .hset_nx(&key, "since_ms", now)
            .hset_multiple(&key, &[("cause", cause.as_str().to_string()), ("last_ms", now.to_string())])
            .query_async(&mut c)
            .await?;
        Ok(created)
    }

    /// Ends a lane's fallback; returns how long it lasted when one was active.
    pub async fn fallback_ended(&self, model: &str) -> Result<Option<(FallbackCause, u64)>, ProducerError> {
        let mut c = self.conn.clone();
        let key = self.keys.lane_fallback(model);
        let (h, _): (HashMap<String, String>, i64) = redis::pipe().hgetall(&key).del(&key).query_async(&mut c).await?;
        let since: Option<u64> = h.get("since_ms").and_then(|s| s.parse().ok());
        let cause = h.get("cause").and_then(|c| FallbackCause::parse(c));
        Ok(since.zip(cause).map(|(since, cause)| (cause, now_ms().saturating_sub(since))))
    }

    /// The active fallback of a lane, if any.
    pub async fn fallback(&self, model: &str) -> Result<Option<ActiveFallback>, ProducerError> {
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(self.keys.lane_fallback(model)).await?;
        let ms = |k: &str| h.get(k).and_then(|s| s.parse().ok());
        Ok(h.get("cause").map(|cause| ActiveFallback {
            cause: cause.clone(),
            since_ms: ms("since_ms").unwrap_or(0),
            last_ms: ms("last_ms"),
        }))
    }

    /// Writes a heartbeat: the worker's JSON with a TTL, and its rank in the lane's ready set.
    pub async fn heartbeat(&self, hb: &Heartbeat, ttl_ms: u64) -> Result<(), ProducerError> {
        let mut c = self.conn.clone();
        let json = serde_json::to_string(hb).unwrap_or_default();
        let lane_key = self.keys.lane_workers(&hb.lane);
        let stale = hb.at_ms.saturating_sub(ttl_ms);
        let mut pipe = redis::pipe();
        pipe.set_options(
            self.keys.worker(&hb.worker_id),
            json,
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms)),
        )
        .zadd(self.keys.all_workers(), &hb.worker_id, hb.at_ms)
        .zrembyscore(self.keys.all_workers(), "-inf", stale)
        .zrembyscore(&lane_key, "-inf", stale);
        if hb.state.is_ready() {
            pipe.zadd(&lane_key, &hb.worker_id, hb.at_ms);
        } else {
            pipe.zrem(&lane_key, &hb.worker_id);
        }
        let _: () = pipe.query_async(&mut c).await?;
        Ok(())
    }

    /// Removes a worker at shutdown, so routing stops counting it at once.
    pub async fn remove_worker(&self, worker_id: &str, lane: &str) -> Result<(), ProducerError> {
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .del(self.keys.worker(worker_id))
            .zrem(self.keys.lane_workers(lane), worker_id)
            .zrem(self.keys.all_workers(), worker_id)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Every live worker's last heartbeat.
    pub async fn workers(&self) -> Result<Vec<Heartbeat>, ProducerError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.zrange(self.keys.all_workers(), 0, -1).await?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.worker(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        Ok(values.into_iter().flatten().filter_map(|v| serde_json::from_str(&v).ok()).collect())
    }

    /// Counts a model load (cold start) of a lane; returns the new total.
    pub async fn count_load(&self, lane: &str) -> Result<u64, ProducerError> {
        let mut c = self.conn.clone();
        Ok(c.incr(self.keys.lane_loads(lane), 1).await?)
    }

    /// Loads (cold starts) of a lane so far.
    pub async fn loads(&self, lane: &str) -> Result<u64, ProducerError> {
        let mut c = self.conn.clone();
        let n: Option<u64> = c.get(self.keys.lane_loads(lane)).await?;
        Ok(n.unwrap_or(0))
    }

    /// Pending task ids whose deadline is at or before `at_ms`.
    pub async fn overdue(&self, at_ms: u64, limit: usize) -> Result<Vec<String>, ProducerError> {
        let mut c = self.conn.clone();
        Ok(c.zrangebyscore_limit(self.keys.deadlines(), "-inf", at_ms, 0, limit as isize).await?)
    }

    /// Removes a task that was admitted but never handed to the broker (still
    /// `pending`), so that its caller may submit the same task_id again. Returns
    /// whether it was removed; a task in any other state is left alone.
    pub async fn forget_unpublished(&self, task_id: &str) -> Result<bool, ProducerError> {
        let mut c = self.conn.clone();
        let n: i64 = FORGET_UNPUBLISHED_SCRIPT
            .key(self.keys.task(task_id))
            .key(self.keys.deadlines())
            .arg(task_id)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Drops a deadline entry (its task is gone or no longer pending).
    pub async fn forget_deadline(&self, task_id: &str) -> Result<(), ProducerError> {
        let mut c = self.conn.clone();
        let _: i64 = c.zrem(self.keys.deadlines(), task_id).await?;
        Ok(())
    }
}
