//! StatsD metrics of a scripted workload against the real RabbitMQ and Redis.
//!
//! A UDP socket on 127.0.0.1:0 stands in for StatsD; the producer's exporter
//! (`telemetry::init_metrics`) points at it. The `metrics` recorder is global and
//! installed once per process, so this file holds exactly one test.
//!
//! The workload, under its own prefix, with the degraded queue cut to depth 1 and
//! a 500 ms wait:
//! 1. a faked warm `anisora` worker (heartbeat and a busy consumer), one request
//!    → path `lane`; the sampler reports the lane ready;
//! 2. one `phr00t` request (no lane worker) → path `degraded`, fallback `capacity`;
//! 3. a second one while the first waits → nacked: `queue_overloaded`/`queue_full`,
//!    path `rejected`;
//! 4. the first waits past 500 ms → the reaper answers `wait_timeout`;
//! 5. an invalid request → `validation.rejections` `invalid_parameter`/`steps`;
//! 6. a degraded worker whose engine runs out of device memory once (one OOM
//!    retry, then done) and then for good on a second task (failed `gpu_oom`);
//! 7. a faked warm `phr00t` worker and a request → the fallback ends (duration).
// A scripted scenario reads best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warmlane_consumer::managed::{Managed, ManagedEngine};
use warmlane_consumer::memory::{Budget, BudgetSource, MemoryManager, PipelineReport, Policy};
use warmlane_consumer::{Engine, EngineFailure, Output};
use warmlane_infra::config::TelemetryArgs;
use warmlane_producer::{metrics_sampler, ProducerError};
use warmlane_shared::{ErrorCode, ValidRequest};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, request, settings_with};

const METRICS_PREFIX: &str = "wltest";

/// One received StatsD line.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    value: f64,
    kind: String,
    tags: BTreeMap<String, String>,
}

/// Parses `prefix.name:value|type|#k:v,k:v` (DogStatsD tags).
fn parse(line: &str) -> Option<Line> {
    let (name, rest) = line.split_once(':')?;
    let mut parts = rest.split('|');
    let value = parts.next()?.parse().ok()?;
    let kind = parts.next()?.to_string();
    let mut tags = BTreeMap::new();
    for part in parts {
        if let Some(t) = part.strip_prefix('#') {
            for tag in t.split(',') {
                let (k, v) = tag.split_once(':').unwrap_or((tag, ""));
                tags.insert(k.to_string(), v.to_string());
            }
        }
    }
    Some(Line { name: name.to_string(), value, kind, tags })
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Line>>>);

impl Received {
    fn listen(socket: UdpSocket) -> Received {
        let received = Received::default();
        let sink = received.0.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let mut lines = sink.lock().unwrap();
                        lines.extend(text.lines().filter_map(parse));
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        received
    }

    fn matching(&self, name: &str, tags: &[(&str, &str)]) -> Vec<Line> {
        let full = format!("{METRICS_PREFIX}.{name}");
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.name == full && tags.iter().all(|(k, v)| l.tags.get(*k).map(String::as_str) == Some(*v)))
            .cloned()
            .collect()
    }

    /// Sum of a counter's increments with these tags.
    fn count(&self, name: &str, tags: &[(&str, &str)]) -> f64 {
        self.matching(name, tags).iter().filter(|l| l.kind == "c").map(|l| l.value).sum()
    }

    /// Waits up to 10 s for at least one line; returns them.
    async fn wait(&self, name: &str, tags: &[(&str, &str)]) -> Vec<Line> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.matching(name, tags);
            if !found.is_empty() {
                return found;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> =
                    self.0.lock().unwrap().iter().map(|l| format!("{} {:?}", l.name, l.tags)).collect();
                panic!(
                    "no StatsD line {METRICS_PREFIX}.{name} with tags {tags:?} within 10 s; received:\n{}",
                    seen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs out of device memory `ooms` times per task (`u32::MAX`: every time), then writes a tiny file.
struct OomEngine {
    script: BTreeMap<String, u32>,
    seen: BTreeMap<String, u32>,
    resident: Option<String>,
}

impl Engine for OomEngine {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure> {
        if self.resident.as_deref() == Some(model) {
            return Ok(None);
        }
        self.resident = Some(model.to_string());
        Ok(Some(Duration::from_millis(3)))
    }

    fn generate(
        &mut self,
        req: &ValidRequest,
        _lane: &str,
        out_dir: &Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<Output, EngineFailure> {
        let seen = self.seen.entry(req.task_id.clone()).or_insert(0);
        *seen += 1;
        if *seen <= self.script.get(&req.task_id).copied().unwrap_or(0) {
            return Err(EngineFailure {
                code: ErrorCode::GpuOom,
                message: "CUDA out of memory (forced by the test)".into(),
            });
        }
        if progress(req.steps, req.steps).is_break() {
            return Err(EngineFailure { code: ErrorCode::Cancelled, message: "cancelled".into() });
        }
        std::fs::create_dir_all(out_dir)
            .map_err(|e| EngineFailure { code: ErrorCode::InferenceFailed, message: e.to_string() })?;
        let path = out_dir.join(format!("{}.gif", req.task_id));
        std::fs::write(&path, b"GIF89a")
            .map_err(|e| EngineFailure { code: ErrorCode::InferenceFailed, message: e.to_string() })?;
        Ok(Output {
            path,
            bytes: 6,
            preview_path: None,
            frames: req.frames,
            width: req.width,
            height: req.height,
            inference_ms: 7,
        })
    }

    fn resident(&self) -> Option<String> {
        self.resident.clone()
    }

    fn release(&mut self) {
        self.resident = None;
    }
}

impl Managed for OomEngine {
    fn report(&mut self) -> Option<PipelineReport> {
        None
    }

    fn release_component(&mut self, _role: warmlane_engine::ComponentRole) -> Result<(), EngineFailure> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_workload_emits_the_operations_metrics() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the fake StatsD");
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let statsd = socket.local_addr().expect("addr").to_string();
    let received = Received::listen(socket);
    let args = TelemetryArgs { json_logs: false, statsd: Some(statsd), metrics_prefix: METRICS_PREFIX.into() };
    assert!(warmlane_infra::telemetry::init_metrics(&args), "the StatsD exporter must install");

    let settings = settings_with(|s| {
        s["degraded"]["max_depth"] = 1.into();
        s["degraded"]["max_wait_ms"] = 500.into();
        s["degraded"]["expiry_grace_ms"] = 200.into();
    });
    let mut fleet = Fleet::start(&prefix("metrics"), settings).await;
    // 1. Lane path, and the sampler's gauges. The lane is ready before the reaper
    // starts, since the reaper's sampler reports at once.
    let _anisora = fleet.fake_warm_heartbeat("anisora", fleet.settings.lanes.heartbeat_ttl_ms).await;
    fleet.spawn_reaper();
    let p = fleet.producer.clone();
    let task_prefix = fleet.prefix.clone();
    let id = |n: &str| format!("{task_prefix}-{n}");

    let lane = p.submit_json(&request(&id("lane"), "anisora")).await.expect("lane admission");
    assert_eq!(lane.lane, "anisora");
    let sample = metrics_sampler::sample_once(&p).await.expect("sample");
    metrics_sampler::emit(&sample);

    // 2 and 3. Degraded path, then the queue is full.
    let degraded = p.submit_json(&request(&id("deg"), "phr00t")).await.expect("degraded admission");
    assert_eq!(degraded.lane, "degraded");
    match p.submit_json(&request(&id("full"), "phr00t")).await {
        Err(ProducerError::Rejected(r)) => {
            assert_eq!((r.code, r.reason.as_str()), (ErrorCode::QueueOverloaded, "queue_full"))
        }
        other => panic!("expected queue_full, got {other:?}"),
    }

    // 4. The first degraded request waits past 500 ms; the reaper answers it.
    let reply = fleet.reply(&id("deg"), 15).await;
    assert_eq!(reply.reason.as_deref(), Some("wait_timeout"), "{reply:?}");

    // 5. Validation rejection.
    let mut bad = request(&id("bad"), "anisora");
    bad["steps"] = 9.into();
    assert!(matches!(p.submit_json(&bad).await, Err(ProducerError::Rejected(_))));

    // 6. A degraded worker: one OOM retry then done; then a task that stays out of memory.
    let script = BTreeMap::from([(id("oom-once"), 1), (id("oom-always"), u32::MAX)]);
    let budget = Budget { bytes: 1 << 40, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 };
    let manager = Arc::new(MemoryManager::new(budget, Policy::default()));
    let engine = ManagedEngine::new(
        OomEngine { script, seen: BTreeMap::new(), resident: None },
        fleet.settings.clone(),
        manager,
    );
    fleet.spawn_worker("degraded", Box::new(engine));
    p.submit_json(&request(&id("oom-once"), "phr00t")).await.expect("admitted");
    let done = fleet.reply(&id("oom-once"), 30).await;
    assert_eq!(done.code, None, "{done:?}");
    p.submit_json(&request(&id("oom-always"), "phr00t")).await.expect("admitted");
    let failed = fleet.reply(&id("oom-always"), 30).await;
    assert_eq!(failed.code, Some(ErrorCode::GpuOom), "{failed:?}");

    // 7. The phr00t lane becomes ready: the fallback ends.
    let _phr00t = fleet.fake_warm_heartbeat("phr00t", fleet.settings.lanes.heartbeat_ttl_ms).await;
    let back = p.submit_json(&request(&id("back"), "phr00t")).await.expect("lane admission");
    assert_eq!(back.lane, "phr00t");

    let r = &received;
    r.wait("requests.routed", &[("path", "lane"), ("model", "anisora")]).await;
    r.wait("requests.routed", &[("path", "degraded"), ("model", "phr00t")]).await;
    r.wait("requests.routed", &[("path", "rejected"), ("model", "phr00t")]).await;
    r.wait("validation.rejections", &[("code", "invalid_parameter"), ("reason", "steps")]).await;
    r.wait("fallback.activations", &[("model", "phr00t"), ("cause", "capacity")]).await;
    r.wait("fallback.duration_ms", &[("model", "phr00t"), ("cause", "capacity")]).await;
    r.wait("queue_overloaded", &[("reason", "queue_full")]).await;
    r.wait("queue_overloaded", &[("reason", "wait_timeout")]).await;
    r.wait("degraded.wait_timeouts", &[]).await;
    r.wait("tasks.finished", &[("outcome", "failed"), ("code", "gpu_oom"), ("lane", "degraded")]).await;
    r.wait("tasks.finished", &[("outcome", "done"), ("model", "phr00t")]).await;
    r.wait("oom.retries", &[("model", "phr00t"), ("lane", "degraded")]).await;
    r.wait("queue.wait_ms", &[("lane", "degraded")]).await;
    r.wait("inference.duration_ms", &[("model", "phr00t"), ("lane", "degraded")]).await;
    r.wait("lane.cold_starts", &[("lane", "degraded"), ("model", "phr00t")]).await;
    r.wait("memory.process_bytes", &[("lane", "degraded")]).await;
    let ready = r.wait("lane.ready", &[("model", "anisora")]).await;
    assert_eq!((ready[0].kind.as_str(), ready[0].value), ("g", 1.0));
    let not_ready = r.wait("lane.ready", &[("model", "phr00t")]).await;
    assert_eq!(not_ready[0].value, 0.0, "phr00t had no warm worker when sampled");
    let warm = r.wait("lane.warm_workers", &[("model", "anisora")]).await;
    assert_eq!(warm[0].value, 1.0);
    let depth = r.wait("degraded.depth", &[]).await;
    assert_eq!(depth[0].kind, "g");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = (
        r.count("requests.routed", &[("path", "lane"), ("model", "anisora")]),
        r.count("queue_overloaded", &[("reason", "queue_full")]),
        r.count("degraded.wait_timeouts", &[]),
        r.count("tasks.finished", &[("outcome", "failed")]),
    );
    let oom_retries = r.count("oom.retries", &[]);
    fleet.cleanup().await;

    assert_eq!(counts, (1.0, 1.0, 1.0, 1.0), "(lane admissions, queue_full, wait timeouts, failed tasks)");
    // One retry for the first task; the second retries up to the policy's limit, then fails.
    let limit = f64::from(Policy::default().max_oom_retries);
    assert_eq!(
        oom_retries,
        1.0 + limit,
        "OOM retries: 1 for the task that recovered, {limit} for the one that did not"
    );
    assert!(r.matching("requests.routed", &[]).iter().all(|l| l.kind == "c"), "requests.routed is a counter");
    assert!(r.matching("queue.wait_ms", &[]).iter().all(|l| l.kind == "h"), "histograms go out as |h");
}
