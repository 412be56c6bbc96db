//! `GET /tasks` (recent tasks with filters) and `DELETE /tasks/{id}` (cancel) against
//! the real RabbitMQ and Redis: a pending task is answered `cancelled` at once, a
//! running one is flagged and ends `cancelled` even when its run finishes first, and
//! every bad input gets a coded error with nothing changed in any queue.

mod http_support;

use axum::body::Body;
use axum::http::Request;
use http_support::*;
use serde_json::json;
use warmlane_shared::ValidRequest;

async fn delete(app: &axum::Router, uri: &str) -> Answer {
    send(app, Request::delete(uri).body(Body::empty()).expect("request")).await
}

async fn submit(app: &axum::Router, body: &serde_json::Value) -> String {
    let a = post_json(app, "/generate", body, &[]).await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.bytes));
    a.json()["task_id"].as_str().expect("task_id").to_string()
}

fn valid(h: &Harness, id: &str, model: &str) -> ValidRequest {
    let mut body = if model == "anisora" { anisora("p") } else { json!({"model": model, "prompt": "p", "steps": 4}) };
    body["v"] = json!(1);
    body["task_id"] = json!(id);
    warmlane_shared::validate_json(&body, h.producer.settings()).expect("a valid request")
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list["tasks"].as_array().expect("tasks").iter().map(|t| t["task_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn recent_tasks_newest_first_with_filters() {
    let h = Harness::new().await;
    let app = h.app();
    let a = submit(&app, &anisora("first")).await;
    let b = submit(&app, &json!({"model": "phr00t", "prompt": "second", "steps": 4, "cfg": 1.0})).await;
    let c = submit(&app, &anisora("third")).await;
    finish_as_worker(&h.producer, &valid(&h, &a, "anisora"), "degraded", "w1", &h.results_dir).await;

    let all = get(&app, "/tasks", &[]).await;
    assert_eq!(all.status, 200);
    assert_eq!(ids(&all.json()), vec![c.clone(), b.clone(), a.clone()], "newest first");
    assert_eq!(ids(&get(&app, "/tasks?status=done", &[]).await.json()), vec![a.clone()]);
    assert_eq!(ids(&get(&app, "/tasks?status=pending", &[]).await.json()), vec![c.clone(), b.clone()]);
    assert_eq!(ids(&get(&app, "/tasks?model=phr00t", &[]).await.json()), vec![b.clone()]);
    assert_eq!(ids(&get(&app, "/tasks?model=anisora&limit=1", &[]).await.json()), vec![c.clone()]);
    let done = &get(&app, "/tasks?status=done", &[]).await.json()["tasks"][0];
    assert_eq!(done["result_url"], format!("/tasks/{a}/result"), "{done}");
    h.cleanup().await;
}

#[tokio::test]
async fn cancel_pending_answers_cancelled_once() {
    let h = Harness::new().await;
    let app = h.app();
    let id = submit(&app, &anisora("to cancel")).await;
    let lane_depth = h.depth(&format!("{}.lane.anisora", h.prefix)).await;

    let cancelled = delete(&app, &format!("/tasks/{id}")).await;
    assert_eq!(cancelled.status, 200, "{}", String::from_utf8_lossy(&cancelled.bytes));
    let view = cancelled.json();
    assert_eq!((view["status"].as_str(), view["terminal"].as_bool()), (Some("failed"), Some(true)), "{view}");
    assert_eq!(view["error"]["code"], "cancelled", "{view}");
    assert_eq!(view["cancel_requested"], false, "{view}");
    // The one terminal reply is on the reply list for an AMQP caller.
    let reply = h.producer.store().wait_reply(&id, std::time::Duration::from_secs(5)).await.expect("redis");
    let reply = reply.expect("a reply");
    assert_eq!(reply.code, Some(warmlane_shared::ErrorCode::Cancelled));
    assert_eq!(ids(&get(&app, "/tasks?status=cancelled", &[]).await.json()), vec![id.clone()]);
    assert!(ids(&get(&app, "/tasks?status=pending", &[]).await.json()).is_empty());

    // A second cancel finds it finished; the message stays queued for a worker to skip.
    delete(&app, &format!("/tasks/{id}")).await.envelope(409, "conflict");
    assert_eq!(h.depth(&format!("{}.lane.anisora", h.prefix)).await, lane_depth);
    let again = h.producer.store().wait_reply(&id, std::time::Duration::from_millis(200)).await.expect("redis");
    assert!(again.is_none(), "exactly one terminal reply");
    h.cleanup().await;
}

#[tokio::test]
async fn cancel_running_flags_it_and_its_late_done_becomes_cancelled() {
    let h = Harness::new().await;
    let app = h.app();
    let id = submit(&app, &anisora("running")).await;
    let req = valid(&h, &id, "anisora");
    let store = h.producer.store();
    store.start(&req, "anisora", "w1").await.expect("start");
    assert!(store.progress(&id, 2, 8).await.expect("progress"), "a running task goes on");
    let view = get(&app, &format!("/tasks/{id}"), &[]).await.json();
    assert_eq!((view["progress"]["step"].as_u64(), view["stage"].as_str()), (Some(2), Some("denoising")), "{view}");
    assert!(store.progress(&id, 8, 8).await.expect("progress"));
    let view = get(&app, &format!("/tasks/{id}"), &[]).await.json();
    assert_eq!((view["progress"]["step"].as_u64(), view["stage"].as_str()), (Some(8), Some("decoding")), "{view}");

    let asked = delete(&app, &format!("/tasks/{id}")).await;
    assert_eq!(asked.status, 202, "{}", String::from_utf8_lossy(&asked.bytes));
    let view = asked.json();
    assert_eq!((view["status"].as_str(), view["cancel_requested"].as_bool()), (Some("processing"), Some(true)));
    // The worker's next progress write hears it even if it missed the announcement.
    assert!(!store.progress(&id, 3, 8).await.expect("progress"), "the run is told to stop");

    // A run that finished anyway is answered `cancelled`, and its `done` is not written.
    let done = warmlane_shared::Reply::done(
        &id,
        "anisora",
        warmlane_shared::ResultInfo {
            uri: "file:///nowhere.mp4".into(),
            frames: 5,
            width: 32,
            height: 24,
            bytes: 1,
            content_type: "video/mp4".into(),
            preview_uri: None,
        },
        warmlane_shared::Timings::default(),
    );
    let wrote = store.finish(&done, warmlane_infra::store::FinishWhen::NotTerminal).await.expect("finish");
    assert!(!wrote, "the done reply is not written");
    let end = get(&app, &format!("/tasks/{id}"), &[]).await.json();
    assert_eq!((end["status"].as_str(), end["error"]["code"].as_str()), (Some("failed"), Some("cancelled")), "{end}");
    assert!(end["result_url"].is_null(), "{end}");
    let reply = store.wait_reply(&id, std::time::Duration::from_secs(5)).await.expect("redis").expect("reply");
    assert_eq!(reply.code, Some(warmlane_shared::ErrorCode::Cancelled));
    h.cleanup().await;
}

#[tokio::test]
async fn bad_cancels_and_lists_are_coded_and_change_nothing() {
    let h = Harness::new().await;
    let app = h.app();
    let id = submit(&app, &anisora("stays")).await;
    let before = h.all_depths().await;

    let unknown = delete(&app, "/tasks/no-such-task").await.envelope(404, "not_found");
    assert_eq!(unknown["reason"], "task");
    delete(&app, "/tasks/bad%20id").await.envelope(422, "invalid_parameter");
    for (query, code, reason) in [
        ("limit=0", "invalid_parameter", "limit"),
        ("limit=201", "invalid_parameter", "limit"),
        ("limit=lots", "invalid_parameter", "limit"),
        ("status=finished", "invalid_parameter", "status"),
        ("model=sora", "unknown_model", "model"),
    ] {
        let e = get(&app, &format!("/tasks?{query}"), &[]).await.envelope(422, code);
        assert_eq!(e["reason"], reason, "{query}: {e}");
    }
    assert_eq!(h.all_depths().await, before, "no queue changed");
    let still = get(&app, &format!("/tasks/{id}"), &[]).await.json();
    assert_eq!(still["status"], "pending", "the task was not touched: {still}");
    h.cleanup().await;
}
