//! [`Ctx`]: what a worker's tasks share, and [`Status`], what its heartbeat reports.

use crate::cancel::Cancels;
use crate::claim::Claims;
use crate::engine::Engine;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use warmlane_infra::{Publisher, Store};
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::{MemorySnapshot, Settings, Topology, WorkerState};

/// Live state the heartbeat reports.
#[derive(Debug, Clone)]
pub struct Status {
    /// Current state.
    pub state: WorkerState,
    /// Resident model.
    pub model: Option<String>,
    /// Loads since start.
    pub loads: u64,
    /// How long the last load took, ms (the degraded window's switch estimate).
    pub last_load_ms: Option<u64>,
    /// Tasks finished since start.
    pub tasks: u64,
    /// Last time a task ended (for idle eviction).
    pub last_active: Instant,
    /// When the worker started, unix ms.
    pub started_at_ms: u64,
    /// When idle eviction unloaded the lane's model, unix ms (None while loaded).
    pub evicted_at_ms: Option<u64>,
    /// The engine's last memory snapshot; a heartbeat sent while a task holds the
    /// engine repeats it (its `as_of_ms` says when it was taken).
    pub memory: Option<MemorySnapshot>,
}

impl Status {
    /// A worker that just started: a lane worker loads first, a degraded one idles.
    pub fn starting(lane: &str, started_at_ms: u64) -> Status {
        Status {
            state: if lane == DEGRADED_LANE { WorkerState::Idle } else { WorkerState::Loading },
            model: None,
            loads: 0,
            last_load_ms: None,
            tasks: 0,
            last_active: Instant::now(),
            started_at_ms,
            evicted_at_ms: None,
            memory: None,
        }
    }
}

/// Everything a handler needs, shared by the worker's tasks.
///
/// A worker has two runtimes: the background one (heartbeats, progress writes, the
/// broker connections' own tasks) and the lane thread's, which consumes and runs the
/// engine inline. Each has a `Ctx` with a Redis connection of its own; both share
/// the engine and the status.
#[derive(Clone)]
pub struct Ctx {
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// Redis, served by the runtime this `Ctx` is used on.
    pub store: Store,
    /// The background runtime, which stays responsive while the engine runs.
    pub background: tokio::runtime::Handle,
    /// Redis, served by the background runtime.
    pub background_store: Store,
    /// Publisher for dead letters and lane forwarding (its connections live on the
    /// background runtime).
    pub publisher: Arc<Publisher>,
    /// Names.
    pub topology: Topology,
    /// `degraded` or a model.
    pub lane: String,
    /// This worker.
    pub worker_id: String,
    /// Where the engine writes videos (with a remote store: scratch).
    pub results_dir: PathBuf,
    /// Where results are kept (`crate::results`).
    pub results: warmlane_infra::ResultStore,
    /// The engine, called inline on the lane thread (warm-up and maintenance use the
    /// blocking pool).
    pub engine: Arc<Mutex<Box<dyn Engine>>>,
    /// Heartbeat state.
    pub status: Arc<Mutex<Status>>,
    /// The run going unclaimed, for the late claim on the background runtime.
    pub claims: Arc<Claims>,
    /// Task ids announced cancelled (filled on the background runtime).
    pub cancels: Arc<Cancels>,
}

impl Ctx {
    /// The same worker, with `store` for Redis calls made on another runtime.
    pub fn with_store(&self, store: Store) -> Ctx {
        Ctx { store, ..self.clone() }
    }

    /// The heartbeat state, locked; a panic elsewhere does not poison it.
    pub fn lock_status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates the heartbeat state.
    pub fn set_state(&self, state: WorkerState) {
        let mut s = self.lock_status();
        s.state = state;
        if state != WorkerState::Busy {
            s.last_active = Instant::now();
        }
    }

    /// Whether this is the degraded worker.
    pub fn is_degraded(&self) -> bool {
        self.lane == DEGRADED_LANE
    }
}

/// Locks the engine; a panic in an earlier call does not make it unusable.
pub fn lock(engine: &Mutex<Box<dyn Engine>>) -> MutexGuard<'_, Box<dyn Engine>> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}
