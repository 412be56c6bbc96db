//! Chaos: a steady stream of requests while a lane worker is SIGKILLed mid-inference
//! and restarted, RabbitMQ is restarted and Redis is restarted. At the end every
//! submitted task has exactly one terminal reply. The test owns its RabbitMQ node
//! and its Redis server, so other tests are not disturbed.
// A scripted scenario reads best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

use redis::AsyncCommands;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use warmlane_producer::ProducerError;
use warmlane_shared::{Reply, ReplyStatus};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::servers::{consumer_binary, RabbitNode, RedisServer};
use warmlane_tests::{prefix, repo_root, request};

struct Worker {
    lane: &'static str,
    child: Child,
}

/// A failing test still leaves no consumer process behind.
impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_worker(
    lane: &'static str,
    amqp: &str,
    redis: &str,
    prefix: &str,
    settings: &std::path::Path,
    results: &std::path::Path,
    n: u32,
) -> Worker {
    let child = Command::new(consumer_binary())
        .args(["--lane", lane])
        .env("AMQP_URL", amqp)
        .env("REDIS_URL", redis)
        .env("WARMLANE_PREFIX", prefix)
        .env("WARMLANE_SETTINGS", settings)
        .env("WARMLANE_RESULTS_DIR", results)
        .env("WARMLANE_WORKER_ID", format!("{prefix}-{lane}-{n}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start warmlane-consumer");
    Worker { lane, child }
}

/// Settings written to disk for the worker processes: shortened limits, absolute model paths.
fn write_settings(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("inference_settings.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["lanes"]["lane_wait_ms"] = 8_000.into();
    json["lanes"]["heartbeat_interval_ms"] = 250.into();
    json["lanes"]["heartbeat_ttl_ms"] = 2_000.into();
    json["degraded"]["max_wait_ms"] = 10_000.into();
    // The kill is timed by a task reading `processing`: claim every run before it starts.
    json["lanes"]["late_claim_ms"] = 0.into();
    let models: Vec<String> = json["models"].as_object().unwrap().keys().cloned().collect();
    for model in models {
        let abs = repo_root().join("models").join(&model).canonicalize().unwrap();
        json["models"][&model]["pipeline"]["dir"] = abs.display().to_string().into();
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("inference_settings.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_gets_exactly_one_reply_through_kills_and_restarts() {
    let p = prefix("chaos");
    let dir = repo_root().join("target/test-output").join(&p);
    // The servers' data lives beside the fleet's results directory, which
    // `Fleet::cleanup` removes while the node still runs.
    let servers = repo_root().join("target/test-output").join(format!("{p}-servers"));
    let rabbit = RabbitNode::start(&servers.join("rabbit"));
    let mut redis_server = RedisServer::start(&servers.join("redis"));
    let settings_path = write_settings(&dir);
    let settings = std::sync::Arc::new(warmlane_shared::Settings::load(&settings_path).unwrap());
    let mut fleet = Fleet::start_on(&p, settings.clone(), &rabbit.url(), &redis_server.url()).await;
    fleet.spawn_reaper();
    let results = dir.join("results");
    let mut workers: Vec<Worker> = ["anisora", "phr00t", "degraded"]
        .into_iter()
        .map(|lane| spawn_worker(lane, &rabbit.url(), &redis_server.url(), &p, &settings_path, &results, 0))
        .collect();
    fleet.wait_ready("anisora", 1).await;
    fleet.wait_ready("phr00t", 1).await;

    let mut submitted: Vec<String> = vec![];
    let mut unknown: Vec<String> = vec![];
    let (mut killed, mut broker_restarted, mut redis_restarted) = (false, false, false);
    let mut n = 0;
    while submitted.len() < 60 {
        let model = if n % 2 == 0 { "anisora" } else { "phr00t" };
        let id = format!("{p}-{n}");
        n += 1;
        let mut body = request(&id, model);
        body["width"] = 128.into();
        body["height"] = 128.into();
        body["frames"] = 8.into();
        match fleet.producer.submit_json(&body).await {
            Ok(_) => submitted.push(id),
            // Not accepted: the caller was told so. It may still have been admitted.
            Err(ProducerError::Rejected(r)) => panic!("{id} refused: {r}"),
            Err(_) => {
                unknown.push(id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if submitted.len() == 15 && !killed {
            // Kill the anisora worker in the middle of an inference.
            let deadline = Instant::now() + Duration::from_secs(60);
            'wait: loop {
                for id in &submitted {
                    let t = fleet.producer.store().task(id).await.unwrap_or_default();
                    if t.get("status").map(String::as_str) == Some("processing")
                        && t.get("lane").map(String::as_str) == Some("anisora")
                    {
                        break 'wait;
                    }
                }
                assert!(Instant::now() < deadline, "no anisora task was ever seen processing");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let i = workers.iter().position(|w| w.lane == "anisora").unwrap();
            let mut victim = workers.remove(i);
            let _ = Command::new("kill").args(["-9", &victim.child.id().to_string()]).status();
            let _ = victim.child.wait();
            workers.push(spawn_worker("anisora", &rabbit.url(), &redis_server.url(), &p, &settings_path, &results, 1));
            killed = true;
        }
        if submitted.len() == 30 && !broker_restarted {
            rabbit.restart();
            broker_restarted = true;
        }
        if submitted.len() == 45 && !redis_restarted {
            redis_server.restart();
            redis_restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every task, accepted or of unknown outcome, ends with exactly one reply.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut c = fleet.producer.store().connection();
    let keys = fleet.producer.store().keys().clone();
    let (mut done, mut coded) = (0, 0);
    for id in submitted.iter().chain(unknown.iter()) {
        let replies: Vec<Vec<u8>> = loop {
            let replies: Vec<Vec<u8>> = c.lrange(keys.reply(id), 0, -1).await.unwrap_or_default();
            let status: Option<String> = c.hget(keys.task(id), "status").await.unwrap_or(None);
            if !replies.is_empty() || (status.is_none() && unknown.contains(id)) {
                break replies;
            }
            assert!(
                Instant::now() < deadline,
                "{id} has no terminal reply; task {:?}",
                fleet.producer.store().task(id).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if replies.is_empty() {
            continue; // never admitted: the caller was told
        }
        assert_eq!(replies.len(), 1, "{id} was answered {} times", replies.len());
        let reply = Reply::from_msgpack(&replies[0]).unwrap();
        assert!(reply.status == ReplyStatus::Done || reply.code.is_some(), "{id}: a failure without a code");
        if submitted.contains(id) {
            match reply.status {
                ReplyStatus::Done => done += 1,
                _ => coded += 1,
            }
        }
    }
    let answered_submitted = submitted.len();
    eprintln!(
        "chaos: {answered_submitted} accepted, {} of unknown outcome; {done} done, {coded} coded failures",
        unknown.len()
    );
    assert_eq!(done + coded, answered_submitted, "done + coded failures = accepted");
    assert!(done > 0);
    for mut w in workers {
        let _ = Command::new("kill").arg(w.child.id().to_string()).status();
        let _ = w.child.wait();
    }
    fleet.cleanup().await;
    drop(rabbit);
    drop(redis_server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&servers);
}
