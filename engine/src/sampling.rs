//! One generation's stages on loaded sessions: encode the prompt(s), run the sampler
//! loop on the denoiser, decode the latent into frames.
//!
//! Why its own module: this is the hot path the benchmark compares against bare `ort`,
//! and every failure here must come out as a classified [`EngineError`] (timeout, OOM,
//! other) without panicking, so the caller can clean up and keep the pipeline usable.
//! The sampler arithmetic itself is in [`crate::schedule`].

use crate::components::Component;
use crate::error::EngineError;
use crate::job::{FaultPlan, StageTimings};
use crate::output::Video;
use crate::rng::Pcg32;
use crate::{schedule, tokenizer};
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use std::time::{Duration, Instant};
use warmlane_shared::settings::PipelineSettings;

/// Message of a simulated allocation failure; classified like a real one.
pub(crate) const SIMULATED_OOM: &str =
    "Failed to allocate memory for requested buffer (simulated by FaultPlan.oom_next_runs)";

/// What to generate, after validation.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub(crate) prompt: &'a str,
    pub(crate) negative_prompt: &'a str,
    pub(crate) steps: u32,
    pub(crate) cfg: f32,
    pub(crate) seed: u64,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) frames: u32,
}

/// Per-run state shared by the stages.
pub(crate) struct Context<'a> {
    pub(crate) settings: &'a PipelineSettings,
    pub(crate) run_options: &'a RunOptions,
    pub(crate) started: Instant,
    pub(crate) limit: Duration,
    pub(crate) faults: &'a mut FaultPlan,
    /// Completed denoiser runs of this generation.
    pub(crate) denoiser_calls: u32,
    pub(crate) timings: StageTimings,
}

impl Context<'_> {
    fn timed_out(&self) -> bool {
        self.started.elapsed() >= self.limit
    }

    fn timeout(&self, stage: &str) -> EngineError {
        EngineError::Timeout {
            stage: stage.to_string(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            limit_ms: self.limit.as_millis() as u64,
        }
    }

    fn check_deadline(&self, stage: &str) -> Result<(), EngineError> {
        if self.timed_out() {
            return Err(self.timeout(stage));
        }
        Ok(())
    }

    /// A failed run: a timeout if the deadline passed (the watchdog terminates runs),
    /// else classified from ONNX Runtime's message.
    fn fail(&self, stage: &str, error: ort::Error) -> EngineError {
        if self.timed_out() {
            return self.timeout(stage);
        }
        EngineError::from_ort(stage, error)
    }
}

/// Runs all stages and returns the decoded video.
pub(crate) fn run(
    components: &mut [Component; 3],
    ctx: &mut Context<'_>,
    req: &Request<'_>,
    progress: &mut dyn FnMut(u32, u32),
) -> Result<Video, EngineError> {
    let [text_encoder, denoiser, vae_decoder] = components;
    let s = ctx.settings;
    let guided = req.cfg != 1.0;

    let t0 = Instant::now();
    let text = session(text_encoder)?;
    let cond = encode(text, ctx, req.prompt)?;
    let uncond = if guided { Some(encode(text, ctx, req.negative_prompt)?) } else { None };
    ctx.timings.encode_us = t0.elapsed().as_micros() as u64;

    let t1 = Instant::now();
    let down = s.spatial_downsample as usize;
    let latent_frames = (req.frames as usize - 1) / s.temporal_downsample as usize + 1;
    let shape = [1, s.latent_channels as usize, latent_frames, req.height as usize / down, req.width as usize / down];
    let mut latent = Pcg32::new(req.seed).normals(shape.iter().product());
    let plan = schedule::plan(s.sampler, req.steps, s.flow_shift);
    let den = session(denoiser)?;
    for (i, step) in plan.iter().enumerate() {
        let n = i as u32 + 1;
        let stage = format!("denoiser step {n}/{}", req.steps);
        ctx.check_deadline(&stage)?;
        if ctx.faults.fail_at_step == Some(n) {
            return Err(EngineError::inference(stage, "injected fault (FaultPlan.fail_at_step)"));
        }
        let mut prediction = denoise(den, ctx, &stage, &latent, shape, step.timestep, &cond)?;
        if let Some(uncond) = &uncond {
            let unconditional = denoise(den, ctx, &stage, &latent, shape, step.timestep, uncond)?;
            schedule::guide(&mut prediction, &unconditional, req.cfg);
        }
        schedule::update(s.sampler, *step, &mut latent, &prediction);
        progress(n, req.steps);
    }
    ctx.timings.denoise_us = t1.elapsed().as_micros() as u64;

    let t2 = Instant::now();
    ctx.check_deadline("vae_decoder")?;
    let video = decode(session(vae_decoder)?, ctx, &latent, shape)?;
    ctx.timings.decode_us = t2.elapsed().as_micros() as u64;
    Ok(video)
}

fn session(component: &mut Component) -> Result<&mut Session, EngineError> {
    let role = component.role.as_str();
    component.session.as_mut().ok_or_else(|| EngineError::inference(role, format!("{role} session is not loaded")))
}

/// Text embeddings `[1, T, D]` of `prompt`.
pub(crate) struct Embedding {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn encode(session: &mut Session, ctx: &Context<'_>, prompt: &str) -> Result<Embedding, EngineError> {
    let stage = "text_encoder";
    let ids = tokenizer::encode(prompt, ctx.settings.max_tokens as usize, ctx.settings.vocab_size);
    let input = TensorRef::from_array_view(([1, ids.len()], &ids[..])).map_err(|e| ctx.fail(stage, e))?;
    let outputs = session
        .run_with_options(ort::inputs!["input_ids" => input], ctx.run_options)
        .map_err(|e| ctx.fail(stage, e))?;
    let (shape, data) = extract(&outputs, "text_embeds").map_err(|e| ctx.fail(stage, e))?;
    Ok(Embedding { shape, data })
}

#[allow(clippy::too_many_arguments)]
fn denoise(
    session: &mut Session,
    ctx: &mut Context<'_>,
    stage: &str,
    latent: &[f32],
    shape: [usize; 5],
    timestep: f32,
    text: &Embedding,
) -> Result<Vec<f32>, EngineError> {
    if ctx.faults.oom_next_runs > 0 {
        ctx.faults.oom_next_runs -= 1;
        return Err(EngineError::from_ort(stage, SIMULATED_OOM));
    }
    let fail = |ctx: &Context<'_>, e: ort::Error| ctx.fail(stage, e);
    let latent_in = TensorRef::from_array_view((shape, latent)).map_err(|e| fail(ctx, e))?;
    let t = [timestep];
    let t_in = TensorRef::from_array_view(([1], &t[..])).map_err(|e| fail(ctx, e))?;
    let text_in = TensorRef::from_array_view((text.shape.clone(), &text.data[..])).map_err(|e| fail(ctx, e))?;
    let outputs = session
        .run_with_options(
            ort::inputs!["latent" => latent_in, "timestep" => t_in, "text_embeds" => text_in],
            ctx.run_options,
        )
        .map_err(|e| fail(ctx, e))?;
    let (out_shape, velocity) = extract(&outputs, "velocity").map_err(|e| fail(ctx, e))?;
    if out_shape != shape {
        return Err(EngineError::inference(stage, format!("velocity shape {out_shape:?}, expected {shape:?}")));
    }
    ctx.denoiser_calls += 1;
    Ok(velocity)
}

fn decode(session: &mut Session, ctx: &Context<'_>, latent: &[f32], shape: [usize; 5]) -> Result<Video, EngineError> {
    let stage = "vae_decoder";
    let input = TensorRef::from_array_view((shape, latent)).map_err(|e| ctx.fail(stage, e))?;
    let outputs =
        session.run_with_options(ort::inputs!["latent" => input], ctx.run_options).map_err(|e| ctx.fail(stage, e))?;
    let (out_shape, data) = extract(&outputs, "video").map_err(|e| ctx.fail(stage, e))?;
    match out_shape[..] {
        [1, 3, frames, height, width] => Ok(Video { data, frames, height, width }),
        _ => Err(EngineError::inference(stage, format!("video shape {out_shape:?}, expected [1, 3, F, H, W]"))),
    }
}

/// Copies output `name` out of the run's buffers, so nothing run-time outlives the run.
fn extract(outputs: &ort::session::SessionOutputs<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>), ort::Error> {
    let value = outputs.get(name).ok_or_else(|| ort::Error::new(format!("model has no output `{name}`")))?;
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    Ok((shape, data.to_vec()))
}
