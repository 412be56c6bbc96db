//! The worker heartbeat: what every worker writes to Redis every few seconds, and
//! routing, the lane status and the memory dashboard read back.

use crate::memory::MemorySnapshot;
use serde::{Deserialize, Serialize};

/// A worker's state as its heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Loading its model; not ready.
    Loading,
    /// Model resident, idle.
    Warm,
    /// Model resident, running a task.
    Busy,
    /// Degraded worker with no model resident.
    Idle,
    /// Lane worker whose model was unloaded after idling (FR-019); not ready.
    Evicted,
    /// Shutting down.
    Draining,
}

impl WorkerState {
    /// Whether requests routed to this worker's lane will be served without a load.
    pub fn is_ready(self) -> bool {
        matches!(self, WorkerState::Warm | WorkerState::Busy | WorkerState::Idle)
    }
}

/// One heartbeat, stored as JSON under `<prefix>:worker:<id>` with a TTL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Unique worker id.
    pub worker_id: String,
    /// `degraded` or a model name.
    pub lane: String,
    /// Model resident now, if any.
    pub model: Option<String>,
    /// State.
    pub state: WorkerState,
    /// Process id.
    pub pid: u32,
    /// When the worker started, unix ms.
    pub started_at_ms: u64,
    /// When this heartbeat was written, unix ms.
    pub at_ms: u64,
    /// Model loads since start.
    pub loads: u64,
    /// Tasks finished since start.
    pub tasks: u64,
    /// The memory manager's snapshot; `None` for an engine without one.
    #[serde(default)]
    pub memory: Option<MemorySnapshot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loaded_states_are_ready() {
        use WorkerState::*;
        for (state, ready) in
            [(Loading, false), (Warm, true), (Busy, true), (Idle, true), (Evicted, false), (Draining, false)]
        {
            assert_eq!(state.is_ready(), ready, "{state:?}");
        }
    }

    #[test]
    fn a_heartbeat_without_memory_reads_back() {
        let json = r#"{"worker_id":"w","lane":"anisora","model":null,"state":"warm","pid":1,
                       "started_at_ms":0,"at_ms":5,"loads":1,"tasks":0}"#;
        let hb: Heartbeat = serde_json::from_str(json).expect("parses");
        assert_eq!((hb.state, hb.memory), (WorkerState::Warm, None));
    }
}
