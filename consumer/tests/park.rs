//! Parked pipelines in the degraded worker (issue #16): a switch back to a recently
//! used model loads its parked ORT form and generates the same video; the host budget
//! evicts the least recently used; bad parked bytes fall back to the files and are
//! dropped, and the request still succeeds.

mod common;

use common::*;
use std::sync::Arc;
use warmlane_consumer::runner::protocol::ParkedPart;
use warmlane_consumer::runner::{RunnerConfig, RunnerEngine};
use warmlane_consumer::Engine;
use warmlane_engine::park::ParkTarget;
use warmlane_engine::ComponentRole;
use warmlane_shared::{Settings, ValidRequest};

fn engine(settings: &Arc<Settings>, host_park_bytes: u64) -> RunnerEngine {
    let cfg = RunnerConfig { host_park_bytes, ..runner_config() };
    RunnerEngine::new(settings.clone(), cfg).expect("runner engine")
}

/// The same prompt and seed under a new task id.
fn same_request(settings: &Settings, model: &str, task_id: &str) -> ValidRequest {
    let body = serde_json::json!({ "v": 1, "task_id": task_id, "model": model, "prompt": "a fox in snow", "seed": 7 });
    warmlane_shared::validate_json(&body, settings).expect("valid request")
}

fn run(engine: &mut RunnerEngine, settings: &Settings, model: &str, task_id: &str) -> Vec<u8> {
    let out = scratch(&format!("park-{task_id}"));
    let req = same_request(settings, model, task_id);
    let output = engine
        .generate(&req, "degraded", &out, &mut |_, _| std::ops::ControlFlow::Continue(()))
        .unwrap_or_else(|f| panic!("{task_id}: {f}"));
    std::fs::read(output.path).expect("video")
}

#[test]
fn a_switch_back_loads_the_parked_pipeline_and_generates_the_same_video() {
    let settings = demo_settings();
    let mut engine = engine(&settings, 1 << 30);
    let cold = run(&mut engine, &settings, "anisora", "a1");
    run(&mut engine, &settings, "phr00t", "p1");
    assert_eq!(engine.park().models(), ["anisora", "phr00t"], "both cold loads parked their pipeline");
    assert_eq!(engine.parked_loads(), 0);
    let warm = run(&mut engine, &settings, "anisora", "a2");
    assert_eq!(engine.parked_loads(), 1, "the switch back loaded the parked bytes");
    assert_eq!(warm, cold, "same prompt and seed, same video from the parked pipeline");
    assert_eq!(engine.park().models(), ["phr00t", "anisora"], "anisora is now the most recently used");
    assert_eq!(engine.loads(), 3);
    engine.release();
}

#[test]
fn the_host_budget_evicts_the_least_recently_used_pipeline() {
    let settings = demo_settings();
    // Measure one parked pipeline, then give the next engine room for one, not two.
    let mut probe = engine(&settings, 1 << 30);
    run(&mut probe, &settings, "anisora", "m1");
    let one = probe.park().bytes();
    probe.release();
    let mut engine = engine(&settings, one + one / 4);
    run(&mut engine, &settings, "anisora", "e1");
    run(&mut engine, &settings, "phr00t", "e2");
    assert_eq!(engine.park().models(), ["phr00t"], "anisora evicted to fit phr00t");
    assert!(engine.park().bytes() <= engine.park().budget());
    run(&mut engine, &settings, "anisora", "e3");
    assert_eq!(engine.parked_loads(), 0, "anisora was evicted: the switch back was a cold load");
    engine.release();
}

#[test]
fn bad_parked_bytes_fall_back_to_the_files_and_are_dropped() {
    let settings = demo_settings();
    let mut engine = engine(&settings, 1 << 30);
    let cold = run(&mut engine, &settings, "anisora", "b1");
    run(&mut engine, &settings, "phr00t", "b2");
    // Replace anisora's parked denoiser with garbage, as a corrupted or truncated park would be.
    let garbage = ParkTarget::new("garbage").expect("memfd");
    std::fs::write(garbage.path(), vec![0x5a_u8; 4096]).expect("write");
    let part = ParkedPart { role: ComponentRole::Denoiser, fd: garbage.raw_fd(), len: 4096 };
    engine.park_mut().adopt("anisora", std::process::id(), &[part]).expect("adopt the garbage");
    let again = run(&mut engine, &settings, "anisora", "b3");
    assert_eq!(again, cold, "the request was served from the files");
    assert_eq!(engine.parked_loads(), 0, "the parked load did not count");
    assert_eq!(engine.park().models(), ["phr00t"], "the bad parked bytes were dropped");
    // The next cold load of anisora parks it again.
    run(&mut engine, &settings, "phr00t", "b4");
    run(&mut engine, &settings, "anisora", "b5");
    assert_eq!(engine.park().models(), ["phr00t", "anisora"]);
    engine.release();
}
