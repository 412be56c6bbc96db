//! What the checks share: options, the report's check record, settings for the demo
//! and heavy pipelines, requests, the engines as the workers build them, and memory
//! readings (NVML where a GPU is visible, else RSS).

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_consumer::args::Args;
use warmlane_consumer::managed::ManagedEngine;
use warmlane_consumer::memory::MemoryManager;
use warmlane_consumer::ort_engine::OrtEngine;
use warmlane_consumer::runner::RunnerEngine;
use warmlane_engine::memory;
use warmlane_engine::{LoadOptions, Provider};
use warmlane_shared::{Settings, ValidRequest};

/// The two heavy models the degraded checks alternate between.
pub(crate) const HEAVY: [&str; 2] = ["anisora", "phr00t"];

/// The usage line, printed for `--help` and with a flag error.
pub(crate) const USAGE: &str = "usage: gpu-check --provider cuda|cpu --report FILE [--facts FILE] [--heavy-dir DIR] [--mid-dir DIR] \
[--runner-exe FILE] [--bench-exe FILE] [--settings FILE] [--models-dir DIR] [--requests N] [--budget-s N] [--margin-mb N]";

/// Flags of `gpu-check` (see `main.rs` for their meaning).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Opts {
    pub(crate) provider: Provider,
    pub(crate) report: PathBuf,
    pub(crate) facts: Option<PathBuf>,
    pub(crate) heavy_dir: PathBuf,
    pub(crate) mid_dir: Option<PathBuf>,
    pub(crate) runner_exe: PathBuf,
    pub(crate) bench_exe: PathBuf,
    pub(crate) settings: PathBuf,
    pub(crate) models_dir: Option<PathBuf>,
    pub(crate) requests: usize,
    pub(crate) budget: Duration,
    pub(crate) margin_bytes: u64,
}

impl Opts {
    /// Parses the flags (pure: `exe_dir` is where the kit's other binaries are).
    pub(crate) fn parse(args: &[String], exe_dir: &Path) -> Result<Opts, String> {
        let mut o = Opts {
            provider: Provider::Cuda,
            report: PathBuf::from("gpu-report.json"),
            facts: None,
            heavy_dir: PathBuf::from(".cache/heavy-models"),
            mid_dir: None,
            runner_exe: exe_dir.join("warmlane-consumer"),
            bench_exe: exe_dir.join("engine-bench"),
            settings: PathBuf::from("inference_settings.json"),
            models_dir: None,
            requests: 20,
            budget: Duration::from_secs(340),
            margin_bytes: 2 << 30,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_string());
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let num =
                |what: &str| value.parse::<u64>().map_err(|_| format!("{what} must be a whole number, got `{value}`"));
            match flag.as_str() {
                "--provider" => {
                    o.provider = Provider::parse(value)
                        .ok_or_else(|| format!("--provider must be cpu or cuda, got `{value}`"))?
                }
                "--report" => o.report = value.into(),
                "--facts" => o.facts = Some(value.into()),
                "--heavy-dir" => o.heavy_dir = value.into(),
                "--mid-dir" => o.mid_dir = Some(value.into()),
                "--runner-exe" => o.runner_exe = value.into(),
                "--bench-exe" => o.bench_exe = value.into(),
                "--settings" => o.settings = value.into(),
                "--models-dir" => o.models_dir = Some(value.into()),
                "--requests" => o.requests = usize::try_from(num("--requests")?.clamp(2, 200)).unwrap_or(20),
                "--budget-s" => o.budget = Duration::from_secs(num("--budget-s")?),
                "--margin-mb" => {
                    o.margin_bytes = num("--margin-mb")?.checked_mul(1 << 20).ok_or("--margin-mb is too large")?
                }
                other => return Err(format!("unknown flag `{other}`")),
            }
        }
        Ok(o)
    }

    /// The provider's name, as flags and settings spell it.
    pub(crate) fn provider_name(&self) -> &'static str {
        self.provider.as_str()
    }

    /// True on the CUDA provider.
    pub(crate) fn gpu(&self) -> bool {
        self.provider == Provider::Cuda
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Every goal met.
    Passed,
    /// It ran, and a goal was missed.
    Failed,
    /// It could not run to the end (the error says why).
    Error,
    /// Not run (no time left in the budget).
    Skipped,
}

/// One check in the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    /// One line for the summary table.
    pub(crate) summary: String,
    /// What passing means, in numbers.
    pub(crate) goal: String,
    /// The measurements.
    pub(crate) figures: serde_json::Value,
    pub(crate) elapsed_s: f64,
}

impl Check {
    /// A check that could not run to the end.
    pub(crate) fn error(name: &'static str, goal: &str, message: String) -> Check {
        Check {
            name,
            status: Status::Error,
            summary: message,
            goal: goal.to_string(),
            figures: serde_json::Value::Null,
            elapsed_s: 0.0,
        }
    }

    /// Passed or failed by `met`.
    pub(crate) fn verdict(
        name: &'static str,
        met: bool,
        summary: String,
        goal: &str,
        figures: serde_json::Value,
    ) -> Check {
        let status = if met { Status::Passed } else { Status::Failed };
        Check { name, status, summary, goal: goal.to_string(), figures, elapsed_s: 0.0 }
    }
}

/// The settings with `provider` on every component; with `heavy`, anisora and phr00t
/// read from `<heavy>/<model>` and declare their real weight bytes.
pub(crate) fn settings(o: &Opts, heavy: Option<&Path>) -> Result<Arc<Settings>, String> {
    let text = std::fs::read_to_string(&o.settings).map_err(|e| format!("{}: {e}", o.settings.display()))?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", o.settings.display()))?;
    let models: Vec<String> = v["models"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    for m in &models {
        for role in ["text_encoder", "denoiser", "vae_decoder"] {
            v["models"][m]["pipeline"][role]["provider"] = o.provider_name().into();
        }
        if let Some(dir) = o.models_dir.as_ref().map(|d| d.join(m)).filter(|d| d.is_dir()) {
            v["models"][m]["pipeline"]["dir"] = absolute(&dir)?.into();
        }
    }
    if let Some(heavy) = heavy {
        for m in HEAVY {
            let dir = heavy.join(m);
            if !dir.join("denoiser.onnx").is_file() {
                return Err(format!("heavy pipeline {} missing (ops/gpu/check.sh generates it)", dir.display()));
            }
            v["models"][m]["pipeline"]["dir"] = absolute(&dir)?.into();
            v["models"][m]["memory"]["weights_bytes"] = dir_bytes(&dir).into();
        }
    }
    let base = o.settings.parent().map(Path::to_path_buf).unwrap_or_default();
    Settings::from_json(&v.to_string(), &o.settings, &base).map(Arc::new).map_err(|e| e.to_string())
}

fn absolute(dir: &Path) -> Result<String, String> {
    std::path::absolute(dir).map(|d| d.display().to_string()).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Bytes of the files in `dir` (a pipeline's weights: `.onnx` and external data).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// A validated request for `model` at `width` x `height` x `frames`.
pub(crate) fn request(
    settings: &Settings,
    model: &str,
    task: &str,
    size: (u32, u32, u32),
    seed: u64,
) -> Result<ValidRequest, String> {
    let (width, height, frames) = size;
    let body = serde_json::json!({
        "v": 1, "task_id": task, "model": model, "prompt": "a red fox running through fresh snow",
        "seed": seed, "width": width, "height": height, "frames": frames,
    });
    warmlane_shared::validate_json(&body, settings).map_err(|e| format!("request {task}: {}", e.rejection.message))
}

/// The worker's flags for a check's engine: this provider, `budget` bytes, parking.
fn worker_args(o: &Opts, lane: &str, budget: u64, park: u64) -> Result<Args, String> {
    use clap::Parser;
    let (budget, park) = (budget.to_string(), park.to_string());
    let argv = ["warmlane-consumer", "--lane", lane, "--provider", o.provider_name(), "--memory-budget-bytes", &budget];
    let mut argv: Vec<&str> = argv.to_vec();
    argv.extend(["--host-park-bytes", &park]);
    Args::try_parse_from(argv).map_err(|e| format!("worker flags: {e}"))
}

fn manager(args: &Args) -> Result<Arc<MemoryManager>, String> {
    MemoryManager::from_host(args.memory_budget_bytes.0, args.memory_margin_bytes, args.memory_policy())
        .map(Arc::new)
        .map_err(|e| format!("memory budget: {e}"))
}

/// The degraded worker's engine as `warmlane-consumer --lane degraded` builds it.
pub(crate) fn degraded_engine(
    o: &Opts,
    settings: &Arc<Settings>,
    budget: u64,
    park: u64,
) -> Result<Box<ManagedEngine<RunnerEngine>>, String> {
    let args = worker_args(o, "degraded", budget, park)?;
    warmlane_consumer::setup::degraded_engine(&args, settings, manager(&args)?, o.runner_exe.clone())
        .map_err(|e| warmlane_shared::error::Report(&e).to_string())
}

/// A lane worker's engine (in process) with explicit load options.
pub(crate) fn lane_engine(
    o: &Opts,
    settings: &Arc<Settings>,
    lane: &str,
    options: LoadOptions,
) -> Result<ManagedEngine<OrtEngine>, String> {
    let args = worker_args(o, lane, 1 << 40, 0)?;
    let options = LoadOptions { provider_override: Some(o.provider), ..options };
    let inner = OrtEngine::with_options(settings.clone(), options).map_err(|e| e.message)?;
    Ok(ManagedEngine::new(inner, settings.clone(), manager(&args)?))
}

/// Where memory readings come from on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    /// NVML: memory in use on GPU 0, all processes.
    Nvml,
    /// No GPU: the resident set of this process and its runner child.
    Rss,
}

/// The source for this run: NVML on the CUDA provider (an error when it does not
/// answer: the weights are on the device, so RSS would prove nothing), RSS on the CPU.
pub(crate) fn source(o: &Opts) -> Result<Source, String> {
    match (o.gpu(), memory::device_available()) {
        (false, _) => Ok(Source::Rss),
        (true, true) => Ok(Source::Nvml),
        (true, false) => Err("--provider cuda but NVML does not answer: device memory cannot be measured".into()),
    }
}

/// Memory in use now, by `source` (`runner`: the runner child's pid, 0 for none).
pub(crate) fn used_now(source: Source, runner: &AtomicU32) -> u64 {
    match source {
        Source::Nvml => memory::sample().device_used.unwrap_or(0),
        Source::Rss => {
            let pid = runner.load(Ordering::SeqCst);
            memory::rss_bytes() + if pid == 0 { 0 } else { memory::rss_of(pid).unwrap_or(0) }
        }
    }
}

/// The highest reading while it runs, sampled every 5 ms on a thread.
pub(crate) struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    /// Starts sampling.
    pub(crate) fn start(source: Source, runner: Arc<AtomicU32>) -> Peak {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    peak.fetch_max(used_now(source, &runner), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Peak { stop, peak, thread: Some(thread) }
    }

    /// The peak so far.
    pub(crate) fn now(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// Stops sampling; the peak.
    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.now()
    }
}

/// Bytes as MiB, for summaries.
pub(crate) fn mib(bytes: i64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// The median of `xs` (0 for none).
pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Time left before `deadline`.
pub(crate) fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A scratch directory for outputs, unique to this run.
pub(crate) fn scratch(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("warmlane-gpu-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Opts, String> {
        Opts::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), Path::new("/kit/bin"))
    }

    #[test]
    fn flags_parse_or_say_what_is_wrong() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.provider, o.requests, o.budget), (Provider::Cuda, 20, Duration::from_secs(340)));
        assert_eq!(o.runner_exe, Path::new("/kit/bin/warmlane-consumer"));
        let o = parse(&["--provider", "cpu", "--requests", "4", "--budget-s", "60", "--margin-mb", "1"]).unwrap();
        assert_eq!(
            (o.provider, o.requests, o.budget, o.margin_bytes),
            (Provider::Cpu, 4, Duration::from_secs(60), 1 << 20)
        );
        let cases = [
            (vec!["--provider", "rocm"], "--provider must be cpu or cuda, got `rocm`"),
            (vec!["--requests", "x"], "--requests must be a whole number, got `x`"),
            (vec!["--report"], "--report needs a value"),
            (vec!["--bogus", "1"], "unknown flag `--bogus`"),
        ];
        for (args, want) in cases {
            assert_eq!(parse(&args).unwrap_err(), want, "{args:?}");
        }
    }

    #[test]
    fn medians_and_sizes() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(mib(3 << 20), 3.0);
    }
}
