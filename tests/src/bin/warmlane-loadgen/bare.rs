//! The broker's bare figures: the publish-confirm round trip, and a bare publish-consume-reply loop.

use crate::samples::{ms, Samples, Waiters};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{oneshot, Semaphore};
use warmlane_infra::amqp::{message_properties, Published};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{amqp_url, redis_url};

/// Sequential persistent publishes with confirms to a durable queue: the broker's floor.
pub(crate) async fn bare_confirm_rtt(fleet: &Fleet, p: &str, n: usize) -> Samples {
    let queue = format!("{p}.bare-confirm");
    let channel = fleet.producer.publisher().channel().await.expect("channel");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let body = vec![0u8; 200];
    let mut s = Samples::default();
    for i in 0..n {
        let t = Instant::now();
        let answer = fleet
            .producer
            .publisher()
            .publish("", &queue, &body, message_properties(&format!("b{i}"), FieldTable::default()))
            .await
            .expect("publish");
        assert_eq!(answer, Published::Acked);
        s.0.push(ms(t.elapsed()));
    }
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    s
}

pub(crate) struct Bare {
    pub(crate) throughput: f64,
    pub(crate) confirm: Samples,
}

/// A bare loop with the fleet's shape: publish with confirm, a prefetch-1 consumer that
/// LPUSHes a reply and acks, the caller BLPOPs it. `in_flight` callers. Also records
/// each publish's confirm round trip at that concurrency.
pub(crate) async fn bare_loop(
    fleet: &Fleet,
    consumers: &tokio::runtime::Handle,
    waiters: &Waiters,
    p: &str,
    round: u32,
    n: usize,
    in_flight: usize,
) -> Bare {
    let queue = format!("{p}.bare-loop");
    let reply_prefix = format!("{p}:bare:");
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let consumer_queue = queue.clone();
    // Connected from the consumer runtime, like the fleet's worker.
    let server = consumers.spawn(bare_consumer(consumer_queue, reply_prefix, ready_tx, stop_rx));
    ready_rx.await.expect("the bare consumer started");
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut handles = vec![];
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (publisher_queue, waiters, p) = (queue.clone(), waiters.clone(), p.to_string());
        let producer = fleet.producer.clone();
        handles.push(tokio::spawn(async move {
            let id = format!("r{round}-{i}");
            let t = Instant::now();
            let answer = producer
                .publisher()
                .publish("", &publisher_queue, id.as_bytes(), message_properties(&id, FieldTable::default()))
                .await
                .unwrap();
            let confirm = t.elapsed();
            assert_eq!(answer, Published::Acked);
            let popped = waiters.pop(&format!("{p}:bare:{id}"), 30.0).await;
            assert!(popped.is_some(), "bare loop: no reply for {id}");
            drop(permit);
            confirm
        }));
    }
    let mut confirm = Samples::default();
    for h in handles {
        confirm.0.push(ms(h.await.unwrap()));
    }
    let throughput = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = server.await;
    let ch = fleet.producer.publisher().channel_plain().await.expect("channel");
    let _ = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = ch.close(200, "done".into()).await;
    Bare { throughput, confirm }
}

/// The bare loop's prefetch-1 consumer on `queue`: LPUSHes a reply under `reply_prefix`
/// for each message and acks it, until `stop_rx` fires. Signals `ready_tx` once consuming.
async fn bare_consumer(
    queue: String,
    reply_prefix: String,
    ready_tx: oneshot::Sender<()>,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(queue.as_str().into(), "bare".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut rc = redis::aio::ConnectionManager::new(redis::Client::open(redis_url()).unwrap()).await.unwrap();
    let _ = ready_tx.send(());
    loop {
        tokio::select! {
            _ = &mut stop_rx => break,
            next = consumer.next() => {
                let Some(Ok(d)) = next else { break };
                let id = String::from_utf8_lossy(&d.data).to_string();
                let _: () = rc.lpush(format!("{reply_prefix}{id}"), b"ok".as_slice()).await.unwrap();
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
        }
    }
    // Closed, not dropped: each round starts from one bare connection.
    let _ = conn.close(200, "done".into()).await;
}
