//! Bad settings from the environment stop `warmlane-consumer` at start, with a
//! coded exit and a line naming the setting, before it touches a queue.

use std::path::Path;
use std::process::Command;

fn consumer(lane: &str, spin: &str) -> std::process::Output {
    consumer_with(lane, spin, &[])
}

fn consumer_with(lane: &str, spin: &str, env: &[(&str, &str)]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    // A consumer that got past its checks would retry the unreachable servers
    // below: `timeout` turns that into a failure (124) instead of a hung test.
    Command::new("timeout")
        .current_dir(root)
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_warmlane-consumer"))
        .args(["--lane", lane])
        .env("WARMLANE_ORT_SPIN", spin)
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("REDIS_URL", "redis://127.0.0.1:1/")
        .envs(env.iter().copied())
        .output()
        .expect("warmlane-consumer runs")
}

#[test]
fn a_bad_spin_setting_stops_every_kind_of_worker_at_start() {
    for lane in ["anisora", "degraded"] {
        let out = consumer(lane, "yes");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "lane {lane}: {stderr}");
        assert!(stderr.contains("WARMLANE_ORT_SPIN must be 0 or 1, not `yes`"), "lane {lane}: {stderr}");
    }
}

/// Boolean variables take 1/0 and true/false alike; logs (JSON or not) go to stderr.
#[test]
fn boolean_variables_accept_numbers_and_words() {
    for (value, json) in [("1", true), ("true", true), ("0", false), ("false", false)] {
        let out = consumer_with("anisora", "yes", &[("WARMLANE_JSON_LOGS", value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "WARMLANE_JSON_LOGS={value}: {stderr}");
        assert!(out.stdout.is_empty(), "WARMLANE_JSON_LOGS={value}: nothing on stdout");
        let first = stderr.lines().next().unwrap_or_default();
        assert_eq!(first.starts_with('{'), json, "WARMLANE_JSON_LOGS={value}: {first}");
    }
    let out = consumer_with("anisora", "0", &[("WARMLANE_JSON_LOGS", "maybe")]);
    assert_eq!(out.status.code(), Some(2), "an unknown word is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json-logs"), "names the flag");
}
