//! The grid of configurations behind the table in `ops/CAPACITY.md`.
//!
//! The question the spec's capacity-planning line asks is "what does keeping
//! a warm lane per heavy model cost, and what does it buy?". The grid answers
//! it along the three axes that matter: warm workers per lane (0 = degraded
//! only), offered load, and lane availability; then checks that the same
//! routing holds for fleets far larger than one machine, where the broker
//! becomes a RabbitMQ cluster with quorum queues.

use crate::config::{Mix, ModelConfig, SimConfig};
use crate::sim::simulate;
use crate::stats::Report;
use serde::Serialize;

/// Warm workers per lane in the small-fleet section.
pub const WARM_LEVELS: [usize; 4] = [0, 1, 2, 4];
/// Offered load per model, requests per minute, in the small-fleet section.
pub const LOAD_LEVELS_PER_MIN: [f64; 8] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0];
/// Warm workers per lane in the large-fleet section.
pub const FLEET_LEVELS: [usize; 3] = [100, 200, 400];
/// Target per-worker utilisation of warm lanes in the large-fleet section.
pub const FLEET_UTILISATION: [f64; 3] = [0.7, 0.9, 0.97];

/// The template every grid row starts from: service figures, limits, seed.
#[derive(Debug, Clone)]
pub struct GridBase {
    /// Template configuration (models' service times, switch, limits, seed).
    /// Its arrival rates, warm workers and horizon are overridden per row.
    pub template: SimConfig,
    /// Horizon of small-fleet rows, seconds.
    pub horizon_s: f64,
    /// Horizon of large-fleet rows, seconds.
    pub fleet_horizon_s: f64,
    /// Admission delay of large-fleet rows (quorum publish confirm), seconds.
    pub cluster_admission_delay_s: f64,
}

/// One row of the grid: its section, configuration and figures.
#[derive(Debug, Clone, Serialize)]
pub struct GridRow {
    /// Section of the table (`small`, `outage`, `alternating`, `fleet`).
    pub section: &'static str,
    /// Short description of the row.
    pub scenario: String,
    /// The configuration simulated.
    pub config: SimConfig,
    /// Its figures.
    pub report: Report,
}

fn row(base: &GridBase, warm: usize, rates_per_s: &[f64], horizon_s: f64) -> SimConfig {
    let mut c = base.template.clone();
    for (m, rate) in c.models.iter_mut().zip(rates_per_s) {
        m.arrival_rate_per_s = *rate;
        m.warm_workers = warm;
    }
    c.horizon_s = horizon_s;
    c
}

fn per_s(per_min: f64) -> f64 {
    per_min / 60.0
}

/// The configurations of the grid, in table order.
pub fn build(base: &GridBase) -> Vec<(&'static str, String, SimConfig)> {
    let n = base.template.models.len();
    let mut rows = Vec::new();
    for &load in &LOAD_LEVELS_PER_MIN {
        for &warm in &WARM_LEVELS {
            let c = row(base, warm, &vec![per_s(load); n], base.horizon_s);
            rows.push(("small", format!("{load} req/min per model, {warm} warm/lane"), c));
        }
    }
    for &warm in &[1usize, 2] {
        for &f in &[0.05, 0.2] {
            let mut c = row(base, warm, &vec![per_s(5.0); n], base.horizon_s);
            for m in &mut c.models {
                m.unavailable_fraction = f;
            }
            rows.push(("outage", format!("5 req/min per model, {warm} warm/lane, lanes down {:.0}%", f * 100.0), c));
        }
    }
    for &load in &[0.5, 1.0, 2.0] {
        let mut c = row(base, 0, &vec![per_s(load); n], base.horizon_s);
        c.mix = Mix::Alternating;
        rows.push(("alternating", format!("{load} req/min per model, strictly alternating, degraded only"), c));
    }
    for &warm in &FLEET_LEVELS {
        for &rho in &FLEET_UTILISATION {
            let rates: Vec<f64> = base.template.models.iter().map(|m| rho * warm as f64 / m.service.mean_s).collect();
            let mut c = row(base, warm, &rates, base.fleet_horizon_s);
            c.admission_delay_s = base.cluster_admission_delay_s;
            rows.push(("fleet", format!("{warm} warm/lane at {:.0}% offered per worker", rho * 100.0), c));
        }
    }
    rows
}

/// Simulates every row of the grid.
pub fn run(base: &GridBase) -> Vec<GridRow> {
    build(base)
        .into_iter()
        .map(|(section, scenario, config)| {
            let report = simulate(&config);
            GridRow { section, scenario, config, report }
        })
        .collect()
}

/// The quorum-queue publish-confirm latency the large-fleet rows use, seconds:
/// `quorum-bench`'s p50 on a 3-node RabbitMQ 3.10 cluster, publishing through a
/// node that does not lead the queue (where a client lands two times in three),
/// the slower of two runs (BENCHMARKS.md, "Quorum queues"). The nodes shared one
/// host: add the network round trip between brokers for a real cluster.
pub const MEASURED_QUORUM_CONFIRM_S: f64 = 0.002_15;

/// A grid base from the seeds' defaults.
pub fn default_base() -> GridBase {
    GridBase {
        template: SimConfig::with_models(ModelConfig::defaults(0.0, 0.0, 0)),
        horizon_s: 86_400.0,
        fleet_horizon_s: 3_600.0,
        cluster_admission_delay_s: MEASURED_QUORUM_CONFIRM_S,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_level_and_validates() {
        let rows = build(&default_base());
        assert_eq!(
            rows.len(),
            WARM_LEVELS.len() * LOAD_LEVELS_PER_MIN.len() + 4 + 3 + FLEET_LEVELS.len() * FLEET_UTILISATION.len()
        );
        for (_, name, c) in &rows {
            assert_eq!(c.validate(), Ok(()), "{name}");
        }
    }
}
