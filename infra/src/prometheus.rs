//! Prometheus beside StatsD: the same `metrics` macros feed an in-process
//! Prometheus registry, rendered in the text exposition format at `/metrics` (on
//! the shim's router, and on a worker's own listener with `--metrics-addr`).
//!
//! Names and labels are exactly those the statsd-exporter gives the StatsD lines
//! (`ops/statsd/mapping.yml`), so the Grafana dashboard reads either source:
//! [`name`] turns `lane.ready` into `warmlane_lane_ready` and a counter
//! `lane.cold_starts` into `warmlane_lane_cold_starts_total`; every series carries
//! the `prefix` label with `--metrics-prefix`; histograms keep milliseconds and
//! the mapping's buckets ([`BUCKETS_MS`]). The recorder that does the renaming is
//! [`Renamed`]; [`crate::telemetry::init_exporters`] installs it.
//!
//! [`serve`] is the workers' listener: a few lines of HTTP/1.1 over a
//! `TcpListener` answering `GET /metrics`, and `GET /health` from
//! [`crate::liveness`] for container healthchecks, so a worker needs no web framework.

use crate::liveness::Liveness;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// First part of every Prometheus name, whatever the metrics prefix (the mapping's `name:`).
pub const NAMESPACE: &str = "warmlane";
/// Label holding the metrics prefix (`--metrics-prefix`), as the mapping's `labels: { prefix: "$1" }`.
pub const PREFIX_LABEL: &str = "prefix";
/// Histogram buckets, in milliseconds: the mapping's `defaults.histogram_options.buckets`.
pub const BUCKETS_MS: [f64; 17] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 120000.0, 300000.0,
    600000.0, 1800000.0,
];
/// `Content-Type` of `/metrics`: the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The path served.
pub const PATH: &str = "/metrics";
/// The liveness path served beside it ([`crate::liveness`]).
pub const HEALTH_PATH: &str = "/health";
/// How often the registry is trimmed when nobody scrapes (histogram samples are
/// otherwise kept until the next render).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The kind of a metric, which decides its Prometheus name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic count: the name ends in `_total`.
    Counter,
    /// Last value.
    Gauge,
    /// Distribution in buckets (`_bucket`, `_sum`, `_count` series).
    Histogram,
}

/// The Prometheus name of the metric `statsd_name` (a name of
/// `warmlane_shared::metrics`): `warmlane_` + the name with dots as underscores,
/// `_total` after a counter. The same names `ops/statsd/mapping.yml` gives (a test
/// checks every metric).
pub fn name(statsd_name: &str, kind: Kind) -> String {
    let base: String = statsd_name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    match kind {
        Kind::Counter => format!("{NAMESPACE}_{base}_total"),
        Kind::Gauge | Kind::Histogram => format!("{NAMESPACE}_{base}"),
    }
}

/// A recorder that hands every metric to `inner` under its Prometheus [`name`].
#[derive(Debug)]
pub struct Renamed<R> {
    inner: R,
}

impl<R> Renamed<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Renamed<R> {
        Renamed { inner }
    }
}

fn renamed(key: &Key, kind: Kind) -> Key {
    Key::from_parts(name(key.name(), kind), key.labels().cloned().collect::<Vec<Label>>())
}

impl<R: Recorder> Recorder for Renamed<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(name(key.as_str(), Kind::Counter).into(), unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(name(key.as_str(), Kind::Gauge).into(), unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(name(key.as_str(), Kind::Histogram).into(), unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(&renamed(key, Kind::Counter), metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(&renamed(key, Kind::Gauge), metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(&renamed(key, Kind::Histogram), metadata)
    }
}

/// A Prometheus recorder for metrics prefix `prefix` (the `prefix` label; none when
/// empty) and the handle that renders it. Not installed: the caller installs it,
/// alone or beside StatsD, and runs [`PrometheusHandle::run_upkeep`] now and then.
pub fn recorder(prefix: &str) -> Result<(Renamed<PrometheusRecorder>, PrometheusHandle), BuildError> {
    let mut builder = PrometheusBuilder::new().set_buckets(&BUCKETS_MS)?;
    let prefix = prefix.trim_end_matches('.');
    if !prefix.is_empty() {
        builder = builder.add_global_label(PREFIX_LABEL, prefix);
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    Ok((Renamed::new(recorder), handle))
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Keeps the handle of the process's installed recorder, for [`render`], and trims
/// the registry every [`UPKEEP_EVERY`] on a background thread. Called once the
/// recorder is the global one; a second call is ignored.
pub(crate) fn set_installed(handle: PrometheusHandle) {
    if HANDLE.set(handle.clone()).is_err() {
        return;
    }
    let upkeep = std::thread::Builder::new().name("prometheus-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_EVERY);
        handle.run_upkeep();
    });
    if let Err(e) = upkeep {
        tracing::warn!(error = %e, "no upkeep thread for the Prometheus registry; histograms are trimmed at each scrape only");
    }
}

/// The process's metrics in the text exposition format, or `None` when no
/// Prometheus recorder is installed in this process.
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// Why a worker's `/metrics` listener is not there.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address is empty or not `host:port`.
    #[error("--metrics-addr `{0}` is not host:port (e.g. 0.0.0.0:9100)")]
    BadAddress(String),
    /// Binding failed (port taken, no such interface, name does not resolve).
    #[error("cannot listen on --metrics-addr `{addr}`")]
    Bind {
        /// The address given.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the listener for `--metrics-addr` (`host:port`; port 0 picks a free one).
pub async fn bind(addr: &str) -> Result<TcpListener, ListenError> {
    let trimmed = addr.trim();
    let (host, port) = trimmed.rsplit_once(':').ok_or_else(|| ListenError::BadAddress(addr.to_string()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ListenError::BadAddress(addr.to_string()));
    }
    TcpListener::bind(trimmed).await.map_err(|source| ListenError::Bind { addr: addr.to_string(), source })
}

/// Serves `GET /metrics` (the rendered registry) and `GET /health` (200 while the
/// heartbeat is fresh, else 503; see [`crate::liveness`]) on `listener` until the
/// task is dropped; 404 for other paths, 405 for other methods. Each connection is
/// answered once and closed; a slow or broken client only costs its own task.
pub async fn serve(listener: TcpListener) {
    serve_with(listener, render, crate::liveness::current).await;
}

/// [`serve`] with other sources of the exposition text and the liveness (tests).
pub async fn serve_with(listener: TcpListener, metrics: fn() -> Option<String>, health: fn() -> Liveness) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, metrics, health));
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds `addr` and serves `/metrics` there in a background task; returns the bound
/// address. On failure logs one warning (`code=metrics_listener`) and returns
/// `None`: a worker without its `/metrics` still serves requests.
pub async fn spawn_listener(addr: &str) -> Option<SocketAddr> {
    let bound = bind(addr).await.and_then(|l| {
        let local = l.local_addr().map_err(|source| ListenError::Bind { addr: addr.to_string(), source })?;
        Ok((l, local))
    });
    match bound {
        Ok((listener, local)) => {
            tokio::spawn(serve(listener));
            tracing::info!(addr = %local, "serving Prometheus metrics at http://{local}{PATH}");
            Some(local)
        }
        Err(e) => {
            tracing::warn!(code = "metrics_listener", error = %crate::Report(&e), "/metrics is not served; the worker runs without it");
            None
        }
    }
}

/// Longest a client may take to send its request head.
const READ_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;

async fn answer(mut stream: TcpStream, metrics: fn() -> Option<String>, health: fn() -> Liveness) {
    let head = match tokio::time::timeout(READ_HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(_)) | Err(_) => return,
    };
    let (status, extra, body) = respond(&head, metrics, health);
    let response = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let head_only = head.starts_with("HEAD ");
    let _ = stream.write_all(response.as_bytes()).await;
    if !head_only {
        let _ = stream.write_all(body.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Status line, extra header lines and body for a request head. Pure; `metrics`
/// renders the registry and `health` tells the liveness.
pub fn respond(
    head: &str,
    metrics: impl FnOnce() -> Option<String>,
    health: impl FnOnce() -> Liveness,
) -> (&'static str, String, String) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let text = |body: &str| format!("{body}\n");
    match (method, path) {
        ("GET" | "HEAD", PATH) => match metrics() {
            Some(body) => ("200 OK", format!("Content-Type: {CONTENT_TYPE}\r\n"), body),
            None => (
                "404 Not Found",
                "Content-Type: text/plain; charset=utf-8\r\n".into(),
                text("no Prometheus recorder in this process"),
            ),
        },
        ("GET" | "HEAD", HEALTH_PATH) => {
            let plain = "Content-Type: text/plain; charset=utf-8\r\n".to_string();
            match health() {
                Liveness::Alive { age_ms } => ("200 OK", plain, text(&format!("ok: heartbeat stored {age_ms} ms ago"))),
                Liveness::Starting => ("503 Service Unavailable", plain, text("starting: no heartbeat stored yet")),
                Liveness::Stale { age_ms } => {
                    ("503 Service Unavailable", plain, text(&format!("stale: last heartbeat stored {age_ms} ms ago")))
                }
            }
        }
        (_, PATH | HEALTH_PATH) => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\nContent-Type: text/plain; charset=utf-8\r\n".into(),
            text("only GET"),
        ),
        _ => (
            "404 Not Found",
            "Content-Type: text/plain; charset=utf-8\r\n".into(),
            text("only /metrics and /health are served here"),
        ),
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
