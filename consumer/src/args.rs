//! Flags of `warmlane-consumer`; every flag also reads from the environment.

use crate::memory::policy::{BetweenPrompts, Policy};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use warmlane_infra::config::{ConnectArgs, TelemetryArgs};

/// A warmlane worker.
#[derive(Debug, Clone, Parser)]
#[command(name = "warmlane-consumer", version, about = "warmlane lane and degraded workers")]
pub struct Args {
    /// Broker, Redis, prefix and settings.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Lane to serve: a model name for its dedicated lane, or `degraded`.
    #[arg(long, env = "WARMLANE_LANE")]
    pub lane: Option<String>,
    /// Directory the videos are written to (shared with the HTTP shim).
    #[arg(long, env = "WARMLANE_RESULTS_DIR", default_value = "results")]
    pub results_dir: PathBuf,
    /// Where results are kept: `file:///abs/dir` or `s3://bucket/prefix` (S3 settings
    /// from the AWS_* environment; the results directory is then scratch). Default
    /// (also empty): the file store at `--results-dir`.
    #[arg(long, env = "WARMLANE_RESULTS_URL")]
    pub results_url: Option<String>,
    /// Delete results older than this many seconds; 0 keeps them forever. Default:
    /// the task hash's lifetime (`lanes.task_ttl_s`, 24 h), after which a task's
    /// status, and so its result link, is gone anyway. Swept every minute.
    #[arg(long, env = "WARMLANE_RESULTS_TTL_S")]
    pub results_ttl_s: Option<u64>,
    /// Worker id in heartbeats; a random one by default.
    #[arg(long, env = "WARMLANE_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Logging and metrics.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Serve Prometheus metrics at `http://<addr>/metrics` (`host:port`, e.g.
    /// `0.0.0.0:9100`), beside StatsD, and `/health` for container healthchecks (200
    /// while the heartbeat reaches Redis); off when unset. A bad address is a warning.
    #[arg(long, env = "WARMLANE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Execution provider for every component, overriding the settings (`cpu` or `cuda`).
    #[arg(long, env = "WARMLANE_PROVIDER")]
    pub provider: Option<String>,
    /// Unload the lane's model after this many seconds without a request (FR-019 idle eviction); 0 keeps it.
    #[arg(long, env = "WARMLANE_IDLE_EVICT_S", default_value_t = 0)]
    pub idle_evict_s: u64,
    /// Memory budget of this worker in bytes, or `auto` (also an empty value): the
    /// GPU's total (NVML), or the host's MemTotal without a GPU, minus
    /// `--memory-margin-bytes`. Workers sharing a GPU each need their share here.
    #[arg(long, env = "WARMLANE_MEMORY_BUDGET_BYTES", default_value = "auto")]
    pub memory_budget_bytes: BudgetArg,
    /// Safety margin kept out of a budget derived from the device or host total.
    #[arg(long, env = "WARMLANE_MEMORY_MARGIN_BYTES", default_value_t = crate::memory::budget::DEFAULT_MARGIN_BYTES)]
    pub memory_margin_bytes: u64,
    /// Free bytes below which idle, non-pinned components are evicted (LRU).
    #[arg(long, env = "WARMLANE_MEMORY_HEADROOM_BYTES", default_value_t = crate::memory::policy::DEFAULT_HEADROOM_BYTES)]
    pub memory_headroom_bytes: u64,
    /// Release `offload_when_idle` components (the denoiser) after this many idle seconds; 0 keeps them.
    #[arg(long, env = "WARMLANE_COMPONENT_IDLE_S", default_value_t = crate::memory::policy::DEFAULT_IDLE_RELEASE.as_secs())]
    pub component_idle_s: u64,
    /// When `offload_between_prompts` components (the text encoder) are released after a generation.
    #[arg(long, env = "WARMLANE_TEXT_ENCODER_RELEASE", value_enum, default_value_t = BetweenPromptsArg::OnDevice)]
    pub text_encoder_release: BetweenPromptsArg,
    /// Margin added to a model's `inference_timeout_ms` before a silent runner is killed.
    #[arg(long, env = "WARMLANE_RUNNER_DEADLINE_MARGIN_MS", default_value_t = 30_000)]
    pub runner_deadline_margin_ms: u64,
    /// Degraded worker: host memory for parked pipelines (their ORT form, kept so that a
    /// switch back maps it instead of loading the files); least recently used evicted
    /// first. Default a quarter of the host's MemTotal or of the container's memory
    /// limit, whichever is smaller; 0 turns parking off.
    #[arg(long, env = "WARMLANE_HOST_PARK_BYTES")]
    pub host_park_bytes: Option<u64>,
    /// Subcommand; without one the worker serves `--lane`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Check the settings file and exit.
    CheckSettings,
    /// Internal: the degraded worker's runner child, speaking frames on stdin/stdout.
    #[command(hide = true)]
    Runner {
        /// The model whose pipeline this runner holds; without it, the runner is a spare
        /// that learns its model from the first `Prepare`.
        #[arg(long)]
        model: Option<String>,
    },
}

/// `--memory-budget-bytes`: a number of bytes, or `auto` (empty too, so that a
/// compose file can pass `${VAR:-}` through) for the device or host total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetArg(pub Option<u64>);

impl std::str::FromStr for BudgetArg {
    type Err = String;

    fn from_str(s: &str) -> Result<BudgetArg, String> {
        match s.trim() {
            "" | "auto" => Ok(BudgetArg(None)),
            n => n
                .parse::<u64>()
                .map(|b| BudgetArg(Some(b)))
                .map_err(|_| format!("`{n}` is not a number of bytes or `auto` (e.g. 40000000000 for 40 GB)")),
        }
    }
}

/// `--text-encoder-release` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BetweenPromptsArg {
    /// After every generation.
    Always,
    /// After every generation when it runs on a GPU provider.
    OnDevice,
    /// Only when LRU eviction needs the memory.
    Never,
}

impl Args {
    /// The memory manager's policy from the flags.
    pub fn memory_policy(&self) -> Policy {
        Policy {
            headroom_bytes: self.memory_headroom_bytes,
            idle_release: (self.component_idle_s > 0).then(|| Duration::from_secs(self.component_idle_s)),
            between_prompts: match self.text_encoder_release {
                BetweenPromptsArg::Always => BetweenPrompts::Always,
                BetweenPromptsArg::OnDevice => BetweenPrompts::OnDevice,
                BetweenPromptsArg::Never => BetweenPrompts::Never,
            },
            ..Policy::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_flags_and_runner_subcommand() {
        let a = Args::try_parse_from([
            "warmlane-consumer",
            "--lane",
            "degraded",
            "--memory-budget-bytes",
            "1000",
            "--component-idle-s",
            "0",
        ])
        .expect("parses");
        assert_eq!(a.memory_budget_bytes, BudgetArg(Some(1000)));
        assert_eq!(a.host_park_bytes, None);
        assert_eq!(a.memory_margin_bytes, 1_500_000_000);
        let p = a.memory_policy();
        assert_eq!(p.idle_release, None);
        assert_eq!(p.between_prompts, BetweenPrompts::OnDevice);
        assert_eq!(p.max_oom_retries, 3);
        let r = Args::try_parse_from(["warmlane-consumer", "runner", "--model", "anisora"]).expect("runner parses");
        assert!(matches!(r.command, Some(Command::Runner { model: Some(model) }) if model == "anisora"));
    }

    #[test]
    fn budget_values() {
        let cases = [("auto", Some(None)), ("", Some(None)), (" 42 ", Some(Some(42))), ("40GB", None), ("-1", None)];
        for (text, want) in cases {
            assert_eq!(text.parse::<BudgetArg>().ok().map(|b| b.0), want, "{text:?}");
        }
        let a = Args::try_parse_from(["warmlane-consumer", "--lane", "anisora"]).expect("parses");
        assert_eq!(a.memory_budget_bytes, BudgetArg(None), "auto by default");
        let bad = Args::try_parse_from(["warmlane-consumer", "--memory-budget-bytes", "lots"]).expect_err("refused");
        assert!(bad.to_string().contains("`lots` is not a number of bytes or `auto`"), "{bad}");
    }
}
