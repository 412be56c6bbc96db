//! `RunnerEngine`: the degraded worker's engine. It feeds the [`Slot`] events and
//! performs its actions with runner child processes: start a runner and load, serve
//! through it, stop it and confirm by measurement that its memory came back before the
//! next runner starts (FR-001..FR-003). A runner that crashes or hangs fails its task
//! with a code and is replaced on the next request; the worker stays up.

use super::park::ParkCache;
use super::process::{CallError, RunnerProcess};
use super::protocol::{ParkRequest, ParkedPart, Request, Response, RunnerFaults};
use super::release::{confirm_release, ReleaseReadings, SwapTimings};
use crate::engine::{Engine, EngineFailure, Output};
use crate::managed::Managed;
use crate::memory::{probe, PipelineReport};
use crate::slot::{Slot, SlotAction, SlotEvent};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_engine::{ComponentRole, Provider};
use warmlane_shared::{ErrorCode, Settings, ValidRequest};

/// How runners are started and watched.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The executable with the hidden `runner` subcommand (`std::env::current_exe()`).
    pub exe: PathBuf,
    /// Provider override passed to the runner.
    pub provider: Option<Provider>,
    /// Added to the model's `inference_timeout_ms` for the per-request deadline (the
    /// engine inside the runner enforces the limit itself; this catches a hung process).
    pub deadline_margin: Duration,
    /// Longest a runner may take to load and warm up.
    pub load_timeout: Duration,
    /// Time a runner gets to exit after `Shutdown` before it is killed.
    pub stop_grace: Duration,
    /// Growth of the worker's own RSS across a runner's life still counted as flat.
    pub rss_tolerance_bytes: u64,
    /// Longest wait for NVML to show the runner's device memory gone.
    pub device_release_timeout: Duration,
    /// Failures the next started runners inject (tests).
    pub faults: RunnerFaults,
    /// Keep one spare runner process started ahead: ONNX Runtime initialised, no model,
    /// no session, no device memory. A switch then skips process start and runtime
    /// initialisation; the next pipeline still loads only after the previous runner's
    /// memory is confirmed free. Costs the spare's RSS (the runtime library, tens of MB).
    pub spare: bool,
    /// Host memory for parked pipelines (`--host-park-bytes`; see [`super::park`]); 0
    /// turns parking off, so that every switch is a cold load.
    pub host_park_bytes: u64,
}

impl RunnerConfig {
    /// Defaults for `exe`.
    pub fn new(exe: PathBuf) -> RunnerConfig {
        RunnerConfig {
            exe,
            provider: None,
            deadline_margin: Duration::from_secs(30),
            load_timeout: Duration::from_secs(600),
            stop_grace: Duration::from_secs(10),
            rss_tolerance_bytes: 64 << 20,
            device_release_timeout: Duration::from_secs(10),
            faults: RunnerFaults::default(),
            spare: true,
            host_park_bytes: 0,
        }
    }
}

/// The degraded worker's engine: one heavy pipeline, in a runner child.
pub struct RunnerEngine {
    settings: Arc<Settings>,
    settings_json: String,
    cfg: RunnerConfig,
    slot: Slot,
    runner: Option<RunnerProcess>,
    spare: Option<RunnerProcess>,
    park: ParkCache,
    loads: u64,
    parked_loads: u64,
    timings: SwapTimings,
    pid: Arc<AtomicU32>,
}

fn failed(code: ErrorCode, message: String) -> EngineFailure {
    EngineFailure { code, message }
}

impl RunnerEngine {
    /// An engine with an empty slot.
    pub fn new(settings: Arc<Settings>, cfg: RunnerConfig) -> Result<RunnerEngine, EngineFailure> {
        let settings_json = serde_json::to_string(&*settings)
            .map_err(|e| failed(ErrorCode::InferenceFailed, format!("settings do not serialize: {e}")))?;
        Ok(RunnerEngine {
            settings,
            settings_json,
            slot: Slot::new(),
            runner: None,
            spare: None,
            park: ParkCache::new(cfg.host_park_bytes),
            cfg,
            loads: 0,
            parked_loads: 0,
            timings: SwapTimings::default(),
            pid: Arc::default(),
        })
    }

    /// The pid of the live runner (0 when none), shared for samplers and benchmarks.
    pub fn pid_handle(&self) -> Arc<AtomicU32> {
        self.pid.clone()
    }

    /// Replaces the failures that runners started from now on inject (test hook).
    pub fn set_faults(&mut self, faults: RunnerFaults) {
        self.cfg.faults = faults;
    }

    /// The slot, for inspection.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// The pid of the spare runner, when one is started.
    pub fn spare_pid(&self) -> Option<u32> {
        self.spare.as_ref().map(RunnerProcess::pid)
    }

    /// The parked pipelines.
    pub fn park(&self) -> &ParkCache {
        &self.park
    }

    /// The parked pipelines, mutably (test hook: adopt bad bytes).
    pub fn park_mut(&mut self) -> &mut ParkCache {
        &mut self.park
    }

    /// Where the last prepare that loaded spent its time.
    pub fn last_swap(&self) -> SwapTimings {
        self.timings
    }

    /// Loads in which every parked component came from parked bytes (components too
    /// large for the ORT form, over 2 GiB, are never parked and load from the files).
    pub fn parked_loads(&self) -> u64 {
        self.parked_loads
    }

    /// What the model's parked form will about weigh: the bytes of its components that
    /// fit an ORT form (model file and external data; larger ones are not parked).
    fn file_bytes(&self, model: &str) -> u64 {
        let Some(ms) = self.settings.model(model) else { return 0 };
        let dir = ms.pipeline.dir_path(&self.settings.base_dir);
        ComponentRole::ALL
            .iter()
            .map(|r| warmlane_engine::park::model_file_bytes(&dir.join(&ms.pipeline.component(*r).file)))
            .filter(|&bytes| warmlane_engine::park::ort_form_fits(bytes))
            .sum()
    }

    /// Drives the slot from `event` until it serves or fails.
    fn drive(&mut self, event: SlotEvent) -> Result<Option<String>, EngineFailure> {
        let mut actions: VecDeque<SlotAction> = self.slot.handle(event).into();
        let mut cause: Option<EngineFailure> = None;
        while let Some(action) = actions.pop_front() {
            let next = match action {
                SlotAction::StartRunner(model) => match self.start(&model) {
                    Ok(()) => SlotEvent::Loaded,
                    Err(f) => {
                        let why = f.message.clone();
                        cause = Some(f);
                        SlotEvent::LoadFailed(why)
                    }
                },
                SlotAction::StopRunner(_) => match self.stop() {
                    Ok(()) => SlotEvent::Released,
                    Err(why) => SlotEvent::ReleaseUnconfirmed(why),
                },
                SlotAction::Serve(model) => return Ok(Some(model)),
                SlotAction::Fail(message) => {
                    return Err(cause.unwrap_or_else(|| failed(ErrorCode::InferenceFailed, message)));
                }
            };
            actions.extend(self.slot.handle(next));
        }
        Ok(None)
    }

    /// A started spare if it is alive, else a new process.
    fn take_runner(&mut self, model: &str) -> Result<RunnerProcess, EngineFailure> {
        if let Some(mut spare) = self.spare.take() {
            if spare.is_alive() {
                spare.assign(model);
                return Ok(spare);
            }
        }
        RunnerProcess::spawn(&self.cfg.exe, Some(model)).map_err(|e| {
            failed(ErrorCode::InferenceFailed, format!("cannot start the runner {}: {e}", self.cfg.exe.display()))
        })
    }

    fn start_spare(&mut self) {
        if !self.cfg.spare || self.spare.is_some() {
            return;
        }
        match RunnerProcess::spawn(&self.cfg.exe, None) {
            Ok(spare) => self.spare = Some(spare),
            Err(e) => tracing::warn!(error = %e, "cannot start a spare runner; the next switch starts one"),
        }
    }

    /// Starts (or takes the spare) runner for `model` and loads it, from its parked
    /// bytes when the worker holds them. A runner that fails to load is reaped; when it
    /// was loading parked bytes, they are dropped and the model loads once more from
    /// its files, so bad parked bytes never cost a request.
    fn start(&mut self, model: &str) -> Result<(), EngineFailure> {
        let park = self.park.request_for(model, self.file_bytes(model));
        if park.from.is_empty() {
            return self.start_once(model, park);
        }
        self.start_once(model, park).or_else(|f| {
            tracing::warn!(model, error = %f.message, "loading the parked pipeline failed; dropped it, loading from the files");
            self.park.forget(model);
            let park = self.park.request_for(model, self.file_bytes(model));
            self.start_once(model, park)
        })
    }

    /// Keeps what the runner parked and forgets parked bytes that did not load.
    fn after_load(&mut self, model: &str, pid: u32, offered: usize, parked: &[ParkedPart], from_parked: usize) {
        if offered > 0 && from_parked < offered {
            tracing::warn!(model, offered, loaded = from_parked, "parked bytes did not all load; dropped them");
            self.park.forget(model);
        } else if offered > 0 {
            self.parked_loads += 1;
        }
        if parked.is_empty() {
            return;
        }
        match self.park.adopt(model, pid, parked) {
            Ok(bytes) => {
                tracing::info!(model, bytes, held = self.park.bytes(), budget = self.park.budget(), "pipeline parked")
            }
            Err(why) => tracing::warn!(model, error = %why, "pipeline not parked"),
        }
    }

    fn start_once(&mut self, model: &str, park: ParkRequest) -> Result<(), EngineFailure> {
        let mut runner = self.take_runner(model)?;
        let offered = park.from.len();
        let prepare = Request::Prepare {
            model: model.to_string(),
            settings_json: self.settings_json.clone(),
            base_dir: self.settings.base_dir.display().to_string(),
            provider: self.cfg.provider,
            faults: self.cfg.faults,
            park,
        };
        let answer = runner.call(&prepare, self.cfg.load_timeout);
        let outcome = match answer {
            Ok(Response::Loaded { load_ms, warmup_ms, parked, from_parked }) => {
                let pid = runner.pid();
                self.timings.session_ms = load_ms.saturating_sub(warmup_ms) as f64;
                self.timings.warmup_ms = warmup_ms as f64;
                tracing::info!(model, pid, load_ms, from_parked = from_parked.len(), "runner loaded its pipeline");
                self.after_load(model, pid, offered, &parked, from_parked.len());
                self.pid.store(pid, Ordering::SeqCst);
                self.runner = Some(runner);
                self.loads += 1;
                self.start_spare();
                return Ok(());
            }
            Ok(Response::Failed { code, message }) => {
                failed(code, format!("runner for `{model}` could not load: {message}"))
            }
            Ok(other) => {
                failed(ErrorCode::InferenceFailed, format!("runner for `{model}` answered Prepare with {other:?}"))
            }
            Err(CallError::Timeout) => failed(
                ErrorCode::InferenceTimeout,
                format!("runner for `{model}` did not load within {} ms; killed", self.cfg.load_timeout.as_millis()),
            ),
            Err(CallError::Died(e)) => {
                failed(ErrorCode::InferenceFailed, format!("runner for `{model}` died while loading ({e})"))
            }
        };
        let status = runner.kill_and_reap();
        tracing::warn!(model, %status, error = %outcome.message, "runner failed to load; reaped");
        Err(outcome)
    }

    /// Stops the runner and confirms its memory came back: the child is reaped, the
    /// worker's own RSS is flat, and (with NVML) the child holds no device memory.
    fn stop(&mut self) -> Result<(), String> {
        let Some(runner) = self.runner.take() else { return Ok(()) };
        self.pid.store(0, Ordering::SeqCst);
        let (pid, model, parent_before) = (runner.pid(), runner.model().to_string(), runner.parent_rss_at_spawn);
        let started = Instant::now();
        let (status, killed) = runner.stop(self.cfg.stop_grace);
        self.timings.stop_ms = started.elapsed().as_secs_f64() * 1e3;
        let confirming = Instant::now();
        let check = confirm_release(ReleaseReadings {
            reaped_gone: probe::rss_of(pid).is_none(),
            parent_rss_before: parent_before,
            parent_rss_after: warmlane_engine::memory::rss_bytes(),
            rss_tolerance: self.cfg.rss_tolerance_bytes,
            device_bytes_left: self.device_bytes_left(pid),
        });
        self.timings.confirm_ms = confirming.elapsed().as_secs_f64() * 1e3;
        let after = warmlane_engine::memory::sample();
        (self.timings.device_used_after_stop, self.timings.worker_rss_after_stop) = (after.device_used, after.rss);
        tracing::info!(model, pid, %status, killed, stop_ms = started.elapsed().as_millis() as u64, confirmed = check.is_ok(), "runner stopped");
        check
    }

    fn device_bytes_left(&self, pid: u32) -> Option<u64> {
        let deadline = Instant::now() + self.cfg.device_release_timeout;
        loop {
            let left = probe::device_bytes_of(pid)?;
            if left == 0 || Instant::now() >= deadline {
                return Some(left);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A runner crashed or hung: kill and reap it, tell the slot.
    fn runner_died(&mut self) -> String {
        self.pid.store(0, Ordering::SeqCst);
        let status = self.runner.take().map(|mut r| r.kill_and_reap().to_string()).unwrap_or_default();
        self.slot.handle(SlotEvent::RunnerDied);
        status
    }

    fn call(&mut self, request: &Request, timeout: Duration) -> Option<Response> {
        let runner = self.runner.as_mut()?;
        match runner.call(request, timeout) {
            Ok(r) => Some(r),
            Err(e) => {
                let status = self.runner_died();
                tracing::error!(error = ?e, %status, "runner stopped answering; reaped");
                None
            }
        }
    }
}

impl Engine for RunnerEngine {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure> {
        if self.settings.model(model).is_none() {
            return Err(failed(ErrorCode::InferenceFailed, format!("model `{model}` is not in the settings")));
        }
        let loads_before = self.loads;
        let started = Instant::now();
        let before = std::mem::take(&mut self.timings);
        self.drive(SlotEvent::Request(model.to_string()))?;
        if self.loads == loads_before {
            self.timings = before;
            return Ok(None);
        }
        self.timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(Some(started.elapsed()))
    }

    fn generate(
        &mut self,
        req: &ValidRequest,
        lane: &str,
        out_dir: &Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<Output, EngineFailure> {
        self.prepare(&req.model)?;
        let limit_ms = self.settings.model(&req.model).map_or(600_000, |m| m.inference_timeout_ms);
        let deadline = Instant::now() + Duration::from_millis(limit_ms) + self.cfg.deadline_margin;
        let request = Request::Generate {
            request: req.to_msgpack(),
            lane: lane.to_string(),
            out_dir: out_dir.display().to_string(),
        };
        let Some(runner) = self.runner.as_mut() else {
            return Err(failed(ErrorCode::InferenceFailed, "no runner after prepare".into()));
        };
        let pid = runner.pid();
        let mut answer = runner.send(&request).and_then(|()| runner.recv(deadline));
        let mut cancel_sent = false;
        loop {
            match answer {
                Ok(Response::Progress { step, steps }) => {
                    let cancel = progress(step, steps).is_break() && !cancel_sent;
                    answer = match self.runner.as_mut() {
                        None => Err(CallError::Died("gone".into())),
                        Some(r) if cancel => {
                            cancel_sent = true;
                            r.send(&Request::Cancel { task_id: req.task_id.clone() }).and_then(|()| r.recv(deadline))
                        }
                        Some(r) => r.recv(deadline),
                    };
                }
                Ok(Response::Done { output }) => return Ok(output),
                Ok(Response::Failed { code, message }) => return Err(failed(code, message)),
                Ok(other) => {
                    let status = self.runner_died();
                    return Err(failed(
                        ErrorCode::InferenceFailed,
                        format!("runner {pid} answered Generate with {other:?}; restarted next time ({status})"),
                    ));
                }
                Err(CallError::Timeout) => {
                    let status = self.runner_died();
                    return Err(failed(
                        ErrorCode::InferenceTimeout,
                        format!(
                            "runner {pid} for `{}` did not finish within {limit_ms} ms + margin; killed ({status})",
                            req.model
                        ),
                    ));
                }
                Err(CallError::Died(e)) => {
                    let status = self.runner_died();
                    return Err(failed(
                        ErrorCode::InferenceFailed,
                        format!("runner {pid} for `{}` crashed: {e} ({status})", req.model),
                    ));
                }
            }
        }
    }

    fn resident(&self) -> Option<String> {
        self.slot.serving().map(str::to_string)
    }

    fn release(&mut self) {
        if let Err(e) = self.drive(SlotEvent::Evict) {
            tracing::warn!(error = %e, "releasing the runner");
        }
        // Idle eviction and shutdown leave nothing behind, the spare included.
        if let Some(spare) = self.spare.take() {
            spare.stop(Duration::ZERO);
        }
    }

    fn loads(&self) -> u64 {
        self.loads
    }
}

impl Managed for RunnerEngine {
    fn report(&mut self) -> Option<PipelineReport> {
        match self.call(&Request::Memory, Duration::from_secs(10))? {
            Response::Memory { report } => report,
            _ => None,
        }
    }

    fn release_component(&mut self, role: ComponentRole) -> Result<(), EngineFailure> {
        match self.call(&Request::ReleaseComponent { role }, Duration::from_secs(30)) {
            Some(Response::Memory { .. }) | None => Ok(()),
            Some(Response::Failed { message, .. }) => Err(failed(ErrorCode::InferenceFailed, message)),
            Some(other) => Err(failed(ErrorCode::InferenceFailed, format!("unexpected answer {other:?}"))),
        }
    }

    fn runner_rss_bytes(&self) -> Option<u64> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => probe::rss_of(pid),
        }
    }

    fn runner_device_bytes(&self) -> Option<u64> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => probe::device_bytes_of(pid),
        }
    }
}

impl Drop for RunnerEngine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
