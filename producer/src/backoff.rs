//! Capped exponential backoff with full jitter, for reconnect loops.
//!
//! Pure arithmetic; the caller sleeps on the tokio timer, never a thread.

use std::time::Duration;

/// Backoff state: attempt counter and bounds.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, doubles per attempt, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, attempt: 0 }
    }

    /// Reconnect defaults: 100 ms doubling to 5 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The ceiling of the next delay before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Next delay: uniform in [ceiling/2, ceiling] (jitter keeps a fleet from reconnecting in step).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        half + jitter
    }

    /// Call after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut last_ceiling = Duration::ZERO;
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling && d >= ceiling / 2, "{d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
            assert!(ceiling >= last_ceiling);
            last_ceiling = ceiling;
        }
        assert_eq!(last_ceiling, Duration::from_secs(1));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
