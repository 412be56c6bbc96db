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

    /// Offered load in Erlangs (busy GPUs needed on average): λ · E[S].
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
            degraded_depth: Some(DEGRADED_DEPTH),
            degraded_max_wait_s: Some(DEGRADED_MAX_WAIT_S),
            lane_wait_limit_s: Some(LANE_WAIT_LIMIT_S),
            outage_mean_s: 600.0,
            admission_delay_s: 0.0,
            horizon_s: 86_400.0,
            seed: 1,
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
}
