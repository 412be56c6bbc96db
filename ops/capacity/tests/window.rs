//! The degraded worker's window of K (issue #16) in the simulation: K = 1 is the
//! FIFO model as it was, figure for figure; a window switches less and serves
//! more on alternating traffic; nobody starts past the max wait; and the burst
//! of `degraded-bench` gives the worker's measured load counts.

use warmlane_capacity::dist::Shape;
use warmlane_capacity::{simulate, Burst, Estimating, Mix, ModelConfig, SimConfig};

/// Figures of the FIFO model before the window existed, from `capacity-sim run
/// --json --horizon-s 20000` with the fixture's arguments (commit 6b460c7).
const BEFORE: &str = include_str!("fixtures/fifo_before_window.json");

/// The fixture's configurations, in its order.
fn fixture_configs() -> Vec<SimConfig> {
    let with = |rate_per_min: f64, warm: usize, edit: &dyn Fn(&mut SimConfig)| {
        let mut c = SimConfig::with_models(ModelConfig::defaults(rate_per_min / 60.0, rate_per_min / 60.0, warm));
        c.horizon_s = 20_000.0;
        edit(&mut c);
        c
    };
    vec![
        with(20.0, 0, &|_| {}),
        with(1.0, 0, &|c| c.mix = Mix::Alternating),
        with(5.0, 1, &|c| c.models.iter_mut().for_each(|m| m.unavailable_fraction = 0.2)),
        with(2.0, 0, &|c| c.degraded_workers = 2),
    ]
}

#[test]
fn a_window_of_one_gives_the_fifo_figures_of_before() {
    let before: Vec<serde_json::Value> = serde_json::from_str(BEFORE).unwrap();
    let configs = fixture_configs();
    assert_eq!(before.len(), configs.len());
    for (case, c) in before.iter().zip(configs) {
        assert_eq!(c.degraded_window, 1);
        c.validate().unwrap();
        // Both sides through the same printer and parser: equal floats compare equal.
        let now: serde_json::Value = serde_json::from_str(&serde_json::to_string(&simulate(&c)).unwrap()).unwrap();
        let serde_json::Value::Object(fields) = &case["report"] else { panic!("fixture without a report") };
        for (key, want) in fields {
            assert_eq!(&now[key], want, "{}: `{key}`", case["name"]);
        }
    }
}

/// Degraded only, two models whose switch costs about one generation.
fn heavy_alternating(window: usize) -> SimConfig {
    let mut c = SimConfig::with_models(ModelConfig::defaults(5.0 / 60.0, 5.0 / 60.0, 0));
    for m in &mut c.models {
        m.service.mean_s = 4.0;
    }
    c.switch_s = 4.0;
    c.mix = Mix::Alternating;
    c.horizon_s = 20_000.0;
    c.degraded_window = window;
    c
}

#[test]
fn on_alternating_heavy_load_a_window_switches_less_and_serves_more() {
    // 10 req/min of 4 s generations, one every 6 s on average: FIFO needs 8 s a
    // request and sheds; a window of 8 runs a few requests per switch while the
    // other model's oldest can still start in time, and sheds far less. (The 30 s
    // bound, not K, limits the batches: seen in 2026-11-30's figures, 2,263 vs
    // 1,357 switches and 77 % vs 94 % served.)
    let fifo = simulate(&heavy_alternating(1));
    let window = simulate(&heavy_alternating(8));
    assert_eq!(fifo.arrivals, window.arrivals, "same arrivals");
    assert!(fifo.overloaded_rate > 0.2, "FIFO is overloaded: {fifo:?}");
    let (ws, fs) = (window.switches as f64, fifo.switches as f64);
    assert!(ws < 0.7 * fs, "switches: window {ws} vs FIFO {fs}");
    let (wn, fnn) = (window.served as f64, fifo.served as f64);
    assert!(wn > 1.15 * fnn, "served: window {wn} vs FIFO {fnn}");
    assert!(window.throughput_per_s > fifo.throughput_per_s);
    assert!(window.acceptance_rate > 0.9, "{window:?}");
}

#[test]
fn nobody_starts_after_the_max_wait_and_everyone_gets_an_answer() {
    for window in [1, 2, 8, 25] {
        for estimating in [Estimating::Configured, Estimating::Measured] {
            for (rate_per_min, mix) in [(2.0, Mix::Alternating), (6.0, Mix::Alternating), (20.0, Mix::Independent)] {
                let mut c = heavy_alternating(window);
                c.degraded_estimates = estimating;
                c.mix = mix;
                c.horizon_s = 5_000.0;
                for m in &mut c.models {
                    m.arrival_rate_per_s = rate_per_min / 60.0;
                }
                c.validate().unwrap();
                let r = simulate(&c);
                let name = format!("window {window}, {estimating:?}, {rate_per_min} req/min {mix:?}");
                assert!(r.wait_max_s <= 30.0, "{name}: a request started after {} s", r.wait_max_s);
                assert!((r.acceptance_rate + r.overloaded_rate - 1.0).abs() < 1e-12, "{name}");
                assert_eq!(r.loads, r.cold_loads + r.switches, "{name}");
            }
        }
    }
}

/// `degraded-bench`'s workload: a burst of 40 alternating requests resubmitted
/// 20 ms after a `queue_full`, one degraded worker, depth 25, max wait 30 s, a
/// 2.18 s load and a 0.13 s generation (the times that fit its two runs,
/// `ops/CAPACITY.md`), estimated as the worker does.
fn degraded_bench(window: usize) -> SimConfig {
    let mut c = SimConfig::with_models(ModelConfig::defaults(0.0, 0.0, 0));
    for m in &mut c.models {
        m.service.mean_s = 0.13;
        m.service.shape = Shape::Fixed;
    }
    c.switch_s = 2.18;
    c.burst = Some(Burst { requests: 40, retry_s: 0.02 });
    c.degraded_window = window;
    c.degraded_estimates = Estimating::Measured;
    c.horizon_s = 120.0;
    c
}

#[test]
fn the_degraded_bench_burst_gives_the_measured_load_counts() {
    let fifo = simulate(&degraded_bench(1));
    let window = simulate(&degraded_bench(8));
    // Measured (BENCHMARKS.md, 2026-11-30): FIFO 26 loads, 28 done, 12 wait_timeout;
    // window 8: 5 loads, 40 done.
    assert_eq!((fifo.arrivals, fifo.loads, fifo.served), (40, 26, 27), "{fifo:?}");
    assert_eq!((window.arrivals, window.loads, window.served), (40, 5, 40), "{window:?}");
    assert!(fifo.resubmits > 0 && window.resubmits > 0, "the burst overflows the queue in both modes");
    assert!(fifo.wait_max_s <= 30.0 && window.wait_max_s <= 30.0);
    // Knowing the costs from the start saves the one FIFO pick the worker makes
    // before it has measured the other model's load.
    let mut known = degraded_bench(8);
    known.degraded_estimates = Estimating::Configured;
    assert_eq!(simulate(&known).loads, 4);
}
