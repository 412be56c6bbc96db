//! The dashboard's history table, gallery and Cancel button in headless Chromium,
//! against the real shim, broker and Redis. Four tasks go in through the API: one
//! the stand-in worker finishes (MP4 and GIF preview), one the test finishes as a
//! worker without a preview, one no worker takes (it stays pending) and one the test
//! starts as a worker and leaves running. The page lists them newest first, shows the
//! two videos in the gallery (a poster only where there is a preview), cancels the
//! pending one from its row (`cancelled`) and asks the running one to stop
//! (`cancelling`); the API agrees. Screenshots: `target/test-output/dashboard-history.png` and
//! `dashboard-gallery.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (see `http_browser.rs`).
// A scripted scenario reads best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

mod browser_support;
mod http_support;

use browser_support::Browser;
use http_support::*;
use serde_json::{json, Value};
use std::time::Duration;
use warmlane_infra::store::FinishWhen;
use warmlane_shared::{Reply, Timings};

const KEY: &str = "browser-key";

/// Submits `body` over HTTP; returns the task id.
async fn submit(server: &Server, body: &Value) -> String {
    let accepted = http("POST", &server.url("/generate"), Some(body), &[("x-api-key", KEY)]).await;
    assert_eq!(accepted.status, 202, "{}", String::from_utf8_lossy(&accepted.bytes));
    accepted.json()["task_id"].as_str().expect("task_id").to_string()
}

/// The task as `GET /tasks/{id}?wait=N` shows it (a long poll of up to N s for it to end).
async fn task(server: &Server, id: &str, wait: u32) -> Value {
    let answer = http("GET", &server.url(&format!("/tasks/{id}?wait={wait}")), None, &[("x-api-key", KEY)]).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.bytes));
    answer.json()
}

/// The message the shim published for an HTTP body with a `task_id`.
fn request(body: &Value, h: &Harness) -> warmlane_shared::ValidRequest {
    let mut message = body.clone();
    message["v"] = json!(1);
    warmlane_shared::request::validate_json(&message, h.producer.settings()).expect("a valid request")
}

/// Finishes a task as a worker that wrote an MP4 but no GIF preview.
async fn finish_without_preview(h: &Harness, body: &Value) {
    let req = request(body, h);
    let store = h.producer.store();
    store.start(&req, "degraded", "test-worker").await.expect("start");
    let result = write_result(&h.results_dir, &req.task_id, false).await;
    let reply = Reply::done(&req.task_id, "degraded", result, Timings { queued_ms: Some(1), inference_ms: Some(5) });
    assert!(store.finish(&reply, FinishWhen::NotTerminal).await.expect("finish"));
}

/// A row of the history table: `[status, model, lane, has a Cancel button]`.
async fn row(browser: &Browser, id: &str) -> Value {
    browser
        .eval(&format!(
            "const r = document.querySelector('#history tr[data-task=\"{id}\"]'); return r && [r.dataset.status, r.children[1].textContent, r.children[2].textContent, r.querySelector('button.cancel') !== null]"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_gallery_and_cancel() {
    // No worker takes phr00t or wan-tiny: their tasks wait in the degraded queue, for
    // longer than this test runs.
    let settings = settings_with(|s| {
        s["degraded"]["max_wait_ms"] = json!(600_000);
        s["lanes"]["lane_wait_ms"] = json!(600_000);
    });
    let h = Harness::with_settings(settings).await;
    let worker = stand_in_worker(&h, "anisora").await;
    let mut args = h.args();
    args.api_keys = vec![KEY.into()];
    let server = Server::start(&h, &args).await;
    let long = Duration::from_secs(20);

    let done = submit(&server, &anisora("a lighthouse in the fog")).await;
    assert_eq!(task(&server, &done, 20).await["status"], "done");
    let plain_body = json!({"task_id": format!("{}-plain", h.prefix), "model": "wan-tiny", "prompt": "a kite", "steps": 2, "width": 32, "height": 32, "frames": 5});
    let plain = submit(&server, &plain_body).await;
    finish_without_preview(&h, &plain_body).await;
    let waiting = submit(
        &server,
        &json!({"model": "phr00t", "prompt": "a snail on a leaf", "width": 64, "height": 64, "frames": 4}),
    )
    .await;
    assert_eq!(task(&server, &plain, 0).await["preview_url"], Value::Null);
    // A task a worker has started and not finished: its cancel is a request (202).
    let running_body = json!({"task_id": format!("{}-running", h.prefix), "model": "wan-tiny", "prompt": "a crane", "steps": 2, "width": 32, "height": 32, "frames": 5});
    let running = submit(&server, &running_body).await;
    h.producer.store().start(&request(&running_body, &h), "degraded", "test-worker").await.expect("start");

    let browser = Browser::start(&h.prefix).await;
    browser.goto(&server.url("/")).await;
    browser.type_into("#api-key", KEY).await;
    browser
        .wait_until(
            &format!("return document.querySelectorAll('#history tbody tr').length === 4 && document.querySelector('#history tr[data-task=\"{running}\"]') !== null"),
            "four rows in the history",
            long,
        )
        .await;
    let order =
        browser.eval("return [...document.querySelectorAll('#history tbody tr')].map((r) => r.dataset.task)").await;
    assert_eq!(order, json!([running, waiting, plain, done]), "newest submitted first");
    assert_eq!(row(&browser, &running).await, json!(["processing", "wan-tiny", "degraded", true]));
    assert_eq!(row(&browser, &done).await, json!(["done", "anisora", "anisora", false]));
    assert_eq!(row(&browser, &plain).await, json!(["done", "wan-tiny", "degraded", false]));
    assert_eq!(row(&browser, &waiting).await, json!(["pending", "phr00t", "degraded", true]));
    let progress = browser
        .eval(&format!(
            "return document.querySelector('#history tr[data-task=\"{done}\"]').children[4].textContent.trim()"
        ))
        .await;
    assert_eq!(progress, "8/8");

    // The gallery: both finished videos play; the poster is the GIF preview where
    // there is one, and absent (not a broken image) where there is none.
    for id in [&done, &plain] {
        browser
            .wait_until(
                &format!("const v = document.querySelector('#gallery .clip[data-task=\"{id}\"] video'); return v !== null && v.error === null && v.readyState >= 2 && v.videoWidth === 32"),
                &format!("the video of {id} in the gallery"),
                long,
            )
            .await;
    }
    let posters = browser
        .eval(&format!(
            "const p = (id) => document.querySelector(`#gallery .clip[data-task=\"${{id}}\"] video`).getAttribute('poster'); return [p('{done}'), p('{plain}'), document.querySelectorAll('#gallery img').length, document.querySelectorAll('#gallery .clip').length]"
        ))
        .await;
    assert!(posters[0].as_str().is_some_and(|p| p.starts_with("blob:")), "{posters}");
    assert_eq!((&posters[1], &posters[2], &posters[3]), (&Value::Null, &json!(0), &json!(2)), "{posters}");
    browser.screenshot("dashboard-gallery.png", Some("#gallery-section")).await;

    // Cancel from the row of the pending task.
    browser.click(&format!("#history tr[data-task=\"{waiting}\"] button.cancel"), long).await;
    browser
        .wait_until(
            &format!("const r = document.querySelector('#history tr[data-task=\"{waiting}\"]'); return r !== null && r.dataset.status === 'cancelled'"),
            "the pending row to show cancelled",
            long,
        )
        .await;
    assert_eq!(row(&browser, &waiting).await, json!(["cancelled", "phr00t", "degraded", false]));
    let cancelled = task(&server, &waiting, 0).await;
    assert_eq!(
        (&cancelled["status"], &cancelled["error"]["code"], &cancelled["terminal"]),
        (&json!("failed"), &json!("cancelled"), &json!(true)),
        "{cancelled}"
    );
    // Cancel the running one: it is asked to stop (the worker would end it at its next step).
    browser.click(&format!("#history tr[data-task=\"{running}\"] button.cancel"), long).await;
    browser
        .wait_until(
            &format!("const r = document.querySelector('#history tr[data-task=\"{running}\"]'); return r !== null && r.dataset.status === 'cancelling'"),
            "the running row to show cancelling",
            long,
        )
        .await;
    assert_eq!(row(&browser, &running).await, json!(["cancelling", "wan-tiny", "degraded", false]));
    let asked = task(&server, &running, 0).await;
    assert_eq!((&asked["status"], &asked["cancel_requested"]), (&json!("processing"), &json!(true)), "{asked}");
    let errors = browser.eval("return document.getElementById('history-error').textContent + document.getElementById('cancel-error').textContent").await;
    assert_eq!(errors, "");

    // The status filter: only the cancelled task.
    browser
        .eval("const s = document.getElementById('history-status'); s.value = 'cancelled'; s.dispatchEvent(new Event('change')); return true")
        .await;
    browser
        .wait_until(
            &format!("const rows = [...document.querySelectorAll('#history tbody tr')]; return rows.length === 1 && rows[0].dataset.task === '{waiting}'"),
            "the history filtered to the cancelled task",
            long,
        )
        .await;
    browser.screenshot("dashboard-history.png", Some("#history-section")).await;

    browser.close().await;
    server.stop().await;
    worker.abort();
    h.cleanup().await;
}
