//! The degraded worker's checks: release after each runner exit (check 2), SC-001
//! (check 3) over one alternation of heavy requests, and switch time against a cold
//! load (check 6).

use crate::common::{self, median, mib, Check, Opts, Source, HEAVY};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use warmlane_consumer::runner::release::SwapTimings;
use warmlane_consumer::Engine;
use warmlane_engine::memory::delta;
use warmlane_shared::{ErrorCode, Settings};

/// A reading after a runner exit may differ from the floor by this much (issue #17).
pub(crate) const DRIFT_TOLERANCE: i64 = 64 << 20;
/// A parked switch meets the fast-switching target at or under this share of a cold one.
pub(crate) const SWITCH_TARGET: f64 = 0.3;

/// One request of the alternation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    pub(crate) model: &'static str,
    /// `ok`, or the error code of the reply.
    pub(crate) code: String,
    pub(crate) inference_ms: u64,
    /// The switch before it (prepare of another model), ms; `None` without a switch.
    pub(crate) switch_ms: Option<f64>,
    /// That switch loaded parked bytes.
    pub(crate) parked: bool,
    /// Reading right after the previous runner's exit minus the floor, bytes.
    pub(crate) drift_bytes: Option<i64>,
    /// Where the switch's time went (stop, release check, session, warm-up).
    pub(crate) swap: Option<SwapTimings>,
}

/// What one alternation of heavy requests measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Alternation {
    pub(crate) source: Source,
    /// Reading before any runner held a pipeline.
    pub(crate) floor_bytes: u64,
    pub(crate) weights_bytes: [u64; 2],
    pub(crate) budget_bytes: u64,
    pub(crate) peak_bytes: u64,
    pub(crate) outcomes: Vec<Outcome>,
    /// Reading after the last runner was released.
    pub(crate) end_drift_bytes: i64,
    /// Requests not run because the time budget ran out.
    pub(crate) not_run: usize,
}

impl Alternation {
    fn ooms(&self) -> usize {
        self.outcomes.iter().filter(|o| o.code == ErrorCode::GpuOom.as_str()).count()
    }
}

/// 20 alternating requests (by default) through the degraded worker's engine, under
/// a budget that holds the larger pipeline but not both; parking on.
pub(crate) fn alternate(o: &Opts, settings: &Arc<Settings>, deadline: Instant) -> Result<Alternation, String> {
    let weights = HEAVY.map(|m| settings.model(m).map_or(0, |s| s.memory.weights_bytes));
    let budget = weights.iter().max().copied().unwrap_or(0) + o.margin_bytes;
    let park = 2 * weights.iter().sum::<u64>() + (1 << 30);
    let mut engine = common::degraded_engine(o, settings, budget, park)?;
    let source = common::source(o)?;
    let pid = engine.inner().pid_handle();
    let floor = common::used_now(source, &pid);
    let peak = common::Peak::start(source, pid.clone());
    let out = common::scratch("degraded")?;
    let mut outcomes = Vec::new();
    for i in 0..o.requests {
        if common::left(deadline).is_zero() {
            break;
        }
        let model = HEAVY[i % 2];
        let req = common::request(settings, model, &format!("gpu-check-{i}"), (64, 64, 8), i as u64)?;
        let parked_before = engine.inner().parked_loads();
        let switch = engine.prepare(model);
        let swap = engine.inner().last_swap();
        let drift = match source {
            Source::Nvml => swap.device_used_after_stop.map(|u| delta(floor, u)),
            Source::Rss => (swap.worker_rss_after_stop > 0).then(|| delta(floor, swap.worker_rss_after_stop)),
        };
        let result = switch
            .and_then(|_| engine.generate(&req, "degraded", &out, &mut |_, _| std::ops::ControlFlow::Continue(())));
        outcomes.push(Outcome {
            model,
            code: result.as_ref().map_or_else(|f| f.code.as_str().to_string(), |_| "ok".into()),
            inference_ms: result.as_ref().map_or(0, |r| r.inference_ms),
            switch_ms: (i > 0).then_some(swap.total_ms),
            parked: engine.inner().parked_loads() > parked_before,
            drift_bytes: if i > 0 { drift } else { None },
            swap: (i > 0).then_some(swap),
        });
        if let Err(f) = result {
            tracing::warn!(request = i, model, code = f.code.as_str(), error = %f.message, "request failed");
        }
    }
    engine.release();
    let end = common::used_now(source, &pid);
    let peak_bytes = peak.finish();
    let _ = std::fs::remove_dir_all(&out);
    let not_run = o.requests - outcomes.len();
    Ok(Alternation {
        source,
        floor_bytes: floor,
        weights_bytes: weights,
        budget_bytes: budget,
        peak_bytes,
        outcomes,
        end_drift_bytes: delta(floor, end),
        not_run,
    })
}

/// Check 2's verdict (pure): every switch has a reading within the tolerance.
pub(crate) fn drift_met(drifts: &[Option<i64>], tolerance: i64) -> bool {
    !drifts.is_empty() && drifts.iter().all(|d| d.is_some_and(|d| d.abs() <= tolerance))
}

/// Check 2: memory back at the floor after each runner exit.
pub(crate) fn release_check(a: &Alternation) -> Check {
    let drifts: Vec<Option<i64>> = a.outcomes.iter().skip(1).map(|o| o.drift_bytes).collect();
    let worst = drifts.iter().flatten().map(|d| d.abs()).max().unwrap_or(0);
    let met = drift_met(&drifts, DRIFT_TOLERANCE) && a.end_drift_bytes.abs() <= DRIFT_TOLERANCE && a.not_run == 0;
    let what = match a.source {
        Source::Nvml => "NVML device memory in use",
        Source::Rss => "worker RSS (no GPU: the CPU form of the floor)",
    };
    let summary = format!(
        "{} switches: worst drift {:+.1} MiB from the floor ({what}); after the last release {:+.1} MiB",
        drifts.len(),
        mib(worst),
        mib(a.end_drift_bytes)
    );
    let figures = serde_json::json!({
        "source": a.source, "floor_bytes": a.floor_bytes, "drift_bytes": drifts,
        "worst_drift_bytes": worst, "end_drift_bytes": a.end_drift_bytes, "not_run": a.not_run,
    });
    Check::verdict("release_after_exit", met, summary, "after every runner exit, drift 0 ± 64 MiB", figures)
}

/// Check 3's verdict (pure): no `gpu_oom`, every request served, peak growth within
/// the larger pipeline plus the margin.
pub(crate) fn sc001_met(ooms: usize, failures: usize, growth: i64, larger: u64, margin: u64) -> bool {
    ooms == 0 && failures == 0 && growth <= i64::try_from(larger + margin).unwrap_or(i64::MAX)
}

/// Check 3: SC-001 on this device.
pub(crate) fn sc001_check(a: &Alternation, margin: u64) -> Check {
    let larger = a.weights_bytes.iter().max().copied().unwrap_or(0);
    let growth = delta(a.floor_bytes, a.peak_bytes);
    let failures = a.outcomes.iter().filter(|o| o.code != "ok").count() + a.not_run;
    let met = sc001_met(a.ooms(), failures, growth, larger, margin);
    let summary = format!(
        "{} requests ({} not run), {} gpu_oom, {} other failures; peak {:.0} MiB over the floor vs larger pipeline {:.0} MiB + margin {:.0} MiB",
        a.outcomes.len(),
        a.not_run,
        a.ooms(),
        failures - a.ooms() - a.not_run,
        mib(growth),
        mib(larger as i64),
        mib(margin as i64)
    );
    let figures = serde_json::json!({
        "source": a.source, "weights_bytes": a.weights_bytes, "budget_bytes": a.budget_bytes,
        "floor_bytes": a.floor_bytes, "peak_bytes": a.peak_bytes, "peak_growth_bytes": growth,
        "margin_bytes": margin, "outcomes": a.outcomes,
    });
    let goal = "0 gpu_oom over the alternation; peak ≤ the larger pipeline + margin over the floor";
    Check::verdict("sc001", met, summary, goal, figures)
}

/// Four switches between the pipelines of `settings`: with parking off (every switch a
/// cold load) or on (both pipelines parked first; only switches that loaded parked
/// bytes are kept).
fn switches(
    o: &Opts,
    settings: &Arc<Settings>,
    budget: u64,
    parked: bool,
    deadline: Instant,
) -> Result<Vec<SwapTimings>, String> {
    let weights: u64 = HEAVY.iter().map(|m| settings.model(m).map_or(0, |s| s.memory.weights_bytes)).sum();
    let park = if parked { 2 * weights + (1 << 30) } else { 0 };
    let mut engine = common::degraded_engine(o, settings, budget, park)?;
    let first = if parked { &HEAVY[..] } else { &HEAVY[..1] };
    for m in first {
        engine.prepare(m).map_err(|f| f.message)?;
    }
    let mut resident = first.len() - 1;
    let mut times = Vec::new();
    for _ in 0..4 {
        if common::left(deadline).is_zero() {
            break;
        }
        resident = 1 - resident;
        let before = engine.inner().parked_loads();
        engine.prepare(HEAVY[resident]).map_err(|f| f.message)?;
        if !parked || engine.inner().parked_loads() > before {
            times.push(engine.inner().last_swap());
        }
    }
    engine.release();
    Ok(times)
}

/// Mean of each part of the switches' time, ms.
fn breakdown(t: &[SwapTimings]) -> serde_json::Value {
    let m = SwapTimings::mean(t);
    serde_json::json!({
        "stop_ms": m.stop_ms, "confirm_ms": m.confirm_ms, "session_ms": m.session_ms, "warmup_ms": m.warmup_ms,
        "other_ms": m.other_ms(), "total_ms": m.total_ms,
    })
}

/// One pair's switch figures: cold against parked, and the larger pipeline's copy
/// time at the pinned host-to-device rate.
fn pair_figures(
    cold: &[SwapTimings],
    parked: &[SwapTimings],
    weights: [u64; 2],
    pinned: Option<f64>,
) -> serde_json::Value {
    let ms = |t: &[SwapTimings]| t.iter().map(|x| x.total_ms).collect::<Vec<f64>>();
    let (cold_ms, parked_ms) = (ms(cold), ms(parked));
    let (c, p) = (median(&cold_ms), median(&parked_ms));
    let ratio = (c > 0.0 && !parked.is_empty()).then(|| p / c);
    let copy_ms = pinned.map(|gbps| weights.iter().max().copied().unwrap_or(0) as f64 / 1e9 / gbps * 1e3);
    serde_json::json!({
        "weights_bytes": weights, "cold_switch_ms": cold_ms, "parked_switch_ms": parked_ms,
        "cold_median_ms": c, "parked_median_ms": p, "ratio": ratio, "larger_pipeline_copy_ms_at_pinned": copy_ms,
        "cold_breakdown": breakdown(cold), "parked_breakdown": breakdown(parked),
    })
}

fn pair_line(name: &str, f: &serde_json::Value) -> String {
    let mb =
        f["weights_bytes"].as_array().map(|w| w.iter().filter_map(serde_json::Value::as_u64).max().unwrap_or(0) >> 20);
    let (c, p) = (f["cold_median_ms"].as_f64().unwrap_or(0.0), f["parked_median_ms"].as_f64().unwrap_or(0.0));
    let copy = f["larger_pipeline_copy_ms_at_pinned"]
        .as_f64()
        .map(|ms| format!(", pinned H2D copy alone {ms:.0} ms"))
        .unwrap_or_default();
    let parts = |b: &serde_json::Value| {
        let v = |k: &str| b[k].as_f64().unwrap_or(0.0);
        format!("session {:.0} + warm-up {:.0} ms", v("session_ms"), v("warmup_ms"))
    };
    let copy = format!("{copy}; cold {}, parked {}", parts(&f["cold_breakdown"]), parts(&f["parked_breakdown"]));
    match f["ratio"].as_f64() {
        Some(r) => format!("{name} ({} MiB): parked {p:.0} ms vs cold {c:.0} ms ({r:.2}x{copy})", mb.unwrap_or(0)),
        None => format!(
            "{name} ({} MiB): no parked switch (over the 2 GiB ORT form), cold {c:.0} ms{copy}",
            mb.unwrap_or(0)
        ),
    }
}

/// Check 6: switch time against a cold load, beside the pinned host-to-device
/// bandwidth: the heavy pair (the alternation's switches; parts over 2 GiB are not
/// parked) and, where given, a parkable mid-size pair. The verdict is the mid pair's
/// where there is one, else the heavy pair's.
pub(crate) fn switch_check(
    o: &Opts,
    settings: &Arc<Settings>,
    a: &Alternation,
    facts: &serde_json::Value,
    deadline: Instant,
) -> Result<Check, String> {
    let pinned = facts.get("pinned_h2d_gbps").and_then(serde_json::Value::as_f64);
    let cold = switches(o, settings, a.budget_bytes, false, deadline)?;
    let parked: Vec<SwapTimings> = a.outcomes.iter().filter(|x| x.parked).filter_map(|x| x.swap).collect();
    let heavy = pair_figures(&cold, &parked, a.weights_bytes, pinned);
    let mid = match &o.mid_dir {
        Some(dir) => {
            let mid = common::settings(o, Some(dir))?;
            let weights = HEAVY.map(|m| mid.model(m).map_or(0, |s| s.memory.weights_bytes));
            let budget = weights.iter().max().copied().unwrap_or(0) + o.margin_bytes;
            let cold = switches(o, &mid, budget, false, deadline)?;
            let parked = switches(o, &mid, budget, true, deadline)?;
            Some(pair_figures(&cold, &parked, weights, pinned))
        }
        None => None,
    };
    let judged = mid.as_ref().unwrap_or(&heavy);
    let met = judged["ratio"].as_f64().is_some_and(|r| r <= SWITCH_TARGET);
    let mut summary = pair_line("heavy", &heavy);
    if let Some(m) = &mid {
        summary = format!("{}; {summary}", pair_line("mid", m));
    }
    let figures = serde_json::json!({
        "heavy": heavy, "mid": mid, "pinned_h2d_gbps": pinned, "pageable_h2d_gbps": facts.get("pageable_h2d_gbps"),
        "judged": if mid.is_some() { "mid" } else { "heavy" },
    });
    Ok(Check::verdict("switch_time", met, summary, "parked switch ≤ 0.3 × cold switch", figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_verdicts() {
        let t = 64 << 20;
        let cases: [(&[Option<i64>], bool); 5] = [
            (&[Some(0), Some(-(1 << 20)), Some(t)], true),
            (&[Some(0), Some(t + 1)], false),
            (&[Some(0), None], false),
            (&[Some(-t - 1)], false),
            (&[], false),
        ];
        for (drifts, want) in cases {
            assert_eq!(drift_met(drifts, t), want, "{drifts:?}");
        }
    }

    #[test]
    fn sc001_verdicts() {
        let cases = [
            ((0, 0, 10, 8, 2), true),
            ((0, 0, 11, 8, 2), false),
            ((1, 1, 5, 8, 2), false),
            ((0, 1, 5, 8, 2), false),
            ((0, 0, -3, 8, 2), true),
        ];
        for ((ooms, failures, growth, larger, margin), want) in cases {
            assert_eq!(sc001_met(ooms, failures, growth, larger, margin), want);
        }
    }
}
