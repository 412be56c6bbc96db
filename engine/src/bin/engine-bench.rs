//! `engine-bench`: session load time, per-step time and the engine's overhead over
//! calling `ort` directly on the same denoiser with the same inputs and run count.
//!
//! Usage: `cargo run -p warmlane-engine --release --bin engine-bench -- [model] [runs] [width] [height] [frames]`
//! (defaults: anisora 24 256 256 16). `model` is a model of `inference_settings.json` (its
//! pipeline settings, tensor names and tokenizer are used; a decoder exported for a fixed
//! frame count sets `frames`), or a demo pipeline directory such as
//! `.cache/heavy-models/anisora-200mb` (from `ops/gen_demo_models.py --heavy`). Run from the repository root (or set
//! `ORT_DYLIB_PATH`); the demo models are read from `models/`. Set `ENGINE_BENCH_KEEP=1`
//! to keep the generated GIF for a look.
//!
//! `ENGINE_BENCH_PROVIDER=cuda` runs the engine and the bare sessions on the CUDA
//! provider. `ENGINE_BENCH_JSON=FILE` also writes the figures as one JSON object (the
//! GPU kit's `gpu-check` reads it); on CUDA it adds where the denoiser's nodes run
//! (whether a session refusing CPU nodes builds, and ONNX Runtime's per-node profile:
//! kernel time per provider and the operator types on the CPU).
#![deny(unsafe_code)]

use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warmlane_engine::rng::Pcg32;
use warmlane_engine::{Generation, Job, LoadOptions, Pipeline, PipelineSettings, Runtime, Tokenizer};
use warmlane_shared::settings::pipeline::{ComponentRole, Provider, Slot};
use warmlane_shared::Settings;

fn main() {
    if let Err(error) = run(std::env::args().skip(1).collect()) {
        eprintln!("engine-bench: {error}");
        std::process::exit(1);
    }
}

/// The pipeline settings of `model` in `inference_settings.json`, or demo settings for
/// a pipeline directory when `model` contains a `/` (e.g. `.cache/heavy-models/anisora-200mb`).
fn settings_for(model: &str, root: &Path) -> Result<PipelineSettings, String> {
    if !model.contains('/') {
        let settings = Settings::load(&root.join("inference_settings.json")).map_err(|e| e.to_string())?;
        let found = settings.model(model).ok_or_else(|| format!("no model `{model}` in inference_settings.json"))?;
        return Ok(found.pipeline.clone());
    }
    let shift = if model.contains("anisora") { 3.0 } else { 1.0 };
    let dir = model;
    let json = format!(
        r#"{{ "dir": "{dir}", "sampler": "flow_euler", "flow_shift": {shift}, "latent_channels": 4,
            "spatial_downsample": 8, "temporal_downsample": 1, "max_tokens": 32, "tokenizer": null,
            "text_encoder": {{ "file": "text_encoder.onnx" }}, "denoiser": {{ "file": "denoiser.onnx" }},
            "vae_decoder": {{ "file": "vae_decoder.onnx" }} }}"#
    );
    serde_json::from_str(&json).map_err(|e| e.to_string())
}

fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors().find(|d| d.join("models").is_dir()).map_or(cwd.clone(), Path::to_path_buf)
}

fn run(args: Vec<String>) -> Result<(), String> {
    let model = args.first().cloned().unwrap_or_else(|| "anisora".into());
    let num = |i: usize, default: u32| {
        args.get(i).map_or(Ok(default), |a| a.parse::<u32>().map_err(|e| format!("argument {i}: {e}")))
    };
    let (runs, width, height, mut frames) = (num(1, 24)?.max(2), num(2, 256)?, num(3, 256)?, num(4, 16)?);
    let root = repo_root();
    let settings = settings_for(&model, &root)?;
    let provider = match std::env::var("ENGINE_BENCH_PROVIDER").ok().as_deref() {
        None | Some("") => Provider::Cpu,
        Some(p) => Provider::parse(p).ok_or_else(|| format!("ENGINE_BENCH_PROVIDER must be cpu or cuda, got `{p}`"))?,
    };

    print_host();
    let t = Instant::now();
    let runtime = Runtime::init().map_err(|e| e.to_string())?;
    println!("runtime init (dlopen + env):        {:>9.2} ms  ({})", ms(t.elapsed()), runtime.library().display());

    let (mut pipeline, mut direct, loads) = compare_loads(runtime, &model, &settings, &root, provider)?;

    // Engine: per-step time from the progress callback (cfg 1.0: one denoiser run per step).
    pipeline.warm_up().map_err(|e| e.to_string())?;
    if let Some(fixed) = pipeline.fixed_frames().filter(|&f| f != frames) {
        println!("frames:                             {fixed:>9} (the VAE decoder was exported for {fixed})");
        frames = fixed;
    }
    let out = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    let job = Job {
        task_id: "bench".into(),
        lane: "bench".into(),
        prompt: "a cat surfing a wave at sunset".into(),
        negative_prompt: None,
        steps: runs + 1,
        cfg: 1.0,
        seed: 1,
        width,
        height,
        frames,
        timeout: Duration::from_secs(600),
        out_dir: out.clone(),
    };
    let inputs = BareInputs::prepare(runtime, &settings, &root, &job, provider)?;
    let mut timings = time_rounds(&mut pipeline, &mut direct, &job, &inputs, runs)?;
    match std::env::var_os("ENGINE_BENCH_KEEP") {
        Some(_) => println!("outputs kept in {}", out.display()),
        None => {
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    report(&model, &inputs.lat_shape, runs, &mut timings);
    if let Some(path) = std::env::var_os("ENGINE_BENCH_JSON") {
        let mut summary = summary(&model, provider, &pipeline, &inputs, &loads, &mut timings);
        if provider == Provider::Cuda {
            summary["placement"] =
                placement(runtime, &settings.dir_path(&root).join(&settings.denoiser.file), &inputs)?;
        }
        std::fs::write(&path, summary.to_string()).map_err(|e| format!("{}: {e}", Path::new(&path).display()))?;
    }
    Ok(())
}

/// The figures as JSON: effective providers, load times, per-step medians.
fn summary(
    model: &str,
    provider: Provider,
    pipeline: &Pipeline,
    inputs: &BareInputs,
    loads: &[f64; 2],
    timings: &mut Timings,
) -> serde_json::Value {
    let components: Vec<_> = pipeline
        .memory()
        .components
        .iter()
        .map(|c| {
            serde_json::json!({
                "role": c.role.as_str(), "requested": c.requested_provider.as_str(),
                "effective": c.provider.as_str(), "load_ms": c.load_ms, "file_bytes": c.file_bytes,
                "device_bytes": c.device_bytes,
            })
        })
        .collect();
    let (engine_ms, bare_ms) = (median_ms(&mut timings.engine_steps), median_ms(&mut timings.direct_runs));
    serde_json::json!({
        "model": model, "provider": provider.as_str(), "latent": inputs.lat_shape,
        "engine_load_ms": loads[0], "bare_load_ms": loads[1], "components": components,
        "engine_step_ms": engine_ms, "bare_step_ms": bare_ms,
        "overhead_pct": 100.0 * (engine_ms - bare_ms) / bare_ms,
        "arena_shrink": warmlane_engine::runtime::cuda_arena_shrink(),
    })
}

/// A bare session of `path` on `provider` (CUDA registered or an error); `strict`
/// refuses any node assigned to the CPU (`session.disable_cpu_ep_fallback`), and
/// `profile` writes ONNX Runtime's per-node profile under that prefix.
fn bare_with(
    runtime: &Runtime,
    path: &Path,
    provider: Provider,
    strict: bool,
    profile: Option<&Path>,
) -> Result<Session, String> {
    let text = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut builder = Session::builder(runtime.environment()).map_err(|e| text(&e))?;
    if provider == Provider::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| text(&e))?;
        if strict {
            builder = builder.with_config_entry("session.disable_cpu_ep_fallback", "1").map_err(|e| text(&e))?;
        }
    }
    if let Some(prefix) = profile {
        builder = builder.with_profiling(prefix).map_err(|e| text(&e))?;
    }
    builder.commit_from_file(path).map_err(|e| text(&e))
}

/// A bare session of `path` on `provider`, as the timed runs use it.
fn bare_session(runtime: &Runtime, path: &Path, provider: Provider) -> Result<Session, String> {
    bare_with(runtime, path, provider, false, None)
}

/// Where the denoiser's nodes run on CUDA: whether a session refusing CPU nodes can be
/// built, and from ONNX Runtime's profile of three runs after a warm-up, the node
/// kernel time per provider, the operator types placed on the CPU and the largest
/// output any CPU node wrote. ONNX Runtime keeps shape arithmetic on the CPU on purpose
/// (outputs of a few bytes); a CPU node writing a real tensor would be a fallback.
fn placement(runtime: &Runtime, path: &Path, inputs: &BareInputs) -> Result<serde_json::Value, String> {
    // Built and dropped at once: the profiled session below would be a second copy.
    let strict = bare_with(runtime, path, Provider::Cuda, true, None).is_ok();
    let prefix = std::env::temp_dir().join(format!("engine-bench-profile-{}", std::process::id()));
    let mut session = bare_with(runtime, path, Provider::Cuda, false, Some(&prefix))?;
    for i in 0..4 {
        bare_denoiser_run(&mut session, inputs, i, 4)?;
    }
    let file = session.end_profiling().map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let _ = std::fs::remove_file(&file);
    let events: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let num = |v: &serde_json::Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0.0);
    // Runs after the first (warm-up: cuDNN algorithm search, first allocations).
    let mut runs: Vec<f64> = events.iter().filter(|e| e["name"] == "model_run").map(|e| num(&e["ts"])).collect();
    runs.sort_by(f64::total_cmp);
    let after = runs.get(1).copied().unwrap_or(0.0);
    let (mut cuda_us, mut cpu_us, mut cpu_max_out) = (0.0, 0.0, 0.0_f64);
    let mut cpu_ops = std::collections::BTreeMap::<String, u64>::new();
    let kernels = events.iter().filter(|e| {
        e["cat"] == "Node" && e["name"].as_str().is_some_and(|n| n.ends_with("_kernel_time")) && num(&e["ts"]) >= after
    });
    for e in kernels {
        let dur = num(&e["dur"]);
        if e["args"]["provider"] == "CPUExecutionProvider" {
            cpu_us += dur;
            cpu_max_out = cpu_max_out.max(num(&e["args"]["output_size"]));
            *cpu_ops.entry(e["args"]["op_name"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        } else {
            cuda_us += dur;
        }
    }
    Ok(serde_json::json!({
        "all_nodes_on_cuda": strict, "profiled_runs": runs.len().saturating_sub(1),
        "cpu_node_runs": cpu_ops, "cpu_kernel_us": cpu_us, "cuda_kernel_us": cuda_us,
        "cpu_kernel_share": if cpu_us + cuda_us > 0.0 { cpu_us / (cpu_us + cuda_us) } else { 0.0 },
        "cpu_max_output_bytes": cpu_max_out,
    }))
}

/// Session load: engine (three components, measured) vs bare ort (denoiser only).
/// Returns the loaded pipeline and the bare denoiser session.
fn compare_loads(
    runtime: &Runtime,
    model: &str,
    settings: &PipelineSettings,
    root: &Path,
    provider: Provider,
) -> Result<(Pipeline, Session, [f64; 2]), String> {
    // Every file is read once first, so both loads find it in the page cache and
    // neither pays the disk read the other skips.
    let dir = settings.dir_path(root);
    let mut cached = 0usize;
    for file in [&settings.text_encoder.file, &settings.denoiser.file, &settings.vae_decoder.file] {
        cached += std::fs::read(dir.join(file)).map_err(|e| format!("{}: {e}", dir.join(file).display()))?.len();
    }
    println!("page cache warmed:                  {cached:>9} B read before timing loads");
    let t = Instant::now();
    let options = LoadOptions { provider_override: Some(provider), ..LoadOptions::default() };
    let pipeline = Pipeline::load(model, settings, root, &options).map_err(|e| e.to_string())?;
    let engine_load = ms(t.elapsed());
    println!("engine Pipeline::load (3 sessions): {engine_load:>9.2} ms");
    for c in pipeline.memory().components {
        println!(
            "  {:<13} load {:>5} ms  rss {:>+9} B  file {:>9} B",
            c.role.as_str(),
            c.load_ms,
            c.rss_bytes,
            c.file_bytes
        );
    }
    let denoiser_path = settings.dir_path(root).join(&settings.denoiser.file);
    let t = Instant::now();
    let direct = bare_session(runtime, &denoiser_path, provider)?;
    let bare_load = ms(t.elapsed());
    println!("bare ort denoiser commit_from_file: {bare_load:>9.2} ms ({})", provider.as_str());
    Ok((pipeline, direct, [engine_load, bare_load]))
}

/// The bare denoiser's inputs: the same latent shape, timestep and text embedding as the engine's.
struct BareInputs {
    lat_shape: [usize; 5],
    latent: Vec<f32>,
    text_shape: Vec<usize>,
    text: Vec<f32>,
    /// The denoiser's tensor names: latent, timestep, text embeddings, prediction.
    names: [String; 4],
}

impl BareInputs {
    /// Draws the latent and runs the text encoder once on `job`'s prompt (int64 ids,
    /// the mask where the settings name one).
    fn prepare(
        runtime: &Runtime,
        settings: &PipelineSettings,
        root: &Path,
        job: &Job,
        provider: Provider,
    ) -> Result<BareInputs, String> {
        let (down, temporal) = (settings.spatial_downsample as usize, settings.temporal_downsample as usize);
        let lat_shape = [
            1_usize,
            settings.latent_channels as usize,
            (job.frames as usize - 1) / temporal + 1,
            job.height as usize / down,
            job.width as usize / down,
        ];
        let latent = Pcg32::new(1).normals(lat_shape.iter().product());
        let dir = settings.dir_path(root);
        let max_tokens = settings.max_tokens as usize;
        let tokenizer = match &settings.tokenizer {
            Some(file) => Tokenizer::from_file(&dir.join(file), max_tokens).map_err(|e| e.to_string())?,
            None => Tokenizer::hash(settings.vocab_size, max_tokens),
        };
        let tokens = tokenizer.encode(&job.prompt).map_err(|e| e.to_string())?;
        let mut text_session = bare_session(runtime, &dir.join(&settings.text_encoder.file), provider)?;
        let name = |slot| settings.tensor(ComponentRole::TextEncoder, slot).map(str::to_string);
        let (text_shape, text) = {
            let shape = [1, tokens.ids.len()];
            let mut inputs = vec![(
                name(Slot::InputIds).unwrap_or_default(),
                TensorRef::from_array_view((shape, &tokens.ids[..])).map_err(|e| e.to_string())?,
            )];
            if let Some(mask) = name(Slot::AttentionMask) {
                inputs.push((mask, TensorRef::from_array_view((shape, &tokens.mask[..])).map_err(|e| e.to_string())?));
            }
            let out = text_session.run(inputs).map_err(|e| e.to_string())?;
            let output = name(Slot::TextEmbeds).unwrap_or_default();
            let (shape, data) = out[output.as_str()].try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
            (shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), data.to_vec())
        };
        let names = [Slot::Latent, Slot::Timestep, Slot::TextEmbeds, Slot::Prediction]
            .map(|slot| settings.tensor(ComponentRole::Denoiser, slot).unwrap_or_default().to_string());
        Ok(BareInputs { lat_shape, latent, text_shape, text, names })
    }
}

/// What the timing rounds measured (warm-up rounds left out).
struct Timings {
    engine_steps: Vec<Duration>,
    direct_runs: Vec<Duration>,
    last_generation: Option<Generation>,
}

/// Rounds alternate engine and bare so background load hits both alike; the first
/// round of each is a warm-up and is not counted.
fn time_rounds(
    pipeline: &mut Pipeline,
    direct: &mut Session,
    job: &Job,
    inputs: &BareInputs,
    runs: u32,
) -> Result<Timings, String> {
    let mut timings = Timings { engine_steps: Vec::new(), direct_runs: Vec::new(), last_generation: None };
    for round in 0..ROUNDS {
        let mut last = None::<Instant>;
        let mut intervals = Vec::new();
        let generation = pipeline
            .generate(job, &mut |_, _| {
                let now = Instant::now();
                if let Some(prev) = last {
                    intervals.push(now - prev);
                }
                last = Some(now);
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        timings.last_generation = Some(generation);
        for i in 0..runs {
            let t = Instant::now();
            bare_denoiser_run(direct, inputs, i, runs)?;
            if round > 0 {
                timings.direct_runs.push(t.elapsed());
            }
        }
        if round > 0 {
            timings.engine_steps.extend(intervals);
        }
    }
    Ok(timings)
}

/// One bare ort denoiser run, step `i` of `runs`.
fn bare_denoiser_run(direct: &mut Session, inputs: &BareInputs, i: u32, runs: u32) -> Result<(), String> {
    let l = TensorRef::from_array_view((inputs.lat_shape, &inputs.latent[..])).map_err(|e| e.to_string())?;
    let ts = [1000.0 * (1.0 - i as f32 / runs as f32)];
    let tt = TensorRef::from_array_view(([1], &ts[..])).map_err(|e| e.to_string())?;
    let te = TensorRef::from_array_view((inputs.text_shape.clone(), &inputs.text[..])).map_err(|e| e.to_string())?;
    let [latent, timestep, text, prediction] = &inputs.names;
    let out = direct
        .run(ort::inputs![latent.as_str() => l, timestep.as_str() => tt, text.as_str() => te])
        .map_err(|e| e.to_string())?;
    let (_, v) = out[prediction.as_str()].try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
    std::hint::black_box(v);
    Ok(())
}

fn report(model: &str, lat_shape: &[usize; 5], runs: u32, timings: &mut Timings) {
    let engine_ms = median_ms(&mut timings.engine_steps);
    let direct_ms = median_ms(&mut timings.direct_runs);
    println!(
        "workload: {model}, latent {lat_shape:?}, {} rounds of ({} engine steps, {} bare runs)",
        ROUNDS - 1,
        runs,
        runs
    );
    println!("engine per step (median):           {:>9.3} ms", engine_ms);
    println!("bare ort per run (median):          {:>9.3} ms", direct_ms);
    println!(
        "engine overhead per step:           {:>9.3} ms ({:+.1}%)",
        engine_ms - direct_ms,
        100.0 * (engine_ms - direct_ms) / direct_ms
    );
    if let Some(g) = &timings.last_generation {
        println!(
            "last generation: total {} ms = encode {:.2} + denoise {:.2} + decode {:.2} + mp4/gif/json write {:.2} ms; {} frames {}x{}, {} B",
            g.inference_ms, g.timings.encode_us as f64 / 1e3, g.timings.denoise_us as f64 / 1e3,
            g.timings.decode_us as f64 / 1e3, g.timings.write_us as f64 / 1e3,
            g.frames, g.width, g.height, g.bytes
        );
        println!(
            "memory: rss before {} B, after run {} B, after cleanup {} B",
            g.memory.before.rss, g.memory.after_run.rss, g.memory.after_cleanup.rss
        );
    }
}

fn print_host() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("host: arch {} | cores {} | cpu {}", std::env::consts::ARCH, cores, cpu);
}

/// Measurement rounds (the first is a warm-up).
const ROUNDS: usize = 6;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples.get(samples.len() / 2).map_or(0.0, |d| ms(*d))
}
