//! Whether a worker's heartbeat still reaches Redis, for `GET /health` on its
//! metrics listener (`--metrics-addr`), which container healthchecks probe.
//!
//! The worker calls [`beat`] after each heartbeat Redis stored. `/health` answers
//! 200 while the last one is younger than the staleness limit the worker gave (its
//! heartbeat lifetime, after which routing counts it gone too), and 503 before the
//! first one and after a stale one. So a healthy container is one the fleet can see:
//! a hung heartbeat loop or a Redis the worker cannot reach turns it unhealthy.
//! The verdict is [`verdict`], a pure function; the state is two process-wide atomics,
//! as a process has one heartbeat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static LAST_BEAT_MS: AtomicU64 = AtomicU64::new(0);
static STALE_AFTER_MS: AtomicU64 = AtomicU64::new(0);

/// What `/health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No heartbeat has been stored yet (the worker is connecting or loading).
    Starting,
    /// The last stored heartbeat is `age_ms` old, within the limit.
    Alive {
        /// Milliseconds since the last stored heartbeat.
        age_ms: u64,
    },
    /// The last stored heartbeat is `age_ms` old, past the limit.
    Stale {
        /// Milliseconds since the last stored heartbeat.
        age_ms: u64,
    },
}

impl Liveness {
    /// Whether a healthcheck should pass.
    pub fn is_healthy(self) -> bool {
        matches!(self, Liveness::Alive { .. })
    }
}

/// Records a heartbeat stored now; it stays fresh for `stale_after`.
pub fn beat(stale_after: Duration) {
    STALE_AFTER_MS.store(u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    LAST_BEAT_MS.store(warmlane_shared::now_ms().max(1), Ordering::Relaxed);
}

/// This process's liveness now.
pub fn current() -> Liveness {
    verdict(LAST_BEAT_MS.load(Ordering::Relaxed), warmlane_shared::now_ms(), STALE_AFTER_MS.load(Ordering::Relaxed))
}

/// The verdict for a last heartbeat at `last_ms` (0: none yet), at `now_ms`, with a
/// staleness limit. A clock that stepped back counts as age 0. Pure.
pub fn verdict(last_ms: u64, now_ms: u64, stale_after_ms: u64) -> Liveness {
    if last_ms == 0 {
        return Liveness::Starting;
    }
    let age_ms = now_ms.saturating_sub(last_ms);
    if age_ms <= stale_after_ms {
        Liveness::Alive { age_ms }
    } else {
        Liveness::Stale { age_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let cases = [
            (0, 5_000, 10_000, Liveness::Starting),
            (1_000, 1_000, 10_000, Liveness::Alive { age_ms: 0 }),
            (1_000, 11_000, 10_000, Liveness::Alive { age_ms: 10_000 }),
            (1_000, 11_001, 10_000, Liveness::Stale { age_ms: 10_001 }),
            (5_000, 4_000, 10_000, Liveness::Alive { age_ms: 0 }),
            (1_000, 2_000, 0, Liveness::Stale { age_ms: 1_000 }),
        ];
        for (last, now, limit, want) in cases {
            assert_eq!(verdict(last, now, limit), want, "last {last} now {now} limit {limit}");
        }
        assert!(Liveness::Alive { age_ms: 3 }.is_healthy());
        assert!(!Liveness::Starting.is_healthy() && !Liveness::Stale { age_ms: 1 }.is_healthy());
    }
}
