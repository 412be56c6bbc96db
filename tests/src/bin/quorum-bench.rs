//! `quorum-bench` (issue #18): what a publisher confirm costs on a quorum queue, next
//! to a classic queue, on one node and on a three-node cluster.
//!
//! Each case publishes persistent messages (1 KiB by default) to a queue of its own
//! through the default exchange, first one at a time, each waiting for its confirm
//! (`--warmup` unmeasured, then `--publishes` measured: p50, p95, p99, mean), then
//! from `--concurrency` publishers sharing one confirm channel, each waiting for its
//! own confirms (`warmlane_infra::amqp::publish`, the producer's path): messages/s.
//! The cases:
//!
//! 1. a classic queue on the shared broker (`AMQP_URL`, default 127.0.0.1:5672);
//! 2. a quorum queue on the shared broker (a one-member quorum);
//! 3. a quorum queue on a three-node cluster the bench starts (`RabbitCluster`, under
//!    `target/quorum-bench/`, stopped at the end), publishing through a node that
//!    does not lead the queue (the placement of two clients in three), then through
//!    the leader.
//!
//! The last line gives ops/capacity its admission delay: the p50 through a follower
//! of the cluster. Nothing the bench declares outlives it.
//!
//! ```text
//! cargo build --release -p warmlane-tests --bin quorum-bench
//! target/release/quorum-bench [--publishes 2000] [--warmup 200] [--concurrency 32] [--size 1024]
//! ```

use clap::Parser;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use warmlane_infra::amqp::{publish, Published};
use warmlane_tests::cluster::RabbitCluster;
use warmlane_tests::{amqp_url, prefix, repo_root};

/// Publish-confirm latency and throughput of classic and quorum queues.
#[derive(Debug, Parser)]
struct Args {
    /// Measured publishes per case, one at a time.
    #[arg(long, env = "QUORUM_BENCH_PUBLISHES", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    publishes: u32,
    /// Unmeasured publishes before them.
    #[arg(long, env = "QUORUM_BENCH_WARMUP", default_value_t = 200)]
    warmup: u32,
    /// Publishers sharing one channel in the throughput run.
    #[arg(long, env = "QUORUM_BENCH_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Messages each of them publishes there.
    #[arg(long, env = "QUORUM_BENCH_PER_PUBLISHER", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    per_publisher: u32,
    /// Message body, bytes.
    #[arg(long, env = "QUORUM_BENCH_SIZE", default_value_t = 1024)]
    size: usize,
}

/// The queue kinds compared.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Classic,
    Quorum,
}

impl Kind {
    fn arguments(self) -> FieldTable {
        let name = match self {
            Kind::Classic => "classic",
            Kind::Quorum => "quorum",
        };
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(name)));
        args
    }
}

/// One row of the table.
struct Row {
    case: String,
    /// Sorted latencies of the measured sequential publishes.
    latencies: Vec<Duration>,
    rate: f64,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        ms(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }

    fn mean(&self) -> f64 {
        ms(self.latencies.iter().sum::<Duration>()) / self.latencies.len() as f64
    }

    fn line(&self) -> String {
        format!(
            "{:<40} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>12.0}",
            self.case,
            self.percentile(50.0),
            self.percentile(95.0),
            self.percentile(99.0),
            self.mean(),
            self.rate
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The host and port of an AMQP URL, without its credentials (for messages).
fn host_of(url: &str) -> &str {
    url.rsplit_once('@').map_or(url, |(_, host)| host)
}

/// A connection to `url` and a confirm channel on it.
async fn confirm_channel(url: &str) -> Result<(Connection, Channel), String> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("quorum-bench: connecting to RabbitMQ at {}: {e}", host_of(url)))?;
    let channel = conn.create_channel().await.map_err(|e| format!("quorum-bench: opening a channel: {e}"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("quorum-bench: confirms: {e}"))?;
    Ok((conn, channel))
}

/// Publishes `body` once to `queue` and waits for the broker's ack.
async fn publish_acked(channel: &Channel, order: &Mutex<()>, queue: &str, body: &[u8]) -> Result<(), String> {
    let props = BasicProperties::default().with_delivery_mode(2);
    match publish(channel, order, "", queue, body, props).await {
        Ok(Published::Acked) => Ok(()),
        Ok(other) => Err(format!("quorum-bench: publish to {queue} answered {other:?}, not an ack")),
        Err(e) => Err(format!("quorum-bench: publish to {queue}: {e}")),
    }
}

/// Runs one case against `queue` (declared, emptied first) through node `url`.
async fn run_case(args: &Args, case: &str, url: &str, queue: &str, kind: Kind) -> Result<Row, String> {
    let (conn, channel) = confirm_channel(url).await?;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel
        .queue_declare(queue.into(), durable, kind.arguments())
        .await
        .map_err(|e| format!("quorum-bench: declaring {queue}: {e}"))?;
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .map_err(|e| format!("quorum-bench: purging {queue}: {e}"))?;
    let body = vec![b'x'; args.size];
    let order = Arc::new(Mutex::new(()));
    for _ in 0..args.warmup {
        publish_acked(&channel, &order, queue, &body).await?;
    }
    let mut latencies = Vec::with_capacity(args.publishes as usize);
    for _ in 0..args.publishes {
        let sent = Instant::now();
        publish_acked(&channel, &order, queue, &body).await?;
        latencies.push(sent.elapsed());
    }
    latencies.sort_unstable();

    let began = Instant::now();
    let mut publishers = Vec::new();
    for _ in 0..args.concurrency {
        let (channel, order, queue, body, n) =
            (channel.clone(), order.clone(), queue.to_string(), body.clone(), args.per_publisher);
        publishers.push(tokio::spawn(async move {
            for _ in 0..n {
                publish_acked(&channel, &order, &queue, &body).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for p in publishers {
        p.await.map_err(|e| format!("quorum-bench: a publisher task failed: {e}"))??;
    }
    let rate = f64::from(args.concurrency * args.per_publisher) / began.elapsed().as_secs_f64();
    let _ = conn.close(200, "done".into()).await;
    let row = Row { case: case.to_string(), latencies, rate };
    println!("{}", row.line());
    Ok(row)
}

/// Deletes `queue` through node `url`.
async fn delete_queue(url: &str, queue: &str) {
    if let Ok((conn, channel)) = confirm_channel(url).await {
        let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
        let _ = conn.close(200, "done".into()).await;
    }
}

/// The cluster cases, through a follower, then through the leader; and how long the
/// cluster took to form.
async fn cluster_cases(args: &Args, queue: &str) -> Result<(Vec<Row>, Duration), String> {
    let dir = repo_root().join("target/quorum-bench").join(prefix("cluster"));
    let cluster = tokio::task::block_in_place(|| RabbitCluster::start(&dir));
    let formed_in = cluster.formed_in();
    // Declared on node 0, so node 0 leads it (RabbitMQ places the leader on the
    // declaring node); the leader is asked all the same.
    let result = async {
        let (conn, channel) = confirm_channel(&cluster.url(0)).await?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel
            .queue_declare(queue.into(), durable, Kind::Quorum.arguments())
            .await
            .map_err(|e| format!("quorum-bench: declaring {queue} on the cluster: {e}"))?;
        let _ = conn.close(200, "done".into()).await;
        let leader = tokio::task::block_in_place(|| cluster.wait_leader(queue, Duration::from_secs(30)));
        let follower = (leader + 1) % warmlane_tests::cluster::SIZE;
        let case = format!("quorum, 3-node cluster, via follower n{follower}");
        let via_follower = run_case(args, &case, &cluster.url(follower), queue, Kind::Quorum).await?;
        let case = format!("quorum, 3-node cluster, via leader n{leader}");
        let via_leader = run_case(args, &case, &cluster.url(leader), queue, Kind::Quorum).await?;
        Ok((vec![via_follower, via_leader], formed_in))
    }
    .await;
    tokio::task::block_in_place(|| drop(cluster));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(args: Args) -> Result<(), String> {
    let p = prefix("qbench");
    let shared = amqp_url();
    println!(
        "quorum-bench: {} publishes after {} warm-up, {} B persistent, each waiting for its confirm; \
         msg/s: {} publishers on one channel, {} messages each",
        args.publishes, args.warmup, args.size, args.concurrency, args.per_publisher
    );
    println!("{:<40} {:>8} {:>8} {:>8} {:>8} {:>12}", "case", "p50 ms", "p95 ms", "p99 ms", "mean ms", "msg/s");
    let mut rows = Vec::new();
    for (case, kind, queue) in [
        ("classic, shared broker (1 node)", Kind::Classic, format!("{p}.classic")),
        ("quorum, shared broker (1 node)", Kind::Quorum, format!("{p}.quorum")),
    ] {
        let row = run_case(&args, case, &shared, &queue, kind).await;
        delete_queue(&shared, &queue).await;
        rows.push(row?);
    }
    let (cluster_rows, formed_in) = cluster_cases(&args, &format!("{p}.cluster")).await?;
    rows.extend(cluster_rows);
    println!("(the 3-node cluster formed in {:.1} s)", formed_in.as_secs_f64());
    println!("quorum confirm latency for ops/capacity: {:.2} ms (p50, 3-node cluster)", rows[2].percentile(50.0));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
