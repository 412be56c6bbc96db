//! What only a quorum queue does, on the shared node whatever `WARMLANE_QUEUE_TYPE`
//! says: the broker's `x-delivery-limit` (`lanes.max_attempts`) drops a message that
//! keeps coming back, and the reaper moves it to the dead queue and answers its task
//! `inference_failed`/`poison`.

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;
use warmlane_infra::amqp::message_properties;
use warmlane_shared::error::reason;
use warmlane_shared::{ErrorCode, QueueType, ReplyStatus};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{amqp_url, prefix, request, settings_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_delivery_limit_goes_dead_with_one_poison_reply() {
    let p = prefix("delivery-limit");
    let mut settings = (*settings_with(|_| {})).clone();
    settings.broker.queue_type = QueueType::Quorum;
    let limit = settings.lanes.max_attempts;
    let mut fleet = Fleet::start(&p, Arc::new(settings)).await;
    fleet.spawn_reaper();

    // A raw publish to the lane; no warmlane worker, only a consumer that returns
    // every delivery (a worker that crashes on it, without its attempts counted).
    let task_id = format!("{p}-returned");
    let req = warmlane_shared::validate_json(&request(&task_id, "anisora"), &fleet.settings).expect("valid");
    let props = message_properties(&task_id, FieldTable::default());
    let lanes = fleet.topology().lanes_exchange();
    let published = fleet.producer.publisher().publish(&lanes, "anisora", &req.to_msgpack(), props).await;
    assert_eq!(published.expect("publish"), warmlane_infra::Published::Acked);

    let conn = warmlane_infra::amqp::open(&amqp_url().into()).await.expect("RabbitMQ");
    let channel = conn.create_channel().await.expect("a channel");
    channel.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let queue = fleet.topology().lane_queue("anisora");
    let mut deliveries = channel
        .basic_consume(queue.as_str().into(), "returner".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    // Returned until the broker stops delivering it (nothing for 3 s).
    let mut returned = 0;
    while let Ok(delivery) = tokio::time::timeout(Duration::from_secs(3), deliveries.next()).await {
        let delivery = delivery.expect("a delivery").expect("a delivery");
        returned += 1;
        assert!(returned <= limit + 1, "delivered {returned} times; the limit is {limit} returns");
        delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
    let answered = fleet.reply(&task_id, 30).await;
    assert_eq!(returned, limit + 1, "the broker delivers a message max_attempts + 1 times");
    assert_eq!(answered.status, ReplyStatus::Failed);
    assert_eq!((answered.code, answered.reason.as_deref()), (Some(ErrorCode::InferenceFailed), Some(reason::POISON)));
    assert_eq!(fleet.depth(&fleet.topology().dead_queue()).await, 1, "kept in the dead queue for replay");
    assert_eq!(fleet.depth(&queue).await, 0);
    assert_eq!(fleet.replies_left(&task_id).await, 0, "one reply");
    let _ = conn.close(200, "done".into()).await;
    fleet.cleanup().await;
}
