//! `capacity-sim`: prints capacity figures for one configuration (`run`) or
//! the Markdown grid behind `ops/CAPACITY.md` (`grid`).
//!
//! Thin by design: it parses arguments (each also from an environment
//! variable), builds a validated `SimConfig` and calls the library.
#![deny(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use std::io::Write as _;
use std::process::ExitCode;
use warmlane_capacity::config::{self, Burst, Estimating, Mix, ModelConfig, SimConfig};
use warmlane_capacity::dist::Shape;
use warmlane_capacity::grid::{self, GridBase};
use warmlane_capacity::sizing::{self, Target};
use warmlane_capacity::{report, simulate};

#[derive(Debug, Parser)]
#[command(name = "capacity-sim", about = "Discrete-event capacity simulation of a warmlane fleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate one configuration.
    Run(RunArgs),
    /// Simulate the grid and print it as Markdown tables.
    Grid(GridArgs),
    /// Find the fewest warm workers per lane meeting a p95-wait target.
    Size(SizeArgs),
}

/// Figures shared by `run` and `grid`: measured inputs and the FR-017 limits.
#[derive(Debug, Args)]
struct Common {
    /// AniSora (8 steps) mean inference seconds per request (placeholder: replace with BENCHMARKS.md).
    #[arg(long, env = "CAPACITY_ANISORA_SERVICE_S", default_value_t = config::ANISORA_SERVICE_S)]
    anisora_service_s: f64,
    /// Phr00t (4 steps) mean inference seconds per request (placeholder: replace with BENCHMARKS.md).
    #[arg(long, env = "CAPACITY_PHR00T_SERVICE_S", default_value_t = config::PHR00T_SERVICE_S)]
    phr00t_service_s: f64,
    /// Service-time distribution.
    #[arg(long, env = "CAPACITY_SERVICE_SHAPE", value_enum, default_value_t = Shape::Lognormal)]
    service_shape: Shape,
    /// Coefficient of variation of service time (lognormal only).
    #[arg(long, env = "CAPACITY_SERVICE_CV", default_value_t = config::SERVICE_CV)]
    service_cv: f64,
    /// Degraded worker model switch (unload + cleanup + load) seconds (placeholder).
    #[arg(long, env = "CAPACITY_SWITCH_S", default_value_t = config::SWITCH_S)]
    switch_s: f64,
    /// Workers consuming the degraded queue.
    #[arg(long, env = "CAPACITY_DEGRADED_WORKERS", default_value_t = 1)]
    degraded_workers: usize,
    /// Deliveries the degraded worker holds and picks among (`degraded.window`); 1 = FIFO.
    /// The degraded queue then holds depth - K + 1 ready messages.
    #[arg(long, env = "CAPACITY_DEGRADED_WINDOW", default_value_t = 1)]
    degraded_window: usize,
    /// Where the windowed worker's switch and inference estimates come from: the
    /// configured means, or measured as it runs (nothing at first, as the real worker).
    #[arg(long, env = "CAPACITY_DEGRADED_ESTIMATES", value_enum, default_value_t = Estimating::Configured)]
    degraded_estimates: Estimating,
    /// Degraded queue depth limit (ready messages); 0 = unbounded.
    #[arg(long, env = "CAPACITY_DEGRADED_DEPTH", default_value_t = config::DEGRADED_DEPTH)]
    degraded_depth: usize,
    /// Degraded queue max wait seconds; 0 = no limit.
    #[arg(long, env = "CAPACITY_DEGRADED_MAX_WAIT_S", default_value_t = config::DEGRADED_MAX_WAIT_S)]
    degraded_max_wait_s: f64,
    /// Seconds a request may wait on its lane before moving to degraded; 0 = no limit.
    #[arg(long, env = "CAPACITY_LANE_WAIT_LIMIT_S", default_value_t = config::LANE_WAIT_LIMIT_S)]
    lane_wait_limit_s: f64,
    /// Seed of every random stream.
    #[arg(long, env = "CAPACITY_SEED", default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of Markdown.
    #[arg(long, env = "CAPACITY_JSON")]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// AniSora arrivals, requests per minute (Poisson).
    #[arg(long, env = "CAPACITY_ANISORA_RATE_PER_MIN", default_value_t = 5.0)]
    anisora_rate_per_min: f64,
    /// Phr00t arrivals, requests per minute (Poisson).
    #[arg(long, env = "CAPACITY_PHR00T_RATE_PER_MIN", default_value_t = 5.0)]
    phr00t_rate_per_min: f64,
    /// How arrivals of the two models interleave.
    #[arg(long, env = "CAPACITY_MIX", value_enum, default_value_t = Mix::Independent)]
    mix: Mix,
    /// Warm workers per lane (0 = degraded only).
    #[arg(long, env = "CAPACITY_WARM_WORKERS", default_value_t = 1)]
    warm_workers: usize,
    /// Fraction of time each lane is unavailable (capacity/quota).
    #[arg(long, env = "CAPACITY_UNAVAILABLE_FRACTION", default_value_t = 0.0)]
    unavailable_fraction: f64,
    /// Mean length of one lane outage, seconds.
    #[arg(long, env = "CAPACITY_OUTAGE_MEAN_S", default_value_t = 600.0)]
    outage_mean_s: f64,
    /// Extra seconds per publish (quorum-queue publish confirm in a cluster).
    #[arg(long, env = "CAPACITY_ADMISSION_DELAY_S", default_value_t = 0.0)]
    admission_delay_s: f64,
    /// Simulated seconds of arrivals.
    #[arg(long, env = "CAPACITY_HORIZON_S", default_value_t = 86_400.0)]
    horizon_s: f64,
    /// A closed burst of this many requests, models alternating, submitted from time 0
    /// as fast as admission allows, instead of Poisson arrivals (0 = Poisson).
    #[arg(long, env = "CAPACITY_BURST", default_value_t = 0)]
    burst: u64,
    /// Seconds before a burst submission refused `queue_full` is retried.
    #[arg(long, env = "CAPACITY_BURST_RETRY_S", default_value_t = 0.02)]
    burst_retry_s: f64,
}

#[derive(Debug, Args)]
struct GridArgs {
    #[command(flatten)]
    common: Common,
    /// Simulated seconds of arrivals for small-fleet rows.
    #[arg(long, env = "CAPACITY_HORIZON_S", default_value_t = 86_400.0)]
    horizon_s: f64,
    /// Simulated seconds of arrivals for large-fleet rows.
    #[arg(long, env = "CAPACITY_FLEET_HORIZON_S", default_value_t = 3_600.0)]
    fleet_horizon_s: f64,
    /// Admission delay of large-fleet rows, seconds (quorum publish confirm; the
    /// default is the measured one, see BENCHMARKS.md "Quorum queues").
    #[arg(long, env = "CAPACITY_CLUSTER_ADMISSION_DELAY_S", default_value_t = warmlane_capacity::grid::MEASURED_QUORUM_CONFIRM_S)]
    cluster_admission_delay_s: f64,
}

#[derive(Debug, Args)]
struct SizeArgs {
    #[command(flatten)]
    common: Common,
    /// Load levels to size for, requests per minute per model (comma-separated).
    #[arg(long, env = "CAPACITY_LOADS_PER_MIN", value_delimiter = ',', default_value = "1,10,60,600,6000")]
    loads_per_min: Vec<f64>,
    /// Target p95 wait per model, seconds.
    #[arg(long, env = "CAPACITY_TARGET_P95_WAIT_S", default_value_t = 5.0)]
    target_p95_wait_s: f64,
    /// Target minimum share of requests served per model.
    #[arg(long, env = "CAPACITY_MIN_ACCEPTANCE", default_value_t = 0.999)]
    min_acceptance: f64,
    /// Arrivals per probe: each probe's horizon is this many arrivals,
    /// clamped to [1 h, 24 h] of simulated time.
    #[arg(long, env = "CAPACITY_PROBE_ARRIVALS", default_value_t = 200_000.0)]
    probe_arrivals: f64,
}

impl Common {
    fn config(&self, anisora_rate_per_s: f64, phr00t_rate_per_s: f64, warm: usize) -> SimConfig {
        let mut models = ModelConfig::defaults(anisora_rate_per_s, phr00t_rate_per_s, warm);
        for (m, mean) in models.iter_mut().zip([self.anisora_service_s, self.phr00t_service_s]) {
            m.service.mean_s = mean;
            m.service.shape = self.service_shape;
            m.service.cv = self.service_cv;
        }
        let mut c = SimConfig::with_models(models);
        c.switch_s = self.switch_s;
        c.degraded_workers = self.degraded_workers;
        c.degraded_window = self.degraded_window;
        c.degraded_estimates = self.degraded_estimates;
        c.degraded_depth = (self.degraded_depth > 0).then_some(self.degraded_depth);
        c.degraded_max_wait_s = (self.degraded_max_wait_s > 0.0).then_some(self.degraded_max_wait_s);
        c.lane_wait_limit_s = (self.lane_wait_limit_s > 0.0).then_some(self.lane_wait_limit_s);
        c.seed = self.seed;
        c
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (out, json) = match cli.command {
        Command::Run(a) => {
            let mut c = a.common.config(a.anisora_rate_per_min / 60.0, a.phr00t_rate_per_min / 60.0, a.warm_workers);
            c.mix = a.mix;
            c.outage_mean_s = a.outage_mean_s;
            c.admission_delay_s = a.admission_delay_s;
            c.horizon_s = a.horizon_s;
            c.burst = (a.burst > 0).then_some(Burst { requests: a.burst, retry_s: a.burst_retry_s });
            for m in &mut c.models {
                m.unavailable_fraction = a.unavailable_fraction;
            }
            if let Err(e) = c.validate() {
                eprintln!("capacity-sim: {e}");
                return ExitCode::from(2);
            }
            let r = simulate(&c);
            let out = if a.common.json {
                serde_json::to_string_pretty(&serde_json::json!({ "config": c, "report": r }))
            } else {
                Ok(report::single_markdown(&c, &r))
            };
            (out, a.common.json)
        }
        Command::Grid(a) => {
            let base = GridBase {
                template: a.common.config(0.0, 0.0, 0),
                horizon_s: a.horizon_s,
                fleet_horizon_s: a.fleet_horizon_s,
                cluster_admission_delay_s: a.cluster_admission_delay_s,
            };
            for (_, name, c) in grid::build(&base) {
                if let Err(e) = c.validate() {
                    eprintln!("capacity-sim: grid row `{name}`: {e}");
                    return ExitCode::from(2);
                }
            }
            let rows = grid::run(&base);
            let out =
                if a.common.json { serde_json::to_string_pretty(&rows) } else { Ok(report::grid_markdown(&rows)) };
            (out, a.common.json)
        }
        Command::Size(a) => {
            let target = Target { p95_wait_s: a.target_p95_wait_s, min_acceptance: a.min_acceptance };
            let mut rows = Vec::with_capacity(a.loads_per_min.len());
            for &load in &a.loads_per_min {
                let mut c = a.common.config(load / 60.0, load / 60.0, 0);
                let total: f64 = c.models.iter().map(|m| m.arrival_rate_per_s).sum();
                c.horizon_s = if total > 0.0 { (a.probe_arrivals / total).clamp(3_600.0, 86_400.0) } else { 3_600.0 };
                if let Err(e) = c.validate() {
                    eprintln!("capacity-sim: load {load} req/min: {e}");
                    return ExitCode::from(2);
                }
                rows.push((load, sizing::size(&c, target)));
            }
            let out = if a.common.json {
                serde_json::to_string_pretty(&serde_json::json!({ "target": target, "rows": rows }))
            } else {
                Ok(report::sizing_markdown(&target, &rows))
            };
            (out, a.common.json)
        }
    };
    let text = match out {
        Ok(t) => t,
        Err(e) => {
            eprintln!("capacity-sim: encoding {} failed: {e}", if json { "JSON" } else { "output" });
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}") {
        eprintln!("capacity-sim: writing stdout failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
