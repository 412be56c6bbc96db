//! Tracing setup shared by the binaries: human format by default, JSON with a flag.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` filter.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    if let Err(e) = result {
        eprintln!("tracing already initialised: {e}");
    }
}

/// Installs the StatsD exporter when `--statsd` is set (placeholder: see the operations issue).
pub fn init_metrics(_args: &crate::config::TelemetryArgs) {}
