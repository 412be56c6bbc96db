//! The inputs of one simulated configuration, validated once.
//!
//! Every figure that drives the answer (arrival rates, service times, the
//! degraded worker's switch time, the FR-017 limits) is a field here, so a
//! table in `ops/CAPACITY.md` can always be regenerated from measured
//! numbers. Validation names the field, the limit and the value, as the
//! workspace style asks.

use crate::dist::{ServiceDist, Shape};
use serde::Serialize;

/// FR-017: degraded queue depth limit (ready messages).
pub const DEGRADED_DEPTH: usize = 25;
/// FR-017: degraded queue maximum wait, seconds.
pub const DEGRADED_MAX_WAIT_S: f64 = 30.0;
/// FR-021(c): a request not started on its warm lane within this many seconds
/// after admission is moved to the degraded queue.
pub const LANE_WAIT_LIMIT_S: f64 = 30.0;
/// Placeholder: AniSora, 8 steps, seconds per request on one GPU.
/// Replace with the figure from `BENCHMARKS.md`.
pub const ANISORA_SERVICE_S: f64 = 6.0;
/// Placeholder: Phr00t, 4 steps, seconds per request on one GPU.
/// Replace with the figure from `BENCHMARKS.md`.
pub const PHR00T_SERVICE_S: f64 = 3.0;
/// Placeholder: degraded worker unload + cache cleanup + load, seconds.
/// Replace with the figure from `BENCHMARKS.md`.
pub const SWITCH_S: f64 = 20.0;
/// Placeholder coefficient of variation of inference time.
pub const SERVICE_CV: f64 = 0.2;

/// A closed burst instead of Poisson arrivals: `requests` requests, models
/// alternating, submitted one after another from time 0 as fast as admission
/// allows; a submission refused `queue_full` is submitted again `retry_s`
/// later (as `degraded-bench` does), so every request is eventually admitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Burst {
    /// Requests in the burst.
    pub requests: u64,
    /// Pause before a refused submission is retried, seconds (> 0).
    pub retry_s: f64,
}

/// Where the windowed degraded worker's estimates of switch and inference
/// time come from (rule 5 of [`crate::window::pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Estimating {
    /// The configured means, from the first pick on (the simulation knows them).
    Configured,
    /// As the real worker does: nothing at first (FIFO), then the last load and
    /// the last run it saw of each model.
    Measured,
}

/// How the arrival streams of the models interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// One independent Poisson stream per model.
    Independent,
    /// One Poisson stream at the summed rate whose requests alternate between
    /// models (A, B, A, B, ...): the worst case for the degraded worker.
    Alternating,
}

/// One heavy model, its demand and its dedicated warm lane.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// Display name (`anisora`, `phr00t`).
    pub name: String,
    /// Poisson arrival rate, requests per second.
    pub arrival_rate_per_s: f64,
    /// Inference time on one warm GPU.
    pub service: ServiceDist,
    /// Warm workers in this model's lane (0 = no lane: degraded only).
    pub warm_workers: usize,
    /// Long-run fraction of time the lane is unavailable (capacity/quota),
    /// during which new requests are routed to the degraded queue.
    pub unavailable_fraction: f64,
}

/// A full simulated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    /// The models, indexed by position.
    pub models: Vec<ModelConfig>,
    /// How arrivals interleave.
    pub mix: Mix,
    /// Degraded worker model switch (unload + cleanup + load), seconds. Also
    /// charged for the first (cold) load.
    pub switch_s: f64,
    /// Workers consuming the degraded queue (the spec has one).
    pub degraded_workers: usize,
    /// Deliveries the degraded worker holds and picks among
    /// ([`crate::window::pick`]); 1 = FIFO. Above 1 the degraded queue holds
    /// `depth - window + 1` ready messages, so ready plus held stays within the
    /// depth, and there must be one degraded worker (single active consumer).
    pub degraded_window: usize,
    /// Where the windowed worker's estimates come from.
    pub degraded_estimates: Estimating,
    /// Degraded queue depth limit in ready messages; `None` = unbounded.
    pub degraded_depth: Option<usize>,
    /// Degraded queue max wait, seconds; `None` = no limit.
    pub degraded_max_wait_s: Option<f64>,
    /// Lane wait limit before moving to degraded, seconds; `None` = no limit.
    pub lane_wait_limit_s: Option<f64>,
    /// Mean length of one lane outage, seconds (with `unavailable_fraction`
    /// this fixes the mean up-time between outages).
    pub outage_mean_s: f64,
    /// Extra delay of every publish (e.g. quorum-queue publish confirms across
    /// a RabbitMQ cluster), seconds; counted in the wait.
    pub admission_delay_s: f64,
    /// Simulated time during which requests arrive, seconds. Workers are
    /// billed for exactly this long; the system then drains.
    pub horizon_s: f64,
    /// Seed of every random stream.
    pub seed: u64,
    /// A closed burst replacing the Poisson arrivals (rates and mix are then
    /// ignored); `None` = Poisson arrivals until the horizon.
    pub burst: Option<Burst>,
}

/// A configuration field outside its allowed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid setting `{field}`: {value} (must be {limit})")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Its value, rendered.
    pub value: String,
    /// The rule it broke.
    pub limit: &'static str,
}

fn check(ok: bool, field: &'static str, value: f64, limit: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError { field, value: value.to_string(), limit })
    }
}

impl ModelConfig {
    /// The two seeds' models with placeholder service times.
    pub fn defaults(anisora_rate_per_s: f64, phr00t_rate_per_s: f64, warm_workers: usize) -> Vec<Self> {
        let lane = |name: &str, rate: f64, mean_s: f64| ModelConfig {
            name: name.to_string(),
            arrival_rate_per_s: rate,
            service: ServiceDist { mean_s, shape: Shape::Lognormal, cv: SERVICE_CV },
            warm_workers,
            unavailable_fraction: 0.0,
        };
        vec![
            lane("anisora", anisora_rate_per_s, ANISORA_SERVICE_S),
            lane("phr00t", phr00t_rate_per_s, PHR00T_SERVICE_S),
        ]
    }

    /// Offered load in Erlangs (busy GPUs needed on average): λ · E\[S\].
    pub fn offered_erlangs(&self) -> f64 {
        self.arrival_rate_per_s * self.service.mean_s
    }
}

impl SimConfig {
    /// The seeds' production defaults (FR-017 limits, one degraded worker)
    /// around the given models.
    pub fn with_models(models: Vec<ModelConfig>) -> Self {
        Self {
            models,
            mix: Mix::Independent,
            switch_s: SWITCH_S,
            degraded_workers: 1,
            degraded_window: 1,
            degraded_estimates: Estimating::Configured,
            degraded_depth: Some(DEGRADED_DEPTH),
            degraded_max_wait_s: Some(DEGRADED_MAX_WAIT_S),
            lane_wait_limit_s: Some(LANE_WAIT_LIMIT_S),
            outage_mean_s: 600.0,
            admission_delay_s: 0.0,
            horizon_s: 86_400.0,
            seed: 1,
            burst: None,
        }
    }

    /// Checks every field once; the simulator assumes a validated config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return Err(ConfigError { field: "models", value: "0".into(), limit: "at least 1" });
        }
        for m in &self.models {
            check(
                m.arrival_rate_per_s.is_finite() && m.arrival_rate_per_s >= 0.0,
                "arrival_rate_per_s",
                m.arrival_rate_per_s,
                ">= 0 and finite",
            )?;
            check(
                m.service.mean_s.is_finite() && m.service.mean_s > 0.0,
                "service.mean_s",
                m.service.mean_s,
                "> 0 and finite",
            )?;
            check(m.service.cv.is_finite() && m.service.cv >= 0.0, "service.cv", m.service.cv, ">= 0")?;
            check(
                (0.0..1.0).contains(&m.unavailable_fraction),
                "unavailable_fraction",
                m.unavailable_fraction,
                "in [0, 1)",
            )?;
        }
        check(self.switch_s.is_finite() && self.switch_s >= 0.0, "switch_s", self.switch_s, ">= 0")?;
        check(self.outage_mean_s.is_finite() && self.outage_mean_s > 0.0, "outage_mean_s", self.outage_mean_s, "> 0")?;
        check(
            self.admission_delay_s.is_finite() && self.admission_delay_s >= 0.0,
            "admission_delay_s",
            self.admission_delay_s,
            ">= 0",
        )?;
        check(self.horizon_s.is_finite() && self.horizon_s > 0.0, "horizon_s", self.horizon_s, "> 0 and finite")?;
        for (field, v) in
            [("degraded_max_wait_s", self.degraded_max_wait_s), ("lane_wait_limit_s", self.lane_wait_limit_s)]
        {
            if let Some(v) = v {
                check(v.is_finite() && v >= 0.0, field, v, ">= 0 and finite")?;
            }
        }
        self.validate_window()?;
        if let Some(b) = self.burst {
            check(b.requests >= 1, "burst.requests", b.requests as f64, ">= 1")?;
            check(b.retry_s.is_finite() && b.retry_s > 0.0, "burst.retry_s", b.retry_s, "> 0 and finite")?;
        }
        let has_warm = self.models.iter().any(|m| m.warm_workers > 0);
        if self.degraded_workers == 0 && !has_warm {
            return Err(ConfigError {
                field: "degraded_workers",
                value: "0".into(),
                limit: ">= 1 when no lane has warm workers",
            });
        }
        Ok(())
    }

    /// The window must fit the depth (at least one ready message left) and,
    /// above 1, have the degraded queue to itself (one worker).
    fn validate_window(&self) -> Result<(), ConfigError> {
        let k = self.degraded_window;
        let err = |limit| Err(ConfigError { field: "degraded_window", value: k.to_string(), limit });
        if k == 0 {
            return err(">= 1");
        }
        if self.degraded_depth.is_some_and(|d| k > d) {
            return err("<= degraded_depth");
        }
        if k > 1 && self.degraded_workers > 1 {
            return err("1 when degraded_workers > 1 (the window assumes a single active consumer)");
        }
        Ok(())
    }

    /// Ready messages the degraded queue accepts: `depth - window + 1`
    /// (`x-max-length` of the real queue); `None` = unbounded.
    pub fn degraded_ready_limit(&self) -> Option<usize> {
        self.degraded_depth.map(|d| d.saturating_sub(self.degraded_window) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = SimConfig::with_models(ModelConfig::defaults(0.1, 0.1, 1));
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.degraded_depth, Some(25));
        assert_eq!(c.degraded_max_wait_s, Some(30.0));
    }

    #[test]
    fn error_names_field_limit_and_value() {
        let mut c = SimConfig::with_models(ModelConfig::defaults(0.1, 0.1, 1));
        c.models[1].unavailable_fraction = 1.5;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "unavailable_fraction");
        assert_eq!(e.to_string(), "invalid setting `unavailable_fraction`: 1.5 (must be in [0, 1))");
    }

    #[test]
    fn the_window_fits_the_depth_and_leaves_ready_plus_held_within_it() {
        let mut c = SimConfig::with_models(ModelConfig::defaults(0.1, 0.1, 0));
        for (window, ready) in [(1, 25), (4, 22), (25, 1)] {
            c.degraded_window = window;
            assert_eq!(c.validate(), Ok(()));
            assert_eq!(c.degraded_ready_limit(), Some(ready));
        }
        for (window, workers) in [(0, 1), (26, 1), (2, 2)] {
            c.degraded_window = window;
            c.degraded_workers = workers;
            assert_eq!(c.validate().map_err(|e| e.field), Err("degraded_window"), "window {window}");
        }
        c.degraded_window = 1;
        c.burst = Some(Burst { requests: 40, retry_s: 0.0 });
        assert_eq!(c.validate().map_err(|e| e.field), Err("burst.retry_s"));
    }
}
