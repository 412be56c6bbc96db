//! warmlane workers: a dedicated lane worker keeps its model resident; the degraded
//! worker holds one heavy pipeline at a time. The broker, Redis and telemetry
//! adapters come from `warmlane-infra`, the wire types from `warmlane-shared`.
//!
//! Reading order: [`worker`] (the process) → [`handle`] (one delivery: its pure
//! [`handle::plan`], then the executor) → [`infer`] (the engine's run) → [`engine`]
//! (the trait) and its implementations.
//!
//! - [`args`]: the worker's flags (clap + env); [`setup`] builds the engine from them.
//! - [`worker`]: connection, topology, the lane thread's consume loop, graceful shutdown.
//! - [`session`]: a consuming session, how it ends, and the per-delivery step both loops share.
//! - [`ctx`]: what the worker's tasks share, and the heartbeat's [`ctx::Status`].
//! - [`handle`]: one delivery, from bytes to exactly one terminal reply and an ack.
//! - [`claim`]: late claims of a lane's first deliveries.
//! - [`infer`]: the engine's run inline, with load records and progress on the side.
//! - [`results`]: a run's files into the results store, and the retention sweeper.
//! - [`upkeep`]: warm-up, heartbeats, idle eviction and re-warming (pure rules inside).
//! - [`engine`]: the narrow [`engine::Engine`] trait the worker drives, and its output.
//! - [`ort_engine`]: the in-process engine, ONNX Runtime pipelines through `warmlane-engine`
//!   (lane workers, and inside a runner).
//! - [`memory`]: the device-memory manager: budget, estimates, placement policies,
//!   LRU eviction, pre-flight checks and the heartbeat's memory snapshot.
//! - [`managed`]: `ManagedEngine<E>`, the manager around an engine (admission, OOM retry).
//! - [`slot`]: the degraded worker's one-pipeline slot, a pure state machine.
//! - [`schedule`]: the degraded worker's choice among held deliveries (pure); [`window`]
//!   holds them and performs it.
//! - [`runner`]: the degraded worker's runner child process and `RunnerEngine`.

pub mod args;
pub mod cancel;
pub mod claim;
pub mod ctx;
pub mod engine;
pub mod handle;
pub mod infer;
pub mod managed;
pub mod memory;
pub mod ort_engine;
pub mod results;
pub mod runner;
pub mod schedule;
pub mod session;
pub mod setup;
pub mod slot;
pub mod upkeep;
pub mod window;
pub mod worker;

pub use engine::{Engine, EngineFailure, Output};
pub use worker::{run, WorkerConfig};
