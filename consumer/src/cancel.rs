//! Cancels a worker has heard of: task ids announced on the cancel channel
//! (`Store::cancel`), kept for a while so that a cancelled task still in a queue is
//! skipped when it is delivered, and checked after every denoising step of the run in
//! progress. Checking costs no Redis round trip; a worker that missed an
//! announcement (Redis was away) still stops at its next progress write, which reads
//! the cancel flag and the reply.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use warmlane_infra::{Report, Store};

/// How many announced ids a worker keeps (the oldest are forgotten first).
pub const KEEP: usize = 4096;

/// The ids announced, oldest first.
#[derive(Debug, Default)]
pub struct Cancels {
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Cancels {
    /// Notes an announced id; beyond [`KEEP`] the oldest is forgotten.
    pub fn note(&self, task_id: &str) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !r.ids.insert(task_id.to_string()) {
            return;
        }
        r.order.push_back(task_id.to_string());
        while r.order.len() > KEEP {
            if let Some(old) = r.order.pop_front() {
                r.ids.remove(&old);
            }
        }
    }

    /// Whether `task_id` was announced cancelled.
    pub fn contains(&self, task_id: &str) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).ids.contains(task_id)
    }
}

/// Listens on the cancel channel for the worker's life, subscribing again after a
/// lost connection (1 s, doubling to 30 s between tries).
pub async fn listen(store: Store, cancels: std::sync::Arc<Cancels>) {
    let mut pause = Duration::from_secs(1);
    loop {
        match store.cancel_announcements().await {
            Ok(ids) => {
                pause = Duration::from_secs(1);
                tracing::debug!("listening for cancels");
                futures_util::pin_mut!(ids);
                while let Some(id) = futures_util::StreamExt::next(&mut ids).await {
                    tracing::info!(task_id = %id, "cancel announced");
                    cancels.note(&id);
                }
                tracing::warn!("the cancel channel closed; subscribing again");
            }
            Err(e) => tracing::warn!(error = %Report(&e), retry_s = pause.as_secs(), "cannot listen for cancels"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_ids() {
        let c = Cancels::default();
        assert!(!c.contains("a"));
        c.note("a");
        c.note("a");
        assert!(c.contains("a"));
        for i in 0..KEEP {
            c.note(&format!("t{i}"));
        }
        assert!(!c.contains("a"), "the oldest is forgotten past KEEP");
        assert!(c.contains("t0") && c.contains(&format!("t{}", KEEP - 1)));
    }
}
