//! The servers a test owns never outlive it.

use warmlane_tests::servers::{process_running, RabbitNode};
use warmlane_tests::{prefix, repo_root};

/// A node whose data directory (and with it the Erlang cookie `rabbitmqctl`
/// needs) was removed under it is still stopped when the test drops it.
#[test]
fn a_rabbit_node_stops_even_when_its_directory_is_gone() {
    let dir = repo_root().join("target/test-output").join(prefix("node"));
    let node = RabbitNode::start(&dir);
    let pid = node.pid().expect("the node's pid");
    assert!(process_running(pid), "the node runs");
    std::fs::remove_dir_all(&dir).unwrap();
    drop(node);
    assert!(!process_running(pid), "RabbitMQ node {pid} outlived its RabbitNode");
}
