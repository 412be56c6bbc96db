//! Who a refused message may answer. A message that is dead-lettered for its body
//! (it does not decode or validate, or names a model without a lane) carries a task
//! id read from the body or its `message_id`; it is answered only while that task
//! has not started, so a broken copy can never end a task a worker is running or
//! replace a reply already given. Poison, which its worker has claimed, is answered
//! as any claimed task is.

use warmlane_infra::store::{FinishWhen, Started};
use warmlane_shared::{now_ms, ErrorCode, Rejection, Reply, ReplyStatus, Timings, ValidRequest};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, request, settings_with};

fn refusal(task_id: &str) -> Reply {
    let rejection = Rejection::new(ErrorCode::MalformedMessage, "body", "a broken copy");
    Reply::coded(task_id, ReplyStatus::Failed, Some("anisora"), &rejection, Timings::default())
}

fn valid(fleet: &Fleet, task_id: &str) -> ValidRequest {
    warmlane_shared::validate_json(&request(task_id, "anisora"), &fleet.settings).expect("valid")
}

#[tokio::test]
async fn a_refusal_answers_only_tasks_that_have_not_started() {
    let p = prefix("refusal");
    let fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let store = fleet.producer.store();
    let (running, pending, absent) = (format!("{p}-running"), format!("{p}-pending"), format!("{p}-absent"));
    for id in [&running, &pending] {
        assert!(store.admit(&valid(&fleet, id), now_ms() + 60_000).await.expect("admit"), "{id}");
    }
    let started = store.start(&valid(&fleet, &running), "anisora", "w-1").await.expect("start");
    assert_eq!(started, Started::Attempt(1));

    assert!(!store.finish(&refusal(&running), FinishWhen::Unstarted).await.expect("finish"), "a running task");
    assert_eq!(store.task(&running).await.expect("task")["status"], "processing");
    assert_eq!(fleet.replies_left(&running).await, 0, "no reply for the running task");

    for id in [&pending, &absent] {
        assert!(store.finish(&refusal(id), FinishWhen::Unstarted).await.expect("finish"), "{id} is answered");
        assert_eq!(store.task(id).await.expect("task")["code"], "malformed_message", "{id}");
        assert!(!store.finish(&refusal(id), FinishWhen::Unstarted).await.expect("finish"), "{id}: answered once");
    }
    // A claimed task (poison) is answered with NotTerminal.
    assert!(store.finish(&refusal(&running), FinishWhen::NotTerminal).await.expect("finish"));
    fleet.cleanup().await;
}
