//! Flags and subcommands of `warmlane-producer`; every flag also reads from the environment.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use warmlane_infra::config::{ConnectArgs, TelemetryArgs};

/// The warmlane producer: submits requests, runs the reaper, and operates lanes.
#[derive(Debug, Clone, Parser)]
#[command(name = "warmlane-producer", version, about = "warmlane producer, reaper and ops commands")]
pub struct Cli {
    /// Broker, Redis, prefix and settings.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Logging and metrics.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Submit one JSON request (from a file or `-` for stdin) and print the admission;
    /// with `--wait` also wait for and print the terminal reply.
    Submit {
        /// JSON request file, or `-` for stdin.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Seconds to wait for the terminal reply; 0 returns after admission.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Run the reaper alone: expired messages and the deadline backstop.
    Reaper,
    /// Print each lane's readiness, workers, fallback and queue depth as JSON.
    Lanes,
    /// Take a lane out of routing (its requests go degraded) with a cause.
    Disable {
        /// The model whose lane to disable.
        model: String,
        /// `manual` (operator) or `quota` (provider denied the lane).
        #[arg(long, default_value = "manual")]
        cause: String,
        /// Free-form note for other operators.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Put a disabled lane back into routing.
    Enable {
        /// The model whose lane to enable.
        model: String,
    },
    /// Serve the HTTP shim and dashboard, with the reaper beside it.
    Serve(crate::http::ServeArgs),
    /// Inspect or replay the dead queue.
    #[command(subcommand)]
    Dead(crate::dead_queue::DeadCommand),
    /// Check the settings file and exit.
    CheckSettings,
}
