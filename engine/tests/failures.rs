//! Failure paths: every failed generation still cleans up, logs exactly one cleanup
//! line with the right code, and leaves the pipeline usable. A CUDA request on this
//! CPU-only library falls back to CPU loudly and still generates.

mod common;

use common::{capture, demo_settings, init_runtime, job, repo_root, scratch};
use std::time::Duration;
use warmlane_engine::{EngineError, FaultPlan, LoadOptions, Pipeline, Provider};
use warmlane_shared::ErrorCode;

fn load(model: &str, opts: &LoadOptions) -> Pipeline {
    init_runtime();
    Pipeline::load(model, &demo_settings(model), &repo_root(), opts).expect("load")
}

fn only_cleanup_line(captured: &common::Captured) -> serde_json::Value {
    let lines = captured.target("warmlane::cleanup");
    assert_eq!(lines.len(), 1, "exactly one cleanup line: {lines:?}");
    let line = lines.into_iter().next().expect("one line");
    assert_eq!(line["message"], "post-generation cleanup");
    line
}

#[test]
fn forced_failure_mid_loop_cleans_up_and_reports_inference_failed() {
    let out = scratch("fault-step");
    let faults = FaultPlan { fail_at_step: Some(3), oom_next_runs: 0 };
    let mut pipeline = load("anisora", &LoadOptions { faults, ..LoadOptions::default() });
    let mut progress = Vec::new();
    let (result, captured) = capture(|| {
        pipeline.generate(&job("fault_step", 8, 5.0, 1, &out), &mut |s, n| {
            progress.push((s, n));
            std::ops::ControlFlow::Continue(())
        })
    });
    let error = result.expect_err("fault at step 3");
    assert_eq!(error.code(), ErrorCode::InferenceFailed);
    assert_eq!(progress, vec![(1, 8), (2, 8)]);
    let line = only_cleanup_line(&captured);
    assert_eq!(line["task_id"], "fault_step");
    assert_eq!(line["model"], "anisora");
    assert_eq!(line["lane"], "test");
    assert_eq!(line["outcome"], "failed");
    assert_eq!(line["code"], "inference_failed");
    assert_eq!(line["denoiser_calls"], 4);
    assert!(line["rss_before"].as_u64().is_some_and(|b| b > 0));
    assert!(line["rss_after"].as_u64().is_some_and(|b| b > 0));
    assert!(!out.join("fault_step.gif").exists(), "no partial output");

    // Still usable once the fault is lifted.
    pipeline.set_faults(FaultPlan::default());
    let (result, captured) = capture(|| {
        pipeline.generate(&job("after_fault", 8, 5.0, 1, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
    });
    assert_eq!(result.expect("generates after the failure").denoiser_calls, 16);
    let line = only_cleanup_line(&captured);
    assert_eq!((line["outcome"].as_str(), line["code"].as_str()), (Some("done"), Some("")));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn simulated_allocation_failures_map_to_gpu_oom_then_recover() {
    let out = scratch("fault-oom");
    let faults = FaultPlan { fail_at_step: None, oom_next_runs: 2 };
    let mut pipeline = load("phr00t", &LoadOptions { faults, ..LoadOptions::default() });
    for attempt in 0..2 {
        let (result, captured) = capture(|| {
            pipeline.generate(&job(&format!("oom_{attempt}"), 4, 1.0, 1, &out), &mut |_, _| {
                std::ops::ControlFlow::Continue(())
            })
        });
        let error = result.expect_err("simulated OOM");
        assert!(error.is_oom(), "{error}");
        assert_eq!(error.code(), ErrorCode::GpuOom);
        assert_eq!(only_cleanup_line(&captured)["code"], "gpu_oom");
    }
    let generation = pipeline
        .generate(&job("oom_done", 4, 1.0, 1, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
        .expect("third try succeeds");
    assert_eq!(generation.denoiser_calls, 4);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn timeout_maps_to_inference_timeout_and_pipeline_stays_usable() {
    let out = scratch("timeout");
    let mut pipeline = load("phr00t", &LoadOptions::default());
    let mut slow = job("slow", 4, 1.0, 1, &out);
    slow.timeout = Duration::ZERO;
    let (result, captured) = capture(|| pipeline.generate(&slow, &mut |_, _| std::ops::ControlFlow::Continue(())));
    let error = result.expect_err("no time at all");
    assert!(matches!(error, EngineError::Timeout { .. }), "{error}");
    assert_eq!(error.code(), ErrorCode::InferenceTimeout);
    let line = only_cleanup_line(&captured);
    assert_eq!((line["outcome"].as_str(), line["code"].as_str()), (Some("failed"), Some("inference_timeout")));
    pipeline
        .generate(&job("fast", 4, 1.0, 1, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
        .expect("next job runs");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn invalid_job_is_invalid_parameter_and_still_logged() {
    let out = scratch("invalid");
    let mut pipeline = load("phr00t", &LoadOptions::default());
    let mut odd = job("odd", 4, 1.0, 1, &out);
    odd.width = 30;
    let (result, captured) = capture(|| pipeline.generate(&odd, &mut |_, _| std::ops::ControlFlow::Continue(())));
    let error = result.expect_err("width not a multiple of 8");
    assert_eq!(error.code(), ErrorCode::InvalidParameter);
    assert!(error.to_string().contains("width"), "{error}");
    assert_eq!(only_cleanup_line(&captured)["code"], "invalid_parameter");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn cuda_request_falls_back_to_cpu_loudly_and_generates() {
    init_runtime();
    let out = scratch("cuda-fallback");
    let opts = LoadOptions {
        provider_override: Some(Provider::Cuda),
        memory_limit_bytes: Some(1 << 30),
        ..LoadOptions::default()
    };
    let settings = demo_settings("phr00t");
    let ((pipeline, generation), captured) = capture(|| {
        let mut pipeline = Pipeline::load("phr00t", &settings, &repo_root(), &opts).expect("load falls back");
        let generation =
            pipeline.generate(&job("cuda", 4, 1.0, 1, &out), &mut |_, _| std::ops::ControlFlow::Continue(()));
        (pipeline, generation)
    });
    if pipeline.memory().components.iter().all(|c| c.provider == Provider::Cuda) {
        // A host with a working CUDA library: nothing to fall back from.
        println!("CUDA provider available; fallback not exercised");
        return;
    }
    let fallbacks: Vec<_> = captured
        .target("warmlane::engine")
        .into_iter()
        .filter(|l| l["level"] == "ERROR" && l["message"].as_str().is_some_and(|m| m.contains("falling back to CPU")))
        .collect();
    assert_eq!(fallbacks.len(), 3, "one loud line per component: {fallbacks:?}");
    println!("fallback: {}", fallbacks[0]);
    let memory = pipeline.memory();
    assert!(memory.components.iter().all(|c| c.requested_provider == Provider::Cuda && c.provider == Provider::Cpu));
    let generation = generation.expect("generates on CPU");
    assert_eq!(generation.provider, Provider::Cpu);
    assert_eq!(generation.denoiser_calls, 4);
    let line = captured.target("warmlane::cleanup").pop().expect("cleanup line");
    assert_eq!(line["provider"], "cpu");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn deadline_mid_loop_stops_the_loop_with_inference_timeout() {
    let out = scratch("timeout-mid");
    let mut pipeline = load("anisora", &LoadOptions::default());
    let mut long = job("long", 200, 5.0, 1, &out);
    (long.width, long.height, long.frames) = (256, 256, 16);
    long.timeout = Duration::from_millis(40);
    let mut steps_done = 0;
    let (result, captured) = capture(|| {
        pipeline.generate(&long, &mut |s, _| {
            steps_done = s;
            std::ops::ControlFlow::Continue(())
        })
    });
    let error = result.expect_err("200 guided steps at 256x256x16 do not fit in 40 ms");
    assert_eq!(error.code(), ErrorCode::InferenceTimeout, "{error}");
    assert!(steps_done < 200, "stopped early, after step {steps_done}");
    let line = only_cleanup_line(&captured);
    assert_eq!(line["code"], "inference_timeout");
    pipeline
        .generate(&job("after_timeout", 8, 5.0, 1, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
        .expect("usable after timeout");
    let _ = std::fs::remove_dir_all(&out);
}
