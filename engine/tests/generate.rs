//! Both demo pipelines generate reproducible MP4s with GIF previews on CPU, with the
//! denoiser called once per step without guidance and twice per step with it.

mod common;

use common::{demo_settings, init_runtime, job, repo_root, scratch};
use std::ops::ControlFlow;
use warmlane_engine::{ComponentRole, LoadOptions, Pipeline, Provider};

/// Decodes a GIF and returns (width, height, frame count).
fn decode_gif(bytes: &[u8]) -> (u16, u16, usize) {
    assert_eq!(&bytes[..6], b"GIF89a", "GIF header");
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(bytes).expect("decodable GIF");
    let (w, h) = (decoder.width(), decoder.height());
    let mut frames = 0;
    while let Some(frame) = decoder.read_next_frame().expect("frame decodes") {
        assert_eq!((frame.width, frame.height), (w, h));
        frames += 1;
    }
    (w, h, frames)
}

fn check_model(model: &str, steps: u32, cfg: f32, expected_calls: u32) {
    init_runtime();
    let out = scratch(&format!("generate-{model}"));
    let settings = demo_settings(model);
    let mut pipeline = Pipeline::load(model, &settings, &repo_root(), &LoadOptions::default()).expect("load");
    assert_eq!(pipeline.provider(), Provider::Cpu);
    pipeline.warm_up().expect("warm up");
    let calls_before = pipeline.denoiser_calls_total();

    let mut seen = Vec::new();
    let first = pipeline
        .generate(&job("first", steps, cfg, 42, &out), &mut |s, n| {
            seen.push((s, n));
            ControlFlow::Continue(())
        })
        .expect("generate");
    assert_eq!(first.denoiser_calls, expected_calls);
    assert_eq!(pipeline.denoiser_calls_total() - calls_before, u64::from(expected_calls));
    assert_eq!(seen, (1..=steps).map(|s| (s, steps)).collect::<Vec<_>>());
    assert_eq!((first.width, first.height, first.frames), (32, 24, 5));
    assert_eq!(first.path, out.join("first.mp4"));
    assert_eq!(first.preview_path, out.join("first.gif"));

    let bytes = std::fs::read(&first.path).expect("mp4 written");
    assert_eq!(bytes.len() as u64, first.bytes);
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4");
    let preview = std::fs::read(&first.preview_path).expect("gif written");
    assert_eq!(preview.len() as u64, first.preview_bytes);
    assert_eq!(decode_gif(&preview), (32, 24, 5));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("first.json")).expect("json written")).expect("json parses");
    assert_eq!(meta["model"], model);
    assert_eq!(meta["seed"], 42);
    assert_eq!(meta["steps"], steps);
    assert_eq!(meta["frames"], 5);

    let again = pipeline
        .generate(&job("again", steps, cfg, 42, &out), &mut |_, _| ControlFlow::Continue(()))
        .expect("generate again");
    assert_eq!(std::fs::read(&again.path).expect("read"), bytes, "same seed, same bytes");
    let other = pipeline
        .generate(&job("other", steps, cfg, 7, &out), &mut |_, _| ControlFlow::Continue(()))
        .expect("generate other");
    assert_ne!(std::fs::read(&other.path).expect("read"), bytes, "another seed, another video");

    let memory = pipeline.memory();
    assert_eq!(memory.components.len(), 3);
    assert!(memory.components.iter().all(|c| c.loaded && c.provider == Provider::Cpu));
    println!("{model}: {}", serde_json::to_string(&memory).expect("memory serialises"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn phr00t_generates_with_one_pass_per_step() {
    check_model("phr00t", 4, 1.0, 4);
}

#[test]
fn anisora_generates_with_guidance_two_passes_per_step() {
    check_model("anisora", 8, 5.0, 16);
}

/// A progress callback that breaks stops the run after that step: the error is
/// `cancelled`, no file is written, and the pipeline serves the next job.
#[test]
fn a_break_from_progress_cancels_the_run_and_the_next_job_runs() {
    init_runtime();
    let out = scratch("generate-cancel");
    let settings = demo_settings("anisora");
    let mut pipeline = Pipeline::load("anisora", &settings, &repo_root(), &LoadOptions::default()).expect("load");
    let calls_before = pipeline.denoiser_calls_total();
    let mut seen = Vec::new();
    let stop_after = |s: u32, n: u32, seen: &mut Vec<(u32, u32)>| {
        seen.push((s, n));
        if s == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let err =
        pipeline.generate(&job("cancelled", 8, 5.0, 42, &out), &mut |s, n| stop_after(s, n, &mut seen)).unwrap_err();
    assert_eq!(err.code(), warmlane_shared::ErrorCode::Cancelled, "{err}");
    assert_eq!(err.to_string(), "cancelled after denoiser step 2/8");
    assert_eq!(seen, vec![(1, 8), (2, 8)], "no step after the break");
    assert_eq!(pipeline.denoiser_calls_total() - calls_before, 4, "two guided steps ran, no more");
    for file in ["cancelled.mp4", "cancelled.gif", "cancelled.json"] {
        assert!(!out.join(file).exists(), "{file} written for a cancelled run");
    }
    let next =
        pipeline.generate(&job("next", 8, 5.0, 42, &out), &mut |_, _| ControlFlow::Continue(())).expect("next job");
    assert!(next.path.exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn released_component_is_reloaded_for_the_next_job() {
    init_runtime();
    let out = scratch("reload");
    let settings = demo_settings("phr00t");
    let mut pipeline = Pipeline::load("phr00t", &settings, &repo_root(), &LoadOptions::default()).expect("load");
    pipeline.release_component(ComponentRole::Denoiser);
    assert!(!pipeline.memory().components[1].loaded);
    let generation =
        pipeline.generate(&job("reload", 4, 1.0, 1, &out), &mut |_, _| ControlFlow::Continue(())).expect("generate");
    assert_eq!(generation.denoiser_calls, 4);
    assert!(pipeline.memory().components[1].loaded);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn repository_settings_describe_the_demo_pipelines() {
    let path = repo_root().join("inference_settings.json");
    let text = std::fs::read_to_string(&path).expect("inference_settings.json at the repo root");
    let root: serde_json::Value = serde_json::from_str(&text).expect("settings parse");
    for model in ["anisora", "phr00t"] {
        let pipeline = root["models"][model]["pipeline"].clone();
        let settings: warmlane_engine::PipelineSettings =
            serde_json::from_value(pipeline).unwrap_or_else(|e| panic!("models.{model}.pipeline: {e}"));
        if let Err((field, message)) = settings.check(&repo_root()) {
            panic!("models.{model}.pipeline.{field}: {message}");
        }
    }
}

#[test]
fn ddim_sampler_runs_the_same_components() {
    init_runtime();
    let out = scratch("ddim");
    let mut settings = demo_settings("phr00t");
    settings.sampler = warmlane_engine::Sampler::Ddim;
    let mut pipeline = Pipeline::load("phr00t", &settings, &repo_root(), &LoadOptions::default()).expect("load");
    let generation =
        pipeline.generate(&job("ddim", 4, 1.0, 3, &out), &mut |_, _| ControlFlow::Continue(())).expect("generate");
    assert_eq!(generation.denoiser_calls, 4);
    let bytes = std::fs::read(&generation.preview_path).expect("gif written");
    assert_eq!(decode_gif(&bytes), (32, 24, 5));
    let _ = std::fs::remove_dir_all(&out);
}
