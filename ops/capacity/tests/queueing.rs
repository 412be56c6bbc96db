//! Checks the simulator against queueing theory's closed forms.
//!
//! If the event loop reproduces M/M/1 and M/M/1/K exactly where theory is
//! exact, its figures for the real (non-Markovian, two-model) fleet can be
//! trusted. Fixed seeds keep the checks deterministic; horizons are sized so
//! the sampling error is well inside the tolerance and debug runs stay fast.

use warmlane_capacity::dist::{ServiceDist, Shape};
use warmlane_capacity::{simulate, Mix, ModelConfig, SimConfig};

/// One model, `warm` workers, exponential service with rate `mu`, arrivals
/// at rate `lambda`, no limits anywhere and no switch time.
fn markov(lambda: f64, mu: f64, warm: usize, horizon_s: f64) -> SimConfig {
    let model = ModelConfig {
        name: "m".into(),
        arrival_rate_per_s: lambda,
        service: ServiceDist { mean_s: 1.0 / mu, shape: Shape::Exp, cv: 1.0 },
        warm_workers: warm,
        unavailable_fraction: 0.0,
    };
    let mut c = SimConfig::with_models(vec![model]);
    c.switch_s = 0.0;
    c.degraded_depth = None;
    c.degraded_max_wait_s = None;
    c.lane_wait_limit_s = None;
    c.horizon_s = horizon_s;
    c.seed = 20_260_226;
    c
}

fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want, "{what}: got {got}, want {want} ± {:.1}%", rel * 100.0);
}

#[test]
fn mm1_on_a_warm_lane_matches_closed_form() {
    let (lambda, mu) = (0.5, 1.0);
    let rho = lambda / mu;
    let c = markov(lambda, mu, 1, 400_000.0);
    c.validate().unwrap();
    let r = simulate(&c);
    // Wq = rho / (mu - lambda) = 1.0
    assert_close("mean wait", r.wait_mean_s, rho / (mu - lambda), 0.04);
    assert_close("utilisation", r.warm_utilization.unwrap(), rho, 0.02);
    assert_eq!(r.acceptance_rate, 1.0);
    assert_eq!(r.degraded_share, 0.0);
    // P(Wq > t) = rho e^{-(mu - lambda) t}, so p95 = ln(rho / 0.05) / (mu - lambda).
    assert_close("p95 wait", r.wait_p95_s, (rho / 0.05).ln() / (mu - lambda), 0.05);
}

#[test]
fn mm1_on_the_degraded_worker_matches_closed_form() {
    // No warm lane: every request goes through the (single) degraded worker,
    // which never switches because there is one model.
    let (lambda, mu) = (0.5, 1.0);
    let rho = lambda / mu;
    let c = markov(lambda, mu, 0, 400_000.0);
    let r = simulate(&c);
    assert_close("mean wait", r.wait_mean_s, rho / (mu - lambda), 0.04);
    assert_close("utilisation", r.degraded_utilization, rho, 0.02);
    assert_eq!(r.degraded_share, 1.0);
    assert_eq!(r.switches_per_1k, 0.0);
    assert_eq!(r.cold_loads, 1);
}

#[test]
fn mm1k_blocking_matches_closed_form() {
    // System capacity K = 1 in service + (K - 1) ready messages.
    let (lambda, mu, k) = (0.8_f64, 1.0_f64, 3_i32);
    let rho = lambda / mu;
    let mut c = markov(lambda, mu, 0, 200_000.0);
    c.degraded_depth = Some((k - 1) as usize);
    let r = simulate(&c);
    let p_k = (1.0 - rho) * rho.powi(k) / (1.0 - rho.powi(k + 1));
    assert_close("blocking", r.queue_full_rate, p_k, 0.04);
    assert_eq!(r.wait_timeout_rate, 0.0);
    // Carried load: utilisation = rho (1 - P_K).
    assert_close("utilisation", r.degraded_utilization, rho * (1.0 - p_k), 0.02);
}

/// Two models, degraded only, load so light that the worker is always idle
/// when a request arrives: each request's preparation is decided by the
/// previous request's model alone.
fn light_two_model(mix: Mix, phr00t_rate: f64) -> SimConfig {
    let mut c = SimConfig::with_models(ModelConfig::defaults(1.0 / 3_600.0, phr00t_rate, 0));
    c.mix = mix;
    c.horizon_s = 3_600.0 * 200.0;
    c
}

#[test]
fn alternating_models_switch_on_every_request() {
    let r = simulate(&light_two_model(Mix::Alternating, 1.0 / 3_600.0));
    assert!(r.served > 300, "served {}", r.served);
    assert_eq!(r.cold_loads, 1);
    // Every request after the first (a cold load) is a switch.
    let switches = (r.switches_per_1k * r.served as f64 / 1000.0).round() as u64;
    assert_eq!(switches, r.served - 1);
}

#[test]
fn a_single_model_never_switches() {
    let r = simulate(&light_two_model(Mix::Independent, 0.0));
    assert!(r.served > 100);
    assert_eq!(r.cold_loads, 1);
    assert_eq!(r.switches_per_1k, 0.0);
}

#[test]
fn warm_lanes_take_all_traffic_when_ready() {
    let mut c = SimConfig::with_models(ModelConfig::defaults(2.0 / 60.0, 2.0 / 60.0, 2));
    c.horizon_s = 20_000.0;
    let r = simulate(&c);
    assert_eq!(r.degraded_share, 0.0);
    assert_eq!(r.switches_per_1k, 0.0);
    assert_eq!(r.acceptance_rate, 1.0);
}

#[test]
fn overload_is_answered_with_both_reasons() {
    // Degraded only, far beyond its capacity: both FR-017 limits bite.
    let mut c = SimConfig::with_models(ModelConfig::defaults(0.5, 0.5, 0));
    c.horizon_s = 5_000.0;
    let r = simulate(&c);
    assert!(r.queue_full_rate > 0.0, "{r:?}");
    assert!(r.wait_timeout_rate > 0.0, "{r:?}");
    assert!(r.wait_p95_s <= 30.0 + 1e-9, "served requests waited at most 30 s");
    assert!((r.acceptance_rate + r.overloaded_rate - 1.0).abs() < 1e-12);
}

#[test]
fn lane_wait_limit_moves_requests_to_degraded() {
    // One warm worker per lane at 2x its capacity: the lane backlog passes
    // 30 s and requests move to the degraded queue.
    let mut c = SimConfig::with_models(ModelConfig::defaults(2.0 / 6.0, 0.0, 1));
    c.horizon_s = 5_000.0;
    let r = simulate(&c);
    assert!(r.degraded_share > 0.0);
    // Lane wait (<= 30 s) plus degraded wait (<= 30 s).
    assert!(r.wait_p95_s <= 60.0 + 1e-9);
}

#[test]
fn same_seed_same_figures() {
    let c = SimConfig::with_models(ModelConfig::defaults(0.1, 0.1, 1));
    let a = serde_json::to_string(&simulate(&c)).unwrap();
    let b = serde_json::to_string(&simulate(&c)).unwrap();
    assert_eq!(a, b);
}
