//! Binding a component's slots to the tensors its ONNX graph declares, checked once
//! at load.
//!
//! Why at load: a wrong tensor name in settings, an input nobody feeds, a latent with
//! the wrong channel count or an integer where a float is expected would otherwise
//! surface as an ONNX Runtime error in the middle of the first request. [`resolve`]
//! is a pure function of the settings and the graph's declared inputs and outputs,
//! and its error names the settings field and lists what the graph has.

use warmlane_shared::settings::pipeline::io::{Direction, Slot};
use warmlane_shared::settings::pipeline::{ComponentRole, Guidance};
use warmlane_shared::settings::PipelineSettings;

/// Element types the engine feeds or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    I64,
    I32,
}

impl Elem {
    fn as_str(self) -> &'static str {
        match self {
            Elem::F32 => "float32",
            Elem::I64 => "int64",
            Elem::I32 => "int32",
        }
    }
}

/// A tensor as the graph declares it: name, element type (`None`: one the engine does
/// not handle) and shape (`-1` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Declared {
    pub(crate) name: String,
    pub(crate) elem: Option<Elem>,
    pub(crate) shape: Vec<i64>,
}

/// A bound slot: the tensor's name, element type and declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Port {
    pub(crate) name: String,
    pub(crate) elem: Elem,
    pub(crate) shape: Vec<i64>,
}

/// The bound slots of one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ports(Vec<(Slot, Port)>);

impl Ports {
    /// The port of `slot`, if bound (an optional input may not be).
    pub(crate) fn get(&self, slot: Slot) -> Option<&Port> {
        self.0.iter().find(|(s, _)| *s == slot).map(|(_, p)| p)
    }
}

/// Element types a slot accepts.
fn accepted(slot: Slot) -> &'static [Elem] {
    match slot {
        Slot::InputIds | Slot::AttentionMask => &[Elem::I64, Elem::I32],
        Slot::Timestep => &[Elem::F32, Elem::I64],
        Slot::TextEmbeds | Slot::Latent | Slot::Prediction | Slot::Video => &[Elem::F32],
    }
}

/// Rank a slot's tensor must have.
fn rank(slot: Slot) -> usize {
    match slot {
        Slot::InputIds | Slot::AttentionMask => 2,
        Slot::Timestep => 1,
        Slot::TextEmbeds => 3,
        Slot::Latent | Slot::Prediction | Slot::Video => 5,
    }
}

fn list(tensors: &[Declared]) -> String {
    let shown: Vec<String> = tensors
        .iter()
        .map(|t| format!("{} {} {:?}", t.name, t.elem.map_or("(unsupported type)", Elem::as_str), t.shape))
        .collect();
    if shown.is_empty() {
        "none".into()
    } else {
        shown.join(", ")
    }
}

/// Binds every slot of `role` to the declared `inputs`/`outputs`. The error is one
/// line: the settings field (relative to the pipeline), what is wrong, and what the
/// graph declares.
pub(crate) fn resolve(
    role: ComponentRole,
    settings: &PipelineSettings,
    inputs: &[Declared],
    outputs: &[Declared],
) -> Result<Ports, String> {
    let mut ports = Vec::new();
    for spec in Slot::of(role) {
        let Some(name) = settings.tensor(role, spec.slot) else { continue };
        let field = format!("{}.io.{}", role.as_str(), spec.slot.as_str());
        let (side, word) = match spec.direction {
            Direction::Input => (inputs, "input"),
            Direction::Output => (outputs, "output"),
        };
        let Some(found) = side.iter().find(|t| t.name == name) else {
            return Err(format!("{field} = {name:?}: the graph has no {word} `{name}`; its {word}s: {}", list(side)));
        };
        check_tensor(spec.slot, settings, found).map_err(|why| format!("{field} = {name:?}: {why}"))?;
        let elem = found.elem.filter(|e| accepted(spec.slot).contains(e)).ok_or_else(|| {
            let want: Vec<&str> = accepted(spec.slot).iter().map(|e| e.as_str()).collect();
            format!(
                "{field} = {name:?}: the graph declares {}, the engine feeds {}",
                list(std::slice::from_ref(found)),
                want.join(" or ")
            )
        })?;
        ports.push((spec.slot, Port { name: name.to_string(), elem, shape: found.shape.clone() }));
    }
    let fed = |name: &str| ports.iter().any(|(_, p)| p.name == name);
    if let Some(extra) = inputs.iter().find(|t| !fed(&t.name)) {
        let slots: Vec<&str> = Slot::of(role).iter().map(|s| s.slot.as_str()).collect();
        return Err(format!(
            "{}.io: the graph's input `{}` is fed by no slot; map it in io (slots: {}); the graph's inputs: {}",
            role.as_str(),
            extra.name,
            slots.join(", "),
            list(inputs)
        ));
    }
    if role == ComponentRole::Denoiser && settings.guidance == Guidance::Batch {
        let batch = inputs.iter().find(|t| Some(t.name.as_str()) == settings.tensor(role, Slot::Latent));
        if let Some(&b) = batch.and_then(|t| t.shape.first()) {
            if b != -1 && b != 2 {
                return Err(format!(
                    "guidance = \"batch\" needs a denoiser whose batch dimension is dynamic or 2; the graph fixes it at {b}"
                ));
            }
        }
    }
    Ok(Ports(ports))
}

/// Rank and the static dimensions the settings pin (latent channels, RGB).
fn check_tensor(slot: Slot, settings: &PipelineSettings, t: &Declared) -> Result<(), String> {
    let want = rank(slot);
    if t.shape.len() != want {
        return Err(format!("rank {} ({:?}), the engine needs rank {want}", t.shape.len(), t.shape));
    }
    let channels = i64::from(settings.latent_channels);
    let pinned = match slot {
        Slot::Latent | Slot::Prediction => Some(("latent_channels", channels)),
        Slot::Video => Some(("RGB channels", 3)),
        _ => None,
    };
    if let Some((what, value)) = pinned {
        let dim = t.shape[1];
        if dim != -1 && dim != value {
            return Err(format!("channel dimension is {dim} in the graph, but {what} is {value}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
