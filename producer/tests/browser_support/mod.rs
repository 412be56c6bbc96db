//! Headless Chromium for the dashboard's browser tests: chromedriver on a free port,
//! a fantoccini session with a throwaway profile, waits on page conditions with a
//! deadline (never sleeps as synchronisation), and screenshots to
//! `target/test-output/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them a test fails and
//! says how to install them (it never skips).
#![allow(dead_code, unreachable_pub)]

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const INSTALL: &str = "install them with: apt-get update && apt-get install -y chromium chromium-driver";

/// What a failed wait prints beside its own message: every error line of the page.
const PAGE_ERRORS: &str = "return [...document.querySelectorAll('.error')].map((e) => (e.id || e.className) + ': ' + e.textContent).filter((t) => !t.endsWith(': ')).join(' | ')";

fn binary(env: &str, default: &str) -> PathBuf {
    let path = std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found (set {env} to override); the browser test needs Chromium and chromedriver: {INSTALL}",
        path.display()
    );
    path
}

/// `target/test-output`, created.
pub fn output_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("creating target/test-output");
    dir
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
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

/// A headless Chromium driven through chromedriver; [`Browser::close`] ends both.
pub struct Browser {
    pub client: Client,
    chromedriver: tokio::process::Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a session with a profile named after `name`.
    pub async fn start(name: &str) -> Browser {
        let chromium = binary("CHROME_BIN", "/usr/bin/chromium");
        let driver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let (chromedriver, driver_url) = start_chromedriver(&driver).await;
        let profile = std::env::temp_dir().join(format!("{name}-chromium"));
        let client = connect(&driver_url, &chromium, &profile).await;
        Browser { client, chromedriver, profile }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Runs `script` (a function body; `return` its value).
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Evaluates `script` every 100 ms until it returns true, or fails with `what`
    /// and the page's error lines.
    pub async fn wait_until(&self, script: &str, what: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            if value.as_bool() == Some(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let errors = self.client.execute(PAGE_ERRORS, vec![]).await;
                panic!("timed out after {timeout:?} waiting for {what}; the page's errors: {errors:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching `css` to be displayed, and returns it.
    pub async fn element(&self, css: &str, timeout: Duration) -> Element {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting for `{css}`: {e}"))
    }

    /// Clicks the element matching `css`, found (anew) when it is there.
    pub async fn click(&self, css: &str, timeout: Duration) {
        let element = self.element(css, timeout).await;
        element.click().await.unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    /// Types `text` into the input matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self.element(css, Duration::from_secs(10)).await;
        input.send_keys(text).await.unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
    }

    /// Saves a PNG of the window to `target/test-output/<name>`, scrolled so that
    /// `css` (when given) is at the top.
    pub async fn screenshot(&self, name: &str, css: Option<&str>) {
        if let Some(css) = css {
            let script = format!("document.querySelector({}).scrollIntoView(); return true", serde_json::json!(css));
            self.eval(&script).await;
        }
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(output_dir().join(name), &png).expect("writing the screenshot");
    }

    /// Ends the session and chromedriver, removes the profile.
    pub async fn close(mut self) {
        self.client.close().await.expect("close the browser");
        let _ = self.chromedriver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
