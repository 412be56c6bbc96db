//! `warmlane-producer cancel` against a real fleet (RabbitMQ, Redis, a lane worker):
//! a pending task is answered `cancelled` at once and is skipped when delivered; a
//! running one stops at its next step and is answered `cancelled`, with no result
//! left behind; cancels of finished, unknown or malformed ids fail with one line on
//! stderr and nothing on stdout.

use std::process::{Command, Output};
use warmlane_shared::ErrorCode;
use warmlane_tests::engines::{Gate, GateEngine};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::servers::producer_binary;
use warmlane_tests::{amqp_url, prefix, redis_url, repo_root, request, settings_with};

async fn cli(prefix: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(producer_binary());
    cmd.current_dir(repo_root())
        .env("AMQP_URL", amqp_url())
        .env("REDIS_URL", redis_url())
        .env("WARMLANE_PREFIX", prefix)
        .env_remove("WARMLANE_JSON_LOGS")
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("the CLI runs")
}

/// The one JSON document a successful command printed.
fn document(out: &Output) -> serde_json::Value {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let docs: Vec<serde_json::Value> =
        serde_json::Deserializer::from_str(&stdout).into_iter().collect::<Result<_, _>>().expect("stdout is JSON");
    assert_eq!(docs.len(), 1, "one document on stdout: {stdout}");
    docs.into_iter().next().unwrap_or_default()
}

/// A failed command: non-zero exit, nothing on stdout, one `error:` line saying `what`.
fn refused(out: &Output, what: &str) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "it should fail: {stdout}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "the error once: {stderr}");
    assert!(errors[0].contains(what), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_pending_and_running_tasks_from_the_cli() {
    let p = prefix("cancel-cli");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let gate = Gate::default();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    fleet.wait_ready("anisora", 1).await;
    let (a, b, c) = (format!("{p}-a"), format!("{p}-b"), format!("{p}-c"));

    // `a` runs and holds at the gate; `b` waits behind it in the lane queue.
    fleet.producer.submit_json(&request(&a, "anisora")).await.expect("admit a");
    gate.wait_entered(1).await;
    fleet.producer.submit_json(&request(&b, "anisora")).await.expect("admit b");
    fleet.wait_task_field(&a, "status", "processing", 10).await;

    let pending = document(&cli(&p, &["cancel", &b]).await);
    assert_eq!((pending["status"].as_str(), pending["error"]["code"].as_str()), (Some("failed"), Some("cancelled")));
    assert_eq!(fleet.reply(&b, 5).await.code, Some(ErrorCode::Cancelled), "answered at once, while `a` still runs");

    let running = document(&cli(&p, &["cancel", &a]).await);
    assert_eq!((running["status"].as_str(), running["cancel_requested"].as_bool()), (Some("processing"), Some(true)));
    gate.open();
    let reply = fleet.reply(&a, 10).await;
    assert_eq!(reply.code, Some(ErrorCode::Cancelled), "{reply:?}");
    assert!(!fleet.results_dir.join(format!("{a}.gif")).exists(), "no result is left for a cancelled run");

    // `b` is delivered next and skipped: `c` behind it is the only other run.
    fleet.producer.submit_json(&request(&c, "anisora")).await.expect("admit c");
    assert_eq!(fleet.reply(&c, 10).await.status, warmlane_shared::ReplyStatus::Done);
    assert_eq!(gate.entered(), 2, "the cancelled pending task never reached the engine");
    assert_eq!(fleet.replies_left(&b).await, 0, "exactly one terminal reply for b");
    assert_eq!(fleet.depth(&fleet.topology().lane_queue("anisora")).await, 0, "nothing left queued");

    refused(&cli(&p, &["cancel", &c]).await, "has finished");
    refused(&cli(&p, &["cancel", "no-such-task"]).await, "no task `no-such-task`");
    refused(&cli(&p, &["cancel", "not a task id"]).await, "is not a task id");
    fleet.cleanup().await;
}

/// A worker that starts after a cancel was announced (it missed the announcement)
/// catches up from the cancelled set before it starts first deliveries unclaimed, and
/// skips the cancelled task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_after_the_cancel_still_skips_the_task() {
    let p = prefix("cancel-late");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    // A warm worker busy with another task: the request is routed to the lane and waits there.
    let busy = fleet.fake_warm_heartbeat("anisora", 30_000).await;
    let (d, e) = (format!("{p}-d"), format!("{p}-e"));
    let admitted = fleet.producer.submit_json(&request(&d, "anisora")).await.expect("admit d");
    assert_eq!(admitted.lane, "anisora", "queued on the lane");
    let cancelled = document(&cli(&p, &["cancel", &d]).await);
    assert_eq!(cancelled["error"]["code"], "cancelled");
    assert_eq!(fleet.reply(&d, 5).await.code, Some(ErrorCode::Cancelled));

    let gate = Gate::default();
    gate.open();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    // The real worker consumes beside the busy one, which then goes: the lane never looks empty.
    fleet.wait_ready("anisora", 2).await;
    busy.release().await;
    fleet.producer.submit_json(&request(&e, "anisora")).await.expect("admit e");
    assert_eq!(fleet.reply(&e, 10).await.status, warmlane_shared::ReplyStatus::Done);
    assert_eq!(gate.entered(), 1, "only `e` reached the engine; the cancelled `d` was skipped");
    assert_eq!(fleet.replies_left(&d).await, 0, "exactly one terminal reply for d");
    fleet.cleanup().await;
}
