//! The ONNX components of one model's pipeline, as written in `inference_settings.json`
//! under `models.<name>.pipeline`.
//!
//! Why here and not in the engine: the settings file is checked once at start by every
//! service (producer included, which has no ONNX Runtime), so a missing model file is
//! reported as a settings error naming the field before any worker starts. The engine
//! reads the same struct to load its sessions.
//!
//! Example:
//! ```json
//! { "dir": "models/anisora", "sampler": "flow_euler", "latent_channels": 4,
//!   "spatial_downsample": 8, "temporal_downsample": 1, "max_tokens": 32,
//!   "text_encoder": { "file": "text_encoder.onnx", "provider": "cpu", "placement": "offload_between_prompts" },
//!   "denoiser":     { "file": "denoiser.onnx", "provider": "cuda", "placement": "offload_when_idle" },
//!   "vae_decoder":  { "file": "vae_decoder.onnx", "provider": "cuda", "placement": "pinned" },
//!   "tokenizer": null }
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod io;
pub use io::{Guidance, Slot, TimestepSpacing};

/// The ONNX components of one model's pipeline and how to run them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// Directory of the component files, relative to the settings file's directory.
    pub dir: String,
    /// The sampler that drives the denoiser loop.
    pub sampler: Sampler,
    /// Channels of the video latent (`C` in `[1, C, F, h, w]`).
    pub latent_channels: u32,
    /// Pixels per latent cell along width and height (8 for Wan-style VAEs).
    pub spatial_downsample: u32,
    /// Frames per latent frame (1 for the demo models).
    pub temporal_downsample: u32,
    /// Flow-matching timestep shift (`t' = s*t / (1 + (s-1)*t)`); 1.0 is a plain linear
    /// schedule. Ignored by DDIM.
    #[serde(default = "default_shift")]
    pub flow_shift: f32,
    /// How the flow-matching steps are spaced; `uniform` by default.
    #[serde(default)]
    pub timestep_spacing: TimestepSpacing,
    /// How guidance runs the denoiser (`two_pass` or `batch`); `two_pass` by default.
    #[serde(default)]
    pub guidance: Guidance,
    /// Latent height and width must be multiples of this: the denoiser's spatial patch
    /// size (2 for Wan2.1), 1 by default. Pixels are then multiples of
    /// `spatial_downsample * latent_multiple`.
    #[serde(default = "default_one")]
    pub latent_multiple: u32,
    /// The text encoder: token ids -> embeddings.
    pub text_encoder: ComponentSettings,
    /// The denoiser, called once (or twice with guidance) per step.
    pub denoiser: ComponentSettings,
    /// The VAE decoder: latent -> RGB frames.
    pub vae_decoder: ComponentSettings,
    /// A `tokenizer.json` file; `null` uses the built-in deterministic hash tokenizer.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Prompt length in tokens, after padding or truncation.
    pub max_tokens: u32,
    /// Vocabulary size of the hash tokenizer (token ids lie in `[0, vocab_size)`).
    #[serde(default = "default_vocab")]
    pub vocab_size: u32,
}

/// One ONNX component of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// The `.onnx` file, relative to the pipeline `dir`.
    pub file: String,
    /// The execution provider to run it on.
    #[serde(default)]
    pub provider: Provider,
    /// When the memory manager may release it.
    #[serde(default)]
    pub placement: Placement,
    /// The graph's tensor names by slot ([`io`]); slots left out keep the demo names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub io: BTreeMap<Slot, String>,
}

/// ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// The CPU execution provider, always available.
    #[default]
    Cpu,
    /// The CUDA execution provider; falls back to CPU (loudly) when unavailable.
    Cuda,
}

impl Provider {
    /// Every provider, for parsers and tests.
    pub const ALL: [Provider; 2] = [Provider::Cpu, Provider::Cuda];

    /// The settings spelling, also used in logs and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        }
    }

    /// Parses the settings spelling (`cpu`, `cuda`), e.g. a `--provider` flag.
    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A component of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentRole {
    /// Token ids -> embeddings.
    TextEncoder,
    /// The model called in the sampler loop.
    Denoiser,
    /// Latent -> RGB frames.
    VaeDecoder,
}

impl ComponentRole {
    /// All roles in load order.
    pub const ALL: [ComponentRole; 3] =
        [ComponentRole::TextEncoder, ComponentRole::Denoiser, ComponentRole::VaeDecoder];

    /// The settings and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentRole::TextEncoder => "text_encoder",
            ComponentRole::Denoiser => "denoiser",
            ComponentRole::VaeDecoder => "vae_decoder",
        }
    }

    /// Parses the settings name (`text_encoder`, `denoiser`, `vae_decoder`).
    pub fn parse(s: &str) -> Option<ComponentRole> {
        ComponentRole::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Its position in [`ComponentRole::ALL`] (load order).
    pub fn index(self) -> usize {
        match self {
            ComponentRole::TextEncoder => 0,
            ComponentRole::Denoiser => 1,
            ComponentRole::VaeDecoder => 2,
        }
    }
}

/// When a component's session may be released to free memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Always resident while the pipeline is loaded.
    #[default]
    Pinned,
    /// May be released when the worker is idle (reloaded before the next job).
    OffloadWhenIdle,
    /// May be released right after each prompt is encoded.
    OffloadBetweenPrompts,
}

impl Placement {
    /// The settings spelling, also used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Pinned => "pinned",
            Placement::OffloadWhenIdle => "offload_when_idle",
            Placement::OffloadBetweenPrompts => "offload_between_prompts",
        }
    }
}

/// The sampler of the denoising loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Flow matching, Euler steps on the predicted velocity (Wan, AniSora).
    FlowEuler,
    /// Deterministic DDIM (eta = 0) on a predicted noise.
    Ddim,
}

fn default_shift() -> f32 {
    1.0
}

fn default_vocab() -> u32 {
    512
}

fn default_one() -> u32 {
    1
}

impl PipelineSettings {
    /// The pipeline directory resolved against `base_dir` (the settings file's directory).
    pub fn dir_path(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(&self.dir)
    }

    /// The settings of one component.
    pub fn component(&self, role: ComponentRole) -> &ComponentSettings {
        match role {
            ComponentRole::TextEncoder => &self.text_encoder,
            ComponentRole::Denoiser => &self.denoiser,
            ComponentRole::VaeDecoder => &self.vae_decoder,
        }
    }

    /// The tensor name the component `role` has for `slot` (see [`io::tensor_name`]).
    pub fn tensor(&self, role: ComponentRole, slot: Slot) -> Option<&str> {
        io::tensor_name(role, &self.component(role).io, slot)
    }

    /// Pixels per latent cell that a width or height must be a multiple of.
    pub fn pixel_multiple(&self) -> u32 {
        self.spatial_downsample.saturating_mul(self.latent_multiple)
    }

    /// Checks numbers and that every referenced file exists. Returns `(field, message)`
    /// for the first problem; the field is relative to the pipeline (e.g. `denoiser.file`).
    pub fn check(&self, base_dir: &Path) -> Result<(), (String, String)> {
        let positive = [
            ("latent_channels", self.latent_channels),
            ("spatial_downsample", self.spatial_downsample),
            ("temporal_downsample", self.temporal_downsample),
            ("max_tokens", self.max_tokens),
            ("vocab_size", self.vocab_size),
            ("latent_multiple", self.latent_multiple),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field.into(), "must be at least 1, got 0".into()));
            }
        }
        if self.max_tokens > 4096 {
            return Err(("max_tokens".into(), format!("must be at most 4096, got {}", self.max_tokens)));
        }
        if !(self.flow_shift.is_finite() && self.flow_shift > 0.0) {
            return Err(("flow_shift".into(), format!("must be finite and > 0, got {}", self.flow_shift)));
        }
        for role in ComponentRole::ALL {
            io::check_io(role, &self.component(role).io)
                .map_err(|(field, message)| (format!("{}.{field}", role.as_str()), message))?;
        }
        let dir = self.dir_path(base_dir);
        if !dir.is_dir() {
            return Err(("dir".into(), format!("directory {} does not exist", dir.display())));
        }
        for role in ComponentRole::ALL {
            let path = dir.join(&self.component(role).file);
            if !path.is_file() {
                return Err((
                    format!("{}.file", role.as_str()),
                    format!("ONNX file {} does not exist", path.display()),
                ));
            }
        }
        if let Some(tokenizer) = &self.tokenizer {
            let path = dir.join(tokenizer);
            if !path.is_file() {
                return Err(("tokenizer".into(), format!("tokenizer file {} does not exist", path.display())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_parse_back() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        for (i, r) in ComponentRole::ALL.into_iter().enumerate() {
            assert_eq!((ComponentRole::parse(r.as_str()), r.index()), (Some(r), i));
        }
        assert_eq!(Provider::parse("rocm"), None);
        assert_eq!(ComponentRole::parse("unet"), None);
    }

    fn sample() -> PipelineSettings {
        serde_json::from_str(
            r#"{ "dir": "models/anisora", "sampler": "flow_euler", "latent_channels": 4,
                 "spatial_downsample": 8, "temporal_downsample": 1, "max_tokens": 32,
                 "text_encoder": { "file": "text_encoder.onnx", "placement": "offload_between_prompts" },
                 "denoiser": { "file": "denoiser.onnx", "provider": "cuda", "placement": "offload_when_idle" },
                 "vae_decoder": { "file": "vae_decoder.onnx", "provider": "cuda", "placement": "pinned" },
                 "tokenizer": null }"#,
        )
        .expect("sample parses")
    }

    #[test]
    fn parses_with_defaults() {
        let p = sample();
        assert_eq!(p.text_encoder.provider, Provider::Cpu);
        assert_eq!(p.denoiser.provider, Provider::Cuda);
        assert_eq!(p.flow_shift, 1.0);
        assert_eq!(p.vocab_size, 512);
    }

    #[test]
    fn rejects_unknown_fields() {
        let text = r#"{ "dir": "x", "sampler": "ddim", "latent_channels": 4, "spatial_downsample": 8,
            "temporal_downsample": 1, "max_tokens": 8, "bogus": 1,
            "text_encoder": {"file": "a"}, "denoiser": {"file": "b"}, "vae_decoder": {"file": "c"} }"#;
        assert!(serde_json::from_str::<PipelineSettings>(text).is_err());
    }

    #[test]
    fn check_names_the_missing_file() {
        let dir = std::env::temp_dir().join(format!("warmlane-pipeline-check-{}", std::process::id()));
        let models = dir.join("models/anisora");
        std::fs::create_dir_all(&models).expect("tmp dir");
        std::fs::write(models.join("text_encoder.onnx"), b"x").expect("write");
        let err = sample().check(&dir).expect_err("denoiser missing");
        assert_eq!(err.0, "denoiser.file");
        let mut zero = sample();
        zero.latent_channels = 0;
        assert_eq!(zero.check(&dir).expect_err("zero").0, "latent_channels");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
