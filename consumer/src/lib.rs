//! warmlane workers: a dedicated lane worker keeps its model resident; the degraded
//! worker holds one heavy pipeline at a time.
//!
//! - [`args`]: the worker's flags (clap + env).
//! - [`engine`]: the narrow [`engine::Engine`] trait the worker drives, and its output.
//! - [`ort_engine`]: the in-process engine, ONNX Runtime pipelines through `warmlane-engine`
//!   (lane workers, and inside a runner).
//! - [`memory`]: the device-memory manager: budget, estimates, placement policies,
//!   LRU eviction, pre-flight checks and the heartbeat's memory snapshot.
//! - [`managed`]: `ManagedEngine<E>`, the manager around an engine (admission, OOM retry).
//! - [`slot`]: the degraded worker's one-pipeline slot, a pure state machine.
//! - [`runner`]: the degraded worker's runner child process and `RunnerEngine`.
//! - [`worker`]: connection, topology, heartbeats, the consume loop, graceful shutdown.
//! - [`handle`]: one delivery, from bytes to exactly one terminal reply and an ack.
#![deny(unsafe_code)]
#![warn(unreachable_pub, clippy::unwrap_in_result)]

pub mod args;
pub mod claim;
pub mod engine;
pub mod handle;
pub mod managed;
pub mod memory;
pub mod ort_engine;
pub mod runner;
pub mod slot;
pub mod worker;

pub use engine::{Engine, EngineFailure, Output};
pub use worker::{run, WorkerConfig};
