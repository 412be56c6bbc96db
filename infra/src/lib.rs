//! warmlane's infrastructure, shared side by side by the producer and the workers:
//! what talks to RabbitMQ and Redis, and what every binary sets up the same way.
//! Wire types and names live in `warmlane-shared`; this crate does the I/O.
//!
//! - [`config`]: the connection and telemetry flags of every binary (clap + env).
//! - [`error`]: [`InfraError`], causes kept as sources, with classifiers; [`Report`]
//!   prints a whole chain.
//! - [`backoff`]: capped exponential backoff with jitter, and [`backoff::retry`].
//! - [`amqp`]: connecting, declaring the topology, publishing with confirms, queue depths.
//! - [`store`]: the Redis side of the contract: task hashes and their Lua scripts,
//!   exactly-once replies, heartbeats, lane flags.
//! - [`dead_letter`]: moving a message to `<prefix>.dead`, with a reply where possible.
//! - [`telemetry`]: tracing setup and the metrics exporters (StatsD, Prometheus).
//! - [`prometheus`]: Prometheus names (those of `ops/statsd/mapping.yml`), the
//!   recorder, and the workers' `/metrics` listener.
//! - [`liveness`]: whether the worker's heartbeat is fresh, for `/health`.
//! - [`shutdown`]: the SIGTERM/Ctrl-C future of every binary.

pub mod amqp;
pub mod backoff;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod liveness;
pub mod prometheus;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use amqp::{Published, Publisher};
pub use error::{InfraError, Report, Service};
pub use store::Store;
