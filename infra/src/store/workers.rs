//! Worker heartbeats: a JSON value per worker with a TTL, and per-lane sorted sets
//! of ready workers scored by their last heartbeat.

use super::Store;
use crate::error::InfraError;
use redis::AsyncCommands;
use warmlane_shared::Heartbeat;

impl Store {
    /// Writes a heartbeat: the worker's JSON with a TTL, and its rank in the lane's ready set.
    pub async fn heartbeat(&self, hb: &Heartbeat, ttl_ms: u64) -> Result<(), InfraError> {
        let mut c = self.conn.clone();
        let json =
            serde_json::to_string(hb).map_err(|e| InfraError::Corrupt { what: "heartbeat", source: e.into() })?;
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
    pub async fn remove_worker(&self, worker_id: &str, lane: &str) -> Result<(), InfraError> {
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
    pub async fn workers(&self) -> Result<Vec<Heartbeat>, InfraError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.zrange(self.keys.all_workers(), 0, -1).await?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.worker(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|v| match serde_json::from_str(&v) {
                Ok(hb) => Some(hb),
                Err(e) => {
                    // A worker of another version: leave it out rather than fail the whole list.
                    tracing::debug!(error = %e, "skipping an unreadable heartbeat");
                    None
                }
            })
            .collect())
    }
}
