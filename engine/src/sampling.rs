//! One generation's stages on loaded sessions: encode the prompt(s), run the sampler
//! loop on the denoiser, decode the latent into frames.
//!
//! Why its own module: this is the hot path the benchmark compares against bare `ort`,
//! and every failure here must come out as a classified [`EngineError`] (timeout, OOM,
//! other) without panicking, so the caller can clean up and keep the pipeline usable.
//! The sampler arithmetic itself is in [`crate::schedule`].

use crate::components::Component;
use crate::error::EngineError;
use crate::job::{FaultPlan, Progress, StageTimings, Trace};
use crate::output::Video;
use crate::ports::Ports;
use crate::rng::Pcg32;
use crate::schedule;
use crate::tokenizer::Tokenizer;
use feed::Tensor;
use ort::session::{RunOptions, Session};
use std::time::{Duration, Instant};
use warmlane_shared::settings::pipeline::{Guidance, Slot};
use warmlane_shared::settings::PipelineSettings;

mod feed;

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
    /// The initial latent, replacing the seeded noise (reproducing a reference run).
    pub(crate) noise: Option<&'a [f32]>,
}

/// Whether denoiser step `step` (0-based) of `steps` keeps its arena at the end of the
/// run (pure): every step but the last, whose memory the next step needs again.
pub(crate) fn holds_arena(step: usize, steps: usize) -> bool {
    step + 1 < steps
}

/// Per-run state shared by the stages.
pub(crate) struct Context<'a> {
    pub(crate) settings: &'a PipelineSettings,
    pub(crate) tokenizer: &'a Tokenizer,
    /// Options of every run that ends a stage (on CUDA they shrink the arena).
    pub(crate) run_options: &'a RunOptions,
    /// Options of the denoiser's runs before its last step (no shrink: the next step
    /// needs the same memory again, and giving it back costs a device free and
    /// allocation per step; measured on an H200 in BENCHMARKS.md, "GPU").
    pub(crate) step_options: &'a RunOptions,
    /// True while a denoiser step other than the last runs.
    pub(crate) mid_loop: bool,
    pub(crate) started: Instant,
    pub(crate) limit: Duration,
    pub(crate) faults: &'a mut FaultPlan,
    /// Completed denoiser runs of this generation.
    pub(crate) denoiser_calls: u32,
    pub(crate) timings: StageTimings,
    /// Where every intermediate goes when the caller traces the run.
    pub(crate) trace: Option<&'a mut Trace>,
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
    progress: &mut Progress<'_>,
) -> Result<Video, EngineError> {
    let [text_encoder, denoiser, vae_decoder] = components;
    let s = ctx.settings;
    let guided = req.cfg != 1.0;

    let t0 = Instant::now();
    let cond = encode(text_encoder, ctx, req.prompt)?;
    let uncond = if guided { Some(encode(text_encoder, ctx, req.negative_prompt)?) } else { None };
    ctx.timings.encode_us = t0.elapsed().as_micros() as u64;
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.cond_embeds = cond.data.clone();
        trace.uncond_embeds = uncond.as_ref().map(|u| u.data.clone());
    }

    let t1 = Instant::now();
    let shape = latent_shape(s, req);
    let mut latent = initial_latent(req, &shape)?;
    let plan = schedule::plan(s.sampler, req.steps, s.flow_shift, s.timestep_spacing);
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.timesteps = plan.iter().map(|step| step.timestep).collect();
        trace.latent_shape = shape.to_vec();
    }
    for (i, step) in plan.iter().enumerate() {
        let n = i as u32 + 1;
        let stage = format!("denoiser step {n}/{}", req.steps);
        ctx.check_deadline(&stage)?;
        if ctx.faults.fail_at_step == Some(n) {
            return Err(EngineError::inference(stage, "injected fault (FaultPlan.fail_at_step)"));
        }
        let at = At { stage: &stage, latent: &latent, shape, timestep: step.timestep };
        ctx.mid_loop = holds_arena(i, plan.len());
        let prediction = predict(denoiser, ctx, at, &cond, uncond.as_ref(), req.cfg);
        ctx.mid_loop = false;
        let prediction = prediction?;
        schedule::update(s.sampler, *step, &mut latent, &prediction);
        if let Some(trace) = ctx.trace.as_deref_mut() {
            trace.latents.push(latent.clone());
        }
        if progress(n, req.steps).is_break() {
            return Err(EngineError::Cancelled { stage });
        }
    }
    ctx.timings.denoise_us = t1.elapsed().as_micros() as u64;

    let t2 = Instant::now();
    ctx.check_deadline("vae_decoder")?;
    let video = decode(vae_decoder, ctx, &latent, shape)?;
    ctx.timings.decode_us = t2.elapsed().as_micros() as u64;
    Ok(video)
}

/// `[1, C, F, h, w]` of a request.
fn latent_shape(s: &PipelineSettings, req: &Request<'_>) -> [usize; 5] {
    let down = s.spatial_downsample as usize;
    // Rounded up, so the decoder gives at least the frames asked for (the extra ones are
    // cut); for `4k + 1` frames this is the reference pipeline's count.
    let latent_frames = (req.frames as usize - 1).div_ceil(s.temporal_downsample as usize) + 1;
    [1, s.latent_channels as usize, latent_frames, req.height as usize / down, req.width as usize / down]
}

/// The seeded noise, or the caller's initial latent when it has the right size.
fn initial_latent(req: &Request<'_>, shape: &[usize; 5]) -> Result<Vec<f32>, EngineError> {
    let len = shape.iter().product();
    match req.noise {
        None => Ok(Pcg32::new(req.seed).normals(len)),
        Some(noise) if noise.len() == len => Ok(noise.to_vec()),
        Some(noise) => Err(EngineError::inference(
            "initial latent",
            format!("{} values given, the latent {shape:?} has {len}", noise.len()),
        )),
    }
}

fn session<'c>(component: &'c mut Component, stage: &str) -> Result<(&'c mut Session, &'c Ports), EngineError> {
    let role = component.role.as_str();
    match component.session.as_mut() {
        Some(session) => Ok((session, &component.ports)),
        None => Err(EngineError::inference(stage, format!("{role} session is not loaded"))),
    }
}

/// Text embeddings `[1, T, D]` of `prompt`.
pub(crate) struct Embedding {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn encode(component: &mut Component, ctx: &mut Context<'_>, prompt: &str) -> Result<Embedding, EngineError> {
    let stage = "text_encoder";
    let tokens = ctx.tokenizer.encode(prompt)?;
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.tokens.push(tokens.clone());
    }
    let (session, ports) = session(component, stage)?;
    let shape = [1, tokens.ids.len()];
    let mut inputs = vec![feed::Feed::new(Slot::InputIds, Tensor::Int(&tokens.ids), &shape)];
    if ports.get(Slot::AttentionMask).is_some() {
        inputs.push(feed::Feed::new(Slot::AttentionMask, Tensor::Int(&tokens.mask), &shape));
    }
    let (shape, data) = feed::run(session, ctx, stage, inputs, ports, Slot::TextEmbeds)?;
    if shape.len() != 3 || shape[0] != 1 {
        return Err(EngineError::inference(stage, format!("embedding shape {shape:?}, expected [1, T, D]")));
    }
    Ok(Embedding { shape, data })
}

/// Where a denoiser run happens: the stage name, the latent and its shape, the timestep.
#[derive(Clone, Copy)]
struct At<'a> {
    stage: &'a str,
    latent: &'a [f32],
    shape: [usize; 5],
    timestep: f32,
}

/// The guided prediction for one step: one run without guidance, else two runs or
/// one batch of 2 (by settings), combined as `u + cfg * (c - u)`.
fn predict(
    component: &mut Component,
    ctx: &mut Context<'_>,
    at: At<'_>,
    cond: &Embedding,
    uncond: Option<&Embedding>,
    cfg: f32,
) -> Result<Vec<f32>, EngineError> {
    let Some(uncond) = uncond else {
        return denoise(component, ctx, at, cond);
    };
    if ctx.settings.guidance == Guidance::TwoPass {
        let mut prediction = denoise(component, ctx, at, cond)?;
        let unconditional = denoise(component, ctx, at, uncond)?;
        schedule::guide(&mut prediction, &unconditional, cfg);
        return Ok(prediction);
    }
    if cond.shape != uncond.shape {
        let why = format!("cond {:?} and uncond {:?} embeddings cannot form a batch", cond.shape, uncond.shape);
        return Err(EngineError::inference(at.stage, why));
    }
    let latent = [at.latent, at.latent].concat();
    let text =
        Embedding { shape: vec![2, cond.shape[1], cond.shape[2]], data: [&cond.data[..], &uncond.data[..]].concat() };
    let [_, c, f, h, w] = at.shape;
    let mut out = denoise(component, ctx, At { latent: &latent, shape: [2, c, f, h, w], ..at }, &text)?;
    let unconditional = out.split_off(at.latent.len());
    schedule::guide(&mut out, &unconditional, cfg);
    Ok(out)
}

/// One denoiser run on a batch of `at.shape[0]` (counted as that many calls).
fn denoise(
    component: &mut Component,
    ctx: &mut Context<'_>,
    at: At<'_>,
    text: &Embedding,
) -> Result<Vec<f32>, EngineError> {
    let stage = at.stage;
    if ctx.faults.oom_next_runs > 0 {
        ctx.faults.oom_next_runs -= 1;
        return Err(EngineError::from_ort(stage, SIMULATED_OOM));
    }
    let (session, ports) = session(component, stage)?;
    let shape = at.shape;
    let timesteps = vec![at.timestep; shape[0]];
    let inputs = vec![
        feed::Feed::new(Slot::Latent, Tensor::Float(at.latent), &shape),
        feed::Feed::new(Slot::Timestep, Tensor::Time(&timesteps), &[shape[0]]),
        feed::Feed::new(Slot::TextEmbeds, Tensor::Float(&text.data), &text.shape),
    ];
    let (out_shape, prediction) = feed::run(session, ctx, stage, inputs, ports, Slot::Prediction)?;
    if out_shape != shape {
        return Err(EngineError::inference(stage, format!("prediction shape {out_shape:?}, expected {shape:?}")));
    }
    ctx.denoiser_calls += shape[0] as u32;
    Ok(prediction)
}

fn decode(
    component: &mut Component,
    ctx: &mut Context<'_>,
    latent: &[f32],
    shape: [usize; 5],
) -> Result<Video, EngineError> {
    let stage = "vae_decoder";
    let (session, ports) = session(component, stage)?;
    let inputs = vec![feed::Feed::new(Slot::Latent, Tensor::Float(latent), &shape)];
    let (out_shape, data) = feed::run(session, ctx, stage, inputs, ports, Slot::Video)?;
    let video = match out_shape[..] {
        [1, 3, frames, height, width] => Video { data, frames, height, width },
        _ => return Err(EngineError::inference(stage, format!("video shape {out_shape:?}, expected [1, 3, F, H, W]"))),
    };
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.video = video.data.clone();
        trace.video_shape = out_shape;
    }
    Ok(video)
}

#[cfg(test)]
mod tests {
    use super::holds_arena;

    #[test]
    fn only_the_last_denoiser_step_shrinks_the_arena() {
        // (step, steps, holds): the last step of a loop (and a one-step loop) gives
        // the arena back; every earlier step keeps it for the next.
        let cases = [(0, 1, false), (0, 4, true), (2, 4, true), (3, 4, false), (7, 8, false), (0, 8, true)];
        for (step, steps, holds) in cases {
            assert_eq!(holds_arena(step, steps), holds, "step {step} of {steps}");
        }
    }
}
