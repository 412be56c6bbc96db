//! TLS end to end, and no password in any output.
//!
//! The first test makes a CA and a `localhost` certificate (rcgen) and starts its own
//! RabbitMQ node with a TLS listener only and its own `redis-server --tls-port`, both
//! with a password. One request goes through `warmlane-producer serve` and a real
//! `warmlane-consumer` (ONNX Runtime on CPU, the `anisora` demo model) over
//! `amqps://` and `rediss://` with `AMQP_CA_FILE` / `REDIS_CA_FILE`, and is `done`.
//! Then a CA that did not sign the servers' certificate, and a host name the
//! certificate does not name (127.0.0.1), stop both binaries at start with one line
//! naming the service, the redacted URL and the cause.
//!
//! The second test runs both binaries against the shared servers with a password in
//! each URL where starting fails otherwise: authentication refused, nothing
//! listening, a malformed URL. Whatever they print, the password is not in it.
// Scripted scenarios read best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use warmlane_tests::servers::{consumer_binary, free_port, producer_binary};
use warmlane_tests::tls_servers::{Pki, TlsServers};
use warmlane_tests::watched::Watched;
use warmlane_tests::{amqp_url, prefix, redis_url, repo_root, request};

/// How a binary reaches the servers.
#[derive(Clone)]
struct Target {
    amqp_url: String,
    redis_url: String,
    amqp_ca: Option<PathBuf>,
    redis_ca: Option<PathBuf>,
}

/// The environment both binaries share: servers, CA files, prefix, no colours.
fn with_target(mut cmd: Command, target: &Target, prefix: &str, dir: &Path) -> Command {
    cmd.current_dir(repo_root())
        .env("AMQP_URL", &target.amqp_url)
        .env("REDIS_URL", &target.redis_url)
        .env("WARMLANE_PREFIX", prefix)
        .env("WARMLANE_RESULTS_DIR", dir.join("results"))
        .env("NO_COLOR", "1")
        .env_remove("WARMLANE_JSON_LOGS")
        .env_remove("WARMLANE_STATSD")
        .env_remove("RUST_LOG");
    for (var, ca) in [("AMQP_CA_FILE", &target.amqp_ca), ("REDIS_CA_FILE", &target.redis_ca)] {
        match ca {
            Some(path) => cmd.env(var, path),
            None => cmd.env_remove(var),
        };
    }
    cmd
}

fn start_shim(target: &Target, prefix: &str, dir: &Path, port: u16) -> Watched {
    let mut cmd = with_target(Command::new(producer_binary()), target, prefix, dir);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
    Watched::spawn(&mut cmd)
}

fn start_worker(target: &Target, prefix: &str, dir: &Path) -> Watched {
    let mut cmd = with_target(Command::new(consumer_binary()), target, prefix, dir);
    cmd.args(["--lane", "anisora"]).env("WARMLANE_WORKER_ID", format!("{prefix}-anisora"));
    Watched::spawn(&mut cmd)
}

/// One HTTP/1.0 request to the shim: status and body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the shim listens");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// The lines that report an error: `error: ...` from the producer, `ERROR` log lines.
fn error_lines(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.starts_with("error:") || l.contains(" ERROR ")).collect()
}

#[test]
fn a_request_runs_over_amqps_and_rediss_and_bad_certificates_stop_the_start() {
    let p = prefix("tls");
    let dir = repo_root().join("target/test-output").join(&p);
    let pki = Pki::generate(&dir.join("pki"));
    let servers = TlsServers::start(&dir, &pki);
    let password = servers.password.clone();
    let good = Target {
        amqp_url: servers.amqp_url("localhost"),
        redis_url: servers.redis_url("localhost"),
        amqp_ca: Some(pki.ca_file.clone()),
        redis_ca: Some(pki.ca_file.clone()),
    };

    // One request end to end: the shim and a worker process, both over TLS.
    let port = free_port();
    let mut shim = start_shim(&good, &p, &dir, port);
    assert!(shim.wait_line(|l| l.contains("HTTP shim listening"), Duration::from_secs(60)), "{}", shim.output());
    let mut worker = start_worker(&good, &p, &dir);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = http(port, "GET", "/lanes", None);
        assert_eq!(status, 200, "{body}");
        let lanes: Value = serde_json::from_str(&body).expect("JSON");
        if lanes["lanes"]["anisora"]["ready"] == true {
            break;
        }
        assert!(!worker.exited(), "the worker exited:\n{}", worker.output());
        assert!(Instant::now() < deadline, "the anisora lane is not ready after 2 minutes:\n{}", worker.output());
        std::thread::sleep(Duration::from_millis(200));
    }
    let task_id = format!("{p}-1");
    let (status, body) = http(port, "POST", "/generate", Some(&request(&task_id, "anisora")));
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let task = loop {
        let (status, body) = http(port, "GET", &format!("/tasks/{task_id}?wait=20"), None);
        assert_eq!(status, 200, "{body}");
        let task: Value = serde_json::from_str(&body).expect("JSON");
        if task["terminal"] == true {
            break task;
        }
        assert!(Instant::now() < deadline, "task {task_id} not done after 2 minutes: {task}");
    };
    assert_eq!(task["status"], "done", "{task}\nworker:\n{}", worker.output());
    for (name, process) in [("shim", &shim), ("worker", &worker)] {
        assert!(!process.output().contains(&password), "the {name} printed the password:\n{}", process.output());
    }
    drop((shim, worker));

    // A wrong CA or host name: each binary exits at once with one line.
    let by_ip = |t: &Target, amqp: bool| Target {
        amqp_url: if amqp { servers.amqp_url("127.0.0.1") } else { t.amqp_url.clone() },
        redis_url: if amqp { t.redis_url.clone() } else { servers.redis_url("127.0.0.1") },
        ..t.clone()
    };
    let amqp_at =
        |host: &str| format!("cannot connect to RabbitMQ at amqps://warmlane:***@{host}:{}/%2f: ", servers.rabbit.port);
    let redis_at = |host: &str| format!("cannot connect to Redis at rediss://:***@{host}:{}/: ", servers.redis.port);
    let cases = [
        (
            "AMQP, wrong CA",
            Target { amqp_ca: Some(pki.other_ca_file.clone()), ..good.clone() },
            amqp_at("localhost"),
            "certificate not trusted",
        ),
        (
            "Redis, wrong CA",
            Target { redis_ca: Some(pki.other_ca_file.clone()), ..good.clone() },
            redis_at("localhost"),
            "certificate not trusted",
        ),
        ("AMQP, no CA file", Target { amqp_ca: None, ..good.clone() }, amqp_at("localhost"), "certificate not trusted"),
        ("AMQP, by IP", by_ip(&good, true), amqp_at("127.0.0.1"), "host name mismatch"),
        ("Redis, by IP", by_ip(&good, false), redis_at("127.0.0.1"), "host name mismatch"),
    ];
    let mut runs = vec![];
    for (name, target, at, cause) in &cases {
        runs.push((format!("serve, {name}"), start_shim(target, &p, &dir, free_port()), at, *cause));
        runs.push((format!("worker, {name}"), start_worker(target, &p, &dir), at, *cause));
    }
    for (name, mut process, at, cause) in runs {
        let status = process.wait_exit(Duration::from_secs(30));
        let output = process.output();
        assert!(status.is_some_and(|s| !s.success()), "{name}: must exit non-zero at once ({status:?}):\n{output}");
        let errors = error_lines(&output);
        assert_eq!(errors.len(), 1, "{name}: one error line:\n{output}");
        let expected = format!("{at}{cause}");
        assert!(errors[0].contains(&expected), "{name}: expected `{expected}` in:\n{output}");
        assert!(!output.contains(&password), "{name}: the password was printed:\n{output}");
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starting with a password in each URL, where the start fails (or waits) for another
/// reason than TLS: the URL is printed, its password never.
#[test]
fn no_password_is_printed_when_a_start_fails() {
    let p = prefix("creds");
    let dir = repo_root().join("target/test-output").join(&p);
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let (amqp, redis) = (amqp_url(), redis_url());
    let nothing = free_port();
    let cases = [
        ("RabbitMQ refuses the login", format!("amqp://guest:{password}@127.0.0.1:5672/%2f"), redis.clone()),
        ("Redis refuses the login", amqp.clone(), format!("redis://warmlane:{password}@127.0.0.1:6379/")),
        ("no RabbitMQ there", format!("amqp://guest:{password}@127.0.0.1:{nothing}/%2f"), redis.clone()),
        ("no Redis there", amqp.clone(), format!("redis://:{password}@127.0.0.1:{nothing}/")),
        ("a malformed AMQP URL", format!("amqp://guest:{password}@127.0.0.1:port/%2f"), redis.clone()),
        ("a malformed Redis URL", amqp.clone(), format!("redis://:{password}@127.0.0.1:port/")),
        ("an AMQP URL without a scheme", format!("guest:{password}@127.0.0.1:5672"), redis.clone()),
    ];
    let mut runs = vec![];
    for (name, amqp_url, redis_url) in cases {
        let target = Target { amqp_url, redis_url, amqp_ca: None, redis_ca: None };
        runs.push((format!("serve, {name}"), start_shim(&target, &p, &dir, free_port())));
        runs.push((format!("worker, {name}"), start_worker(&target, &p, &dir)));
    }
    for (name, mut process) in runs {
        // Services that wait for a server print the failure on every try: the first
        // one is enough. The URL must be in it, redacted.
        let printed = process.wait_line(|l| l.contains(":***@"), Duration::from_secs(60));
        let output = process.output();
        assert!(printed, "{name}: no line names the redacted URL:\n{output}");
        assert!(!output.contains(&password), "{name}: the password was printed:\n{output}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
