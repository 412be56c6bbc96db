//! Dedicated lanes on CPU: two in-process engines, one per model, under the memory
//! manager. Each loads its model once at warm-up; 20 alternating requests never wait
//! for a load (FR-019).

mod common;

use common::*;
use std::sync::Arc;
use warmlane_consumer::managed::ManagedEngine;
use warmlane_consumer::memory::{Budget, BudgetSource, MemoryManager, Policy};
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_consumer::Engine;

fn lane(settings: &Arc<warmlane_shared::Settings>) -> ManagedEngine<OrtEngine> {
    let budget = Budget { bytes: 2 << 30, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 };
    let manager = Arc::new(MemoryManager::new(budget, Policy::default()));
    ManagedEngine::new(OrtEngine::new(settings.clone(), None).expect("ONNX Runtime loads"), settings.clone(), manager)
}

#[test]
fn two_lanes_load_once_and_never_wait() {
    let settings = demo_settings();
    let out = scratch("lanes");
    let mut lanes = [("anisora", lane(&settings)), ("phr00t", lane(&settings))];
    for (model, engine) in &mut lanes {
        assert!(engine.prepare(model).expect("warm-up").is_some(), "warm-up loads");
    }
    for i in 0..20 {
        let (model, engine) = &mut lanes[i % 2];
        assert_eq!(engine.prepare(model).expect("resident"), None, "request {i} waited for a load");
        let req = request(&settings, model, &format!("lane-{i}"));
        engine.generate(&req, model, &out, &mut |_, _| {}).unwrap_or_else(|f| panic!("request {i}: {f}"));
        engine.maintain();
    }
    for (model, engine) in &lanes {
        assert_eq!(engine.loads(), 1, "{model} loaded exactly once");
        assert_eq!(engine.resident().as_deref(), Some(*model));
        let snap = engine.memory();
        assert_eq!(snap["pipelines"][0]["model"], *model);
        let comps = snap["pipelines"][0]["components"].as_array().cloned().unwrap_or_default();
        assert_eq!(comps.len(), 3, "{snap}");
        assert!(comps.iter().all(|c| c["device"] == "cpu"), "nothing offloaded on a warm CPU lane: {snap}");
        println!("{model} lane memory: used {} of {} bytes, loads {}", snap["used_bytes"], snap["budget_bytes"], snap["loads"]);
    }
}
