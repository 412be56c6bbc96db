//! `warmlane-loadgen`: drives a fleet through the producer library or the HTTP shim
//! and prints accept latency, end-to-end latency, fleet overhead (time beyond
//! inference), throughput and the outcome mix, each beside the broker's own bare
//! figures measured in the same run: the publish-confirm round trip, and a bare
//! publish-consume-reply loop with prefetch 1.
//!
//! It starts its own in-process fleet (producer, reaper, one worker per model)
//! under a fresh prefix against RabbitMQ and Redis (AMQP_URL / REDIS_URL), and
//! removes it afterwards. `--rounds N` repeats the three measurements N times,
//! interleaved, so a slow stretch of a shared host hits all of them alike;
//! latencies are pooled over rounds and the throughput ratio is the median of the
//! per-round ratios. It also prints the CPU time per request of its own process
//! (producer, workers, callers), the broker and Redis, read from /proc, for the
//! bare loop and the fleet.
//!
//! ```text
//! cargo run --release -p warmlane-tests --bin warmlane-loadgen -- --engine noop --models anisora --in-flight 32
//! cargo run --release -p warmlane-tests --bin warmlane-loadgen -- --engine onnx --via http --rate 20
//! ```

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use redis::AsyncCommands;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use warmlane_consumer::Engine;
use warmlane_infra::amqp::{message_properties, Published};
use warmlane_tests::engines::SleepEngine;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{amqp_url, prefix, redis_url, settings_with};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Via {
    Library,
    Http,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EngineKind {
    /// A pipeline that returns at once: measures the fleet alone.
    Noop,
    /// The real ONNX Runtime demo pipelines.
    Onnx,
}

/// Load generator for a warmlane fleet.
#[derive(Debug, Parser)]
struct Args {
    /// Requests to send.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Closed loop: requests in flight at once.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Open loop: requests per second (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Door to the fleet.
    #[arg(long, value_enum, default_value_t = Via::Library)]
    via: Via,
    /// Pipeline the workers run.
    #[arg(long, value_enum, default_value_t = EngineKind::Noop)]
    engine: EngineKind,
    /// Models to alternate between (one warm worker each).
    #[arg(long, value_delimiter = ',', default_value = "anisora")]
    models: Vec<String>,
    /// Video size of each request.
    #[arg(long, default_value_t = 32)]
    width: u32,
    /// Video height.
    #[arg(long, default_value_t = 32)]
    height: u32,
    /// Frames.
    #[arg(long, default_value_t = 2)]
    frames: u32,
    /// Samples of the bare confirm round trip, per round.
    #[arg(long, default_value_t = 500)]
    bare_samples: usize,
    /// Rounds of (bare figures, fleet run), interleaved so that both see the same
    /// host; latencies are pooled over rounds, throughput ratios are per round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<34} p50 {:>8.3} ms   p95 {:>8.3} ms   p99 {:>8.3} ms   (n={})",
            self.pct(50.0),
            self.pct(95.0),
            self.pct(99.0),
            self.0.len()
        )
    }
}

/// Idle Redis connections for callers waiting on replies (BLPOP blocks its connection,
/// so each waiter takes one): both the bare loop and the fleet run wait through it,
/// so neither pays a connect per request.
#[derive(Clone)]
struct Waiters {
    client: redis::Client,
    idle: Arc<std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>>,
}

impl Waiters {
    fn new() -> Waiters {
        Waiters { client: redis::Client::open(redis_url()).expect("Redis URL"), idle: Arc::default() }
    }

    /// BLPOP `key` for up to `secs`.
    async fn pop(&self, key: &str, secs: f64) -> Option<Vec<u8>> {
        let pooled = self.idle.lock().unwrap().pop();
        let mut c = match pooled {
            Some(c) => c,
            None => {
                let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                self.client.get_multiplexed_async_connection_with_config(&cfg).await.expect("Redis connection")
            }
        };
        let popped: Option<(String, Vec<u8>)> = c.blpop(key, secs).await.expect("BLPOP");
        self.idle.lock().unwrap().push(c);
        popped.map(|(_, v)| v)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let p = prefix("bench");
    let settings = settings_with(|_| {});
    let mut fleet = Fleet::start(&p, settings.clone()).await;
    println!(
        "warmlane-loadgen: {} requests x {} rounds, {}, via {:?}, engine {:?}, models {:?}, {}x{}x{}",
        args.requests,
        args.rounds,
        if args.rate > 0.0 {
            format!("open loop {} req/s", args.rate)
        } else {
            format!("closed loop {} in flight", args.in_flight)
        },
        args.via,
        args.engine,
        args.models,
        args.width,
        args.height,
        args.frames
    );
    println!("host: {} cores, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), cpu_model());

    fleet.spawn_reaper();
    // Consumers (the fleet's workers and the bare loop's) run on a runtime of their
    // own, as a consumer process would, not on the load generator's threads.
    let consumers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("consumers")
        .enable_all()
        .build()
        .expect("consumer runtime");
    let inference = InferenceLog::default();
    for model in &args.models {
        let engine: Box<dyn Engine> = match args.engine {
            EngineKind::Noop => Box::new(SleepEngine::new(Duration::ZERO)),
            EngineKind::Onnx => Box::new(
                warmlane_consumer::ort_engine::OrtEngine::new(settings.clone(), None)
                    .unwrap_or_else(|e| panic!("{}", e.message)),
            ),
        };
        fleet.spawn_worker_with(
            consumers.handle(),
            model,
            Box::new(Timed { inner: engine, log: inference.clone() }),
            None,
        );
    }
    for model in &args.models {
        fleet.wait_ready(model, 1).await;
    }
    let http = match args.via {
        Via::Http => Some(start_http(&fleet).await),
        Via::Library => None,
    };
    let fleet = Arc::new(fleet);
    let (mut confirm, mut loop_confirm, mut run) = (Samples::default(), Samples::default(), Run::default());
    let mut ratios = vec![];
    let waiters = Waiters::new();
    let (mut cpu_bare, mut cpu_fleet) = (CpuPerRequest::default(), CpuPerRequest::default());
    for round in 0..args.rounds {
        let c = bare_confirm_rtt(&fleet, &p, args.bare_samples).await;
        let cpu0 = Cpu::now();
        let n_bare = args.requests.min(2000);
        let bare = bare_loop(&fleet, consumers.handle(), &waiters, &p, round, n_bare, args.in_flight).await;
        let cpu1 = Cpu::now();
        let r = drive(&fleet, &waiters, &args, round, http.clone(), &inference).await;
        let cpu2 = Cpu::now();
        let (round_bare, round_fleet) =
            (CpuPerRequest::between(&cpu0, &cpu1, n_bare), CpuPerRequest::between(&cpu1, &cpu2, args.requests));
        println!("round {}: fleet {:>7.1} req/s, bare loop {:>7.1} req/s ({:.2}x); CPU per request {:.2} ms vs {:.2} ms ({:.2}x); accept p99 {:.3} ms, confirm p99 {:.3} ms alone, {:.3} ms in the bare loop",
            round + 1, r.throughput, bare.throughput, r.throughput / bare.throughput, round_fleet.total(), round_bare.total(), round_bare.total() / round_fleet.total(),
            r.accept.pct(99.0), c.pct(99.0), bare.confirm.pct(99.0));
        cpu_bare.merge(&round_bare);
        cpu_fleet.merge(&round_fleet);
        ratios.push((r.throughput, bare.throughput));
        confirm.extend(c);
        loop_confirm.extend(bare.confirm);
        run.merge(r);
    }
    ratios.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    let (fleet_tput, bare_tput) = ratios[ratios.len() / 2];

    println!();
    println!("{}", confirm.line("bare publish-confirm round trip"));
    println!("{}", loop_confirm.line(&format!("bare confirm, {} in flight", args.in_flight)));
    println!("{}", run.accept.line("accept latency"));
    println!("{}", run.e2e.line("end-to-end latency"));
    println!("{}", run.inference.line("inference (engine call, timed)"));
    println!("{}", run.overhead.line("fleet overhead (e2e - inference)"));
    println!("{:<34} {:>10.1} req/s (median round)", "fleet throughput", fleet_tput);
    println!("{:<34} {:>10.1} req/s (same round)", "bare publish-consume-reply loop", bare_tput);
    println!("{:<34} {:?}", "outcomes", run.outcomes);
    println!("{:<34} bare loop: {}", "CPU per request", cpu_bare);
    println!("{:<34} fleet:     {}", "", cpu_fleet);
    println!();
    println!(
        "targets: accept p99 {:.3} ms <= 3 x confirm p99 {:.3} ms: {}",
        run.accept.pct(99.0),
        confirm.pct(99.0),
        verdict(run.accept.pct(99.0) <= 3.0 * confirm.pct(99.0))
    );
    println!(
        "         fleet overhead p50 {:.3} ms <= 2 ms: {}",
        run.overhead.pct(50.0),
        verdict(run.overhead.pct(50.0) <= 2.0)
    );
    println!(
        "         throughput {:.1} >= 0.8 x bare {:.1} = {:.1} req/s: {}",
        fleet_tput,
        bare_tput,
        0.8 * bare_tput,
        verdict(fleet_tput >= 0.8 * bare_tput)
    );
    Arc::try_unwrap(fleet).ok().expect("fleet still shared").cleanup().await;
    consumers.shutdown_background();
}

/// Time each task spent inside the engine's `generate`, by task id.
type InferenceLog = Arc<std::sync::Mutex<std::collections::HashMap<String, Duration>>>;

/// Wraps the workers' engine to time `generate` to the microsecond (the reply's
/// `inference_ms` is whole milliseconds, too coarse to subtract from a few ms).
struct Timed {
    inner: Box<dyn Engine>,
    log: InferenceLog,
}

impl Engine for Timed {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, warmlane_consumer::EngineFailure> {
        self.inner.prepare(model)
    }

    fn generate(
        &mut self,
        req: &warmlane_shared::ValidRequest,
        lane: &str,
        out_dir: &std::path::Path,
        progress: &mut dyn FnMut(u32, u32),
    ) -> Result<warmlane_consumer::Output, warmlane_consumer::EngineFailure> {
        let t = Instant::now();
        let out = self.inner.generate(req, lane, out_dir, progress);
        self.log.lock().unwrap_or_else(|p| p.into_inner()).insert(req.task_id.clone(), t.elapsed());
        out
    }

    fn resident(&self) -> Option<String> {
        self.inner.resident()
    }

    fn release(&mut self) {
        self.inner.release()
    }

    fn memory(&self) -> Option<warmlane_shared::MemorySnapshot> {
        self.inner.memory()
    }
}

/// CPU time (utime + stime, in USER_HZ ticks of 10 ms) of this process, the broker
/// (`beam.smp`) and Redis (`redis-server`), read from /proc; zero for a server on
/// another host. On a shared host it shows what each side costs the machine.
struct Cpu {
    ticks: [u64; 3],
}

impl Cpu {
    fn now() -> Cpu {
        let mut ticks = [proc_ticks("self"), 0, 0];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).unwrap_or_default();
                match comm.trim() {
                    "beam.smp" => ticks[1] += proc_ticks(&name),
                    "redis-server" => ticks[2] += proc_ticks(&name),
                    _ => {}
                }
            }
        }
        Cpu { ticks }
    }
}

/// CPU ticks summed over rounds, and the requests they served.
#[derive(Default)]
struct CpuPerRequest {
    ticks: [u64; 3],
    requests: usize,
}

impl CpuPerRequest {
    fn between(before: &Cpu, after: &Cpu, requests: usize) -> CpuPerRequest {
        CpuPerRequest { ticks: std::array::from_fn(|i| after.ticks[i].saturating_sub(before.ticks[i])), requests }
    }

    fn merge(&mut self, other: &CpuPerRequest) {
        for i in 0..3 {
            self.ticks[i] += other.ticks[i];
        }
        self.requests += other.requests;
    }

    fn per(&self, i: usize) -> f64 {
        self.ticks[i] as f64 * 10.0 / self.requests.max(1) as f64
    }

    /// Milliseconds of CPU per request, all three processes.
    fn total(&self) -> f64 {
        self.per(0) + self.per(1) + self.per(2)
    }
}

impl std::fmt::Display for CpuPerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loadgen {:.3} ms, broker {:.3} ms, redis {:.3} ms, total {:.3} ms",
            self.per(0),
            self.per(1),
            self.per(2),
            self.total()
        )
    }
}

fn proc_ticks(pid: &str) -> u64 {
    let fields = warmlane_tests::servers::proc_stat(pid).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks(11) + ticks(12)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Sequential persistent publishes with confirms to a durable queue: the broker's floor.
async fn bare_confirm_rtt(fleet: &Fleet, p: &str, n: usize) -> Samples {
    let queue = format!("{p}.bare-confirm");
    let channel = fleet.producer.publisher().channel().await.expect("channel");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let body = vec![0u8; 200];
    let mut s = Samples::default();
    for i in 0..n {
        let t = Instant::now();
        let answer = fleet
            .producer
            .publisher()
            .publish("", &queue, &body, message_properties(&format!("b{i}"), FieldTable::default()))
            .await
            .expect("publish");
        assert_eq!(answer, Published::Acked);
        s.0.push(ms(t.elapsed()));
    }
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    s
}

struct Bare {
    throughput: f64,
    confirm: Samples,
}

/// A bare loop with the fleet's shape: publish with confirm, a prefetch-1 consumer that
/// LPUSHes a reply and acks, the caller BLPOPs it. `in_flight` callers. Also records
/// each publish's confirm round trip at that concurrency.
async fn bare_loop(
    fleet: &Fleet,
    consumers: &tokio::runtime::Handle,
    waiters: &Waiters,
    p: &str,
    round: u32,
    n: usize,
    in_flight: usize,
) -> Bare {
    let queue = format!("{p}.bare-loop");
    let reply_prefix = format!("{p}:bare:");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let consumer_queue = queue.clone();
    // Connected from the consumer runtime, like the fleet's worker.
    let server = consumers.spawn(async move {
        let conn =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("connect");
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            consumer_queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                consumer_queue.as_str().into(),
                "bare".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut rc = redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap()).await.unwrap();
        let _ = ready_tx.send(());
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                next = consumer.next() => {
                    let Some(Ok(d)) = next else { break };
                    let id = String::from_utf8_lossy(&d.data).to_string();
                    let _: () = rc.lpush(format!("{reply_prefix}{id}"), b"ok".as_slice()).await.unwrap();
                    d.ack(BasicAckOptions::default()).await.unwrap();
                }
            }
        }
        // Closed, not dropped: each round starts from one bare connection.
        let _ = conn.close(200, "done".into()).await;
    });
    ready_rx.await.expect("the bare consumer started");
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut handles = vec![];
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (publisher_queue, waiters, p) = (queue.clone(), waiters.clone(), p.to_string());
        let producer = fleet.producer.clone();
        handles.push(tokio::spawn(async move {
            let id = format!("r{round}-{i}");
            let t = Instant::now();
            let answer = producer
                .publisher()
                .publish("", &publisher_queue, id.as_bytes(), message_properties(&id, FieldTable::default()))
                .await
                .unwrap();
            let confirm = t.elapsed();
            assert_eq!(answer, Published::Acked);
            let popped = waiters.pop(&format!("{p}:bare:{id}"), 30.0).await;
            assert!(popped.is_some(), "bare loop: no reply for {id}");
            drop(permit);
            confirm
        }));
    }
    let mut confirm = Samples::default();
    for h in handles {
        confirm.0.push(ms(h.await.unwrap()));
    }
    let throughput = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = server.await;
    let ch = fleet.producer.publisher().channel_plain().await.expect("channel");
    let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = ch.close(200, "done".into()).await;
    Bare { throughput, confirm }
}

#[derive(Default)]
struct Run {
    accept: Samples,
    e2e: Samples,
    inference: Samples,
    overhead: Samples,
    throughput: f64,
    outcomes: BTreeMap<String, usize>,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.accept.extend(other.accept);
        self.e2e.extend(other.e2e);
        self.inference.extend(other.inference);
        self.overhead.extend(other.overhead);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

async fn start_http(fleet: &Fleet) -> String {
    let port = warmlane_tests::servers::free_port();
    let args = warmlane_producer::http::ServeArgs {
        listen: format!("127.0.0.1:{port}"),
        api_keys: vec![],
        admin_key: None,
        cors_origins: vec![],
        results_dir: fleet.results_dir.clone(),
        body_limit: warmlane_shared::request::MAX_BODY_BYTES,
        long_poll_max_s: 60,
        sse_max_s: 60,
    };
    let producer = fleet.producer.clone();
    let amqp = fleet.amqp_url.clone();
    tokio::spawn(async move {
        if let Err(e) = warmlane_producer::http::serve(producer, args, amqp, std::future::pending()).await {
            panic!("HTTP shim: {e}");
        }
    });
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the HTTP shim did not start on {addr}");
}

/// POST /generate on a keep-alive connection; returns the status code.
async fn post(stream: &mut BufReader<tokio::net::TcpStream>, body: &str) -> u16 {
    let req = format!("POST /generate HTTP/1.1\r\nhost: loadgen\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    stream.get_mut().write_all(req.as_bytes()).await.expect("write");
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("status line");
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let mut len = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await.expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.expect("body");
    status
}

async fn drive(
    fleet: &Arc<Fleet>,
    waiters: &Waiters,
    args: &Args,
    round: u32,
    http: Option<String>,
    inference: &InferenceLog,
) -> Run {
    let sem = Arc::new(Semaphore::new(if args.rate > 0.0 { usize::MAX >> 4 } else { args.in_flight }));
    let started = Instant::now();
    let mut handles = vec![];
    for i in 0..args.requests {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = sem.clone().acquire_owned().await.unwrap();
        let fleet = fleet.clone();
        let model = args.models[i % args.models.len()].clone();
        let http = http.clone();
        let waiters = waiters.clone();
        let mut body = warmlane_tests::request(&format!("{}-{round}-{i}", fleet.prefix), &model);
        body["width"] = args.width.into();
        body["height"] = args.height.into();
        body["frames"] = args.frames.into();
        handles.push(tokio::spawn(async move {
            let id = body["task_id"].as_str().unwrap().to_string();
            let t0 = Instant::now();
            let accepted = match http {
                Some(addr) => {
                    let mut s =
                        BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("connect to the shim"));
                    let status = post(&mut s, &body.to_string()).await;
                    if status == 202 {
                        Ok(())
                    } else {
                        Err(format!("http_{status}"))
                    }
                }
                None => fleet.producer.submit_json(&body).await.map(|_| ()).map_err(|e| match e {
                    warmlane_producer::ProducerError::Rejected(r) => r.code.as_str().to_string(),
                    other => format!("error: {other}"),
                }),
            };
            let accept = t0.elapsed();
            let result = match accepted {
                Ok(()) => {
                    let key = fleet.producer.store().keys().reply(&id);
                    let reply = waiters
                        .pop(&key, 120.0)
                        .await
                        .map(|body| warmlane_shared::Reply::from_msgpack(&body).expect("a decodable reply"));
                    let e2e = t0.elapsed();
                    match reply {
                        Some(r) => {
                            let outcome = r.code.map(|c| c.as_str().to_string()).unwrap_or_else(|| "done".into());
                            (Some(accept), Some((id, e2e)), outcome)
                        }
                        None => (Some(accept), None, "no_reply".into()),
                    }
                }
                Err(code) => (None, None, code),
            };
            drop(permit);
            result
        }));
    }
    let mut run = Run::default();
    for h in handles {
        let (accept, e2e, outcome) = h.await.unwrap();
        if let Some(a) = accept {
            run.accept.0.push(ms(a));
        }
        if let Some((id, e)) = e2e {
            let inf = inference.lock().unwrap().remove(&id).map(ms).unwrap_or(0.0);
            run.e2e.0.push(ms(e));
            run.inference.0.push(inf);
            run.overhead.0.push((ms(e) - inf).max(0.0));
        }
        *run.outcomes.entry(outcome).or_default() += 1;
    }
    run.throughput = args.requests as f64 / started.elapsed().as_secs_f64();
    run
}
