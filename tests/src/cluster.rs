//! [`RabbitCluster`]: three RabbitMQ nodes of the test's own on this host, clustered,
//! for what only a cluster shows: a quorum queue losing its leader, a client failing
//! over to another node (`urls`, `url_list`), a crashed node rejoining.
//!
//! Each node has its own name, AMQP and distribution ports and data directory
//! (`<dir>/n<i>`), all share one Erlang cookie. The nodes boot in parallel, then
//! nodes 1 and 2 join node 0 (`stop_app`, `join_cluster` one at a time, `start_app`):
//! 12 to 25 s on two busy cores. Every method blocks (it runs `rabbitmqctl`, an
//! Erlang VM of its own, about a second per call): from a tokio test call it inside
//! `tokio::task::block_in_place`. Dropping the cluster stops every node, and SIGKILLs
//! any that does not stop, so no VM outlives the test.
//!
//! What a client sees when a quorum queue's leader is killed (RabbitMQ 3.10, seen in
//! `tests/tests/cluster.rs`): a new leader within about half a second; meanwhile a
//! publish through a survivor is nacked at once or not answered, and in one run a
//! channel that had published then got no confirm for 60 s, also for publishes made
//! after the election. Publishing again on a new channel is acked as soon as the new
//! leader is in place.
//!
//! ```no_run
//! # use warmlane_tests::cluster::RabbitCluster;
//! let dir = warmlane_tests::repo_root().join("target/test-output/my-test");
//! let mut cluster = RabbitCluster::start(&dir);
//! let leader = cluster.leader_of("my.queue").expect("a leader");
//! cluster.kill(leader); // SIGKILL: a crash
//! cluster.restart(leader); // back, and running in the cluster again
//! assert_eq!(cluster.running_nodes(), vec![0, 1, 2]);
//! ```

use crate::servers::RabbitNode;
use std::path::Path;
use std::time::{Duration, Instant};

/// Nodes in a cluster: the smallest that keeps a quorum (2 of 3) with one node down.
pub const SIZE: usize = 3;

/// How long a node may take to boot, rejoin, or the cluster to agree on members.
const DEADLINE: Duration = Duration::from_secs(120);

/// Three clustered RabbitMQ nodes; node `i` is index `i` in every method.
pub struct RabbitCluster {
    nodes: Vec<RabbitNode>,
    /// Whether each node is meant to run (false between `kill` and `restart`).
    up: Vec<bool>,
    formed_in: Duration,
}

impl RabbitCluster {
    /// Boots [`SIZE`] nodes under `dir` and clusters them; returns when all of them
    /// run in one cluster. Panics, naming the node and its log directory, when a node
    /// does not start or join within two minutes.
    pub fn start(dir: &Path) -> RabbitCluster {
        let began = Instant::now();
        let cookie = format!("WARMLANE{}", uuid::Uuid::new_v4().simple()).to_uppercase();
        let mut nodes: Vec<RabbitNode> =
            (0..SIZE).map(|i| RabbitNode::launch_with_cookie(&dir.join(format!("n{i}")), &cookie)).collect();
        // A node that fails to start panics here; `nodes` is dropped, which stops the others.
        std::thread::scope(|s| {
            for node in &mut nodes {
                s.spawn(|| node.wait_started());
            }
        });
        let mut cluster = RabbitCluster { nodes, up: vec![true; SIZE], formed_in: Duration::ZERO };
        let first = cluster.nodes[0].name().to_string();
        // Joins run one at a time (two at once race in the schema set-up); stopping and
        // starting the applications are local and overlap.
        cluster.on_joiners(&["stop_app"]);
        for node in &cluster.nodes[1..] {
            if let Err(e) = node.ctl_output(&["join_cluster", &first]) {
                panic!("cluster: {} could not join {first}: {e}", node.name());
            }
        }
        cluster.on_joiners(&["start_app"]);
        cluster.wait_running(SIZE);
        cluster.formed_in = began.elapsed();
        cluster
    }

    /// How long [`RabbitCluster::start`] took, boot to a formed cluster.
    pub fn formed_in(&self) -> Duration {
        self.formed_in
    }

    /// The AMQP URL of every node, by index (`amqp://guest:guest@127.0.0.1:PORT/%2f`;
    /// `guest` logs in from loopback only, which is where the nodes listen).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RabbitNode::url).collect()
    }

    /// The AMQP URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's URL, comma-separated: the form of a client's list of brokers
    /// to fail over between.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// Node `i` itself (its name, pid, `rabbitmqctl`).
    pub fn node(&self, i: usize) -> &RabbitNode {
        &self.nodes[i]
    }

    /// Whether node `i` is meant to run (not killed, or restarted since).
    pub fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }

    /// The index of the node whose member of quorum queue `queue` (vhost `/`) leads
    /// it, as a running node reports it; `None` when the queue is unknown, no running
    /// node answers, or the leader on record is a killed node (an election is under
    /// way).
    pub fn leader_of(&self, queue: &str) -> Option<usize> {
        let out = self.ask(&["list_queues", "name", "leader", "--formatter", "json"]).ok()?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        let row = rows.iter().find(|r| r["name"] == queue)?;
        let leader = row["leader"].as_str()?;
        let i = self.nodes.iter().position(|n| n.name() == leader)?;
        self.up[i].then_some(i)
    }

    /// Waits until a live leader of `queue` is known, `within` at most: the index of
    /// its node.
    pub fn wait_leader(&self, queue: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.leader_of(queue) {
                return i;
            }
            assert!(Instant::now() < deadline, "cluster: no live leader of {queue} within {within:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Crashes node `i` (SIGKILL of its VM) and returns once the process is gone.
    pub fn kill(&mut self, i: usize) {
        assert!(self.up[i], "cluster: node {i} is already down");
        self.up[i] = false;
        self.nodes[i].kill();
    }

    /// Boots killed node `i` again on its data and returns once it has started and
    /// the cluster counts it among its running nodes.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.up[i], "cluster: node {i} runs; kill it first");
        self.nodes[i].start_again();
        self.up[i] = true;
        self.wait_running(self.up.iter().filter(|u| **u).count());
    }

    /// The indexes of the nodes a running node counts as running members
    /// (`rabbitmqctl cluster_status`), ascending; empty when no node answers.
    pub fn running_nodes(&self) -> Vec<usize> {
        let Ok(out) = self.ask(&["cluster_status", "--formatter", "json"]) else { return Vec::new() };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&out) else { return Vec::new() };
        let running: Vec<&str> = status["running_nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        (0..self.nodes.len()).filter(|i| running.contains(&self.nodes[*i].name())).collect()
    }

    /// Waits until `count` nodes run in the cluster, as the first live node sees it.
    fn wait_running(&self, count: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.running_nodes().len() != count {
            assert!(
                Instant::now() < deadline,
                "cluster: {count} running nodes expected within {DEADLINE:?}, have {:?}",
                self.running_nodes()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Runs `rabbitmqctl <args>` on nodes 1.. at once (while they join node 0).
    fn on_joiners(&self, args: &[&str]) {
        std::thread::scope(|s| {
            for node in &self.nodes[1..] {
                s.spawn(|| {
                    if let Err(e) = node.ctl_output(args) {
                        panic!("cluster: {} could not join {}: {e}", node.name(), self.nodes[0].name());
                    }
                });
            }
        });
    }

    /// Runs `rabbitmqctl` on the first live node that answers.
    fn ask(&self, args: &[&str]) -> Result<String, String> {
        let mut last = "cluster: no node is up".to_string();
        for (node, _) in self.nodes.iter().zip(&self.up).filter(|(_, up)| **up) {
            match node.ctl_output(args) {
                Ok(out) => return Ok(out),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Drop for RabbitCluster {
    /// Stops the nodes in parallel (each [`RabbitNode`] stops itself, SIGKILL as the
    /// fallback) and returns once every VM has exited.
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for node in self.nodes.drain(..) {
                s.spawn(move || drop(node));
            }
        });
    }
}
