//! The I/O contract of a pipeline's ONNX components: which tensor the engine feeds
//! or reads for each of its slots, and how the sampler drives the denoiser.
//!
//! Why settings and not constants: a real Wan2.1 export names its tensors after the
//! reference classes (`hidden_states`, `encoder_hidden_states`, `noise_pred`, ...),
//! our demo pipelines use short names (`latent`, `text_embeds`, `velocity`). The
//! engine speaks in slots; `io` maps a slot to the graph's tensor name, and a slot
//! left out keeps the demo name, so the demo settings need no `io` at all.
//!
//! Example (the `wan-tiny` denoiser):
//! ```json
//! "io": { "latent": "hidden_states", "timestep": "timestep",
//!         "text_embeds": "encoder_hidden_states", "prediction": "noise_pred" }
//! ```

use super::ComponentRole;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tensor the engine feeds to or reads from a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// Text encoder input: token ids `[B, T]` (int64 or int32).
    InputIds,
    /// Text encoder input, optional: 1 for tokens, 0 for padding `[B, T]`.
    AttentionMask,
    /// Text encoder output and denoiser input: embeddings `[B, T, D]`.
    TextEmbeds,
    /// Denoiser and VAE decoder input: the video latent `[B, C, F, h, w]`.
    Latent,
    /// Denoiser input: the timestep `[B]` (float32 or int64).
    Timestep,
    /// Denoiser output: the model's prediction, shaped like the latent.
    Prediction,
    /// VAE decoder output: RGB frames `[1, 3, F, H, W]` in [-1, 1].
    Video,
}

/// Whether a slot is fed to the graph or read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A graph input.
    Input,
    /// A graph output.
    Output,
}

/// One slot of a component: its direction, its default tensor name (`None`: an
/// optional input, fed only when named in `io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpec {
    /// The slot.
    pub slot: Slot,
    /// Input or output.
    pub direction: Direction,
    /// The demo pipelines' name, used when `io` leaves the slot out.
    pub default: Option<&'static str>,
}

const fn spec(slot: Slot, direction: Direction, default: Option<&'static str>) -> SlotSpec {
    SlotSpec { slot, direction, default }
}

const TEXT_ENCODER: [SlotSpec; 3] = [
    spec(Slot::InputIds, Direction::Input, Some("input_ids")),
    spec(Slot::AttentionMask, Direction::Input, None),
    spec(Slot::TextEmbeds, Direction::Output, Some("text_embeds")),
];
const DENOISER: [SlotSpec; 4] = [
    spec(Slot::Latent, Direction::Input, Some("latent")),
    spec(Slot::Timestep, Direction::Input, Some("timestep")),
    spec(Slot::TextEmbeds, Direction::Input, Some("text_embeds")),
    spec(Slot::Prediction, Direction::Output, Some("velocity")),
];
const VAE_DECODER: [SlotSpec; 2] =
    [spec(Slot::Latent, Direction::Input, Some("latent")), spec(Slot::Video, Direction::Output, Some("video"))];

impl Slot {
    /// The settings spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::InputIds => "input_ids",
            Slot::AttentionMask => "attention_mask",
            Slot::TextEmbeds => "text_embeds",
            Slot::Latent => "latent",
            Slot::Timestep => "timestep",
            Slot::Prediction => "prediction",
            Slot::Video => "video",
        }
    }

    /// The slots of a component, inputs first.
    pub fn of(role: ComponentRole) -> &'static [SlotSpec] {
        match role {
            ComponentRole::TextEncoder => &TEXT_ENCODER,
            ComponentRole::Denoiser => &DENOISER,
            ComponentRole::VaeDecoder => &VAE_DECODER,
        }
    }
}

/// How the denoiser's steps are spaced in time (flow matching).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `steps + 1` points evenly spaced from 1 to 0, each shifted (the demo pipelines).
    #[default]
    Uniform,
    /// `steps` points evenly spaced from 1 down to `shift(1/1000)`, each shifted, then
    /// 0: the flow-matching Euler scheduler of the Wan2.1 reference pipeline
    /// (diffusers' `FlowMatchEulerDiscreteScheduler`, 1000 training steps).
    ToSigmaMin,
}

/// How classifier-free guidance runs the denoiser when `cfg != 1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guidance {
    /// Two runs per step, conditional then unconditional (any batch size).
    #[default]
    TwoPass,
    /// One run per step on a batch of 2 (conditional, unconditional); the denoiser's
    /// batch dimension must be dynamic or 2.
    Batch,
}

/// Checks a component's `io` map: every key is a slot of `role` and every name is a
/// plausible tensor name. Returns `(field, message)` relative to the component.
pub fn check_io(role: ComponentRole, io: &BTreeMap<Slot, String>) -> Result<(), (String, String)> {
    let slots = Slot::of(role);
    for (slot, name) in io {
        if !slots.iter().any(|s| s.slot == *slot) {
            let valid: Vec<&str> = slots.iter().map(|s| s.slot.as_str()).collect();
            return Err((
                format!("io.{}", slot.as_str()),
                format!("not a slot of the {}; its slots are {}", role.as_str(), valid.join(", ")),
            ));
        }
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err((
                format!("io.{}", slot.as_str()),
                format!("must be a tensor name of 1-256 printable characters, got {name:?}"),
            ));
        }
    }
    Ok(())
}

/// The tensor name of `slot`: the configured one, else the default, else `None` (an
/// optional input left out, or a slot `role` does not have).
pub fn tensor_name(role: ComponentRole, io: &BTreeMap<Slot, String>, slot: Slot) -> Option<&str> {
    let spec = Slot::of(role).iter().find(|s| s.slot == slot)?;
    io.get(&slot).map(String::as_str).or(spec.default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(pairs: &[(Slot, &str)]) -> BTreeMap<Slot, String> {
        pairs.iter().map(|(s, n)| (*s, n.to_string())).collect()
    }

    #[test]
    fn names_default_to_the_demo_contract() {
        let empty = BTreeMap::new();
        let cases = [
            (ComponentRole::TextEncoder, Slot::InputIds, Some("input_ids")),
            (ComponentRole::TextEncoder, Slot::AttentionMask, None),
            (ComponentRole::TextEncoder, Slot::TextEmbeds, Some("text_embeds")),
            (ComponentRole::Denoiser, Slot::Prediction, Some("velocity")),
            (ComponentRole::Denoiser, Slot::Video, None),
            (ComponentRole::VaeDecoder, Slot::Latent, Some("latent")),
            (ComponentRole::VaeDecoder, Slot::Video, Some("video")),
        ];
        for (role, slot, want) in cases {
            assert_eq!(tensor_name(role, &empty, slot), want, "{role:?} {slot:?}");
        }
        let wan = io(&[(Slot::Latent, "hidden_states"), (Slot::Prediction, "noise_pred")]);
        assert_eq!(tensor_name(ComponentRole::Denoiser, &wan, Slot::Latent), Some("hidden_states"));
        assert_eq!(tensor_name(ComponentRole::Denoiser, &wan, Slot::Timestep), Some("timestep"));
        let masked = io(&[(Slot::AttentionMask, "attention_mask")]);
        assert_eq!(tensor_name(ComponentRole::TextEncoder, &masked, Slot::AttentionMask), Some("attention_mask"));
    }

    #[test]
    fn check_refuses_foreign_slots_and_odd_names() {
        type Case<'a> = (ComponentRole, &'a [(Slot, &'a str)], Option<&'a str>);
        let cases: [Case<'_>; 5] = [
            (ComponentRole::Denoiser, &[(Slot::Latent, "hidden_states")], None),
            (ComponentRole::TextEncoder, &[(Slot::AttentionMask, "attention_mask")], None),
            (ComponentRole::TextEncoder, &[(Slot::Timestep, "t")], Some("io.timestep")),
            (ComponentRole::VaeDecoder, &[(Slot::Video, "")], Some("io.video")),
            (ComponentRole::VaeDecoder, &[(Slot::Latent, "a\nb")], Some("io.latent")),
        ];
        for (role, pairs, want) in cases {
            let got = check_io(role, &io(pairs)).err().map(|(field, _)| field);
            assert_eq!(got.as_deref(), want, "{role:?} {pairs:?}");
        }
        let (_, message) = check_io(ComponentRole::TextEncoder, &io(&[(Slot::Timestep, "t")])).unwrap_err();
        assert!(message.contains("input_ids, attention_mask, text_embeds"), "{message}");
    }

    #[test]
    fn slots_parse_from_settings_spelling() {
        let parsed: BTreeMap<Slot, String> =
            serde_json::from_str(r#"{"input_ids": "ids", "attention_mask": "mask"}"#).expect("parses");
        assert_eq!(parsed.len(), 2);
        assert!(serde_json::from_str::<BTreeMap<Slot, String>>(r#"{"unet": "x"}"#).is_err());
        for role in ComponentRole::ALL {
            for spec in Slot::of(role) {
                let json = format!("\"{}\"", spec.slot.as_str());
                assert_eq!(serde_json::from_str::<Slot>(&json).ok(), Some(spec.slot));
            }
        }
    }
}
