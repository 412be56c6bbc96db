//! Validation table: every rule, both encodings, deterministic codes.

use super::*;
use crate::settings::tests::fixture;
use serde_json::json;

fn base(model: &str) -> serde_json::Value {
    match model {
        "phr00t" => json!({"v": 1, "task_id": "task-1", "model": "phr00t", "prompt": "a cat", "steps": 4, "cfg": 1.0,
                           "width": 64, "height": 64, "frames": 8, "seed": 7, "submitted_at_ms": 1}),
        _ => json!({"v": 1, "task_id": "task-1", "model": "anisora", "prompt": "a cat", "steps": 8, "cfg": 5.0,
                    "width": 64, "height": 64, "frames": 8, "seed": 7}),
    }
}

fn with(model: &str, key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut b = base(model);
    b[key] = value;
    b
}

fn without(model: &str, key: &str) -> serde_json::Value {
    let mut b = base(model);
    b.as_object_mut().unwrap().remove(key);
    b
}

/// Encodes a JSON value as MessagePack (maps stay maps), as a foreign publisher would.
fn to_msgpack(v: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

#[test]
fn valid_requests_pass_in_both_encodings() {
    let s = fixture();
    for model in ["anisora", "phr00t"] {
        let from_json = validate_json(&base(model), &s).unwrap();
        let from_mp = decode_msgpack(&to_msgpack(&base(model)), &s).unwrap();
        assert_eq!(from_json, from_mp);
        let again = decode_msgpack(&from_json.to_msgpack(), &s).unwrap();
        assert_eq!(again, from_json, "round trip through our own encoding");
    }
}

#[test]
fn omitted_parameters_take_model_defaults() {
    let s = fixture();
    let body = json!({"v": 1, "task_id": "t", "model": "phr00t", "prompt": "p"});
    let r = validate_json(&body, &s).unwrap();
    assert_eq!((r.steps, r.cfg, r.width, r.height, r.frames, r.seed), (4, 1.0, 64, 64, 8, None));
}

#[test]
fn every_invalid_case_has_a_deterministic_code_and_reason() {
    let s = fixture();
    let long = "x".repeat(2001);
    let cases: Vec<(serde_json::Value, ErrorCode, &str)> = vec![
        (with("anisora", "steps", json!(4)), ErrorCode::InvalidParameter, "steps"),
        (with("anisora", "steps", json!(9)), ErrorCode::InvalidParameter, "steps"),
        (with("phr00t", "steps", json!(8)), ErrorCode::InvalidParameter, "steps"),
        (with("phr00t", "cfg", json!(1.5)), ErrorCode::InvalidParameter, "cfg"),
        (with("phr00t", "cfg", json!(0.0)), ErrorCode::InvalidParameter, "cfg"),
        (with("anisora", "cfg", json!(-1.0)), ErrorCode::InvalidParameter, "cfg"),
        (with("anisora", "cfg", json!("5")), ErrorCode::InvalidParameter, "cfg"),
        (with("anisora", "steps", json!("8")), ErrorCode::InvalidParameter, "steps"),
        (with("anisora", "steps", json!(8.0)), ErrorCode::InvalidParameter, "steps"),
        (with("anisora", "width", json!(-64)), ErrorCode::InvalidParameter, "width"),
        (with("anisora", "width", json!(4096)), ErrorCode::InvalidParameter, "width"),
        (with("anisora", "width", json!(65)), ErrorCode::InvalidParameter, "width"),
        (with("anisora", "height", json!(0)), ErrorCode::InvalidParameter, "height"),
        (with("anisora", "frames", json!(1000)), ErrorCode::InvalidParameter, "frames"),
        (with("anisora", "frames", json!(true)), ErrorCode::InvalidParameter, "frames"),
        (with("anisora", "seed", json!(-1)), ErrorCode::InvalidParameter, "seed"),
        (with("anisora", "seed", json!("7")), ErrorCode::InvalidParameter, "seed"),
        (with("anisora", "prompt", json!("")), ErrorCode::InvalidParameter, "prompt"),
        (with("anisora", "prompt", json!("   ")), ErrorCode::InvalidParameter, "prompt"),
        (with("anisora", "prompt", json!("\u{0}\u{0}")), ErrorCode::InvalidParameter, "prompt"),
        (with("anisora", "prompt", json!("\u{1b}\t\u{7f}\n")), ErrorCode::InvalidParameter, "prompt"),
        (with("anisora", "prompt", json!(long.clone())), ErrorCode::InvalidParameter, "prompt"),
        (with("anisora", "prompt", json!(12)), ErrorCode::InvalidParameter, "prompt"),
        (with("anisora", "negative_prompt", json!(long)), ErrorCode::InvalidParameter, "negative_prompt"),
        (without("anisora", "prompt"), ErrorCode::InvalidParameter, "prompt"),
        (with("anisora", "model", json!("sdxl")), ErrorCode::UnknownModel, "model"),
        (with("anisora", "model", json!("AniSora")), ErrorCode::UnknownModel, "model"),
        (with("anisora", "model", json!(3)), ErrorCode::InvalidParameter, "model"),
        (without("anisora", "model"), ErrorCode::InvalidParameter, "model"),
        (with("anisora", "v", json!(2)), ErrorCode::InvalidParameter, "v"),
        (without("anisora", "v"), ErrorCode::InvalidParameter, "v"),
        (with("anisora", "task_id", json!("has space")), ErrorCode::InvalidParameter, "task_id"),
        (with("anisora", "task_id", json!("x".repeat(65))), ErrorCode::InvalidParameter, "task_id"),
        (without("anisora", "task_id"), ErrorCode::InvalidParameter, "task_id"),
        (with("anisora", "submitted_at_ms", json!(-5)), ErrorCode::InvalidParameter, "submitted_at_ms"),
    ];
    for (body, code, reason) in cases {
        for result in [validate_json(&body, &s), decode_msgpack(&to_msgpack(&body), &s)] {
            let err = result.expect_err(&format!("accepted {body}"));
            assert_eq!(
                (err.rejection.code, err.rejection.reason.as_str()),
                (code, reason),
                "{body}: {}",
                err.rejection.message
            );
            assert!(!err.rejection.message.is_empty());
        }
    }
}

#[test]
fn non_finite_floats_are_rejected_in_msgpack() {
    let s = fixture();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let valid = to_msgpack(&base("anisora"));
        let mut value = rmpv::decode::read_value(&mut valid.as_slice()).unwrap();
        if let rmpv::Value::Map(entries) = &mut value {
            for (k, v) in entries.iter_mut() {
                if k.as_str() == Some("cfg") {
                    *v = rmpv::Value::F64(bad);
                }
            }
        }
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &value).unwrap();
        let err = decode_msgpack(&body, &s).unwrap_err();
        assert_eq!((err.rejection.code, err.rejection.reason.as_str()), (ErrorCode::InvalidParameter, "cfg"));
        assert_eq!(err.task_id.as_deref(), Some("task-1"), "the reply can still be sent");
    }
}

#[test]
fn undecodable_bodies_are_malformed() {
    let s = fixture();
    let array = rmp_serde::to_vec(&("task-1", "anisora")).unwrap();
    let huge = vec![0x90u8; MAX_BODY_BYTES + 1];
    for body in [&b""[..], b"not msgpack \xff\xff", &array, &huge, &[0x81, 0x01, 0x02]] {
        let err = decode_msgpack(body, &s).unwrap_err();
        assert_eq!(err.rejection.code, ErrorCode::MalformedMessage, "{body:?}");
        assert_eq!(err.task_id, None, "no id to read in {body:?}");
    }
    assert_eq!(validate_json(&json!([1, 2]), &s).unwrap_err().rejection.code, ErrorCode::MalformedMessage);
}

/// A map whose `task_id` comes first, then `rest`, encoded by hand as a publisher in
/// another language might.
fn map_with(rest: Vec<(rmpv::Value, rmpv::Value)>) -> Vec<u8> {
    let mut entries = vec![(rmpv::Value::from("task_id"), rmpv::Value::from("task-1"))];
    entries.extend(rest);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &rmpv::Value::Map(entries)).unwrap();
    out
}

#[test]
fn malformed_bodies_with_a_readable_task_id_name_it() {
    let s = fixture();
    let mut trailing = to_msgpack(&base("anisora"));
    trailing.push(0xc0);
    let named = map_with(vec![(rmpv::Value::from("ok"), rmpv::Value::from(1))]);
    let at = named.windows(3).position(|w| w == b"\xa2ok").expect("the key");
    let mut bad_key = named.clone();
    bad_key[at + 1..at + 3].copy_from_slice(&[0xff, 0xfe]);
    let oversized = map_with(vec![(rmpv::Value::from("prompt"), rmpv::Value::from("x".repeat(MAX_BODY_BYTES)))]);
    let marked = map_with(vec![(rmpv::Value::from("x-extra"), rmpv::Value::Nil)]);
    let mut deep = marked[..marked.len() - 1].to_vec(); // the nil, replaced by 5,000 nested arrays
    deep.extend(std::iter::repeat_n(0x91u8, 5_000));
    deep.push(0x01);
    let list = map_with(vec![(rmpv::Value::from("x-list"), rmpv::Value::Array(vec![rmpv::Value::from(7); 9]))]);
    let truncated = &list[..list.len() - 4];
    let cases: [(&str, &[u8]); 5] = [
        ("trailing bytes after the map", &trailing),
        ("a key that is not UTF-8", &bad_key),
        ("a body over the size limit", &oversized),
        ("nesting deeper than the decoder reads", &deep),
        ("a truncated array", truncated),
    ];
    for (shape, body) in cases {
        let err = decode_msgpack(body, &s).unwrap_err();
        assert_eq!(err.rejection.code, ErrorCode::MalformedMessage, "{shape}: {err:?}");
        assert_eq!(err.task_id.as_deref(), Some("task-1"), "{shape}");
    }
}

#[test]
fn a_refusal_falls_back_to_the_message_id() {
    let s = fixture();
    let garbage = decode_msgpack(b"\xc1 not msgpack", &s).unwrap_err();
    assert_eq!(garbage.reply_to(Some("m-1")).as_deref(), Some("m-1"));
    assert_eq!(garbage.reply_to(Some("not a task id")), None);
    assert_eq!(garbage.reply_to(None), None);
    let named = decode_msgpack(&map_with(vec![]), &s).unwrap_err();
    assert_eq!(named.reply_to(Some("m-1")).as_deref(), Some("task-1"), "the body's id wins");
}

#[test]
fn task_id_is_recovered_for_replies_when_valid() {
    let s = fixture();
    let err = validate_json(&with("anisora", "steps", json!(3)), &s).unwrap_err();
    assert_eq!(err.task_id.as_deref(), Some("task-1"));
    let err = validate_json(&with("anisora", "task_id", json!("bad id!")), &s).unwrap_err();
    assert_eq!(err.task_id, None);
}

#[test]
fn unknown_keys_are_ignored_and_seed_is_stable() {
    let s = fixture();
    let r = validate_json(&with("anisora", "extra", json!({"nested": true})), &s).unwrap();
    let no_seed = validate_json(&without("anisora", "seed"), &s).unwrap();
    assert_eq!(r.effective_seed(), 7);
    assert_eq!(no_seed.effective_seed(), no_seed.clone().effective_seed());
    assert_ne!(no_seed.effective_seed(), 7);
}

#[test]
fn seeds_past_u64_are_out_of_range_not_floats() {
    let s = fixture();
    let max = validate_json(&with("anisora", "seed", json!(u64::MAX)), &s).expect("2^64-1 is a seed");
    assert_eq!(max.seed, Some(u64::MAX));
    // serde_json reads 2^64 as a float; the message still says what is wrong.
    let body: serde_json::Value = serde_json::from_str(
        &with("anisora", "seed", json!(0)).to_string().replace("\"seed\":0", "\"seed\":18446744073709551616"),
    )
    .expect("JSON");
    let err = validate_json(&body, &s).expect_err("2^64 is refused");
    assert_eq!(err.rejection.reason, "seed");
    assert!(err.rejection.message.contains("0..=2^64-1, got 18446744073709551616"), "{}", err.rejection.message);
    let half = validate_json(&with("anisora", "seed", json!(1.5)), &s).expect_err("1.5 is refused");
    assert!(half.rejection.message.contains("got float"), "{}", half.rejection.message);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        /// No byte string panics the decoder; every failure carries a contract code.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let s = fixture();
            if let Err(e) = decode_msgpack(&body, &s) {
                prop_assert!(ErrorCode::ALL.contains(&e.rejection.code));
            }
        }

        /// Mutated valid requests are either valid (and re-encode identically) or coded.
        #[test]
        fn mutated_fields_are_coded(key in prop::sample::select(vec!["steps", "cfg", "width", "height", "frames", "seed", "prompt", "model", "v", "task_id"]),
                                    int in any::<i64>(), float in any::<f64>(), text in ".{0,40}", pick in 0u8..4) {
            let s = fixture();
            let value = match pick { 0 => json!(int), 1 => serde_json::Number::from_f64(float).map(serde_json::Value::Number).unwrap_or(json!(null)), 2 => json!(text), _ => json!(null) };
            let body = with("anisora", key, value);
            match decode_msgpack(&to_msgpack(&body), &s) {
                Ok(r) => prop_assert_eq!(decode_msgpack(&r.to_msgpack(), &s).unwrap(), r),
                Err(e) => prop_assert!(matches!(e.rejection.code, ErrorCode::InvalidParameter | ErrorCode::UnknownModel)),
            }
        }
    }
}
