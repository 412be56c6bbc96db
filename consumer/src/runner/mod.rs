//! The degraded worker's runner: a child process (the same binary, hidden `runner`
//! subcommand) holding one heavy pipeline, so that switching models returns all of its
//! memory to the system when the child exits (ONNX Runtime keeps some after a session
//! is dropped).
//!
//! - [`protocol`]: frames and messages between parent and child (pure).
//! - [`child`]: the child's loop.
//! - [`park`]: the parked pipelines the worker keeps for fast switches.
//! - [`process`]: spawning, calling with deadlines, stopping and reaping one child.
//! - [`release`]: the check that a stopped runner's memory came back (pure).
//! - [`supervisor`]: [`RunnerEngine`], the [`crate::Engine`] driving the [`crate::slot::Slot`].

pub mod child;
pub mod park;
pub mod process;
pub mod protocol;
pub mod release;
pub mod supervisor;

pub use protocol::RunnerFaults;
pub use supervisor::{RunnerConfig, RunnerEngine};
