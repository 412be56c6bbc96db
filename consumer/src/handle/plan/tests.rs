//! The delivery rules as a table: one row per rule and per malformed shape.

use super::*;
use std::path::PathBuf;
use warmlane_shared::request::MAX_BODY_BYTES;

const NOW: u64 = 50_000_000;

fn settings() -> Settings {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Settings::load(&dir.join("inference_settings.json")).expect("settings")
}

fn request(model: &str, submitted: Option<u64>) -> ValidRequest {
    let (steps, cfg) = if model == "phr00t" { (4, 1.0) } else { (8, 5.0) };
    let json = serde_json::json!({"v": 1, "task_id": "task-1", "model": model, "prompt": "a cat", "steps": steps,
                                  "cfg": cfg, "width": 32, "height": 32, "frames": 4});
    let req = warmlane_shared::validate_json(&json, &settings()).expect("valid");
    match submitted {
        Some(at) => req.admitted_at(at),
        None => req,
    }
}

fn facts<'d>(body: &[u8], message_id: Option<&'d str>, redelivered: bool, enqueued_ms: Option<u64>) -> Facts<'d> {
    Facts {
        request: warmlane_shared::decode_msgpack(body, &settings()),
        message_id,
        redelivered,
        enqueued_ms,
        cancels_heard: true,
    }
}

fn valid(model: &str, submitted: Option<u64>) -> Vec<u8> {
    request(model, submitted).to_msgpack()
}

/// A hand-encoded map: `task_id` first, then `rest`.
fn map_with(rest: Vec<(rmpv::Value, rmpv::Value)>) -> Vec<u8> {
    let mut entries = vec![(rmpv::Value::from("task_id"), rmpv::Value::from("task-1"))];
    entries.extend(rest);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &rmpv::Value::Map(entries)).expect("encodes");
    out
}

/// The malformed shapes whose task id can still be read.
fn malformed_with_an_id() -> Vec<(&'static str, Vec<u8>)> {
    let mut trailing = valid("anisora", Some(NOW));
    trailing.extend_from_slice(b"\xc0\xc0");
    let named = map_with(vec![(rmpv::Value::from("ok"), rmpv::Value::from(1))]);
    let at = named.windows(3).position(|w| w == b"\xa2ok").expect("the key");
    let mut bad_utf8 = named.clone();
    bad_utf8[at + 1..at + 3].copy_from_slice(&[0xc3, 0x28]);
    let oversized = map_with(vec![(rmpv::Value::from("prompt"), rmpv::Value::from("p".repeat(MAX_BODY_BYTES)))]);
    let marked = map_with(vec![(rmpv::Value::from("x-extra"), rmpv::Value::Nil)]);
    let mut deep = marked[..marked.len() - 1].to_vec();
    deep.extend(std::iter::repeat_n(0x91u8, 3_000));
    deep.push(0x01);
    let list = map_with(vec![(rmpv::Value::from("x-list"), rmpv::Value::Array(vec![rmpv::Value::from(7); 9]))]);
    let truncated = list[..list.len() - 3].to_vec();
    vec![
        ("trailing bytes", trailing),
        ("invalid UTF-8 in another key", bad_utf8),
        ("an oversized body", oversized),
        ("deep nesting under an unknown key", deep),
        ("a truncated array", truncated),
    ]
}

fn dead(step: &Step<'_>) -> Option<(ErrorCode, Option<String>, DeadWhy)> {
    match step {
        Step::Do(Action::DeadLetter { rejection, reply_to, why }) => Some((rejection.code, reply_to.clone(), *why)),
        _ => None,
    }
}

#[test]
fn undecodable_and_invalid_bodies_are_dead_lettered_and_answered_where_possible() {
    let s = settings();
    let invalid = {
        let mut map: Vec<(rmpv::Value, rmpv::Value)> = Vec::new();
        let json = serde_json::json!({"v": 1, "task_id": "task-1", "model": "anisora", "prompt": "p", "steps": 3});
        for (k, v) in json.as_object().unwrap() {
            let v =
                if let Some(i) = v.as_i64() { rmpv::Value::from(i) } else { rmpv::Value::from(v.as_str().unwrap()) };
            map.push((rmpv::Value::from(k.as_str()), v));
        }
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &rmpv::Value::Map(map)).unwrap();
        out
    };
    // (case, body, message id) -> (code, reply_to)
    type Row<'a> = (&'a str, Vec<u8>, Option<&'a str>, (ErrorCode, Option<&'a str>));
    let cases: Vec<Row<'_>> = vec![
        ("garbage, no message id", b"\xc1 garbage".to_vec(), None, (ErrorCode::MalformedMessage, None)),
        ("garbage, a message id", b"\xc1 garbage".to_vec(), Some("m-1"), (ErrorCode::MalformedMessage, Some("m-1"))),
        (
            "garbage, a message id that is no task id",
            b"\xc1".to_vec(),
            Some("a b"),
            (ErrorCode::MalformedMessage, None),
        ),
        ("invalid steps", invalid, Some("m-1"), (ErrorCode::InvalidParameter, Some("task-1"))),
    ];
    for (name, body, mid, (code, reply_to)) in cases {
        let f = facts(&body, mid, false, None);
        let want = Some((code, reply_to.map(str::to_string), DeadWhy::Invalid));
        assert_eq!(dead(&plan(&f, "anisora", &s, NOW)), want, "{name}");
    }
    for (shape, body) in malformed_with_an_id() {
        for lane in ["anisora", DEGRADED_LANE] {
            let f = facts(&body, Some("m-9"), false, None);
            let want = Some((ErrorCode::MalformedMessage, Some("task-1".to_string()), DeadWhy::Invalid));
            assert_eq!(dead(&plan(&f, lane, &s, NOW)), want, "{shape} on {lane}");
        }
    }
}

/// What a plan for a valid delivery should be, in short.
#[derive(Debug, PartialEq)]
enum Want {
    Forward,
    WaitTimeout(u64),
    RunUnclaimed,
    Claim { redelivered: bool },
}

fn want_of(step: Step<'_>) -> Want {
    match step {
        Step::Do(Action::Forward(_)) => Want::Forward,
        Step::Do(Action::WaitTimeout { waited_ms, .. }) => Want::WaitTimeout(waited_ms),
        Step::Do(Action::Run { unclaimed: true, started_at_ms: NOW, .. }) => Want::RunUnclaimed,
        Step::Claim { by, .. } if by.started_at_ms == NOW => Want::Claim { redelivered: by.redelivered },
        other => panic!("unexpected {other:?}"),
    }
}

struct Case<'a> {
    name: &'a str,
    lane: &'a str,
    body: &'a [u8],
    redelivered: bool,
    enqueued: Option<u64>,
    settings: &'a Settings,
    want: Want,
}

#[test]
fn valid_deliveries_follow_the_rules_in_order() {
    let s = settings();
    let wait = s.degraded.max_wait_ms;
    let (anisora, direct) = (valid("anisora", Some(NOW)), valid("anisora", None));
    let (phr00t, phr00t_old) = (valid("phr00t", Some(NOW)), valid("phr00t", Some(NOW - wait - 5)));
    // Admitted so long ago that its backstop deadline is 1 s away: too close to start unclaimed.
    let near_deadline = valid("anisora", Some(NOW + 1_000 - s.lane_deadline_ms(0)));
    let mut off = s.clone();
    off.lanes.late_claim_ms = 0;
    let case = |name, lane, body, redelivered, enqueued, settings, want| Case {
        name,
        lane,
        body,
        redelivered,
        enqueued,
        settings,
        want,
    };
    let cases = [
        case("another model's request on a lane", "anisora", &phr00t[..], false, None, &s, Want::Forward),
        case("a first delivery on its warm lane", "anisora", &anisora, false, None, &s, Want::RunUnclaimed),
        case("a redelivery on a lane", "anisora", &anisora, true, None, &s, Want::Claim { redelivered: true }),
        case(
            "no admission time (published directly)",
            "anisora",
            &direct,
            false,
            None,
            &s,
            Want::Claim { redelivered: false },
        ),
        case("late claims off", "anisora", &anisora, false, None, &off, Want::Claim { redelivered: false }),
        case("near its deadline", "anisora", &near_deadline, false, None, &s, Want::Claim { redelivered: false }),
        case(
            "degraded within the wait",
            DEGRADED_LANE,
            &phr00t,
            false,
            Some(NOW - wait),
            &s,
            Want::Claim { redelivered: false },
        ),
        case("degraded redelivery", DEGRADED_LANE, &phr00t, true, Some(NOW), &s, Want::Claim { redelivered: false }),
        case(
            "degraded past the wait",
            DEGRADED_LANE,
            &phr00t,
            false,
            Some(NOW - wait - 1),
            &s,
            Want::WaitTimeout(wait + 1),
        ),
        case("degraded without the header", DEGRADED_LANE, &phr00t_old, false, None, &s, Want::WaitTimeout(wait + 5)),
    ];
    for c in cases {
        let f = facts(c.body, None, c.redelivered, c.enqueued);
        assert_eq!(want_of(plan(&f, c.lane, c.settings, NOW)), c.want, "{}", c.name);
    }
    // A worker not (yet, or no longer) hearing cancels claims even a first delivery:
    // `START` refuses one that was cancelled while it waited.
    let deaf = Facts { cancels_heard: false, ..facts(&anisora, None, false, None) };
    assert_eq!(want_of(plan(&deaf, "anisora", &s, NOW)), Want::Claim { redelivered: false });
}

#[test]
fn the_claim_decides_skip_poison_or_run() {
    let s = settings();
    let req = request("anisora", Some(NOW));
    let max = s.lanes.max_attempts;
    assert_eq!(after_claim(&req, Started::AlreadyFinished, &s, NOW), Action::AlreadyAnswered(&req));
    for n in [1, max] {
        assert_eq!(
            after_claim(&req, Started::Attempt(n), &s, NOW),
            Action::Run { req: &req, unclaimed: false, started_at_ms: NOW },
            "attempt {n}"
        );
    }
    match after_claim(&req, Started::Attempt(max + 1), &s, NOW) {
        Action::DeadLetter { rejection, reply_to, why } => {
            assert_eq!((rejection.code, rejection.reason.as_str()), (ErrorCode::InferenceFailed, reason::POISON));
            assert_eq!((reply_to.as_deref(), why), (Some("task-1"), DeadWhy::Poison));
        }
        other => panic!("attempt {}: {other:?}", max + 1),
    }
}

#[test]
fn a_run_is_answered_done_or_with_its_code() {
    let req = request("anisora", Some(NOW));
    let out = Output {
        path: PathBuf::from("/r/task-1.mp4"),
        bytes: 9,
        preview_path: Some(PathBuf::from("/r/task-1.gif")),
        frames: 4,
        width: 32,
        height: 32,
        inference_ms: 7,
    };
    let stored =
        Stored { uri: "s3://videos/wl/task-1.mp4".into(), preview_uri: Some("s3://videos/wl/task-1.gif".into()) };
    let done = run_reply(&req, "anisora", RunEnd::Stored(&out, &stored), 3);
    assert_eq!((done.status, done.code), (ReplyStatus::Done, None));
    let result = done.result.clone().expect("a result");
    assert_eq!(result.uri, "s3://videos/wl/task-1.mp4", "the store's URI, not the scratch path");
    assert_eq!(result.content_type, "video/mp4");
    assert_eq!(result.preview_uri.as_deref(), Some("s3://videos/wl/task-1.gif"));
    assert_eq!((done.timings.queued_ms, done.timings.inference_ms), (Some(3), Some(7)));
    // An engine that writes only a GIF (test doubles) is answered as one, without preview.
    let gif = Output {
        path: PathBuf::from("/r/task-1.gif"),
        bytes: 6,
        preview_path: None,
        frames: 4,
        width: 32,
        height: 32,
        inference_ms: 7,
    };
    let stored_gif = Stored { uri: "file:///r/task-1.gif".into(), preview_uri: None };
    let result = run_reply(&req, "anisora", RunEnd::Stored(&gif, &stored_gif), 3).result.expect("a result");
    assert_eq!((result.content_type.as_str(), result.preview_uri), ("image/gif", None));
    // A video the store did not take is a failed run, coded for the operator.
    let lost = run_reply(&req, "anisora", RunEnd::NotStored(&out), 3);
    assert_eq!(
        (lost.status, lost.code, lost.reason.as_deref()),
        (ReplyStatus::Failed, Some(ErrorCode::InferenceFailed), Some("storage"))
    );
    assert!(lost.result.is_none() && lost.timings.inference_ms.is_none());
    let oom = EngineFailure { code: ErrorCode::GpuOom, message: "out of memory".into() };
    let failed = run_reply(&req, DEGRADED_LANE, RunEnd::Failed(&oom), 3);
    assert_eq!(
        (failed.status, failed.code, failed.lane.as_deref()),
        (ReplyStatus::Failed, Some(ErrorCode::GpuOom), Some(DEGRADED_LANE))
    );
    assert_eq!(failed.timings.inference_ms, None);
}
