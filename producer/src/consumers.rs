//! How many consumers each dedicated lane queue has, as the broker last said,
//! cached per process and refreshed in the background.
//!
//! A lane's heartbeat stays fresh for its TTL (10 s by default) after its worker
//! dies, and requests routed to the lane meanwhile wait for the lane wait (30 s)
//! before they move degraded. The broker drops a consumer as soon as its
//! connection closes, so a passive declare every [`REFRESH_EVERY`] notices a
//! killed worker within a few hundred milliseconds, without a broker round trip
//! per request. Routing only uses a count seen within [`FRESH_FOR`]; an older one,
//! or none (the broker not answering), is unknown and leaves the heartbeat rule
//! alone ([`warmlane_shared::route`]).

use lapin::Channel;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warmlane_infra::amqp::{self, Publisher};
use warmlane_infra::{InfraError, Report};
use warmlane_shared::{Settings, Topology};

/// How often the background task asks the broker.
pub const REFRESH_EVERY: Duration = Duration::from_millis(250);

/// How long an answer counts. Past it the count is unknown and routing goes by the
/// heartbeats alone, as it does when the broker does not answer.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// Longest one pass waits for the broker before it counts as failed.
const PASS_LIMIT: Duration = Duration::from_secs(1);

/// One answer of the broker about a lane queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Consumers of the queue.
    pub consumers: u32,
    /// When the broker said so.
    pub at: Instant,
}

/// Pure: the count routing may use at `now`, a recent answer or unknown.
pub fn fresh(observed: Option<Observed>, now: Instant) -> Option<u32> {
    observed.filter(|o| now.saturating_duration_since(o.at) <= FRESH_FOR).map(|o| o.consumers)
}

type Seen = Arc<Mutex<HashMap<String, Observed>>>;

/// The cache, with the task that refreshes it; dropping it stops the task.
pub struct LaneConsumers {
    seen: Seen,
    passes: watch::Receiver<u64>,
    refresher: JoinHandle<()>,
}

impl LaneConsumers {
    /// Starts refreshing the counts of every dedicated lane queue on the current
    /// Tokio runtime, the first pass at once.
    pub fn start(publisher: Arc<Publisher>, topology: &Topology, settings: &Settings) -> LaneConsumers {
        let lanes: Vec<(String, String)> =
            settings.lane_models().map(|m| (m.to_string(), topology.lane_queue(m))).collect();
        let seen = Seen::default();
        let (passed, passes) = watch::channel(0);
        let refresher = tokio::spawn(refresh_forever(publisher, lanes, seen.clone(), passed));
        LaneConsumers { seen, passes, refresher }
    }

    /// The consumers of `model`'s lane queue when the broker said so recently, else `None`.
    pub fn get(&self, model: &str) -> Option<u32> {
        let observed = self.seen.lock().unwrap_or_else(PoisonError::into_inner).get(model).copied();
        fresh(observed, Instant::now())
    }

    /// Waits until a pass has seen at least `n` consumers of `model`'s lane queue, at
    /// most `limit`; whether it did. Whoever starts a worker and then routes to it
    /// (tests, tools) waits for this rather than for the heartbeat alone.
    pub async fn seen_at_least(&self, model: &str, n: u32, limit: Duration) -> bool {
        let mut passes = self.passes.clone();
        let seen = passes.wait_for(|_| self.get(model).is_some_and(|c| c >= n));
        let seen = tokio::time::timeout(limit, seen).await.is_ok_and(|r| r.is_ok());
        seen
    }

    /// Waits until the first pass has ended, well or not (at most about a second), so
    /// that a short-lived process (the CLI's `lanes`) shows what routing would do.
    pub async fn first_pass(&self) {
        let mut passes = self.passes.clone();
        let _ = tokio::time::timeout(PASS_LIMIT * 2, passes.wait_for(|n| *n > 0)).await;
    }
}

impl Drop for LaneConsumers {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn refresh_forever(
    publisher: Arc<Publisher>,
    lanes: Vec<(String, String)>,
    seen: Seen,
    passed: watch::Sender<u64>,
) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut channel = None;
    let mut failing = false;
    loop {
        tick.tick().await;
        let pass = tokio::time::timeout(PASS_LIMIT, refresh_once(&publisher, &mut channel, &lanes, &seen)).await;
        match pass {
            Ok(Ok(())) if failing => {
                failing = false;
                tracing::info!("lane consumer counts available again");
            }
            Ok(Ok(())) => {}
            failed => {
                // A missing queue closes the channel, and a timed-out one may be stuck.
                channel = None;
                if !failing {
                    failing = true;
                    let error = match failed {
                        Ok(Err(e)) => Report(&e).to_string(),
                        _ => format!("no answer within {} ms", PASS_LIMIT.as_millis()),
                    };
                    tracing::warn!(%error, "lane consumer counts unavailable; routing by heartbeats alone until they are");
                }
            }
        }
        passed.send_modify(|n| *n += 1);
    }
}

/// Asks the broker about every lane queue on one kept channel, opened when needed.
async fn refresh_once(
    publisher: &Publisher,
    channel: &mut Option<Channel>,
    lanes: &[(String, String)],
    seen: &Seen,
) -> Result<(), InfraError> {
    let open = match channel.take() {
        Some(c) if c.status().connected() => c,
        _ => publisher.channel_plain().await?,
    };
    for (model, queue) in lanes {
        let counts = amqp::queue_counts(&open, queue).await?;
        let observed = Observed { consumers: counts.consumers, at: Instant::now() };
        seen.lock().unwrap_or_else(PoisonError::into_inner).insert(model.clone(), observed);
    }
    *channel = Some(open);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recent_answer_counts() {
        let now = Instant::now() + Duration::from_secs(60);
        let seen = |consumers, ago_ms| Some(Observed { consumers, at: now - Duration::from_millis(ago_ms) });
        // (observation, count routing may use)
        let cases = [
            (None, None),
            (seen(0, 0), Some(0)),
            (seen(0, 250), Some(0)),
            (seen(2, 1_999), Some(2)),
            (seen(0, 2_000), Some(0)),
            (seen(0, 2_001), None),
            (seen(1, 30_000), None),
        ];
        for (observed, want) in cases {
            assert_eq!(fresh(observed, now), want, "{observed:?}");
        }
        let ahead = Some(Observed { consumers: 1, at: now + Duration::from_millis(5) });
        assert_eq!(fresh(ahead, now), Some(1), "an answer stamped after `now` (a racing refresh) is fresh");
    }
}
