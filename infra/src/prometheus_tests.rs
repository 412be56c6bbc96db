use super::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every metric of `shared/src/metrics.rs`: its StatsD name and its kind, read from
/// the first line of its doc comment (`/// Counter: ...`, `/// Gauge: ...`,
/// `/// Histogram: ...`; tags are skipped).
fn shared_metrics() -> Vec<(String, Kind)> {
    let source = repo_file("shared/src/metrics.rs");
    let mut metrics = vec![];
    let mut first_doc: Option<String> = None;
    for line in source.lines().map(str::trim) {
        if let Some(doc) = line.strip_prefix("///") {
            first_doc.get_or_insert_with(|| doc.trim().to_string());
            continue;
        }
        let doc = first_doc.take().unwrap_or_default();
        let Some(rest) = line.strip_prefix("pub const ") else { continue };
        let value = rest.split('"').nth(1).unwrap_or_else(|| panic!("no string value in `{line}`"));
        let kind = match doc.split(':').next().unwrap_or_default() {
            "Counter" => Kind::Counter,
            "Gauge" => Kind::Gauge,
            "Histogram" => Kind::Histogram,
            "Tag" => continue,
            other => panic!("`{line}`: its doc must start with Counter:, Gauge:, Histogram: or Tag:, not `{other}`"),
        };
        metrics.push((value.to_string(), kind));
    }
    assert!(metrics.len() >= 20, "parsed only {} metrics from shared/src/metrics.rs", metrics.len());
    metrics
}

#[derive(serde::Deserialize)]
struct Mapping {
    defaults: Defaults,
    mappings: Vec<Rule>,
}

#[derive(serde::Deserialize)]
struct Defaults {
    histogram_options: HistogramOptions,
}

#[derive(serde::Deserialize)]
struct HistogramOptions {
    buckets: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Rule {
    #[serde(rename = "match")]
    pattern: String,
    name: String,
    labels: BTreeMap<String, String>,
}

fn mapping() -> Mapping {
    serde_norway::from_str(&repo_file("ops/statsd/mapping.yml")).expect("ops/statsd/mapping.yml parses")
}

#[test]
fn every_metric_has_the_name_the_statsd_mapping_gives() {
    let rules: BTreeMap<String, Rule> = mapping()
        .mappings
        .into_iter()
        .map(|r| (r.pattern.strip_prefix("*.").unwrap_or(&r.pattern).to_string(), r))
        .collect();
    let metrics = shared_metrics();
    for (metric, kind) in &metrics {
        let rule = rules
            .get(metric)
            .unwrap_or_else(|| panic!("`{metric}` ({kind:?}) has no rule `*.{metric}` in ops/statsd/mapping.yml"));
        assert_eq!(rule.name, name(metric, *kind), "`{metric}` ({kind:?})");
        let labels: Vec<(&str, &str)> = rule.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(labels, [(PREFIX_LABEL, "$1")], "`{metric}`: the prefix label");
    }
    for pattern in rules.keys() {
        assert!(metrics.iter().any(|(m, _)| m == pattern), "mapping rule `*.{pattern}` matches no metric");
    }
}

#[test]
fn names_by_kind() {
    let cases = [
        ("lane.ready", Kind::Gauge, "warmlane_lane_ready"),
        ("lane.cold_starts", Kind::Counter, "warmlane_lane_cold_starts_total"),
        ("queue.wait_ms", Kind::Histogram, "warmlane_queue_wait_ms"),
        ("queue_overloaded", Kind::Counter, "warmlane_queue_overloaded_total"),
        ("memory.device_bytes", Kind::Gauge, "warmlane_memory_device_bytes"),
    ];
    for (metric, kind, want) in cases {
        assert_eq!(name(metric, kind), want, "{metric} {kind:?}");
    }
}

#[test]
fn buckets_are_the_mappings() {
    assert_eq!(mapping().defaults.histogram_options.buckets, BUCKETS_MS.to_vec());
}

#[test]
fn the_recorder_renders_mapped_names_with_the_prefix_label() {
    let (prom, handle) = recorder("wlunit").expect("recorder");
    metrics::with_local_recorder(&prom, || {
        metrics::counter!("lane.cold_starts", "lane" => "degraded", "model" => "phr00t").increment(2);
        metrics::gauge!("lane.ready", "model" => "anisora").set(1.0);
        metrics::histogram!("queue.wait_ms", "lane" => "degraded").record(7.0);
        metrics::histogram!("queue.wait_ms", "lane" => "degraded").record(40_000.0);
    });
    let text = handle.render();
    let has = |line: &str| text.lines().any(|l| l == line);
    for line in [
        "# TYPE warmlane_lane_cold_starts_total counter",
        r#"warmlane_lane_cold_starts_total{prefix="wlunit",lane="degraded",model="phr00t"} 2"#,
        "# TYPE warmlane_lane_ready gauge",
        r#"warmlane_lane_ready{prefix="wlunit",model="anisora"} 1"#,
        "# TYPE warmlane_queue_wait_ms histogram",
        r#"warmlane_queue_wait_ms_bucket{prefix="wlunit",lane="degraded",le="5"} 0"#,
        r#"warmlane_queue_wait_ms_bucket{prefix="wlunit",lane="degraded",le="10"} 1"#,
        r#"warmlane_queue_wait_ms_bucket{prefix="wlunit",lane="degraded",le="30000"} 1"#,
        r#"warmlane_queue_wait_ms_bucket{prefix="wlunit",lane="degraded",le="60000"} 2"#,
        r#"warmlane_queue_wait_ms_bucket{prefix="wlunit",lane="degraded",le="+Inf"} 2"#,
        r#"warmlane_queue_wait_ms_sum{prefix="wlunit",lane="degraded"} 40007"#,
        r#"warmlane_queue_wait_ms_count{prefix="wlunit",lane="degraded"} 2"#,
    ] {
        assert!(has(line), "missing `{line}` in:\n{text}");
    }

    let (bare, handle) = recorder("").expect("recorder");
    metrics::with_local_recorder(&bare, || metrics::gauge!("degraded.depth").set(3.0));
    assert!(handle.render().lines().any(|l| l == "warmlane_degraded_depth 3"), "no prefix label when empty");
}

#[test]
fn responses_by_method_and_path() {
    let alive = || Liveness::Alive { age_ms: 7 };
    let body = || Some("m 1\n".to_string());
    let cases = [
        ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", "m 1\n"),
        ("GET /metrics?x=1 HTTP/1.0\r\n\r\n", "200 OK", "m 1\n"),
        ("HEAD /metrics HTTP/1.1\r\n\r\n", "200 OK", "m 1\n"),
        ("POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed", "only GET\n"),
        ("GET /health HTTP/1.1\r\n\r\n", "200 OK", "ok: heartbeat stored 7 ms ago\n"),
        ("HEAD /health HTTP/1.1\r\n\r\n", "200 OK", "ok: heartbeat stored 7 ms ago\n"),
        ("DELETE /health HTTP/1.1\r\n\r\n", "405 Method Not Allowed", "only GET\n"),
        ("GET / HTTP/1.1\r\n\r\n", "404 Not Found", "only /metrics and /health are served here\n"),
        ("", "404 Not Found", "only /metrics and /health are served here\n"),
    ];
    for (head, status, want) in cases {
        let (got, extra, text) = respond(head, body, alive);
        assert_eq!((got, text.as_str()), (status, want), "{head:?}");
        if status == "200 OK" && head.contains("/metrics") {
            assert!(extra.contains("text/plain; version=0.0.4"), "{extra}");
        }
    }
    let (status, _, text) = respond("GET /metrics HTTP/1.1\r\n\r\n", || None, alive);
    assert_eq!((status, text.as_str()), ("404 Not Found", "no Prometheus recorder in this process\n"));
}

#[tokio::test]
async fn bad_addresses_are_refused_with_the_address() {
    for bad in ["", "9100", "host:", ":9100", "127.0.0.1:99999", "127.0.0.1:x"] {
        let err = bind(bad).await.expect_err(bad);
        assert!(matches!(err, ListenError::BadAddress(_)), "{bad}: {err}");
        assert!(err.to_string().contains("--metrics-addr"), "{err}");
    }
    let err = bind("host.invalid:9100").await.expect_err("does not resolve");
    assert!(matches!(err, ListenError::Bind { .. }) && err.to_string().contains("host.invalid"), "{err}");
    assert!(spawn_listener("nonsense").await.is_none(), "a bad address is a warning, not a panic");
}

#[tokio::test]
async fn the_listener_answers_over_tcp() {
    let listener = bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve_with(listener, || Some("warmlane_lane_ready 1\n".into()), || Liveness::Starting));
    let get = |request: &'static str| async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    };
    let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nwarmlane_lane_ready 1\n"), "{ok}");
    let starting = get("GET /health HTTP/1.1\r\n\r\n").await;
    assert!(starting.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{starting}");
    let missing = get("GET /other HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"), "{missing}");
    server.abort();
}

#[test]
fn health_fails_before_the_first_heartbeat_and_when_stale() {
    let get = "GET /health HTTP/1.1\r\n\r\n";
    let cases = [
        (Liveness::Starting, "503 Service Unavailable", "starting: no heartbeat stored yet\n"),
        (Liveness::Stale { age_ms: 12_000 }, "503 Service Unavailable", "stale: last heartbeat stored 12000 ms ago\n"),
        (Liveness::Alive { age_ms: 0 }, "200 OK", "ok: heartbeat stored 0 ms ago\n"),
    ];
    for (liveness, status, want) in cases {
        let (got, _, text) = respond(get, || None, || liveness);
        assert_eq!((got, text.as_str()), (status, want), "{liveness:?}");
    }
}
