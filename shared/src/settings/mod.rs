//! `inference_settings.json`: the single source of truth for models, limits and lanes.
//!
//! Loaded once at start and checked; a bad file is an error that names the file,
//! the model and the field. Adding a model is a change to the file only.

pub mod broker;
pub mod pipeline;

pub use broker::{BrokerSettings, QueueType};
pub use pipeline::PipelineSettings;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole settings file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Format version of the file; 1.
    pub version: u32,
    /// The degraded shared worker's queue limits.
    pub degraded: DegradedSettings,
    /// Limits that apply to every dedicated lane.
    pub lanes: LaneSettings,
    /// How the queues are declared (queue type); optional.
    #[serde(default)]
    pub broker: BrokerSettings,
    /// Models by name; the name is the lane name and the routing key.
    pub models: BTreeMap<String, ModelSettings>,
    /// Directory the settings were read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file the settings were read from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Limits of the degraded queue (FR-017).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradedSettings {
    /// Ready messages the queue holds before the broker nacks publishes (25).
    pub max_depth: u32,
    /// Longest a message may wait before it is answered `wait_timeout` (30 000 ms).
    pub max_wait_ms: u64,
    /// Slack the backstop sweeper allows past a deadline before it answers itself.
    pub expiry_grace_ms: u64,
    /// Deliveries the degraded worker holds unacked and chooses among, serving the
    /// resident model first (1..=`max_depth`; 1, the default, is FIFO). The queue
    /// holds `max_depth - window + 1` ready messages, so ready plus held stays within
    /// `max_depth` (see [`DegradedSettings::queue_max_length`]).
    #[serde(default = "default_window")]
    pub window: u32,
}

fn default_window() -> u32 {
    1
}

impl DegradedSettings {
    /// The degraded queue's `x-max-length`: `max_depth - window + 1`, so that the
    /// ready messages plus the `window - 1` more the worker holds stay within `max_depth`.
    pub fn queue_max_length(&self) -> u32 {
        self.max_depth.saturating_sub(self.window) + 1
    }
}

/// Settings shared by the dedicated lanes and their workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneSettings {
    /// A request no lane worker took within this time moves to the degraded path (FR-021c).
    pub lane_wait_ms: u64,
    /// Ready messages a lane queue holds before publishes fall back to degraded.
    pub max_depth: u32,
    /// How often workers write their heartbeat.
    pub heartbeat_interval_ms: u64,
    /// A heartbeat older than this makes the worker count as gone.
    pub heartbeat_ttl_ms: u64,
    /// Deliveries of one message before it is treated as poison.
    pub max_attempts: u32,
    /// A lane worker starts a first delivery without claiming it in Redis and
    /// claims it (`processing`) once it has run this long; shorter runs go from
    /// `pending` to `done` directly. 0 claims every delivery before its run.
    #[serde(default = "default_late_claim_ms")]
    pub late_claim_ms: u64,
    /// Reply lists expire this long after the push (contract: 1 hour).
    pub reply_ttl_s: u64,
    /// Task hashes expire this long after the last update (contract: 24 hours).
    pub task_ttl_s: u64,
}

/// A numeric parameter: its default, whether it is fixed, and its range.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param<T> {
    /// Used when the request omits the field.
    pub default: T,
    /// When true, the request must carry exactly `default`.
    #[serde(default)]
    pub fixed: bool,
    /// Lowest accepted value.
    pub min: Option<T>,
    /// Highest accepted value.
    pub max: Option<T>,
    /// Values must be a multiple of this (sizes of latent grids).
    #[serde(default)]
    pub multiple_of: Option<T>,
}

/// Memory estimate of a model for the pre-flight budget check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryEstimate {
    /// Resident bytes of the loaded pipeline (weights plus sessions).
    pub weights_bytes: u64,
    /// Runtime bytes per output voxel (width x height x frames): latents and activations.
    pub runtime_bytes_per_voxel: u64,
}

/// One model and its rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Name shown to people.
    pub display_name: String,
    /// Whether a dedicated lane exists; without one every request goes degraded.
    #[serde(default = "default_true")]
    pub dedicated_lane: bool,
    /// Sampler steps.
    pub steps: Param<u32>,
    /// Classifier-free guidance scale.
    pub cfg: Param<f64>,
    /// Output width in pixels.
    pub width: Param<u32>,
    /// Output height in pixels.
    pub height: Param<u32>,
    /// Output frame count.
    pub frames: Param<u32>,
    /// Longest prompt in characters (at most the contract's 2000).
    pub prompt_max_chars: u32,
    /// Inference time limit; past it the task fails `inference_timeout`.
    pub inference_timeout_ms: u64,
    /// Memory estimate for the budget check.
    #[serde(default)]
    pub memory: MemoryEstimate,
    /// ONNX components of the pipeline.
    pub pipeline: PipelineSettings,
}

fn default_true() -> bool {
    true
}

/// Lane name reserved for the degraded shared worker; no model may take it.
pub const DEGRADED_LANE: &str = "degraded";
/// The contract's prompt limit in characters.
pub const PROMPT_LIMIT: u32 = 2000;

/// A settings problem, naming the file, the model and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SettingsError {
    /// The settings file.
    pub file: PathBuf,
    /// The model, when the problem is inside one.
    pub model: Option<String>,
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong, with the value.
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(model) = &self.model {
            write!(f, "model `{model}`, ")?;
        }
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

fn default_late_claim_ms() -> u64 {
    250
}

impl Settings {
    /// When the backstop may answer a task admitted to a warm lane at `admitted_at_ms`
    /// and not yet started: the lane's wait, then the degraded wait, plus the grace.
    pub fn lane_deadline_ms(&self, admitted_at_ms: u64) -> u64 {
        admitted_at_ms + self.lanes.lane_wait_ms + self.degraded.max_wait_ms + self.degraded.expiry_grace_ms
    }

    /// The same for a task published to the degraded queue at `routed_at_ms`.
    pub fn degraded_deadline_ms(&self, routed_at_ms: u64) -> u64 {
        routed_at_ms + self.degraded.max_wait_ms + self.degraded.expiry_grace_ms
    }

    /// Reads and checks the settings file.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let err = |field: &str, message: String| SettingsError {
            file: path.to_path_buf(),
            model: None,
            field: field.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err("(file)", format!("cannot read: {e}")))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Settings::from_json(&text, path, &base_dir)
    }

    /// Parses and checks settings text; `source` and `base_dir` are for messages and paths.
    pub fn from_json(text: &str, source: &Path, base_dir: &Path) -> Result<Settings, SettingsError> {
        let mut settings: Settings = serde_json::from_str(text).map_err(|e| SettingsError {
            file: source.to_path_buf(),
            model: None,
            field: field_of_serde_error(&e),
            message: e.to_string(),
        })?;
        settings.source = source.to_path_buf();
        settings.base_dir = base_dir.to_path_buf();
        let env = std::env::var(broker::QUEUE_TYPE_ENV).ok();
        settings.broker.queue_type =
            broker::queue_type_in_force(settings.broker.queue_type, env.as_deref()).map_err(|message| {
                SettingsError { file: source.to_path_buf(), model: None, field: "broker.queue_type".into(), message }
            })?;
        settings.check()?;
        Ok(settings)
    }

    /// The model's settings, if it exists.
    pub fn model(&self, name: &str) -> Option<&ModelSettings> {
        self.models.get(name)
    }

    /// Names of the models that have a dedicated lane.
    pub fn lane_models(&self) -> impl Iterator<Item = &str> {
        self.models.iter().filter(|(_, m)| m.dedicated_lane).map(|(n, _)| n.as_str())
    }

    fn check(&self) -> Result<(), SettingsError> {
        let top = |field: &str, message: String| SettingsError {
            file: self.source.clone(),
            model: None,
            field: field.to_string(),
            message,
        };
        if self.version != 1 {
            return Err(top("version", format!("must be 1, got {}", self.version)));
        }
        if self.degraded.max_depth == 0 {
            return Err(top("degraded.max_depth", "must be at least 1".into()));
        }
        if self.degraded.window == 0 || self.degraded.window > self.degraded.max_depth {
            return Err(top(
                "degraded.window",
                format!("must be 1..=degraded.max_depth ({}), got {}", self.degraded.max_depth, self.degraded.window),
            ));
        }
        if self.degraded.max_wait_ms == 0 {
            return Err(top("degraded.max_wait_ms", "must be at least 1".into()));
        }
        let l = &self.lanes;
        for (field, v) in [
            ("lanes.lane_wait_ms", l.lane_wait_ms),
            ("lanes.heartbeat_interval_ms", l.heartbeat_interval_ms),
            ("lanes.reply_ttl_s", l.reply_ttl_s),
            ("lanes.task_ttl_s", l.task_ttl_s),
            ("lanes.max_attempts", u64::from(l.max_attempts)),
            ("lanes.max_depth", u64::from(l.max_depth)),
        ] {
            if v == 0 {
                return Err(top(field, "must be at least 1".into()));
            }
        }
        if l.heartbeat_ttl_ms <= l.heartbeat_interval_ms {
            return Err(top(
                "lanes.heartbeat_ttl_ms",
                format!(
                    "must exceed lanes.heartbeat_interval_ms ({} <= {})",
                    l.heartbeat_ttl_ms, l.heartbeat_interval_ms
                ),
            ));
        }
        if self.models.is_empty() {
            return Err(top("models", "at least one model is required".into()));
        }
        for (name, model) in &self.models {
            model.check(name, &self.base_dir).map_err(|(field, message)| SettingsError {
                file: self.source.clone(),
                model: Some(name.clone()),
                field,
                message,
            })?;
        }
        Ok(())
    }
}

impl ModelSettings {
    fn check(&self, name: &str, base_dir: &Path) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((field.to_string(), message));
        let name_ok = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return bad("(name)", "model names are 1-32 characters of [a-z0-9_-]".into());
        }
        if name == DEGRADED_LANE {
            return bad("(name)", format!("`{DEGRADED_LANE}` is reserved for the degraded lane"));
        }
        check_param_u32("steps", &self.steps, 1)?;
        check_param_u32("width", &self.width, 1)?;
        check_param_u32("height", &self.height, 1)?;
        check_param_u32("frames", &self.frames, 1)?;
        let cfg = &self.cfg;
        if !cfg.default.is_finite() || cfg.default < 0.0 {
            return bad("cfg.default", format!("must be a finite number >= 0, got {}", cfg.default));
        }
        if let (Some(min), Some(max)) = (cfg.min, cfg.max) {
            if !(min.is_finite() && max.is_finite() && min <= cfg.default && cfg.default <= max) {
                return bad("cfg", format!("need min <= default <= max, got {min} <= {} <= {max}", cfg.default));
            }
        }
        if self.prompt_max_chars == 0 || self.prompt_max_chars > PROMPT_LIMIT {
            return bad("prompt_max_chars", format!("must be 1..={PROMPT_LIMIT}, got {}", self.prompt_max_chars));
        }
        if self.inference_timeout_ms == 0 {
            return bad("inference_timeout_ms", "must be at least 1".into());
        }
        let pixels = self.pipeline.pixel_multiple();
        for (field, param) in [("width", &self.width), ("height", &self.height)] {
            match param.multiple_of {
                Some(m) if !m.is_multiple_of(pixels.max(1)) => {
                    return bad(
                        &format!("{field}.multiple_of"),
                        format!(
                            "must be a multiple of {pixels} (pipeline.spatial_downsample x pipeline.latent_multiple), \
                             got {m}"
                        ),
                    );
                }
                _ => {}
            }
        }
        self.pipeline.check(base_dir).map_err(|(field, message)| (format!("pipeline.{field}"), message))
    }
}

fn check_param_u32(field: &str, p: &Param<u32>, floor: u32) -> Result<(), (String, String)> {
    let min = p.min.unwrap_or(floor);
    let max = p.max.unwrap_or(u32::MAX);
    if min < floor || min > max || p.default < min || p.default > max {
        return Err((
            field.to_string(),
            format!("need {floor} <= min <= default <= max, got min {min}, default {}, max {max}", p.default),
        ));
    }
    if let Some(m) = p.multiple_of {
        if m == 0 || !p.default.is_multiple_of(m) {
            return Err((format!("{field}.multiple_of"), format!("default {} is not a multiple of {m}", p.default)));
        }
    }
    Ok(())
}

fn field_of_serde_error(e: &serde_json::Error) -> String {
    // serde_json names the field in its message ("unknown field `x`", "missing field `y`").
    let text = e.to_string();
    text.split('`').nth(1).map(str::to_string).unwrap_or_else(|| format!("(line {}, column {})", e.line(), e.column()))
}

#[cfg(test)]
pub(crate) mod tests;
