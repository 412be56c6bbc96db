//! Sizing: the fewest warm workers per lane that meet a latency target.
//!
//! The grid shows the trade-off; an operator needs the inverse question
//! answered: "for this demand, how many warm workers per lane keep p95 wait
//! under T with essentially no `queue_overloaded`?". Wait falls as workers
//! are added, so the answer is found by doubling and then bisecting, each
//! probe a full simulation of the configuration.

use crate::config::SimConfig;
use crate::sim::simulate;
use crate::stats::Report;
use serde::Serialize;

/// What a lane must achieve.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    /// Maximum p95 wait of the model's served requests, seconds.
    pub p95_wait_s: f64,
    /// Minimum share of the model's requests served (not overloaded).
    pub min_acceptance: f64,
}

/// The sizing answer for a configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Sizing {
    /// Warm workers chosen per lane, by model index.
    pub warm_workers: Vec<usize>,
    /// The configuration with those workers.
    pub config: SimConfig,
    /// Its figures.
    pub report: Report,
}

/// Upper bound of the search, so an unreachable target ends.
pub const MAX_WORKERS: usize = 100_000;

fn meets(cfg: &SimConfig, model: usize, target: Target) -> bool {
    let r = simulate(cfg);
    let m = &r.per_model[model];
    m.wait_p95_s <= target.p95_wait_s && m.acceptance_rate >= target.min_acceptance
}

/// Finds, lane by lane, the fewest warm workers (>= 1) meeting `target`;
/// other lanes keep the counts already chosen (they interact only through
/// the shared degraded worker, which a met target leaves nearly idle).
/// Returns `None` for a lane that cannot meet it within [`MAX_WORKERS`].
pub fn size(base: &SimConfig, target: Target) -> Option<Sizing> {
    let mut cfg = base.clone();
    for m in 0..cfg.models.len() {
        let mut with = |n: usize| {
            cfg.models[m].warm_workers = n;
            meets(&cfg, m, target)
        };
        // Doubling: find hi that meets the target.
        let (mut lo, mut hi) = (0usize, 1usize);
        while !with(hi) {
            lo = hi;
            hi *= 2;
            if hi > MAX_WORKERS {
                return None;
            }
        }
        // Bisect (lo fails or is 0, hi meets).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if with(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        cfg.models[m].warm_workers = hi;
    }
    let report = simulate(&cfg);
    let warm_workers = cfg.models.iter().map(|m| m.warm_workers).collect();
    Some(Sizing { warm_workers, config: cfg, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn light_load_needs_one_worker_per_lane() {
        let mut c = SimConfig::with_models(ModelConfig::defaults(0.1 / 60.0, 0.1 / 60.0, 0));
        c.horizon_s = 20_000.0;
        let s = size(&c, Target { p95_wait_s: 5.0, min_acceptance: 0.999 });
        assert_eq!(s.map(|s| s.warm_workers), Some(vec![1, 1]));
    }

    #[test]
    fn more_load_needs_more_workers_and_meets_the_target() {
        let mut c = SimConfig::with_models(ModelConfig::defaults(60.0 / 60.0, 60.0 / 60.0, 0));
        c.horizon_s = 3_600.0;
        let t = Target { p95_wait_s: 2.0, min_acceptance: 0.999 };
        let s = size(&c, t).expect("reachable");
        // Offered load is 6 + 3 Erlangs: each lane needs more than that.
        assert!(s.warm_workers[0] > 6 && s.warm_workers[1] > 3, "{:?}", s.warm_workers);
        for m in &s.report.per_model {
            assert!(m.wait_p95_s <= t.p95_wait_s);
        }
    }
}
