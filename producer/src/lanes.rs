//! The fleet's lanes as operators see them: readiness, warm workers, queue depth,
//! the disabled flag and an active fallback per model, and the degraded queue.
//! One typed answer serves `warmlane-producer lanes`, `GET /lanes` and the dashboard.

use crate::producer::Producer;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use warmlane_infra::store::ActiveFallback;
use warmlane_infra::InfraError;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::{now_ms, route, FallbackCause, Heartbeat, Route, Settings};

/// How many of the earliest deadlines to inspect for the degraded queue's oldest task.
const OLDEST_SCAN: usize = 64;

/// Every lane, the degraded queue and the live workers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LanesStatus {
    /// Per model, in name order.
    pub lanes: BTreeMap<String, LaneStatus>,
    /// The degraded queue and its workers.
    pub degraded: DegradedStatus,
    /// Every live worker's last heartbeat.
    #[schema(value_type = Vec<Object>)]
    pub workers: Vec<Heartbeat>,
}

/// One model's lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LaneStatus {
    /// Whether routing sends the model's requests to its lane now.
    pub ready: bool,
    /// Whether the model has a lane of its own.
    pub dedicated: bool,
    /// Workers with a fresh heartbeat and the model warm.
    pub warm_workers: u32,
    /// Consumers of the lane queue as the broker said within the last 2 s (null when
    /// unknown or no lane); 0 keeps the lane out of routing whatever the heartbeats say.
    pub consumers: Option<u32>,
    /// Ready messages in the lane queue (null when unknown or no lane).
    pub queue_depth: Option<u32>,
    /// Model loads of the lane's workers so far.
    pub cold_starts: u64,
    /// Set while an operator (or the platform) keeps the lane out of routing.
    pub disabled: Option<Disabled>,
    /// Set while the model's requests go degraded.
    pub fallback: Option<Fallback>,
}

/// The disabled flag of a lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Disabled {
    /// `manual` or `quota`.
    #[schema(value_type = String)]
    pub cause: FallbackCause,
    /// Since when, unix ms.
    pub since_ms: u64,
    /// The operator's note.
    pub note: String,
}

/// An active fallback of a lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Fallback {
    /// Always true (the field is absent when no fallback is active).
    pub active: bool,
    /// The latest cause.
    #[schema(value_type = String)]
    pub cause: FallbackCause,
    /// Since when, unix ms.
    pub since_ms: u64,
    /// For how long so far.
    pub for_ms: u64,
}

/// The degraded queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DegradedStatus {
    /// Ready messages (null when unknown).
    pub queue_depth: Option<u32>,
    /// Its length limit.
    pub max_depth: u32,
    /// Longest a request may wait in it.
    pub max_wait_ms: u64,
    /// Degraded workers alive.
    pub workers: usize,
    /// Model loads of the degraded workers so far.
    pub cold_starts: u64,
    /// Wait of the oldest task still pending in the degraded queue (null when none).
    pub oldest_wait_ms: Option<u64>,
}

/// Reads every lane's status. Queue depths and consumer counts are left unknown
/// when the broker does not answer; Redis failures fail the whole read. Readiness is
/// routing's: the producer's cached consumer counts as well as the heartbeats.
pub async fn status(producer: &Producer) -> Result<LanesStatus, InfraError> {
    let (settings, store, topology) = (producer.settings(), producer.store(), producer.topology());
    producer.lane_consumers().first_pass().await;
    let workers = store.workers().await?;
    let depths = warmlane_infra::amqp::queue_depths(producer.publisher(), topology, settings).await.unwrap_or_default();
    let mut lanes = BTreeMap::new();
    for (model, m) in &settings.models {
        let mut health = store.lane_health(model, m.dedicated_lane, settings.lanes.heartbeat_ttl_ms).await?;
        health.consumers = m.dedicated_lane.then(|| producer.lane_consumers().get(model)).flatten();
        let disabled = store.lane_disabled(model).await?;
        let fallback = store.fallback(model).await?;
        let ready = route(&health) == Route::Lane;
        let shown = shown_fallback(ready, disabled.is_some(), fallback.as_ref(), now_ms());
        let status = LaneStatus {
            ready,
            dedicated: m.dedicated_lane,
            warm_workers: health.warm_workers,
            consumers: health.consumers,
            queue_depth: depths.get(&topology.lane_queue(model)).copied(),
            cold_starts: store.loads(model).await?,
            disabled: disabled.map(|d| Disabled { cause: d.cause, since_ms: d.since_ms, note: d.note }),
            fallback: shown,
        };
        lanes.insert(model.clone(), status);
    }
    let oldest = store.earliest_pending_on(DEGRADED_LANE, OLDEST_SCAN).await?;
    let degraded = DegradedStatus {
        queue_depth: depths.get(&topology.degraded_queue()).copied(),
        max_depth: settings.degraded.max_depth,
        max_wait_ms: settings.degraded.max_wait_ms,
        workers: workers.iter().filter(|w| w.lane == DEGRADED_LANE).count(),
        cold_starts: store.loads(DEGRADED_LANE).await?,
        oldest_wait_ms: oldest.map(|deadline| degraded_wait_ms(deadline, now_ms(), settings)),
    };
    Ok(LanesStatus { lanes, degraded, workers })
}

/// Pure: the fallback to show. The record is ended by the next request that takes the
/// lane, but what people see must not wait for one: a lane that routes to itself
/// again shows none, and an operator's cause (`manual`, `quota`) goes with the
/// disabled flag that caused it.
pub fn shown_fallback(ready: bool, disabled: bool, fallback: Option<&ActiveFallback>, now: u64) -> Option<Fallback> {
    let f = fallback?;
    let operator = matches!(f.cause, FallbackCause::Manual | FallbackCause::Quota);
    if ready || (operator && !disabled) {
        return None;
    }
    Some(Fallback { active: true, cause: f.cause, since_ms: f.since_ms, for_ms: now.saturating_sub(f.since_ms) })
}

/// Pure: how long a degraded task with this deadline has waited at `now` (a degraded
/// task's deadline is its entry time plus the degraded wait and grace).
pub fn degraded_wait_ms(deadline_ms: u64, now: u64, settings: &Settings) -> u64 {
    let entered = deadline_ms.saturating_sub(settings.degraded.max_wait_ms + settings.degraded.expiry_grace_ms);
    now.saturating_sub(entered)
}

/// `warmlane-producer lanes` for people: one row per lane, then the degraded queue.
pub fn table(status: &LanesStatus) -> String {
    let dash = || "-".to_string();
    let mut rows = vec![["LANE", "READY", "WARM", "DEPTH", "LOADS", "DISABLED", "FALLBACK"].map(str::to_string)];
    for (model, l) in &status.lanes {
        rows.push([
            model.clone(),
            if !l.dedicated {
                "no lane".into()
            } else if l.ready {
                "yes".into()
            } else {
                "no".into()
            },
            l.warm_workers.to_string(),
            l.queue_depth.map_or_else(dash, |d| d.to_string()),
            l.cold_starts.to_string(),
            l.disabled.as_ref().map_or_else(dash, |d| d.cause.as_str().to_string()),
            l.fallback.as_ref().map_or_else(dash, |f| format!("{} for {} s", f.cause.as_str(), f.for_ms / 1000)),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let d = &status.degraded;
    out.push_str(&format!(
        "\ndegraded: depth {} of {}, {} worker(s), {} load(s), oldest waiting {}\n",
        d.queue_depth.map_or_else(dash, |v| v.to_string()),
        d.max_depth,
        d.workers,
        d.cold_starts,
        d.oldest_wait_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms} ms (limit {} ms)", d.max_wait_ms)),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_wait_counts_from_entry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../inference_settings.json");
        let s = Settings::load(std::path::Path::new(path)).unwrap();
        let entered = 1_000_000;
        let deadline = entered + s.degraded.max_wait_ms + s.degraded.expiry_grace_ms;
        assert_eq!(degraded_wait_ms(deadline, entered + 1234, &s), 1234);
        assert_eq!(degraded_wait_ms(deadline, entered - 5, &s), 0);
    }

    #[test]
    fn a_fallback_shows_only_while_it_is_true() {
        let record = |cause| ActiveFallback { cause, since_ms: 1_000, last_ms: Some(2_000) };
        // (ready, disabled, recorded cause, shown)
        let cases = [
            (true, false, Some(FallbackCause::Quota), None),
            (true, false, Some(FallbackCause::Capacity), None),
            (false, true, Some(FallbackCause::Quota), Some(FallbackCause::Quota)),
            (false, false, Some(FallbackCause::Manual), None),
            (false, false, Some(FallbackCause::Capacity), Some(FallbackCause::Capacity)),
            (false, false, None, None),
        ];
        for (ready, disabled, cause, want) in cases {
            let shown = shown_fallback(ready, disabled, cause.map(record).as_ref(), 4_500);
            assert_eq!(shown.as_ref().map(|f| f.cause), want, "ready {ready}, disabled {disabled}, {cause:?}");
            if let Some(f) = shown {
                assert_eq!((f.since_ms, f.for_ms), (1_000, 3_500));
            }
        }
    }

    #[test]
    fn the_table_has_a_row_per_lane_and_the_degraded_queue() {
        let lane = |ready, depth| LaneStatus {
            ready,
            dedicated: true,
            warm_workers: u32::from(ready),
            consumers: Some(u32::from(ready)),
            queue_depth: depth,
            cold_starts: 1,
            disabled: None,
            fallback: None,
        };
        let mut disabled = lane(false, None);
        disabled.disabled = Some(Disabled { cause: FallbackCause::Quota, since_ms: 1, note: String::new() });
        disabled.fallback = Some(Fallback { active: true, cause: FallbackCause::Quota, since_ms: 1, for_ms: 12_500 });
        let status = LanesStatus {
            lanes: BTreeMap::from([("anisora".to_string(), lane(true, Some(3))), ("wan-tiny".to_string(), disabled)]),
            degraded: DegradedStatus {
                queue_depth: Some(2),
                max_depth: 25,
                max_wait_ms: 30_000,
                workers: 1,
                cold_starts: 4,
                oldest_wait_ms: Some(900),
            },
            workers: Vec::new(),
        };
        let text = table(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "LANE      READY  WARM  DEPTH  LOADS  DISABLED  FALLBACK");
        assert_eq!(lines[1], "anisora   yes    1     3      1      -         -");
        assert_eq!(lines[2], "wan-tiny  no     0     -      1      quota     quota for 12 s");
        assert_eq!(lines[4], "degraded: depth 2 of 25, 1 worker(s), 4 load(s), oldest waiting 900 ms (limit 30000 ms)");
    }
}
