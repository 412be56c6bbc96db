//! Prometheus `/metrics` beside StatsD, scraped over real HTTP against the real
//! RabbitMQ and Redis.
//!
//! This process is the shim: `telemetry::init_exporters` installs StatsD (a UDP
//! socket on 127.0.0.1:0 stands in for it) and Prometheus together, as
//! `warmlane-producer serve` does, and [`Fleet::serve_http`] serves the router with
//! its reaper and metrics sampler. The worker is a real `warmlane-consumer` process
//! (ONNX Runtime on CPU, the `anisora` demo model) started with `--metrics-addr`,
//! so its `/metrics` holds only its own metrics. The `metrics` recorder is global
//! and installed once per process: one test here installs it; the other starts a
//! worker process only.
//!
//! After one lane request, the shim's `/metrics` carries the lane gauges
//! (`warmlane_lane_ready`, `warmlane_lane_depth`), the degraded queue depth and
//! the routing counter; the worker's carries queue wait, memory, cold starts and
//! finished tasks, all under the names, labels and `prefix` label of
//! `ops/statsd/mapping.yml`.
// A scripted scenario reads best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warmlane_infra::config::TelemetryArgs;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::servers::{consumer_binary, free_port};
use warmlane_tests::{prefix, repo_root, request};

const METRICS_PREFIX: &str = "wlprom";

/// Kills the worker when the test ends, whatever happens.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One sample line of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `name{k="v",...} value` lines (no escaped quotes in our label values).
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = vec![];
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in `{line}`"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in `{line}`"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in `{line}`"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in `{line}`"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

/// The value of the series `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
}

/// `GET <path>` over HTTP/1.1: the whole response.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the response");
    response
}

/// `GET /metrics` over HTTP/1.1: the `Content-Type` and the body.
async fn scrape(addr: SocketAddr) -> (String, String) {
    let response = get(addr, "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "GET http://{addr}/metrics: {head}");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// Scrapes `addr` until `ready` accepts the samples, for at most `secs`.
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    secs: u64,
    ready: impl Fn(&[Sample]) -> bool,
) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (content_type, body) = scrape(addr).await;
        let samples = parse(&body);
        if ready(&samples) {
            return (content_type, samples);
        }
        assert!(Instant::now() < deadline, "{what}: not on http://{addr}/metrics within {secs} s:\n{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Settings on disk for the worker process: the repository's, with absolute model
/// directories and quick heartbeats.
fn write_settings(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("inference_settings.json")).expect("settings");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("settings are JSON");
    json["lanes"]["heartbeat_interval_ms"] = 250.into();
    json["lanes"]["heartbeat_ttl_ms"] = 2_000.into();
    let models: Vec<String> = json["models"].as_object().expect("models").keys().cloned().collect();
    for model in models {
        let abs = repo_root().join("models").join(&model).canonicalize().expect("model dir");
        json["models"][&model]["pipeline"]["dir"] = abs.display().to_string().into();
    }
    std::fs::create_dir_all(dir).expect("settings dir");
    let path = dir.join("inference_settings.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write settings");
    path
}

/// Collects the datagrams of the fake StatsD.
fn listen_statsd(socket: UdpSocket) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => sink.lock().unwrap().extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string)),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    });
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shim_and_worker_metrics_are_scraped_with_the_statsd_exporters_names() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the fake StatsD");
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let statsd = socket.local_addr().expect("addr").to_string();
    let statsd_lines = listen_statsd(socket);
    let args = TelemetryArgs { json_logs: false, statsd: Some(statsd), metrics_prefix: METRICS_PREFIX.into() };
    let on = warmlane_infra::telemetry::init_exporters(&args, true);
    assert!(on.statsd && on.prometheus, "both exporters install: {on:?}");

    let p = prefix("prom");
    let dir = repo_root().join("target/test-output").join(format!("{p}-worker"));
    let settings_path = write_settings(&dir);
    let settings = Arc::new(warmlane_shared::Settings::load(&settings_path).expect("settings load"));
    let fleet = Fleet::start(&p, settings).await;
    let shim = fleet.serve_http(&warmlane_producer::http::ServeArgs::for_tests(fleet.results_dir.clone())).await;

    let worker_metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let worker = Killed(
        Command::new(consumer_binary())
            .args(["--lane", "anisora", "--metrics-addr", &worker_metrics.to_string()])
            .env("AMQP_URL", &fleet.amqp_url)
            .env("REDIS_URL", &fleet.redis_url)
            .env("WARMLANE_PREFIX", &p)
            .env("WARMLANE_SETTINGS", &settings_path)
            .env("WARMLANE_RESULTS_DIR", &fleet.results_dir)
            .env("WARMLANE_WORKER_ID", format!("{p}-anisora"))
            .env("WARMLANE_METRICS_PREFIX", METRICS_PREFIX)
            .env_remove("WARMLANE_STATSD")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start warmlane-consumer"),
    );
    fleet.wait_ready("anisora", 1).await;

    // Its healthcheck: green once a heartbeat is stored (the one that made the lane
    // ready; `/health` learns of it just after Redis does, hence the short poll).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let health = get(worker_metrics, "/health").await;
        if health.starts_with("HTTP/1.1 200 OK\r\n") {
            assert!(health.ends_with(" ms ago\n") && health.contains("ok: heartbeat stored"), "{health}");
            break;
        }
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        assert!(Instant::now() < deadline, "the worker's /health stayed red after its lane was ready:\n{health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One request through the lane, answered by the worker process.
    let admitted = fleet.producer.submit_json(&request(&format!("{p}-lane"), "anisora")).await.expect("lane admission");
    assert_eq!(admitted.lane, "anisora");
    let reply = fleet.reply(&format!("{p}-lane"), 120).await;
    assert_eq!(reply.code, None, "{reply:?}");

    // The shim: lane gauges (the sampler's next pass sees the warm worker), queue depth, routing.
    let pre = ("prefix", METRICS_PREFIX);
    let lane_ready = |s: &[Sample]| value(s, "warmlane_lane_ready", &[pre, ("model", "anisora")]) == Some(1.0);
    let (content_type, shim_samples) = scrape_until(shim.addr, "the shim's lane_ready 1", 20, lane_ready).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "shim Content-Type: {content_type}");
    let s = &shim_samples;
    assert_eq!(value(s, "warmlane_lane_warm_workers", &[pre, ("model", "anisora")]), Some(1.0));
    assert_eq!(value(s, "warmlane_lane_ready", &[pre, ("model", "phr00t")]), Some(0.0), "no phr00t worker");
    let depth = value(s, "warmlane_lane_depth", &[pre, ("model", "anisora")]).expect("lane depth");
    assert!((0.0..=1.0).contains(&depth), "anisora lane depth {depth}");
    assert!(value(s, "warmlane_degraded_depth", &[pre]).is_some(), "degraded queue depth on the shim");
    assert_eq!(value(s, "warmlane_requests_routed_total", &[pre, ("path", "lane"), ("model", "anisora")]), Some(1.0));
    assert!(s.iter().all(|x| x.labels.get("prefix").map(String::as_str) == Some(METRICS_PREFIX)), "prefix label");

    // The worker: queue wait, memory, cold start, finished task; nothing of the shim's.
    let lane = ("lane", "anisora");
    let memory = |s: &[Sample]| value(s, "warmlane_memory_process_bytes", &[pre, lane]).is_some_and(|v| v > 0.0);
    let (content_type, worker_samples) = scrape_until(worker_metrics, "the worker's memory gauge", 20, memory).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "worker Content-Type: {content_type}");
    let w = &worker_samples;
    assert_eq!(value(w, "warmlane_queue_wait_ms_count", &[pre, lane]), Some(1.0), "one queue wait");
    assert_eq!(value(w, "warmlane_queue_wait_ms_bucket", &[pre, lane, ("le", "+Inf")]), Some(1.0));
    assert!(value(w, "warmlane_queue_wait_ms_bucket", &[pre, lane, ("le", "1800000")]).is_some(), "mapping buckets");
    assert_eq!(
        value(w, "warmlane_tasks_finished_total", &[pre, lane, ("model", "anisora"), ("outcome", "done")]),
        Some(1.0)
    );
    assert_eq!(value(w, "warmlane_lane_cold_starts_total", &[pre, lane, ("model", "anisora")]), Some(1.0));
    assert_eq!(value(w, "warmlane_inference_duration_ms_count", &[pre, lane, ("model", "anisora")]), Some(1.0));
    assert!(w.iter().all(|x| !x.name.starts_with("warmlane_requests_routed")), "the worker's registry is its own");

    // StatsD got the same metrics from the shim's process (fanout).
    let deadline = Instant::now() + Duration::from_secs(10);
    let routed = format!("{METRICS_PREFIX}.requests.routed:1|c");
    while !statsd_lines.lock().unwrap().iter().any(|l| l.starts_with(&routed)) {
        assert!(Instant::now() < deadline, "no `{routed}` StatsD line within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop(worker);
    shim.stop().await;
    fleet.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_metrics_addr_is_one_coded_warning_and_the_worker_goes_on() {
    let output = Command::new(consumer_binary())
        .args(["--metrics-addr", "not-an-address", "check-settings"])
        .env("WARMLANE_SETTINGS", repo_root().join("inference_settings.json"))
        .env_remove("WARMLANE_STATSD")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run warmlane-consumer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "check-settings still runs: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("metrics_listener")).collect();
    assert_eq!(lines.len(), 1, "one coded line: {stderr}");
    assert!(lines[0].contains("not-an-address") && lines[0].contains("WARN"), "{}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
