//! A node of the broker list that accepts TCP connections and never speaks AMQP (a
//! host hung or cut off behind a load balancer) is given up after
//! `NODE_CONNECT_TIMEOUT`, and the next node serves. One test in this binary: the
//! round-robin start is process-wide.

use std::net::TcpListener;
use std::time::{Duration, Instant};
use warmlane_infra::amqp::{open, NODE_CONNECT_TIMEOUT};
use warmlane_tests::amqp_url;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_given_up_and_the_next_one_serves() {
    // Bound and listening, never accepting: the kernel completes the TCP handshake,
    // and the AMQP greeting never comes.
    let silent = TcpListener::bind("127.0.0.1:0").expect("a port");
    let silent_url = format!("amqp://guest:guest@{}/%2f", silent.local_addr().expect("its address"));
    let list = format!("{silent_url},{}", amqp_url());
    // Two connections start at the two nodes in turn: one of them tries the silent node first.
    let mut took = Vec::new();
    for _ in 0..2 {
        let began = Instant::now();
        let conn = open(&list.as_str().into()).await.expect("the second node serves");
        took.push(began.elapsed());
        assert!(conn.status().connected());
        let _ = conn.close(200, "done".into()).await;
    }
    println!("connections took {took:?} (node timeout {NODE_CONNECT_TIMEOUT:?})");
    let slowest = took.iter().max().copied().unwrap_or_default();
    assert!(slowest >= NODE_CONNECT_TIMEOUT, "the silent node was never tried first: {took:?}");
    assert!(slowest < NODE_CONNECT_TIMEOUT + Duration::from_secs(10), "the silent node held the connection: {took:?}");
    drop(silent);
}
