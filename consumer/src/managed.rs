//! `ManagedEngine<E>`: the memory manager wrapped around an engine.
//!
//! Before a load it asks the manager whether the pipeline may become resident (and
//! refuses, `gpu_oom`, one that does not fit the budget even alone); before a
//! generation it runs the pre-flight check at the request's size; around it, it marks
//! the pipeline active, and on `gpu_oom` evicts, cleans up and retries (at most
//! [`crate::memory::Policy::max_oom_retries`] times in a row). After it, it applies the
//! placement policies and evicts idle components below the headroom. The decisions
//! are the ledger's; this wrapper performs them through [`Managed`]. Swapping one
//! pipeline for another is the engine's own (one swap path): the manager decides
//! whether the next load fits, the engine releases the resident pipeline before it
//! loads the next.

use crate::engine::{Engine, EngineFailure, Output};
use crate::memory::{now_ms, LoadDecision, MemoryManager, OomDecision, OomRetry, PipelineReport, Victim};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warmlane_shared::metrics as m;
use warmlane_shared::settings::pipeline::ComponentRole;
use warmlane_shared::{ErrorCode, MemorySnapshot, Settings, ValidRequest};

/// What the manager needs of an engine besides [`Engine`].
pub trait Managed: Engine {
    /// Measurements of the resident pipeline, if any.
    fn report(&mut self) -> Option<PipelineReport>;

    /// Releases one component of the resident pipeline (reloaded before its next use).
    fn release_component(&mut self, role: ComponentRole) -> Result<(), EngineFailure>;

    /// After a `gpu_oom`, frees what a failed run may have left behind.
    fn clean_up(&mut self) {}

    /// RSS of a runner child holding the pipeline, where there is one.
    fn runner_rss_bytes(&self) -> Option<u64> {
        None
    }

    /// Device bytes of a runner child holding the pipeline (NVML), where there is one.
    fn runner_device_bytes(&self) -> Option<u64> {
        None
    }
}

/// An engine under the memory manager.
pub struct ManagedEngine<E> {
    inner: E,
    settings: Arc<Settings>,
    manager: Arc<MemoryManager>,
    retry: OomRetry,
    last_load_decision: Option<LoadDecision>,
}

fn oom(message: String) -> EngineFailure {
    EngineFailure { code: ErrorCode::GpuOom, message }
}

impl<E: Managed> ManagedEngine<E> {
    /// Wraps `inner`; `manager` holds the budget and the account.
    pub fn new(inner: E, settings: Arc<Settings>, manager: Arc<MemoryManager>) -> ManagedEngine<E> {
        let retry = OomRetry::new(manager.lock().policy().max_oom_retries);
        ManagedEngine { inner, settings, manager, retry, last_load_decision: None }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The wrapped engine, mutably (test hooks).
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.inner
    }

    /// The manager.
    pub fn manager(&self) -> &Arc<MemoryManager> {
        &self.manager
    }

    /// The manager's answer to the last load that was not a no-op.
    pub fn last_load_decision(&self) -> Option<&LoadDecision> {
        self.last_load_decision.as_ref()
    }

    /// Makes the ledger follow the engine: forget pipelines that are gone, refresh the
    /// resident one's measurements, and observe what the processes really hold.
    fn sync(&mut self) {
        let resident = self.inner.resident();
        let report = resident.as_ref().and_then(|_| self.inner.report());
        let measured = self.manager.measure(self.inner.runner_rss_bytes(), self.inner.runner_device_bytes());
        let mut ledger = self.manager.lock();
        for model in ledger.models() {
            if resident.as_deref() != Some(model.as_str()) {
                ledger.remove(&model);
            }
        }
        if let Some(report) = report {
            ledger.record(&report, now_ms());
        }
        ledger.observe(measured);
    }

    fn release_victims(&mut self, victims: Vec<Victim>, why: &str) {
        if victims.is_empty() {
            return;
        }
        let resident = self.inner.resident();
        for (model, role) in victims {
            if resident.as_deref() == Some(model.as_str()) {
                if let Err(e) = self.inner.release_component(role) {
                    tracing::warn!(model, component = role.as_str(), error = %e, "could not release a component");
                    continue;
                }
            }
            let mut ledger = self.manager.lock();
            ledger.set_loaded(&model, role, false, 0, now_ms());
            ledger.count_eviction();
            drop(ledger);
            tracing::info!(model, component = role.as_str(), why, "component released by the memory manager");
        }
        self.sync();
    }

    /// After a `gpu_oom`: release every idle, non-pinned component (the failed
    /// pipeline's included, so its sessions and arenas are rebuilt) and clean up.
    fn recover_from_oom(&mut self, model: &str) {
        self.manager.lock().mark_idle(model, now_ms());
        let victims = self.manager.lock().eviction_plan(u64::MAX, None);
        self.release_victims(victims, "oom recovery");
        self.inner.clean_up();
        self.manager.lock().mark_active(model, now_ms());
    }

    fn publish_gauges(&self, lane: &str) {
        let sample = warmlane_engine::memory::sample();
        let process = sample.rss + self.inner.runner_rss_bytes().unwrap_or(0);
        metrics::gauge!(m::PROCESS_MEMORY_BYTES, m::TAG_LANE => lane.to_string()).set(process as f64);
        if let Some(device) = sample.device_used {
            metrics::gauge!(m::DEVICE_MEMORY_BYTES, m::TAG_LANE => lane.to_string()).set(device as f64);
        }
    }
}

impl<E: Managed> Engine for ManagedEngine<E> {
    fn prepare(&mut self, model: &str) -> Result<Option<Duration>, EngineFailure> {
        if self.inner.resident().as_deref() == Some(model) {
            return self.inner.prepare(model);
        }
        if let Some(ms) = self.settings.model(model) {
            let decision =
                self.manager.lock().admit(model, &ms.memory, ms.width.default, ms.height.default, ms.frames.default);
            self.last_load_decision = Some(decision.clone());
            match decision {
                LoadDecision::Never(check) => {
                    return Err(oom(format!("memory budget refuses the load: {}", check.message)))
                }
                LoadDecision::AfterReleasing(models) => {
                    // One swap path: both engines hold one pipeline and release it
                    // themselves before loading another (the runner engine through its
                    // slot, keeping its spare runner), so the manager only checks that
                    // what it wants released is what the engine will swap out.
                    let resident = self.inner.resident();
                    if models.iter().any(|m| Some(m) != resident.as_ref()) {
                        tracing::warn!(model, release = ?models, ?resident, "the ledger lists a pipeline the engine does not hold; resyncing");
                        self.sync();
                    }
                    tracing::info!(model, release = ?models, "the budget holds one of these pipelines, not both: the swap releases it first");
                }
                LoadDecision::Fits | LoadDecision::Resident => {}
            }
        }
        let result = self.inner.prepare(model);
        self.sync();
        result
    }

    fn generate(
        &mut self,
        req: &ValidRequest,
        lane: &str,
        out_dir: &Path,
        progress: &mut dyn FnMut(u32, u32) -> ControlFlow<()>,
    ) -> Result<Output, EngineFailure> {
        self.prepare(&req.model)?;
        let model = req.model.clone();
        if let Some(ms) = self.settings.model(&model) {
            let check = self.manager.lock().can_fit(&model, &ms.memory, req.width, req.height, req.frames);
            if check.never_fits() {
                return Err(oom(format!("memory budget refuses the request: {}", check.message)));
            }
            if !check.fits {
                let need = check.required_bytes - check.free_bytes;
                let victims = self.manager.lock().eviction_plan(need, Some(&model));
                self.release_victims(victims, "pre-flight");
            }
        }
        self.manager.lock().mark_active(&model, now_ms());
        self.retry.on_success();
        let result = loop {
            match self.inner.generate(req, lane, out_dir, progress) {
                Ok(out) => {
                    self.retry.on_success();
                    break Ok(out);
                }
                Err(f) if f.code == ErrorCode::GpuOom => match self.retry.on_oom() {
                    OomDecision::Retry { attempt } => {
                        metrics::counter!(m::OOM_RETRIES, m::TAG_MODEL => model.clone(), m::TAG_LANE => lane.to_string()).increment(1);
                        self.manager.lock().count_oom_retry();
                        tracing::warn!(task_id = %req.task_id, model, attempt, error = %f.message, "gpu_oom: evicting, cleaning up and retrying");
                        self.recover_from_oom(&model);
                    }
                    OomDecision::GiveUp { retries } => {
                        break Err(oom(format!("{} (still out of memory after {retries} retries)", f.message)));
                    }
                },
                Err(f) => break Err(f),
            }
        };
        self.manager.lock().mark_idle(&model, now_ms());
        self.sync();
        let after: Vec<Victim> =
            self.manager.lock().after_generation_plan(&model).into_iter().map(|r| (model.clone(), r)).collect();
        self.release_victims(after, "between prompts");
        let headroom = self.manager.lock().headroom_plan();
        self.release_victims(headroom, "headroom");
        self.publish_gauges(lane);
        result
    }

    fn resident(&self) -> Option<String> {
        self.inner.resident()
    }

    fn release(&mut self) {
        self.inner.release();
        self.sync();
    }

    fn memory(&self) -> Option<MemorySnapshot> {
        let snapshot = self.manager.snapshot(self.inner.runner_rss_bytes());
        Some(MemorySnapshot { loads: self.inner.loads(), resident: self.inner.resident(), ..snapshot })
    }

    fn loads(&self) -> u64 {
        self.inner.loads()
    }

    fn maintain(&mut self) {
        let measured = self.manager.measure(self.inner.runner_rss_bytes(), self.inner.runner_device_bytes());
        self.manager.lock().observe(measured);
        let idle = self.manager.lock().idle_plan(now_ms());
        self.release_victims(idle, "idle past the policy threshold");
        let headroom = self.manager.lock().headroom_plan();
        self.release_victims(headroom, "headroom");
        self.inner.maintain();
    }
}
