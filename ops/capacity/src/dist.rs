//! Service-time and inter-arrival distributions.
//!
//! Inference time of a fixed-step video model is nearly constant on one GPU,
//! but prompt length, resolution and co-tenancy add a right-skewed tail, so
//! the simulator offers a lognormal with a chosen coefficient of variation
//! (CV) next to the exponential that queueing theory's closed forms assume
//! (used by the M/M/1 correctness tests) and a fixed time (CV = 0).

use crate::rng::Rng;
use serde::Serialize;

/// The shape of a service-time distribution; the mean is kept separately.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Exponential (CV = 1): the M/M/· assumption.
    Exp,
    /// Lognormal with the configured CV: a realistic right-skewed tail.
    Lognormal,
    /// Always exactly the mean (CV = 0).
    Fixed,
}

/// A service-time distribution with a given mean in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServiceDist {
    /// Mean service time in seconds.
    pub mean_s: f64,
    /// Distribution shape.
    pub shape: Shape,
    /// Coefficient of variation (std/mean); used by [`Shape::Lognormal`] only.
    pub cv: f64,
}

impl ServiceDist {
    /// Draws one service time in seconds (always > 0 for a positive mean).
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match self.shape {
            Shape::Exp => exponential(rng, self.mean_s),
            Shape::Fixed => self.mean_s,
            Shape::Lognormal => lognormal(rng, self.mean_s, self.cv),
        }
    }
}

/// Exponential sample with the given mean (inverse-CDF method).
pub fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    -mean * rng.uniform_open().ln()
}

/// Standard normal sample (Box-Muller; the second variate is discarded to
/// keep the generator state simple).
pub fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = rng.uniform_open();
    let u2 = rng.uniform_open();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Lognormal sample parametrised by its own mean and CV, so that changing
/// the CV does not move the mean (and therefore the offered load).
pub fn lognormal(rng: &mut Rng, mean: f64, cv: f64) -> f64 {
    let sigma2 = (1.0 + cv * cv).ln();
    let mu = mean.ln() - sigma2 / 2.0;
    (mu + sigma2.sqrt() * standard_normal(rng)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(d: ServiceDist, n: usize) -> (f64, f64) {
        let mut r = Rng::new(11, 3);
        let xs: Vec<f64> = (0..n).map(|_| d.sample(&mut r)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn exponential_mean_and_cv() {
        let d = ServiceDist { mean_s: 6.0, shape: Shape::Exp, cv: 0.0 };
        let (m, cv) = moments(d, 200_000);
        assert!((m - 6.0).abs() < 0.06, "mean {m}");
        assert!((cv - 1.0).abs() < 0.02, "cv {cv}");
    }

    #[test]
    fn lognormal_keeps_mean_and_cv() {
        let d = ServiceDist { mean_s: 3.0, shape: Shape::Lognormal, cv: 0.3 };
        let (m, cv) = moments(d, 200_000);
        assert!((m - 3.0).abs() < 0.02, "mean {m}");
        assert!((cv - 0.3).abs() < 0.01, "cv {cv}");
    }

    #[test]
    fn fixed_is_constant() {
        let d = ServiceDist { mean_s: 2.5, shape: Shape::Fixed, cv: 0.7 };
        let mut r = Rng::new(1, 1);
        assert_eq!(d.sample(&mut r), 2.5);
    }
}
