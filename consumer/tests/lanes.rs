//! Dedicated lanes on CPU: in-process engines, one per model (the two demo models and
//! the real Wan2.1 architecture), under the memory manager. Each loads its model once
//! at warm-up; 30 alternating requests never wait for a load (FR-019).

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
fn lanes_load_once_and_never_wait() {
    let settings = demo_settings();
    let out = scratch("lanes");
    let mut lanes = [("anisora", lane(&settings)), ("phr00t", lane(&settings)), ("wan-tiny", lane(&settings))];
    for (model, engine) in &mut lanes {
        assert!(engine.prepare(model).expect("warm-up").is_some(), "warm-up loads");
    }
    for i in 0..30 {
        let (model, engine) = &mut lanes[i % 3];
        assert_eq!(engine.prepare(model).expect("resident"), None, "request {i} waited for a load");
        let req = request(&settings, model, &format!("lane-{i}"));
        engine
            .generate(&req, model, &out, &mut |_, _| std::ops::ControlFlow::Continue(()))
            .unwrap_or_else(|f| panic!("request {i}: {f}"));
        engine.maintain();
    }
    for (model, engine) in &lanes {
        assert_eq!(engine.loads(), 1, "{model} loaded exactly once");
        assert_eq!(engine.resident().as_deref(), Some(*model));
        let snap = memory_json(engine);
        assert_eq!(snap["pipelines"][0]["model"], *model);
        let comps = snap["pipelines"][0]["components"].as_array().cloned().unwrap_or_default();
        assert_eq!(comps.len(), 3, "{snap}");
        assert!(comps.iter().all(|c| c["device"] == "cpu"), "nothing offloaded on a warm CPU lane: {snap}");
        println!(
            "{model} lane memory: used {} of {} bytes, loads {}",
            snap["used_bytes"], snap["budget_bytes"], snap["loads"]
        );
    }
}

fn devices(snap: &serde_json::Value) -> Vec<(String, String)> {
    snap["pipelines"][0]["components"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| (c["role"].as_str().unwrap_or("").to_string(), c["device"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Placement policies release components, never the pipeline: the text encoder after
/// use (policy `always`), the denoiser once idle past the threshold, everything but
/// the pinned VAE below the headroom; the next request reloads them without a load.
#[test]
fn placement_policies_release_components_not_the_pipeline() {
    use std::time::Duration;
    use warmlane_consumer::memory::policy::BetweenPrompts;
    let settings = demo_settings();
    let out = scratch("policies");
    let policy = Policy {
        idle_release: Some(Duration::ZERO),
        between_prompts: BetweenPrompts::Always,
        headroom_bytes: 0,
        ..Policy::default()
    };
    let budget = Budget { bytes: 2 << 30, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 };
    for model in ["anisora", "wan-tiny"] {
        let manager = Arc::new(MemoryManager::new(budget, policy));
        let mut engine =
            ManagedEngine::new(OrtEngine::new(settings.clone(), None).expect("ort"), settings.clone(), manager);
        release_and_reload(&mut engine, &settings, model, &out);
    }
    // Below the headroom every idle, non-pinned component goes; the VAE stays. The
    // headroom exceeds the whole budget, so free memory is below it whatever the
    // components measured (a load into heap freed by an earlier one can measure 0).
    let tight = Budget { bytes: 1, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 };
    let policy = Policy { headroom_bytes: 2 << 30, idle_release: None, ..Policy::default() };
    let mut engine = ManagedEngine::new(
        OrtEngine::new(settings.clone(), None).expect("ort"),
        settings.clone(),
        Arc::new(MemoryManager::new(Budget { bytes: 1 << 30, ..tight }, policy)),
    );
    engine
        .generate(&request(&settings, "phr00t", "pol-3"), "phr00t", &out, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("fits");
    let snap = memory_json(&engine);
    assert_eq!(
        devices(&snap),
        pairs(&[("text_encoder", "offloaded"), ("denoiser", "offloaded"), ("vae_decoder", "cpu")]),
        "{snap}"
    );
    assert!(snap["evictions"].as_u64() >= Some(2), "{snap}");
}

/// One model under release-happy policies: the text encoder goes after use, the
/// denoiser once idle, the pinned VAE stays; the next request reloads components
/// without a pipeline load.
fn release_and_reload(
    engine: &mut ManagedEngine<OrtEngine>,
    settings: &warmlane_shared::Settings,
    model: &str,
    out: &std::path::Path,
) {
    engine
        .generate(&request(settings, model, &format!("{model}-1")), model, out, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("first");
    assert_eq!(
        devices(&memory_json(engine)),
        pairs(&[("text_encoder", "offloaded"), ("denoiser", "cpu"), ("vae_decoder", "cpu")])
    );
    engine.maintain();
    let snap = memory_json(engine);
    assert_eq!(
        devices(&snap),
        pairs(&[("text_encoder", "offloaded"), ("denoiser", "offloaded"), ("vae_decoder", "cpu")])
    );
    let vae = &snap["pipelines"][0]["components"][2]["bytes"];
    assert_eq!(&snap["pipelines"][0]["bytes"], vae, "only the VAE is accounted: {snap}");
    // In use is what was measured (the worker's RSS, read at the last upkeep) when it
    // is more than the components' account.
    let (used, rss) = (snap["used_bytes"].as_u64().unwrap_or(0), snap["measured"]["worker_rss_bytes"].as_u64());
    assert!(used >= vae.as_u64().unwrap_or(u64::MAX), "{snap}");
    assert!(rss.is_some_and(|rss| used.abs_diff(rss) <= rss / 10), "used within 10 % of RSS: {snap}");
    engine
        .generate(&request(settings, model, &format!("{model}-2")), model, out, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("second reloads components");
    assert_eq!(devices(&memory_json(engine))[1], ("denoiser".to_string(), "cpu".to_string()));
    assert_eq!(engine.loads(), 1, "components come back without a pipeline load");
}
