//! The foundation's "done when", against the real RabbitMQ and Redis.

use std::time::{Duration, Instant};
use warmlane_producer::ProducerError;
use warmlane_shared::{now_ms, ErrorCode, FallbackCause, ReplyStatus};
use warmlane_tests::engines::{Gate, GateEngine};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, request, settings_with};

fn rejected(result: Result<warmlane_producer::Accepted, ProducerError>) -> warmlane_shared::Rejection {
    match result {
        Err(ProducerError::Rejected(r)) => r,
        other => panic!("expected a coded rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_rejected_before_anything_is_published() {
    let p = prefix("invalid");
    let fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let cases: Vec<(serde_json::Value, ErrorCode, &str)> = vec![
        (serde_json::json!({"steps": 4}), ErrorCode::InvalidParameter, "steps"),
        (serde_json::json!({"steps": 12}), ErrorCode::InvalidParameter, "steps"),
        (serde_json::json!({"model": "phr00t", "steps": 8, "cfg": 1.0}), ErrorCode::InvalidParameter, "steps"),
        (serde_json::json!({"model": "phr00t", "steps": 4, "cfg": 2.5}), ErrorCode::InvalidParameter, "cfg"),
        (serde_json::json!({"cfg": -1.0}), ErrorCode::InvalidParameter, "cfg"),
        (serde_json::json!({"width": -32}), ErrorCode::InvalidParameter, "width"),
        (serde_json::json!({"seed": -3}), ErrorCode::InvalidParameter, "seed"),
        (serde_json::json!({"steps": "8"}), ErrorCode::InvalidParameter, "steps"),
        (serde_json::json!({"frames": "many"}), ErrorCode::InvalidParameter, "frames"),
        (serde_json::json!({"prompt": ""}), ErrorCode::InvalidParameter, "prompt"),
        (serde_json::json!({"prompt": "y".repeat(2001)}), ErrorCode::InvalidParameter, "prompt"),
        (serde_json::json!({"model": "wan-2.2"}), ErrorCode::UnknownModel, "model"),
        (serde_json::json!({"width": 4096}), ErrorCode::InvalidParameter, "width"),
        (serde_json::json!({"height": 8}), ErrorCode::InvalidParameter, "height"),
        (serde_json::json!({"frames": 500}), ErrorCode::InvalidParameter, "frames"),
    ];
    for (i, (edit, code, reason)) in cases.into_iter().enumerate() {
        let mut body = request(&format!("bad-{i}"), "anisora");
        for (k, v) in edit.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = rejected(fleet.producer.submit_json(&body).await);
        assert_eq!((r.code, r.reason.as_str()), (code, reason), "case {i}: {}", r.message);
        // The refusal is also the task's one terminal reply, for callers that wait on Redis.
        let reply = fleet.reply(&format!("bad-{i}"), 2).await;
        assert_eq!((reply.status, reply.code), (ReplyStatus::Rejected, Some(code)));
    }
    // NaN and infinities cannot be written in JSON; they arrive as MessagePack floats.
    for bad in [f64::NAN, f64::INFINITY] {
        let mut body = rmp_serde::to_vec_named(&request("nan", "anisora")).unwrap();
        let mut value = rmpv::decode::read_value(&mut body.as_slice()).unwrap();
        if let rmpv::Value::Map(entries) = &mut value {
            for (k, v) in entries.iter_mut() {
                if k.as_str() == Some("cfg") {
                    *v = rmpv::Value::F64(bad);
                }
            }
        }
        body.clear();
        rmpv::encode::write_value(&mut body, &value).unwrap();
        let r = rejected(fleet.producer.submit_msgpack(&body).await);
        assert_eq!((r.code, r.reason.as_str()), (ErrorCode::InvalidParameter, "cfg"));
    }
    let topo = fleet.topology();
    for q in [topo.lane_queue("anisora"), topo.lane_queue("phr00t"), topo.degraded_queue()] {
        assert_eq!(fleet.depth(&q).await, 0, "{q} must stay empty");
    }
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_requests_land_on_their_own_warm_lanes_with_one_done_reply_each() {
    let p = prefix("lanes");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.spawn_reaper();
    fleet.spawn_onnx_lanes(&["anisora", "phr00t"]).await;
    let mut ids = vec![];
    for i in 0..20 {
        let model = if i % 2 == 0 { "anisora" } else { "phr00t" };
        let id = format!("{p}-{i}");
        let admission = fleet.producer.submit_json(&request(&id, model)).await.expect("admitted");
        assert_eq!((admission.lane.as_str(), admission.fallback), (model, None), "request {i} went to its own lane");
        ids.push((id, model));
    }
    for (id, model) in &ids {
        let reply = fleet.reply(id, 120).await;
        assert_eq!(reply.status, ReplyStatus::Done, "{id}: {reply:?}");
        assert_eq!(reply.lane.as_deref(), Some(*model));
        let result = reply.result.expect("done carries a result");
        let path = result.uri.strip_prefix("file://").unwrap();
        let bytes = std::fs::read(path).expect("the video exists");
        assert!(&bytes[4..8] == b"ftyp" && bytes.len() as u64 == result.bytes, "{path} is the MP4");
        assert_eq!(fleet.replies_left(id).await, 0, "exactly one reply for {id}");
        let task = fleet.producer.store().task(id).await.unwrap();
        assert_eq!(task.get("status").map(String::as_str), Some("done"));
        assert_eq!(task.get("attempts").map(String::as_str), Some("1"));
        let steps = if *model == "phr00t" { "4/4" } else { "8/8" };
        assert_eq!(task.get("progress").map(String::as_str), Some(steps), "a done task's progress is complete");
    }
    // Each lane loaded its model once (the warm-up) and served every request warm.
    assert_eq!(fleet.producer.store().loads("anisora").await.unwrap(), 1);
    assert_eq!(fleet.producer.store().loads("phr00t").await.unwrap(), 1);
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_or_disabled_lanes_fall_back_to_degraded_with_their_cause() {
    let p = prefix("fallback");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    // Cold: no worker on the anisora lane.
    let a = fleet.producer.submit_json(&request(&format!("{p}-cold"), "anisora")).await.unwrap();
    assert_eq!((a.lane.as_str(), a.fallback), ("degraded", Some(FallbackCause::Capacity)));
    // Disabled by an operator, while a warm worker is there.
    fleet.spawn_worker("phr00t", Box::new(GateEngine::open()));
    fleet.wait_ready("phr00t", 1).await;
    fleet.producer.store().disable_lane("phr00t", FallbackCause::Manual, "maintenance").await.unwrap();
    let b = fleet.producer.submit_json(&request(&format!("{p}-manual"), "phr00t")).await.unwrap();
    assert_eq!((b.lane.as_str(), b.fallback), ("degraded", Some(FallbackCause::Manual)));
    fleet.producer.store().disable_lane("phr00t", FallbackCause::Quota, "provider denied").await.unwrap();
    let c = fleet.producer.submit_json(&request(&format!("{p}-quota"), "phr00t")).await.unwrap();
    assert_eq!(c.fallback, Some(FallbackCause::Quota));
    fleet.producer.store().enable_lane("phr00t").await.unwrap();
    let d = fleet.producer.submit_json(&request(&format!("{p}-back"), "phr00t")).await.unwrap();
    assert_eq!((d.lane.as_str(), d.fallback), ("phr00t", None));
    for (id, cause) in [("cold", "capacity"), ("manual", "manual"), ("quota", "quota")] {
        let task = fleet.producer.store().task(&format!("{p}-{id}")).await.unwrap();
        assert_eq!(task.get("fallback_cause").map(String::as_str), Some(cause));
        assert_eq!(task.get("lane").map(String::as_str), Some("degraded"));
    }
    assert_eq!(fleet.depth(&fleet.topology().degraded_queue()).await, 3);
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_lane_warms_again_when_its_requests_go_degraded() {
    let p = prefix("rewarm");
    let mut fleet = Fleet::start(&p, settings_with(|j| j["lanes"]["heartbeat_interval_ms"] = 100.into())).await;
    let handle = tokio::runtime::Handle::current();
    fleet.spawn_worker_with(&handle, "anisora", Box::new(GateEngine::open()), Some(Duration::from_secs(1)));
    fleet.spawn_worker("degraded", Box::new(GateEngine::open()));
    fleet.wait_ready("anisora", 1).await;
    // Idle past the limit, the lane worker unloads its model and the lane is not ready.
    let ttl = fleet.settings.lanes.heartbeat_ttl_ms;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.producer.store().lane_health("anisora", true, ttl).await.unwrap().warm_workers > 0 {
        assert!(Instant::now() < deadline, "the idle lane was never evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = fleet.producer.submit_json(&request(&format!("{p}-cold"), "anisora")).await.unwrap();
    assert_eq!((a.lane.as_str(), a.fallback), ("degraded", Some(FallbackCause::Capacity)));
    assert_eq!(fleet.reply(&a.task_id, 10).await.status, ReplyStatus::Done);
    // That request is the demand: the lane worker loads its model again.
    fleet.wait_ready("anisora", 1).await;
    let b = fleet.producer.submit_json(&request(&format!("{p}-warm"), "anisora")).await.unwrap();
    assert_eq!((b.lane.as_str(), b.fallback), ("anisora", None));
    assert_eq!(fleet.reply(&b.task_id, 10).await.status, ReplyStatus::Done);
    // The worker records a load on its background runtime, which may lag the reply.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut loads = fleet.producer.store().loads("anisora").await.unwrap();
    while loads < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        loads = fleet.producer.store().loads("anisora").await.unwrap();
    }
    assert_eq!(loads, 2, "the warm-up and the re-warm");
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_26th_degraded_request_is_queue_overloaded_and_depth_stays_at_25() {
    let p = prefix("full");
    let fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let degraded = fleet.topology().degraded_queue();
    for i in 0..25 {
        let a = fleet
            .producer
            .submit_json(&request(&format!("{p}-{i}"), "anisora"))
            .await
            .expect("admitted while depth < 25");
        assert_eq!(a.lane, "degraded");
        assert!(fleet.depth(&degraded).await <= 25);
    }
    let r = rejected(fleet.producer.submit_json(&request(&format!("{p}-25"), "phr00t")).await);
    assert_eq!((r.code, r.reason.as_str()), (ErrorCode::QueueOverloaded, "queue_full"));
    let reply = fleet.reply(&format!("{p}-25"), 2).await;
    assert_eq!((reply.code, reply.reason.as_deref()), (Some(ErrorCode::QueueOverloaded), Some("queue_full")));
    assert_eq!(fleet.depth(&degraded).await, 25);
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_message_past_the_wait_limit_is_answered_wait_timeout() {
    let p = prefix("ttl");
    let mut fleet = Fleet::start(&p, settings_with(|s| s["degraded"]["max_wait_ms"] = 400.into())).await;
    fleet.spawn_reaper();
    let id = format!("{p}-late");
    let started = now_ms();
    fleet.producer.submit_json(&request(&id, "phr00t")).await.unwrap();
    let reply = fleet.reply(&id, 10).await;
    assert_eq!(
        (reply.status, reply.code, reply.reason.as_deref()),
        (ReplyStatus::Failed, Some(ErrorCode::QueueOverloaded), Some("wait_timeout"))
    );
    assert!(now_ms() - started < 400 + 1000, "answered within the TTL plus one second");
    assert_eq!(fleet.replies_left(&id).await, 0);
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_takes_a_message_too_late_answers_wait_timeout_itself() {
    // A TTL stops counting once a message is delivered (and a requeued message starts
    // again), so the degraded worker checks the wait itself from the enqueue header.
    let p = prefix("late-take");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let body =
        warmlane_shared::validate_json(&request(&format!("{p}-old"), "anisora"), &fleet.settings).unwrap().to_msgpack();
    let enqueued = now_ms() - 31_000;
    let props = warmlane_infra::amqp::message_properties(
        &format!("{p}-old"),
        warmlane_producer::producer::degraded_headers(enqueued, FallbackCause::Capacity),
    );
    let topo = fleet.topology();
    let answer = fleet.producer.publisher().publish(&topo.degraded_exchange(), "degraded", &body, props).await.unwrap();
    assert_eq!(answer, warmlane_infra::amqp::Published::Acked);
    let gate = Gate::default();
    fleet.spawn_worker("degraded", Box::new(GateEngine::new(gate.clone())));
    let late = fleet.reply(&format!("{p}-old"), 10).await;
    assert_eq!(
        (late.code, late.reason.as_deref()),
        (Some(ErrorCode::QueueOverloaded), Some("wait_timeout")),
        "{late:?}"
    );
    assert_eq!(gate.entered(), 0, "the engine never saw the late request");
    gate.open();
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backstop_answers_a_pending_task_whose_message_was_lost() {
    let p = prefix("backstop");
    let fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let store = fleet.producer.store();
    // Admit a task and "lose" its message: nothing will ever deliver or expire it.
    let body = request(&format!("{p}-lost"), "anisora");
    let req = warmlane_shared::validate_json(&body, &fleet.settings).unwrap().admitted_at(now_ms() - 5_000);
    assert!(store.admit(&req, now_ms() - 1).await.unwrap());
    // A processing task past its deadline is a worker's to answer, not the backstop's.
    let body = request(&format!("{p}-busy"), "anisora");
    let busy = warmlane_shared::validate_json(&body, &fleet.settings).unwrap();
    assert!(store.admit(&busy, now_ms() - 1).await.unwrap());
    store.start(&busy, "anisora", "w1").await.unwrap();
    let answered = warmlane_producer::reaper::sweep_once(&fleet.producer).await.unwrap();
    assert_eq!(answered, 1);
    let reply = fleet.reply(&format!("{p}-lost"), 2).await;
    assert_eq!(reply.reason.as_deref(), Some("wait_timeout"));
    assert_eq!(warmlane_producer::reaper::sweep_once(&fleet.producer).await.unwrap(), 0, "answered once only");
    assert_eq!(store.task(&format!("{p}-busy")).await.unwrap().get("status").map(String::as_str), Some("processing"));
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_request_no_worker_takes_in_time_moves_to_degraded() {
    let p = prefix("lane-wait");
    let mut fleet = Fleet::start(&p, settings_with(|s| s["lanes"]["lane_wait_ms"] = 300.into())).await;
    fleet.spawn_reaper();
    // A heartbeat says the lane is warm and a consumer holds a task it never finishes
    // (a stuck worker): the lane takes the request, and nobody takes it from the lane.
    let _stuck = fleet.fake_warm_heartbeat("anisora", 60_000).await;
    fleet.spawn_worker("degraded", Box::new(GateEngine::open()));
    let id = format!("{p}-stuck");
    let a = fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
    assert_eq!(a.lane, "anisora");
    let reply = fleet.reply(&id, 20).await;
    assert_eq!((reply.status, reply.lane.as_deref()), (ReplyStatus::Done, Some("degraded")), "{reply:?}");
    let task = fleet.producer.store().task(&id).await.unwrap();
    assert_eq!(task.get("fallback_cause").map(String::as_str), Some("capacity"));
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_id_in_use_is_refused_without_touching_the_first() {
    let p = prefix("dup");
    let fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let id = format!("{p}-same");
    fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
    let r = rejected(fleet.producer.submit_json(&request(&id, "anisora")).await);
    assert_eq!((r.code, r.reason.as_str()), (ErrorCode::InvalidParameter, "task_id"));
    let mut invalid = request(&id, "anisora");
    invalid["steps"] = 3.into();
    rejected(fleet.producer.submit_json(&invalid).await);
    assert_eq!(fleet.replies_left(&id).await, 0, "refusals of a reused id never answer the first task");
    assert_eq!(fleet.producer.store().task(&id).await.unwrap().get("status").map(String::as_str), Some("pending"));
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_pending_task_is_forgotten_after_an_unpublished_submit() {
    let p = prefix("forget");
    let fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let store = fleet.producer.store();
    let req = |id: &str| {
        warmlane_shared::validate_json(&request(id, "anisora"), &fleet.settings).unwrap().admitted_at(now_ms())
    };
    let (pending, processing) = (req(&format!("{p}-pending")), req(&format!("{p}-processing")));
    for r in [&pending, &processing] {
        assert!(store.admit(r, now_ms() + 60_000).await.unwrap());
    }
    store.start(&processing, "anisora", "w1").await.unwrap();
    // A worker has the second one: it is not the producer's to undo.
    assert!(!store.forget_unpublished(&processing.task_id).await.unwrap());
    assert_eq!(store.task(&processing.task_id).await.unwrap().get("status").map(String::as_str), Some("processing"));
    assert!(store.forget_unpublished(&pending.task_id).await.unwrap());
    assert!(store.task(&pending.task_id).await.unwrap().is_empty());
    let overdue = store.overdue(now_ms() + 120_000, 100).await.unwrap();
    assert!(!overdue.contains(&pending.task_id), "the deadline went with the task");
    fleet.cleanup().await;
}

/// Steps a run reports before its late claim are kept: the claimed task reads the
/// latest step, not 0, and never jumps from 0 to done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_claim_keeps_the_progress_already_reported() {
    let p = prefix("progress");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let gate = warmlane_tests::engines::Gate::default();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    fleet.wait_ready("anisora", 1).await;
    let id = format!("{p}-1");
    fleet.producer.submit_json(&request(&id, "anisora")).await.expect("admitted");
    gate.wait_entered(1).await;
    // The late claim comes `late_claim_ms` after the run began; wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let task = loop {
        let task = fleet.producer.store().task(&id).await.unwrap();
        if task.get("status").map(String::as_str) == Some("processing") {
            break task;
        }
        assert!(std::time::Instant::now() < deadline, "never claimed: {task:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(task.get("progress").map(String::as_str), Some("7/8"), "{task:?}");
    gate.open();
    assert_eq!(fleet.reply(&id, 60).await.status, ReplyStatus::Done);
    fleet.cleanup().await;
}
