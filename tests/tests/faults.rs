//! Faults a worker must survive: poison messages, shutdown mid-task, a redelivery
//! after the reply was written, a generation longer than the AMQP heartbeat timeout;
//! and how a first delivery is claimed late (attempts still counted when a worker
//! crashes mid-run).

use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use redis::AsyncCommands;
use std::time::Duration;
use warmlane_infra::amqp::{message_properties, Published};
use warmlane_shared::{now_ms, ErrorCode, ReplyStatus, ValidRequest};
use warmlane_tests::engines::{Gate, GateEngine};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, request, settings_with};

/// Publishes `req` to its lane; a bare consumer takes it and closes its connection
/// without an ack, as a worker that crashed mid-run would: the broker requeues the
/// message marked redelivered.
async fn publish_and_crash_once(fleet: &Fleet, req: &ValidRequest) {
    let props = message_properties(&req.task_id, Default::default());
    let answer = fleet
        .producer
        .publisher()
        .publish(&fleet.topology().lanes_exchange(), &req.model, &req.to_msgpack(), props)
        .await
        .unwrap();
    assert_eq!(answer, Published::Acked);
    let conn =
        lapin::Connection::connect(&warmlane_tests::amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = fleet.topology().lane_queue(&req.model);
    let mut deliveries = channel
        .basic_consume(queue.as_str().into(), "crashed".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .expect("the message was delivered")
        .unwrap()
        .unwrap();
    assert!(!first.redelivered);
    conn.close(200, "crashed".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_past_the_limit_is_poison_and_goes_dead() {
    let p = prefix("poison");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let id = format!("{p}-poison");
    let req = warmlane_shared::validate_json(&request(&id, "anisora"), &fleet.settings).unwrap().admitted_at(now_ms());
    // Three deliveries crashed their workers before finishing; the last one here.
    let mut c = fleet.producer.store().connection();
    let _: () = c.hset(fleet.producer.store().keys().task(&id), "attempts", 3).await.unwrap();
    publish_and_crash_once(&fleet, &req).await;
    let gate = Gate::default();
    gate.open();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    let reply = fleet.reply(&id, 10).await;
    assert_eq!(
        (reply.status, reply.code, reply.reason.as_deref()),
        (ReplyStatus::Failed, Some(ErrorCode::InferenceFailed), Some("poison"))
    );
    assert_eq!(gate.entered(), 0, "poison never reaches the engine again");
    assert_eq!(fleet.depth(&fleet.topology().dead_queue()).await, 1);
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_in_flight_task_and_leaves_the_ready_set() {
    let p = prefix("drain");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let gate = Gate::default();
    let w = fleet.spawn_worker("phr00t", Box::new(GateEngine::new(gate.clone())));
    fleet.wait_ready("phr00t", 1).await;
    let id = format!("{p}-inflight");
    fleet.producer.submit_json(&request(&id, "phr00t")).await.unwrap();
    gate.wait_entered(1).await;
    // SIGTERM arrives mid-task; the task is released only afterwards, and must still finish.
    fleet.request_stop(w);
    gate.open();
    fleet.stop_worker(w).await;
    let reply = fleet.reply(&id, 5).await;
    assert_eq!(reply.status, ReplyStatus::Done);
    let health =
        fleet.producer.store().lane_health("phr00t", true, fleet.settings.lanes.heartbeat_ttl_ms).await.unwrap();
    assert_eq!(health.warm_workers, 0, "a stopped worker leaves the ready set at once");
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_during_a_task_repeat_the_last_memory_snapshot() {
    let p = prefix("hbmem");
    let mut fleet = Fleet::start(&p, settings_with(|j| j["lanes"]["heartbeat_interval_ms"] = 100.into())).await;
    let gate = Gate::default();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    fleet.wait_ready("anisora", 1).await;
    let id = format!("{p}-held");
    fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
    gate.wait_entered(1).await;
    // The engine is held by the task now: heartbeats written from here on cannot read it.
    let held_since = warmlane_shared::now_ms();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let hb = loop {
        assert!(std::time::Instant::now() < deadline, "no heartbeat while the task ran");
        let workers = fleet.producer.store().workers().await.unwrap();
        if let Some(hb) = workers.into_iter().find(|w| w.lane == "anisora" && w.at_ms > held_since + 50) {
            break hb;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Released before asserting, so a failed assertion does not leave the engine held.
    gate.open();
    assert_eq!(hb.state, warmlane_shared::WorkerState::Busy, "{hb:?}");
    let memory = hb.memory.as_ref().unwrap_or_else(|| panic!("the last snapshot, not none: {hb:?}"));
    assert_eq!(memory.resident.as_deref(), Some("anisora"), "the last snapshot: {hb:?}");
    let as_of = memory.as_of_ms;
    assert!(as_of > 0, "the snapshot is dated");
    assert!(as_of <= held_since, "the snapshot predates the task ({as_of} > {held_since})");
    assert_eq!(fleet.reply(&id, 5).await.status, ReplyStatus::Done);
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_after_the_reply_is_acked_without_a_second_answer() {
    let p = prefix("redeliver");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let gate = Gate::default();
    gate.open();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    fleet.wait_ready("anisora", 1).await;
    let id = format!("{p}-twice");
    fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
    assert_eq!(fleet.reply(&id, 10).await.status, ReplyStatus::Done);
    // The same message again, as after a crash between the reply and the ack.
    let req = warmlane_shared::validate_json(&request(&id, "anisora"), &fleet.settings).unwrap();
    let props = message_properties(&id, Default::default());
    fleet
        .producer
        .publisher()
        .publish(&fleet.topology().lanes_exchange(), "anisora", &req.to_msgpack(), props)
        .await
        .unwrap();
    // A marker request behind it proves the worker got past the duplicate.
    let marker = format!("{p}-marker");
    fleet.producer.submit_json(&request(&marker, "anisora")).await.unwrap();
    assert_eq!(fleet.reply(&marker, 10).await.status, ReplyStatus::Done);
    assert_eq!(fleet.replies_left(&id).await, 0, "no second reply");
    assert_eq!(gate.entered(), 2, "the duplicate never reached the engine");
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_failure_is_answered_with_its_code_and_the_worker_goes_on() {
    let p = prefix("fail");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let mut engine = GateEngine::open();
    engine.fail_with = Some(ErrorCode::InferenceTimeout);
    fleet.spawn_worker("anisora", Box::new(engine));
    fleet.wait_ready("anisora", 1).await;
    for i in 0..2 {
        let id = format!("{p}-{i}");
        fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
        let reply = fleet.reply(&id, 10).await;
        assert_eq!((reply.status, reply.code), (ReplyStatus::Failed, Some(ErrorCode::InferenceTimeout)));
    }
    fleet.cleanup().await;
}

/// A generation that outlasts the AMQP heartbeat timeout keeps its delivery: the
/// engine runs off the worker's runtime, which goes on answering heartbeats, so the
/// broker neither closes the connection nor hands the task to the lane's other
/// worker. Each worker gets a runtime of one thread, as on a one-core host, and the
/// connections a 1 s heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_longer_than_the_amqp_heartbeat_timeout_keeps_its_delivery() {
    let p = prefix("longgen");
    let amqp = format!("{}?heartbeat=1", warmlane_tests::amqp_url());
    let mut fleet = Fleet::start_on(&p, settings_with(|_| {}), &amqp, &warmlane_tests::redis_url()).await;
    let gate = Gate::default();
    let runtimes: Vec<_> = (0..2)
        .map(|_| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
        .collect();
    for rt in &runtimes {
        fleet.spawn_worker_with(rt.handle(), "anisora", Box::new(GateEngine::new(gate.clone())), None);
    }
    fleet.wait_ready("anisora", 2).await;
    let id = format!("{p}-long");
    fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
    gate.wait_entered(1).await;
    // The broker drops a connection after two missed heartbeats (about 2 s here) and
    // requeues its unacked delivery, which the idle worker would take at once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let entered = gate.entered();
    gate.open();
    assert_eq!(entered, 1, "the task reached the engine again while the first generation ran");
    let reply = fleet.reply(&id, 10).await;
    assert_eq!(reply.status, ReplyStatus::Done, "{reply:?}");
    let task = fleet.producer.store().task(&id).await.unwrap();
    assert_eq!(task.get("attempts").map(String::as_str), Some("1"), "the task was delivered again: {task:?}");
    fleet.cleanup().await;
    for rt in runtimes {
        rt.shutdown_background();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_first_delivery_records_its_attempt_with_the_reply() {
    let p = prefix("shortrun");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.spawn_worker("anisora", Box::new(GateEngine::open()));
    fleet.wait_ready("anisora", 1).await;
    let id = format!("{p}-short");
    let before = now_ms();
    fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
    assert_eq!(fleet.reply(&id, 10).await.status, ReplyStatus::Done);
    let task = fleet.producer.store().task(&id).await.unwrap();
    assert_eq!(task.get("status").map(String::as_str), Some("done"), "{task:?}");
    assert_eq!(task.get("attempts").map(String::as_str), Some("1"), "{task:?}");
    assert_eq!(task.get("worker").map(String::as_str), Some(format!("{p}-anisora-0").as_str()), "{task:?}");
    let started: u64 = task.get("started_at_ms").and_then(|v| v.parse().ok()).expect("started_at_ms");
    assert!(started >= before && started <= now_ms(), "{task:?}");
    let mut c = fleet.producer.store().connection();
    let score: Option<f64> = c.zscore(fleet.producer.store().keys().deadlines(), &id).await.unwrap();
    assert_eq!(score, None, "the reply takes the task out of the deadline index");
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_first_delivery_is_claimed_processing_while_it_runs() {
    let p = prefix("longrun");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let gate = Gate::default();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    fleet.wait_ready("anisora", 1).await;
    let id = format!("{p}-long");
    fleet.producer.submit_json(&request(&id, "anisora")).await.unwrap();
    gate.wait_entered(1).await;
    // The late claim comes a quarter second into the run.
    fleet.wait_task_field(&id, "status", "processing", 5).await;
    let task = fleet.producer.store().task(&id).await.unwrap();
    assert_eq!(task.get("attempts").map(String::as_str), Some("1"), "{task:?}");
    assert_eq!(task.get("worker").map(String::as_str), Some(format!("{p}-anisora-0").as_str()), "{task:?}");
    let mut c = fleet.producer.store().connection();
    let score: Option<f64> = c.zscore(fleet.producer.store().keys().deadlines(), &id).await.unwrap();
    assert_eq!(score, None, "a claimed task is out of the backstop's reach");
    gate.open();
    assert_eq!(fleet.reply(&id, 10).await.status, ReplyStatus::Done);
    let task = fleet.producer.store().task(&id).await.unwrap();
    assert_eq!(task.get("attempts").map(String::as_str), Some("1"), "{task:?}");
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_delivery_that_crashed_unclaimed_counts_as_an_attempt() {
    let p = prefix("crashrun");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let id = format!("{p}-crashed");
    let req = warmlane_shared::validate_json(&request(&id, "anisora"), &fleet.settings).unwrap().admitted_at(now_ms());
    // Its first worker crashed within the run, before any claim or reply.
    publish_and_crash_once(&fleet, &req).await;
    let gate = Gate::default();
    gate.open();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    assert_eq!(fleet.reply(&id, 10).await.status, ReplyStatus::Done);
    let task = fleet.producer.store().task(&id).await.unwrap();
    assert_eq!(task.get("attempts").map(String::as_str), Some("2"), "the crashed delivery counts: {task:?}");
    assert_eq!(gate.entered(), 1);
    fleet.cleanup().await;
}
