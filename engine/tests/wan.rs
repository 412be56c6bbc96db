//! The real Wan2.1 architecture (`models/wan-tiny`, exported by `ops/export_wan.py`
//! from the reference classes): the engine's run matches the reference pipeline's
//! number for number, and bad tokenizers, names and graphs fail at load.
//!
//! The fixtures in `models/wan-tiny/parity/` were written by the reference sampling
//! loop (PyTorch, diffusers' `WanPipeline` with the flow-matching Euler scheduler) on
//! the same weights, with its initial noise recorded, so random number generators do
//! not matter. Every observable stage is compared: token ids and masks (exact), text
//! embeddings, the timestep of every step, the latent after every step, and the
//! decoded video.
mod common;

use common::{init_runtime, repo_root, scratch};
use std::path::Path;
use std::time::Duration;
use warmlane_engine::{EngineError, Job, LoadOptions, Pipeline, PipelineSettings, Trace};
use warmlane_shared::settings::pipeline::{Guidance, Slot, TimestepSpacing};

/// Tolerances (max abs, mean abs). The ONNX graphs are the PyTorch modules traced in
/// float32; these bound accumulated float differences, not approximation. Measured
/// here: at most 1.6e-5 on latents and 1.1e-5 on video; an Euler step off by 0.1 %
/// gives 1.2e-3 after the first step.
const EMBEDS_TOL: (f32, f32) = (1e-4, 1e-5);
const LATENT_TOL: (f32, f32) = (2e-4, 2e-5);
const VIDEO_TOL: (f32, f32) = (2e-4, 2e-5);

/// One reference case: its request, the recorded tokens and timesteps, and the tensors.
struct Case {
    name: String,
    meta: serde_json::Value,
    data: Vec<f32>,
}

impl Case {
    fn load(name: &str) -> Case {
        let dir = repo_root().join("models/wan-tiny/parity");
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("fixture json");
        let meta: serde_json::Value = serde_json::from_str(&text).expect("fixture parses");
        let bytes = std::fs::read(dir.join(meta["bin"].as_str().expect("bin name"))).expect("fixture bin");
        let data = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Case { name: name.into(), meta, data }
    }

    fn tensor(&self, key: &str) -> Option<&[f32]> {
        let t = self.meta["tensors"].get(key)?;
        let offset = t["offset"].as_u64()? as usize;
        let len: usize = t["shape"].as_array()?.iter().map(|d| d.as_u64().unwrap_or(0) as usize).product();
        self.data.get(offset..offset + len)
    }

    fn ints(&self, key: &str) -> Option<Vec<i64>> {
        self.meta[key].as_array().map(|a| a.iter().map(|v| v.as_i64().unwrap_or(-1)).collect())
    }

    fn num(&self, key: &str) -> u64 {
        self.meta[key].as_u64().unwrap_or_else(|| panic!("{}: {key}", self.name))
    }

    fn job(&self, out_dir: &Path) -> Job {
        Job {
            task_id: format!("parity-{}", self.name),
            lane: "test".into(),
            prompt: self.meta["prompt"].as_str().expect("prompt").into(),
            negative_prompt: self.meta["negative_prompt"].as_str().map(str::to_string),
            steps: self.num("steps") as u32,
            cfg: self.meta["cfg"].as_f64().expect("cfg") as f32,
            seed: 0,
            width: self.num("width") as u32,
            height: self.num("height") as u32,
            frames: self.num("frames") as u32,
            timeout: Duration::from_secs(120),
            out_dir: out_dir.to_path_buf(),
        }
    }
}

/// `wan-tiny`'s pipeline settings from the repository's `inference_settings.json`.
fn wan_settings() -> PipelineSettings {
    let path = repo_root().join("inference_settings.json");
    let settings = warmlane_shared::Settings::load(&path).expect("repository settings load");
    settings.model("wan-tiny").expect("wan-tiny is configured").pipeline.clone()
}

fn load(settings: &PipelineSettings) -> Result<Pipeline, EngineError> {
    init_runtime();
    Pipeline::load("wan-tiny", settings, &repo_root(), &LoadOptions::default())
}

/// (max abs, mean abs) difference.
fn diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    let mut max = 0.0_f32;
    let mut sum = 0.0_f64;
    for (a, b) in got.iter().zip(want) {
        let d = (a - b).abs();
        max = if d.is_nan() { f32::INFINITY } else { max.max(d) };
        sum += f64::from(d);
    }
    (max, (sum / want.len().max(1) as f64) as f32)
}

/// Compares a trace with a case; returns the first mismatch, or the figures.
fn compare(case: &Case, trace: &Trace) -> Result<Vec<String>, String> {
    let mut figures = Vec::new();
    let want_tokens: Vec<(Vec<i64>, Vec<i64>)> = [("cond_ids", "cond_mask"), ("uncond_ids", "uncond_mask")]
        .iter()
        .filter_map(|(ids, mask)| Some((case.ints(ids)?, case.ints(mask)?)))
        .collect();
    let got_tokens: Vec<(Vec<i64>, Vec<i64>)> = trace.tokens.iter().map(|t| (t.ids.clone(), t.mask.clone())).collect();
    if got_tokens != want_tokens {
        return Err(format!("tokens differ: got {got_tokens:?}, reference {want_tokens:?}"));
    }
    if trace.timesteps.len() != case.num("steps") as usize {
        return Err(format!("{} timesteps, reference {}", trace.timesteps.len(), case.num("steps")));
    }
    let want_t: Vec<f32> = case.meta["timesteps"]
        .as_array()
        .expect("timesteps")
        .iter()
        .map(|v| v.as_f64().unwrap_or(-1.0) as f32)
        .collect();
    let (t_max, _) = diff(&trace.timesteps, &want_t);
    if t_max > 1e-3 {
        return Err(format!("timesteps differ by {t_max}: got {:?}, reference {want_t:?}", trace.timesteps));
    }
    let mut check = |what: String, got: &[f32], want: Option<&[f32]>, (max_tol, mean_tol): (f32, f32)| {
        let want = want.ok_or_else(|| format!("{what}: not in the fixture"))?;
        if got.len() != want.len() {
            return Err(format!("{what}: {} values, reference {}", got.len(), want.len()));
        }
        let (max, mean) = diff(got, want);
        figures.push(format!("{what}: max {max:.2e} mean {mean:.2e}"));
        if max > max_tol || mean > mean_tol {
            return Err(format!(
                "{what}: max abs {max:.3e} (tolerance {max_tol:.0e}), mean abs {mean:.3e} (tolerance {mean_tol:.0e})"
            ));
        }
        Ok(())
    };
    check("cond embeddings".into(), &trace.cond_embeds, case.tensor("cond_embeds"), EMBEDS_TOL)?;
    if let Some(uncond) = &trace.uncond_embeds {
        check("uncond embeddings".into(), uncond, case.tensor("uncond_embeds"), EMBEDS_TOL)?;
    }
    for (i, latent) in trace.latents.iter().enumerate() {
        let key = format!("latents_step_{}", i + 1);
        check(format!("latent after step {}", i + 1), latent, case.tensor(&key), LATENT_TOL)?;
    }
    if trace.latents.len() != case.num("steps") as usize {
        return Err(format!("{} steps observed, reference {}", trace.latents.len(), case.num("steps")));
    }
    check("video".into(), &trace.video, case.tensor("video"), VIDEO_TOL)?;
    Ok(figures)
}

/// Runs `case` through `pipeline` (optionally with a changed job) and compares.
fn run_case(pipeline: &mut Pipeline, case: &Case, edit: impl FnOnce(&mut Job)) -> Result<Vec<String>, String> {
    let out = scratch(&format!("wan-{}", case.name));
    let mut job = case.job(&out);
    edit(&mut job);
    let noise = case.tensor("noise").expect("fixture has the initial noise");
    let trace =
        pipeline.trace(&job, noise).map_err(|e| format!("engine failed: {}", warmlane_shared::error::Report(&e)))?;
    compare(case, &trace)
}

const CASES: [&str; 2] = ["guided", "unguided"];

#[test]
fn engine_matches_the_reference_pipeline_at_every_step() {
    let settings = wan_settings();
    for guidance in [Guidance::Batch, Guidance::TwoPass] {
        let mut pipeline = load(&PipelineSettings { guidance, ..settings.clone() }).expect("wan-tiny loads");
        for name in CASES {
            let case = Case::load(name);
            match run_case(&mut pipeline, &case, |_| {}) {
                Ok(figures) => println!("{name} ({guidance:?}): {}", figures.join("; ")),
                Err(why) => panic!("{name} ({guidance:?}) does not match the reference: {why}"),
            }
        }
    }
}

/// The parity check is only worth something if it catches a wrong sampler: each
/// deliberate error below must make it fail.
#[test]
fn parity_catches_a_wrong_shift_spacing_guidance_or_tokenizer() {
    let settings = wan_settings();
    let guided = Case::load("guided");
    let broken: [(&str, PipelineSettings); 3] = [
        ("shift 1.0 instead of 3.0", PipelineSettings { flow_shift: 1.0, ..settings.clone() }),
        ("uniform spacing", PipelineSettings { timestep_spacing: TimestepSpacing::Uniform, ..settings.clone() }),
        ("hash tokenizer", PipelineSettings { tokenizer: None, vocab_size: 589, ..settings.clone() }),
    ];
    for (what, settings) in broken {
        let mut pipeline = load(&settings).expect("loads");
        let result = run_case(&mut pipeline, &guided, |_| {});
        assert!(result.is_err(), "{what}: the parity check passed: {result:?}");
    }
    let mut pipeline = load(&settings).expect("loads");
    let cfg = run_case(&mut pipeline, &guided, |job| job.cfg = 4.0);
    assert!(cfg.as_ref().is_err_and(|e| e.contains("latent after step 1")), "cfg 4 instead of 5: {cfg:?}");
    let steps = run_case(&mut pipeline, &guided, |job| job.steps = 5);
    assert!(steps.is_err(), "5 steps instead of 4: {steps:?}");
}

#[test]
fn the_tokenizer_file_gives_the_reference_ids() {
    let settings = wan_settings();
    let path = settings.dir_path(&repo_root()).join(settings.tokenizer.as_deref().expect("wan-tiny has a tokenizer"));
    let tokenizer =
        warmlane_engine::Tokenizer::from_file(&path, settings.max_tokens as usize).expect("tokenizer loads");
    for name in CASES {
        let case = Case::load(name);
        let tokens = tokenizer.encode(case.meta["prompt"].as_str().expect("prompt")).expect("encodes");
        assert_eq!(Some(tokens.ids), case.ints("cond_ids"), "{name}");
        assert_eq!(Some(tokens.mask), case.ints("cond_mask"), "{name}");
    }
    // Whitespace is collapsed as the reference pipeline does; long prompts keep `</s>`.
    let spaced = tokenizer.encode("  a red   fox\n").expect("encodes");
    assert_eq!(spaced, tokenizer.encode("a red fox").expect("encodes"));
    let long = tokenizer.encode(&"snow ".repeat(200)).expect("encodes");
    assert_eq!((long.ids.len(), long.mask.iter().sum::<i64>()), (32, 32));
    assert_eq!(long.ids.last(), Some(&1), "the end-of-sequence token survives truncation");
}

#[test]
fn bad_tokenizer_files_fail_the_load_naming_the_file() {
    let dir = scratch("wan-bad-tokenizer");
    let cases: [(&str, &[u8]); 3] = [
        ("garbage.json", b"this is not json"),
        ("empty.json", b""),
        ("no-model.json", br#"{"version": "1.0", "added_tokens": []}"#),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = warmlane_engine::Tokenizer::from_file(&path, 32).expect_err(name);
        let text = warmlane_shared::error::Report(&err).to_string();
        assert!(matches!(err, EngineError::Load { component: "tokenizer", .. }), "{name}: {text}");
        assert!(text.contains(name), "{name}: the error names the file: {text}");
    }
    // Through the pipeline: a tokenizer that does not parse fails the load.
    let models = dir.join("models/wan-tiny");
    std::fs::create_dir_all(&models).expect("dir");
    for file in ["text_encoder.onnx", "denoiser.onnx", "vae_decoder.onnx"] {
        std::fs::copy(repo_root().join("models/wan-tiny").join(file), models.join(file)).expect("copy");
    }
    std::fs::write(models.join("tokenizer.json"), b"{ broken").expect("write");
    init_runtime();
    let err = Pipeline::load("wan-tiny", &wan_settings(), &dir, &LoadOptions::default()).expect_err("broken tokenizer");
    assert!(warmlane_shared::error::Report(&err).to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn settings_that_do_not_match_the_graphs_fail_the_load() {
    let settings = wan_settings();
    let renamed = |role: &str, slot: Slot, name: &str| {
        let mut s = settings.clone();
        let component = match role {
            "text_encoder" => &mut s.text_encoder,
            "denoiser" => &mut s.denoiser,
            _ => &mut s.vae_decoder,
        };
        component.io.insert(slot, name.into());
        s
    };
    let cases: [(&str, PipelineSettings, &str); 5] = [
        (
            "input name",
            renamed("denoiser", Slot::Latent, "latent"),
            "denoiser.io.latent = \"latent\": the graph has no input",
        ),
        (
            "output name",
            renamed("vae_decoder", Slot::Video, "sample"),
            "vae_decoder.io.video = \"sample\": the graph has no output",
        ),
        (
            "unfed mask",
            {
                let mut s = settings.clone();
                s.text_encoder.io.remove(&Slot::AttentionMask);
                s
            },
            "input `attention_mask` is fed by no slot",
        ),
        (
            "latent channels",
            PipelineSettings { latent_channels: 4, ..settings.clone() },
            "channel dimension is 16 in the graph, but latent_channels is 4",
        ),
        (
            "demo names",
            PipelineSettings {
                text_encoder: warmlane_shared::settings::pipeline::ComponentSettings {
                    io: Default::default(),
                    ..settings.text_encoder.clone()
                },
                ..settings.clone()
            },
            "text_encoder.io",
        ),
    ];
    for (what, settings, want) in cases {
        let err = load(&settings).expect_err(what);
        let text = warmlane_shared::error::Report(&err).to_string();
        assert!(text.contains(want), "{what}: {text}");
        assert!(text.contains("models.wan-tiny.pipeline."), "{what}: names the settings field: {text}");
        assert_eq!(err.code(), warmlane_shared::ErrorCode::InferenceFailed);
    }
}

#[test]
fn wan_tiny_generates_any_frame_count() {
    let mut pipeline = load(&wan_settings()).expect("loads");
    pipeline.warm_up().expect("warm-up runs");
    assert_eq!(pipeline.fixed_frames(), None, "the exported VAE decoder takes any number of latent frames");
    let out = scratch("wan-generate");
    let case = Case::load("unguided");
    for (frames, want) in [(9, 9), (17, 17), (1, 1), (6, 6)] {
        let job = Job { frames, task_id: format!("frames-{frames}"), ..case.job(&out) };
        let generation = pipeline.generate(&job, &mut |_, _| std::ops::ControlFlow::Continue(())).expect("generates");
        assert_eq!((generation.frames, generation.width, generation.height), (want, 48, 32), "{frames} frames");
        assert_eq!(generation.denoiser_calls, 3);
    }
}
