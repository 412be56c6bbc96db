//! `GET /metrics` through the router against the real RabbitMQ and Redis: a clear
//! 404 in the envelope while the process records no Prometheus metrics, then (with
//! the exporters of `warmlane-producer serve` installed) the text exposition format
//! with the statsd-exporter's names. The `metrics` recorder is global and installed
//! once per process, so this file holds exactly one test.

mod http_support;

use http_support::*;
use warmlane_infra::config::TelemetryArgs;

#[tokio::test]
async fn metrics_are_404_without_a_recorder_then_prometheus_text() {
    let h = Harness::new().await;
    let app = h.app();

    let off = get(&app, "/metrics", &[]).await;
    let err = off.envelope(404, "not_found");
    assert!(err["message"].as_str().unwrap_or_default().contains("Prometheus"), "{err}");

    let args = TelemetryArgs { json_logs: false, statsd: None, metrics_prefix: "wlhttp".into() };
    let on = warmlane_infra::telemetry::init_exporters(&args, true);
    assert!(on.prometheus && !on.statsd, "{on:?}");
    let admitted = post_json(&app, "/generate", &anisora("a lantern in the fog"), &[]).await;
    assert_eq!(admitted.status.as_u16(), 202, "{}", String::from_utf8_lossy(&admitted.bytes));

    let scraped = get(&app, "/metrics", &[]).await;
    assert_eq!(scraped.status.as_u16(), 200);
    let content_type = scraped.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(content_type, warmlane_infra::prometheus::CONTENT_TYPE);
    let text = String::from_utf8_lossy(&scraped.bytes);
    assert!(text.contains("# TYPE warmlane_requests_routed_total counter"), "{text}");
    let routed = text
        .lines()
        .find(|l| l.starts_with("warmlane_requests_routed_total{") && l.contains(r#"model="anisora""#))
        .unwrap_or_else(|| panic!("no anisora routing counter in:\n{text}"));
    assert!(routed.contains(r#"prefix="wlhttp""#) && routed.ends_with(" 1"), "{routed}");
    h.cleanup().await;
}
