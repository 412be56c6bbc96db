//! The HTTP shim and operator dashboard: web clients submit requests and follow
//! tasks over HTTP instead of AMQP, operators watch lanes and memory.
//!
//! The shim is a thin adapter over [`Producer`]: it validates with the same
//! function, publishes with the same confirms, and reads the same Redis task
//! hashes. It never consumes reply lists (those belong to AMQP callers); it
//! follows a task through its hash. The reaper runs beside it so a fleet with
//! only the shim still answers expired messages.
//!
//! - [`app`]: the router and its single route table (also used by the OpenAPI test).
//! - [`backend`]: [`Backend`], what the handlers ask of the fleet ([`Producer`] ships).
//! - [`error`]: the error envelope and the one mapping to HTTP status.
//! - [`auth`]: API and admin keys (compared in constant time, never logged).
//! - [`exposure`]: no shim without keys on an address other hosts reach.
//! - [`routes`]: the handlers; pure decisions (task views, memory fit) live beside them.
//! - [`openapi`]: the OpenAPI 3 document served at `/openapi.json`.

pub mod app;
pub mod auth;
pub mod backend;
pub mod error;
pub mod exposure;
pub mod openapi;
pub mod routes;

pub use app::{app, AppState};
pub use backend::{Backend, Readiness};
pub use error::ApiError;

use crate::producer::Producer;
use clap::Args;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use warmlane_infra::{Endpoint, InfraError};

/// Why the shim could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A relative results directory needs a working directory.
    #[error("no working directory to resolve the results directory {} against", .path.display())]
    ResultsDir {
        /// The directory given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The server failed while serving.
    #[error("the HTTP server on {addr} failed")]
    Serve {
        /// The address it served on.
        addr: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The reaper beside the shim failed.
    #[error("the reaper beside the HTTP shim failed")]
    Reaper(#[source] InfraError),
    /// `--results-url` does not parse, or its S3 settings do not build a client.
    #[error(transparent)]
    Results(#[from] warmlane_infra::results::ResultsError),
    /// No API keys on an address other hosts can reach, and no `--allow-anonymous`.
    #[error(transparent)]
    OpenToNetwork(#[from] exposure::OpenToNetwork),
}

/// Flags of `warmlane-producer serve`; every flag also reads from the environment.
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WARMLANE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// API keys accepted in `x-api-key` on generation routes, comma-separated; auth is off when empty.
    #[arg(long = "api-keys", env = "WARMLANE_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Without API keys, serve anyone even on an address other hosts can reach (the
    /// shim refuses that by default; loopback addresses are always allowed).
    #[arg(long, env = "WARMLANE_ALLOW_ANONYMOUS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_anonymous: bool,
    /// Key for `x-admin-key` on admin routes; admin routes answer 403 when unset.
    #[arg(long, env = "WARMLANE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Origins allowed by CORS, comma-separated (`*` for any); none means same-origin only.
    #[arg(long = "cors-origins", env = "WARMLANE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Directory the workers write results to (`<task_id>.gif`); only files in it are served.
    #[arg(long, env = "WARMLANE_RESULTS_DIR", default_value = "results")]
    pub results_dir: PathBuf,
    /// Where the workers keep results: `file:///abs/dir` or `s3://bucket/prefix` (S3
    /// settings from the AWS_* environment), the same as the workers'. Default (also
    /// empty): the file store at `--results-dir`. Only `<task_id>.<ext>` directly
    /// under it is ever served.
    #[arg(long, env = "WARMLANE_RESULTS_URL")]
    pub results_url: Option<String>,
    /// Largest request body in bytes; larger bodies get 413.
    #[arg(long, env = "WARMLANE_HTTP_BODY_LIMIT", default_value_t = warmlane_shared::request::MAX_BODY_BYTES)]
    pub body_limit: usize,
    /// Longest long-poll (`GET /tasks/{id}?wait=N`) in seconds; larger waits are clamped.
    #[arg(long, env = "WARMLANE_LONG_POLL_MAX_S", default_value_t = 60)]
    pub long_poll_max_s: u64,
    /// Longest server-sent event stream of one task, in seconds.
    #[arg(long, env = "WARMLANE_SSE_MAX_S", default_value_t = 900)]
    pub sse_max_s: u64,
}

/// Keys are never printed, not even by `{:?}`.
impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("api_keys", &format_args!("<{} redacted>", self.api_keys.len()))
            .field("allow_anonymous", &self.allow_anonymous)
            .field("admin_key", &format_args!("{}", if self.admin_key.is_some() { "<redacted>" } else { "<unset>" }))
            .field("cors_origins", &self.cors_origins)
            .field("results_dir", &self.results_dir)
            .field("results_url", &self.results_url.as_deref().map(warmlane_infra::config::redact_url))
            .field("body_limit", &self.body_limit)
            .field("long_poll_max_s", &self.long_poll_max_s)
            .field("sse_max_s", &self.sse_max_s)
            .finish()
    }
}

impl ServeArgs {
    /// Defaults for tests and embedding: loopback, no keys, `results`, 64 KiB, 60 s.
    pub fn for_tests(results_dir: PathBuf) -> ServeArgs {
        ServeArgs {
            listen: "127.0.0.1:0".into(),
            api_keys: vec![],
            allow_anonymous: false,
            admin_key: None,
            cors_origins: vec![],
            results_dir,
            results_url: None,
            body_limit: warmlane_shared::request::MAX_BODY_BYTES,
            long_poll_max_s: 60,
            sse_max_s: 900,
        }
    }
}

/// The checked settings of the shim, shared by every handler.
#[derive(Clone)]
pub struct HttpConfig {
    /// Accepted API keys (empty: auth off).
    pub api_keys: Vec<String>,
    /// Admin key (none: admin routes off).
    pub admin_key: Option<String>,
    /// CORS allow-list.
    pub cors_origins: Vec<String>,
    /// Results directory, absolute.
    pub results_dir: PathBuf,
    /// Where results are read from: the file store at `results_dir` by default.
    pub results: warmlane_infra::ResultStore,
    /// Body limit in bytes.
    pub body_limit: usize,
    /// Longest long-poll.
    pub long_poll_max: Duration,
    /// Longest SSE stream.
    pub sse_max: Duration,
    /// How often a waiting request re-reads the task hash.
    pub poll_every: Duration,
}

impl HttpConfig {
    /// Checks the flags: empty keys are dropped, the results dir is made absolute.
    pub fn from_args(args: &ServeArgs) -> Result<HttpConfig, ServeError> {
        let clean = |v: &[String]| v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
        let results_dir = if args.results_dir.is_absolute() {
            args.results_dir.clone()
        } else {
            let cwd = std::env::current_dir()
                .map_err(|source| ServeError::ResultsDir { path: args.results_dir.clone(), source })?;
            cwd.join(&args.results_dir)
        };
        let results = match args.results_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => warmlane_infra::ResultStore::open(url)?,
            None => warmlane_infra::ResultStore::files(&results_dir),
        };
        // A `file://` store is the directory files are served from.
        let results_dir = results.url().dir().map_or(results_dir, Path::to_path_buf);
        Ok(HttpConfig {
            api_keys: clean(&args.api_keys),
            admin_key: args.admin_key.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(str::to_string),
            cors_origins: clean(&args.cors_origins),
            results_dir,
            results,
            body_limit: args.body_limit,
            long_poll_max: Duration::from_secs(args.long_poll_max_s),
            sse_max: Duration::from_secs(args.sse_max_s),
            poll_every: Duration::from_millis(100),
        })
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("api_keys", &format_args!("<{} redacted>", self.api_keys.len()))
            .field("admin_key", &format_args!("{}", if self.admin_key.is_some() { "<redacted>" } else { "<unset>" }))
            .field("cors_origins", &self.cors_origins)
            .field("results_dir", &self.results_dir)
            .field("results", &self.results)
            .finish_non_exhaustive()
    }
}

/// Checks the flags before anything connects, so that a bad results URL or keys
/// missing on an address other hosts reach are one line at once, not after the wait
/// for the broker. (`serve` checks the bound address again: a host name resolves
/// only when it binds.)
pub fn check_args(args: &ServeArgs) -> Result<(), ServeError> {
    let config = HttpConfig::from_args(args)?;
    if let Ok(addr) = args.listen.trim().parse::<std::net::SocketAddr>() {
        exposure::check(addr, !config.api_keys.is_empty(), args.allow_anonymous)?;
    }
    Ok(())
}

/// Serves the HTTP shim (and runs the reaper beside it) until `shutdown`.
pub async fn serve(
    producer: Arc<Producer>,
    args: ServeArgs,
    amqp: Endpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = HttpConfig::from_args(&args)?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: args.listen.clone(), source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { addr: args.listen.clone(), source })?;
    exposure::check(bound, !config.api_keys.is_empty(), args.allow_anonymous)?;
    run(listener, producer, config, amqp, shutdown).await
}

/// Serves on a bound listener (tests bind port 0) with the reaper beside it; both stop on `shutdown`.
pub async fn run(
    listener: TcpListener,
    producer: Arc<Producer>,
    config: HttpConfig,
    amqp: Endpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    if config.api_keys.is_empty() {
        tracing::warn!(
            "no API keys configured (WARMLANE_API_KEYS): generation routes are open to anyone who can reach {addr}"
        );
    }
    if config.admin_key.is_none() {
        tracing::info!("no admin key configured (WARMLANE_ADMIN_KEY): admin routes answer 403");
    }
    tracing::info!(addr = %addr, api_keys = config.api_keys.len(), cors_origins = ?config.cors_origins, results_dir = %config.results_dir.display(), "HTTP shim listening");
    let router = app(AppState::new(producer.clone(), config));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let waiter = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
    };
    let server = {
        let stop_tx = stop_tx.clone();
        let rx = stop_rx.clone();
        async move {
            let r = axum::serve(listener, router).with_graceful_shutdown(stopped(rx)).await;
            let _ = stop_tx.send(true);
            r.map_err(|source| ServeError::Serve { addr, source })
        }
    };
    let reaper = async move {
        let r = crate::reaper::run(producer, amqp, stopped(stop_rx)).await;
        if r.is_err() {
            let _ = stop_tx.send(true);
        }
        r.map_err(ServeError::Reaper)
    };
    let (served, reaped) = tokio::join!(server, reaper);
    waiter.abort();
    tracing::info!("HTTP shim stopped");
    served.and(reaped)
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_split_lists_and_debug_hides_keys() {
        let cli = Cli::try_parse_from([
            "x",
            "--api-keys",
            "k-one, k-two,",
            "--admin-key",
            "adm-9",
            "--cors-origins",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        let config = HttpConfig::from_args(&cli.serve).unwrap();
        assert_eq!(config.api_keys, vec!["k-one", "k-two"]);
        assert_eq!(config.cors_origins.len(), 2);
        assert!(config.results_dir.is_absolute() && config.results_dir.ends_with("results"));
        for shown in [format!("{cli:?}"), format!("{config:?}")] {
            assert!(!shown.contains("k-one") && !shown.contains("adm-9"), "{shown}");
        }
    }

    #[test]
    fn a_file_results_url_is_the_directory_served() {
        let cli = Cli::try_parse_from(["x", "--results-url", "file:///srv/warmlane/results/"]).unwrap();
        let config = HttpConfig::from_args(&cli.serve).unwrap();
        assert_eq!(config.results_dir, Path::new("/srv/warmlane/results"));
        let cli = Cli::try_parse_from(["x", "--results-url", "s3://AKIA:sekrit@bucket/p"]).unwrap();
        assert!(!format!("{cli:?}").contains("sekrit"), "{cli:?}");
        let e = HttpConfig::from_args(&cli.serve).expect_err("keys in the URL are refused");
        let shown = warmlane_infra::Report(&e).to_string();
        assert!(shown.contains("keys do not belong in the URL") && !shown.contains("sekrit"), "{shown}");
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let config = HttpConfig::from_args(&cli.serve).unwrap();
        assert!(config.api_keys.is_empty() && config.admin_key.is_none() && config.cors_origins.is_empty());
        assert_eq!(config.body_limit, 64 * 1024);
    }
}
