//! Feeding a session by slot: each value is converted to the element type its port
//! declares (int64 or int32 ids, float32 or int64 timesteps), and the one output the
//! stage needs is copied out.
//!
//! Why: the sampler speaks in slots and f32/i64 buffers; the graph decides names and
//! integer widths ([`crate::ports`]). Floats are fed as views, without a copy.

use super::Context;
use crate::error::EngineError;
use crate::ports::{Elem, Ports};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor as OrtTensor, TensorRef};
use warmlane_shared::settings::pipeline::Slot;

/// A buffer to feed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tensor<'a> {
    /// Float32 data (latents, embeddings).
    Float(&'a [f32]),
    /// Integer data (token ids, masks).
    Int(&'a [i64]),
    /// Timesteps: fed as float32, or rounded to int64 where the graph wants integers.
    Time(&'a [f32]),
}

/// One input: the slot, its data and its shape.
#[derive(Debug, Clone)]
pub(crate) struct Feed<'a> {
    slot: Slot,
    tensor: Tensor<'a>,
    shape: Vec<usize>,
}

impl<'a> Feed<'a> {
    pub(crate) fn new(slot: Slot, tensor: Tensor<'a>, shape: &[usize]) -> Feed<'a> {
        Feed { slot, tensor, shape: shape.to_vec() }
    }
}

/// Runs `session` on `feeds` and copies out the output bound to `out`.
pub(crate) fn run(
    session: &mut Session,
    ctx: &Context<'_>,
    stage: &str,
    feeds: Vec<Feed<'_>>,
    ports: &Ports,
    out: Slot,
) -> Result<(Vec<usize>, Vec<f32>), EngineError> {
    let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(feeds.len());
    for feed in feeds {
        let Some(port) = ports.get(feed.slot) else {
            return Err(EngineError::inference(stage, format!("slot `{}` is not bound", feed.slot.as_str())));
        };
        let value = value(feed.tensor, port.elem, feed.shape).map_err(|e| ctx.fail(stage, e))?;
        inputs.push((port.name.clone(), value));
    }
    let Some(port) = ports.get(out) else {
        return Err(EngineError::inference(stage, format!("slot `{}` is not bound", out.as_str())));
    };
    let options = if ctx.mid_loop { ctx.step_options } else { ctx.run_options };
    let outputs = session.run_with_options(inputs, options).map_err(|e| ctx.fail(stage, e))?;
    extract(&outputs, &port.name).map_err(|e| ctx.fail(stage, e))
}

fn value(tensor: Tensor<'_>, elem: Elem, shape: Vec<usize>) -> Result<SessionInputValue<'_>, ort::Error> {
    Ok(match (tensor, elem) {
        (Tensor::Float(data) | Tensor::Time(data), Elem::F32) => TensorRef::from_array_view((shape, data))?.into(),
        (Tensor::Int(data), Elem::I64) => TensorRef::from_array_view((shape, data))?.into(),
        (Tensor::Int(data), Elem::I32) => {
            let narrow: Result<Vec<i32>, _> = data.iter().map(|&v| i32::try_from(v)).collect();
            let narrow = narrow.map_err(|_| ort::Error::new("a token id does not fit the graph's int32 input"))?;
            OrtTensor::from_array((shape, narrow))?.into()
        }
        (Tensor::Time(data), Elem::I64) => {
            OrtTensor::from_array((shape, data.iter().map(|t| t.round() as i64).collect::<Vec<_>>()))?.into()
        }
        (_, elem) => return Err(ort::Error::new(format!("this slot's data cannot be fed as {elem:?}"))),
    })
}

/// Copies output `name` out of the run's buffers, so nothing run-time outlives the run.
fn extract(outputs: &ort::session::SessionOutputs<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>), ort::Error> {
    let value = outputs.get(name).ok_or_else(|| ort::Error::new(format!("model has no output `{name}`")))?;
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    Ok((shape, data.to_vec()))
}
