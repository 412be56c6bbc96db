//! `warmlane-producer submit --wait` in scripts and for people: on a pipe, stdout
//! carries exactly one JSON document (the terminal reply) and the logs go to stderr
//! without colour; on a pseudo-terminal a progress line is drawn while the task runs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use warmlane_tests::engines::{Gate, GateEngine};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::servers::producer_binary;
use warmlane_tests::{amqp_url, prefix, redis_url, repo_root, request, settings_with};

/// Writes a request for `model` to a file the command reads.
fn request_file(fleet: &Fleet, id: &str, model: &str) -> std::path::PathBuf {
    let path = fleet.results_dir.join(format!("{id}.json"));
    std::fs::create_dir_all(&fleet.results_dir).expect("results dir");
    std::fs::write(&path, request(id, model).to_string()).expect("request file");
    path
}

fn producer(prefix: &str) -> Command {
    with_env(Command::new(producer_binary()), prefix)
}

/// `line` on a pseudo-terminal: `script` runs it there and copies what it draws to stdout.
fn on_terminal(prefix: &str, line: &str) -> Command {
    let mut script = Command::new("script");
    script.args(["-qfec", line, "/dev/null"]);
    with_env(script, prefix)
}

fn with_env(mut cmd: Command, prefix: &str) -> Command {
    cmd.current_dir(repo_root())
        .env("AMQP_URL", amqp_url())
        .env("REDIS_URL", redis_url())
        .env("WARMLANE_PREFIX", prefix)
        .env_remove("WARMLANE_JSON_LOGS")
        .env_remove("NO_COLOR");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_pipe_submit_wait_prints_exactly_the_reply() {
    let p = prefix("cli-pipe");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.spawn_worker("anisora", Box::new(GateEngine::open()));
    fleet.wait_ready("anisora", 1).await;
    let id = format!("{p}-1");
    let file = request_file(&fleet, &id, "anisora");
    let mut cmd = producer(&p);
    cmd.args(["submit", &file.display().to_string(), "--wait", "60"]);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let docs: Vec<serde_json::Value> =
        serde_json::Deserializer::from_str(&stdout).into_iter().collect::<Result<_, _>>().expect("stdout is JSON");
    assert_eq!(docs.len(), 1, "exactly one JSON document on stdout: {stdout}");
    assert_eq!((docs[0]["task_id"].as_str(), docs[0]["status"].as_str()), (Some(id.as_str()), Some("done")));
    assert!(stderr.contains("admitted; waiting for the reply"), "the admission is logged on stderr: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour when stderr is not a terminal: {stderr:?}");
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_submit_wait_shows_progress_then_the_reply() {
    let p = prefix("cli-tty");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    let gate = Gate::default();
    fleet.spawn_worker("anisora", Box::new(GateEngine::new(gate.clone())));
    fleet.wait_ready("anisora", 1).await;
    let id = format!("{p}-1");
    let file = request_file(&fleet, &id, "anisora");
    let line = format!("{} submit {} --wait 60", producer_binary().display(), file.display());
    let mut child = on_terminal(&p, &line).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("script runs");
    let mut stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).to_string()).is_err() {
                break;
            }
        }
    });
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !seen.contains("processing (denoising) on anisora") {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&chunk),
                Err(e) => panic!("no progress line on the terminal within 30 s ({e}): {seen:?}"),
            }
        }
        (seen, rx)
    });
    gate.wait_entered(1).await;
    let (mut seen, rx) = seen.await.expect("join");
    assert!(seen.contains("steps"), "the bar shows steps: {seen:?}");
    gate.open();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("waits");
    seen.extend(rx.try_iter());
    assert!(status.success(), "{seen:?}");
    assert!(seen.contains(&format!("\"task_id\":\"{id}\"")) && seen.contains("\"status\":\"done\""), "{seen:?}");
    fleet.cleanup().await;
}
