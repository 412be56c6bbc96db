//! `RunnerEngine`: the degraded worker's engine. It feeds the [`Slot`] events and
//! performs its actions with runner child processes: start a runner and load, serve
//! through it, stop it and confirm by measurement that its memory came back before the
//! next runner starts (FR-001..FR-003). A runner that crashes or hangs fails its task
//! with a code and is replaced on the next request; the worker stays up.

use super::process::{CallError, RunnerProcess};
use super::protocol::{Request, Response, RunnerFaults};
use crate::engine::{Engine, EngineFailure, Output};
use crate::managed::Managed;
use crate::memory::{probe, PipelineReport};
use crate::slot::{Slot, SlotAction, SlotEvent};
use std::collections::VecDeque;
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
    loads: u64,
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
            cfg,
            slot: Slot::new(),
            runner: None,
            spare: None,
            loads: 0,
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

    /// Starts (or takes the spare) runner for `model` and loads it; a runner that
    /// fails to load is reaped.
    fn start(&mut self, model: &str) -> Result<(), EngineFailure> {
        let mut runner = self.take_runner(model)?;
        let prepare = Request::Prepare {
            model: model.to_string(),
            settings_json: self.settings_json.clone(),
            base_dir: self.settings.base_dir.display().to_string(),
            provider: self.cfg.provider,
            faults: self.cfg.faults,
        };
        let answer = runner.call(&prepare, self.cfg.load_timeout);
        let outcome = match answer {
            Ok(Response::Loaded { load_ms }) => {
                tracing::info!(model, pid = runner.pid(), load_ms, "runner loaded its pipeline");
                self.pid.store(runner.pid(), Ordering::SeqCst);
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
        let check = confirm_release(ReleaseReadings {
            reaped_gone: probe::rss_of(pid).is_none(),
            parent_rss_before: parent_before,
            parent_rss_after: warmlane_engine::memory::rss_bytes(),
            rss_tolerance: self.cfg.rss_tolerance_bytes,
            device_bytes_left: self.device_bytes_left(pid),
        });
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

/// What the release check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseReadings {
    /// The runner's `/proc` entry is gone (it was reaped).
    pub reaped_gone: bool,
    /// Worker RSS when the runner started.
    pub parent_rss_before: u64,
    /// Worker RSS now.
    pub parent_rss_after: u64,
    /// Allowed growth.
    pub rss_tolerance: u64,
    /// Device memory NVML still attributes to the runner (`None` without NVML).
    pub device_bytes_left: Option<u64>,
}

/// Whether a stopped runner's memory is confirmed free (pure).
pub fn confirm_release(r: ReleaseReadings) -> Result<(), String> {
    if !r.reaped_gone {
        return Err("the runner process is still present after waitpid".into());
    }
    if r.parent_rss_after > r.parent_rss_before.saturating_add(r.rss_tolerance) {
        return Err(format!(
            "worker RSS grew from {} to {} bytes while the runner held the pipeline (tolerance {})",
            r.parent_rss_before, r.parent_rss_after, r.rss_tolerance
        ));
    }
    match r.device_bytes_left {
        Some(left) if left > 0 => Err(format!("NVML still shows {left} device bytes for the runner")),
        _ => Ok(()),
    }
}

impl Engine for RunnerEngine {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure> {
        if self.settings.model(model).is_none() {
            return Err(failed(ErrorCode::InferenceFailed, format!("model `{model}` is not in the settings")));
        }
        let loads_before = self.loads;
        let started = Instant::now();
        self.drive(SlotEvent::Request(model.to_string()))?;
        Ok((self.loads > loads_before).then(|| started.elapsed()))
    }

    fn generate(
        &mut self,
        req: &ValidRequest,
        lane: &str,
        out_dir: &Path,
        progress: &mut dyn FnMut(u32, u32),
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
        loop {
            match answer {
                Ok(Response::Progress { step, steps }) => {
                    progress(step, steps);
                    answer = self.runner.as_mut().map_or(Err(CallError::Died("gone".into())), |r| r.recv(deadline));
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
}

impl Drop for RunnerEngine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_check_table() {
        let ok = ReleaseReadings {
            reaped_gone: true,
            parent_rss_before: 100,
            parent_rss_after: 150,
            rss_tolerance: 64,
            device_bytes_left: None,
        };
        let cases = [
            (ok, true),
            (ReleaseReadings { reaped_gone: false, ..ok }, false),
            (ReleaseReadings { parent_rss_after: 165, ..ok }, false),
            (ReleaseReadings { parent_rss_after: 10, ..ok }, true),
            (ReleaseReadings { device_bytes_left: Some(0), ..ok }, true),
            (ReleaseReadings { device_bytes_left: Some(1 << 20), ..ok }, false),
        ];
        for (r, want) in cases {
            assert_eq!(confirm_release(r).is_ok(), want, "{r:?}");
        }
    }
}
