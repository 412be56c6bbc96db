//! A warm lane's memory comes back (issue #16): 30 requests of random sizes through a
//! lane engine, the largest size the settings allow among them, and after every
//! request the worker's RSS is back near its post-load baseline, so it plateaus
//! instead of keeping the largest request's memory for the worker's life, and the
//! memory snapshot's `used_bytes` is within 10 % of the measured RSS.
//!
//! Its own test binary: it measures this process's RSS.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use warmlane_consumer::managed::ManagedEngine;
use warmlane_consumer::memory::{Budget, BudgetSource, MemoryManager, Policy};
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_consumer::Engine;
use warmlane_engine::memory::rss_bytes;

const MODEL: &str = "phr00t";
const MIB: u64 = 1 << 20;
/// What glibc may keep after frees (see the bound below).
const ALLOCATOR_KEEP: u64 = 64 * MIB;

/// Sizes: a seeded mix over the allowed range, with the maximum at request 15. The
/// random ones are kept to at most a third of each maximum side so that the test stays
/// within a few minutes on two cores in a debug build (the maximum alone takes ~35 s
/// in release).
fn sizes(max: (u32, u32, u32)) -> Vec<(u32, u32, u32)> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |lo: u32, hi: u32, step: u32| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        lo + ((state >> 33) as u32 % ((hi - lo) / step + 1)) * step
    };
    (0..30)
        .map(|i| match i {
            15 => max,
            _ => (next(16, max.0 / 3, 8), next(16, max.1 / 3, 8), next(1, max.2 / 3, 1)),
        })
        .collect()
}

#[test]
fn memory_plateaus_and_comes_back_after_the_largest_request() {
    let settings = demo_settings();
    let ms = settings.model(MODEL).expect("model");
    let max = (
        ms.width.max.expect("a width limit"),
        ms.height.max.expect("a height limit"),
        ms.frames.max.expect("a frame limit"),
    );
    let budget = Budget { bytes: 20 << 30, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 };
    let manager = Arc::new(MemoryManager::new(budget, Policy::default()));
    let mut lane = ManagedEngine::new(OrtEngine::new(settings.clone(), None).expect("ORT"), settings.clone(), manager);
    let out = scratch("plateau");
    let run = |lane: &mut ManagedEngine<OrtEngine>, i: usize, (w, h, f): (u32, u32, u32)| {
        let body = serde_json::json!({ "v": 1, "task_id": format!("plateau-{i}"), "model": MODEL,
            "prompt": "a fox", "seed": 7, "width": w, "height": h, "frames": f });
        let req = warmlane_shared::validate_json(&body, &settings).expect("a valid size");
        lane.generate(&req, MODEL, &out, &mut |_, _| std::ops::ControlFlow::Continue(()))
            .unwrap_or_else(|e| panic!("request {i} {w}x{h}x{f}: {e}"));
        // The shim serves results from disk; only the worker's memory is measured here.
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::create_dir_all(&out);
    };
    lane.prepare(MODEL).expect("load");
    run(&mut lane, 99, (64, 64, 8));
    let baseline = rss_bytes();
    // 10 % above the post-load baseline plus what the allocator is configured to keep.
    // ONNX Runtime's CPU arena is off; glibc keeps freed blocks below its dynamic mmap
    // threshold (up to 32 MiB each) in the heap of the thread that allocated them, and
    // two threads allocate here: 64 MiB. Measured: up to +39 MiB at this demo's 43 MiB
    // baseline (debug build); the arena, when on, keeps 7.7 GB.
    let bound = baseline + baseline / 10 + ALLOCATOR_KEEP;
    let mut after = Vec::new();
    let mut peak_of_max = 0;
    for (i, size) in sizes(max).into_iter().enumerate() {
        let sampler = (size == max).then(|| Sampler::start(Duration::from_millis(20)));
        run(&mut lane, i, size);
        if let Some(s) = sampler {
            peak_of_max = peak_of_max.max(s.stop().0);
        }
        let (rss, used) = (rss_bytes(), memory_json(&lane)["used_bytes"].as_u64().unwrap_or(0));
        assert!(used.abs_diff(rss) <= rss / 10, "request {i}: snapshot used {used} B, measured RSS {rss} B");
        after.push((size, rss));
    }
    println!(
        "plateau ({MODEL}): baseline {} MiB, bound {} MiB, peak during the largest request ({}x{}x{}) {} MiB, \
         after each request (MiB): {:?}",
        baseline / MIB,
        bound / MIB,
        max.0,
        max.1,
        max.2,
        peak_of_max / MIB,
        after.iter().map(|(_, r)| r / MIB).collect::<Vec<_>>()
    );
    assert!(peak_of_max > baseline + (1 << 30), "the largest request took memory: peak {} MiB", peak_of_max / MIB);
    for (i, ((w, h, f), rss)) in after.iter().enumerate() {
        assert!(*rss <= bound, "after request {i} ({w}x{h}x{f}) RSS {} MiB > bound {} MiB", rss / MIB, bound / MIB);
    }
}
