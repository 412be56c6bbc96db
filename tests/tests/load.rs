//! Behaviour under load (SC-004, SC-007, SC-008, SC-009). Timing targets live in
//! the load generator's benchmark; these tests assert outcomes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use warmlane_producer::ProducerError;
use warmlane_shared::{now_ms, ErrorCode, ReplyStatus};
use warmlane_tests::engines::SleepEngine;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, request, settings_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sc004_two_hundred_alternating_requests_on_warm_lanes_are_accepted_and_answered() {
    let p = prefix("sc004");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.spawn_reaper();
    fleet.spawn_onnx_lanes(&["anisora", "phr00t"]).await;
    let fleet = Arc::new(fleet);
    let mut handles = vec![];
    for i in 0..200 {
        let fleet = fleet.clone();
        let id = format!("{}-{i}", fleet.prefix);
        let model = if i % 2 == 0 { "anisora" } else { "phr00t" };
        handles.push(tokio::spawn(async move {
            let mut body = request(&id, model);
            body["frames"] = 2.into();
            let admitted = fleet.producer.submit_json(&body).await;
            (id, admitted)
        }));
    }
    let mut accepted = vec![];
    let mut infra_errors = 0;
    for h in handles {
        let (id, admitted) = h.await.unwrap();
        match admitted {
            Ok(a) => accepted.push((id, a.lane)),
            Err(ProducerError::Rejected(r)) => panic!("a valid request was refused: {r}"),
            Err(e) => {
                infra_errors += 1;
                eprintln!("{id}: {e}");
            }
        }
    }
    assert!(accepted.len() >= 198, "acceptance {} / 200 is below 99 %", accepted.len());
    assert_eq!(infra_errors, 200 - accepted.len());
    let mut done = 0;
    for (id, lane) in &accepted {
        let reply = fleet.reply(id, 180).await;
        assert_ne!(reply.code.map(|c| c.http_status() >= 500), Some(true), "{id} failed with a 5xx code: {reply:?}");
        assert_eq!(reply.lane.as_deref(), Some(lane.as_str()));
        if reply.status == ReplyStatus::Done {
            done += 1;
        }
    }
    assert_eq!(done, accepted.len(), "every accepted request is done");
    Arc::try_unwrap(fleet).ok().expect("fleet still shared").cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sc007_to_009_a_degraded_burst_keeps_depth_at_25_and_answers_everyone_in_time() {
    let wait_ms = 1_500;
    let p = prefix("burst");
    let mut fleet = Fleet::start(&p, settings_with(|s| s["degraded"]["max_wait_ms"] = wait_ms.into())).await;
    fleet.spawn_reaper();
    fleet.spawn_worker("degraded", Box::new(SleepEngine::new(Duration::from_millis(40))));
    fleet.wait_ready("degraded", 1).await;
    let fleet = Arc::new(fleet);
    // Sample the queue depth for the whole burst.
    let max_depth = Arc::new(AtomicU32::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (fleet, max_depth, sampling) = (fleet.clone(), max_depth.clone(), sampling.clone());
        tokio::spawn(async move {
            let queue = fleet.topology().degraded_queue();
            let mut samples = 0u32;
            while sampling.load(Ordering::Relaxed) {
                max_depth.fetch_max(fleet.depth(&queue).await, Ordering::Relaxed);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            samples
        })
    };
    let mut handles = vec![];
    for i in 0..100 {
        let fleet = fleet.clone();
        handles.push(tokio::spawn(async move {
            let id = format!("{}-{i}", fleet.prefix);
            let model = if i % 2 == 0 { "anisora" } else { "phr00t" };
            let started = now_ms();
            let admitted = fleet.producer.submit_json(&request(&id, model)).await;
            (id, started, admitted)
        }));
    }
    let (mut accepted, mut overloaded) = (0, 0);
    let mut waits = vec![];
    for h in handles {
        let (id, started, admitted) = h.await.unwrap();
        match admitted {
            Ok(a) => {
                assert_eq!(a.lane, "degraded");
                accepted += 1;
                let reply = fleet.reply(&id, 30).await;
                let waited = now_ms() - started;
                assert!(waited <= wait_ms + 1_000, "{id} waited {waited} ms for its reply ({reply:?})");
                if reply.status != ReplyStatus::Done {
                    assert_eq!(
                        (reply.code, reply.reason.as_deref()),
                        (Some(ErrorCode::QueueOverloaded), Some("wait_timeout")),
                        "{reply:?}"
                    );
                }
                waits.push(waited);
            }
            Err(ProducerError::Rejected(r)) => {
                assert_eq!((r.code, r.reason.as_str()), (ErrorCode::QueueOverloaded, "queue_full"));
                overloaded += 1;
            }
            Err(e) => panic!("{id}: infrastructure error in a burst: {e}"),
        }
    }
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let peak = max_depth.load(Ordering::Relaxed);
    eprintln!("burst: {accepted} accepted, {overloaded} overloaded, peak depth {peak} over {samples} samples, longest wait {:?} ms", waits.iter().max());
    assert_eq!(accepted + overloaded, 100);
    assert!(overloaded > 0, "a burst of 100 against one slow worker must overflow");
    assert!(peak <= 25, "depth reached {peak}");
    assert!(samples > 5);
    Arc::try_unwrap(fleet).ok().expect("fleet still shared").cleanup().await;
}
