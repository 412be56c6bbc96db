//! The dashboard in headless Chromium: a person's path through it. The test
//! submits a prompt from the page, sees the progress reach `done` and the MP4
//! (H.264) play in the `<video>` element, sees the lane and memory cards, and saves a screenshot to
//! `target/test-output/dashboard.png`. Driven by chromedriver through fantoccini,
//! against the real shim, broker and Redis, with the stand-in worker.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test fails
//! and says how to install them (it never skips).
// A scripted scenario reads best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

mod http_support;

use fantoccini::{Client, ClientBuilder, Locator};
use http_support::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const INSTALL: &str = "install them with: apt-get update && apt-get install -y chromium chromium-driver";

fn binary(env: &str, default: &str) -> PathBuf {
    let path = std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found (set {env} to override); the browser test needs Chromium and chromedriver: {INSTALL}",
        path.display()
    );
    path
}

fn output_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-output")
}

async fn start_chromedriver(driver: &Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", driver.display()));
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not open port {port} within 10 s");
}

async fn connect(driver_url: &str, chromium: &Path, profile: &Path) -> Client {
    let args = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,1500".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": chromium, "args": args }));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .unwrap_or_else(|e| panic!("chromedriver session with {}: {e}", chromium.display()))
}

/// Evaluates `script` every 100 ms until it returns true, or fails with `what`.
async fn wait_until(client: &Client, script: &str, what: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let value = client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        if value.as_bool() == Some(true) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let status = client.execute("return document.getElementById('task-status').textContent + ' | ' + document.getElementById('task-error').textContent + ' | ' + document.getElementById('form-error').textContent", vec![]).await;
            panic!("timed out waiting for {what}; page says {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_submits_and_shows_the_video() {
    let chromium = binary("CHROME_BIN", "/usr/bin/chromium");
    let driver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
    let h = Harness::new().await;
    let worker = stand_in_worker(&h, "anisora").await;
    let mut args = h.args();
    args.api_keys = vec!["browser-key".into()];
    let server = Server::start(&h, &args).await;
    let (mut chromedriver, driver_url) = start_chromedriver(&driver).await;
    let profile = std::env::temp_dir().join(format!("{}-chromium", h.prefix));
    let client = connect(&driver_url, &chromium, &profile).await;

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

    wait_until(
        &client,
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
    wait_until(
        &client,
        "const v = document.getElementById('result'); return !v.hidden && v.error === null && v.readyState >= 2 && !v.paused",
        "the MP4 to play (readyState >= 2, not paused)",
        Duration::from_secs(15),
    )
    .await;
    // Playing means the clock moves: poll currentTime until it differs from a first reading.
    let first = client.execute("return document.getElementById('result').currentTime", vec![]).await.expect("time");
    let first = first.as_f64().expect("currentTime is a number");
    wait_until(
        &client,
        &format!("const v = document.getElementById('result'); return v.error === null && v.currentTime !== {first}"),
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

    wait_until(
        &client,
        "return document.querySelectorAll('#lanes .lane').length >= 3",
        "the lane cards",
        Duration::from_secs(10),
    )
    .await;
    wait_until(
        &client,
        "return document.querySelector('#memory .worker .bar span.amber') !== null",
        "an amber memory bar (65 %)",
        Duration::from_secs(10),
    )
    .await;
    wait_until(
        &client,
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
    let png = client.screenshot().await.expect("screenshot");
    let dir = output_dir();
    std::fs::create_dir_all(&dir).expect("creating target/test-output");
    std::fs::write(dir.join("dashboard.png"), &png).expect("writing the screenshot");
    assert!(png.starts_with(b"\x89PNG"));

    client.close().await.expect("close the browser");
    let _ = chromedriver.kill().await;
    let _ = std::fs::remove_dir_all(&profile);
    server.stop().await;
    worker.abort();
    h.cleanup().await;
}
