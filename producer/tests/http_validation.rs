//! Every invalid parameter is a 422 through HTTP, and nothing reaches the broker:
//! after all the refusals every queue of the test's prefix is still empty.

mod http_support;

use http_support::*;
use serde_json::{json, Value};

fn with(base: Value, key: &str, value: Value) -> Value {
    let mut b = base;
    b[key] = value;
    b
}

fn without(base: Value, key: &str) -> Value {
    let mut b = base;
    b.as_object_mut().unwrap().remove(key);
    b
}

#[tokio::test]
async fn invalid_parameters_are_422_and_publish_nothing() {
    let h = Harness::new().await;
    let app = h.app();
    let a = anisora("a lighthouse in a storm");
    let p = json!({"model": "phr00t", "prompt": "a lighthouse", "steps": 4, "cfg": 1.0});
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("anisora steps 4", with(a.clone(), "steps", json!(4)), "invalid_parameter", "steps"),
        ("anisora steps 9", with(a.clone(), "steps", json!(9)), "invalid_parameter", "steps"),
        ("phr00t steps 8", with(p.clone(), "steps", json!(8)), "invalid_parameter", "steps"),
        ("phr00t cfg 7.5", with(p.clone(), "cfg", json!(7.5)), "invalid_parameter", "cfg"),
        ("phr00t cfg 0", with(p.clone(), "cfg", json!(0)), "invalid_parameter", "cfg"),
        ("negative cfg", with(a.clone(), "cfg", json!(-1.0)), "invalid_parameter", "cfg"),
        ("negative width", with(a.clone(), "width", json!(-64)), "invalid_parameter", "width"),
        ("negative frames", with(a.clone(), "frames", json!(-1)), "invalid_parameter", "frames"),
        ("negative seed", with(a.clone(), "seed", json!(-5)), "invalid_parameter", "seed"),
        ("steps as a string", with(a.clone(), "steps", json!("8")), "invalid_parameter", "steps"),
        ("width as a string", with(a.clone(), "width", json!("64")), "invalid_parameter", "width"),
        ("cfg as a string", with(a.clone(), "cfg", json!("5.0")), "invalid_parameter", "cfg"),
        ("seed as a float", with(a.clone(), "seed", json!(1.5)), "invalid_parameter", "seed"),
        ("empty prompt", with(a.clone(), "prompt", json!("")), "invalid_parameter", "prompt"),
        ("blank prompt", with(a.clone(), "prompt", json!("   ")), "invalid_parameter", "prompt"),
        ("oversized prompt", with(a.clone(), "prompt", json!("x".repeat(2001))), "invalid_parameter", "prompt"),
        ("prompt missing", without(a.clone(), "prompt"), "invalid_parameter", "prompt"),
        ("prompt as a number", with(a.clone(), "prompt", json!(3)), "invalid_parameter", "prompt"),
        (
            "oversized negative prompt",
            with(a.clone(), "negative_prompt", json!("n".repeat(2001))),
            "invalid_parameter",
            "negative_prompt",
        ),
        ("unknown model", with(a.clone(), "model", json!("sora")), "unknown_model", "model"),
        ("model missing", without(a.clone(), "model"), "invalid_parameter", "model"),
        ("width too large", with(a.clone(), "width", json!(4096)), "invalid_parameter", "width"),
        ("width too small", with(a.clone(), "width", json!(8)), "invalid_parameter", "width"),
        ("width not a multiple", with(a.clone(), "width", json!(70)), "invalid_parameter", "width"),
        ("height too large", with(a.clone(), "height", json!(2000)), "invalid_parameter", "height"),
        ("frames too many", with(a.clone(), "frames", json!(10_000)), "invalid_parameter", "frames"),
        ("frames zero", with(a.clone(), "frames", json!(0)), "invalid_parameter", "frames"),
        ("bad task id", with(a.clone(), "task_id", json!("has space")), "invalid_parameter", "task_id"),
        ("long task id", with(a.clone(), "task_id", json!("t".repeat(65))), "invalid_parameter", "task_id"),
        ("task id number", with(a.clone(), "task_id", json!(7)), "invalid_parameter", "task_id"),
        ("version 2", with(a.clone(), "v", json!(2)), "invalid_parameter", "v"),
        ("boolean steps", with(a.clone(), "steps", json!(true)), "invalid_parameter", "steps"),
    ];
    for (name, body, code, reason) in cases {
        let res = post_json(&app, "/generate", &body, &[]).await;
        let err = res.envelope(422, code);
        assert_eq!(err["reason"], reason, "{name}: {err}");
    }
    for (queue, depth) in h.all_depths().await {
        assert_eq!(depth, 0, "{queue} must stay empty after refusals");
    }
    h.cleanup().await;
}
