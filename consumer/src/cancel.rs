//! Cancels a worker has heard of: task ids announced on the cancel channel
//! (`Store::cancel`), kept for the task lifetime so that a cancelled task still in a
//! queue is skipped when it is delivered, and checked after every denoising step of
//! the run in progress. Checking costs no Redis round trip.
//!
//! Pub/sub does not replay, so after every (re)subscription the worker reads the
//! cancelled set (`Keys::cancelled`) to catch up, and only then says it hears
//! cancels ([`Cancels::heard`]). Until then a lane worker claims every delivery
//! (`START` refuses a cancelled task) instead of starting it unclaimed. A run whose
//! cancel was missed anyway still stops at its next progress write, which reads the
//! cancel flag and the reply.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warmlane_infra::{Report, Store};
use warmlane_shared::now_ms;

/// Most ids a worker keeps (the oldest are forgotten first; the cancelled set in
/// Redis keeps them all for the task lifetime).
pub const KEEP: usize = 100_000;

/// The ids heard, with when each was cancelled.
#[derive(Debug)]
pub struct Cancels {
    inner: Mutex<Recent>,
    heard: tokio::sync::watch::Sender<bool>,
    keep_for_ms: u64,
}

#[derive(Debug, Default)]
struct Recent {
    ids: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl Cancels {
    /// Ids are kept for `keep_for` (the task lifetime): a task id reused after its
    /// task expired is a new task.
    pub fn new(keep_for: Duration) -> Cancels {
        let heard = tokio::sync::watch::Sender::new(false);
        Cancels { inner: Mutex::default(), heard, keep_for_ms: keep_for.as_millis() as u64 }
    }

    /// Notes an id cancelled at `at_ms` (unix ms); beyond [`KEEP`] or past the task
    /// lifetime the oldest are forgotten.
    pub fn note(&self, task_id: &str, at_ms: u64) {
        let horizon = now_ms().saturating_sub(self.keep_for_ms);
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if at_ms >= horizon && r.ids.insert(task_id.to_string(), at_ms).is_none() {
            r.order.push_back((at_ms, task_id.to_string()));
        }
        while r.order.front().is_some_and(|(at, _)| *at < horizon) || r.order.len() > KEEP {
            if let Some((at, old)) = r.order.pop_front() {
                // Only if it was not noted again later.
                if r.ids.get(&old) == Some(&at) {
                    r.ids.remove(&old);
                }
            }
        }
    }

    /// Whether `task_id` was cancelled within the task lifetime.
    pub fn contains(&self, task_id: &str) -> bool {
        let horizon = now_ms().saturating_sub(self.keep_for_ms);
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.ids.get(task_id).is_some_and(|at| *at >= horizon)
    }

    /// Whether the worker is subscribed and caught up, so that a cancel of a task
    /// still queued is known when the task is delivered.
    pub fn heard(&self) -> bool {
        *self.heard.borrow()
    }

    /// Waits up to `limit` until [`Cancels::heard`]; whether it came.
    pub async fn wait_heard(&self, limit: Duration) -> bool {
        let mut rx = self.heard.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|heard| *heard)).await.is_ok_and(|r| r.is_ok())
    }
}

/// Listens on the cancel channel for the worker's life: subscribes, catches up from
/// the cancelled set, then notes each announcement; after a lost connection it
/// stops claiming to hear and subscribes again (1 s, doubling to 30 s between tries).
pub async fn listen(store: Store, cancels: Arc<Cancels>) {
    let mut pause = Duration::from_secs(1);
    loop {
        match catch_up(&store, &cancels).await {
            Ok(ids) => {
                pause = Duration::from_secs(1);
                cancels.heard.send_replace(true);
                tracing::debug!("listening for cancels");
                futures_util::pin_mut!(ids);
                while let Some(id) = futures_util::StreamExt::next(&mut ids).await {
                    tracing::info!(task_id = %id, "cancel announced");
                    cancels.note(&id, now_ms());
                }
                cancels.heard.send_replace(false);
                tracing::warn!("the cancel channel closed; subscribing again");
            }
            Err(e) => tracing::warn!(error = %Report(&e), retry_s = pause.as_secs(), "cannot listen for cancels"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Subscribes, then reads the cancels made before (so none falls between the two).
async fn catch_up(
    store: &Store,
    cancels: &Cancels,
) -> Result<impl futures_util::Stream<Item = String> + Send, warmlane_infra::InfraError> {
    let ids = store.cancel_announcements().await?;
    for (id, at) in store.recent_cancels().await? {
        cancels.note(&id, at);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ids_for_the_task_lifetime_and_at_most_keep() {
        let c = Cancels::new(Duration::from_secs(3600));
        assert!(!c.contains("a") && !c.heard());
        let now = now_ms();
        c.note("a", now);
        c.note("a", now);
        assert!(c.contains("a"));
        c.note("old", now - 3_601_000);
        assert!(!c.contains("old"), "a cancel older than the task lifetime is not kept");
        c.note("b", now - 3_599_000);
        assert!(c.contains("b"));
        for i in 0..KEEP {
            c.note(&format!("t{i}"), now);
        }
        assert!(!c.contains("a") && !c.contains("b"), "the oldest are forgotten past KEEP");
        assert!(c.contains("t0") && c.contains(&format!("t{}", KEEP - 1)));
    }
}
