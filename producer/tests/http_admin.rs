//! Handler tests of keys, admin routes, the memory endpoints and CORS, through
//! `app(state).oneshot(...)` against the real RabbitMQ and Redis.

mod http_support;

use axum::body::Body;
use axum::http::Request;
use http_support::*;
use serde_json::json;

#[tokio::test]
async fn api_keys_guard_generation_routes() {
    let h = Harness::new().await;
    let mut args = h.args();
    args.api_keys = vec!["key-one".into(), " key-two ".into()];
    let app = h.app_with(&args);
    let err = post_json(&app, "/generate", &anisora("x"), &[]).await.envelope(401, "unauthorized");
    assert_eq!(err["reason"], "x-api-key");
    post_json(&app, "/generate", &anisora("x"), &[("x-api-key", "key-three")]).await.envelope(403, "forbidden");
    get(&app, "/tasks/abc", &[]).await.envelope(401, "unauthorized");
    get(&app, "/tasks/abc/result", &[("x-api-key", "nope")]).await.envelope(403, "forbidden");
    let ok = post_json(&app, "/generate", &anisora("x"), &[("x-api-key", "key-two")]).await;
    assert_eq!(ok.status, 202);
    let id = ok.json()["task_id"].as_str().unwrap().to_string();
    assert_eq!(get(&app, &format!("/tasks/{id}"), &[("x-api-key", "key-one")]).await.status, 200);
    // Public routes stay public.
    assert_eq!(get(&app, "/lanes", &[]).await.status, 200);
    assert_eq!(get(&app, "/health", &[]).await.status, 200);
    h.cleanup().await;
}

#[tokio::test]
async fn admin_routes_need_the_admin_key() {
    let h = Harness::new().await;
    let off = h.app();
    post_json(&off, "/admin/lanes/anisora/disable", &json!({"cause": "manual"}), &[("x-admin-key", "anything")])
        .await
        .envelope(403, "forbidden");

    let mut args = h.args();
    args.admin_key = Some("admin-secret".into());
    let app = h.app_with(&args);
    let admin = [("x-admin-key", "admin-secret")];
    post_json(&app, "/admin/lanes/anisora/disable", &json!({}), &[]).await.envelope(401, "unauthorized");
    post_json(&app, "/admin/lanes/anisora/disable", &json!({}), &[("x-admin-key", "wrong")])
        .await
        .envelope(403, "forbidden");
    post_json(&app, "/admin/lanes/nosuch/disable", &json!({}), &admin).await.envelope(422, "unknown_model");
    let err = post_json(&app, "/admin/lanes/anisora/disable", &json!({"cause": "capacity"}), &admin)
        .await
        .envelope(422, "invalid_parameter");
    assert_eq!(err["reason"], "cause");
    post_raw(&app, "/admin/lanes/anisora/disable", Some("application/json"), b"{".to_vec(), &admin)
        .await
        .envelope(400, "malformed_message");

    let res =
        post_json(&app, "/admin/lanes/anisora/disable", &json!({"cause": "quota", "note": "provider said no"}), &admin)
            .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["cause"], "quota");
    let lanes = get(&app, "/lanes", &[]).await.json();
    assert_eq!(lanes["lanes"]["anisora"]["disabled"]["cause"], "quota");
    assert_eq!(lanes["lanes"]["anisora"]["ready"], false);
    // Routed degraded with the lane's cause.
    let accepted = post_json(&app, "/generate", &anisora("while disabled"), &[]).await.json();
    assert_eq!((accepted["lane"].as_str(), accepted["fallback_cause"].as_str()), (Some("degraded"), Some("quota")));

    let res = post_json(&app, "/admin/lanes/anisora/enable", &json!({}), &admin).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["was_disabled"], true);
    assert!(get(&app, "/lanes", &[]).await.json()["lanes"]["anisora"]["disabled"].is_null());
    h.cleanup().await;
}

#[tokio::test]
async fn memory_status_and_fit_check_from_heartbeats() {
    let h = Harness::new().await;
    let app = h.app();
    let empty = get(&app, "/api/v1/hardware/vram", &[]).await.json();
    assert_eq!(empty["workers"], json!([]));
    let no_worker = post_json(
        &app,
        "/api/v1/hardware/vram/check",
        &json!({"model": "anisora", "width": 64, "height": 64, "frames": 8}),
        &[],
    )
    .await
    .json();
    assert_eq!(no_worker["fits"], false);
    assert!(no_worker["free_bytes"].is_null());

    let worker = format!("{}-w", h.prefix);
    h.heartbeat(&worker, "anisora", Some(snapshot(10_000_000, 9_200_000, "anisora"))).await;
    let status = get(&app, "/api/v1/hardware/vram", &[]).await.json();
    let w = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_id"] == worker.as_str())
        .expect("the worker")
        .clone();
    assert_eq!(
        (w["level"].as_str(), w["critical"].as_bool(), w["free_bytes"].as_u64()),
        (Some("red"), Some(true), Some(800_000))
    );
    assert_eq!(w["memory"]["pipelines"][0]["model"], "anisora", "the snapshot passes through");

    // anisora's estimate: its weights + runtime bytes per voxel from the settings; the
    // worker holds the model, so only the runtime bytes count.
    let per_voxel = h.producer.settings().model("anisora").expect("anisora").memory.runtime_bytes_per_voxel;
    let small = post_json(
        &app,
        "/api/v1/hardware/vram/check",
        &json!({"model": "anisora", "width": 64, "height": 64, "frames": 2}),
        &[],
    )
    .await
    .json();
    assert_eq!(
        (small["fits"].as_bool(), small["required_bytes"].as_u64()),
        (Some(true), Some(64 * 64 * 2 * per_voxel))
    );
    let big = post_json(
        &app,
        "/api/v1/hardware/vram/check",
        &json!({"model": "anisora", "width": 1280, "height": 720, "frames": 81}),
        &[],
    )
    .await
    .json();
    assert_eq!(big["fits"], false, "{big}");
    assert_eq!(big["free_bytes"], 800_000);
    post_json(&app, "/api/v1/hardware/vram/check", &json!({"model": "nope"}), &[]).await.envelope(422, "unknown_model");
    post_json(&app, "/api/v1/hardware/vram/check", &json!({"model": "anisora", "width": 100000}), &[])
        .await
        .envelope(422, "invalid_parameter");
    post_json(&app, "/api/v1/hardware/vram/check", &json!({"model": "anisora", "width": "wide"}), &[])
        .await
        .envelope(422, "invalid_parameter");
    post_raw(&app, "/api/v1/hardware/vram/check", None, b"{}".to_vec(), &[]).await.envelope(400, "malformed_message");
    h.cleanup().await;
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let h = Harness::new().await;
    let mut args = h.args();
    args.cors_origins = vec!["https://studio.example".into()];
    let app = h.app_with(&args);
    let preflight = |origin: &'static str| {
        Request::options("/generate")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-api-key")
            .body(Body::empty())
            .unwrap()
    };
    let ok = send(&app, preflight("https://studio.example")).await;
    assert_eq!(
        ok.headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("https://studio.example")
    );
    let allowed_headers = ok.headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed_headers.contains("x-api-key"), "{allowed_headers}");
    let other = send(&app, preflight("https://evil.example")).await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    // Without an allow-list, no CORS headers at all.
    let closed = send(&h.app(), preflight("https://studio.example")).await;
    assert!(closed.headers.get("access-control-allow-origin").is_none());
    h.cleanup().await;
}
