//! Keys never reach the logs: every log line of a shim serving requests with
//! right and wrong API and admin keys is captured at TRACE and searched for them.

mod http_support;

use http_support::*;
use serde_json::json;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const API_KEY: &str = "sk-LOGTEST-api-1234";
const WRONG_KEY: &str = "sk-LOGTEST-wrong-999";
const ADMIN_KEY: &str = "adm-LOGTEST-5678";

#[tokio::test]
async fn keys_never_appear_in_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new().await;
    let mut args = h.args();
    args.api_keys = vec![API_KEY.into()];
    args.admin_key = Some(ADMIN_KEY.into());
    tracing::info!(?args, "serve flags");
    let server = Server::start(&h, &args).await;
    assert_eq!(
        http("POST", &server.url("/generate"), Some(&anisora("logs")), &[("x-api-key", API_KEY)]).await.status,
        202
    );
    http("POST", &server.url("/generate"), Some(&anisora("logs")), &[("x-api-key", WRONG_KEY)])
        .await
        .envelope(403, "forbidden");
    http("GET", &server.url("/tasks/abc"), None, &[("x-api-key", WRONG_KEY)]).await.envelope(403, "forbidden");
    let admin = http(
        "POST",
        &server.url("/admin/lanes/anisora/disable"),
        Some(&json!({"cause": "manual"})),
        &[("x-admin-key", ADMIN_KEY)],
    )
    .await;
    assert_eq!(admin.status, 200);
    http("POST", &server.url("/admin/lanes/anisora/enable"), None, &[("x-admin-key", WRONG_KEY)])
        .await
        .envelope(403, "forbidden");
    server.stop().await;
    h.cleanup().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("HTTP shim listening"), "the capture works: {logs}");
    assert!(logs.contains("serve flags") && logs.contains("redacted"), "{logs}");
    for secret in [API_KEY, WRONG_KEY, ADMIN_KEY, "LOGTEST"] {
        assert!(!logs.contains(secret), "`{secret}` leaked into the logs:\n{logs}");
    }
}
