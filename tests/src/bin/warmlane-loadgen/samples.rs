//! Latency samples with their percentiles, and the pooled Redis connections callers wait on.

use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;
use warmlane_tests::redis_url;

#[derive(Default)]
pub(crate) struct Samples(pub(crate) Vec<f64>);

impl Samples {
    pub(crate) fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub(crate) fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }

    pub(crate) fn line(&self, name: &str) -> String {
        format!(
            "{name:<34} p50 {:>8.3} ms   p95 {:>8.3} ms   p99 {:>8.3} ms   (n={})",
            self.pct(50.0),
            self.pct(95.0),
            self.pct(99.0),
            self.0.len()
        )
    }
}

/// Idle Redis connections for callers waiting on replies (BLPOP blocks its connection,
/// so each waiter takes one): both the bare loop and the fleet run wait through it,
/// so neither pays a connect per request.
#[derive(Clone)]
pub(crate) struct Waiters {
    client: redis::Client,
    idle: Arc<std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>>,
}

impl Waiters {
    pub(crate) fn new() -> Waiters {
        Waiters { client: redis::Client::open(redis_url()).expect("Redis URL"), idle: Arc::default() }
    }

    /// BLPOP `key` for up to `secs`.
    pub(crate) async fn pop(&self, key: &str, secs: f64) -> Option<Vec<u8>> {
        let pooled = self.idle.lock().unwrap().pop();
        let mut c = match pooled {
            Some(c) => c,
            None => {
                let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                self.client.get_multiplexed_async_connection_with_config(&cfg).await.expect("Redis connection")
            }
        };
        let popped: Option<(String, Vec<u8>)> = c.blpop(key, secs).await.expect("BLPOP");
        self.idle.lock().unwrap().push(c);
        popped.map(|(_, v)| v)
    }
}

/// Milliseconds, fractional.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
