//! The fleet on a 3-node RabbitMQ cluster with quorum queues (issue #18), each test
//! on a cluster of its own (`warmlane_tests::cluster`), one test at a time.
//!
//! 1. Node loss: a stream of a few hundred requests across both lanes and the
//!    degraded queue; the node leading the busiest queue is SIGKILLed in the middle
//!    and restarted after. Every request the producer confirmed is answered `done`
//!    exactly once, and service resumes within 30 s of the kill.
//! 2. Exact depth: 8 producer processes (`warmlane-producer serve`) publish at once
//!    into a full degraded queue; its depth, sampled every 10 ms, never exceeds the
//!    limit, and every accepted request is answered.
//!
//! Figures are printed (`--nocapture`); the README quotes them.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use redis::AsyncCommands;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_producer::ProducerError;
use warmlane_shared::{QueueType, Reply, ReplyStatus, Settings};
use warmlane_tests::cluster::RabbitCluster;
use warmlane_tests::engines::SleepEngine;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, redis_url, repo_root, request, settings_file, settings_with};

/// One cluster at a time: three Erlang VMs each are plenty for a small CI machine.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests of the node-loss stream, and the one at which the leader is killed.
const STREAM: usize = 300;
const KILL_AT: usize = 100;
/// Models in turn: anisora's lane is the busiest queue; wan-tiny has no lane worker,
/// so its requests go degraded.
const MODELS: [&str; 4] = ["anisora", "phr00t", "anisora", "wan-tiny"];

fn quorum(settings: Arc<Settings>) -> Arc<Settings> {
    let mut s = (*settings).clone();
    s.broker.queue_type = QueueType::Quorum;
    Arc::new(s)
}

/// What became of one submission.
#[derive(Debug, Default)]
struct Stream {
    accepted: Vec<String>,
    refused: Vec<String>,
    /// Not confirmed: the caller was told it failed, and it may or may not have been queued.
    unknown: Vec<String>,
    killed_at: Option<Instant>,
    /// The first confirmed submission after the kill.
    resumed_at: Option<Instant>,
    /// The first confirmed submission to the degraded queue after the kill.
    degraded_resumed_at: Option<Instant>,
}

impl Stream {
    /// Submits one request through the fleet's producer and records what became of
    /// it: `lane`, `degraded`, `refused ...` or `unconfirmed`.
    async fn submit(&mut self, fleet: &Fleet, id: &str, model: &str) -> &'static str {
        let id = id.to_string();
        match fleet.producer.submit_json(&request(&id, model)).await {
            Ok(accepted) => {
                let after_kill = self.killed_at.is_some();
                if after_kill && self.resumed_at.is_none() {
                    self.resumed_at = Some(Instant::now());
                }
                self.accepted.push(id);
                if accepted.lane != "degraded" {
                    return "lane";
                }
                if after_kill && self.degraded_resumed_at.is_none() {
                    self.degraded_resumed_at = Some(Instant::now());
                }
                "degraded"
            }
            Err(ProducerError::Rejected(r)) => {
                self.refused.push(id);
                if r.reason == "queue_full" {
                    "refused queue_full"
                } else {
                    "refused (other)"
                }
            }
            Err(_) => {
                self.unknown.push(id);
                "unconfirmed"
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmed_tasks_survive_the_loss_of_the_busiest_queues_leader() {
    let _one = ONE_CLUSTER.lock().await;
    let p = prefix("cluster-loss");
    let dir = repo_root().join("target/test-output").join(format!("{p}-cluster"));
    let mut cluster = tokio::task::block_in_place(|| RabbitCluster::start(&dir));
    println!("cluster formed in {:.1} s", cluster.formed_in().as_secs_f64());
    // Shorter waits than the defaults, so that the backstop answers an unconfirmed
    // publish that was lost with the node (which it may be) within the test's time.
    let settings = quorum(settings_with(|j| {
        j["lanes"]["lane_wait_ms"] = 10_000.into();
        j["degraded"]["max_wait_ms"] = 10_000.into();
    }));
    let mut fleet = Fleet::start_on(&p, settings, &cluster.url_list(), &redis_url()).await;
    fleet.spawn_reaper();
    for lane in ["anisora", "phr00t", "degraded"] {
        fleet.spawn_worker(lane, Box::new(SleepEngine::new(Duration::from_millis(20))));
    }
    fleet.wait_ready("anisora", 1).await;
    fleet.wait_ready("phr00t", 1).await;
    let busiest = fleet.topology().lane_queue("anisora");

    let mut s = Stream::default();
    let mut victim = None;
    let mut restarted = None;
    let mut timeline: BTreeMap<u64, BTreeMap<&str, u32>> = BTreeMap::new();
    let mut n = 0;
    // At least STREAM requests; after the kill, on until service resumed (or 45 s
    // passed), then the node is restarted and 50 more go after it.
    while n < STREAM || restarted.is_none_or(|at: usize| n < at + 50) {
        if n == KILL_AT {
            let leader = tokio::task::block_in_place(|| cluster.wait_leader(&busiest, Duration::from_secs(30)));
            tokio::task::block_in_place(|| cluster.kill(leader));
            println!("killed node {leader}, the leader of {busiest}, after {n} requests");
            s.killed_at = Some(Instant::now());
            victim = Some((leader, Instant::now()));
        }
        let since_kill = s.killed_at.map(|k| k.elapsed());
        if let (Some((node, _)), None, Some(since)) = (victim, restarted, since_kill) {
            let resumed_long_ago = s.degraded_resumed_at.is_some_and(|r| r.elapsed() > Duration::from_secs(5));
            if resumed_long_ago || since > Duration::from_secs(45) {
                let restart = Instant::now();
                tokio::task::block_in_place(|| cluster.restart(node));
                println!("node {node} restarted and rejoined in {:.1} s", restart.elapsed().as_secs_f64());
                restarted = Some(n);
            }
        }
        let id = format!("{p}-{n}");
        let outcome = s.submit(&fleet, &id, MODELS[n % MODELS.len()]).await;
        if let Some(since) = since_kill {
            *timeline.entry(since.as_secs()).or_default().entry(outcome).or_default() += 1;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (second, counts) in &timeline {
        println!("  +{second:>2} s after the kill: {counts:?}");
    }
    assert_eq!(tokio::task::block_in_place(|| cluster.running_nodes()), vec![0, 1, 2]);

    let outcomes = answers(&fleet, &s).await;
    let resumed = s.resumed_at.zip(s.killed_at).map(|(r, k)| r.duration_since(k));
    let degraded_resumed = s.degraded_resumed_at.zip(s.killed_at).map(|(r, k)| r.duration_since(k));
    println!("degraded path resumed {:.2} s after the kill", degraded_resumed.map_or(f64::NAN, |d| d.as_secs_f64()));
    println!(
        "node loss: {} submitted, {} confirmed, {} refused, {} unconfirmed; confirmed answered {:?}; \
         service resumed {:.2} s after the kill",
        s.accepted.len() + s.refused.len() + s.unknown.len(),
        s.accepted.len(),
        s.refused.len(),
        s.unknown.len(),
        outcomes,
        resumed.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    assert_eq!(outcomes.get("done").copied().unwrap_or(0), s.accepted.len(), "confirmed tasks not done: {outcomes:?}");
    let resumed = resumed.expect("no request was confirmed after the kill");
    assert!(resumed <= Duration::from_secs(30), "service resumed {resumed:?} after the kill (limit 30 s)");
    assert!(s.accepted.len() >= STREAM / 2, "too few confirmed: {s:?}");
    fleet.cleanup().await;
    tokio::task::block_in_place(|| drop(cluster));
}

/// Every confirmed task has exactly one terminal reply; returns the replies by
/// status (`done`, or `<code>/<reason>`). An unconfirmed one has one reply or none
/// (never admitted, the caller was told).
async fn answers(fleet: &Fleet, s: &Stream) -> BTreeMap<String, usize> {
    let store = fleet.producer.store();
    let mut c = store.connection();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut outcomes = BTreeMap::new();
    for id in s.accepted.iter().chain(&s.unknown) {
        let confirmed = s.accepted.contains(id);
        let replies: Vec<Vec<u8>> = loop {
            let replies: Vec<Vec<u8>> = c.lrange(store.keys().reply(id), 0, -1).await.expect("LRANGE");
            let status: Option<String> = c.hget(store.keys().task(id), "status").await.expect("HGET");
            if !replies.is_empty() || (!confirmed && status.is_none()) {
                break replies;
            }
            assert!(Instant::now() < deadline, "{id} has no terminal reply; task {:?}", store.task(id).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(replies.len() <= 1, "{id} was answered {} times", replies.len());
        if confirmed {
            let reply = Reply::from_msgpack(&replies[0]).expect("a reply");
            let key = match reply.status {
                ReplyStatus::Done => "done".to_string(),
                _ => format!("{}/{}", reply.code.map_or("-", |c| c.as_str()), reply.reason.unwrap_or_default()),
            };
            *outcomes.entry(key).or_insert(0) += 1;
        }
    }
    outcomes
}

/// Producer processes and requests each sends at once.
const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 40;
const IN_FLIGHT: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_producer_processes_never_push_the_degraded_depth_past_its_limit() {
    let _one = ONE_CLUSTER.lock().await;
    let p = prefix("cluster-depth");
    let dir = repo_root().join("target/test-output").join(format!("{p}-cluster"));
    let cluster = tokio::task::block_in_place(|| RabbitCluster::start(&dir));
    // Quorum queues, and a short degraded wait so that the full queue also turns over by expiry.
    let settings_path = settings_file(&dir, |j| {
        j["broker"] = serde_json::json!({"queue_type": "quorum"});
        j["degraded"]["max_wait_ms"] = 5_000.into();
    });
    let settings = quorum(Arc::new(Settings::load(&settings_path).unwrap_or_else(|e| panic!("{e}"))));
    let limit = settings.degraded.max_depth;
    let mut fleet = Fleet::start_on(&p, settings.clone(), &cluster.url_list(), &redis_url()).await;
    // A slow degraded worker: the queue stays full while it drains.
    fleet.spawn_worker("degraded", Box::new(SleepEngine::new(Duration::from_millis(100))));
    let shims: Vec<_> =
        (0..PRODUCERS).map(|_| shim::start(&cluster.url_list(), &p, &settings_path, &dir)).collect::<Vec<_>>();

    let queue = fleet.topology().degraded_queue();
    let sampler = Sampler::start(&cluster.url(1), &queue).await;
    let mut senders = Vec::new();
    for (i, (_, port)) in shims.iter().enumerate() {
        let (port, p) = (*port, p.clone());
        senders.push(tokio::spawn(async move { shim::send(port, &p, i, PER_PRODUCER, IN_FLIGHT).await }));
    }
    let (mut accepted, mut refused, mut unknown) = (Vec::new(), 0, Vec::new());
    for sender in senders {
        let (a, r, u) = sender.await.expect("a sender");
        accepted.extend(a);
        refused += r;
        unknown.extend(u);
    }
    let s = Stream { accepted, unknown, ..Stream::default() };
    let outcomes = answers(&fleet, &s).await;
    let (samples, max) = sampler.stop().await;
    println!(
        "depth guard: {PRODUCERS} producer processes, {} requests: {} accepted, {refused} refused queue_full, {} \
         unconfirmed; \
         accepted answered {outcomes:?}; degraded depth max {max} of {limit} over {samples} samples (every 10 ms)",
        PRODUCERS * PER_PRODUCER,
        s.accepted.len(),
        s.unknown.len()
    );
    assert!(samples >= 100, "only {samples} depth samples");
    assert!(max <= limit, "the degraded depth reached {max}, over its limit {limit}");
    assert!(refused > 0, "the queue was never full");
    assert_eq!(outcomes.values().sum::<usize>(), s.accepted.len());
    drop(shims);
    fleet.cleanup().await;
    tokio::task::block_in_place(|| drop(cluster));
}

/// Samples a queue's ready messages every 10 ms on its own connection.
struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, u32)>,
}

impl Sampler {
    async fn start(amqp: &str, queue: &str) -> Sampler {
        let conn = warmlane_infra::amqp::open(&amqp.into()).await.expect("a connection for the sampler");
        let channel = conn.create_channel().await.expect("a channel");
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let queue = queue.to_string();
        let task = tokio::spawn(async move {
            let _conn = conn;
            let (mut samples, mut max) = (0, 0);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !*stopped.borrow_and_update() {
                tick.tick().await;
                let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                let q = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await;
                let q = q.expect("the degraded queue answers a passive declare");
                samples += 1;
                max = max.max(q.message_count());
            }
            (samples, max)
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> (usize, u32) {
        let _ = self.stop.send(true);
        self.task.await.expect("the sampler")
    }
}

mod shim {
    use super::*;
    use std::path::Path;
    use std::process::Command;
    use warmlane_tests::servers::{free_port, producer_binary};
    use warmlane_tests::watched::Watched;

    /// A `warmlane-producer serve` process on the cluster; its HTTP port.
    pub(super) fn start(amqp: &str, prefix: &str, settings: &Path, dir: &Path) -> (Watched, u16) {
        let port = free_port();
        let mut cmd = Command::new(producer_binary());
        cmd.current_dir(repo_root())
            .env("AMQP_URL", amqp)
            .env("REDIS_URL", redis_url())
            .env("WARMLANE_PREFIX", prefix)
            .env("WARMLANE_SETTINGS", settings)
            .env("WARMLANE_QUEUE_TYPE", "quorum")
            .env("WARMLANE_RESULTS_DIR", dir.join("results"))
            .env("NO_COLOR", "1")
            .env_remove("WARMLANE_JSON_LOGS")
            .env_remove("WARMLANE_STATSD")
            .env_remove("RUST_LOG")
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
        let mut shim = Watched::spawn(&mut cmd);
        assert!(shim.wait_line(|l| l.contains("HTTP shim listening"), Duration::from_secs(60)), "{}", shim.output());
        (shim, port)
    }

    /// Sends `count` requests to the shim on `port`, `in_flight` at a time; the
    /// accepted task ids, the number refused `queue_overloaded`, and the ids whose
    /// publish was not confirmed.
    pub(super) async fn send(
        port: u16,
        prefix: &str,
        shim: usize,
        count: usize,
        in_flight: usize,
    ) -> (Vec<String>, usize, Vec<String>) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let ids: Vec<(usize, String)> = (0..count).map(|n| (n, format!("{prefix}-s{shim}-{n}"))).collect();
        let (mut accepted, mut refused, mut unknown) = (Vec::new(), 0, Vec::new());
        for batch in ids.chunks(in_flight) {
            let calls =
                batch.iter().map(|(n, id)| {
                    let body = request(id, MODELS[n % 2]);
                    async move {
                        (id.clone(), warmlane_tests::http::http(addr, "POST", "/generate", &[], Some(&body)).await)
                    }
                });
            for (id, (status, _, body)) in futures_util::future::join_all(calls).await {
                match status {
                    202 => accepted.push(id),
                    503 if String::from_utf8_lossy(&body).contains("queue_overloaded") => refused += 1,
                    // Told the publish was not confirmed: it may or may not be queued.
                    503 if String::from_utf8_lossy(&body).contains("unconfirmed") => unknown.push(id),
                    other => panic!("{id}: HTTP {other}: {}", String::from_utf8_lossy(&body)),
                }
            }
        }
        (accepted, refused, unknown)
    }
}
