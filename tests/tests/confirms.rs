//! Publisher confirms stay with their own publish when many callers share the
//! producer's confirm channel: a caller told "accepted" has its message in the
//! queue, and one told "refused" does not.

use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use std::collections::BTreeSet;
use std::sync::Arc;
use warmlane_infra::amqp::{field_table, message_properties, Published, Publisher};
use warmlane_shared::topology::ArgValue;
use warmlane_tests::{amqp_url, prefix};

/// Rounds of concurrent publishes from several threads into a queue that holds
/// fewer than are sent (`reject-publish`), so some are refused; then the queue is
/// drained and what it held is compared with what the callers were told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_concurrent_publish_gets_its_own_confirm() {
    let queue = format!("{}.confirms", prefix("confirms"));
    let publisher = Arc::new(Publisher::new(&amqp_url().into()).expect("publisher"));
    let channel = publisher.channel_plain().await.expect("channel");
    let args =
        field_table(&[("x-max-length", ArgValue::Int(20)), ("x-overflow", ArgValue::Str("reject-publish".into()))]);
    for round in 0..50 {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions { durable: true, ..Default::default() },
                args.clone(),
            )
            .await
            .expect("declare");
        let mut handles = vec![];
        for i in 0..80 {
            let (publisher, queue) = (publisher.clone(), queue.clone());
            handles.push(tokio::spawn(async move {
                let id = format!("r{round}-m{i}");
                let answer = publisher
                    .publish("", &queue, id.as_bytes(), message_properties(&id, Default::default()))
                    .await
                    .expect("publish");
                (id, answer)
            }));
        }
        let mut acked = BTreeSet::new();
        for h in handles {
            let (id, answer) = h.await.unwrap();
            match answer {
                Published::Acked => {
                    acked.insert(id);
                }
                Published::Nacked => {}
                Published::Returned => panic!("{id} was returned: the queue is bound"),
            }
        }
        let mut held = BTreeSet::new();
        while let Some(m) =
            channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            held.insert(String::from_utf8(m.delivery.data.clone()).unwrap());
        }
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        assert_eq!(held.len(), 20, "round {round}: the queue holds its limit");
        assert_eq!(acked, held, "round {round}: confirms were handed to the wrong publishes");
    }
}
