//! An in-process fleet for one test: producer, reaper and workers under a unique
//! prefix, torn down (queues, exchanges, Redis keys) by [`Fleet::cleanup`].

use crate::{amqp_url, redis_url};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use redis::AsyncCommands;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warmlane_consumer::{Engine, WorkerConfig};
use warmlane_producer::Producer;
use warmlane_shared::{Reply, Settings, Topology};

/// A running test fleet.
pub struct Fleet {
    /// The test's prefix.
    pub prefix: String,
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// The producer.
    pub producer: Arc<Producer>,
    /// Results directory of the workers.
    pub results_dir: PathBuf,
    /// The results store and TTL of workers spawned from now on (default: the file
    /// store at `results_dir`, kept forever).
    pub results: warmlane_consumer::results::ResultsConfig,
    /// RabbitMQ URL of this fleet.
    pub amqp_url: String,
    /// Redis URL of this fleet.
    pub redis_url: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    workers: Vec<(watch::Sender<bool>, Option<JoinHandle<()>>)>,
}

impl Fleet {
    /// Connects a producer under `prefix`; panics with a clear message when a server is missing.
    pub async fn start(prefix: &str, settings: Arc<Settings>) -> Fleet {
        Fleet::start_on(prefix, settings, &amqp_url(), &redis_url()).await
    }

    /// Like [`Fleet::start`], against the given servers.
    pub async fn start_on(prefix: &str, settings: Arc<Settings>, amqp: &str, redis: &str) -> Fleet {
        crate::init_logs();
        let producer = match Producer::connect(settings.clone(), &amqp.into(), &redis.into(), prefix).await {
            Ok(p) => Arc::new(p),
            Err(e) => panic!(
                "integration tests need RabbitMQ at {} and Redis at {} ({e}); start them with `rabbitmq-server -detached` and `redis-server --daemonize yes`, or run .ci/run",
                warmlane_infra::config::redact_url(amqp),
                redis
            ),
        };
        let results_dir = crate::repo_root().join("target/test-output").join(prefix);
        let (stop, _) = watch::channel(false);
        Fleet {
            prefix: prefix.to_string(),
            settings,
            producer,
            results_dir,
            results: Default::default(),
            amqp_url: amqp.to_string(),
            redis_url: redis.to_string(),
            stop,
            tasks: vec![],
            workers: vec![],
        }
    }

    /// Topology names.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix)
    }

    /// Starts the reaper.
    pub fn spawn_reaper(&mut self) {
        let mut stop = self.stop.subscribe();
        let producer = self.producer.clone();
        let amqp = self.amqp_url.clone();
        self.tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = warmlane_producer::reaper::run(producer, amqp.into(), shutdown).await {
                panic!("reaper failed: {e}");
            }
        }));
    }

    /// Starts a worker for `lane`; returns its index for [`Fleet::stop_worker`].
    pub fn spawn_worker(&mut self, lane: &str, engine: Box<dyn Engine>) -> usize {
        self.spawn_worker_with(&tokio::runtime::Handle::current(), lane, engine, None)
    }

    /// Like [`Fleet::spawn_worker`], on `runtime` (another runtime keeps the worker
    /// off the test's scheduler threads, as a separate consumer process would), and
    /// unloading its model after `idle_evict` idle.
    pub fn spawn_worker_with(
        &mut self,
        runtime: &tokio::runtime::Handle,
        lane: &str,
        engine: Box<dyn Engine>,
        idle_evict: Option<Duration>,
    ) -> usize {
        let (stop, mut rx) = watch::channel(false);
        let cfg = WorkerConfig {
            settings: self.settings.clone(),
            amqp: self.amqp_url.as_str().into(),
            redis: self.redis_url.as_str().into(),
            prefix: self.prefix.clone(),
            lane: lane.to_string(),
            results_dir: self.results_dir.clone(),
            results: self.results.clone(),
            worker_id: format!("{}-{lane}-{}", self.prefix, self.workers.len()),
            idle_evict,
        };
        let handle = runtime.spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = warmlane_consumer::run(cfg, engine, shutdown).await {
                panic!("worker failed: {e}");
            }
        });
        self.workers.push((stop, Some(handle)));
        self.workers.len() - 1
    }

    /// Asks a worker to stop (as SIGTERM does) without waiting.
    pub fn request_stop(&self, index: usize) {
        let _ = self.workers[index].0.send(true);
    }

    /// Starts one worker per model on the real ONNX Runtime engine and waits until
    /// each lane is warm.
    pub async fn spawn_onnx_lanes(&mut self, models: &[&str]) {
        for model in models {
            let engine = warmlane_consumer::ort_engine::OrtEngine::new(self.settings.clone(), None)
                .unwrap_or_else(|e| panic!("{}", e.message));
            self.spawn_worker(model, Box::new(engine));
        }
        for model in models {
            self.wait_ready(model, 1).await;
        }
    }

    /// Stops a worker gracefully and waits for it.
    pub async fn stop_worker(&mut self, index: usize) {
        let (stop, handle) = &mut self.workers[index];
        let _ = stop.send(true);
        if let Some(handle) = handle.take() {
            handle.await.expect("worker task panicked");
        }
    }

    /// Fakes a warm lane worker that is busy for good (a stuck worker): its warm
    /// heartbeat, valid for `ttl_ms`, and a consumer of the lane queue holding one
    /// message it never acks, so the broker delivers it nothing more. Routing then
    /// counts the lane as ready, and requests routed to it wait in its queue. Returns
    /// once the producer's consumer count shows the consumer; keep the guard alive.
    pub async fn fake_warm_heartbeat(&self, lane: &str, ttl_ms: u64) -> BusyConsumer {
        let now = warmlane_shared::now_ms();
        let hb = warmlane_shared::Heartbeat {
            worker_id: format!("{}-fake-{lane}", self.prefix),
            lane: lane.to_string(),
            model: Some(lane.to_string()),
            state: warmlane_shared::WorkerState::Warm,
            pid: std::process::id(),
            started_at_ms: now,
            at_ms: now,
            loads: 1,
            tasks: 0,
            memory: None,
        };
        self.producer.store().heartbeat(&hb, ttl_ms).await.expect("heartbeat");
        let busy = BusyConsumer::start(&self.amqp_url, &self.topology().lane_queue(lane)).await;
        self.wait_consumers(lane, 1).await;
        busy
    }

    /// Waits until `lane` has `n` ready workers (polls Redis) and, for a dedicated
    /// lane, until the producer's cached consumer count shows `n` consumers, so that
    /// routing sends the lane's requests to it; fails after 60 s.
    pub async fn wait_ready(&self, lane: &str, n: u32) {
        let ttl = self.settings.lanes.heartbeat_ttl_ms;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = self.producer.store().lane_health(lane, true, ttl).await.expect("lane health");
            if h.warm_workers >= n {
                break;
            }
            assert!(Instant::now() < deadline, "lane {lane} did not get {n} ready workers within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if lane != warmlane_shared::settings::DEGRADED_LANE {
            self.wait_consumers(lane, n).await;
        }
    }

    /// Waits until the producer's cached consumer count of `lane` is at least `n`; fails after 60 s.
    pub async fn wait_consumers(&self, lane: &str, n: u32) {
        let consumers = self.producer.lane_consumers();
        let seen = consumers.seen_at_least(lane, n, Duration::from_secs(60)).await;
        assert!(seen, "lane {lane} did not show {n} consumers within 60 s (last: {:?})", consumers.get(lane));
    }

    /// Waits until the task's hash has `field` = `value`; panics after `secs`.
    pub async fn wait_task_field(&self, task_id: &str, field: &str, value: &str, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let task = self.producer.store().task(task_id).await.expect("redis");
            if task.get(field).map(String::as_str) == Some(value) {
                return;
            }
            assert!(Instant::now() < until, "task {task_id} never had {field} = {value}: {task:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a task's terminal reply (fails after `secs`).
    pub async fn reply(&self, task_id: &str, secs: u64) -> Reply {
        match self.producer.store().wait_reply(task_id, Duration::from_secs(secs)).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                panic!("no reply for {task_id} within {secs} s; task: {:?}", self.producer.store().task(task_id).await)
            }
            Err(e) => panic!("waiting for {task_id}: {e}"),
        }
    }

    /// Replies still waiting in a task's reply list.
    pub async fn replies_left(&self, task_id: &str) -> u32 {
        let mut c = self.producer.store().connection();
        c.llen(self.producer.store().keys().reply(task_id)).await.expect("LLEN")
    }

    /// Ready messages in a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        warmlane_infra::amqp::queue_depth(self.producer.publisher(), queue)
            .await
            .expect("broker")
            .unwrap_or_else(|| panic!("queue {queue} does not exist"))
    }

    /// Stops everything and deletes the prefix's queues, exchanges and keys.
    pub async fn cleanup(mut self) {
        let _ = self.stop.send(true);
        for (stop, _) in &self.workers {
            let _ = stop.send(true);
        }
        for (_, handle) in self.workers.drain(..) {
            if let Some(handle) = handle {
                let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
            }
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let topo = self.topology();
        let decl = topo.declarations(&self.settings);
        if let Ok(channel) = self.producer.publisher().channel_plain().await {
            for q in &decl.queues {
                let _ = channel.queue_delete(q.name.as_str().into(), QueueDeleteOptions::default()).await;
            }
            for ex in &decl.exchanges {
                let _ = channel.exchange_delete(ex.name.as_str().into(), ExchangeDeleteOptions::default()).await;
            }
        }
        let mut c = self.producer.store().connection();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query_async(&mut c).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = c.del(keys).await;
        }
        let _ = std::fs::remove_dir_all(&self.results_dir);
    }
}

/// A test double of a lane worker busy with a task: a consumer of the lane queue
/// (prefetch 1) holding one message of its own it never acks. The broker counts it
/// as a consumer and delivers it nothing more. Its connection closes when dropped
/// (the held message then returns to the queue); [`BusyConsumer::release`] acks it first.
pub struct BusyConsumer {
    connection: lapin::Connection,
    _consumer: lapin::Consumer,
    held: lapin::message::Delivery,
}

impl BusyConsumer {
    /// Consumes `queue` and takes one message published for the purpose.
    pub async fn start(amqp: &str, queue: &str) -> BusyConsumer {
        use futures_util::StreamExt;
        use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
        let connection =
            warmlane_infra::amqp::connect(&amqp.into(), Duration::from_secs(10)).await.expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel.basic_qos(1, BasicQosOptions::default()).await.expect("prefetch 1");
        let mut consumer = channel
            .basic_consume(queue.into(), "busy-test-double".into(), BasicConsumeOptions::default(), Default::default())
            .await
            .expect("consume the lane queue");
        channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), b"busy", Default::default())
            .await
            .expect("publish the held message");
        let held = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("the held message within 10 s")
            .expect("a delivery")
            .expect("a good delivery");
        BusyConsumer { connection, _consumer: consumer, held }
    }

    /// Acks the held message and closes the connection: the queue loses the consumer
    /// and is left as it was.
    pub async fn release(self) {
        self.held.ack(Default::default()).await.expect("ack the held message");
        self.connection.close(200, "released".into()).await.expect("close");
    }
}

/// The HTTP shim in front of a [`Fleet`], on a free port of 127.0.0.1.
pub struct Shim {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: JoinHandle<Result<(), warmlane_producer::http::ServeError>>,
}

impl Shim {
    /// Stops the shim and asserts that it ended cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.expect("server task").expect("the shim ends cleanly");
    }
}

impl Fleet {
    /// Serves the HTTP shim over this fleet's producer with `args`.
    pub async fn serve_http(&self, args: &warmlane_producer::http::ServeArgs) -> Shim {
        let config = warmlane_producer::http::HttpConfig::from_args(args).expect("config");
        self.serve_http_config(config).await
    }

    /// Serves the HTTP shim with checked settings (a test's own results store).
    pub async fn serve_http_config(&self, config: warmlane_producer::http::HttpConfig) -> Shim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(warmlane_producer::http::run(
            listener,
            self.producer.clone(),
            config,
            self.amqp_url.as_str().into(),
            shutdown,
        ));
        Shim { addr, stop, server }
    }
}
