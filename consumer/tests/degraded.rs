//! The degraded worker's engine end to end on CPU, with real ONNX Runtime in runner
//! children: SC-001 with heavy pipelines, swaps under a one-pipeline budget, refusal
//! under a too-small budget, and runner crashes and hangs.

mod common;

use common::*;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_consumer::managed::{Managed, ManagedEngine};
use warmlane_consumer::memory::{probe, Budget, BudgetSource, LoadDecision, MemoryManager, Policy};
use warmlane_consumer::runner::{RunnerEngine, RunnerFaults};
use warmlane_consumer::Engine;
use warmlane_shared::{ErrorCode, Settings};

/// Tests here measure the memory of this process and all its children, so they run
/// one at a time: another test's runner would count as this one's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn budget(bytes: u64) -> Budget {
    Budget { bytes, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 }
}

fn degraded(settings: &Arc<Settings>, budget_bytes: u64) -> ManagedEngine<RunnerEngine> {
    let manager = Arc::new(MemoryManager::new(budget(budget_bytes), Policy { headroom_bytes: 0, ..Policy::default() }));
    let inner = RunnerEngine::new(settings.clone(), runner_config()).expect("runner engine");
    ManagedEngine::new(inner, settings.clone(), manager)
}

fn model_of(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "anisora"
    } else {
        "phr00t"
    }
}

/// Peak worker + runner RSS of loading and running the larger pipeline alone.
fn larger_pipeline_alone(settings: &Arc<Settings>, out: &std::path::Path) -> u64 {
    let mut engine = degraded(settings, 8 << 30);
    let sampler = Sampler::start(Duration::from_millis(20));
    // Three cycles so that the 20 ms sampler sees the load transient as often as in the run.
    for i in 0..3 {
        let req = request(settings, "phr00t", &format!("sc001-alone-{i}"));
        engine.generate(&req, "degraded", out, &mut |_, _| ControlFlow::Continue(())).expect("phr00t alone");
        engine.release();
    }
    sampler.stop().0
}

/// SC-001 on CPU: 20 alternating heavy requests, zero `gpu_oom`, and the memory of
/// worker + runner never holds two pipelines: its peak stays within a stated margin of
/// the peak of the larger pipeline alone (load transient included).
#[test]
fn sc001_alternating_heavy_pipelines_never_hold_two() {
    let _serial = serial();
    let settings = heavy_settings();
    let out = scratch("sc001");
    let me = std::process::id();
    let alone = larger_pipeline_alone(&settings, &out);
    let mut engine = degraded(&settings, 8 << 30);
    let sampler = Sampler::start(Duration::from_millis(20));
    let mut steady = std::collections::BTreeMap::<&str, u64>::new();
    let started = Instant::now();
    for i in 0..20 {
        let model = model_of(i);
        let req = request(&settings, model, &format!("sc001-{i}"));
        let load = engine.prepare(model).expect("prepare");
        assert!(load.is_some(), "request {i}: an alternating request switches");
        let result = engine.generate(&req, "degraded", &out, &mut |_, _| ControlFlow::Continue(()));
        let output = result.unwrap_or_else(|f| panic!("request {i} ({model}) failed: {f}"));
        assert!(output.bytes > 0);
        let heavy_children = children_of(me).into_iter().filter(|c| probe::rss_of(*c).unwrap_or(0) > 100 << 20).count();
        assert_eq!(heavy_children, 1, "request {i}: exactly one runner holds a pipeline (the spare holds none)");
        let runner = engine.inner().runner_rss_bytes().expect("a runner is resident");
        let e = steady.entry(model).or_default();
        *e = (*e).max(runner);
        let snap = memory_json(&engine);
        assert_eq!(snap["pipelines"].as_array().map(Vec::len), Some(1), "{snap}");
        assert_eq!(snap["pipelines"][0]["model"], model);
    }
    let elapsed = started.elapsed();
    let (peak, samples) = sampler.stop();
    engine.release();
    assert!(children_of(me).is_empty(), "release leaves no runner");
    assert_eq!(engine.loads(), 20);
    let margin: u64 = 96 << 20;
    let two_resident = alone + steady["anisora"];
    println!(
        "SC-001 (CPU): 20 alternating requests in {:.1} s, 0 gpu_oom. Peak worker+runner RSS {:.0} MiB ({samples} samples every 20 ms); \
         larger pipeline (phr00t, {} MiB weights) alone peaks at {:.0} MiB; bound = that + {:.0} MiB margin = {:.0} MiB. \
         Steady runner RSS: anisora {:.0} MiB, phr00t {:.0} MiB; holding both would peak near {:.0} MiB.",
        elapsed.as_secs_f64(),
        mb(peak),
        HEAVY_MB[1].1,
        mb(alone),
        mb(margin),
        mb(alone + margin),
        mb(steady["anisora"]),
        mb(steady["phr00t"]),
        mb(two_resident),
    );
    assert!(
        peak <= alone + margin,
        "peak {:.0} MiB is above the larger pipeline's {:.0} MiB + {:.0} MiB",
        mb(peak),
        mb(alone),
        mb(margin)
    );
}

/// A budget for one heavy pipeline but not two: the manager refuses to keep the
/// previous pipeline beside the next (`AfterReleasing`) and the slot swaps; a budget
/// too small for either refuses the load with `gpu_oom` and a message, and the engine
/// keeps serving what fits.
#[test]
fn one_pipeline_budget_swaps_and_too_small_budget_refuses() {
    let _serial = serial();
    let settings = heavy_settings();
    let out = scratch("budget");
    let mut engine = degraded(&settings, 420 << 20);
    let runner_pid = engine.inner().pid_handle();
    let mut spare_before = None;
    for (i, model) in ["anisora", "phr00t", "anisora"].into_iter().enumerate() {
        let req = request(&settings, model, &format!("budget-{i}"));
        engine
            .generate(&req, "degraded", &out, &mut |_, _| ControlFlow::Continue(()))
            .unwrap_or_else(|f| panic!("{model}: {f}"));
        // One swap path: the budget's release goes through the slot, which keeps the
        // spare runner, so the next model loads in the spare started after the last load.
        let pid = runner_pid.load(std::sync::atomic::Ordering::SeqCst);
        if let Some(spare) = spare_before {
            assert_eq!(pid, spare, "request {i}: {model} loaded in the spare that survived the budget release");
        }
        spare_before = engine.inner().spare_pid();
        assert!(spare_before.is_some_and(|s| s != pid), "request {i}: a spare runner is started beside the runner");
        let decision = engine.last_load_decision().cloned();
        match (i, decision) {
            (0, Some(LoadDecision::Fits)) => {}
            (1, Some(LoadDecision::AfterReleasing(r))) => assert_eq!(r, ["anisora"]),
            (2, Some(LoadDecision::AfterReleasing(r))) => assert_eq!(r, ["phr00t"]),
            (i, other) => panic!("request {i}: unexpected load decision {other:?}"),
        }
        let snap = memory_json(&engine);
        assert_eq!(snap["pipelines"].as_array().map(Vec::len), Some(1), "{snap}");
        assert!(snap["used_bytes"].as_u64() <= snap["budget_bytes"].as_u64(), "{snap}");
    }
    engine.release();

    let mut small = degraded(&settings, 150 << 20);
    let req = request(&settings, "anisora", "budget-small");
    let err = small.generate(&req, "degraded", &out, &mut |_, _| ControlFlow::Continue(())).expect_err("does not fit");
    assert_eq!(err.code, ErrorCode::GpuOom);
    assert!(
        err.message.contains("memory budget refuses the load") && err.message.contains("budget is 157.3 MB"),
        "{}",
        err.message
    );
    assert_eq!(small.loads(), 0, "nothing was started");
    assert!(small.resident().is_none());
}

/// A runner that crashes fails its task `inference_failed`; one that hangs is killed at
/// the deadline and fails `inference_timeout`. Either way the next request starts a
/// fresh runner and succeeds.
#[test]
fn crashed_and_hung_runners_fail_their_task_and_are_replaced() {
    let _serial = serial();
    let settings = settings_with(&[("anisora", ModelEdit { timeout_ms: Some(1_500), ..ModelEdit::default() })]);
    let out = scratch("crash");
    let me = std::process::id();
    let manager = Arc::new(MemoryManager::new(budget(1 << 30), Policy::default()));
    let mut cfg = runner_config();
    cfg.deadline_margin = Duration::from_millis(500);
    let mut engine =
        ManagedEngine::new(RunnerEngine::new(settings.clone(), cfg).expect("engine"), settings.clone(), manager);

    let pid = engine.inner().pid_handle();
    let current = || pid.load(std::sync::atomic::Ordering::SeqCst);

    engine.inner_mut().set_faults(RunnerFaults { exit_at_step: Some(2), ..RunnerFaults::default() });
    engine.prepare("anisora").expect("load");
    let crashed = current();
    let err = engine
        .generate(&request(&settings, "anisora", "crash-1"), "degraded", &out, &mut |_, _| ControlFlow::Continue(()))
        .expect_err("crash");
    assert_eq!(err.code, ErrorCode::InferenceFailed, "{}", err.message);
    assert!(err.message.contains("crashed"), "{}", err.message);
    assert!(probe::rss_of(crashed).is_none() && !children_of(me).contains(&crashed), "the crashed runner is reaped");
    assert!(engine.resident().is_none());

    engine.inner_mut().set_faults(RunnerFaults { hang_at_step: Some(1), ..RunnerFaults::default() });
    engine.prepare("anisora").expect("a new runner loads");
    let hung = current();
    assert_ne!(hung, crashed);
    let started = Instant::now();
    let err = engine
        .generate(&request(&settings, "anisora", "hang-1"), "degraded", &out, &mut |_, _| ControlFlow::Continue(()))
        .expect_err("hang");
    assert_eq!(err.code, ErrorCode::InferenceTimeout, "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(30), "killed at the deadline, took {:?}", started.elapsed());
    assert!(probe::rss_of(hung).is_none() && !children_of(me).contains(&hung), "the hung runner is killed and reaped");

    engine.inner_mut().set_faults(RunnerFaults::default());
    let mut steps = 0;
    engine
        .generate(&request(&settings, "anisora", "after-1"), "degraded", &out, &mut |s, _| {
            steps = s;
            ControlFlow::Continue(())
        })
        .expect("a fresh runner serves");
    assert_eq!(steps, 8, "progress frames reach the caller");
    assert_eq!(engine.loads(), 3);
    let last = current();
    assert!(children_of(me).contains(&last));
    engine.release();
    // Other tests of this binary run runners of their own, so only this one is checked.
    assert!(probe::rss_of(last).is_none() && !children_of(me).contains(&last), "release stops the runner");
}

/// Consecutive same-model requests reuse the resident runner; a runner-side `gpu_oom`
/// is retried through the protocol (components released in the child) and succeeds.
#[test]
fn same_model_reuses_the_runner_and_oom_is_retried() {
    let _serial = serial();
    let settings = demo_settings();
    let out = scratch("reuse");
    let mut engine = degraded(&settings, 1 << 30);
    assert!(engine.prepare("phr00t").expect("load").is_some());
    let pid = engine.inner().pid_handle().load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..3 {
        assert_eq!(engine.prepare("phr00t").expect("resident"), None, "request {i} waits for no load");
        engine
            .generate(&request(&settings, "phr00t", &format!("reuse-{i}")), "degraded", &out, &mut |_, _| {
                ControlFlow::Continue(())
            })
            .expect("generate");
    }
    assert_eq!(engine.inner().pid_handle().load(std::sync::atomic::Ordering::SeqCst), pid, "same runner");
    assert_eq!(engine.loads(), 1);

    engine.release();

    engine.inner_mut().set_faults(RunnerFaults { oom_next_runs: 2, ..RunnerFaults::default() });
    engine
        .generate(&request(&settings, "phr00t", "oom-2"), "degraded", &out, &mut |_, _| ControlFlow::Continue(()))
        .expect("recovers after 2 retries");
    let snap = memory_json(&engine);
    assert_eq!(snap["oom_retries"], 2, "{snap}");
    assert!(snap["evictions"].as_u64() >= Some(1), "{snap}");
}

/// A cancel reaches the runner mid-generation: it stops after the step at which the
/// cancel arrives (the runner waits for the parent's frame at step 2, once, so the
/// cancel cannot lose a race against the run's end), answers `cancelled`, writes
/// nothing, and the same runner serves the next request.
#[test]
fn a_cancel_stops_the_runner_at_a_step_and_it_serves_on() {
    let _serial = serial();
    let settings = demo_settings();
    let out = scratch("cancel");
    let mut engine = degraded(&settings, 1 << 30);
    engine.inner_mut().set_faults(RunnerFaults { wait_frame_at_step: Some(2), ..RunnerFaults::default() });
    engine.prepare("anisora").expect("load");
    let pid = engine.inner().pid_handle().load(std::sync::atomic::Ordering::SeqCst);
    let mut seen = Vec::new();
    let err = engine
        .generate(&request(&settings, "anisora", "cancel-1"), "degraded", &out, &mut |s, _| {
            seen.push(s);
            if s >= 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect_err("cancelled");
    assert_eq!(err.code, ErrorCode::Cancelled, "{}", err.message);
    assert_eq!(seen, vec![1, 2], "stopped after the step the cancel came at");
    assert!(!out.join("cancel-1.mp4").exists(), "nothing written for a cancelled run");
    assert_eq!(
        engine.inner().pid_handle().load(std::sync::atomic::Ordering::SeqCst),
        pid,
        "same runner after a cancel"
    );
    engine
        .generate(&request(&settings, "anisora", "after-cancel"), "degraded", &out, &mut |_, _| {
            ControlFlow::Continue(())
        })
        .expect("the runner serves after a cancel");
    assert_eq!(engine.loads(), 1, "a cancel costs no reload");
    engine.release();
}
