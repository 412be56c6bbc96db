//! The warmlane wire contract, shared by the producer, the consumer and the engine.
//!
//! Everything here is pure: no sockets, no clocks except [`now_ms`]. The modules:
//!
//! - [`error`]: the error codes of the contract and the [`Rejection`] that carries one.
//! - [`settings`]: `inference_settings.json`, loaded and checked once at start.
//! - [`request`]: decoding MessagePack/JSON requests and validating them into [`ValidRequest`].
//! - [`reply`]: the terminal reply and the task hash fields written to Redis.
//! - [`topology`]: exchange and queue names with their arguments, as plain data.
//! - [`keys`]: Redis key names.
//! - [`routing`]: the routing decision of FR-020 as a pure function.
//! - [`metrics`]: metric names and tag keys.
//! - [`worker`]: the worker heartbeat ([`Heartbeat`], [`WorkerState`]).
//! - [`memory`]: the memory snapshot a heartbeat carries ([`MemorySnapshot`]).

pub mod error;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod reply;
pub mod request;
pub mod routing;
pub mod settings;
pub mod topology;
pub mod worker;

pub use error::{ErrorCode, Rejection};
pub use memory::MemorySnapshot;
pub use reply::{Reply, ReplyStatus, ResultInfo, TaskStatus, Timings};
pub use request::{decode_msgpack, validate_json, ValidRequest};
pub use routing::{route, FallbackCause, LaneHealth, Route};
pub use settings::{ModelSettings, QueueType, Settings, SettingsError};
pub use topology::Topology;
pub use worker::{Heartbeat, WorkerState};

/// Wall-clock unix time in milliseconds, the unit of every timestamp on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
