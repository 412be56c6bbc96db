//! Flags and subcommands of `warmlane-producer`; every flag also reads from the environment.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use warmlane_infra::config::{ConnectArgs, TelemetryArgs};
use warmlane_shared::FallbackCause;

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
    /// Print each lane's readiness, workers, fallback and queue depth as a table
    /// (`--json` for machines).
    Lanes {
        /// Print the JSON document of `GET /lanes` instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's status, progress, timings, error and result link as JSON (the
    /// document of `GET /tasks/{id}`).
    Status {
        /// The task id.
        task_id: String,
    },
    /// Cancel a task: a pending one is answered `cancelled` and never runs; a running
    /// one stops at its next denoising step. Prints the task as JSON.
    Cancel {
        /// The task id.
        task_id: String,
    },
    /// Save a done task's video (MP4) to a file, or to stdout with `-o -`.
    Result {
        /// The task id.
        task_id: String,
        /// Where to write it; `-` is stdout.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Take a lane out of routing (its requests go degraded) with a cause.
    Disable {
        /// The model whose lane to disable.
        model: String,
        /// `manual` (operator) or `quota` (provider denied the lane).
        #[arg(long, default_value = "manual", value_parser = parse_cause)]
        cause: FallbackCause,
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
    /// Print shell completions (e.g. `warmlane-producer completions bash >
    /// /etc/bash_completion.d/warmlane-producer`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `warmlane-producer man > warmlane-producer.1`.
    Man,
}

/// `--cause`: an operator's cause, checked before anything connects.
fn parse_cause(s: &str) -> Result<FallbackCause, String> {
    FallbackCause::parse_operator(s).ok_or_else(|| format!("must be manual or quota, got `{s}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_the_man_page_cover_every_subcommand() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let mut man = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut man).expect("renders");
        let mut bash = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "warmlane-producer", &mut bash);
        let (man, bash) = (String::from_utf8_lossy(&man), String::from_utf8_lossy(&bash));
        for sub in Cli::command().get_subcommands().map(|c| c.get_name().to_string()) {
            assert!(man.contains(&sub.replace('-', "\\-")), "the man page lists {sub}");
            assert!(bash.contains(&sub), "bash completes {sub}");
        }
        assert!(man.starts_with(".ie") && man.contains(".TH warmlane-producer 1"), "{man}");
    }

    #[test]
    fn flags_parse_after_the_subcommand_and_causes_are_checked_first() {
        let cli = Cli::try_parse_from(["warmlane-producer", "lanes", "--prefix", "x", "--json-logs", "--json"])
            .expect("parses");
        assert_eq!((cli.connect.prefix.as_str(), cli.telemetry.json_logs), ("x", true));
        let cli = Cli::try_parse_from(["warmlane-producer", "--prefix", "y", "lanes"]).expect("parses");
        assert_eq!(cli.connect.prefix, "y");
        let cases = [
            ("manual", Some(FallbackCause::Manual)),
            ("quota", Some(FallbackCause::Quota)),
            ("capacity", None),
            ("", None),
        ];
        for (cause, want) in cases {
            let parsed = Cli::try_parse_from(["warmlane-producer", "disable", "anisora", "--cause", cause]);
            let got = parsed.ok().and_then(|c| match c.command {
                Command::Disable { cause, .. } => Some(cause),
                _ => None,
            });
            assert_eq!(got, want, "--cause {cause:?}");
        }
    }
}
