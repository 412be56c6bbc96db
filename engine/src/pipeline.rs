//! A loaded pipeline: three warm sessions and the public operations on them.
//!
//! Why this shape: a lane worker loads its pipeline once and keeps it warm; the
//! degraded worker loads and releases whole pipelines; a memory manager (later)
//! releases single components by placement. Every generation, whatever its outcome,
//! ends in [`crate::cleanup`], and no failure leaves the pipeline unusable: sessions
//! are only replaced, never left half-built.

use crate::cleanup::{self, Report};
use crate::components::Component;
use crate::error::EngineError;
use crate::job::{go_on, ComponentMemory, FaultPlan, Generation, Job, LoadOptions, PipelineMemory, Progress, Trace};
use crate::memory::{self, MemorySample};
use crate::output::{self, Video};
use crate::runtime::Runtime;
use crate::sampling::{self, Context, Request};
use crate::tokenizer::Tokenizer;
use crate::trim;
use ort::session::RunOptions;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use warmlane_shared::settings::pipeline::ComponentRole;
use warmlane_shared::settings::pipeline::{Provider, Slot};
use warmlane_shared::settings::PipelineSettings;

/// A model's pipeline with its sessions.
pub struct Pipeline {
    model: String,
    settings: PipelineSettings,
    components: [Component; 3],
    tokenizer: Tokenizer,
    /// Set while [`Pipeline::trace`] runs: where the stages record intermediates.
    tracing: Option<Trace>,
    memory_limit: Option<u64>,
    faults: FaultPlan,
    before_load: MemorySample,
    after_load: MemorySample,
    denoiser_calls_total: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("model", &self.model).field("memory", &self.memory()).finish()
    }
}

/// Largest width or height the engine accepts (GIF frames are at most 65535).
const MAX_SIDE: u32 = 4096;

impl Pipeline {
    /// Loads the tokenizer and every component of `model` (paths relative to
    /// `base_dir`), one by one, measuring each. Fails on bad settings, a tokenizer file
    /// that does not parse, a graph whose tensors do not match the settings' `io`, or a
    /// session that cannot be created even on CPU; the error names the file or field.
    pub fn load(
        model: &str,
        settings: &PipelineSettings,
        base_dir: &Path,
        opts: &LoadOptions,
    ) -> Result<Pipeline, EngineError> {
        Runtime::init()?;
        settings.check(base_dir).map_err(|(field, message)| EngineError::Load {
            component: "pipeline",
            path: format!("models.{model}.pipeline.{field}"),
            source: message.into(),
        })?;
        let dir = settings.dir_path(base_dir);
        let max_tokens = settings.max_tokens as usize;
        let tokenizer = match &settings.tokenizer {
            Some(file) => Tokenizer::from_file(&dir.join(file), max_tokens)?,
            None => Tokenizer::hash(settings.vocab_size, max_tokens),
        };
        let make = |role: ComponentRole| {
            let c = settings.component(role);
            let mut component =
                Component::new(role, dir.join(&c.file), c.placement, opts.provider_override.unwrap_or(c.provider));
            component.save = opts.park.save && crate::park::ort_form_fits(component.file_bytes);
            if opts.park.save && !component.save {
                let (component_name, bytes) = (role.as_str(), component.file_bytes);
                tracing::info!(target: "warmlane::engine", model, component = component_name, bytes, "over 2 GiB: not parked");
            }
            component.parked_from = opts.park.from.iter().find(|(r, _)| *r == role).map(|(_, p)| p.clone());
            component
        };
        let mut pipeline = Pipeline {
            model: model.to_string(),
            settings: settings.clone(),
            components: ComponentRole::ALL.map(make),
            tokenizer,
            tracing: None,
            memory_limit: opts.memory_limit_bytes,
            faults: opts.faults,
            before_load: memory::sample(),
            after_load: MemorySample::default(),
            denoiser_calls_total: 0,
        };
        pipeline.ensure_all()?;
        pipeline.after_load = memory::sample();
        Ok(pipeline)
    }

    /// The memfds the load wrote each component's ORT form into (see [`crate::park`]):
    /// `(role, fd, len)`. The descriptors stay open until the pipeline drops, so
    /// another process can adopt them through `/proc/<pid>/fd/<n>` meanwhile.
    pub fn parked_out(&self) -> Vec<(ComponentRole, i32, u64)> {
        self.components
            .iter()
            .filter_map(|c| {
                let target = c.saved.as_ref()?;
                Some((c.role, target.raw_fd(), target.len().ok()?))
            })
            .collect()
    }

    /// The components whose session came from parked bytes.
    pub fn parked_loads(&self) -> Vec<ComponentRole> {
        self.components.iter().filter(|c| c.from_parked && c.session.is_some()).map(|c| c.role).collect()
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The settings it was loaded from.
    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Denoiser runs since load, over all generations (for tests and metrics).
    pub fn denoiser_calls_total(&self) -> u64 {
        self.denoiser_calls_total
    }

    /// Replaces the fault plan (test hook).
    pub fn set_faults(&mut self, faults: FaultPlan) {
        self.faults = faults;
    }

    /// The provider the denoiser runs on now (CPU after a fallback).
    pub fn provider(&self) -> Provider {
        self.components[ComponentRole::Denoiser.index()].effective
    }

    /// Runs one tiny generation (1 step, smallest frame) so the first real job does
    /// not pay for lazy initialisation; writes no file.
    pub fn warm_up(&mut self) -> Result<(), EngineError> {
        let side = self.settings.pixel_multiple();
        let job = Job {
            task_id: "warm_up".into(),
            lane: "warm_up".into(),
            prompt: "warm up".into(),
            negative_prompt: None,
            steps: 1,
            cfg: 1.0,
            seed: 0,
            width: side,
            height: side,
            frames: self.fixed_frames().unwrap_or(1),
            timeout: Duration::from_secs(600),
            out_dir: std::env::temp_dir(),
        };
        self.run_with_cleanup(&job, &request_of(&job), &mut go_on, false).map(|_| ())
    }

    /// Runs `job` from the initial latent `noise` (`[1, C, F, h, w]`, replacing the
    /// seeded noise) and returns every intermediate: tokens, embeddings, timesteps,
    /// the latent after each step and the decoded video. Writes no file. This is how
    /// the engine is checked against a reference implementation's run.
    pub fn trace(&mut self, job: &Job, noise: &[f32]) -> Result<Trace, EngineError> {
        let req = Request { noise: Some(noise), ..request_of(job) };
        self.tracing = Some(Trace::default());
        let result = self.run_with_cleanup(job, &req, &mut go_on, false);
        let trace = self.tracing.take().unwrap_or_default();
        result.map(|_| trace)
    }

    /// The video frame count a decoder exported for a fixed number of latent frames
    /// can produce; `None` when its frames are dynamic (or it was never loaded).
    pub fn fixed_frames(&self) -> Option<u32> {
        let port = self.components[ComponentRole::VaeDecoder.index()].ports.get(Slot::Latent)?;
        let latent_frames = u32::try_from(*port.shape.get(2)?).ok().filter(|&f| f > 0)?;
        Some((latent_frames - 1) * self.settings.temporal_downsample + 1)
    }

    /// Generates `job` and writes `<task_id>.mp4`, `<task_id>.gif` and `<task_id>.json`
    /// into its `out_dir`. `progress(step, steps)` is called after every denoising step.
    pub fn generate(&mut self, job: &Job, progress: &mut Progress<'_>) -> Result<Generation, EngineError> {
        let req = request_of(job);
        match self.run_with_cleanup(job, &req, progress, true)? {
            Some(generation) => Ok(generation),
            None => {
                Err(EngineError::Output { path: job.out_dir.display().to_string(), source: "nothing written".into() })
            }
        }
    }

    /// Measured memory per component, with placements and effective providers.
    pub fn memory(&self) -> PipelineMemory {
        PipelineMemory {
            model: self.model.clone(),
            components: self
                .components
                .iter()
                .map(|c| ComponentMemory {
                    role: c.role,
                    loaded: c.session.is_some(),
                    placement: c.placement,
                    requested_provider: c.requested,
                    provider: c.effective,
                    rss_bytes: c.rss_bytes,
                    device_bytes: c.device_bytes,
                    load_ms: c.load_ms,
                    file_bytes: c.file_bytes,
                })
                .collect(),
            before_load: self.before_load,
            after_load: self.after_load,
            now: memory::sample(),
        }
    }

    /// Drops a component's session and returns freed heap to the OS. The next
    /// generation (or [`Pipeline::ensure_component`]) loads it again.
    pub fn release_component(&mut self, role: ComponentRole) {
        let component = &mut self.components[role.index()];
        if component.release() {
            let trimmed = trim::release_free_heap();
            tracing::info!(target: "warmlane::engine", model = %self.model, component = role.as_str(), trimmed, rss = memory::rss_bytes(), "component released");
        }
    }

    /// Drops every session (the pipeline stays usable: the next job reloads them).
    pub fn release_all(&mut self) {
        for role in ComponentRole::ALL {
            self.release_component(role);
        }
    }

    /// Loads a component's session if it is not loaded.
    pub fn ensure_component(&mut self, role: ComponentRole) -> Result<(), EngineError> {
        self.components[role.index()].ensure(&self.model, &self.settings, self.memory_limit)
    }

    fn ensure_all(&mut self) -> Result<(), EngineError> {
        ComponentRole::ALL.into_iter().try_for_each(|role| self.ensure_component(role))
    }

    /// Validates, ensures sessions, runs, writes (if `write`), then always cleans up.
    fn run_with_cleanup(
        &mut self,
        job: &Job,
        req: &Request<'_>,
        progress: &mut Progress<'_>,
        write: bool,
    ) -> Result<Option<Generation>, EngineError> {
        let started = Instant::now();
        let before = memory::sample();
        let mut calls = 0;
        let result = validate(job, &self.settings, self.fixed_frames())
            .and_then(|()| self.ensure_all())
            .and_then(|()| self.run_watched(job, req, progress, write, started, &mut calls));
        let after_run = memory::sample();
        self.denoiser_calls_total += u64::from(calls);
        if let Err(error) = &result {
            self.recover(error);
        }
        let report = Report {
            task_id: &job.task_id,
            model: &self.model,
            lane: &job.lane,
            outcome: if result.is_ok() { "done" } else { "failed" },
            code: result.as_ref().err().map_or("", |e| e.code().as_str()),
            provider: self.provider().as_str(),
            denoiser_calls: calls,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        let figures = cleanup::finish(&report, before, after_run);
        result.map(|generation| generation.map(|g| Generation { memory: figures, ..g }))
    }

    /// After a failure: an allocation failure on a device provider may leave a grown
    /// arena behind, so the denoiser is rebuilt before the next job. Other failures
    /// leave the sessions as they are (ONNX Runtime runs are stateless).
    fn recover(&mut self, error: &EngineError) {
        if error.is_oom() && self.provider() != Provider::Cpu {
            self.release_component(ComponentRole::Denoiser);
        }
    }

    /// Runs the stages with a watchdog thread that terminates an in-flight run at the
    /// job's deadline (steps also check the deadline between runs).
    fn run_watched(
        &mut self,
        job: &Job,
        req: &Request<'_>,
        progress: &mut Progress<'_>,
        write: bool,
        started: Instant,
        calls: &mut u32,
    ) -> Result<Option<Generation>, EngineError> {
        let run_options = self.run_options(true)?;
        let step_options = self.run_options(false)?;
        let mut faults = self.faults;
        let mut ctx = Context {
            settings: &self.settings,
            tokenizer: &self.tokenizer,
            trace: self.tracing.as_mut(),
            run_options: &run_options,
            step_options: &step_options,
            mid_loop: false,
            started,
            limit: job.timeout,
            faults: &mut faults,
            denoiser_calls: 0,
            timings: Default::default(),
        };
        let video = std::thread::scope(|scope| {
            let (done, wait) = mpsc::channel::<()>();
            let remaining = job.timeout.saturating_sub(started.elapsed());
            let options = [&run_options, &step_options];
            scope.spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(remaining) {
                    for o in options {
                        let _ = o.terminate();
                    }
                }
            });
            let video = sampling::run(&mut self.components, &mut ctx, req, progress);
            drop(done);
            video
        });
        *calls = ctx.denoiser_calls;
        let timings = ctx.timings;
        self.faults.oom_next_runs = faults.oom_next_runs;
        let video = video?;
        if !write {
            return Ok(None);
        }
        let t = Instant::now();
        let mut generation = self.write(job, &video, *calls, started)?;
        generation.timings = timings;
        generation.timings.write_us = t.elapsed().as_micros() as u64;
        generation.inference_ms = started.elapsed().as_millis() as u64;
        Ok(Some(generation))
    }

    /// Run options; with `shrink`, a CUDA session gives its arena's unused chunks back
    /// to the device when the run ends (the last run of each stage of a generation).
    fn run_options(&self, shrink: bool) -> Result<RunOptions, EngineError> {
        let fail = |e: ort::Error| EngineError::Inference { stage: "run options".into(), source: Box::new(e) };
        let mut options = RunOptions::new().map_err(fail)?;
        let allowed = crate::runtime::cuda_arena_shrink();
        if self.provider() == Provider::Cuda && shrink && allowed {
            // Give the CUDA arena's unused chunks back to the device at the end of a stage.
            options.set("memory.enable_memory_arena_shrinkage", "gpu:0").map_err(fail)?;
        }
        Ok(options)
    }

    /// Writes `<task_id>.mp4` (the video), `<task_id>.gif` (its preview) and
    /// `<task_id>.json` (metadata), each atomically; the JSON last, so its presence
    /// means both videos are complete.
    fn write(&self, job: &Job, video: &Video, calls: u32, started: Instant) -> Result<Generation, EngineError> {
        let frames = (job.frames as usize).min(video.frames);
        let (mp4_name, gif_name) = (format!("{}.mp4", job.task_id), format!("{}.gif", job.task_id));
        let mp4 = video.to_mp4(frames).map_err(|source| EngineError::Output { path: mp4_name.clone(), source })?;
        let gif = video.to_gif(frames).map_err(|source| EngineError::Output { path: gif_name.clone(), source })?;
        let path = output::write_atomic(&job.out_dir, &mp4_name, &mp4)?;
        let preview_path = output::write_atomic(&job.out_dir, &gif_name, &gif)?;
        let generation = Generation {
            path,
            bytes: mp4.len() as u64,
            preview_path,
            preview_bytes: gif.len() as u64,
            frames: frames as u32,
            width: video.width as u32,
            height: video.height as u32,
            inference_ms: started.elapsed().as_millis() as u64,
            denoiser_calls: calls,
            memory: Default::default(),
            provider: self.provider(),
            timings: Default::default(),
        };
        let meta = serde_json::json!({
            "task_id": job.task_id, "model": self.model, "lane": job.lane,
            "prompt": job.prompt, "negative_prompt": job.negative_prompt,
            "seed": job.seed, "steps": job.steps, "cfg": job.cfg,
            "width": generation.width, "height": generation.height, "frames": generation.frames,
            "file": mp4_name, "bytes": generation.bytes, "fps": crate::FPS,
            "preview_file": gif_name, "preview_bytes": generation.preview_bytes,
            "provider": generation.provider.as_str(),
            "sampler": self.settings.sampler, "denoiser_calls": calls,
            "inference_ms": generation.inference_ms,
        });
        let text = serde_json::to_vec_pretty(&meta)
            .map_err(|e| EngineError::Output { path: job.task_id.clone(), source: Box::new(e) })?;
        output::write_atomic(&job.out_dir, &format!("{}.json", job.task_id), &text)?;
        Ok(generation)
    }
}

/// The job rules the engine itself needs (the contract's limits are checked upstream).
fn validate(job: &Job, settings: &PipelineSettings, fixed_frames: Option<u32>) -> Result<(), EngineError> {
    let invalid = |field: &'static str, message: String| Err(EngineError::InvalidJob { field, message });
    let id_ok = !job.task_id.is_empty()
        && job.task_id.len() <= 64
        && job.task_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !id_ok {
        return invalid("task_id", format!("must be 1-64 chars of [A-Za-z0-9_-], got {:?}", job.task_id));
    }
    let down = settings.pixel_multiple();
    for (field, value) in [("width", job.width), ("height", job.height)] {
        if value == 0 || value % down != 0 || value > MAX_SIDE {
            return invalid(field, format!("must be a positive multiple of {down} up to {MAX_SIDE}, got {value}"));
        }
    }
    if job.frames == 0 {
        return invalid("frames", "must be at least 1, got 0".into());
    }
    let latent_frames = |frames: u32| (frames - 1).div_ceil(settings.temporal_downsample);
    if let Some(fixed) = fixed_frames.filter(|&f| latent_frames(f) != latent_frames(job.frames)) {
        return invalid(
            "frames",
            format!("this pipeline's VAE decoder was exported for {fixed} frames, got {}", job.frames),
        );
    }
    if job.steps == 0 {
        return invalid("steps", "must be at least 1, got 0".into());
    }
    if !job.cfg.is_finite() {
        return invalid("cfg", format!("must be finite, got {}", job.cfg));
    }
    Ok(())
}

/// The sampler's view of a job; the negative prompt defaults to the empty prompt.
fn request_of(job: &Job) -> Request<'_> {
    Request {
        prompt: &job.prompt,
        negative_prompt: job.negative_prompt.as_deref().unwrap_or(""),
        steps: job.steps,
        cfg: job.cfg,
        seed: job.seed,
        width: job.width,
        height: job.height,
        frames: job.frames,
        noise: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_checks_sizes_and_a_fixed_frame_count() {
        let settings: PipelineSettings = serde_json::from_str(
            r#"{ "dir": "m", "sampler": "flow_euler", "latent_channels": 16, "spatial_downsample": 8,
                 "temporal_downsample": 4, "latent_multiple": 2, "max_tokens": 8, "text_encoder": { "file": "t" },
                 "denoiser": { "file": "d" }, "vae_decoder": { "file": "v" } }"#,
        )
        .expect("parses");
        let job = |width: u32, frames: u32| Job {
            task_id: "t".into(),
            lane: "l".into(),
            prompt: "p".into(),
            negative_prompt: None,
            steps: 1,
            cfg: 1.0,
            seed: 0,
            width,
            height: 32,
            frames,
            timeout: Duration::from_secs(1),
            out_dir: std::env::temp_dir(),
        };
        // (width, frames, decoder fixed at, refused field)
        let cases = [
            (32, 9, None, None),
            (32, 6, None, None),
            (24, 9, None, Some("width")),
            (32, 9, Some(9), None),
            (32, 7, Some(9), None),
            (32, 17, Some(9), Some("frames")),
            (32, 1, Some(9), Some("frames")),
            (32, 0, None, Some("frames")),
        ];
        for (width, frames, fixed, want) in cases {
            let got = match validate(&job(width, frames), &settings, fixed) {
                Err(EngineError::InvalidJob { field, .. }) => Some(field),
                Err(other) => panic!("{other}"),
                Ok(()) => None,
            };
            assert_eq!(got, want, "width {width}, frames {frames}, fixed {fixed:?}");
        }
    }
}
