//! `warmlane-loadgen`: drives a fleet through the producer library or the HTTP shim
//! and prints accept latency, end-to-end latency, fleet overhead (time beyond
//! inference), throughput and the outcome mix, each beside the broker's own bare
//! figures measured in the same run: the publish-confirm round trip, and a bare
//! publish-consume-reply loop with prefetch 1.
//!
//! It starts its own in-process fleet (producer, reaper, one worker per model)
//! under a fresh prefix against RabbitMQ and Redis (AMQP_URL / REDIS_URL), and
//! removes it afterwards.
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
use warmlane_producer::amqp::{message_properties, Published};
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
    /// Samples of the bare confirm round trip.
    #[arg(long, default_value_t = 500)]
    bare_samples: usize,
}

#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
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
        format!("{name:<34} p50 {:>8.3} ms   p95 {:>8.3} ms   p99 {:>8.3} ms   (n={})", self.pct(50.0), self.pct(95.0), self.pct(99.0), self.0.len())
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
    println!("warmlane-loadgen: {} requests, {}, via {:?}, engine {:?}, models {:?}, {}x{}x{}",
        args.requests,
        if args.rate > 0.0 { format!("open loop {} req/s", args.rate) } else { format!("closed loop {} in flight", args.in_flight) },
        args.via, args.engine, args.models, args.width, args.height, args.frames);
    println!("host: {} cores, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), cpu_model());

    let confirm = bare_confirm_rtt(&fleet, &p, args.bare_samples).await;
    let bare_tput = bare_loop_throughput(&fleet, &p, args.requests.min(2000), args.in_flight).await;

    fleet.spawn_reaper();
    for model in &args.models {
        let engine: Box<dyn Engine> = match args.engine {
            EngineKind::Noop => Box::new(SleepEngine::new(Duration::ZERO)),
            EngineKind::Onnx => Box::new(warmlane_consumer::ort_engine::OrtEngine::new(settings.clone(), None).unwrap_or_else(|e| panic!("{}", e.message))),
        };
        fleet.spawn_worker(model, engine);
    }
    for model in &args.models {
        fleet.wait_ready(model, 1).await;
    }
    let http = match args.via {
        Via::Http => Some(start_http(&fleet).await),
        Via::Library => None,
    };
    let fleet = Arc::new(fleet);
    let run = drive(&fleet, &args, http).await;

    println!();
    println!("{}", confirm.line("bare publish-confirm round trip"));
    println!("{}", run.accept.line("accept latency"));
    println!("{}", run.e2e.line("end-to-end latency"));
    println!("{}", run.inference.line("inference (reported by workers)"));
    println!("{}", run.overhead.line("fleet overhead (e2e - inference)"));
    println!("{:<34} {:>10.1} req/s", "fleet throughput", run.throughput);
    println!("{:<34} {:>10.1} req/s", "bare publish-consume-reply loop", bare_tput);
    println!("{:<34} {:?}", "outcomes", run.outcomes);
    println!();
    println!("targets: accept p99 {:.3} ms <= 3 x confirm p99 {:.3} ms: {}", run.accept.pct(99.0), confirm.pct(99.0), verdict(run.accept.pct(99.0) <= 3.0 * confirm.pct(99.0)));
    println!("         fleet overhead p50 {:.3} ms <= 2 ms: {}", run.overhead.pct(50.0), verdict(run.overhead.pct(50.0) <= 2.0));
    println!("         throughput {:.1} >= 0.8 x bare {:.1} = {:.1} req/s: {}", run.throughput, bare_tput, 0.8 * bare_tput, verdict(run.throughput >= 0.8 * bare_tput));
    Arc::try_unwrap(fleet).ok().expect("fleet still shared").cleanup().await;
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Sequential persistent publishes with confirms to a durable queue: the broker's floor.
async fn bare_confirm_rtt(fleet: &Fleet, p: &str, n: usize) -> Samples {
    let queue = format!("{p}.bare-confirm");
    let channel = fleet.producer.publisher().channel().await.expect("channel");
    channel.queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    let body = vec![0u8; 200];
    let mut s = Samples::default();
    for i in 0..n {
        let t = Instant::now();
        let answer = fleet.producer.publisher().publish("", &queue, &body, message_properties(&format!("b{i}"), FieldTable::default())).await.expect("publish");
        assert_eq!(answer, Published::Acked);
        s.0.push(ms(t.elapsed()));
    }
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    s
}

/// A bare loop with the fleet's shape: publish with confirm, a prefetch-1 consumer that
/// LPUSHes a reply and acks, the caller BLPOPs it. `in_flight` callers.
async fn bare_loop_throughput(fleet: &Fleet, p: &str, n: usize, in_flight: usize) -> f64 {
    let queue = format!("{p}.bare-loop");
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch.basic_consume(queue.as_str().into(), "bare".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap();
    let redis = redis::Client::open(redis_url()).unwrap();
    let mut rc = redis::aio::ConnectionManager::new(redis.clone()).await.unwrap();
    let reply_prefix = format!("{p}:bare:");
    let server = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let id = String::from_utf8_lossy(&d.data).to_string();
            let _: () = rc.lpush(format!("{reply_prefix}{id}"), b"ok".as_slice()).await.unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut handles = vec![];
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (publisher_queue, redis, p) = (queue.clone(), redis.clone(), p.to_string());
        let producer = fleet.producer.clone();
        handles.push(tokio::spawn(async move {
            let id = format!("r{i}");
            producer.publisher().publish("", &publisher_queue, id.as_bytes(), message_properties(&id, FieldTable::default())).await.unwrap();
            let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            let mut c = redis.get_multiplexed_async_connection_with_config(&cfg).await.unwrap();
            let _: Option<(String, Vec<u8>)> = c.blpop(format!("{p}:bare:{id}"), 30.0).await.unwrap();
            drop(permit);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let tput = n as f64 / started.elapsed().as_secs_f64();
    server.abort();
    let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "done".into()).await;
    tput
}

struct Run {
    accept: Samples,
    e2e: Samples,
    inference: Samples,
    overhead: Samples,
    throughput: f64,
    outcomes: BTreeMap<String, usize>,
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

async fn drive(fleet: &Arc<Fleet>, args: &Args, http: Option<String>) -> Run {
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
        let mut body = warmlane_tests::request(&format!("{}-{i}", fleet.prefix), &model);
        body["width"] = args.width.into();
        body["height"] = args.height.into();
        body["frames"] = args.frames.into();
        handles.push(tokio::spawn(async move {
            let id = body["task_id"].as_str().unwrap().to_string();
            let t0 = Instant::now();
            let accepted = match http {
                Some(addr) => {
                    let mut s = BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("connect to the shim"));
                    let status = post(&mut s, &body.to_string()).await;
                    if status == 202 { Ok(()) } else { Err(format!("http_{status}")) }
                }
                None => fleet.producer.submit_json(&body).await.map(|_| ()).map_err(|e| match e {
                    warmlane_producer::ProducerError::Rejected(r) => r.code.as_str().to_string(),
                    other => format!("error: {other}"),
                }),
            };
            let accept = t0.elapsed();
            let result = match accepted {
                Ok(()) => {
                    let reply = fleet.producer.store().wait_reply(&id, Duration::from_secs(120)).await.ok().flatten();
                    let e2e = t0.elapsed();
                    match reply {
                        Some(r) => {
                            let outcome = r.code.map(|c| c.as_str().to_string()).unwrap_or_else(|| "done".into());
                            (Some(accept), Some((e2e, r.timings.inference_ms.unwrap_or(0))), outcome)
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
    let mut run = Run { accept: Samples::default(), e2e: Samples::default(), inference: Samples::default(), overhead: Samples::default(), throughput: 0.0, outcomes: BTreeMap::new() };
    for h in handles {
        let (accept, e2e, outcome) = h.await.unwrap();
        if let Some(a) = accept {
            run.accept.0.push(ms(a));
        }
        if let Some((e, inf)) = e2e {
            run.e2e.0.push(ms(e));
            run.inference.0.push(inf as f64);
            run.overhead.0.push((ms(e) - inf as f64).max(0.0));
        }
        *run.outcomes.entry(outcome).or_default() += 1;
    }
    run.throughput = args.requests as f64 / started.elapsed().as_secs_f64();
    run
}
