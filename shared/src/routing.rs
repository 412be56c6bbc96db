//! The routing decision of FR-020, as a pure function of lane health.
//!
//! Order: (1) the model's dedicated lane when it is ready and accepts the
//! publish, (2) the degraded queue when it accepts the publish, (3)
//! `queue_overloaded`. The broker's answer to each publish is I/O, so the
//! producer calls [`route`] first and [`after_lane_refused`] if the lane nacks.

use serde::{Deserialize, Serialize};

/// Why a request did not go to its dedicated lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackCause {
    /// No warm worker (or no consumer on its queue), or the lane queue is full, or
    /// the lane wait ran out.
    Capacity,
    /// The provider denied the lane (quota); set by the platform or an operator.
    Quota,
    /// An operator took the lane out.
    Manual,
}

impl FallbackCause {
    /// Stable string for replies, hashes and metric tags.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackCause::Capacity => "capacity",
            FallbackCause::Quota => "quota",
            FallbackCause::Manual => "manual",
        }
    }

    /// Parses the stable string.
    pub fn parse(s: &str) -> Option<FallbackCause> {
        [FallbackCause::Capacity, FallbackCause::Quota, FallbackCause::Manual].into_iter().find(|c| c.as_str() == s)
    }

    /// Parses a cause an operator (or the platform) may set on a lane: `manual` or
    /// `quota`. `capacity` is the fleet's own finding, never set by hand.
    pub fn parse_operator(s: &str) -> Option<FallbackCause> {
        FallbackCause::parse(s).filter(|c| *c != FallbackCause::Capacity)
    }
}

/// What the producer knows about a lane when it routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneHealth {
    /// Whether the model has a dedicated lane at all.
    pub dedicated: bool,
    /// Workers whose heartbeat is fresh and whose model is warm.
    pub warm_workers: u32,
    /// Set when the lane is disabled, with its cause.
    pub disabled: Option<FallbackCause>,
    /// Consumers of the lane queue as the broker reported them recently; `None` when
    /// unknown (not yet asked, the broker not answering, the answer stale). A known
    /// `0` vetoes the lane: a killed worker's heartbeat stays fresh for its TTL, but
    /// the broker drops its consumer as soon as the connection closes.
    pub consumers: Option<u32>,
}

/// Where to publish first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The model's dedicated lane.
    Lane,
    /// The degraded queue, and why.
    Degraded(FallbackCause),
}

/// FR-020 step (1): the dedicated lane when it is ready, else degraded with the cause.
/// Ready: a warm worker's heartbeat is fresh and the broker does not say the lane
/// queue has no consumer (an unknown count leaves the heartbeat rule alone).
pub fn route(health: &LaneHealth) -> Route {
    if let Some(cause) = health.disabled {
        return Route::Degraded(cause);
    }
    if !health.dedicated || health.warm_workers == 0 || health.consumers == Some(0) {
        return Route::Degraded(FallbackCause::Capacity);
    }
    Route::Lane
}

/// FR-020 step (2): the lane refused the publish (full or unroutable); the request
/// goes degraded with this cause.
pub fn after_lane_refused() -> FallbackCause {
    FallbackCause::Capacity
}

/// How long a degraded message has waited at `now_ms`: since it entered the degraded
/// queue (the producer's header), else since admission, else not at all. The worker
/// and the reaper answer `wait_timeout` past `degraded.max_wait_ms` by this measure.
pub fn degraded_waited_ms(enqueued_ms: Option<u64>, submitted_at_ms: Option<u64>, now_ms: u64) -> u64 {
    now_ms.saturating_sub(enqueued_ms.or(submitted_at_ms).unwrap_or(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        let h = |dedicated, warm_workers, disabled| LaneHealth { dedicated, warm_workers, disabled, consumers: None };
        let seen = |warm_workers, consumers| LaneHealth { consumers: Some(consumers), ..h(true, warm_workers, None) };
        let cases = [
            (h(true, 1, None), Route::Lane),
            (h(true, 3, None), Route::Lane),
            (h(true, 0, None), Route::Degraded(FallbackCause::Capacity)),
            (h(false, 2, None), Route::Degraded(FallbackCause::Capacity)),
            (h(true, 2, Some(FallbackCause::Manual)), Route::Degraded(FallbackCause::Manual)),
            (h(true, 2, Some(FallbackCause::Quota)), Route::Degraded(FallbackCause::Quota)),
            (h(true, 0, Some(FallbackCause::Quota)), Route::Degraded(FallbackCause::Quota)),
            // The broker's consumer count only vetoes: a dead worker's fresh heartbeat...
            (seen(1, 0), Route::Degraded(FallbackCause::Capacity)),
            // ...while a consumer without a warm heartbeat (loading, evicted) is not ready either.
            (seen(0, 1), Route::Degraded(FallbackCause::Capacity)),
            (seen(1, 1), Route::Lane),
            (seen(1, 3), Route::Lane),
            (
                LaneHealth { consumers: Some(0), ..h(true, 1, Some(FallbackCause::Manual)) },
                Route::Degraded(FallbackCause::Manual),
            ),
        ];
        for (health, want) in cases {
            assert_eq!(route(&health), want, "{health:?}");
        }
        assert_eq!(after_lane_refused(), FallbackCause::Capacity);
    }

    #[test]
    fn degraded_waits_count_from_entry_then_admission() {
        assert_eq!(degraded_waited_ms(Some(100), Some(50), 130), 30);
        assert_eq!(degraded_waited_ms(None, Some(50), 130), 80);
        assert_eq!(degraded_waited_ms(None, None, 130), 0);
        assert_eq!(degraded_waited_ms(Some(200), None, 130), 0, "a clock ahead of ours is no wait");
    }

    #[test]
    fn causes_round_trip() {
        for c in [FallbackCause::Capacity, FallbackCause::Quota, FallbackCause::Manual] {
            assert_eq!(FallbackCause::parse(c.as_str()), Some(c));
        }
        assert_eq!(FallbackCause::parse_operator("quota"), Some(FallbackCause::Quota));
        assert_eq!(FallbackCause::parse_operator("manual"), Some(FallbackCause::Manual));
        assert_eq!(FallbackCause::parse_operator("capacity"), None);
        assert_eq!(FallbackCause::parse_operator("Manual"), None);
    }
}
