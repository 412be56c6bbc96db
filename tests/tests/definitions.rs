//! `ops/rabbitmq/definitions.json` is the topology of `shared/src/topology.rs`.
//!
//! The broker of the compose fleet loads that file at boot; the services then
//! declare the same topology at start, and RabbitMQ refuses a redeclaration whose
//! arguments differ (PRECONDITION_FAILED). So the file must match the code for the
//! repository's `inference_settings.json` exactly: names, argument values *and*
//! JSON types (a number stays a number), bindings. No server is needed.

use serde_json::Value;
use std::collections::BTreeMap;
use warmlane_shared::topology::ArgValue;
use warmlane_shared::{Settings, Topology};
use warmlane_tests::repo_root;

fn definitions() -> Value {
    let path = repo_root().join("ops/rabbitmq/definitions.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The single-node fleet's settings: classic queues, whatever `WARMLANE_QUEUE_TYPE`
/// says (the cluster profile loads `definitions-cluster.json`, which declares no
/// queue, and its services declare quorum queues themselves).
fn settings() -> Settings {
    let path = repo_root().join("inference_settings.json");
    let mut settings = Settings::load(&path).unwrap_or_else(|e| panic!("{e}"));
    settings.broker.queue_type = warmlane_shared::QueueType::Classic;
    settings
}

fn arg_json(v: &ArgValue) -> Value {
    match v {
        ArgValue::Int(i) => Value::from(*i),
        ArgValue::Str(s) => Value::from(s.clone()),
        ArgValue::Bool(b) => Value::from(*b),
    }
}

fn list<'a>(defs: &'a Value, key: &str) -> &'a Vec<Value> {
    defs[key].as_array().unwrap_or_else(|| panic!("definitions.json has no `{key}` array"))
}

#[test]
fn exchanges_match_the_code() {
    let defs = definitions();
    let decl = Topology::new("warmlane").declarations(&settings());
    let mut want: Vec<(String, String)> = decl.exchanges.iter().map(|e| (e.name.clone(), e.kind.to_string())).collect();
    let mut have: Vec<(String, String)> = list(&defs, "exchanges")
        .iter()
        .map(|e| {
            assert_eq!(e["durable"], Value::Bool(true), "exchange {} must be durable", e["name"]);
            assert_eq!(e["auto_delete"], Value::Bool(false), "exchange {} must not auto-delete", e["name"]);
            assert_eq!(e["vhost"], "/", "exchange {} vhost", e["name"]);
            (e["name"].as_str().unwrap_or_default().to_string(), e["type"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    want.sort();
    have.sort();
    assert_eq!(have, want, "exchanges of ops/rabbitmq/definitions.json vs Topology::declarations");
}

#[test]
fn queues_and_their_arguments_match_the_code_with_json_types() {
    let defs = definitions();
    let decl = Topology::new("warmlane").declarations(&settings());
    let want: BTreeMap<String, BTreeMap<String, Value>> = decl
        .queues
        .iter()
        .map(|q| (q.name.clone(), q.args.iter().map(|(k, v)| (k.to_string(), arg_json(v))).collect()))
        .collect();
    let mut have = BTreeMap::new();
    for q in list(&defs, "queues") {
        let name = q["name"].as_str().expect("queue name").to_string();
        assert_eq!(q["durable"], Value::Bool(true), "queue {name} must be durable");
        assert_eq!(q["auto_delete"], Value::Bool(false), "queue {name} must not auto-delete");
        assert_eq!(q["vhost"], "/", "queue {name} vhost");
        let args: BTreeMap<String, Value> = q["arguments"]
            .as_object()
            .unwrap_or_else(|| panic!("queue {name} has no arguments object"))
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // serde_json's Value equality already tells 25 from "25" and true from "true".
        have.insert(name, args);
    }
    assert_eq!(have, want, "queues of ops/rabbitmq/definitions.json vs Topology::declarations");
}

#[test]
fn bindings_match_the_code() {
    let defs = definitions();
    let decl = Topology::new("warmlane").declarations(&settings());
    let mut want: Vec<(String, String, String)> =
        decl.bindings.iter().map(|b| (b.exchange.clone(), b.queue.clone(), b.key.clone())).collect();
    let mut have: Vec<(String, String, String)> = list(&defs, "bindings")
        .iter()
        .map(|b| {
            assert_eq!(b["destination_type"], "queue", "binding {b}");
            assert_eq!(b["vhost"], "/", "binding {b}");
            let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
            (s("source"), s("destination"), s("routing_key"))
        })
        .collect();
    want.sort();
    have.sort();
    assert_eq!(have, want, "bindings of ops/rabbitmq/definitions.json vs Topology::declarations");
}

#[test]
fn the_fleet_user_can_use_the_vhost() {
    let defs = definitions();
    let users: Vec<&str> = list(&defs, "users").iter().filter_map(|u| u["name"].as_str()).collect();
    for p in list(&defs, "permissions") {
        let user = p["user"].as_str().unwrap_or_default();
        assert!(users.contains(&user), "permission for unknown user {user}");
        assert_eq!(p["vhost"], "/");
        for k in ["configure", "write", "read"] {
            assert_eq!(p[k], ".*", "{user} needs {k} on /");
        }
    }
    // docker-compose.yml connects as this user.
    let compose = std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("docker-compose.yml");
    for user in &users {
        if compose.contains(&format!("amqp://{user}:")) {
            return;
        }
    }
    panic!("docker-compose.yml's AMQP_URL uses none of the users in definitions.json: {users:?}");
}
