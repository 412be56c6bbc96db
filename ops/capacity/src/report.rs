//! Rendering of results as Markdown tables (for `ops/CAPACITY.md`) or JSON.
//!
//! Formatting is kept apart from the simulation so the figures a test
//! asserts on are the same values a table prints, only rounded here.

use crate::config::SimConfig;
use crate::grid::GridRow;
use crate::sizing::{Sizing, Target};
use crate::stats::Report;
use std::fmt::Write as _;

const HEADER: &str = "| scenario | offered Erl (A+P) | accepted % | p50 wait s | p95 wait s | p95 latency s | overloaded % (full / timeout) | via degraded % | warm util % | degraded util % | GPU-h / 1k req | switches / 1k req |\n\
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "-".to_string(), f)
}

fn line(out: &mut String, scenario: &str, cfg: &SimConfig, r: &Report) {
    let erl: Vec<String> = cfg.models.iter().map(|m| format!("{:.2}", m.offered_erlangs())).collect();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {} ({} / {}) | {} | {} | {} | {} | {:.1} |",
        scenario,
        erl.join("+"),
        pct(r.acceptance_rate),
        r.wait_p50_s,
        r.wait_p95_s,
        r.latency_p95_s,
        pct(r.overloaded_rate),
        pct(r.queue_full_rate),
        pct(r.wait_timeout_rate),
        pct(r.degraded_share),
        opt(r.warm_utilization, pct),
        pct(r.degraded_utilization),
        opt(r.gpu_hours_per_1k, |x| format!("{x:.2}")),
        r.switches_per_1k,
    );
}

/// The grid as Markdown, one table per section.
pub fn grid_markdown(rows: &[GridRow]) -> String {
    let mut out = String::new();
    let mut section = "";
    for row in rows {
        if row.section != section {
            section = row.section;
            let _ = writeln!(out, "\n#### {}\n", section_title(section));
            out.push_str(HEADER);
        }
        line(&mut out, &row.scenario, &row.config, &row.report);
    }
    out
}

fn section_title(section: &str) -> &'static str {
    match section {
        "small" => "Small fleet: warm workers per lane x load (independent Poisson per model)",
        "outage" => "Lane outages (capacity/quota): unavailable lanes route new requests to degraded",
        "alternating" => "Degraded only, strictly alternating models (worst case for switching)",
        "fleet" => "Large fleets (RabbitMQ cluster, quorum queues: admission delay per publish)",
        _ => "Other",
    }
}

/// One configuration as a Markdown table with per-model rows.
pub fn single_markdown(cfg: &SimConfig, r: &Report) -> String {
    let mut out = String::from(HEADER);
    line(&mut out, "all models", cfg, r);
    for (m, pm) in cfg.models.iter().zip(&r.per_model) {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {:.2} | {:.2} | {:.1} | {} ({} / {}) | {} | {} | - | - | - |",
            pm.name,
            m.offered_erlangs(),
            pct(pm.acceptance_rate),
            pm.wait_p50_s,
            pm.wait_p95_s,
            pm.latency_p95_s,
            pct(pm.queue_full_rate + pm.wait_timeout_rate),
            pct(pm.queue_full_rate),
            pct(pm.wait_timeout_rate),
            pct(pm.degraded_share),
            opt(pm.warm_utilization, pct),
        );
    }
    let _ = writeln!(
        out,
        "\nDegraded worker (window {}): {} loads ({} cold + {} switches); {} served in {:.1} s, {:.3} req/s, \
         wait p99 {:.2} s; {} burst resubmissions after `queue_full`.",
        cfg.degraded_window,
        r.loads,
        r.cold_loads,
        r.switches,
        r.served,
        r.elapsed_s,
        r.throughput_per_s,
        r.wait_p99_s,
        r.resubmits,
    );
    out
}

/// Sizing answers as Markdown: one row per load level.
pub fn sizing_markdown(target: &Target, rows: &[(f64, Option<Sizing>)]) -> String {
    let mut out = format!(
        "Target per lane: p95 wait <= {} s, accepted >= {}%.\n\n\
         | load req/min per model | offered Erl (A+P) | warm workers (A / P) | p95 wait s (A / P) | accepted % | warm util % | GPU-h / 1k req |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
        target.p95_wait_s,
        pct(target.min_acceptance),
    );
    for (load, sizing) in rows {
        let Some(s) = sizing else {
            let _ = writeln!(out, "| {load} | - | unreachable | - | - | - | - |");
            continue;
        };
        let erl: Vec<String> = s.config.models.iter().map(|m| format!("{:.2}", m.offered_erlangs())).collect();
        let warm: Vec<String> = s.warm_workers.iter().map(ToString::to_string).collect();
        let p95: Vec<String> = s.report.per_model.iter().map(|m| format!("{:.2}", m.wait_p95_s)).collect();
        let _ = writeln!(
            out,
            "| {load} | {} | {} | {} | {} | {} | {} |",
            erl.join("+"),
            warm.join(" / "),
            p95.join(" / "),
            pct(s.report.acceptance_rate),
            opt(s.report.warm_utilization, pct),
            opt(s.report.gpu_hours_per_1k, |x| format!("{x:.2}")),
        );
    }
    out
}
