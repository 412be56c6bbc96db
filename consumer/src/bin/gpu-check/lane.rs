//! The checks on one pipeline: the provider really serves (check 1, through
//! `engine-bench`), a real out-of-memory and the recovery from it (check 4), and the
//! arena across mixed resolutions on a warm lane (check 5).

use crate::common::{self, mib, Check, Opts};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_consumer::Engine;
use warmlane_engine::memory::delta;
use warmlane_engine::{FaultPlan, LoadOptions};
use warmlane_shared::{ErrorCode, Settings};

/// A warm lane's reading may exceed the first half's highest by this much (allocator slack).
pub(crate) const PLATEAU_SLACK: i64 = 64 << 20;

/// `engine-bench` on `target` (a model of the settings or a pipeline directory); its
/// JSON summary.
fn bench(o: &Opts, target: &str, size: [u32; 4], shrink: bool, deadline: Instant) -> Result<serde_json::Value, String> {
    let dir = common::scratch("bench")?;
    let (json, log) = (dir.join("summary.json"), dir.join("stderr.log"));
    let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let root = o.settings.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut child = Command::new(&o.bench_exe)
        .arg(target)
        .args(size.map(|n| n.to_string()))
        .current_dir(root)
        .env("ENGINE_BENCH_PROVIDER", o.provider_name())
        .env("ENGINE_BENCH_JSON", &json)
        .env(warmlane_engine::runtime::CUDA_SHRINK_ENV, if shrink { "1" } else { "0" })
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("{}: {e}", o.bench_exe.display()))?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if common::left(deadline).is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("engine-bench {target}: out of time"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let result = if status.success() {
        std::fs::read_to_string(&json)
            .map_err(|e| format!("{}: {e}", json.display()))
            .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("engine-bench summary: {e}")))
    } else {
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
        Err(format!("engine-bench {target} exited with {status}: {last}"))
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// On CUDA, the largest output a denoiser node on the CPU may write: ONNX Runtime
/// keeps shape arithmetic (a few int64 values) on the CPU on purpose; a node writing a
/// real tensor there would be a CPU fallback of the computation.
pub(crate) const CPU_OUTPUT_MAX: f64 = 4096.0;

/// Check 1's verdict (pure): every component of every run on the requested provider
/// and, on CUDA, no denoiser node on the CPU writing more than [`CPU_OUTPUT_MAX`] bytes.
pub(crate) fn provider_met(runs: &[serde_json::Value], requested: &str) -> bool {
    !runs.is_empty()
        && runs.iter().all(|r| {
            let on = r["components"]
                .as_array()
                .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["effective"] == requested));
            let largest = r["placement"]["cpu_max_output_bytes"].as_f64();
            on && (requested != "cuda" || largest.is_some_and(|b| b <= CPU_OUTPUT_MAX))
        })
}

/// One line per run: per-step time against bare `ort`, and the CPU share where any.
fn step_line(r: &serde_json::Value) -> String {
    let name = r["model"].as_str().unwrap_or("?").rsplit('/').next().unwrap_or("?").to_string();
    let shrink = if r["arena_shrink"] == false { " (no arena shrink)" } else { "" };
    let cpu = match r["placement"]["cpu_kernel_share"].as_f64() {
        Some(s) if s > 0.0 => format!(
            ", shape nodes on the CPU: {:.1} % of kernel time, largest output {} B",
            s * 100.0,
            r["placement"]["cpu_max_output_bytes"].as_f64().unwrap_or(0.0)
        ),
        _ => String::new(),
    };
    let (e, b) = (r["engine_step_ms"].as_f64().unwrap_or(0.0), r["bare_step_ms"].as_f64().unwrap_or(0.0));
    format!("{name}{shrink} {e:.2} ms/step (bare {b:.2}{cpu})")
}

/// Check 1: demo, real-architecture and heavy pipelines generate on the provider;
/// per-step time against bare `ort` on the same device.
pub(crate) fn provider_check(o: &Opts, deadline: Instant) -> Check {
    let heavy = o.heavy_dir.join("anisora").display().to_string();
    let (demo, wan, big) = if o.gpu() {
        ([8, 256, 256, 17], [8, 128, 128, 9], [8, 64, 64, 9])
    } else {
        ([4, 64, 64, 8], [4, 64, 64, 9], [4, 64, 64, 8])
    };
    let mut targets =
        vec![("anisora", demo, true), ("phr00t", demo, true), ("wan-tiny", wan, true), (heavy.as_str(), big, true)];
    if o.gpu() {
        // The same demo run without any arena shrink: what the shrink at stage ends costs.
        targets.push(("anisora", demo, false));
    }
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for &(target, size, shrink) in &targets {
        match bench(o, target, size, shrink, deadline) {
            Ok(v) => runs.push(v),
            Err(e) => errors.push(e),
        }
    }
    let met = errors.is_empty() && provider_met(&runs, o.provider_name());
    let steps: Vec<String> = runs.iter().map(step_line).collect();
    let summary = if errors.is_empty() {
        format!("all components on {}: {}", o.provider_name(), steps.join(", "))
    } else {
        format!("{} of {} runs failed: {}", errors.len(), targets.len(), errors.join("; "))
    };
    let goal = "every component on the requested provider; on CUDA no denoiser node on the CPU writes more than 4 KiB (shape arithmetic only); per-step time against bare ort";
    Check::verdict("cuda_provider", met, summary, goal, serde_json::json!({ "runs": runs, "errors": errors }))
}

/// Check 4's verdict (pure): an out-of-memory happened (`retries` > 0, the memory
/// manager's count), the large request was then served or answered `gpu_oom` within 3
/// retries, and the next request was served.
pub(crate) fn oom_met(large: &Result<(), (String, String)>, retries: u64, next_ok: bool) -> bool {
    let large_ok = match large {
        Ok(()) => true,
        Err((code, _)) => code == ErrorCode::GpuOom.as_str(),
    };
    large_ok && (1..=3).contains(&retries) && next_ok
}

/// Check 4: a real CUDA out-of-memory (arena capped by `gpu_mem_limit`, the largest
/// request the settings allow); on the CPU the engine's simulated allocation failure
/// stands in, so the path is exercised and the report keeps its shape.
pub(crate) fn oom_check(o: &Opts, settings: &Arc<Settings>) -> Result<Check, String> {
    let model = "phr00t";
    let limit = 256 << 20;
    let limit_bytes = o.gpu().then_some(limit);
    let options = LoadOptions { memory_limit_bytes: limit_bytes, ..LoadOptions::default() };
    let mut engine = common::lane_engine(o, settings, model, options)?;
    engine.prepare(model).map_err(|f| f.message)?;
    if !o.gpu() {
        engine.inner_mut().set_faults(FaultPlan { oom_next_runs: 64, ..FaultPlan::default() });
    }
    let spec = settings.model(model).ok_or("phr00t is not in the settings")?;
    let max = (spec.width.max.unwrap_or(1280), spec.height.max.unwrap_or(720), spec.frames.max.unwrap_or(81));
    let out = common::scratch("oom")?;
    let large_req = common::request(settings, model, "gpu-check-oom", max, 7)?;
    let large = engine
        .generate(&large_req, model, &out, &mut |_, _| std::ops::ControlFlow::Continue(()))
        .map(|_| ())
        .map_err(|f| (f.code.as_str().to_string(), f.message));
    let retries = engine.memory().map_or(0, |m| m.oom_retries);
    if !o.gpu() {
        engine.inner_mut().set_faults(FaultPlan::default());
    }
    let small_req = common::request(settings, model, "gpu-check-after-oom", (64, 64, 8), 8)?;
    let next = engine.generate(&small_req, model, &out, &mut |_, _| std::ops::ControlFlow::Continue(()));
    let _ = std::fs::remove_dir_all(&out);
    let met = oom_met(&large, retries, next.is_ok());
    let first = match &large {
        Ok(()) => "served".to_string(),
        Err((code, m)) => format!("{code} ({m})"),
    };
    let summary = format!(
        "{}x{}x{} {}: {first}; next request {}",
        max.0,
        max.1,
        max.2,
        if o.gpu() {
            format!("under a {} MiB arena cap", limit >> 20)
        } else {
            "(CPU: simulated allocation failure)".into()
        },
        if next.is_ok() { "served" } else { "FAILED" }
    );
    let figures = serde_json::json!({
        "gpu_mem_limit_bytes": limit_bytes, "request": max, "large_result": first, "retries": retries,
        "next_served": next.is_ok(), "next_error": next.err().map(|f| f.message), "simulated": !o.gpu(),
    });
    let goal = "recovered within 3 retries or answered gpu_oom, then kept serving";
    Ok(Check::verdict("real_oom", met, summary, goal, figures))
}

/// Check 5's verdicts (pure): plateau (the second half never above the first half's
/// highest plus slack) and shrinkage (the last, small request ends within slack of
/// the post-load reading, or within a tenth of the growth, whichever is larger).
pub(crate) fn arena_met(baseline: u64, after: &[u64], slack: i64) -> (bool, bool) {
    if after.len() < 2 {
        return (false, false);
    }
    let half = after.len() / 2;
    let first_max = after[..half].iter().max().copied().unwrap_or(0);
    let plateau = after[half..].iter().all(|&a| delta(first_max, a) <= slack);
    let peak = after.iter().max().copied().unwrap_or(0);
    let allowed = slack.max(delta(baseline, peak) / 10);
    let shrink = delta(baseline, after[after.len() - 1]) <= allowed;
    (plateau, shrink)
}

/// Check 5: a warm lane across mixed resolutions (the last one small).
pub(crate) fn arena_check(o: &Opts, settings: &Arc<Settings>, deadline: Instant) -> Result<Check, String> {
    let model = "phr00t";
    let sizes: &[(u32, u32, u32)] = if o.gpu() {
        &[
            (256, 256, 17),
            (832, 480, 49),
            (128, 128, 9),
            (1280, 720, 81),
            (512, 512, 33),
            (256, 256, 17),
            (832, 480, 49),
            (1280, 720, 81),
            (512, 512, 33),
            (128, 128, 9),
            (1280, 720, 81),
            (128, 128, 9),
        ]
    } else {
        &[(64, 64, 8), (256, 256, 16), (128, 128, 8), (256, 256, 16), (128, 128, 8), (64, 64, 8)]
    };
    let mut engine = common::lane_engine(o, settings, model, LoadOptions::default())?;
    engine.prepare(model).map_err(|f| f.message)?;
    let source = common::source(o)?;
    let none = AtomicU32::new(0);
    let baseline = common::used_now(source, &none);
    let out = common::scratch("arena")?;
    let mut after = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        if common::left(deadline).is_zero() {
            break;
        }
        let req = common::request(settings, model, &format!("gpu-check-arena-{i}"), size, i as u64)?;
        engine
            .generate(&req, model, &out, &mut |_, _| std::ops::ControlFlow::Continue(()))
            .map_err(|f| format!("{size:?}: {}", f.message))?;
        after.push(common::used_now(source, &none));
    }
    let _ = std::fs::remove_dir_all(&out);
    let (plateau, shrink) = arena_met(baseline, &after, PLATEAU_SLACK);
    let complete = after.len() == sizes.len();
    let peak = after.iter().max().copied().unwrap_or(baseline);
    let summary = format!(
        "{} of {} requests; plateau {}, shrink {}: post-load {:.0} MiB, highest after a request {:+.0} MiB, after the last (small) {:+.0} MiB",
        after.len(),
        sizes.len(),
        if plateau { "yes" } else { "NO" },
        if shrink { "yes" } else { "NO" },
        mib(baseline as i64),
        mib(delta(baseline, peak)),
        mib(delta(baseline, after.last().copied().unwrap_or(baseline)))
    );
    let figures = serde_json::json!({
        "source": source, "sizes": sizes, "baseline_bytes": baseline, "after_bytes": after,
        "plateau": plateau, "shrink": shrink, "slack_bytes": PLATEAU_SLACK,
        "shrinkage": if o.gpu() { "memory.enable_memory_arena_shrinkage=gpu:0 after the text encoder, the last denoiser step and the decoder" } else { "CPU: no arena (system allocator)" },
    });
    let goal = "second half never above the first half's highest + 64 MiB; the last small request back near the post-load reading";
    Ok(Check::verdict("arena", plateau && shrink && complete, summary, goal, figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_verdicts() {
        let oom = || Err(("gpu_oom".to_string(), "out of memory (still out of memory after 3 retries)".to_string()));
        // (large request's result, retries the manager counted, next served, met)
        let cases = [
            (Ok(()), 1, true, true),
            (Ok(()), 0, true, false),
            (oom(), 3, true, true),
            (oom(), 4, true, false),
            (oom(), 0, true, false),
            (oom(), 2, false, false),
            (Err(("inference_failed".to_string(), "boom".to_string())), 1, true, false),
        ];
        for (large, retries, next, want) in cases {
            assert_eq!(oom_met(&large, retries, next), want, "{large:?} {retries}");
        }
    }

    #[test]
    fn arena_verdicts() {
        let m = 1 << 20;
        let cases: [(u64, &[u64], (bool, bool)); 4] = [
            (100 * m, &[150 * m, 400 * m, 380 * m, 120 * m], (true, true)),
            (100 * m, &[150 * m, 200 * m, 500 * m, 120 * m], (false, true)),
            (100 * m, &[150 * m, 400 * m, 380 * m, 390 * m], (true, false)),
            (100 * m, &[150 * m], (false, false)),
        ];
        for (baseline, after, want) in cases {
            assert_eq!(arena_met(baseline, after, 64 * m as i64), want, "{after:?}");
        }
    }

    #[test]
    fn provider_verdicts() {
        let run = |e: &str, largest: f64| serde_json::json!({ "components": [{ "effective": "cuda" }, { "effective": e }], "placement": { "cpu_max_output_bytes": largest } });
        assert!(provider_met(&[run("cuda", 0.0)], "cuda"));
        assert!(provider_met(&[run("cuda", 64.0)], "cuda"));
        assert!(!provider_met(&[run("cuda", 1e6)], "cuda"));
        assert!(!provider_met(&[run("cuda", 0.0), run("cpu", 0.0)], "cuda"));
        assert!(!provider_met(&[serde_json::json!({ "components": [{ "effective": "cuda" }] })], "cuda"));
        assert!(provider_met(&[serde_json::json!({ "components": [{ "effective": "cpu" }] })], "cpu"));
        assert!(!provider_met(&[], "cuda"));
        assert!(!provider_met(&[serde_json::json!({ "components": [] })], "cpu"));
    }
}
