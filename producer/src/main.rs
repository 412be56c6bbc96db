//! `warmlane-producer`: parses flags, sets up logging, runs a subcommand.

use clap::Parser;
use std::process::ExitCode;
use warmlane_producer::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    warmlane_infra::telemetry::init(cli.telemetry.json_logs);
    warmlane_infra::telemetry::init_metrics(&cli.telemetry);
    match warmlane_producer::commands::run(cli, warmlane_infra::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = warmlane_infra::Report(&e);
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
