//! `warmlane-producer`: parses flags, sets up logging, runs a subcommand.

use clap::Parser;
use std::process::ExitCode;
use warmlane_producer::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    warmlane_producer::telemetry::init(cli.telemetry.json_logs);
    warmlane_producer::telemetry::init_metrics(&cli.telemetry);
    match warmlane_producer::commands::run(cli, warmlane_producer::commands::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
