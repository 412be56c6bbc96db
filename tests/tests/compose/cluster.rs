//! `docker-compose.cluster.yml`: three RabbitMQ nodes forming one cluster, and every
//! warmlane service on all three with quorum queues. A child of compose.rs (its
//! helpers); `docker compose config` for this file set runs there too. No server is needed.

use super::*;
use warmlane_shared::settings::QueueType;

fn read(file: &str) -> String {
    std::fs::read_to_string(repo_root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn service(compose: &Value, name: &str) -> Value {
    active(compose).into_iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap_or_else(|| panic!("no service {name}"))
}

#[test]
fn the_cluster_override_runs_three_nodes_and_puts_every_service_on_all_three() {
    let mut compose = load("docker-compose.yml");
    merge(&mut compose, &load("docker-compose.cluster.yml"));
    check_fleet(&compose, "cuda");
    let conf = read("ops/rabbitmq/cluster.conf");
    let image = load("docker-compose.yml")["services"]["rabbitmq"]["image"].clone();
    let mut data = BTreeSet::new();
    // Node 1 is the base file's `rabbitmq` service, so every `depends_on: rabbitmq` holds.
    for (i, name) in ["rabbitmq", "rabbitmq-2", "rabbitmq-3"].into_iter().enumerate() {
        let (s, host) = (service(&compose, name), format!("rabbitmq-{}", i + 1));
        assert_eq!((&s["image"], s["hostname"].as_str()), (&image, Some(host.as_str())), "{name}: image, host name");
        let peer = format!("cluster_formation.classic_config.nodes.{} = rabbit@{host}", i + 1);
        assert!(conf.lines().any(|l| l == peer), "ops/rabbitmq/cluster.conf lacks `{peer}`");
        for port in s["ports"].as_array().into_iter().flatten() {
            assert!(port.as_str().unwrap_or_default().starts_with("127.0.0.1:"), "{name} publishes {port}");
        }
        let mounts: Vec<&str> = s["volumes"].as_array().expect("volumes").iter().filter_map(Value::as_str).collect();
        for m in [
            "./ops/rabbitmq/cluster.conf:/etc/rabbitmq/rabbitmq.conf:ro",
            "./ops/rabbitmq/definitions-cluster.json:/etc/rabbitmq/definitions.json:ro",
        ] {
            assert!(mounts.contains(&m), "{name} mounts {m}: {mounts:?}");
        }
        let state: Vec<&str> = mounts.iter().filter_map(|m| m.strip_suffix(":/var/lib/rabbitmq")).collect();
        assert_eq!(state.len(), 1, "{name}: one data volume: {mounts:?}");
        data.insert(state[0].to_string());
        let cookie = environment(&s).into_iter().find(|(k, _)| k == "WARMLANE_RABBITMQ_COOKIE").expect("cookie").1;
        assert!(cookie.starts_with("${WARMLANE_RABBITMQ_COOKIE:?"), "{name}: the cookie is a required secret");
        let entrypoint = command(&serde_json::json!({ "command": s["entrypoint"] })).join(" ");
        for needle in ["umask 077", "\"$$WARMLANE_RABBITMQ_COOKIE\" > /var/lib/rabbitmq/.erlang.cookie"] {
            assert!(entrypoint.contains(needle), "{name}: the entrypoint writes the cookie ({needle}): {entrypoint}");
        }
        assert_eq!(command(&s), ["rabbitmq-server"], "{name}: an entrypoint clears the image's command");
        assert!(s["healthcheck"]["test"].to_string().contains("rabbitmq-diagnostics"), "{name}: healthcheck");
        if i > 0 {
            assert_eq!(s["depends_on"]["rabbitmq"]["condition"], "service_healthy", "{name} joins a running node 1");
        }
    }
    assert_eq!(data.len(), 3, "each node its own data volume: {data:?}");
    let aliases = &service(&compose, "rabbitmq")["networks"]["default"]["aliases"];
    assert!(aliases.as_array().is_some_and(|a| a.contains(&Value::from("rabbitmq-1"))), "node 1 answers as rabbitmq-1");
    let clients = warmlane_services(&compose);
    let want: Vec<String> = (1..=3).map(|i| format!("amqp://warmlane:warmlane@rabbitmq-{i}:5672/%2f")).collect();
    for (name, env, s) in &clients {
        assert_eq!(env["AMQP_URL"].split(',').collect::<Vec<_>>(), want, "{name}: AMQP_URL lists the three nodes");
        let queue_type = env.get("WARMLANE_QUEUE_TYPE").and_then(|v| QueueType::parse(v));
        assert_eq!(queue_type, Some(QueueType::Quorum), "{name}: WARMLANE_QUEUE_TYPE");
        for node in ["rabbitmq", "rabbitmq-2", "rabbitmq-3"] {
            assert_eq!(s["depends_on"][node]["condition"], "service_healthy", "{name} waits for {node}");
        }
    }
    assert_eq!(clients.len(), 6, "the shim and five workers");
}

/// A worker holds its message unacked for a whole generation: the broker's consumer
/// timeout must outlast the longest one, or the message is taken back mid-generation.
#[test]
fn the_cluster_outlasts_every_generation_and_loads_the_same_user_but_no_queues() {
    let conf = read("ops/rabbitmq/cluster.conf");
    let timeout: u64 = conf
        .lines()
        .find_map(|l| l.strip_prefix("consumer_timeout = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("consumer_timeout in ops/rabbitmq/cluster.conf");
    let settings = warmlane_shared::Settings::load(&repo_root().join("inference_settings.json")).expect("settings");
    for (model, m) in &settings.models {
        assert!(timeout > m.inference_timeout_ms, "consumer_timeout {timeout} <= {model}'s inference_timeout_ms");
    }
    assert!(conf.lines().any(|l| l == "load_definitions = /etc/rabbitmq/definitions.json"));
    let json = |f: &str| serde_json::from_str::<Value>(&read(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let (single, cluster) = (json("ops/rabbitmq/definitions.json"), json("ops/rabbitmq/definitions-cluster.json"));
    for key in ["users", "vhosts", "permissions"] {
        assert_eq!(cluster[key], single[key], "definitions-cluster.json's {key} differ from definitions.json's");
    }
    // A quorum queue declared at boot would live on node 1 alone: the services declare them.
    for key in ["queues", "bindings"] {
        assert!(cluster[key].as_array().is_none_or(Vec::is_empty), "definitions-cluster.json declares {key}");
    }
}
