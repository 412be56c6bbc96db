//! The manager's accounting: which pipelines and components are resident, what each
//! costs, which are in use, and what to evict. A plain struct; every decision is a
//! method that reads it, every change a method that keeps `used` equal to the sum of
//! the component bytes.
//!
//! Measured memory counts too ([`Ledger::observe`]): what the worker's processes hold
//! beyond the components' bytes (allocator slack, a runtime's arenas, the process
//! itself) is kept as `unaccounted` and taken from the free bytes every decision reads,
//! so memory the estimates miss is never lent out twice.

use super::budget::{estimate_bytes, mb, runtime_bytes, Budget, FitCheck};
use super::policy::{eviction_rank, Policy};
use super::snapshot::PipelineReport;
use std::time::Duration;
use warmlane_shared::memory::{Backend, ComponentStatus, Device, Measured, MemorySnapshot, PipelineStatus};
use warmlane_shared::settings::pipeline::ComponentRole;
use warmlane_shared::settings::pipeline::{Placement, Provider};
use warmlane_shared::settings::MemoryEstimate;

#[derive(Debug, Clone, PartialEq, Eq)]
struct ComponentEntry {
    role: ComponentRole,
    placement: Placement,
    provider: Provider,
    loaded: bool,
    bytes: u64,
    last_used_ms: u64,
    active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PipelineEntry {
    model: String,
    components: Vec<ComponentEntry>,
}

impl PipelineEntry {
    fn bytes(&self) -> u64 {
        self.components.iter().map(|c| c.bytes).sum()
    }

    fn last_used_ms(&self) -> u64 {
        self.components.iter().map(|c| c.last_used_ms).max().unwrap_or(0)
    }

    fn active(&self) -> bool {
        self.components.iter().any(|c| c.active)
    }
}

/// A component to release: its pipeline's model and its role.
pub type Victim = (String, ComponentRole);

/// Whether a pipeline may become resident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadDecision {
    /// It is resident already.
    Resident,
    /// It fits beside what is resident.
    Fits,
    /// It fits only once these pipelines (least recently used first) are released.
    AfterReleasing(Vec<String>),
    /// It does not fit in the budget even alone.
    Never(FitCheck),
}

/// The accounting behind [`super::MemoryManager`].
#[derive(Debug, Clone)]
pub struct Ledger {
    budget: Budget,
    policy: Policy,
    pipelines: Vec<PipelineEntry>,
    used: u64,
    unaccounted: u64,
    evictions: u64,
    oom_retries: u64,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(budget: Budget, policy: Policy) -> Ledger {
        Ledger { budget, policy, pipelines: Vec::new(), used: 0, unaccounted: 0, evictions: 0, oom_retries: 0 }
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Bytes accounted to resident components.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Measured memory beyond the components' bytes, as last observed.
    pub fn unaccounted(&self) -> u64 {
        self.unaccounted
    }

    /// Bytes in use: the components' bytes, or what was last measured if more.
    pub fn in_use(&self) -> u64 {
        self.used + self.unaccounted
    }

    /// Budget minus what is in use.
    pub fn free(&self) -> u64 {
        self.budget.bytes.saturating_sub(self.in_use())
    }

    /// Records a measurement of the memory the worker's processes hold, in the budget's
    /// terms (RSS on CPU, device bytes with NVML): the part the components' bytes do
    /// not explain becomes `unaccounted` until the next measurement.
    pub fn observe(&mut self, measured_bytes: u64) {
        self.unaccounted = measured_bytes.saturating_sub(self.used);
    }

    /// Sum of the component bytes, computed afresh (equals [`Ledger::used`]).
    pub fn sum_of_components(&self) -> u64 {
        self.pipelines.iter().map(PipelineEntry::bytes).sum()
    }

    /// Models with a record.
    pub fn models(&self) -> Vec<String> {
        self.pipelines.iter().map(|p| p.model.clone()).collect()
    }

    /// Whether `model` has a record.
    pub fn is_resident(&self, model: &str) -> bool {
        self.pipelines.iter().any(|p| p.model == model)
    }

    fn entry(&mut self, model: &str) -> Option<&mut PipelineEntry> {
        self.pipelines.iter_mut().find(|p| p.model == model)
    }

    /// Records a pipeline's measurements, keeping last-use times and activity of
    /// components already known.
    pub fn record(&mut self, report: &PipelineReport, now_ms: u64) {
        let old = self.pipelines.iter().position(|p| p.model == report.model).map(|i| self.pipelines.remove(i));
        if let Some(old) = &old {
            self.used -= old.bytes();
        }
        let components = report
            .components
            .iter()
            .map(|c| {
                let role = c.role;
                let prior = old.as_ref().and_then(|o| o.components.iter().find(|p| p.role == role));
                ComponentEntry {
                    role,
                    placement: c.placement,
                    provider: c.provider,
                    loaded: c.loaded,
                    bytes: if c.loaded { c.bytes } else { 0 },
                    last_used_ms: prior.map_or(now_ms, |p| p.last_used_ms),
                    active: prior.is_some_and(|p| p.active),
                }
            })
            .collect();
        let entry = PipelineEntry { model: report.model.clone(), components };
        self.used += entry.bytes();
        self.pipelines.push(entry);
    }

    /// Forgets a pipeline (its process or sessions are gone); returns its bytes.
    pub fn remove(&mut self, model: &str) -> u64 {
        let Some(i) = self.pipelines.iter().position(|p| p.model == model) else { return 0 };
        let freed = self.pipelines.remove(i).bytes();
        self.used -= freed;
        freed
    }

    /// Marks one component loaded with `bytes`, or released (`loaded == false`).
    pub fn set_loaded(&mut self, model: &str, role: ComponentRole, loaded: bool, bytes: u64, now_ms: u64) {
        let mut delta: i128 = 0;
        if let Some(c) = self.entry(model).and_then(|p| p.components.iter_mut().find(|c| c.role == role)) {
            let new = if loaded { bytes } else { 0 };
            delta = i128::from(new) - i128::from(c.bytes);
            c.bytes = new;
            c.loaded = loaded;
            if loaded {
                c.last_used_ms = c.last_used_ms.max(now_ms);
            }
        }
        self.used = (i128::from(self.used) + delta) as u64;
    }

    /// A generation starts: the pipeline's components are in use and not evictable.
    pub fn mark_active(&mut self, model: &str, now_ms: u64) {
        if let Some(p) = self.entry(model) {
            for c in &mut p.components {
                c.active = true;
                c.last_used_ms = now_ms;
            }
        }
    }

    /// A generation ended: the components are idle since `now_ms`.
    pub fn mark_idle(&mut self, model: &str, now_ms: u64) {
        if let Some(p) = self.entry(model) {
            for c in &mut p.components {
                c.active = false;
                c.last_used_ms = now_ms;
            }
        }
    }

    fn candidates(&self, except: Option<&str>) -> Vec<(u8, u64, Victim, u64)> {
        let mut out: Vec<(u8, u64, Victim, u64)> = self
            .pipelines
            .iter()
            .filter(|p| except != Some(p.model.as_str()))
            .flat_map(|p| p.components.iter().map(move |c| (p, c)))
            .filter(|(_, c)| c.loaded && !c.active)
            .filter_map(|(p, c)| {
                Some((eviction_rank(c.placement)?, c.last_used_ms, (p.model.clone(), c.role), c.bytes))
            })
            .collect();
        out.sort_by_key(|c| (c.0, c.1));
        out
    }

    /// Bytes idle, non-pinned components (outside `except`) could give back.
    pub fn evictable_bytes(&self, except: Option<&str>) -> u64 {
        self.candidates(except).iter().map(|c| c.3).sum()
    }

    /// Idle, non-pinned components to release to free `need` bytes: text encoders
    /// before denoisers, least recently used first. Empty when `need` is 0.
    pub fn eviction_plan(&self, need: u64, except: Option<&str>) -> Vec<Victim> {
        let mut freed = 0;
        let mut plan = Vec::new();
        for (_, _, victim, bytes) in self.candidates(except) {
            if freed >= need {
                break;
            }
            freed += bytes;
            plan.push(victim);
        }
        plan
    }

    /// Components to release because free memory is below the headroom.
    pub fn headroom_plan(&self) -> Vec<Victim> {
        self.eviction_plan(self.policy.headroom_bytes.saturating_sub(self.free()), None)
    }

    /// `offload_when_idle` components idle past the policy's threshold.
    pub fn idle_plan(&self, now_ms: u64) -> Vec<Victim> {
        self.candidates(None)
            .into_iter()
            .filter(|(_, last, (model, role), _)| {
                let placement = self.placement_of(model, *role);
                let idle = Duration::from_millis(now_ms.saturating_sub(*last));
                placement.is_some_and(|p| self.policy.release_when_idle(p, idle))
            })
            .map(|(_, _, victim, _)| victim)
            .collect()
    }

    /// Components of `model` its policy releases right after a generation.
    pub fn after_generation_plan(&self, model: &str) -> Vec<ComponentRole> {
        self.pipelines
            .iter()
            .filter(|p| p.model == model)
            .flat_map(|p| p.components.iter())
            .filter(|c| c.loaded && !c.active && self.policy.release_after_generation(c.placement, c.provider))
            .map(|c| c.role)
            .collect()
    }

    fn placement_of(&self, model: &str, role: ComponentRole) -> Option<Placement> {
        let p = self.pipelines.iter().find(|p| p.model == model)?;
        p.components.iter().find(|c| c.role == role).map(|c| c.placement)
    }

    /// Pre-flight: does a `width x height x frames` generation of `model` fit? A
    /// resident model needs only its runtime bytes; another needs weights too.
    pub fn can_fit(&self, model: &str, estimate: &MemoryEstimate, width: u32, height: u32, frames: u32) -> FitCheck {
        let resident = self.is_resident(model);
        let required = if resident {
            runtime_bytes(estimate, width, height, frames)
        } else {
            estimate_bytes(estimate, width, height, frames)
        };
        let free = self.free();
        let evictable = self.evictable_bytes(Some(model));
        let fits = required <= free;
        let verdict = if fits {
            "fits"
        } else if required <= free.saturating_add(evictable) {
            "fits after evicting idle components"
        } else {
            "does not fit"
        };
        let what = if resident { "runtime" } else { "weights + runtime" };
        let message = format!(
            "{model} at {width}x{height}x{frames} needs {} ({what}); {} free, {} evictable, budget {}: {verdict}",
            mb(required),
            mb(free),
            mb(evictable),
            mb(self.budget.bytes)
        );
        FitCheck {
            fits,
            required_bytes: required,
            free_bytes: free,
            evictable_bytes: evictable,
            budget_bytes: self.budget.bytes,
            message,
        }
    }

    /// May `model` become resident (at the given size)? Never beside a pipeline it
    /// does not fit next to: then the pipelines to release first, least recently used first.
    pub fn admit(&self, model: &str, estimate: &MemoryEstimate, width: u32, height: u32, frames: u32) -> LoadDecision {
        if self.is_resident(model) {
            return LoadDecision::Resident;
        }
        let required = estimate_bytes(estimate, width, height, frames);
        if required > self.budget.bytes {
            let mut check = self.can_fit(model, estimate, width, height, frames);
            check.message = format!(
                "{model} at {width}x{height}x{frames} needs {} but the worker's memory budget is {}",
                mb(required),
                mb(self.budget.bytes)
            );
            return LoadDecision::Never(check);
        }
        let mut free = self.free();
        if required <= free {
            return LoadDecision::Fits;
        }
        let mut others: Vec<&PipelineEntry> = self.pipelines.iter().filter(|p| !p.active()).collect();
        others.sort_by_key(|p| p.last_used_ms());
        let mut release = Vec::new();
        for p in others {
            if required <= free {
                break;
            }
            free += p.bytes();
            release.push(p.model.clone());
        }
        if required <= free {
            LoadDecision::AfterReleasing(release)
        } else {
            let check = self.can_fit(model, estimate, width, height, frames);
            LoadDecision::Never(check)
        }
    }

    /// Counts an eviction.
    pub fn count_eviction(&mut self) {
        self.evictions += 1;
    }

    /// Counts an OOM retry.
    pub fn count_oom_retry(&mut self) {
        self.oom_retries += 1;
    }

    /// The status snapshot.
    pub fn snapshot(&self, measured: Measured, backend: Backend) -> MemorySnapshot {
        let pipelines = self
            .pipelines
            .iter()
            .map(|p| PipelineStatus {
                model: p.model.clone(),
                bytes: p.bytes(),
                last_used_ms: p.last_used_ms(),
                components: p
                    .components
                    .iter()
                    .map(|c| ComponentStatus {
                        role: c.role,
                        placement: c.placement,
                        device: match (c.loaded, c.provider) {
                            (false, _) => Device::Offloaded,
                            (true, Provider::Cuda) => Device::Gpu,
                            (true, Provider::Cpu) => Device::Cpu,
                        },
                        bytes: c.bytes,
                        last_used_ms: c.last_used_ms,
                        active: c.active,
                    })
                    .collect(),
            })
            .collect();
        MemorySnapshot {
            used_bytes: self.in_use(),
            free_bytes: self.free(),
            headroom_bytes: self.policy.headroom_bytes,
            pipelines,
            evictions: self.evictions,
            oom_retries: self.oom_retries,
            measured,
            ..MemorySnapshot::empty(self.budget.bytes, self.budget.source, backend)
        }
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
