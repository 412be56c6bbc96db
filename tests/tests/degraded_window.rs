//! The degraded worker's window (issue #16): holding several deliveries and serving
//! the resident model first switches models less often than FIFO, still runs no
//! request past `max_wait_ms`, and answers every request exactly once.

use std::time::Duration;
use warmlane_shared::{ErrorCode, ReplyStatus};
use warmlane_tests::engines::SleepEngine;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, request, settings_with};

/// What one degraded run did.
#[derive(Debug)]
struct Served {
    /// Model loads (switches) of the degraded worker.
    loads: u64,
    /// Requests answered `done`.
    done: u32,
    /// Requests answered `queue_overloaded`/`wait_timeout`.
    timed_out: u32,
}

/// Queues `n` alternating requests on the degraded lane (no lane worker is warm),
/// then starts one degraded worker with a window of `window` on an engine that takes
/// `per_task` a generation and `switch` a model load, and collects every reply.
async fn serve_alternating(name: &str, window: u32, wait_ms: u64, n: u32, per_task: u64, switch: u64) -> Served {
    let p = prefix(name);
    let settings = settings_with(|s| {
        s["degraded"]["window"] = window.into();
        s["degraded"]["max_wait_ms"] = wait_ms.into();
    });
    let mut fleet = Fleet::start(&p, settings).await;
    // The reaper answers what expires while still ready in the queue (its TTL).
    fleet.spawn_reaper();
    let mut ids = vec![];
    for i in 0..n {
        let id = format!("{p}-{i}");
        let model = if i % 2 == 0 { "anisora" } else { "phr00t" };
        let admitted = fleet.producer.submit_json(&request(&id, model)).await;
        let admitted = admitted.unwrap_or_else(|e| panic!("{id} was not admitted: {e}"));
        assert_eq!(admitted.lane, "degraded");
        ids.push(id);
    }
    let engine = SleepEngine::with_switch(Duration::from_millis(per_task), Duration::from_millis(switch));
    fleet.spawn_worker("degraded", Box::new(engine));
    let mut served = Served { loads: 0, done: 0, timed_out: 0 };
    for id in &ids {
        let reply = fleet.reply(id, 60).await;
        match reply.status {
            ReplyStatus::Done => {
                let queued = reply.timings.queued_ms.expect("a done reply says how long it queued");
                // queued_ms counts from the submit, a little before the degraded entry.
                assert!(queued <= wait_ms + 250, "{id} ran after queueing {queued} ms (limit {wait_ms}): {reply:?}");
                served.done += 1;
            }
            _ => {
                assert_eq!(
                    (reply.code, reply.reason.as_deref()),
                    (Some(ErrorCode::QueueOverloaded), Some("wait_timeout")),
                    "{id}: {reply:?}"
                );
                served.timed_out += 1;
            }
        }
    }
    // Every reply is in: a second one for any task would be waiting by now.
    for id in &ids {
        assert_eq!(fleet.replies_left(id).await, 0, "{id} got more than one reply");
    }
    served.loads = fleet.producer.store().loads("degraded").await.expect("loads");
    fleet.cleanup().await;
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_window_switches_less_than_fifo_and_answers_everyone_once() {
    let (n, wait_ms) = (20, 20_000);
    let fifo = serve_alternating("window-fifo", 1, wait_ms, n, 20, 80).await;
    let window = serve_alternating("window-4", 4, wait_ms, n, 20, 80).await;
    eprintln!("alternating {n} degraded requests: FIFO {fifo:?}, window of 4 {window:?}");
    assert_eq!((fifo.done, window.done), (n, n), "nothing waits 20 s here: FIFO {fifo:?}, window {window:?}");
    assert_eq!(fifo.loads, u64::from(n), "FIFO switches at every alternating request");
    assert!(window.loads < fifo.loads, "the window switches less: {window:?} vs FIFO {fifo:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_tight_wait_the_window_runs_nothing_late_and_answers_the_rest_wait_timeout() {
    let n = 20;
    let served = serve_alternating("window-tight", 4, 1_000, n, 40, 150).await;
    eprintln!("alternating {n} degraded requests, 1 s wait, window of 4: {served:?}");
    assert_eq!(served.done + served.timed_out, n);
    assert!(served.done > 0 && served.timed_out > 0, "the wait is tight enough to expire some: {served:?}");
}
