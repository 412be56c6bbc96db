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

mod bare;
mod cpu;
mod drive;
mod samples;
mod timed;

use bare::{bare_confirm_rtt, bare_loop};
use clap::{Parser, ValueEnum};
use cpu::{cpu_model, Cpu, CpuPerRequest};
use drive::{drive, start_http, Run};
use samples::{Samples, Waiters};
use std::sync::Arc;
use std::time::Duration;
use timed::{InferenceLog, Timed};
use warmlane_consumer::Engine;
use warmlane_shared::Settings;
use warmlane_tests::engines::SleepEngine;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, settings_with};

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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let p = prefix("bench");
    let settings = settings_with(|_| {});
    let mut fleet = Fleet::start(&p, settings.clone()).await;
    print_header(&args);

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
    spawn_workers(&mut fleet, consumers.handle(), &args, &settings, &inference);
    for model in &args.models {
        fleet.wait_ready(model, 1).await;
    }
    let http = match args.via {
        Via::Http => Some(start_http(&fleet).await),
        Via::Library => None,
    };
    let fleet = Arc::new(fleet);
    let totals = run_rounds(&fleet, consumers.handle(), &args, &p, http, &inference).await;
    print_report(&args, totals);
    Arc::try_unwrap(fleet).ok().expect("fleet still shared").cleanup().await;
    consumers.shutdown_background();
}

/// The run's settings and the host, before anything is measured.
fn print_header(args: &Args) {
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
}

/// One warm worker per model on the consumer runtime, its engine timed into `inference`.
fn spawn_workers(
    fleet: &mut Fleet,
    consumers: &tokio::runtime::Handle,
    args: &Args,
    settings: &Arc<Settings>,
    inference: &InferenceLog,
) {
    for model in &args.models {
        let engine: Box<dyn Engine> = match args.engine {
            EngineKind::Noop => Box::new(SleepEngine::new(Duration::ZERO)),
            EngineKind::Onnx => Box::new(
                warmlane_consumer::ort_engine::OrtEngine::new(settings.clone(), None)
                    .unwrap_or_else(|e| panic!("{}", e.message)),
            ),
        };
        fleet.spawn_worker_with(consumers, model, Box::new(Timed { inner: engine, log: inference.clone() }), None);
    }
}

/// Figures pooled over the rounds.
struct Totals {
    confirm: Samples,
    loop_confirm: Samples,
    run: Run,
    /// (fleet, bare loop) throughput of each round.
    ratios: Vec<(f64, f64)>,
    cpu_bare: CpuPerRequest,
    cpu_fleet: CpuPerRequest,
}

/// `--rounds` rounds of (bare confirm round trip, bare loop, fleet run), each round's
/// line printed as it ends.
async fn run_rounds(
    fleet: &Arc<Fleet>,
    consumers: &tokio::runtime::Handle,
    args: &Args,
    p: &str,
    http: Option<String>,
    inference: &InferenceLog,
) -> Totals {
    let (mut confirm, mut loop_confirm, mut run) = (Samples::default(), Samples::default(), Run::default());
    let mut ratios = vec![];
    let waiters = Waiters::new();
    let (mut cpu_bare, mut cpu_fleet) = (CpuPerRequest::default(), CpuPerRequest::default());
    for round in 0..args.rounds {
        let c = bare_confirm_rtt(fleet, p, args.bare_samples).await;
        let cpu0 = Cpu::now();
        let n_bare = args.requests.min(2000);
        let bare = bare_loop(fleet, consumers, &waiters, p, round, n_bare, args.in_flight).await;
        let cpu1 = Cpu::now();
        let r = drive(fleet, &waiters, args, round, http.clone(), inference).await;
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
    Totals { confirm, loop_confirm, run, ratios, cpu_bare, cpu_fleet }
}

/// The pooled figures beside the bare ones, and whether the targets were met.
fn print_report(args: &Args, totals: Totals) {
    let Totals { confirm, loop_confirm, run, mut ratios, cpu_bare, cpu_fleet } = totals;
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
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
