//! The warmlane producer library: admission, routing and publishing with confirms,
//! the reaper, the operators' commands and the HTTP shim. The broker and Redis
//! adapters it shares with the workers are in `warmlane-infra`.
//!
//! - [`producer`]: [`Producer::submit`], FR-020's routing order with confirms.
//! - [`error`]: [`ProducerError`], a refusal or an infrastructure failure.
//! - [`reaper`]: answers expired messages and moves unclaimed lane requests degraded;
//!   sweeps pending tasks whose deadline passed (the backstop).
//! - [`consumers`]: each lane queue's consumer count, cached and refreshed in the
//!   background, so routing stops sending to a dead worker within about a second.
//! - [`metrics_sampler`]: the periodic lane and queue gauges.
//! - [`lanes`]: every lane's status, typed, for the CLI, `GET /lanes` and the dashboard.
//! - [`dead_queue`]: inspecting and replaying `<prefix>.dead`.
//! - [`cli`], [`commands`]: the binary's flags and subcommands, callable from tests;
//!   [`progress`]: `submit --wait`'s progress bar on a terminal.
//! - [`http`]: the HTTP shim and dashboard for web clients, over the [`http::Backend`] seam.

pub mod cli;
pub mod commands;
pub mod consumers;
pub mod dead_queue;
pub mod error;
pub mod http;
pub mod lanes;
pub mod metrics_sampler;
pub mod producer;
pub mod progress;
pub mod reaper;

pub use error::ProducerError;
pub use producer::{Accepted, Producer, SubmitOutcome};
