//! Counters gathered during a run and the figures derived from them.
//!
//! The event loop only counts; every rate, percentile and cost is computed
//! here once, so the definitions (what "per 1,000 requests" divides by, what
//! "wait" measures) live in one place and match `ops/CAPACITY.md`.

use crate::config::SimConfig;
use serde::Serialize;

/// Raw counters for one model.
#[derive(Debug, Clone, Default)]
pub struct ModelTally {
    /// Requests that arrived (before the horizon).
    pub arrivals: u64,
    /// Served by the model's warm lane.
    pub served_lane: u64,
    /// Served by a degraded worker.
    pub served_degraded: u64,
    /// Answered `queue_overloaded`/`queue_full` (degraded depth reached).
    pub queue_full: u64,
    /// Answered `queue_overloaded`/`wait_timeout` (degraded max wait passed).
    pub wait_timeout: u64,
    /// Moved from the lane to degraded after the lane wait limit.
    pub moved_to_degraded: u64,
    /// Wait (arrival to pick-up by a worker) of every served request, s.
    pub waits: Vec<f64>,
    /// Latency (arrival to completion) of every served request, s.
    pub latencies: Vec<f64>,
    /// Busy seconds of this lane's warm workers within the horizon.
    pub lane_busy_s: f64,
}

/// Raw counters for a run.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Per model, by index.
    pub models: Vec<ModelTally>,
    /// Degraded model switches (unload one model, load another).
    pub switches: u64,
    /// Degraded cold loads (nothing resident before).
    pub cold_loads: u64,
    /// Busy seconds (switching + serving) of degraded workers within the horizon.
    pub degraded_busy_s: f64,
    /// Burst submissions refused `queue_full` and submitted again.
    pub resubmits: u64,
    /// Time of the last outcome (completion, `wait_timeout` or `queue_full`), s.
    pub last_outcome_s: f64,
}

/// Figures for one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Model name.
    pub name: String,
    /// Requests that arrived.
    pub arrivals: u64,
    /// Served / arrived.
    pub acceptance_rate: f64,
    /// Median wait of served requests, s.
    pub wait_p50_s: f64,
    /// 95th percentile wait of served requests, s.
    pub wait_p95_s: f64,
    /// 95th percentile end-to-end latency of served requests, s.
    pub latency_p95_s: f64,
    /// `queue_full` answers / arrived.
    pub queue_full_rate: f64,
    /// `wait_timeout` answers / arrived.
    pub wait_timeout_rate: f64,
    /// Share of served requests that went through the degraded worker.
    pub degraded_share: f64,
    /// Busy fraction of this lane's warm workers (`None` without a lane).
    pub warm_utilization: Option<f64>,
}

/// Figures for one configuration: what the grid table prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests that arrived.
    pub arrivals: u64,
    /// Requests served.
    pub served: u64,
    /// Served / arrived.
    pub acceptance_rate: f64,
    /// Median wait (arrival to pick-up by a worker) of served requests, s.
    pub wait_p50_s: f64,
    /// 95th percentile wait of served requests, s.
    pub wait_p95_s: f64,
    /// 99th percentile wait of served requests, s.
    pub wait_p99_s: f64,
    /// Longest wait of a served request, s (0 when none was served).
    pub wait_max_s: f64,
    /// Mean wait of served requests, s.
    pub wait_mean_s: f64,
    /// 95th percentile latency (wait + switch + inference), s.
    pub latency_p95_s: f64,
    /// `queue_overloaded` answers (both reasons) / arrived.
    pub overloaded_rate: f64,
    /// `queue_overloaded`/`queue_full` / arrived.
    pub queue_full_rate: f64,
    /// `queue_overloaded`/`wait_timeout` / arrived.
    pub wait_timeout_rate: f64,
    /// Share of served requests that went through the degraded worker.
    pub degraded_share: f64,
    /// Busy fraction of all warm workers (`None` when there are none).
    pub warm_utilization: Option<f64>,
    /// Busy fraction (switching + serving) of degraded workers.
    pub degraded_utilization: f64,
    /// GPU-hours billed per 1,000 served requests: every warm worker and
    /// degraded worker for the whole horizon, busy or idle (`None` when
    /// nothing was served).
    pub gpu_hours_per_1k: Option<f64>,
    /// Degraded model switches per 1,000 served requests.
    pub switches_per_1k: f64,
    /// Degraded cold loads over the run.
    pub cold_loads: u64,
    /// Degraded model switches over the run.
    pub switches: u64,
    /// Degraded model loads over the run (cold loads + switches): what the
    /// worker's load counter (`store.loads`) counts.
    pub loads: u64,
    /// Burst submissions refused `queue_full` and submitted again (0 without a burst).
    pub resubmits: u64,
    /// From time 0 to the last outcome (completion, `wait_timeout`,
    /// `queue_full`), s: the span `degraded-bench` calls elapsed.
    pub elapsed_s: f64,
    /// Served / elapsed, requests per second (0 when nothing ended).
    pub throughput_per_s: f64,
    /// Per-model breakdown.
    pub per_model: Vec<ModelReport>,
}

/// Nearest-rank percentile `p` in [0, 1] of `xs`; 0 for an empty slice.
pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let rank = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    let (_, v, _) = xs.select_nth_unstable_by(rank - 1, f64::total_cmp);
    *v
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Tally {
    /// A tally with one empty entry per model.
    pub fn new(models: usize) -> Self {
        Self { models: vec![ModelTally::default(); models], ..Self::default() }
    }

    /// Derives the report; consumes the tally (percentiles reorder samples).
    pub fn into_report(mut self, cfg: &SimConfig) -> Report {
        let h = cfg.horizon_s;
        let mut per_model = Vec::with_capacity(self.models.len());
        let mut all_waits = Vec::new();
        let mut all_lat = Vec::new();
        let (mut arrivals, mut served, mut full, mut timeout, mut via_degraded) = (0, 0, 0, 0, 0);
        let (mut warm_busy, mut warm_n) = (0.0, 0usize);
        for (t, m) in self.models.iter_mut().zip(&cfg.models) {
            let s = t.served_lane + t.served_degraded;
            let util = (m.warm_workers > 0).then(|| t.lane_busy_s / (m.warm_workers as f64 * h));
            per_model.push(ModelReport {
                name: m.name.clone(),
                arrivals: t.arrivals,
                acceptance_rate: ratio(s, t.arrivals),
                wait_p50_s: percentile(&mut t.waits, 0.50),
                wait_p95_s: percentile(&mut t.waits, 0.95),
                latency_p95_s: percentile(&mut t.latencies, 0.95),
                queue_full_rate: ratio(t.queue_full, t.arrivals),
                wait_timeout_rate: ratio(t.wait_timeout, t.arrivals),
                degraded_share: ratio(t.served_degraded, s),
                warm_utilization: util,
            });
            arrivals += t.arrivals;
            served += s;
            full += t.queue_full;
            timeout += t.wait_timeout;
            via_degraded += t.served_degraded;
            warm_busy += t.lane_busy_s;
            warm_n += m.warm_workers;
            all_waits.append(&mut t.waits);
            all_lat.append(&mut t.latencies);
        }
        let wait_mean_s =
            if all_waits.is_empty() { 0.0 } else { all_waits.iter().sum::<f64>() / all_waits.len() as f64 };
        let billed_workers = (warm_n + cfg.degraded_workers) as f64;
        Report {
            arrivals,
            served,
            acceptance_rate: ratio(served, arrivals),
            wait_p50_s: percentile(&mut all_waits, 0.50),
            wait_p95_s: percentile(&mut all_waits, 0.95),
            wait_p99_s: percentile(&mut all_waits, 0.99),
            wait_max_s: percentile(&mut all_waits, 1.0),
            wait_mean_s,
            latency_p95_s: percentile(&mut all_lat, 0.95),
            overloaded_rate: ratio(full + timeout, arrivals),
            queue_full_rate: ratio(full, arrivals),
            wait_timeout_rate: ratio(timeout, arrivals),
            degraded_share: ratio(via_degraded, served),
            warm_utilization: (warm_n > 0).then(|| warm_busy / (warm_n as f64 * h)),
            degraded_utilization: if cfg.degraded_workers == 0 {
                0.0
            } else {
                self.degraded_busy_s / (cfg.degraded_workers as f64 * h)
            },
            gpu_hours_per_1k: (served > 0).then(|| billed_workers * h / 3600.0 / served as f64 * 1000.0),
            switches_per_1k: ratio(self.switches, served) * 1000.0,
            cold_loads: self.cold_loads,
            switches: self.switches,
            loads: self.cold_loads + self.switches,
            resubmits: self.resubmits,
            elapsed_s: self.last_outcome_s,
            throughput_per_s: if self.last_outcome_s > 0.0 { served as f64 / self.last_outcome_s } else { 0.0 },
            per_model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut xs, 0.50), 50.0);
        assert_eq!(percentile(&mut xs, 0.95), 95.0);
        assert_eq!(percentile(&mut xs, 1.0), 100.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(percentile(&mut [3.0], 0.0), 3.0);
    }
}
