//! The real Wan2.1 architecture through the fleet: the `wan-tiny` lane and the
//! degraded worker serve it end to end (raw AMQP and the producer), and a `wan-tiny`
//! whose tokenizer or tensor names are wrong is answered with a coded failure,
//! never left in a queue.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use redis::AsyncCommands;
use std::path::Path;
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_shared::{ErrorCode, FallbackCause, Reply, ReplyStatus};
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{amqp_url, prefix, redis_url, repo_root, request, settings_with};

/// A `wan-tiny` request encoded by hand as a MessagePack map, as a non-Rust publisher would.
fn foreign_request(task_id: &str, frames: u32) -> Vec<u8> {
    let entries = vec![
        ("v", rmpv::Value::from(1)),
        ("task_id", rmpv::Value::from(task_id)),
        ("model", rmpv::Value::from("wan-tiny")),
        ("prompt", rmpv::Value::from("a red fox runs through fresh snow at dawn")),
        ("steps", rmpv::Value::from(4)),
        ("cfg", rmpv::Value::F64(5.0)),
        ("width", rmpv::Value::from(48)),
        ("height", rmpv::Value::from(32)),
        ("frames", rmpv::Value::from(frames)),
    ];
    let map = rmpv::Value::Map(entries.into_iter().map(|(k, v)| (rmpv::Value::from(k), v)).collect());
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).expect("encodes");
    out
}

async fn publish_raw(prefix: &str, lane: &str, body: Vec<u8>, id: &str) {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("RabbitMQ is required");
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let props = BasicProperties::default()
        .with_content_type("application/msgpack".into())
        .with_message_id(id.into())
        .with_delivery_mode(2);
    let exchange = format!("{prefix}.lanes");
    let confirm = channel
        .basic_publish(exchange.as_str().into(), lane.into(), BasicPublishOptions::default(), &body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
    let _ = conn.close(200, "done".into()).await;
}

async fn blpop(task_id: &str, prefix: &str) -> Reply {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut c = client.get_multiplexed_async_connection_with_config(&config).await.expect("Redis is required");
    let (_, body): (String, Vec<u8>) =
        c.blpop(format!("{prefix}:reply:{task_id}"), 120.0).await.expect("a reply within 120 s");
    Reply::from_msgpack(&body).expect("the reply is MessagePack")
}

/// The reply is done on `lane` with an MP4 of `frames` frames at `width`x`height`.
fn assert_mp4(reply: &Reply, lane: &str, (width, height, frames): (u32, u32, u32)) {
    assert_eq!((reply.status, reply.lane.as_deref()), (ReplyStatus::Done, Some(lane)), "{reply:?}");
    let result = reply.result.as_ref().expect("done carries a result");
    assert_eq!((result.width, result.height, result.frames), (width, height, frames), "{result:?}");
    let path = result.uri.strip_prefix("file://").expect("file uri");
    let bytes = std::fs::read(path).expect("the video exists");
    assert_eq!(&bytes[4..8], b"ftyp", "{path} is an MP4");
    assert_eq!(bytes.len() as u64, result.bytes);
}

fn ort_engine(fleet: &Fleet) -> Box<OrtEngine> {
    Box::new(OrtEngine::new(fleet.settings.clone(), None).unwrap_or_else(|e| panic!("{}", e.message)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_tiny_is_served_by_its_lane_and_by_the_degraded_worker() {
    let p = prefix("wan");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.spawn_onnx_lanes(&["wan-tiny"]).await;
    let engine = ort_engine(&fleet);
    fleet.spawn_worker("degraded", engine);

    // A plain AMQP client publishes straight to the lane.
    let raw = format!("{p}-raw");
    publish_raw(&p, "wan-tiny", foreign_request(&raw, 9), &raw).await;
    assert_mp4(&blpop(&raw, &p).await, "wan-tiny", (48, 32, 9));

    // Through the producer, with the lane disabled: the degraded worker serves it.
    fleet.producer.store().disable_lane("wan-tiny", FallbackCause::Manual, "test").await.expect("disable");
    let id = format!("{p}-degraded");
    let mut req = request(&id, "wan-tiny");
    req["frames"] = 6.into();
    let admission = fleet.producer.submit_json(&req).await.expect("admitted");
    assert_eq!(admission.lane, "degraded");
    assert_mp4(&fleet.reply(&id, 120).await, "degraded", (32, 32, 6));
    assert_eq!(fleet.replies_left(&id).await, 0);
    fleet.cleanup().await;
}

/// A copy of `models/wan-tiny` in `dir` with its tokenizer replaced by `tokenizer`.
fn copy_with_tokenizer(dir: &Path, tokenizer: &[u8]) {
    std::fs::create_dir_all(dir).expect("dir");
    for file in ["text_encoder.onnx", "denoiser.onnx", "vae_decoder.onnx"] {
        std::fs::copy(repo_root().join("models/wan-tiny").join(file), dir.join(file)).expect("copy");
    }
    std::fs::write(dir.join("tokenizer.json"), tokenizer).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wan_tiny_that_cannot_load_is_answered_and_nothing_stays_queued() {
    let broken_dir = std::env::temp_dir().join(format!("warmlane-wan-broken-{}", std::process::id()));
    copy_with_tokenizer(&broken_dir, b"{ not a tokenizer");
    let broken = broken_dir.display().to_string();
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "wrong tensor name",
            Box::new(|s| s["models"]["wan-tiny"]["pipeline"]["denoiser"]["io"]["latent"] = "latent".into()),
            "denoiser.io.latent",
        ),
        (
            "outputs that do not match",
            Box::new(|s| s["models"]["wan-tiny"]["pipeline"]["latent_channels"] = 4.into()),
            "latent_channels is 4",
        ),
        (
            "tokenizer that does not parse",
            Box::new(move |s| s["models"]["wan-tiny"]["pipeline"]["dir"] = broken.into()),
            "tokenizer.json",
        ),
    ];
    for (what, edit, want) in cases {
        let p = prefix("wan-bad");
        let mut fleet = Fleet::start(&p, settings_with(edit)).await;
        let engine = ort_engine(&fleet);
        fleet.spawn_worker("degraded", engine);
        let id = format!("{p}-1");
        let admission = fleet.producer.submit_json(&request(&id, "wan-tiny")).await.expect("admitted");
        assert_eq!(admission.lane, "degraded", "{what}: no lane worker, so degraded");
        let reply = fleet.reply(&id, 120).await;
        assert_eq!(
            (reply.status, reply.code),
            (ReplyStatus::Failed, Some(ErrorCode::InferenceFailed)),
            "{what}: {reply:?}"
        );
        assert!(reply.message.contains(want), "{what}: the message names the cause: {}", reply.message);
        assert_eq!(fleet.replies_left(&id).await, 0, "{what}: one reply");
        let degraded = fleet.topology().degraded_queue();
        assert_eq!(fleet.depth(&degraded).await, 0, "{what}: nothing left in the degraded queue");
        // The worker is still there: the next request is answered too.
        let next = format!("{p}-2");
        fleet.producer.submit_json(&request(&next, "wan-tiny")).await.expect("admitted");
        assert_eq!(fleet.reply(&next, 120).await.code, Some(ErrorCode::InferenceFailed), "{what}");
        fleet.cleanup().await;
    }
    let _ = std::fs::remove_dir_all(&broken_dir);
}
