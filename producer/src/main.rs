//! `warmlane-producer`: parses flags, sets up logging, runs a subcommand.

use clap::Parser;
use std::process::ExitCode;
use warmlane_producer::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Completions and the man page print documentation only: no logs, no metrics.
    if !matches!(cli.command, Command::Completions { .. } | Command::Man) {
        warmlane_infra::telemetry::init(cli.telemetry.json_logs);
        // `serve` answers GET /metrics: it records for Prometheus beside StatsD.
        let prometheus = matches!(cli.command, Command::Serve(_));
        warmlane_infra::telemetry::init_exporters(&cli.telemetry, prometheus);
    }
    match warmlane_producer::commands::run(cli, warmlane_infra::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr: logs go there too, so a log line would print it twice.
            eprintln!("error: {}", warmlane_infra::Report(&e));
            ExitCode::FAILURE
        }
    }
}
