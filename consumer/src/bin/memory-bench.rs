//! memory-bench: calibrates each model's `memory.runtime_bytes_per_voxel` against the
//! memory a generation really takes (issue #16 target: the estimate within 25 % of the
//! measurement for the largest request the settings allow).
//!
//! For each model, in this process (a lane worker's engine): load and warm up, then
//! generate at half the maximum size and at the maximum, sampling this process's RSS
//! every 10 ms. Runtime bytes = peak RSS during the generation minus the RSS before it
//! (the post-load baseline); bytes per voxel = that over width x height x frames. The
//! verdict compares the settings' estimate at the maximum with the measurement.
//!
//! Usage: `cargo build --release -p warmlane-consumer && target/release/memory-bench [model ...]`
//! (default: every model in `inference_settings.json`; run from the repository root).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_consumer::Engine;
use warmlane_engine::memory::rss_bytes;
use warmlane_shared::Settings;

/// The estimate meets the target within this share of the measurement.
const TOLERANCE: f64 = 0.25;

/// Peak RSS while `f` runs (sampled every 10 ms), and `f`'s result.
fn peak_during<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss_bytes())));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_bytes(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    (peak.load(Ordering::SeqCst).max(rss_bytes()), out)
}

/// Measured runtime bytes of one `w x h x f` generation of `model`.
fn runtime_bytes(
    engine: &mut OrtEngine,
    settings: &Settings,
    model: &str,
    size: (u32, u32, u32),
) -> Result<u64, String> {
    let (w, h, f) = size;
    let body = serde_json::json!({ "v": 1, "task_id": format!("mem-{model}-{w}x{h}x{f}"), "model": model,
        "prompt": "a fox", "seed": 1, "width": w, "height": h, "frames": f });
    let req = warmlane_shared::validate_json(&body, settings).map_err(|e| e.rejection.message)?;
    let out = std::env::temp_dir().join("warmlane-memory-bench");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let before = rss_bytes();
    let (peak, result) =
        peak_during(|| engine.generate(&req, model, &out, &mut |_, _| std::ops::ControlFlow::Continue(())));
    result.map_err(|e| e.message)?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(peak.saturating_sub(before))
}

fn run() -> Result<bool, String> {
    let path = Path::new("inference_settings.json");
    let settings = Arc::new(Settings::load(path).map_err(|e| e.to_string())?);
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let models: Vec<String> = if wanted.is_empty() { settings.models.keys().cloned().collect() } else { wanted };
    println!("memory-bench: runtime bytes per voxel, measured (peak RSS over the post-load baseline) vs the settings");
    println!(
        "{:<9} {:>14} {:>10} {:>12} {:>11} {:>10} {:>9}",
        "model", "size", "measured", "B/voxel", "setting", "estimate", "verdict"
    );
    let mut all_met = true;
    for model in &models {
        let ms = settings.model(model).ok_or(format!("model `{model}` is not in the settings"))?;
        let max = (
            ms.width.max.unwrap_or(ms.width.default),
            ms.height.max.unwrap_or(ms.height.default),
            ms.frames.max.unwrap_or(ms.frames.default),
        );
        let step = |v: u32, m: u32| (v / 2 / m.max(1) * m.max(1)).max(m.max(1));
        let (wm, hm) = (ms.width.multiple_of.unwrap_or(1), ms.height.multiple_of.unwrap_or(1));
        let half = (step(max.0, wm), step(max.1, hm), (max.2 / 2).max(1));
        let mut engine = OrtEngine::new(settings.clone(), None).map_err(|e| e.message)?;
        engine.prepare(model).map_err(|e| e.message)?;
        for size in [half, max] {
            let measured = runtime_bytes(&mut engine, &settings, model, size)?;
            let voxels = u64::from(size.0) * u64::from(size.1) * u64::from(size.2);
            let per_voxel = measured as f64 / voxels as f64;
            let setting = ms.memory.runtime_bytes_per_voxel;
            let estimate = setting * voxels;
            let verdict = if size == max {
                let met = (estimate as f64 - measured as f64).abs() <= TOLERANCE * measured as f64;
                all_met &= met;
                if met {
                    "met"
                } else {
                    "NOT met"
                }
            } else {
                ""
            };
            println!(
                "{model:<9} {:>14} {:>7.0} MB {per_voxel:>12.1} {setting:>11} {:>7.0} MB {verdict:>9}",
                format!("{}x{}x{}", size.0, size.1, size.2),
                measured as f64 / 1e6,
                estimate as f64 / 1e6
            );
        }
    }
    println!(
        "target: the estimate at the largest size within {:.0} % of the measurement: {}",
        TOLERANCE * 100.0,
        if all_met { "met" } else { "NOT met" }
    );
    Ok(all_met)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
