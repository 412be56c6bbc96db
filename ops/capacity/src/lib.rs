//! Capacity planning for warmlane: a discrete-event simulation of the fleet.
//!
//! The spec (seed 001) asks capacity planning to document the cost/latency
//! trade-off of keeping a dedicated warm lane per heavy video model versus
//! falling back to the single degraded worker that must swap models. This
//! crate answers with a simulation of the routing contract (FR-017, FR-020,
//! FR-021) rather than of the code, so its inputs are measured figures
//! (inference and switch times from `BENCHMARKS.md`) and its outputs are the
//! figures an operator sizes a fleet by.
//!
//! Map of the modules:
//! - [`rng`]: seeded SplitMix64/xoshiro256** streams (reproducible tables);
//! - [`dist`]: exponential, lognormal and fixed service times;
//! - [`event`]: the binary-heap future-event list with FIFO tie-breaking;
//! - [`config`]: one validated configuration and the seeds' defaults;
//! - [`degraded`]: the pure model-residency rule of a degraded worker;
//! - [`window`]: the pure pick of a degraded worker holding K deliveries;
//! - [`sim`]: the event loop (arrivals, lanes, degraded queue, workers);
//! - [`stats`]: counters and the derived [`Report`];
//! - [`grid`]: the grid of configurations behind `ops/CAPACITY.md`;
//! - [`sizing`]: fewest warm workers per lane meeting a p95-wait target;
//! - [`report`]: Markdown rendering.
//!
//! The `capacity-sim` binary only parses arguments and calls into these.
// Workspace lints (Cargo.toml) apply; the simulation also documents every public item.
#![warn(missing_docs)]

pub mod config;
pub mod degraded;
pub mod dist;
pub mod event;
pub mod grid;
pub mod report;
pub mod rng;
pub mod sim;
pub mod sizing;
pub mod stats;
pub mod window;

pub use config::{Burst, ConfigError, Estimating, Mix, ModelConfig, SimConfig};
pub use sim::simulate;
pub use stats::Report;
