//! The warmlane producer library: admission, routing and publishing, plus the
//! broker and Redis adapters that the consumer reuses.
//!
//! - [`config`]: connection flags shared by every binary (clap + env).
//! - [`backoff`]: capped exponential backoff with jitter for reconnects.
//! - [`amqp`]: connecting, declaring the topology, publishing with confirms.
//! - [`store`]: the Redis side of the contract: task hashes, exactly-once replies,
//!   worker heartbeats, lane flags.
//! - [`dead`]: moving poison and undecodable messages to `<prefix>.dead`, with a reply where possible.
//! - [`producer`]: [`Producer::submit`], FR-020's routing order with confirms.
//! - [`reaper`]: answers expired messages and moves unclaimed lane requests degraded;
//!   sweeps pending tasks whose deadline passed (the backstop).
//! - [`cli`], [`commands`]: the binary's flags and subcommands, callable from tests.
//! - [`http`]: the HTTP shim and dashboard for web clients.
//! - [`deadq`]: inspecting and replaying the dead queue.
//! - [`telemetry`]: tracing setup (human or JSON).
#![deny(unsafe_code)]
#![warn(unreachable_pub, clippy::unwrap_in_result)]

pub mod amqp;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dead;
pub mod deadq;
pub mod error;
pub mod http;
pub mod metrics_sampler;
pub mod producer;
pub mod reaper;
pub mod store;
pub mod telemetry;

pub use error::ProducerError;
pub use producer::{Admission, Producer, SubmitOutcome};
pub use store::Store;
