//! Handler tests through `app(state).oneshot(...)` against the real RabbitMQ and
//! Redis: every status code of the generation and task routes, in the envelope.

mod http_support;

use http_support::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_infra::store::FinishWhen;
use warmlane_shared::{ErrorCode, Rejection, Reply, ReplyStatus, Timings};

#[tokio::test]
async fn probes_status_and_documents() {
    let h = Harness::new().await;
    let app = h.app();
    assert_eq!(get(&app, "/health", &[]).await.json(), json!({"status": "ok"}));
    let ready = get(&app, "/ready", &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"ready": true, "broker": true, "redis": true}));
    let lanes = get(&app, "/lanes", &[]).await;
    assert_eq!(lanes.status, 200);
    let lanes = lanes.json();
    assert!(lanes["lanes"]["anisora"]["ready"].is_boolean(), "{lanes}");
    assert!(lanes["degraded"].as_object().unwrap().contains_key("oldest_wait_ms"), "{lanes}");
    let models = get(&app, "/models", &[]).await.json();
    assert!(models.as_array().unwrap().iter().any(|m| m["name"] == "phr00t"));
    let page = get(&app, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.bytes).contains("id=\"result\""));
    let script = get(&app, "/dashboard.js", &[]).await;
    assert!(script.headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert_eq!(
        get(&app, "/openapi.json", &[]).await.json()["openapi"].as_str().map(|v| v.starts_with('3')),
        Some(true)
    );
    get(&app, "/nope", &[]).await.envelope(404, "not_found");
    get(&app, "/generate", &[]).await.envelope(405, "method_not_allowed");
    h.cleanup().await;
}

#[tokio::test]
async fn generate_admits_and_answers_202() {
    let h = Harness::new().await;
    let app = h.app();
    let res = post_json(&app, "/generate", &anisora("a red fox"), &[]).await;
    assert_eq!(res.status, 202, "{}", String::from_utf8_lossy(&res.bytes));
    let body = res.json();
    let id = body["task_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "a generated uuid v4 in simple form");
    assert_eq!(body["lane"], "degraded", "no warm worker: degraded");
    assert_eq!(body["fallback_cause"], "capacity");
    assert_eq!(body["status_url"], format!("/tasks/{id}"));
    assert_eq!(res.headers["location"], format!("/tasks/{id}").as_str());
    assert_eq!(h.depth(&h.producer.topology().degraded_queue()).await, 1);

    let task = get(&app, &format!("/tasks/{id}"), &[]).await;
    assert_eq!(task.status, 200);
    let task = task.json();
    assert_eq!(
        (task["status"].as_str(), task["lane"].as_str(), task["terminal"].as_bool()),
        (Some("pending"), Some("degraded"), Some(false))
    );
    assert_eq!(task["progress"], json!({"step": 0, "steps": 8}));
    assert!(task["result_url"].is_null());
    let lanes = get(&app, "/lanes", &[]).await.json();
    assert!(lanes["degraded"]["oldest_wait_ms"].as_u64().is_some_and(|ms| ms < 10_000), "{lanes}");

    // A task id in use: 422 invalid_parameter/task_id, nothing published.
    let mut again = anisora("again");
    again["task_id"] = json!(id);
    let err = post_json(&app, "/generate", &again, &[]).await.envelope(422, "invalid_parameter");
    assert_eq!(err["reason"], "task_id");
    assert_eq!(h.depth(&h.producer.topology().degraded_queue()).await, 1);
    h.cleanup().await;
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_413() {
    let h = Harness::new().await;
    let app = h.app();
    let valid = anisora("x").to_string().into_bytes();
    let cases: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
        (Some("application/json"), b"{\"model\": ".to_vec(), "body"),
        (Some("application/json"), b"[1, 2]".to_vec(), "body"),
        (Some("application/json"), b"".to_vec(), "body"),
        (Some("text/plain"), valid.clone(), "content_type"),
        (None, valid.clone(), "content_type"),
    ];
    for (ct, body, reason) in cases {
        let err = post_raw(&app, "/generate", ct, body, &[]).await.envelope(400, "malformed_message");
        assert_eq!(err["reason"], reason);
    }
    let mut big = anisora("x");
    big["padding"] = json!("p".repeat(70 * 1024));
    let err = post_json(&app, "/generate", &big, &[]).await.envelope(413, "malformed_message");
    assert_eq!(err["reason"], "body_too_large");
    for (q, d) in h.all_depths().await {
        assert_eq!(d, 0, "{q} must stay empty");
    }
    h.cleanup().await;
}

#[tokio::test]
async fn full_degraded_queue_is_503_with_retry_after() {
    let settings = settings_with(|s| s["degraded"]["max_depth"] = json!(1));
    let h = Harness::with_settings(settings).await;
    let app = h.app();
    assert_eq!(post_json(&app, "/generate", &anisora("one"), &[]).await.status, 202);
    let err = post_json(&app, "/generate", &anisora("two"), &[]).await.envelope(503, "queue_overloaded");
    assert_eq!(err["reason"], "queue_full");
    h.cleanup().await;
}

#[tokio::test]
async fn tasks_unknown_invalid_and_long_poll() {
    let h = Harness::new().await;
    let app = h.app();
    get(&app, "/tasks/nosuchtask", &[]).await.envelope(404, "not_found");
    get(&app, "/tasks/bad.id", &[]).await.envelope(422, "invalid_parameter");
    get(&app, "/tasks/nosuchtask/result", &[]).await.envelope(404, "not_found");
    get(&app, "/tasks/nosuchtask/events", &[]).await.envelope(404, "not_found");

    let id = post_json(&app, "/generate", &anisora("wait for me"), &[]).await.json()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    get(&app, &format!("/tasks/{id}?wait=soon"), &[]).await.envelope(422, "invalid_parameter");
    get(&app, &format!("/tasks/{id}/result"), &[]).await.envelope(404, "not_found");
    let started = Instant::now();
    let pending = get(&app, &format!("/tasks/{id}?wait=1"), &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(800), "long-polled {:?}", started.elapsed());
    assert_eq!(pending.json()["status"], "pending");

    // The long poll returns as soon as the hash turns terminal.
    let producer = h.producer.clone();
    let id2 = id.clone();
    let finisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let reply = Reply::coded(
            &id2,
            ReplyStatus::Failed,
            Some("degraded"),
            &Rejection::wait_timeout(31_000, 30_000),
            Timings::default(),
        );
        producer.store().finish(&reply, FinishWhen::NotTerminal).await.unwrap();
    });
    let started = Instant::now();
    let failed = get(&app, &format!("/tasks/{id}?wait=20"), &[]).await.json();
    assert!(started.elapsed() < Duration::from_secs(5));
    finisher.await.unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], ErrorCode::QueueOverloaded.as_str());
    assert_eq!(failed["error"]["reason"], "wait_timeout");
    // The reply list is untouched: it belongs to the AMQP caller.
    assert!(h.producer.store().wait_reply(&id, Duration::from_millis(50)).await.unwrap().is_some());

    // A terminal task's event stream carries its view and ends.
    let events = get(&app, &format!("/tasks/{id}/events"), &[]).await;
    assert_eq!(events.status, 200);
    assert!(events.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = String::from_utf8_lossy(&events.bytes);
    assert!(text.contains("event: task") && text.contains("\"status\":\"failed\""), "{text}");
    h.cleanup().await;
}

#[tokio::test]
async fn results_are_served_only_from_the_results_dir() {
    let h = Harness::new().await;
    let app = h.app();
    let id = post_json(&app, "/generate", &anisora("a gif"), &[]).await.json()["task_id"].as_str().unwrap().to_string();
    let req = warmlane_shared::validate_json(
        &json!({"v": 1, "task_id": id, "model": "anisora", "prompt": "a gif", "steps": 8}),
        h.producer.settings(),
    )
    .unwrap();
    finish_as_worker(&h.producer, &req, "degraded", "w1", &h.results_dir).await;
    let done = get(&app, &format!("/tasks/{id}"), &[]).await.json();
    assert_eq!(done["status"], "done");
    assert_eq!(done["result_url"], format!("/tasks/{id}/result"));
    assert_eq!(done["preview_url"], format!("/tasks/{id}/preview"));
    assert_eq!(done["content_type"], "video/mp4");
    let mp4 = get(&app, &format!("/tasks/{id}/result"), &[]).await;
    assert_eq!(mp4.status, 200);
    assert_eq!(mp4.headers["content-type"], "video/mp4");
    assert_eq!(mp4.headers["accept-ranges"], "bytes");
    assert_eq!(&mp4.bytes[4..8], b"ftyp");
    // Browsers' media stacks ask for ranges.
    let part = get(&app, &format!("/tasks/{id}/result"), &[("range", "bytes=4-11")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.bytes, &mp4.bytes[4..12]);
    let range = format!("bytes 4-11/{}", mp4.bytes.len());
    assert_eq!(part.headers["content-range"], range.as_str());
    assert_eq!(part.headers["content-type"], "video/mp4");
    let past_the_end = format!("bytes={}-", mp4.bytes.len() + 10);
    let refused = get(&app, &format!("/tasks/{id}/result"), &[("range", past_the_end.as_str())]).await;
    let whole = format!("bytes */{}", mp4.bytes.len());
    assert_eq!(refused.headers["content-range"], whole.as_str());
    refused.envelope(416, "range_not_satisfiable");
    let gif = get(&app, &format!("/tasks/{id}/preview"), &[]).await;
    assert_eq!(gif.status, 200);
    assert_eq!(gif.headers["content-type"], "image/gif");
    assert!(gif.bytes.starts_with(b"GIF89a"));

    // A reply naming a file outside the results dir is not served.
    let outside_dir = std::env::temp_dir().join(format!("{}-outside", h.prefix));
    std::fs::create_dir_all(&outside_dir).unwrap();
    let id2 = format!("{}x", &id[..20]);
    let req2 = warmlane_shared::validate_json(
        &json!({"v": 1, "task_id": id2, "model": "anisora", "prompt": "p", "steps": 8}),
        h.producer.settings(),
    )
    .unwrap();
    finish_as_worker(&h.producer, &req2, "degraded", "w1", &outside_dir).await;
    get(&app, &format!("/tasks/{id2}/result"), &[]).await.envelope(404, "not_found");
    get(&app, &format!("/tasks/{id2}/preview"), &[]).await.envelope(404, "not_found");
    // Even when a file of that name exists inside, the reply must name it.
    std::fs::write(h.results_dir.join(format!("{id2}.mp4")), b"not this one").unwrap();
    std::fs::write(h.results_dir.join(format!("{id2}.gif")), small_gif(4, 4)).unwrap();
    get(&app, &format!("/tasks/{id2}/result"), &[]).await.envelope(404, "not_found");
    get(&app, &format!("/tasks/{id2}/preview"), &[]).await.envelope(404, "not_found");
    let _ = std::fs::remove_dir_all(&outside_dir);
    h.cleanup().await;
}

/// A TCP relay to Redis that can be cut, to see the shim's answer when Redis goes away.
struct Relay {
    addr: std::net::SocketAddr,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: &'static str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let inner = tasks.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let t = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                inner.lock().unwrap().push(t);
            }
        });
        tasks.lock().unwrap().push(acceptor);
        Relay { addr, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test]
async fn redis_down_is_503_service_unavailable() {
    let h = Harness::new().await;
    let relay = Relay::start("127.0.0.1:6379").await;
    let redis = format!("redis://{}/", relay.addr);
    let producer = warmlane_producer::Producer::connect(
        h.producer.settings().clone(),
        &amqp_url().into(),
        &redis.into(),
        &h.prefix,
    )
    .await
    .expect("connect through the relay");
    let config = warmlane_producer::http::HttpConfig::from_args(&h.args()).unwrap();
    let app = warmlane_producer::http::app(warmlane_producer::http::AppState::new(Arc::new(producer), config));
    assert_eq!(get(&app, "/ready", &[]).await.status, 200);
    relay.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = get(&app, "/ready", &[]).await.envelope(503, "service_unavailable");
    assert_eq!(err["reason"], "redis");
    let started = Instant::now();
    let err = post_json(&app, "/generate", &anisora("nobody home"), &[]).await.envelope(503, "service_unavailable");
    assert!(!err["message"].as_str().unwrap().contains("127.0.0.1"), "no internals in a 5xx: {err}");
    // The store gives up reconnecting after a few short tries (`store_reconnect`) rather
    // than holding the caller for the client library's default ~6 s of retries.
    let took = started.elapsed();
    eprintln!("POST /generate with Redis down answered in {took:?}");
    assert!(took < Duration::from_secs(3), "a write with Redis down took {took:?}");
    // Reads fail fast (READ_TIMEOUT) instead of waiting out the store's reconnects.
    let started = Instant::now();
    get(&app, "/tasks/whatever", &[]).await.envelope(503, "service_unavailable");
    get(&app, "/api/v1/hardware/vram", &[]).await.envelope(503, "service_unavailable");
    assert!(
        started.elapsed() < 2 * warmlane_producer::http::routes::READ_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for (q, d) in h.all_depths().await {
        assert_eq!(d, 0, "{q} must stay empty");
    }
    h.cleanup().await;
}

#[tokio::test]
async fn broker_down_is_503_service_unavailable() {
    let h = Harness::new().await;
    let relay = Relay::start("127.0.0.1:5672").await;
    let amqp = format!("amqp://guest:guest@{}/%2f", relay.addr);
    let producer = warmlane_producer::Producer::connect(
        h.producer.settings().clone(),
        &amqp.into(),
        &redis_url().into(),
        &h.prefix,
    )
    .await
    .expect("connect through the relay");
    let config = warmlane_producer::http::HttpConfig::from_args(&h.args()).unwrap();
    let app = warmlane_producer::http::app(warmlane_producer::http::AppState::new(Arc::new(producer), config));
    assert_eq!(get(&app, "/ready", &[]).await.status, 200);
    relay.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = get(&app, "/ready", &[]).await.envelope(503, "service_unavailable");
    assert_eq!(err["reason"], "broker");
    let mut body = anisora("no broker");
    let id = format!("{}-nobroker", h.prefix);
    body["task_id"] = id.clone().into();
    let err = post_json(&app, "/generate", &body, &[]).await.envelope(503, "service_unavailable");
    assert_eq!(err["reason"], "broker");
    assert!(!err["message"].as_str().unwrap().contains("guest"), "no internals in a 5xx: {err}");
    // Nothing was queued, so the admission was undone: the same task_id can be retried.
    let task = h.producer.store().task(&id).await.unwrap();
    assert!(task.is_empty(), "the unpublished task was forgotten: {task:?}");
    body["v"] = 1.into(); // the library takes the wire message; the shim adds `v`
    let retried = h.producer.submit_json(&body).await.expect("the retry with the same task_id is accepted");
    assert_eq!(retried.task_id, id);
    h.cleanup().await;
}
