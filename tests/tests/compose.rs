//! `docker-compose.yml` and `docker-compose.cpu.yml` use the binaries' real flags
//! and environment variables, and describe the fleet the operations issue asks for.
//!
//! Every service's `command` is parsed by the binary's own clap definition
//! (`Cli::try_parse_from`, `Args::try_parse_from`), so a renamed or removed flag
//! fails here, not at `docker compose up`. Every `WARMLANE_*`, `AMQP_URL` and
//! `REDIS_URL` variable must be the `env` of some argument of that binary (top
//! level or the subcommand the service runs). No server is needed.

use clap::{CommandFactory, Parser};
use serde_json::Value;
use std::collections::BTreeSet;
use warmlane_consumer::args::Args;
use warmlane_producer::cli::Cli;
use warmlane_tests::repo_root;

/// Variables `.env` must set: compose refuses to start without them.
const REQUIRED: &[&str] = &[
    "WARMLANE_API_KEYS",
    "WARMLANE_ADMIN_KEY",
    "WARMLANE_REDIS_PASSWORD",
    "WARMLANE_S3_ACCESS_KEY",
    "WARMLANE_S3_SECRET_KEY",
    "WARMLANE_RABBITMQ_COOKIE",
];

/// The file combinations an operator may start with.
const COMPOSE_SETS: &[&[&str]] = &[
    &["docker-compose.yml"],
    &["docker-compose.yml", "docker-compose.cpu.yml"],
    &["docker-compose.yml", "docker-compose.tls.yml"],
    &["docker-compose.yml", "docker-compose.s3.yml"],
    &["docker-compose.yml", "docker-compose.cluster.yml"],
];

/// Variables of ours that `Settings::load` reads rather than a flag.
const SETTINGS_ENV: &[&str] = &[warmlane_shared::settings::broker::QUEUE_TYPE_ENV];

/// The cluster override (docker-compose.cluster.yml).
#[path = "compose/cluster.rs"]
mod cluster_override;

/// Variables the services may set that are not flags of ours.
const FOREIGN_ENV: &[&str] = &[
    "RUST_LOG",
    "RUST_BACKTRACE",
    "ORT_DYLIB_PATH",
    "LD_LIBRARY_PATH",
    "NVIDIA_VISIBLE_DEVICES",
    // The S3 results store's standard configuration (object_store reads them).
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

fn load(file: &str) -> Value {
    let path = repo_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut yaml: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    yaml.apply_merge().unwrap_or_else(|e| panic!("{file}: merge keys: {e}"));
    serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Compose's override rule for what this test reads: maps merge key by key,
/// `ports` lists add up, `volumes` lists too except that a mount replaces the one
/// with its container path, the rest (lists, scalars) is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(Value::Array(existing)) if k == "volumes" || k == "ports" => {
                        if k == "volumes" {
                            let target = |m: &Value| m.as_str().and_then(|m| m.split(':').nth(1)).map(str::to_string);
                            let replaced: Vec<_> = v.as_array().into_iter().flatten().filter_map(target).collect();
                            existing.retain(|m| target(m).is_none_or(|t| !replaced.contains(&t)));
                        }
                        existing.extend(v.as_array().into_iter().flatten().cloned());
                    }
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Services that start without a profile.
fn active(compose: &Value) -> Vec<(String, Value)> {
    compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, s)| s["profiles"].as_array().is_none_or(|p| p.is_empty()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn command(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Array(a) => a.iter().map(|v| v.as_str().expect("command items are strings").to_string()).collect(),
        Value::Null => vec![],
        other => panic!("write commands as lists, not {other}"),
    }
}

/// `env` names of a clap command: its own arguments and, when given, one subcommand path's.
fn env_names(cmd: &clap::Command, path: &[&str]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> =
        cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
    if let Some((first, rest)) = path.split_first() {
        if let Some(sub) = cmd.find_subcommand(first) {
            names.extend(env_names(sub, rest));
        }
    }
    names
}

fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|v| {
                let s = v.as_str().expect("KEY=VALUE");
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => vec![],
    }
}

/// Checks one service against the binaries; returns (binary, subcommand path) it runs.
fn check_service(name: &str, service: &Value) -> Option<(String, Vec<String>)> {
    let argv = command(service);
    let binary = argv.first()?.clone();
    let (allowed_env, path): (BTreeSet<String>, Vec<String>) = match binary.as_str() {
        "warmlane-producer" => {
            Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("service {name}: `{}` does not parse:\n{e}", argv.join(" ")));
            let matches = Cli::command().try_get_matches_from(&argv).expect("parsed above");
            let sub: Vec<String> = matches.subcommand_name().map(str::to_string).into_iter().collect();
            let refs: Vec<&str> = sub.iter().map(String::as_str).collect();
            (env_names(&Cli::command(), &refs), sub)
        }
        "warmlane-consumer" => {
            let args = Args::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("service {name}: `{}` does not parse:\n{e}", argv.join(" ")));
            assert!(args.lane.is_some(), "service {name}: a worker needs --lane");
            (env_names(&Args::command(), &[]), vec![])
        }
        _ => return None,
    };
    for (key, _) in environment(service) {
        let ours = ["WARMLANE_", "AMQP_", "REDIS_"].iter().any(|p| key.starts_with(p));
        if ours {
            assert!(
                allowed_env.contains(&key) || SETTINGS_ENV.contains(&key.as_str()),
                "service {name}: {binary} {path:?} has no argument with env {key}; known: {allowed_env:?}"
            );
        } else {
            assert!(FOREIGN_ENV.contains(&key.as_str()), "service {name}: unexpected variable {key}");
        }
    }
    Some((binary, path))
}

fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1).cloned())
}

fn settings_lanes() -> Vec<String> {
    let s = warmlane_shared::Settings::load(&repo_root().join("inference_settings.json")).expect("settings");
    s.lane_models().map(str::to_string).collect()
}

/// The worker fleet of a compose file: (lane, provider, service) per worker.
fn workers(compose: &Value) -> Vec<(String, String, Value)> {
    active(compose)
        .into_iter()
        .filter_map(|(name, s)| {
            let argv = command(&s);
            (argv.first().map(String::as_str) == Some("warmlane-consumer")).then(|| {
                let lane = flag_value(&argv, "--lane").unwrap_or_else(|| panic!("{name}: no --lane"));
                let provider = flag_value(&argv, "--provider").unwrap_or_else(|| panic!("{name}: no --provider"));
                (lane, provider, s)
            })
        })
        .collect()
}

/// A worker's healthcheck probes `/health` on its metrics listener; a GPU worker names
/// its card (`device_ids`, not `count`) and passes a memory budget the flag accepts.
fn check_worker_safety(lane: &str, s: &Value, gpu: bool) {
    let env: std::collections::BTreeMap<String, String> = environment(s).into_iter().collect();
    let addr = env.get("WARMLANE_METRICS_ADDR").unwrap_or_else(|| panic!("worker of {lane}: WARMLANE_METRICS_ADDR"));
    let port = addr.rsplit_once(':').map(|(_, p)| p).expect("host:port");
    let probe = s["healthcheck"]["test"].to_string();
    assert!(
        probe.contains(&format!(":{port}/health")),
        "worker of {lane}: healthcheck {probe} should probe :{port}/health"
    );
    if !gpu {
        return;
    }
    let budget = env.get("WARMLANE_MEMORY_BUDGET_BYTES").unwrap_or_else(|| panic!("worker of {lane}: a memory budget"));
    let default = budget.split_once(":-").map_or(budget.as_str(), |(_, d)| d.trim_end_matches('}'));
    assert!(
        default.parse::<warmlane_consumer::args::BudgetArg>().is_ok(),
        "worker of {lane}: budget default {default}"
    );
    for d in s["deploy"]["resources"]["reservations"]["devices"].as_array().expect("devices") {
        assert!(d["count"].is_null(), "worker of {lane}: name the card with device_ids, not count");
        let ids = d["device_ids"].as_array().unwrap_or_else(|| panic!("worker of {lane}: device_ids"));
        assert_eq!(ids.len(), 1, "worker of {lane}: one card");
    }
}

fn has_gpu_reservation(service: &Value) -> bool {
    service["deploy"]["resources"]["reservations"]["devices"].as_array().is_some_and(|d| {
        d.iter().any(|d| {
            d["driver"] == "nvidia" && d["capabilities"].as_array().is_some_and(|c| c.iter().any(|c| c == "gpu"))
        })
    })
}

fn check_fleet(compose: &Value, provider: &str) {
    let services = active(compose);
    let mut ran = BTreeSet::new();
    for (name, s) in &services {
        if let Some((binary, path)) = check_service(name, s) {
            ran.insert(format!("{binary} {}", path.join(" ")).trim().to_string());
        }
    }
    assert!(ran.contains("warmlane-producer serve"), "no service runs `warmlane-producer serve`: {ran:?}");
    let ws = workers(compose);
    for lane in settings_lanes() {
        assert_eq!(ws.iter().filter(|(l, _, _)| *l == lane).count(), 1, "one worker for the {lane} lane");
    }
    assert_eq!(ws.iter().filter(|(l, _, _)| l == "degraded").count(), 2, "two degraded workers (active + hot standby)");
    for (lane, p, s) in &ws {
        assert_eq!(p, provider, "worker of {lane}: --provider");
        assert_eq!(has_gpu_reservation(s), provider == "cuda", "worker of {lane}: NVIDIA device reservation iff cuda");
        check_worker_safety(lane, s, provider == "cuda");
        assert_eq!(s["init"], Value::Bool(true), "worker of {lane}: init: true so SIGTERM reaches the worker");
        for dep in ["rabbitmq", "redis"] {
            assert_eq!(s["depends_on"][dep]["condition"], "service_healthy", "worker of {lane} waits for {dep}");
        }
    }
    let by_name = |n: &str| {
        services.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no service {n}"))
    };
    for name in ["rabbitmq", "redis", "statsd-exporter", "prometheus", "grafana"] {
        for port in by_name(name)["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().unwrap_or_else(|| panic!("{name}: write ports as strings"));
            assert!(port.starts_with("127.0.0.1:"), "{name} publishes {port} on every interface; bind 127.0.0.1");
        }
    }
    let redis_command = command(&by_name("redis")).join(" ");
    assert!(
        redis_command.contains("--requirepass ${WARMLANE_REDIS_PASSWORD:?"),
        "Redis needs a password: {redis_command}"
    );
    for (name, s) in &services {
        for (k, v) in environment(s) {
            if k == "REDIS_URL" {
                assert!(v.contains(":${WARMLANE_REDIS_PASSWORD:?"), "{name}: REDIS_URL carries the required password");
            }
        }
    }
    let rabbit = by_name("rabbitmq");
    assert!(rabbit["image"].as_str().unwrap_or_default().starts_with("rabbitmq:3.13-management"));
    assert!(rabbit["healthcheck"]["test"].to_string().contains("rabbitmq-diagnostics"));
    assert!(rabbit["volumes"].to_string().contains("definitions.json"), "the broker loads the definitions");
    assert!(by_name("redis")["image"].as_str().unwrap_or_default().starts_with("redis:7"));
    assert!(by_name("redis")["healthcheck"]["test"].to_string().contains("redis-cli"));
    let producer = services
        .iter()
        .find(|(_, s)| command(s).get(1).map(String::as_str) == Some("serve"))
        .map(|(_, s)| s.clone())
        .expect("serve");
    assert!(producer["healthcheck"]["test"].to_string().contains("/health"), "the shim's health check probes /health");
    let env: std::collections::BTreeMap<String, String> = environment(&producer).into_iter().collect();
    for key in ["WARMLANE_API_KEYS", "WARMLANE_ADMIN_KEY"] {
        let v = env.get(key).unwrap_or_else(|| panic!("the shim sets {key}"));
        assert!(v.starts_with(&format!("${{{key}:?")), "{key} must be required (`${{{key}:?...}}`), not {v}");
    }
    let listen = flag_value(&command(&producer), "--listen").expect("serve --listen");
    assert!(listen.starts_with("0.0.0.0:"), "the shim must listen on all interfaces in its container, not {listen}");
    for dep in ["rabbitmq", "redis"] {
        assert_eq!(producer["depends_on"][dep]["condition"], "service_healthy", "the shim waits for {dep}");
    }
    for name in ["statsd-exporter", "prometheus", "grafana"] {
        by_name(name);
    }
}

#[test]
fn the_gpu_fleet_uses_real_flags_and_env() {
    check_fleet(&load("docker-compose.yml"), "cuda");
}

#[test]
fn the_cpu_override_replaces_every_gpu_worker() {
    let mut compose = load("docker-compose.yml");
    merge(&mut compose, &load("docker-compose.cpu.yml"));
    check_fleet(&compose, "cpu");
}

/// The services that run a warmlane binary: name, environment, definition.
fn warmlane_services(compose: &Value) -> Vec<(String, std::collections::BTreeMap<String, String>, Value)> {
    active(compose)
        .into_iter()
        .filter(|(_, s)| command(s).first().is_some_and(|b| b.starts_with("warmlane-")))
        .map(|(name, s)| (name, environment(&s).into_iter().collect(), s))
        .collect()
}

#[test]
fn the_tls_override_puts_every_connection_on_tls() {
    let mut compose = load("docker-compose.yml");
    merge(&mut compose, &load("docker-compose.tls.yml"));
    check_fleet(&compose, "cuda");
    let clients = warmlane_services(&compose);
    for (name, env, s) in &clients {
        assert!(env["AMQP_URL"].starts_with("amqps://"), "{name}: {}", env["AMQP_URL"]);
        assert!(env["REDIS_URL"].starts_with("rediss://"), "{name}: REDIS_URL is not rediss://");
        for key in ["AMQP_CA_FILE", "REDIS_CA_FILE"] {
            let path = env.get(key).unwrap_or_else(|| panic!("{name}: {key}"));
            let mounts = s["volumes"].to_string();
            assert!(mounts.contains(&format!("ca.pem:{path}:ro")), "{name}: {key}={path} is not mounted: {mounts}");
        }
    }
    assert_eq!(clients.len(), 6, "the shim and five workers");
    let by_name = |n: &str| active(&compose).into_iter().find(|(k, _)| k == n).map(|(_, v)| v).expect("service");
    let redis = command(&by_name("redis")).join(" ");
    assert!(redis.contains("--port 0 --tls-port 6380"), "Redis serves TLS only: {redis}");
    assert!(by_name("redis")["healthcheck"]["test"].to_string().contains("--tls"), "its healthcheck speaks TLS");
    assert!(by_name("rabbitmq")["volumes"].to_string().contains("tls.conf:/etc/rabbitmq/conf.d/"), "broker TLS config");
    for name in ["rabbitmq", "redis"] {
        for volume in by_name(name)["volumes"].as_array().into_iter().flatten() {
            let volume = volume.as_str().unwrap_or_default();
            assert!(!volume.contains("ca-key") && !volume.starts_with("./ops/tls/certs:"), "{name} mounts {volume}");
        }
    }
    let conf = std::fs::read_to_string(repo_root().join("ops/rabbitmq/tls.conf")).expect("tls.conf");
    for line in ["listeners.tcp = none", "listeners.ssl.default = 5671", "ssl_options.certfile"] {
        assert!(conf.lines().any(|l| l.starts_with(line)), "ops/rabbitmq/tls.conf lacks {line}");
    }
}

#[test]
fn the_s3_override_stores_every_result_in_the_bucket() {
    let mut compose = load("docker-compose.yml");
    merge(&mut compose, &load("docker-compose.s3.yml"));
    check_fleet(&compose, "cuda");
    let clients = warmlane_services(&compose);
    for (name, env, s) in &clients {
        let url = env.get("WARMLANE_RESULTS_URL").unwrap_or_else(|| panic!("{name}: WARMLANE_RESULTS_URL"));
        assert_eq!(url, "s3://warmlane-results/videos", "{name}");
        warmlane_infra::results::ResultsUrl::parse(url).unwrap_or_else(|e| panic!("{name}: {url}: {e}"));
        assert_eq!(env.get("AWS_ENDPOINT_URL").map(String::as_str), Some("http://minio:9000"), "{name}");
        assert!(env["AWS_SECRET_ACCESS_KEY"].starts_with("${WARMLANE_S3_SECRET_KEY:?"), "{name}: a required secret");
        assert_eq!(s["depends_on"]["minio-setup"]["condition"], "service_completed_successfully", "{name}");
    }
    assert_eq!(clients.len(), 6, "the shim and five workers");
    let setup = active(&compose).into_iter().find(|(k, _)| k == "minio-setup").map(|(_, v)| v).expect("minio-setup");
    let script = command(&serde_json::json!({ "command": setup["entrypoint"] })).join(" ");
    assert!(script.contains("mc mb --ignore-existing store/warmlane-results"), "{script}");
    assert!(script.contains("mc ilm import store/warmlane-results"), "the bucket gets a lifecycle rule: {script}");
    let rule = script.split('\'').nth(1).expect("the rule in single quotes");
    let rule: Value =
        serde_json::from_str(rule).unwrap_or_else(|e| panic!("the lifecycle rule is not JSON: {e}: {rule}"));
    assert_eq!(rule["Rules"][0]["Filter"]["Prefix"], "videos/", "the rule covers the prefix of WARMLANE_RESULTS_URL");
    assert_eq!(rule["Rules"][0]["Expiration"]["Days"], 1);
}

#[test]
fn env_names_resolve_through_clap() {
    // Guards the helper itself: a known variable of each binary is found.
    assert!(env_names(&Cli::command(), &[]).contains("AMQP_URL"));
    assert!(env_names(&Cli::command(), &["serve"]).contains("WARMLANE_HTTP_ADDR"));
    assert!(env_names(&Args::command(), &[]).contains("WARMLANE_LANE"));
}

#[test]
fn the_image_paths_the_services_use_exist_in_the_dockerfile() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let compose = load("docker-compose.yml");
    for (name, s) in active(&compose) {
        for (k, v) in environment(&s) {
            if k == "WARMLANE_SETTINGS" {
                assert!(dockerfile.contains(&v), "service {name}: {k}={v} is not a path the Dockerfile creates");
            }
        }
    }
    // The builder image carries the toolchain rust-toolchain.toml pins (major.minor).
    let toolchain = std::fs::read_to_string(repo_root().join("rust-toolchain.toml")).expect("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("a pinned channel");
    let minor: Vec<&str> = channel.split('.').take(2).collect();
    let builder = format!("rust:{}-bookworm", minor.join("."));
    for needle in [
        builder.as_str(),
        "debian:bookworm-slim",
        "ORT_DYLIB_PATH",
        "fetch-onnxruntime.sh",
        "warmlane-producer",
        "warmlane-consumer",
        "COPY models",
    ] {
        assert!(dockerfile.contains(needle), "the Dockerfile should mention {needle}");
    }
}

/// Runs `docker compose config` (v2 plugin) or `docker-compose config` (v1) when
/// one is installed; in CI (`CI` set) one must be.
#[test]
fn docker_compose_config_accepts_each_file_set_and_needs_the_secrets() {
    let root = repo_root();
    let candidates: [(&str, &[&str]); 2] = [("docker", &["compose"]), ("docker-compose", &[])];
    for (program, pre) in candidates {
        let probe = std::process::Command::new(program).args(pre).arg("version").output();
        if !probe.is_ok_and(|o| o.status.success()) {
            continue;
        }
        // An empty env file: a developer's own `.env` must not decide the outcome.
        let empty = root.join("target/test-output/compose-empty.env");
        std::fs::create_dir_all(empty.parent().expect("parent")).expect("test-output");
        std::fs::write(&empty, "").expect("empty env file");
        for files in COMPOSE_SETS {
            let config = |with_secrets: bool| {
                let mut cmd = std::process::Command::new(program);
                cmd.current_dir(&root).args(pre);
                for f in *files {
                    cmd.args(["-f", f]);
                }
                cmd.arg("--env-file").arg(&empty).args(["config", "-q"]);
                for key in REQUIRED {
                    if with_secrets {
                        cmd.env(key, "ci-secret");
                    } else {
                        cmd.env_remove(key);
                    }
                }
                cmd.output().expect("run compose")
            };
            let out = config(true);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{program} {pre:?} config {files:?} failed:\n{stderr}");
            let out = config(false);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!out.status.success(), "{files:?} must refuse to start without keys and passwords");
            assert!(stderr.contains("WARMLANE_"), "{files:?}: the refusal names the variable: {stderr}");
        }
        return;
    }
    assert!(std::env::var_os("CI").is_none(), "CI needs docker compose: apt-get install -y docker-compose");
    eprintln!("docker compose is not installed here; skipped `docker compose config`");
}
