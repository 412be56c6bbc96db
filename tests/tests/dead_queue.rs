//! `warmlane-producer dead list|replay` against the real broker and Redis.
//!
//! `list` shows the dead messages with their headers and removes none, however
//! often it runs; `replay` republishes a valid one through routing (removing it
//! only after the confirm) and keeps an invalid one dead.

use lapin::types::{AMQPValue, FieldTable, LongString};
use warmlane_infra::amqp::{message_properties, Published};
use warmlane_infra::store::FinishWhen;
use warmlane_producer::dead_queue::{self, ReplayResult};
use warmlane_shared::topology::{DEAD_KEY, HEADER_ERROR_CODE, HEADER_ERROR_REASON, HEADER_SOURCE_QUEUE};
use warmlane_shared::{ErrorCode, Rejection, Reply, ReplyStatus, Timings};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, request, settings_with};

async fn publish_dead(fleet: &Fleet, message_id: &str, body: &[u8], code: &str, reason: &str) {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_ERROR_CODE.into(), AMQPValue::LongString(LongString::from(code)));
    headers.insert(HEADER_ERROR_REASON.into(), AMQPValue::LongString(LongString::from(reason)));
    headers
        .insert(HEADER_SOURCE_QUEUE.into(), AMQPValue::LongString(LongString::from(fleet.topology().degraded_queue())));
    let props = message_properties(message_id, headers);
    let answer = fleet
        .producer
        .publisher()
        .publish(&fleet.topology().dead_exchange(), DEAD_KEY, body, props)
        .await
        .expect("publish");
    assert_eq!(answer, Published::Acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keeps_everything_and_replay_moves_only_valid_messages() {
    let settings = settings_with(|_| {});
    let fleet = Fleet::start(&prefix("deadq"), settings.clone()).await;
    let p = fleet.producer.clone();
    let good = format!("{}-good", fleet.prefix);
    let bad = format!("{}-bad", fleet.prefix);
    let valid = warmlane_shared::validate_json(&request(&good, "phr00t"), &settings).expect("valid request");
    // The good task already failed once (that is how it got here).
    let failure = Rejection::new(ErrorCode::InferenceFailed, "poison", "delivered 4 times");
    p.store()
        .finish(
            &Reply::coded(&good, ReplyStatus::Failed, Some("degraded"), &failure, Timings::default()),
            FinishWhen::NotTerminal,
        )
        .await
        .expect("finish");
    publish_dead(&fleet, &good, &valid.to_msgpack(), "inference_failed", "poison").await;
    publish_dead(&fleet, &bad, b"\xc1 not msgpack", "malformed_message", "body").await;
    let dead = fleet.topology().dead_queue();

    for _ in 0..3 {
        let listed = dead_queue::list(&p, 10).await.expect("list");
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].task(), Some(good.as_str()));
        assert_eq!(listed[0].model.as_deref(), Some("phr00t"));
        assert_eq!(listed[0].error_code.as_deref(), Some("inference_failed"));
        assert_eq!(listed[0].error_reason.as_deref(), Some("poison"));
        assert_eq!(listed[0].source_queue.as_deref(), Some(fleet.topology().degraded_queue().as_str()));
        assert_eq!(listed[1].message_id.as_deref(), Some(bad.as_str()));
        assert_eq!(listed[1].error_code.as_deref(), Some("malformed_message"));
        assert_eq!(settled_depth(&fleet, &dead, 2).await, 2, "list removes nothing");
    }
    assert_eq!(dead_queue::list(&p, 1).await.expect("list").len(), 1, "--limit");

    // Only the bad one, by task id: it stays.
    let only_bad = dead_queue::replay(&p, 10, Some(&bad)).await.expect("replay");
    assert_eq!(only_bad.len(), 1);
    assert!(matches!(only_bad[0].result, ReplayResult::Kept { .. }), "{only_bad:?}");
    assert_eq!(settled_depth(&fleet, &dead, 2).await, 2);

    let all = dead_queue::replay(&p, 10, None).await.expect("replay");
    assert_eq!(all.len(), 2, "{all:?}");
    // A quorum queue may requeue the messages an earlier replay returned in another
    // order (the classic queue restores it), so each is found by its id.
    let of = |id: &str| all.iter().find(|r| r.message.task() == Some(id)).unwrap_or_else(|| panic!("{id}: {all:?}"));
    assert_eq!(of(&good).result, ReplayResult::Replayed { lane: "degraded".into() }, "no phr00t lane worker: degraded");
    assert!(matches!(of(&bad).result, ReplayResult::Kept { .. }));
    assert_eq!(settled_depth(&fleet, &dead, 1).await, 1, "only the replayed message left the dead queue");
    let task = p.store().task(&good).await.expect("task");
    let degraded = fleet.depth(&fleet.topology().degraded_queue()).await;
    if degraded != 1 {
        // Seen once in CI and never reproduced: say where everything was.
        let topo = fleet.topology();
        let mut depths = vec![];
        for q in [
            topo.degraded_queue(),
            topo.dead_queue(),
            topo.expired_queue(),
            topo.lane_queue("phr00t"),
            topo.lane_queue("anisora"),
        ] {
            depths.push(format!("{q}={}", fleet.depth(&q).await));
        }
        panic!("the replayed message is not in the degraded queue: {depths:?}; task {task:?}; replay {all:?}");
    }
    assert_eq!(task.get("status").map(String::as_str), Some("pending"), "the task was reopened: {task:?}");
    assert_eq!(fleet.replies_left(&good).await, 0, "the old failed reply is gone");

    // Replaying again finds the task pending: nothing to do for the good one (it is gone anyway).
    let again = dead_queue::replay(&p, 10, None).await.expect("replay");
    assert_eq!(again.len(), 1);
    assert_eq!(settled_depth(&fleet, &dead, 1).await, 1);
    fleet.cleanup().await;
}

/// The ready messages of `queue` once they equal `want`, or after 5 s whatever they
/// are: the messages a closed channel held return to a quorum queue a moment after
/// the close (a classic queue has them back at once).
async fn settled_depth(fleet: &Fleet, queue: &str, want: u32) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let depth = fleet.depth(queue).await;
        if depth == want || std::time::Instant::now() >= deadline {
            return depth;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
