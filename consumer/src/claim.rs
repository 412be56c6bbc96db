//! Late claims: a lane worker runs a first delivery without a `START` round trip,
//! and claims the task only if its run gets long.
//!
//! `START` marks a task `processing`, takes it out of the backstop's deadline index
//! and counts the attempt before the engine runs. For a first delivery on a warm
//! lane the count is known (1, as the broker says the message was never delivered
//! before), and a task whose deadline is far off cannot be answered by the backstop
//! meanwhile; so the worker starts at once and the reply records the attempt
//! (`Store::finish_run`). If the run is still going after
//! `lanes.late_claim_ms` (250 ms by default), the background runtime writes the
//! `START` then: from there on the task reads `processing`, with its progress, as
//! before. A crash before the reply means a redelivery, which counts that first
//! delivery (`StartedBy`).
//!
//! Shorter runs go from `pending` to `done` directly and cost one Redis round
//! trip less. `late_claim_ms: 0` claims every delivery before its run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warmlane_infra::store::{Started, StartedBy};
use warmlane_infra::{Report, Store};
use warmlane_shared::{now_ms, Settings, ValidRequest};

/// Deadline left over the late claim's delay for a first delivery to start
/// unclaimed, for clocks of hosts that differ a little.
pub const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// How long a first delivery runs before the worker claims it; `None`: late claims off.
pub fn claim_after(settings: &Settings) -> Option<Duration> {
    (settings.lanes.late_claim_ms > 0).then(|| Duration::from_millis(settings.lanes.late_claim_ms))
}

/// Whether a first delivery of `req` on a warm lane may start without `START`: late
/// claims are on, and its backstop deadline (from its admission time) is far
/// enough off that the backstop cannot answer it before the late claim. Requests
/// without an admission time (published by services directly) take the `START` path.
pub fn may_start_unclaimed(settings: &Settings, req: &ValidRequest, redelivered: bool, now_ms: u64) -> bool {
    let Some(after) = claim_after(settings) else { return false };
    if redelivered {
        return false;
    }
    let Some(admitted) = req.submitted_at_ms else { return false };
    let margin = (after + CLOCK_SLACK).as_millis() as u64;
    now_ms.saturating_add(margin) < settings.lane_deadline_ms(admitted)
}

struct Armed {
    req: ValidRequest,
    started_at_ms: u64,
    since: Instant,
}

/// The run the lane thread has going unclaimed, if any.
#[derive(Default)]
pub struct Claims {
    armed: Mutex<Option<Armed>>,
}

impl Claims {
    /// The lane thread starts `req` unclaimed.
    pub fn arm(&self, req: &ValidRequest, started_at_ms: u64) {
        *self.lock() = Some(Armed { req: req.clone(), started_at_ms, since: Instant::now() });
    }

    /// The run ended (claimed or not).
    pub fn disarm(&self) {
        self.lock().take();
    }

    fn take_due(&self, after: Duration) -> Option<Armed> {
        let mut armed = self.lock();
        if armed.as_ref().is_some_and(|a| a.since.elapsed() >= after) {
            armed.take()
        } else {
            None
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Armed>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Claims runs that pass `after`; runs on the worker's background runtime for the
/// worker's life.
pub async fn claim_late_runs(claims: Arc<Claims>, after: Duration, store: Store, lane: String, worker_id: String) {
    let mut tick = tokio::time::interval((after / 2).max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(run) = claims.take_due(after) else { continue };
        let task_id = &run.req.task_id;
        match store
            .start_as(&run.req, &lane, &worker_id, StartedBy { redelivered: false, started_at_ms: run.started_at_ms })
            .await
        {
            Ok(Started::Attempt(n)) => {
                tracing::debug!(task_id = %task_id, attempt = n, running_ms = now_ms().saturating_sub(run.started_at_ms), "claimed a long run")
            }
            Ok(Started::AlreadyFinished) => {
                tracing::debug!(task_id = %task_id, "a long run's task was answered meanwhile")
            }
            // The reply still records the attempt; until then the task reads `pending`.
            Err(e) => tracing::warn!(task_id = %task_id, error = %Report(&e), "could not claim a long run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Settings::load(&dir.join("inference_settings.json")).expect("settings")
    }

    fn req(submitted: Option<u64>) -> ValidRequest {
        let s = settings();
        let json = serde_json::json!({"v": 1, "task_id": "t1", "model": "anisora", "prompt": "a cat", "steps": 8, "cfg": 5.0,
                                      "width": 32, "height": 32, "frames": 4});
        let mut req = warmlane_shared::validate_json(&json, &s).expect("valid");
        req.submitted_at_ms = submitted;
        req
    }

    #[test]
    fn only_first_deliveries_admitted_well_before_their_deadline_start_unclaimed() {
        let s = settings();
        let now = 10_000_000;
        assert!(may_start_unclaimed(&s, &req(Some(now)), false, now));
        assert!(!may_start_unclaimed(&s, &req(Some(now)), true, now), "a redelivery takes START");
        assert!(!may_start_unclaimed(&s, &req(None), false, now), "no admission time");
        let deadline = s.lane_deadline_ms(now);
        let margin = s.lanes.late_claim_ms + CLOCK_SLACK.as_millis() as u64;
        assert!(may_start_unclaimed(&s, &req(Some(now)), false, deadline - margin - 1));
        assert!(!may_start_unclaimed(&s, &req(Some(now)), false, deadline - margin));
        assert!(!may_start_unclaimed(&s, &req(Some(now)), false, deadline + 5_000));
        let mut off = s.clone();
        off.lanes.late_claim_ms = 0;
        assert!(!may_start_unclaimed(&off, &req(Some(now)), false, now), "late claims off");
    }

    #[test]
    fn a_run_is_due_for_its_claim_only_after_the_delay_and_once() {
        let claims = Claims::default();
        assert!(claims.take_due(Duration::ZERO).is_none());
        claims.arm(&req(Some(1)), 1);
        assert!(claims.take_due(Duration::from_secs(3600)).is_none());
        assert_eq!(claims.take_due(Duration::ZERO).map(|a| a.started_at_ms), Some(1));
        assert!(claims.take_due(Duration::ZERO).is_none(), "claimed once");
        claims.arm(&req(Some(1)), 2);
        claims.disarm();
        assert!(claims.take_due(Duration::ZERO).is_none(), "a finished run is not claimed");
    }
}
