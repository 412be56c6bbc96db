//! Capped exponential backoff with full jitter, for reconnect loops, and the one
//! connect-with-retries loop every binary uses at start.
//!
//! The arithmetic is pure; the caller sleeps on the tokio timer, never a thread.

use std::future::Future;
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

/// Runs `attempt` until it succeeds or `give_up_after` has passed, sleeping a
/// [`Backoff::reconnect`] delay between tries and logging each failure as `what`.
/// The last error is returned when time runs out.
pub async fn retry<T, E, F, Fut>(what: &str, give_up_after: Duration, attempt: F) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_while(what, give_up_after, attempt, |_| true).await
}

/// Like [`retry`], but an error for which `retryable` is false is returned at once
/// (a refused declaration will not get better by waiting).
pub async fn retry_while<T, E, F, Fut>(
    what: &str,
    give_up_after: Duration,
    mut attempt: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::reconnect();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if started.elapsed() >= give_up_after || !retryable(&e) => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %crate::Report(&e), retry_in_ms = delay.as_millis() as u64, "{what} not reachable; retrying");
                tokio::time::sleep(delay).await;
            }
        }
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

    #[tokio::test(start_paused = true)]
    async fn retry_tries_until_success_or_the_deadline() {
        let mut calls = 0;
        let ok: Result<u32, std::io::Error> = retry("test", Duration::from_secs(60), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(std::io::Error::other("down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(ok.unwrap(), 3);

        let started = tokio::time::Instant::now();
        let err: Result<(), std::io::Error> =
            retry("test", Duration::from_secs(2), || async { Err(std::io::Error::other("still down")) }).await;
        assert_eq!(err.unwrap_err().to_string(), "still down");
        assert!(started.elapsed() >= Duration::from_secs(2), "gave up after {:?}", started.elapsed());

        // An error that waiting cannot fix ends the retries at once.
        let mut calls = 0;
        let err: Result<(), std::io::Error> = retry_while(
            "test",
            Duration::from_secs(60),
            || {
                calls += 1;
                async { Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "refused")) }
            },
            |e| e.kind() != std::io::ErrorKind::InvalidInput,
        )
        .await;
        assert_eq!((err.unwrap_err().to_string(), calls), ("refused".to_string(), 1));
    }
}
