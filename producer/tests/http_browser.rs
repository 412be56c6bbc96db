//! The dashboard in headless Chromium: a person's path through it. One test
//! submits a prompt from the page, sees the progress reach `done` and the MP4
//! (H.264) play in the `<video>` element, sees the lane and memory cards, and saves a
//! screenshot to `target/test-output/dashboard.png`; one takes a lane out of routing
//! and back with the admin key; one opens the API docs at `/docs`. Driven by
//! chromedriver through fantoccini, against the real shim, broker and Redis, with the
//! stand-in worker. The history, gallery and Cancel are in `http_browser_tasks.rs`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the tests fail
//! and say how to install them (they never skip).
// A scripted scenario reads best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

mod browser_support;
mod http_support;

use browser_support::Browser;
use fantoccini::Locator;
use http_support::*;
use std::time::Duration;
use warmlane_producer::http::app::route_table;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_submits_and_shows_the_video() {
    let h = Harness::new().await;
    let worker = stand_in_worker(&h, "anisora").await;
    let mut args = h.args();
    args.api_keys = vec!["browser-key".into()];
    let server = Server::start(&h, &args).await;
    let browser = Browser::start(&h.prefix).await;
    let client = &browser.client;

    client.goto(&server.url("/")).await.expect("open the dashboard");
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#model option[value='anisora']"))
        .await
        .expect("models load");
    client.find(Locator::Id("api-key")).await.expect("key input").send_keys("browser-key").await.expect("type the key");
    client.execute("const m = document.getElementById('model'); m.value = 'anisora'; m.dispatchEvent(new Event('change')); return true;", vec![]).await.expect("pick anisora");
    client
        .find(Locator::Id("prompt"))
        .await
        .expect("prompt")
        .send_keys("a paper boat drifting down a river at dusk")
        .await
        .expect("type the prompt");
    client.find(Locator::Id("submit")).await.expect("submit").click().await.expect("click submit");

    browser
        .wait_until(
            "return document.getElementById('task-status').textContent === 'done'",
            "the task to reach done",
            Duration::from_secs(30),
        )
        .await;
    // Debian's Chromium is built with its proprietary codecs; without them it cannot
    // play H.264 and the dashboard would fall back to the GIF. Say so plainly.
    let h264 = client
        .execute("return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42C00C\"')", vec![])
        .await
        .expect("canPlayType");
    assert!(
        matches!(h264.as_str(), Some("probably" | "maybe")),
        "this Chromium cannot play H.264 in MP4 (canPlayType says {h264:?})"
    );
    browser
        .wait_until(
        "const v = document.getElementById('result'); return !v.hidden && v.error === null && v.readyState >= 2 && !v.paused",
        "the MP4 to play (readyState >= 2, not paused)",
        Duration::from_secs(15),
    )
    .await;
    // Playing means the clock moves: poll currentTime until it differs from a first reading.
    let first = client.execute("return document.getElementById('result').currentTime", vec![]).await.expect("time");
    let first = first.as_f64().expect("currentTime is a number");
    browser
        .wait_until(
            &format!(
                "const v = document.getElementById('result'); return v.error === null && v.currentTime !== {first}"
            ),
            "the video's currentTime to advance",
            Duration::from_secs(10),
        )
        .await;
    let shown = client
        .execute(
            "const v = document.getElementById('result'); return [v.videoWidth, v.videoHeight, getComputedStyle(document.getElementById('preview')).display === 'none']",
            vec![],
        )
        .await
        .expect("video size");
    assert_eq!(shown, serde_json::json!([32, 24, true]), "the MP4 plays, so the GIF fallback stays hidden");
    let progress =
        client.execute("return document.getElementById('progress-text').textContent", vec![]).await.expect("progress");
    assert_eq!(progress.as_str(), Some("8/8"));
    let stored = client.execute("return localStorage.getItem('warmlane.apiKey')", vec![]).await.expect("localStorage");
    // The key is saved on `change`, which fires once the input loses focus (the click above).
    assert_eq!(stored.as_str(), Some("browser-key"));

    browser
        .wait_until(
            "return document.querySelectorAll('#lanes .lane').length >= 3",
            "the lane cards",
            Duration::from_secs(10),
        )
        .await;
    browser
        .wait_until(
            "return document.querySelector('#memory .worker .bar span.amber') !== null",
            "an amber memory bar (65 %)",
            Duration::from_secs(10),
        )
        .await;
    browser
        .wait_until(
            "return document.querySelector('#memory .worker .bar.measured span.red') !== null",
            "a red measured bar (85 %) beside the amber estimate",
            Duration::from_secs(10),
        )
        .await;
    let placements = client
        .execute("return document.querySelector('#memory .worker').textContent", vec![])
        .await
        .expect("memory card");
    let placements = placements.as_str().unwrap_or_default().to_string();
    assert!(
        placements.contains("released")
            && placements.contains("device")
            && placements.contains("CPU")
            && placements.contains("estimate: 65 %")
            && placements.contains("measured (NVML, whole device): 85 %"),
        "{placements}"
    );

    client.set_window_size(1280, 1500).await.expect("window size");
    browser.screenshot("dashboard.png", None).await;

    browser.close().await;
    server.stop().await;
    worker.abort();
    h.cleanup().await;
}

/// Waits for the lane card of `lane` to show a button of class `class`.
async fn lane_button(browser: &Browser, lane: &str, class: &str) -> String {
    let css = format!("#lanes .lane[data-lane='{lane}'] button.{class}");
    browser.element(&css, Duration::from_secs(10)).await;
    css
}

/// The lane's `disabled` flag as `GET /lanes` reports it.
async fn lane_disabled(server: &Server, lane: &str) -> serde_json::Value {
    let lanes = http("GET", &server.url("/lanes"), None, &[]).await.json();
    lanes["lanes"][lane]["disabled"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_buttons_disable_and_enable_with_the_admin_key() {
    let h = Harness::new().await;
    let mut args = h.args();
    args.admin_key = Some("admin-secret".into());
    let server = Server::start(&h, &args).await;
    let browser = Browser::start(&h.prefix).await;
    let long = Duration::from_secs(15);

    browser.goto(&server.url("/")).await;
    browser.wait_until("return document.querySelectorAll('#lanes .lane').length >= 3", "the lane cards", long).await;
    let buttons = browser.eval("return document.querySelectorAll('#lanes button').length").await;
    assert_eq!(buttons, 0, "no lane buttons without an admin key");

    // A wrong key: the button is there, the server refuses, the page says so.
    browser.type_into("#admin-key", "not-the-key").await;
    let disable = lane_button(&browser, "anisora", "lane-disable").await;
    browser.click(&disable, long).await;
    browser
        .wait_until(
            "return document.getElementById('lanes-error').textContent.includes('forbidden')",
            "the 403 in the lanes' error line",
            long,
        )
        .await;
    assert_eq!(lane_disabled(&server, "anisora").await, serde_json::Value::Null);

    let admin = browser.element("#admin-key", long).await;
    admin.clear().await.expect("clear the admin key");
    browser.type_into("#admin-key", "admin-secret").await;
    let disable = lane_button(&browser, "anisora", "lane-disable").await;
    browser.click(&disable, long).await;
    lane_button(&browser, "anisora", "lane-enable").await;
    browser
        .wait_until(
            "const c = document.querySelector(\"#lanes .lane[data-lane='anisora']\"); return c.querySelector('.lane-disabled') !== null && c.textContent.includes('disabled (manual)')",
            "the anisora card to show it disabled",
            long,
        )
        .await;
    let flag = lane_disabled(&server, "anisora").await;
    assert_eq!(flag["cause"], "manual", "{flag}");
    assert_eq!(flag["note"], "from the dashboard", "{flag}");
    assert_eq!(browser.eval("return document.getElementById('lanes-error').textContent").await, "");
    // The admin key stays in this tab: sessionStorage, not localStorage.
    let stored =
        browser.eval("return [sessionStorage.getItem('warmlane.adminKey'), JSON.stringify(localStorage)]").await;
    assert_eq!(stored[0], "admin-secret");
    assert!(!stored[1].as_str().unwrap_or_default().contains("admin-secret"), "{stored}");
    browser.screenshot("dashboard-lane-disabled.png", Some("#lanes")).await;

    browser.click(&lane_button(&browser, "anisora", "lane-enable").await, long).await;
    lane_button(&browser, "anisora", "lane-disable").await;
    browser
        .wait_until(
            "return document.querySelector(\"#lanes .lane[data-lane='anisora'] .lane-disabled\") === null",
            "the anisora card to show it enabled",
            long,
        )
        .await;
    assert_eq!(lane_disabled(&server, "anisora").await, serde_json::Value::Null);

    browser.close().await;
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_render_swagger_ui_from_vendored_assets() {
    let h = Harness::new().await;
    let server = Server::start(&h, &h.args()).await;

    for (path, kind) in [("/docs/swagger-ui-bundle.js", "text/javascript"), ("/docs/swagger-ui.css", "text/css")] {
        let asset = http("GET", &server.url(path), None, &[]).await;
        assert_eq!(asset.status, 200, "{path}");
        let header = |name: &str| asset.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        assert_eq!(header("cache-control"), "public, max-age=86400", "{path}");
        let etag = header("etag");
        assert!(etag.starts_with("\"swagger-ui-5."), "{path}: {etag}");
        let again = http("GET", &server.url(path), None, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, 304, "{path} with its ETag");
        assert!(again.bytes.is_empty());
    }

    let browser = Browser::start(&h.prefix).await;
    browser.goto(&server.url("/")).await;
    browser.click("#docs-link", Duration::from_secs(10)).await;
    let operations = route_table().len();
    browser
        .wait_until(
            &format!("return document.querySelectorAll('#swagger-ui .opblock').length === {operations}"),
            &format!("Swagger UI to list the {operations} operations of the route table"),
            Duration::from_secs(30),
        )
        .await;
    let listed = browser
        .eval("return [...document.querySelectorAll('.opblock-summary-path')].map((p) => p.textContent.replace(/\\u200b/g, ''))")
        .await;
    let listed: Vec<String> = serde_json::from_value(listed).expect("paths");
    for path in ["/generate", "/tasks/{id}", "/admin/lanes/{model}/disable", "/docs"] {
        assert!(listed.iter().any(|p| p == path), "{path} is not listed: {listed:?}");
    }
    let title = browser.eval("return document.querySelector('.info .title').textContent").await;
    assert!(title.as_str().unwrap_or_default().starts_with("warmlane HTTP shim"), "{title}");
    let loaded = browser
        .eval("return performance.getEntriesByType('resource').map((r) => r.name).filter((n) => !n.startsWith(location.origin))")
        .await;
    assert_eq!(loaded, serde_json::json!([]), "the docs load nothing from elsewhere");
    browser.screenshot("docs.png", None).await;

    browser.close().await;
    server.stop().await;
    h.cleanup().await;
}
