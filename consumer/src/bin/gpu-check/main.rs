//! gpu-check: the GPU proof kit's checks (issue #17), run by `ops/gpu/check.sh` on a
//! GPU machine, and on the CPU (`--provider cpu`) as the kit's dry run in CI.
//!
//! 1. `cuda_provider`: demo, wan-tiny and heavy pipelines generate with every
//!    component on the provider; per-step time against bare `ort` (`engine-bench`).
//! 2. `release_after_exit`: over the alternation below, memory in use right after each
//!    runner exit against the floor before any runner (NVML; RSS on the CPU).
//! 3. `sc001`: N alternating requests (20 by default) between two heavy pipelines
//!    through the degraded worker's engine, under a budget that holds only the larger:
//!    0 `gpu_oom`, peak within the larger pipeline plus the margin.
//! 4. `real_oom`: the largest request under a capped CUDA arena; recovered within 3
//!    retries or answered `gpu_oom`, then the next request served.
//! 5. `arena`: a warm lane across mixed resolutions plateaus and shrinks.
//! 6. `switch_time`: parked switches against cold ones, beside pinned H2D bandwidth.
//!
//! The degraded checks drive the worker's engine (runner children, memory manager,
//! parking) without a broker: the GPU machine has none. The report is rewritten after
//! every check, so a run stopped by its time limit still leaves what it measured.
//!
//! Usage: `gpu-check --provider cuda|cpu --report FILE [--facts FILE] [--heavy-dir DIR]
//! [--mid-dir DIR] [--runner-exe FILE] [--bench-exe FILE] [--settings FILE] [--models-dir DIR]
//! [--requests N] [--budget-s N] [--margin-mb N]`. Exit 0 when every check passed, 1
//! when one did not, 2 on bad flags.

mod common;
mod degraded;
mod lane;

use common::{Check, Opts, Status};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// The checks in report order, with the goal shown while one has not run.
const CHECKS: [(&str, &str); 6] = [
    ("cuda_provider", "every component on the requested provider"),
    ("release_after_exit", "after every runner exit, drift 0 ± 64 MiB"),
    ("sc001", "0 gpu_oom; peak ≤ the larger pipeline + margin"),
    ("real_oom", "recovered within 3 retries or answered gpu_oom, then kept serving"),
    ("arena", "plateau across mixed resolutions, shrink after a small request"),
    ("switch_time", "parked switch ≤ 0.3 × cold switch"),
];

/// The report being written.
struct Report {
    opts: Opts,
    started: Instant,
    facts: serde_json::Value,
    device: serde_json::Value,
    checks: Vec<Check>,
}

impl Report {
    fn new(opts: Opts) -> Report {
        let facts = match &opts.facts {
            None => serde_json::Value::Null,
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| serde_json::json!({ "error": format!("{}: {e}", path.display()) })),
        };
        let sample = warmlane_engine::memory::sample();
        let device = serde_json::json!({
            "nvml": warmlane_engine::memory::device_available(),
            "total_bytes": warmlane_engine::memory::device_total_bytes(),
            "used_at_start_bytes": sample.device_used,
        });
        let checks = CHECKS
            .iter()
            .map(|(name, goal)| Check {
                name,
                status: Status::Skipped,
                summary: "not reached (time budget)".into(),
                goal: goal.to_string(),
                figures: serde_json::Value::Null,
                elapsed_s: 0.0,
            })
            .collect();
        Report { opts, started: Instant::now(), facts, device, checks }
    }

    fn set(&mut self, check: Check) {
        if let Some(slot) = self.checks.iter_mut().find(|c| c.name == check.name) {
            *slot = check;
        }
        if let Err(e) = self.write() {
            eprintln!("gpu-check: {e}");
        }
    }

    fn write(&self) -> Result<(), String> {
        let json = serde_json::json!({
            "kit": "warmlane gpu-check 1",
            "provider": self.opts.provider_name(),
            "requests": self.opts.requests,
            "budget_s": self.opts.budget.as_secs(),
            "elapsed_s": self.started.elapsed().as_secs_f64(),
            "device": self.device,
            "facts": self.facts,
            "checks": self.checks,
            "passed": self.checks.iter().all(|c| c.status == Status::Passed),
        });
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        let tmp = self.opts.report.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.opts.report).map_err(|e| format!("{}: {e}", self.opts.report.display()))
    }

    /// The end of the share of the budget that ends at `fraction` of it.
    fn mark(&self, fraction: f64) -> Instant {
        self.started + self.opts.budget.mul_f64(fraction)
    }
}

/// Runs `f`, timing it; a panic or an error becomes an `error` check.
fn timed(name: &'static str, f: impl FnOnce() -> Result<Vec<Check>, String>) -> Vec<Check> {
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
    let goal = CHECKS.iter().find(|(n, _)| *n == name).map_or("", |(_, g)| g);
    let mut checks = result.unwrap_or_else(|e| vec![Check::error(name, goal, e)]);
    for c in &mut checks {
        c.elapsed_s = started.elapsed().as_secs_f64();
    }
    checks
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

fn run(report: &mut Report) {
    let o = report.opts.clone();
    for c in timed("cuda_provider", || Ok(vec![lane::provider_check(&o, report.mark(0.2))])) {
        report.set(c);
    }
    let mut alternation = None;
    let until = report.mark(0.7);
    let checks = timed("sc001", || {
        let settings = common::settings(&o, Some(&o.heavy_dir))?;
        let a = degraded::alternate(&o, &settings, until)?;
        let checks = vec![degraded::release_check(&a), degraded::sc001_check(&a, o.margin_bytes)];
        alternation = Some((a, settings));
        Ok(checks)
    });
    if checks.len() == 1 {
        let message = checks[0].summary.clone();
        report.set(Check::error("release_after_exit", CHECKS[1].1, message));
    }
    checks.into_iter().for_each(|c| report.set(c));
    let demo = common::settings(&o, None);
    for c in timed("real_oom", || lane::oom_check(&o, demo.as_ref()?).map(|c| vec![c])) {
        report.set(c);
    }
    let until = report.mark(0.85);
    for c in timed("arena", || lane::arena_check(&o, demo.as_ref()?, until).map(|c| vec![c])) {
        report.set(c);
    }
    let (facts, until) = (report.facts.clone(), report.mark(1.0));
    for c in timed("switch_time", || match &alternation {
        Some((a, settings)) => degraded::switch_check(&o, settings, a, &facts, until).map(|c| vec![c]),
        None => Err("the alternation did not run, so there are no parked switches to compare".into()),
    }) {
        report.set(c);
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let opts = match Opts::parse(&args, &exe_dir) {
        Ok(o) => o,
        Err(e) if e == common::USAGE => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gpu-check: {e}\n{}", common::USAGE);
            return ExitCode::from(2);
        }
    };
    for (what, path) in
        [("--runner-exe", &opts.runner_exe), ("--bench-exe", &opts.bench_exe), ("--settings", &opts.settings)]
    {
        if !path.is_file() {
            eprintln!("gpu-check: {what} {} not found", path.display());
            return ExitCode::from(2);
        }
    }
    let mut report = Report::new(opts);
    if let Err(e) = report.write() {
        eprintln!("gpu-check: {e}");
        return ExitCode::from(2);
    }
    run(&mut report);
    for c in &report.checks {
        println!(
            "{:<20} {:<8} {:>6.1} s  {}",
            c.name,
            format!("{:?}", c.status).to_lowercase(),
            c.elapsed_s,
            c.summary
        );
    }
    println!("elapsed {:.1} s of a {} s budget", report.started.elapsed().as_secs_f64(), report.opts.budget.as_secs());
    let passed = report.checks.iter().all(|c| c.status == Status::Passed);
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
