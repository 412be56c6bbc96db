//! A three-node RabbitMQ cluster of the test's own ([`RabbitCluster`]): what a quorum
//! queue promises when a node crashes.
//!
//! Each test boots its own cluster (about half a minute on two cores; the figures
//! are printed, run with `--nocapture` to see them) and stops it at the end, also
//! when the test fails.
// Scripted scenarios read best as one function; the 80-line limit is for code outside tests.
#![allow(clippy::too_many_lines)]

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use warmlane_tests::cluster::{RabbitCluster, SIZE};
use warmlane_tests::servers::process_running;
use warmlane_tests::{prefix, repo_root};

/// A connection to node `url` of the cluster.
async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connecting to the cluster node {url}: {e}"))
}

/// A new channel on `conn`, in confirm mode.
async fn confirm_channel(conn: &Connection) -> Channel {
    let channel = conn.create_channel().await.expect("a channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    channel
}

/// The arguments of a quorum queue.
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    args
}

/// Publishes message `m<i>` (persistent) for every `i` of `ids`, one at a time, each
/// until the broker acks it, `within` at most per message, as an at-least-once
/// client does. A nack, or no confirm within 5 s, is answered by publishing again on
/// a new channel: a channel that published while the queue had no leader may wait
/// for its confirms for good (RabbitMQ 3.10 sends them to the dead leader). Returns
/// every try that was not acked: the message's id and what came back instead.
async fn publish_confirmed(
    conn: &Connection,
    queue: &str,
    ids: std::ops::Range<u32>,
    within: Duration,
) -> Vec<(u32, String)> {
    let mut channel = confirm_channel(conn).await;
    let mut again = Vec::new();
    for i in ids {
        let body = format!("m{i}");
        let deadline = Instant::now() + within;
        loop {
            let props = BasicProperties::default().with_delivery_mode(2).with_message_id(body.as_str().into());
            let publish = async {
                let options = BasicPublishOptions::default();
                let pending = channel.basic_publish("".into(), queue.into(), options, body.as_bytes(), props).await?;
                pending.await
            };
            let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(5));
            let answer = tokio::time::timeout(left, publish).await;
            if answer.as_ref().is_ok_and(|a| a.as_ref().is_ok_and(lapin::Confirmation::is_ack)) {
                break;
            }
            let answer = match answer {
                Ok(Ok(confirm)) => format!("{confirm:?}"),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => format!("no confirm within {left:?}"),
            };
            assert!(Instant::now() < deadline, "{body} was not acked within {within:?}, last answer {answer}");
            again.push((i, answer));
            tokio::time::sleep(Duration::from_millis(100)).await;
            channel = confirm_channel(conn).await;
        }
    }
    again
}

/// A durable quorum queue keeps every confirmed message when the node leading it
/// is SIGKILLed: publishing resumes through a surviving node, nothing confirmed is
/// lost or doubled, and the crashed node rejoins when it is started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_survives_the_loss_of_its_leader() {
    warmlane_tests::init_logs();
    let p = prefix("cluster");
    let dir = repo_root().join("target/test-output").join(&p);
    let mut cluster = block_in_place(|| RabbitCluster::start(&dir));
    println!("cluster of {SIZE} nodes formed in {:.1} s", cluster.formed_in().as_secs_f64());
    assert_eq!(block_in_place(|| cluster.running_nodes()), vec![0, 1, 2], "all nodes run in one cluster");

    let queue = format!("{p}.quorum");
    let first = connect(&cluster.url(0)).await;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let channel = first.create_channel().await.expect("a channel");
    channel.queue_declare(queue.as_str().into(), durable, quorum_args()).await.expect("declaring the quorum queue");
    let before = publish_confirmed(&first, &queue, 0..50, Duration::from_secs(10)).await;
    assert!(before.is_empty(), "a healthy cluster acks every publish at once; published again: {before:?}");

    let leader = block_in_place(|| cluster.wait_leader(&queue, Duration::from_secs(30)));
    let survivor = (leader + 1) % SIZE;
    println!("{queue} is led by node {leader}; killing it, resuming through node {survivor}");
    // The first client leaves before the crash (a client losing its node is the
    // failover tests' subject); publishing resumes on a survivor.
    let _ = first.close(200, "bye".into()).await;
    block_in_place(|| cluster.kill(leader));
    let killed = Instant::now();

    let conn = connect(&cluster.url(survivor)).await;
    let mut again = publish_confirmed(&conn, &queue, 50..51, Duration::from_secs(60)).await;
    let resumed = killed.elapsed();
    again.extend(publish_confirmed(&conn, &queue, 51..100, Duration::from_secs(30)).await);
    let new_leader = block_in_place(|| cluster.wait_leader(&queue, Duration::from_secs(30)));
    println!(
        "first publish acked {:.2} s after the kill (tries not acked: {again:?}); new leader node {new_leader}",
        resumed.as_secs_f64()
    );
    assert_ne!(new_leader, leader, "a surviving node leads the queue");

    let mut seen = Vec::new();
    let channel = conn.create_channel().await.expect("a channel");
    while let Some(m) =
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
    {
        seen.push(String::from_utf8(m.delivery.data.clone()).expect("a UTF-8 body"));
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(distinct, expected.iter().collect(), "the queue holds every acked message and nothing else");
    // Only a message published twice (its first try unanswered) may be held twice.
    let doubled: BTreeSet<&String> = seen.iter().filter(|m| seen.iter().filter(|n| n == m).count() > 1).collect();
    let retried: Vec<String> = again.iter().map(|(i, _)| format!("m{i}")).collect();
    assert!(doubled.iter().all(|m| retried.contains(m)), "held twice without a retry: {doubled:?}");
    println!("{} messages held, {} distinct", seen.len(), distinct.len());

    block_in_place(|| cluster.restart(leader));
    let rejoined = killed.elapsed();
    assert_eq!(block_in_place(|| cluster.running_nodes()), vec![0, 1, 2], "the crashed node rejoined");
    println!("node {leader} restarted and rejoined {:.1} s after the kill", rejoined.as_secs_f64());
    let _ = conn.close(200, "bye".into()).await;

    let pids: Vec<u32> = (0..SIZE).filter_map(|i| cluster.node(i).pid()).collect();
    assert_eq!(pids.len(), SIZE, "every node has a pid");
    block_in_place(|| drop(cluster));
    let left: Vec<u32> = pids.into_iter().filter(|pid| process_running(*pid)).collect();
    assert!(left.is_empty(), "RabbitMQ nodes {left:?} outlived their cluster");
    let _ = std::fs::remove_dir_all(&dir);
}
