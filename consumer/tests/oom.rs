//! OOM recovery through the manager with the engine's fault injection
//! (`FaultPlan.oom_next_runs = N`): N <= 3 recovers, N > 3 fails `gpu_oom`, and the
//! engine serves the next request.

mod common;

use common::*;
use std::sync::Arc;
use warmlane_consumer::managed::ManagedEngine;
use warmlane_consumer::memory::{Budget, BudgetSource, MemoryManager, Policy};
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_consumer::Engine;
use warmlane_engine::FaultPlan;
use warmlane_shared::ErrorCode;

#[test]
fn oom_retries_up_to_three_then_fails_and_serves_the_next() {
    let settings = demo_settings();
    let out = scratch("oom");
    let budget = Budget { bytes: 1 << 30, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 };
    let manager = Arc::new(MemoryManager::new(budget, Policy::default()));
    let mut engine =
        ManagedEngine::new(OrtEngine::new(settings.clone(), None).expect("ort"), settings.clone(), manager);
    engine.prepare("anisora").expect("load");
    let mut retries = 0;
    for (n, ok) in [(0, true), (1, true), (3, true), (4, false), (0, true), (7, false)] {
        engine.inner_mut().set_faults(FaultPlan { oom_next_runs: n, ..FaultPlan::default() });
        let req = request(&settings, "anisora", &format!("oom-{n}-{retries}"));
        let result = engine.generate(&req, "anisora", &out, &mut |_, _| std::ops::ControlFlow::Continue(()));
        match (ok, result) {
            (true, Ok(_)) => retries += n,
            (false, Err(f)) => {
                assert_eq!(f.code, ErrorCode::GpuOom, "{}", f.message);
                assert!(f.message.contains("after 3 retries"), "{}", f.message);
                retries += 3;
            }
            (_, r) => panic!("N = {n}: unexpected {r:?}"),
        }
        assert_eq!(memory_json(&engine)["oom_retries"], retries, "N = {n}");
        engine.inner_mut().set_faults(FaultPlan::default());
        let next = request(&settings, "anisora", &format!("after-{n}-{retries}"));
        engine
            .generate(&next, "anisora", &out, &mut |_, _| std::ops::ControlFlow::Continue(()))
            .unwrap_or_else(|f| panic!("after N = {n}: {f}"));
    }
    assert_eq!(engine.loads(), 1, "recovery reloads components, never the pipeline");
}
