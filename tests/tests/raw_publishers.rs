//! Services in any language publish straight to the exchanges; the workers must
//! answer them, and survive what they send.

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use redis::AsyncCommands;
use warmlane_shared::{ErrorCode, Reply, ReplyStatus};
use warmlane_tests::engines::GateEngine;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{amqp_url, prefix, redis_url, settings_with};

/// A request encoded by hand as a MessagePack map, as a non-Rust publisher would.
fn foreign_request(task_id: &str) -> Vec<u8> {
    let entries = vec![
        ("v", rmpv::Value::from(1)),
        ("task_id", rmpv::Value::from(task_id)),
        ("model", rmpv::Value::from("anisora")),
        ("prompt", rmpv::Value::from("lanterns over a harbour")),
        ("negative_prompt", rmpv::Value::Nil),
        ("steps", rmpv::Value::from(8)),
        ("cfg", rmpv::Value::F64(4.5)),
        ("seed", rmpv::Value::Nil),
        ("width", rmpv::Value::from(32)),
        ("height", rmpv::Value::from(32)),
        ("frames", rmpv::Value::from(2)),
        ("extra_field_from_a_newer_client", rmpv::Value::from(true)),
    ];
    let map = rmpv::Value::Map(entries.into_iter().map(|(k, v)| (rmpv::Value::from(k), v)).collect());
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).unwrap();
    out
}

async fn blpop(task_id: &str, prefix: &str) -> Reply {
    let client = redis::Client::open(redis_url()).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut c = client.get_multiplexed_async_connection_with_config(&config).await.expect("Redis is required");
    let (_, body): (String, Vec<u8>) =
        c.blpop(format!("{prefix}:reply:{task_id}"), 60.0).await.expect("a reply within 60 s");
    Reply::from_msgpack(&body).expect("the reply is MessagePack")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_amqp_client_gets_its_reply_and_garbage_goes_dead() {
    let p = prefix("raw");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.spawn_onnx_lanes(&["anisora"]).await;

    // A plain client: its own connection, no warmlane crate involved in publishing.
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("RabbitMQ is required");
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let publish = |routing: &'static str, body: Vec<u8>, id: String| {
        let channel = channel.clone();
        let exchange = format!("{p}.lanes");
        async move {
            let props = BasicProperties::default()
                .with_content_type("application/msgpack".into())
                .with_message_id(id.into())
                .with_delivery_mode(2);
            let confirm = channel
                .basic_publish(exchange.into(), routing.into(), BasicPublishOptions::default(), &body, props)
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
    };
    let id = format!("{p}-foreign");
    publish("anisora", foreign_request(&id), id.clone()).await;
    let reply = blpop(&id, &p).await;
    assert_eq!((reply.status, reply.lane.as_deref()), (ReplyStatus::Done, Some("anisora")), "{reply:?}");

    // Garbage, a truncated body, and a valid map with a wrong type: none may stop the worker.
    publish("anisora", b"\xc1\xff not msgpack".to_vec(), "junk-1".into()).await;
    let truncated = foreign_request(&format!("{p}-cut"))[..30].to_vec();
    publish("anisora", truncated, "junk-2".into()).await;
    let mut wrong_type = foreign_request(&format!("{p}-typed"));
    let mut value = rmpv::decode::read_value(&mut wrong_type.as_slice()).unwrap();
    if let rmpv::Value::Map(entries) = &mut value {
        for (k, v) in entries.iter_mut() {
            if k.as_str() == Some("steps") {
                *v = rmpv::Value::from("eight");
            }
        }
    }
    wrong_type.clear();
    rmpv::encode::write_value(&mut wrong_type, &value).unwrap();
    publish("anisora", wrong_type, format!("{p}-typed")).await;
    let typed = blpop(&format!("{p}-typed"), &p).await;
    assert_eq!((typed.code, typed.reason.as_deref()), (Some(ErrorCode::InvalidParameter), Some("steps")));

    // A malformed body is answered where its publisher waits: at the task id the body
    // still shows (here, before trailing bytes), else at the message id.
    let mut trailing = foreign_request(&format!("{p}-trailing"));
    trailing.extend_from_slice(b"\xc0\xc0");
    publish("anisora", trailing, "not-this-id".into()).await;
    for waiting in [format!("{p}-trailing"), "junk-1".to_string()] {
        let answer = blpop(&waiting, &p).await;
        assert_eq!((answer.status, answer.code), (ReplyStatus::Failed, Some(ErrorCode::MalformedMessage)), "{waiting}");
    }

    // The worker is still up: a valid request after the garbage is served.
    let after = format!("{p}-after");
    publish("anisora", foreign_request(&after), after.clone()).await;
    assert_eq!(blpop(&after, &p).await.status, ReplyStatus::Done);

    // The four bad messages wait in the dead queue with their codes.
    let dead = conn.create_channel().await.unwrap();
    let mut consumer = dead
        .basic_consume(
            format!("{p}.dead").into(),
            "inspect".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut codes = vec![];
    for _ in 0..4 {
        let d = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
            .await
            .expect("dead message")
            .unwrap()
            .unwrap();
        codes.push(warmlane_infra::amqp::header_str(&d.properties, "x-warmlane-error-code").unwrap());
    }
    codes.sort();
    assert_eq!(codes, ["invalid_parameter", "malformed_message", "malformed_message", "malformed_message"]);
    assert_eq!(fleet.depth(&fleet.topology().lane_queue("anisora")).await, 0, "nothing blocks the lane");
    let _ = conn.close(200, "bye".into()).await;
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_another_model_is_forwarded_to_its_lane() {
    let p = prefix("forward");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.spawn_worker("anisora", Box::new(GateEngine::open()));
    fleet.spawn_worker("phr00t", Box::new(GateEngine::open()));
    fleet.wait_ready("anisora", 1).await;
    fleet.wait_ready("phr00t", 1).await;
    let id = format!("{p}-misrouted");
    let req = warmlane_shared::validate_json(&warmlane_tests::request(&id, "phr00t"), &fleet.settings).unwrap();
    let props = warmlane_infra::amqp::message_properties(&id, FieldTable::default());
    fleet
        .producer
        .publisher()
        .publish(&fleet.topology().lanes_exchange(), "anisora", &req.to_msgpack(), props)
        .await
        .unwrap();
    let reply = fleet.reply(&id, 20).await;
    assert_eq!((reply.status, reply.lane.as_deref()), (ReplyStatus::Done, Some("phr00t")));
    fleet.cleanup().await;
}
