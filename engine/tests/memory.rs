//! A heavy pipeline (200 MB of real denoiser weights) loaded then released returns
//! process RSS to within 10% of the model's size of where it was before the load.
//!
//! Its own test binary, so no other test's allocations move this process's RSS.

mod common;

use common::{demo_settings, init_runtime, job, repo_root, scratch};
use std::process::Command;
use warmlane_engine::memory::rss_bytes;
use warmlane_engine::{LoadOptions, Pipeline};

const HEAVY_MB: u64 = 200;

/// Generates (or finds cached) the heavy anisora variant; returns its dir relative to the repo.
fn heavy_model() -> String {
    let rel = format!(".cache/heavy-models/anisora-{HEAVY_MB}mb");
    let status = Command::new("python3")
        .current_dir(repo_root())
        .args([
            "ops/gen_demo_models.py",
            "--heavy",
            "--model",
            "anisora",
            "--size-mb",
            &HEAVY_MB.to_string(),
            "--out",
            &rel,
        ])
        .status()
        .expect("python3 runs ops/gen_demo_models.py (pip install -r ops/requirements-models.txt)");
    assert!(status.success(), "gen_demo_models.py --heavy failed: {status}");
    rel
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[test]
fn heavy_pipeline_release_returns_rss() {
    init_runtime();
    let dir = heavy_model();
    let mut settings = demo_settings("anisora");
    settings.dir = dir;
    let heavy_bytes = HEAVY_MB << 20;
    let out = scratch("heavy");

    // Warm the allocator and ORT's process-wide state with the small model first, so
    // the figures below measure the heavy weights, not one-time initialisation.
    let mut small =
        Pipeline::load("anisora", &demo_settings("anisora"), &repo_root(), &LoadOptions::default()).expect("small");
    small
        .generate(&job("small", 2, 5.0, 1, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
        .expect("small generation");
    drop(small);

    let before = rss_bytes();
    let mut pipeline =
        Pipeline::load("anisora-heavy", &settings, &repo_root(), &LoadOptions::default()).expect("heavy load");
    let loaded = rss_bytes();
    pipeline
        .generate(&job("heavy", 2, 5.0, 1, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
        .expect("heavy generation");
    let memory = pipeline.memory();
    pipeline.release_all();
    drop(pipeline);
    let after = rss_bytes();

    println!(
        "heavy {HEAVY_MB} MB: rss before load {:.1} MB, loaded {:.1} MB (+{:.1}), after release {:.1} MB ({:+.1})",
        mb(before),
        mb(loaded),
        mb(loaded.saturating_sub(before)),
        mb(after),
        (after as f64 - before as f64) / (1024.0 * 1024.0)
    );
    println!("per component: {}", serde_json::to_string(&memory.components).expect("serialises"));
    let denoiser = &memory.components[1];
    assert!(
        denoiser.rss_bytes as f64 >= 0.8 * heavy_bytes as f64,
        "denoiser load measured {} bytes",
        denoiser.rss_bytes
    );
    assert!(loaded >= before + heavy_bytes * 8 / 10, "the heavy weights were resident");
    let drift = after.abs_diff(before);
    assert!(
        drift <= heavy_bytes / 10,
        "RSS after release {after} vs before {before}: drift {drift} > 10% of {heavy_bytes}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
