//! warmlane's infrastructure, shared side by side by the producer and the workers:
//! what talks to RabbitMQ and Redis, and what every binary sets up the same way.
//! Wire types and names live in `warmlane-shared`; this crate does the I/O.
//!
//! - [`config`]: the connection and telemetry flags of every binary (clap + env).
//! - [`endpoint`]: [`Endpoint`], a service's URL and the CA it trusts, passed where
//!   a URL would be.
//! - [`tls`]: `amqps://` and `rediss://`: CA files, the rustls configuration, and
//!   what a failed handshake means.
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
//! - [`results`]: the results store (`file:///dir` or `s3://bucket/prefix`) and its
//!   retention sweep.
//! - [`shutdown`]: the SIGTERM/Ctrl-C future of every binary.

pub mod amqp;
pub mod backoff;
pub mod config;
pub mod dead_letter;
pub mod endpoint;
pub mod error;
pub mod liveness;
pub mod prometheus;
pub mod results;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use amqp::{Published, Publisher};
pub use endpoint::{Endpoint, Endpoints};
pub use error::{InfraError, Report, Service};
pub use results::{ResultStore, ResultsUrl};
pub use store::Store;
