//! `warmlane-producer serve` started before Redis waits for it, with a log line per
//! try, and serves once Redis is up (under compose the shim may start first).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use warmlane_tests::servers::{free_port, producer_binary, RedisServer};
use warmlane_tests::{amqp_url, prefix, repo_root};

/// Kills the child when the test ends, whatever happens.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next stderr line containing `needle`, within `limit`.
fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?} within {limit:?}: {e}"),
        }
    }
}

/// The child's stderr, line by line, read on a thread of its own.
fn stderr_lines(child: &mut Killed) -> mpsc::Receiver<String> {
    let stderr = child.0.stderr.take().expect("stderr piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

fn get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the shim listens");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[test]
fn serve_waits_for_redis_then_serves() {
    let dir = repo_root().join("target/test-output").join(prefix("startup"));
    let mut redis = RedisServer::reserve(&dir);
    let port = free_port();
    let child = Command::new(producer_binary())
        .current_dir(repo_root())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--prefix", &prefix("startup")])
        .env("AMQP_URL", amqp_url())
        .env("REDIS_URL", redis.url())
        .env("WARMLANE_RESULTS_DIR", &dir)
        .env_remove("WARMLANE_JSON_LOGS")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warmlane-producer starts");
    let mut child = Killed(child);
    let lines = stderr_lines(&mut child);

    let retrying = wait_line(&lines, "not reachable; retrying", Duration::from_secs(30));
    assert!(retrying.contains("Redis"), "the line names what it waits for: {retrying}");
    assert!(child.0.try_wait().expect("status").is_none(), "serve keeps waiting instead of exiting");
    redis.spawn();
    wait_line(&lines, "HTTP shim listening", Duration::from_secs(60));
    let health = get(port, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `warmlane-consumer --lane` naming no lane is refused at once, in one line, before
/// ONNX Runtime loads or anything connects (the servers given here do not exist).
#[test]
fn a_worker_for_an_unknown_lane_is_refused_before_anything_loads() {
    let dead = format!("127.0.0.1:{}", free_port());
    let out = Command::new(warmlane_tests::servers::consumer_binary())
        .current_dir(repo_root())
        .args(["--lane", "no-such-model"])
        .env("AMQP_URL", format!("amqp://guest:guest@{dead}/%2f"))
        .env("REDIS_URL", format!("redis://{dead}/"))
        .env("NO_COLOR", "1")
        .env_remove("WARMLANE_JSON_LOGS")
        .output()
        .expect("warmlane-consumer runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("lane `no-such-model` is not `degraded` nor a model"), "{stderr}");
    assert!(!stderr.contains("ONNX Runtime") && !stderr.contains("memory budget"), "nothing loaded first: {stderr}");
}

/// `serve` without API keys on an address other hosts can reach is refused with one
/// line; `--allow-anonymous` is the explicit way out, and loopback is always allowed
/// (the test above).
#[test]
fn serve_refuses_to_be_open_to_the_network_without_keys() {
    let dir = repo_root().join("target/test-output").join(prefix("startup-open"));
    let run = |extra: &[&str], port: u16| {
        let mut cmd = Command::new(producer_binary());
        cmd.current_dir(repo_root())
            .args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--prefix", &prefix("startup-open")])
            .args(extra)
            .env("AMQP_URL", amqp_url())
            .env("REDIS_URL", warmlane_tests::redis_url())
            .env("WARMLANE_RESULTS_DIR", &dir)
            .env_remove("WARMLANE_API_KEYS")
            .env_remove("WARMLANE_ALLOW_ANONYMOUS")
            .env_remove("WARMLANE_JSON_LOGS")
            .env("NO_COLOR", "1");
        cmd
    };
    let port = free_port();
    let out = run(&[], port).stdout(Stdio::null()).output().expect("warmlane-producer runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not serve: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:") || l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("refusing to serve without API keys on 0.0.0.0:{port}")), "{stderr}");
    assert!(errors[0].contains("--allow-anonymous"), "the line says the way out: {stderr}");

    let port = free_port();
    let child = run(&["--allow-anonymous"], port).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("starts");
    let mut child = Killed(child);
    let lines = stderr_lines(&mut child);
    wait_line(&lines, "HTTP shim listening", Duration::from_secs(60));
    assert!(get(port, "/health").starts_with("HTTP/1.1 200"), "served with --allow-anonymous");
    let _ = std::fs::remove_dir_all(&dir);
}
