//! Tracing setup shared by the binaries (human format by default, JSON with a
//! flag) and the metrics exporters: StatsD and Prometheus, alone or together.
//!
//! Metrics are emitted through the `metrics` crate macros with the names in
//! [`warmlane_shared::metrics`]. [`init_exporters`] installs one global recorder:
//! a StatsD exporter when `--statsd` is set, a Prometheus registry when the caller
//! serves `/metrics` (the shim always, a worker with `--metrics-addr`), both
//! through a fanout when both are on ([`crate::prometheus`] gives the Prometheus
//! names). With neither, the macros are no-ops. A malformed address never stops a
//! service: it is logged and that exporter stays off, because losing a dashboard is
//! better than refusing requests. The StatsD host name is resolved again every
//! [`RESOLVE_EVERY`] (every [`RETRY_RESOLVE`] while it does not resolve), so a
//! StatsD that starts after the service, or comes back at a new address (a
//! recreated container), receives metrics without a restart.

use cadence::{MetricSink, QueuingMetricSink};
use metrics_exporter_statsd::{StatsdBuilder, StatsdRecorder};
use metrics_util::layers::FanoutBuilder;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;

/// How long a resolved StatsD address is used before the name is looked up again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How soon a failed lookup is tried again.
pub const RETRY_RESOLVE: Duration = Duration::from_secs(5);

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` filter.
/// Logs go to stderr, so a command's stdout carries only its output (`submit ... | jq`),
/// in colour only on a terminal and never with `NO_COLOR` set.
pub fn init(json: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    if let Err(e) = result {
        eprintln!("tracing already initialised: {e}");
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and not when `NO_COLOR` is
/// set to anything but the empty string (no-color.org).
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Why a metrics exporter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `--statsd` is not `host:port` with a non-zero port.
    #[error("--statsd `{0}` is not host:port with a port in 1..=65535")]
    BadAddress(String),
    /// The exporter could not be built (socket or name resolution failed).
    #[error("StatsD exporter for `{addr}`: {detail}")]
    Build {
        /// The address given.
        addr: String,
        /// The exporter's error.
        detail: String,
    },
    /// Another recorder is installed already (the `metrics` recorder is per process).
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
    /// The Prometheus recorder could not be built.
    #[error("Prometheus recorder")]
    Prometheus(#[source] metrics_exporter_prometheus::BuildError),
}

/// Splits `host:port` (`[v6]:port` too) into host and a non-zero port.
pub fn parse_statsd_addr(addr: &str) -> Result<(String, u16), MetricsError> {
    let bad = || MetricsError::BadAddress(addr.to_string());
    let (host, port) = addr.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Installs the StatsD exporter for `addr` with every name prefixed `prefix.`.
///
/// Tags go out in the DogStatsD form (`name:1|c|#model:anisora`), which the
/// Prometheus statsd-exporter and Datadog read. Each metric is sent at once (no
/// client-side batching): the exporter's buffered sink only flushes when its
/// buffer fills, which would hold a quiet lane's gauges back indefinitely. Sends
/// go through a bounded queue on a background thread, so a slow or absent StatsD
/// never blocks a request.
pub fn install_statsd(addr: &str, prefix: &str) -> Result<(), MetricsError> {
    metrics::set_global_recorder(statsd_recorder(addr, prefix)?).map_err(|_| MetricsError::AlreadyInstalled)
}

/// The StatsD exporter of [`install_statsd`], not installed.
pub fn statsd_recorder(addr: &str, prefix: &str) -> Result<StatsdRecorder, MetricsError> {
    let (host, port) = parse_statsd_addr(addr)?;
    let prefix = prefix.trim_end_matches('.');
    let sink = ResolvingUdpSink::new(host, port);
    if let Err(e) = sink.current_target() {
        tracing::warn!(statsd = addr, error = %e, "the StatsD host does not resolve yet; metrics are dropped until it does");
    }
    StatsdBuilder::from("", 0)
        .with_sink(QueuingMetricSink::with_capacity(sink, 10_000))
        .build((!prefix.is_empty()).then_some(prefix))
        .map_err(|e| MetricsError::Build { addr: addr.to_string(), detail: crate::Report(&e).to_string() })
}

/// Sends each metric in its own datagram to the StatsD host, looking the name up
/// again every [`RESOLVE_EVERY`] (every [`RETRY_RESOLVE`] after a failed lookup).
/// Runs on the queuing sink's thread, so a slow lookup never holds a request.
pub struct ResolvingUdpSink {
    host: String,
    port: u16,
    state: Mutex<Resolved>,
}

#[derive(Default)]
struct Resolved {
    target: Option<SocketAddr>,
    next_lookup: Option<Instant>,
    /// The socket, and whether it is an IPv4 one (the target's family decides).
    socket: Option<(UdpSocket, bool)>,
}

impl ResolvingUdpSink {
    /// A sink for `host:port`; nothing is looked up or bound until the first send.
    pub fn new(host: impl Into<String>, port: u16) -> ResolvingUdpSink {
        ResolvingUdpSink { host: host.into(), port, state: Mutex::new(Resolved::default()) }
    }

    /// The address metrics go to now, looking the name up when due.
    pub fn current_target(&self) -> io::Result<SocketAddr> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.target(&mut state)
    }

    fn target(&self, state: &mut Resolved) -> io::Result<SocketAddr> {
        let now = Instant::now();
        if state.next_lookup.is_none_or(|at| now >= at) {
            match (self.host.as_str(), self.port).to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => {
                    state.target = Some(addr);
                    state.next_lookup = Some(now + RESOLVE_EVERY);
                }
                // A failed lookup keeps the last good address until the next try.
                Ok(None) | Err(_) => state.next_lookup = Some(now + RETRY_RESOLVE),
            }
        }
        state.target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("StatsD host `{}` does not resolve", self.host))
        })
    }
}

impl MetricSink for ResolvingUdpSink {
    fn emit(&self, metric: &str) -> io::Result<usize> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let target = self.target(&mut state)?;
        let v4 = target.is_ipv4();
        let socket = match state.socket.take() {
            Some((socket, family)) if family == v4 => socket,
            _ => {
                let any: SocketAddr =
                    if v4 { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let socket = UdpSocket::bind(any)?;
                socket.set_nonblocking(true)?;
                socket
            }
        };
        let sent = socket.send_to(metric.as_bytes(), target);
        state.socket = Some((socket, v4));
        sent
    }
}

/// Installs the StatsD exporter when `--statsd` is set (and not empty); returns
/// whether metrics are on. Any failure is a warning, never an error. Processes
/// that serve `/metrics` call [`init_exporters`] instead.
pub fn init_metrics(args: &crate::config::TelemetryArgs) -> bool {
    init_exporters(args, false).statsd
}

/// Which exporters [`init_exporters`] installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exporters {
    /// Metrics go to `--statsd`.
    pub statsd: bool,
    /// Metrics are recorded for `/metrics` ([`crate::prometheus::render`]).
    pub prometheus: bool,
}

/// Installs the process's recorder: StatsD when `--statsd` is set (and not empty),
/// Prometheus when `prometheus` is true, both through a fanout when both are on.
/// Any failure is one warning and leaves that exporter off, never an error.
pub fn init_exporters(args: &crate::config::TelemetryArgs, prometheus: bool) -> Exporters {
    let prefix = args.metrics_prefix.as_str();
    let statsd = match args.statsd.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => {
            tracing::info!("StatsD off: --statsd / WARMLANE_STATSD is not set");
            None
        }
        Some(addr) => match statsd_recorder(addr, prefix) {
            Ok(recorder) => Some((recorder, addr)),
            Err(e) => {
                tracing::warn!(error = %crate::Report(&e), "StatsD off: the exporter could not be built");
                None
            }
        },
    };
    let prom = match prometheus.then(|| crate::prometheus::recorder(prefix)).transpose() {
        Ok(p) => p,
        Err(e) => {
            let e = MetricsError::Prometheus(e);
            tracing::warn!(error = %crate::Report(&e), "Prometheus off: the recorder could not be built");
            None
        }
    };
    let on = Exporters { statsd: statsd.is_some(), prometheus: prom.is_some() };
    let (installed, handle) = match (statsd, prom) {
        (None, None) => return on,
        (Some((s, _)), None) => (metrics::set_global_recorder(s).is_ok(), None),
        (None, Some((p, handle))) => (metrics::set_global_recorder(p).is_ok(), Some(handle)),
        (Some((s, _)), Some((p, handle))) => {
            let both = FanoutBuilder::default().add_recorder(s).add_recorder(p).build();
            (metrics::set_global_recorder(both).is_ok(), Some(handle))
        }
    };
    if !installed {
        tracing::warn!(error = %MetricsError::AlreadyInstalled, "metrics off: the exporters could not be installed");
        return Exporters::default();
    }
    if let Some(handle) = handle {
        crate::prometheus::set_installed(handle);
    }
    tracing::info!(
        statsd = args.statsd.as_deref().filter(|_| on.statsd).unwrap_or("off"),
        prometheus = on.prometheus,
        prefix,
        "metrics on"
    );
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        let cases = [
            (true, None, true),
            (false, None, false),
            (true, Some(""), true),
            (true, Some("1"), false),
            (false, Some("1"), false),
        ];
        for (terminal, no_color, want) in cases {
            assert_eq!(colour(terminal, no_color.map(OsStr::new)), want, "{terminal} {no_color:?}");
        }
    }

    #[test]
    fn statsd_addresses_are_host_and_nonzero_port() {
        assert_eq!(parse_statsd_addr("statsd:9125").unwrap(), ("statsd".to_string(), 9125));
        assert_eq!(parse_statsd_addr(" 127.0.0.1:8125 ").unwrap(), ("127.0.0.1".to_string(), 8125));
        assert_eq!(parse_statsd_addr("[::1]:8125").unwrap(), ("::1".to_string(), 8125));
        for bad in ["statsd", "statsd:", ":8125", "statsd:0", "statsd:99999", "statsd:x"] {
            assert!(matches!(parse_statsd_addr(bad), Err(MetricsError::BadAddress(_))), "{bad}");
        }
    }

    #[test]
    fn unset_or_bad_addresses_leave_metrics_off_without_failing() {
        let args = |statsd: Option<&str>| crate::config::TelemetryArgs {
            json_logs: false,
            statsd: statsd.map(str::to_string),
            metrics_prefix: "t".into(),
        };
        assert!(!init_metrics(&args(None)));
        assert!(!init_metrics(&args(Some(""))));
        assert!(!init_metrics(&args(Some("no-port"))));
    }

    #[test]
    fn the_sink_sends_to_the_host_and_survives_one_that_does_not_resolve() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sink = ResolvingUdpSink::new("127.0.0.1", server.local_addr().unwrap().port());
        assert_eq!(sink.current_target().unwrap(), server.local_addr().unwrap());
        sink.emit("t.tasks:1|c").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("the metric arrives");
        assert_eq!(&buf[..n], b"t.tasks:1|c");

        let nowhere = ResolvingUdpSink::new("statsd.invalid", 8125);
        let err = nowhere.emit("t.tasks:1|c").unwrap_err();
        assert!(err.to_string().contains("statsd.invalid"), "{err}");
    }
}
