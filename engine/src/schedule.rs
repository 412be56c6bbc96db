//! Sampler schedules and update rules, as pure functions.
//!
//! Why separate: the loop in [`crate::pipeline`] only calls the denoiser; what a step
//! does to the latent is plain arithmetic that is tested here without ONNX Runtime.
//!
//! **Flow matching, Euler** (`flow_euler`, Wan / AniSora style). The latent moves from
//! noise at `t = 1` to data at `t = 0` along the predicted velocity `v = noise - data`.
//! With `shift(t) = s*t / (1 + (s-1)*t)` (`s = flow_shift`, 1.0 is linear), the
//! schedule's points are, by `timestep_spacing`:
//! - `uniform`: `t_i = shift(1 - i/steps)` for `i` in `0..=steps`;
//! - `to_sigma_min`: `t_i = shift(1 - i (1 - m)/(steps - 1))` for `i` in `0..steps`,
//!   with `m = shift(1/1000)`, then `t_steps = 0`. This is the Wan2.1 reference
//!   scheduler (diffusers' `FlowMatchEulerDiscreteScheduler`): its smallest training
//!   sigma is already shifted once, and the evenly spaced points are shifted again.
//!
//! Step `i` calls the denoiser at timestep `1000 * t_i` and updates
//! `x <- x - (t_i - t_{i+1}) * v`.
//!
//! **DDIM** (`ddim`, eta = 0). The model predicts the noise `eps`; with a linear beta
//! schedule over 1000 training steps (`beta` from 1e-4 to 0.02), the timesteps are
//! evenly spaced from 999 down, and each step computes
//! `x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t)` then `x <- sqrt(a_prev) x0 + sqrt(1-a_prev) eps`.
//!
//! **Guidance.** With `cfg != 1` the denoiser runs twice per step (conditional and
//! unconditional text) and the prediction is `u + cfg * (c - u)`; with `cfg == 1` it
//! runs once, conditional only.

use warmlane_shared::settings::pipeline::{Sampler, TimestepSpacing};

const TRAIN_STEPS: usize = 1000;

/// One planned denoiser step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The timestep fed to the denoiser.
    pub timestep: f32,
    /// Flow: `t_i` and `t_{i+1}` in [0, 1]. DDIM: `alpha_bar` now and next.
    pub now: f32,
    /// See `now`.
    pub next: f32,
}

/// The plan of `steps` denoiser steps for `sampler`.
pub fn plan(sampler: Sampler, steps: u32, shift: f32, spacing: TimestepSpacing) -> Vec<Step> {
    let n = steps.max(1) as usize;
    match sampler {
        Sampler::FlowEuler if spacing == TimestepSpacing::ToSigmaMin => to_sigma_min(n, shift),
        Sampler::FlowEuler => {
            let t = |i: usize| {
                let lin = 1.0 - i as f32 / n as f32;
                shift * lin / (1.0 + (shift - 1.0) * lin)
            };
            (0..n).map(|i| Step { timestep: 1000.0 * t(i), now: t(i), next: t(i + 1) }).collect()
        }
        Sampler::Ddim => {
            let alphas = alphas_cumprod();
            let stride = TRAIN_STEPS / n;
            let ts: Vec<usize> = (0..n).map(|i| (TRAIN_STEPS - 1).saturating_sub(i * stride)).collect();
            ts.iter()
                .enumerate()
                .map(|(i, &t)| {
                    let next = ts.get(i + 1).map_or(1.0, |&tn| alphas[tn]);
                    Step { timestep: t as f32, now: alphas[t], next }
                })
                .collect()
        }
    }
}

/// The reference scheduler's sigmas, computed in f64 and rounded to f32 as it does.
fn to_sigma_min(n: usize, shift: f32) -> Vec<Step> {
    let s = f64::from(shift);
    let shifted = |t: f64| s * t / (1.0 + (s - 1.0) * t);
    let sigma_min = shifted(1.0 / TRAIN_STEPS as f64);
    let sigma = |i: usize| -> f32 {
        if i >= n {
            return 0.0;
        }
        let lin = if n == 1 { 1.0 } else { 1.0 - i as f64 * (1.0 - sigma_min) / (n - 1) as f64 };
        shifted(lin) as f32
    };
    (0..n).map(|i| Step { timestep: sigma(i) * TRAIN_STEPS as f32, now: sigma(i), next: sigma(i + 1) }).collect()
}

fn alphas_cumprod() -> Vec<f32> {
    let mut acc = 1.0_f64;
    (0..TRAIN_STEPS)
        .map(|i| {
            let beta = 1e-4 + (0.02 - 1e-4) * i as f64 / (TRAIN_STEPS - 1) as f64;
            acc *= 1.0 - beta;
            acc as f32
        })
        .collect()
}

/// Combines conditional and unconditional predictions in place into `cond`
/// (`u + cfg * (c - u)`).
pub fn guide(cond: &mut [f32], uncond: &[f32], cfg: f32) {
    for (c, &u) in cond.iter_mut().zip(uncond) {
        *c = u + cfg * (*c - u);
    }
}

/// Applies one step of `sampler` to `latent` given the model prediction.
pub fn update(sampler: Sampler, step: Step, latent: &mut [f32], prediction: &[f32]) {
    match sampler {
        Sampler::FlowEuler => {
            let dt = step.now - step.next;
            for (x, &v) in latent.iter_mut().zip(prediction) {
                *x -= dt * v;
            }
        }
        Sampler::Ddim => {
            let (a, an) = (step.now, step.next);
            let (sa, s1a, san, s1an) = (a.sqrt(), (1.0 - a).sqrt(), an.sqrt(), (1.0 - an).sqrt());
            for (x, &eps) in latent.iter_mut().zip(prediction) {
                let x0 = (*x - s1a * eps) / sa;
                *x = san * x0 + s1an * eps;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_schedule_runs_one_to_zero() {
        let plan = plan(Sampler::FlowEuler, 4, 1.0, TimestepSpacing::Uniform);
        assert_eq!(plan.len(), 4);
        assert_eq!(plan[0].now, 1.0);
        assert_eq!(plan[3].next, 0.0);
        assert_eq!(plan[0].timestep, 1000.0);
        let total: f32 = plan.iter().map(|s| s.now - s.next).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn exact_velocity_recovers_data() {
        // x_1 = noise, v = noise - data: Euler with the exact v lands on data.
        let (noise, data) = ([1.0_f32, -2.0], [0.25_f32, 0.5]);
        let v: Vec<f32> = noise.iter().zip(&data).map(|(n, d)| n - d).collect();
        let mut x = noise.to_vec();
        for step in plan(Sampler::FlowEuler, 8, 3.0, TimestepSpacing::Uniform) {
            update(Sampler::FlowEuler, step, &mut x, &v);
        }
        assert!(x.iter().zip(&data).all(|(a, b)| (a - b).abs() < 1e-5), "{x:?}");
    }

    #[test]
    fn guidance_interpolates() {
        let mut c = [2.0_f32, 0.0];
        guide(&mut c, &[1.0, 0.0], 5.0);
        assert_eq!(c, [6.0, 0.0]);
        let mut same = [2.0_f32];
        guide(&mut same, &[1.0], 1.0);
        assert_eq!(same, [2.0]);
    }

    #[test]
    fn sigma_min_spacing_matches_the_reference_formula() {
        // shift 1: evenly spaced from 1 to 1/1000, then 0.
        let plan = plan(Sampler::FlowEuler, 4, 1.0, TimestepSpacing::ToSigmaMin);
        let want = [1.0, 1.0 - 0.999 / 3.0, 1.0 - 2.0 * 0.999 / 3.0, 0.001];
        for (step, want) in plan.iter().zip(want) {
            assert!((f64::from(step.now) - want).abs() < 1e-6, "{step:?} vs {want}");
        }
        assert_eq!(plan[3].next, 0.0);
        assert_eq!(plan[0].timestep, 1000.0);
        // shift 3: both ends shifted, the last point twice.
        let plan = plan_of(4, 3.0);
        let m = 3.0 * 0.001 / (1.0 + 2.0 * 0.001);
        let last = 3.0 * m / (1.0 + 2.0 * m);
        assert!((f64::from(plan[3].now) - last).abs() < 1e-7, "{:?}", plan[3]);
        assert!(plan.windows(2).all(|w| w[0].now > w[1].now && w[0].next == w[1].now));
        assert_eq!(plan_of(1, 3.0)[0], Step { timestep: 1000.0, now: 1.0, next: 0.0 });
    }

    fn plan_of(steps: u32, shift: f32) -> Vec<Step> {
        plan(Sampler::FlowEuler, steps, shift, TimestepSpacing::ToSigmaMin)
    }

    #[test]
    fn ddim_plan_descends() {
        let plan = plan(Sampler::Ddim, 4, 1.0, TimestepSpacing::Uniform);
        assert_eq!(plan.len(), 4);
        assert!(plan.windows(2).all(|w| w[0].timestep > w[1].timestep));
        assert_eq!(plan[3].next, 1.0);
    }
}
