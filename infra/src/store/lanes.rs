//! Lanes: health as routing reads it, the disabled flag operators set, the fallback
//! record of a lane whose requests go degraded, and cold-start counts.

use super::Store;
use crate::error::InfraError;
use redis::AsyncCommands;
use std::collections::HashMap;
use warmlane_shared::{now_ms, FallbackCause, LaneHealth};

/// A lane's active fallback: its requests go to the degraded queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFallback {
    /// The latest cause.
    pub cause: FallbackCause,
    /// When the fallback began, unix ms.
    pub since_ms: u64,
    /// When the latest request went degraded, unix ms; an evicted lane worker
    /// re-warms when one arrives after its eviction.
    pub last_ms: Option<u64>,
}

/// An operator's (or the platform's) flag that keeps a lane out of routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneDisabled {
    /// `manual` or `quota`.
    pub cause: FallbackCause,
    /// When the lane was disabled, unix ms.
    pub since_ms: u64,
    /// The operator's note.
    pub note: String,
}

/// Reads a unix-ms field of a hash (0 or `None` when absent or unreadable).
fn ms_field(h: &HashMap<String, String>, key: &str) -> Option<u64> {
    h.get(key).and_then(|s| s.parse().ok())
}

impl Store {
    /// Health of a lane: fresh ready workers and the disabled flag.
    pub async fn lane_health(
        &self,
        model: &str,
        dedicated: bool,
        heartbeat_ttl_ms: u64,
    ) -> Result<LaneHealth, InfraError> {
        let mut c = self.conn.clone();
        let since = now_ms().saturating_sub(heartbeat_ttl_ms);
        let (warm, cause): (u32, Option<String>) = redis::pipe()
            .zcount(self.keys.lane_workers(model), since, "+inf")
            .hget(self.keys.lane_disabled(model), "cause")
            .query_async(&mut c)
            .await?;
        Ok(LaneHealth {
            dedicated,
            warm_workers: warm,
            disabled: cause.as_deref().and_then(FallbackCause::parse),
            consumers: None,
        })
    }

    /// Takes a lane out of routing with a cause (`manual` by operators, `quota` by the platform).
    pub async fn disable_lane(&self, model: &str, cause: FallbackCause, note: &str) -> Result<(), InfraError> {
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
    pub async fn enable_lane(&self, model: &str) -> Result<bool, InfraError> {
        let mut c = self.conn.clone();
        let removed: u32 = c.del(self.keys.lane_disabled(model)).await?;
        Ok(removed > 0)
    }

    /// The disabled flag of a lane, if set.
    pub async fn lane_disabled(&self, model: &str) -> Result<Option<LaneDisabled>, InfraError> {
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(self.keys.lane_disabled(model)).await?;
        Ok(h.get("cause").and_then(|c| FallbackCause::parse(c)).map(|cause| LaneDisabled {
            cause,
            since_ms: ms_field(&h, "since_ms").unwrap_or(0),
            note: h.get("note").cloned().unwrap_or_default(),
        }))
    }

    /// Marks a lane's fallback active; returns true when this starts a new activation.
    pub async fn fallback_started(&self, model: &str, cause: FallbackCause) -> Result<bool, InfraError> {
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
    pub async fn fallback_ended(&self, model: &str) -> Result<Option<(FallbackCause, u64)>, InfraError> {
        let mut c = self.conn.clone();
        let key = self.keys.lane_fallback(model);
        let (h, _): (HashMap<String, String>, i64) = redis::pipe().hgetall(&key).del(&key).query_async(&mut c).await?;
        let since = ms_field(&h, "since_ms");
        let cause = h.get("cause").and_then(|c| FallbackCause::parse(c));
        Ok(since.zip(cause).map(|(since, cause)| (cause, now_ms().saturating_sub(since))))
    }

    /// The active fallback of a lane, if any.
    pub async fn fallback(&self, model: &str) -> Result<Option<ActiveFallback>, InfraError> {
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(self.keys.lane_fallback(model)).await?;
        Ok(h.get("cause").and_then(|c| FallbackCause::parse(c)).map(|cause| ActiveFallback {
            cause,
            since_ms: ms_field(&h, "since_ms").unwrap_or(0),
            last_ms: ms_field(&h, "last_ms"),
        }))
    }

    /// Counts a model load (cold start) of a lane; returns the new total.
    pub async fn count_load(&self, lane: &str) -> Result<u64, InfraError> {
        let mut c = self.conn.clone();
        Ok(c.incr(self.keys.lane_loads(lane), 1).await?)
    }

    /// Loads (cold starts) of a lane so far.
    pub async fn loads(&self, lane: &str) -> Result<u64, InfraError> {
        let mut c = self.conn.clone();
        let n: Option<u64> = c.get(self.keys.lane_loads(lane)).await?;
        Ok(n.unwrap_or(0))
    }
}
