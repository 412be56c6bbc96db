//! Shared helpers of the HTTP shim's tests: a [`Harness`] with its own name
//! prefix on the real RabbitMQ and Redis (tests fail loudly when they are not
//! running), request helpers for `oneshot`, and a stand-in worker that plays the
//! consumer's part (the real consumer is tested in its own crate).
#![allow(dead_code, unreachable_pub)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use warmlane_infra::store::FinishWhen;
use warmlane_producer::http::{AppState, HttpConfig, ServeArgs};
use warmlane_producer::Producer;
use warmlane_shared::memory::{Backend, BudgetSource, ComponentStatus, Device, Measured, PipelineStatus};
use warmlane_shared::reply::media;
use warmlane_shared::settings::pipeline::{ComponentRole, Placement};
use warmlane_shared::{now_ms, Reply, ResultInfo, Settings, Timings};
use warmlane_shared::{Heartbeat, MemorySnapshot, WorkerState};

/// RabbitMQ of the tests.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Redis of the tests.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// The repository's settings file.
pub const SETTINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../inference_settings.json");

/// The repository's settings, edited in memory by `edit`.
pub fn settings_with(edit: impl FnOnce(&mut serde_json::Value)) -> Settings {
    let text = std::fs::read_to_string(SETTINGS).expect("reading inference_settings.json");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("settings are JSON");
    edit(&mut json);
    let base = Path::new(SETTINGS).parent().expect("settings dir");
    Settings::from_json(&json.to_string(), Path::new(SETTINGS), base).expect("edited settings are valid")
}

/// One test's world: its prefix, producer and results directory.
pub struct Harness {
    pub prefix: String,
    pub producer: Arc<Producer>,
    pub results_dir: PathBuf,
    cleaned: bool,
}

/// A test that panics before [`Harness::cleanup`] still removes its queues,
/// exchanges and keys: the cleanup runs on a thread of its own with its own runtime.
impl Drop for Harness {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (prefix, settings, results_dir) =
            (self.prefix.clone(), self.producer.settings().clone(), self.results_dir.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
            rt.block_on(cleanup_prefix(&prefix, &settings, &results_dir));
        })
        .join();
    }
}

/// Deletes a prefix's queues, exchanges, Redis keys and results on fresh connections.
pub async fn cleanup_prefix(prefix: &str, settings: &Settings, results_dir: &Path) {
    let decl = warmlane_shared::Topology::new(prefix).declarations(settings);
    if let Ok(conn) = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await {
        if let Ok(channel) = conn.create_channel().await {
            for q in &decl.queues {
                let _ = channel.queue_delete(q.name.as_str().into(), QueueDeleteOptions::default()).await;
            }
            for ex in &decl.exchanges {
                let _ = channel.exchange_delete(ex.name.as_str().into(), ExchangeDeleteOptions::default()).await;
            }
        }
        let _ = conn.close(200, "cleanup".into()).await;
    }
    if let Ok(client) = redis::Client::open(redis_url()) {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}:*"))
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut c)
                    .await
                    .unwrap_or((0, vec![]));
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    let _ = std::fs::remove_dir_all(results_dir);
}

impl Harness {
    /// With the repository's settings.
    pub async fn new() -> Harness {
        Harness::with_settings(settings_with(|_| {})).await
    }

    /// With these settings; panics with instructions when the broker or Redis is down.
    pub async fn with_settings(settings: Settings) -> Harness {
        let prefix = format!("t-http-{}", uuid::Uuid::new_v4().simple());
        let (amqp, redis) = (amqp_url().into(), redis_url().into());
        let connect = Producer::connect(Arc::new(settings), &amqp, &redis, &prefix);
        let producer = match tokio::time::timeout(Duration::from_secs(30), connect).await {
            Ok(Ok(p)) => Arc::new(p),
            Ok(Err(e)) => panic!(
                "these tests need RabbitMQ at {} and Redis at {} (set AMQP_URL / REDIS_URL): {e}",
                amqp_url(),
                redis_url()
            ),
            Err(_) => panic!("connecting to RabbitMQ/Redis timed out; these tests need both running"),
        };
        let results_dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&results_dir).expect("creating the results dir");
        Harness { prefix, producer, results_dir, cleaned: false }
    }

    /// Serve flags for this harness (no keys, its results dir).
    pub fn args(&self) -> ServeArgs {
        ServeArgs::for_tests(self.results_dir.clone())
    }

    /// The router with `args`.
    pub fn app_with(&self, args: &ServeArgs) -> Router {
        let config = HttpConfig::from_args(args).expect("config");
        warmlane_producer::http::app(AppState::new(self.producer.clone(), config))
    }

    /// The router with default flags.
    pub fn app(&self) -> Router {
        self.app_with(&self.args())
    }

    /// Ready messages in a queue (passive declare).
    pub async fn depth(&self, queue: &str) -> u32 {
        warmlane_infra::amqp::queue_depth(self.producer.publisher(), queue)
            .await
            .expect("broker")
            .unwrap_or_else(|| panic!("queue {queue} does not exist"))
    }

    /// Every queue of this prefix with its depth.
    pub async fn all_depths(&self) -> Vec<(String, u32)> {
        let decl = self.producer.topology().declarations(self.producer.settings());
        let mut out = vec![];
        for q in decl.queues {
            let d = self.depth(&q.name).await;
            out.push((q.name, d));
        }
        out
    }

    /// Writes a warm heartbeat for a worker on `lane`, with a memory snapshot.
    pub async fn heartbeat(&self, worker_id: &str, lane: &str, memory: Option<MemorySnapshot>) {
        let hb = Heartbeat {
            worker_id: worker_id.into(),
            lane: lane.into(),
            model: Some(lane.into()),
            state: WorkerState::Warm,
            pid: std::process::id(),
            started_at_ms: now_ms(),
            at_ms: now_ms(),
            loads: 1,
            tasks: 0,
            memory,
        };
        self.producer.store().heartbeat(&hb, self.producer.settings().lanes.heartbeat_ttl_ms).await.expect("heartbeat");
    }

    /// Deletes the prefix's queues, exchanges, Redis keys and results.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        cleanup_prefix(&self.prefix, self.producer.settings(), &self.results_dir).await;
    }
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    /// Asserts the contract's envelope with this status and code; returns the inner object.
    pub fn envelope(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.bytes));
        let body = self.json();
        let err = body.get("error").unwrap_or_else(|| panic!("no envelope: {body}")).clone();
        assert_eq!(err["code"], code, "{body}");
        assert!(err["reason"].is_string() && err["message"].is_string(), "{body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only `error` at the top: {body}");
        if status == 503 {
            assert!(self.headers.contains_key("retry-after"), "503 without Retry-After");
        }
        err
    }
}

/// Sends one request through the router.
pub async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.expect("router is infallible");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    Answer { status: parts.status, headers: parts.headers, bytes }
}

/// GET with optional headers.
pub async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(app, b.body(Body::empty()).expect("request")).await
}

/// POST JSON with optional headers.
pub async fn post_json(app: &Router, uri: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> Answer {
    post_raw(app, uri, Some("application/json"), body.to_string().into_bytes(), headers).await
}

/// POST raw bytes with an optional content type.
pub async fn post_raw(
    app: &Router,
    uri: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut b = Request::post(uri);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(app, b.body(Body::from(body)).expect("request")).await
}

/// A valid anisora request.
pub fn anisora(prompt: &str) -> serde_json::Value {
    serde_json::json!({"model": "anisora", "prompt": prompt, "steps": 8, "width": 64, "height": 64, "frames": 4})
}

/// A small valid animated GIF (`w` x `h`, two frames).
pub fn small_gif(w: u16, h: u16) -> Vec<u8> {
    let palette = [255u8, 64, 64, 64, 128, 255, 255, 255, 255, 0, 0, 0];
    let mut bytes = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut bytes, w, h, &palette).expect("gif encoder");
        enc.set_repeat(gif::Repeat::Infinite).expect("repeat");
        for f in 0..2u8 {
            let buffer: Vec<u8> = (0..usize::from(w) * usize::from(h))
                .map(|i| ((i / usize::from(w) + usize::from(f)) % 4) as u8)
                .collect();
            let frame = gif::Frame {
                width: w,
                height: h,
                delay: 20,
                buffer: std::borrow::Cow::Owned(buffer),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).expect("frame");
        }
    }
    bytes
}

/// Frames of the stand-in worker's videos: two seconds at the engine's rate.
pub const VIDEO_FRAMES: usize = 2 * warmlane_engine::FPS as usize;

/// A real MP4 (`w` x `h`, `frames` frames) made by the engine's own writer: diagonal
/// stripes that move from frame to frame, so a playing video visibly changes.
pub fn small_mp4(w: usize, h: usize, frames: usize) -> Vec<u8> {
    let plane = w * h;
    let mut data = vec![0f32; 3 * frames * plane];
    for (i, v) in data.iter_mut().enumerate() {
        let (c, f, p) = (i / (frames * plane), (i / plane) % frames, i % plane);
        let (x, y) = (p % w, p / w);
        *v = (((x + y + 2 * f + 5 * c) % 16) as f32 / 7.5) - 1.0;
    }
    let video = warmlane_engine::Video { data, frames, height: h, width: w };
    video.to_mp4(frames).expect("the engine encodes the stand-in video")
}

/// Finishes a task as a worker would: `processing`, progress, an MP4 and its GIF
/// preview in `results_dir`, the done reply.
pub async fn finish_as_worker(
    producer: &Producer,
    req: &warmlane_shared::ValidRequest,
    lane: &str,
    worker_id: &str,
    results_dir: &Path,
) {
    let store = producer.store();
    store.start(req, lane, worker_id).await.expect("start");
    for step in 1..=req.steps {
        store.progress(&req.task_id, step, req.steps).await.expect("progress");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let result = write_result(results_dir, &req.task_id, true).await;
    let reply = Reply::done(
        &req.task_id,
        lane,
        result,
        Timings { queued_ms: Some(1), inference_ms: Some(u64::from(req.steps) * 60) },
    );
    store.finish(&reply, FinishWhen::NotTerminal).await.expect("finish");
}

/// Writes a small MP4 (and, with `preview`, a GIF beside it) as a worker would, and
/// returns the reply's result naming them.
pub async fn write_result(results_dir: &Path, task_id: &str, preview: bool) -> ResultInfo {
    let (path, gif) = (results_dir.join(format!("{task_id}.mp4")), results_dir.join(format!("{task_id}.gif")));
    let mp4 = small_mp4(32, 24, VIDEO_FRAMES);
    tokio::fs::write(&path, &mp4).await.expect("writing the MP4");
    if preview {
        tokio::fs::write(&gif, small_gif(32, 24)).await.expect("writing the GIF");
    }
    let (uri, preview_uri) =
        (format!("file://{}", path.display()), preview.then(|| format!("file://{}", gif.display())));
    let (frames, bytes, content_type) = (VIDEO_FRAMES as u32, mp4.len() as u64, media::MP4.into());
    ResultInfo { uri, frames, width: 32, height: 24, bytes, content_type, preview_uri }
}

/// A worker's memory snapshot holding `model`: its text encoder offloaded, the
/// denoiser on the GPU and the VAE decoder on the CPU.
pub fn snapshot(budget: u64, used: u64, model: &str) -> MemorySnapshot {
    let (last_used_ms, active) = (now_ms(), false);
    let component =
        |role, placement, device, bytes| ComponentStatus { role, placement, device, bytes, last_used_ms, active };
    let components = vec![
        component(ComponentRole::TextEncoder, Placement::OffloadBetweenPrompts, Device::Offloaded, 0),
        component(ComponentRole::Denoiser, Placement::OffloadWhenIdle, Device::Gpu, used / 2),
        component(ComponentRole::VaeDecoder, Placement::Pinned, Device::Cpu, used / 2),
    ];
    MemorySnapshot {
        used_bytes: used,
        free_bytes: budget.saturating_sub(used),
        pipelines: vec![PipelineStatus { model: model.into(), bytes: used, last_used_ms: now_ms(), components }],
        loads: 1,
        resident: Some(model.into()),
        as_of_ms: now_ms(),
        // The device holds more than the estimate: the dashboard must show both.
        measured: Measured { device_used_bytes: Some(budget / 100 * 85), ..Measured::default() },
        ..MemorySnapshot::empty(budget, BudgetSource::Flag, Backend::Nvml)
    }
}

/// A stand-in worker on a model's lane: heartbeats (with a memory snapshot),
/// consumes the lane queue, and finishes every request with a small GIF.
pub async fn stand_in_worker(h: &Harness, model: &str) -> tokio::task::JoinHandle<()> {
    let worker_id = format!("{}-worker", h.prefix);
    let memory = Some(snapshot(8_000_000_000, 5_200_000_000, model));
    h.heartbeat(&worker_id, model, memory.clone()).await;
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("stand-in worker: RabbitMQ");
    let channel = conn.create_channel().await.expect("channel");
    channel.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let queue = h.producer.topology().lane_queue(model);
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            worker_id.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume the lane queue");
    // Routing takes the lane once the producer's cached consumer count shows this consumer.
    assert!(h.producer.lane_consumers().seen_at_least(model, 1, Duration::from_secs(10)).await, "consumer unseen");
    let (producer, results_dir, lane) = (h.producer.clone(), h.results_dir.clone(), model.to_string());
    let beat = {
        let producer = producer.clone();
        let (worker_id, lane, memory) = (worker_id.clone(), lane.clone(), memory.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let hb = Heartbeat {
                    worker_id: worker_id.clone(),
                    lane: lane.clone(),
                    model: Some(lane.clone()),
                    state: WorkerState::Warm,
                    pid: 1,
                    started_at_ms: 0,
                    at_ms: now_ms(),
                    loads: 1,
                    tasks: 0,
                    memory: memory.clone(),
                };
                let _ = producer.store().heartbeat(&hb, producer.settings().lanes.heartbeat_ttl_ms).await;
            }
        })
    };
    tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(delivery)) = deliveries.next().await {
            let req = warmlane_shared::decode_msgpack(&delivery.data, producer.settings())
                .expect("stand-in worker got a valid request");
            finish_as_worker(&producer, &req, &lane, &worker_id, &results_dir).await;
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        beat.abort();
    })
}

/// A running shim on a real port (with the reaper beside it), stopped by [`Server::stop`].
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), warmlane_producer::http::ServeError>>,
}

impl Server {
    /// Binds 127.0.0.1:0 and serves `args` for the harness's producer.
    pub async fn start(h: &Harness, args: &ServeArgs) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = HttpConfig::from_args(args).expect("config");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let (producer, amqp) = (h.producer.clone(), amqp_url().into());
        let handle = tokio::spawn(warmlane_producer::http::run(listener, producer, config, amqp, shutdown));
        Server { addr, stop: Some(tx), handle }
    }

    /// Base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and the reaper; both must end cleanly.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let ended =
            tokio::time::timeout(Duration::from_secs(15), self.handle).await.expect("the server stops on shutdown");
        ended.expect("server task").expect("server ended cleanly");
    }
}

/// A plain HTTP/1 request over a real socket.
pub async fn http(method: &str, url: &str, body: Option<&serde_json::Value>, headers: &[(&str, &str)]) -> Answer {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<axum::body::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let payload = match body {
        Some(json) => {
            b = b.header("content-type", "application/json");
            axum::body::Bytes::from(json.to_string())
        }
        None => axum::body::Bytes::new(),
    };
    let res = client
        .request(b.body(Full::new(payload)).expect("request"))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    Answer { status: parts.status, headers: parts.headers, bytes }
}
