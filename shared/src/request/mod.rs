//! Requests: decoding bodies from the wire and validating them into [`ValidRequest`].
//!
//! Bodies arrive as MessagePack (AMQP) or JSON (the HTTP shim). Both are first
//! turned into a map of [`Field`]s, then one validator checks every rule in a
//! fixed order, so the same body always gets the same code and reason. Only a
//! [`ValidRequest`] can be published, and the consumer validates again because
//! services may publish to the exchanges directly.

use crate::error::{ErrorCode, Rejection};
use crate::settings::{ModelSettings, Param, Settings, PROMPT_LIMIT};
use serde::Serialize;
use std::collections::BTreeMap;

mod scan;
pub use scan::scan_task_id;

/// Largest accepted request body; anything bigger is `malformed_message`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest task id.
pub const TASK_ID_MAX: usize = 64;
/// The only wire version.
pub const WIRE_VERSION: u32 = 1;

/// A wire value, reduced to what the validator distinguishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// nil / null.
    Nil,
    /// An integer that fits i128 (covers i64 and u64).
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Anything else (bool, array, map, binary): always a type error.
    Other(&'static str),
}

impl Field {
    fn kind(&self) -> &'static str {
        match self {
            Field::Nil => "nil",
            Field::Int(_) => "integer",
            Field::Float(_) => "float",
            Field::Str(_) => "string",
            Field::Other(k) => k,
        }
    }
}

/// A request whose every field passed the rules of its model.
///
/// Built only by [`validate`]; `non_exhaustive` keeps other crates from
/// constructing one by hand.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ValidRequest {
    /// Wire version.
    pub v: u32,
    /// Caller's unique id, 1-64 chars of `[A-Za-z0-9_-]`.
    pub task_id: String,
    /// A model of the settings.
    pub model: String,
    /// What to generate.
    pub prompt: String,
    /// What to steer away from.
    pub negative_prompt: Option<String>,
    /// Sampler steps.
    pub steps: u32,
    /// Guidance scale.
    pub cfg: f64,
    /// Same seed, same output.
    pub seed: Option<u64>,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Output frames.
    pub frames: u32,
    /// When the producer admitted the request (unix ms).
    pub submitted_at_ms: Option<u64>,
}

impl ValidRequest {
    /// MessagePack as a map with string keys (`to_vec_named`), the contract's encoding.
    pub fn to_msgpack(&self) -> Vec<u8> {
        // Serializing plain strings and numbers into a Vec cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// The seed the engine uses: the request's, else one derived from the task id,
    /// so a redelivered task renders the same video.
    pub fn effective_seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            // FNV-1a: stable across builds and platforms.
            self.task_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
        })
    }

    /// Returns a copy stamped with the admission time.
    pub fn admitted_at(mut self, now_ms: u64) -> Self {
        self.submitted_at_ms = Some(now_ms);
        self
    }
}

/// A body that failed to decode, with whatever task id could be recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeFailure {
    /// The coded refusal.
    pub rejection: Rejection,
    /// The task id, when the body carried a valid one: the reply goes there.
    pub task_id: Option<String>,
}

impl DecodeFailure {
    /// Where the refusal is answered: the body's task id, else the message's
    /// `message_id` when it is a valid task id (the contract sets it to the task id).
    pub fn reply_to(&self, message_id: Option<&str>) -> Option<String> {
        self.task_id.clone().or_else(|| message_id.filter(|id| task_id_ok(id)).map(str::to_string))
    }
}

/// Decodes and validates a MessagePack body. A body too broken to decode still
/// names its task when [`scan_task_id`] can read a valid id from it.
pub fn decode_msgpack(body: &[u8], settings: &Settings) -> Result<ValidRequest, DecodeFailure> {
    let fields = msgpack_fields(body).map_err(|f| DecodeFailure { task_id: scan_task_id(body), ..f })?;
    validate_fields(&fields, settings)
}

/// Validates a JSON body (the HTTP shim's). A `task_id` and `submitted_at_ms` must be set
/// by the caller before this point if they are to be generated.
pub fn validate_json(body: &serde_json::Value, settings: &Settings) -> Result<ValidRequest, DecodeFailure> {
    let fields = json_fields(body)?;
    validate_fields(&fields, settings)
}

fn malformed(reason: &str, message: impl Into<String>) -> DecodeFailure {
    DecodeFailure { rejection: Rejection::new(ErrorCode::MalformedMessage, reason, message), task_id: None }
}

/// Turns a MessagePack body into fields; anything but a map with string keys is malformed.
pub fn msgpack_fields(body: &[u8]) -> Result<BTreeMap<String, Field>, DecodeFailure> {
    if body.len() > MAX_BODY_BYTES {
        return Err(malformed("body", format!("body is {} bytes, the limit is {MAX_BODY_BYTES}", body.len())));
    }
    let mut cursor = body;
    let value =
        rmpv::decode::read_value(&mut cursor).map_err(|e| malformed("body", format!("not MessagePack: {e}")))?;
    if !cursor.is_empty() {
        return Err(malformed("body", format!("{} trailing bytes after the request map", cursor.len())));
    }
    let rmpv::Value::Map(entries) = value else {
        return Err(malformed("body", "the request must be a MessagePack map with string keys"));
    };
    let mut fields = BTreeMap::new();
    for (k, v) in entries {
        let rmpv::Value::String(k) = k else {
            return Err(malformed("body", "map keys must be strings"));
        };
        let Some(k) = k.into_str() else {
            return Err(malformed("body", "map keys must be UTF-8"));
        };
        let field = match v {
            rmpv::Value::Nil => Field::Nil,
            rmpv::Value::Integer(i) => {
                i.as_i64().map(i128::from).or(i.as_u64().map(i128::from)).map_or(Field::Other("integer"), Field::Int)
            }
            rmpv::Value::F32(f) => Field::Float(f64::from(f)),
            rmpv::Value::F64(f) => Field::Float(f),
            rmpv::Value::String(s) => match s.into_str() {
                Some(s) => Field::Str(s),
                None => Field::Other("invalid UTF-8 string"),
            },
            rmpv::Value::Boolean(_) => Field::Other("boolean"),
            rmpv::Value::Binary(_) => Field::Other("binary"),
            rmpv::Value::Array(_) => Field::Other("array"),
            rmpv::Value::Map(_) => Field::Other("map"),
            rmpv::Value::Ext(..) => Field::Other("extension"),
        };
        fields.insert(k, field);
    }
    Ok(fields)
}

/// Turns a JSON body into fields; anything but an object is malformed.
pub fn json_fields(body: &serde_json::Value) -> Result<BTreeMap<String, Field>, DecodeFailure> {
    let serde_json::Value::Object(map) = body else {
        return Err(malformed("body", "the request must be a JSON object"));
    };
    Ok(map
        .iter()
        .map(|(k, v)| {
            let field = match v {
                serde_json::Value::Null => Field::Nil,
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Field::Int(i128::from(i)),
                    (_, Some(u), _) => Field::Int(i128::from(u)),
                    (_, _, Some(f)) => Field::Float(f),
                    _ => Field::Other("number"),
                },
                serde_json::Value::String(s) => Field::Str(s.clone()),
                serde_json::Value::Bool(_) => Field::Other("boolean"),
                serde_json::Value::Array(_) => Field::Other("array"),
                serde_json::Value::Object(_) => Field::Other("object"),
            };
            (k.clone(), field)
        })
        .collect())
}

/// Checks a task id against the contract: 1-64 chars of `[A-Za-z0-9_-]`.
pub fn task_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= TASK_ID_MAX && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The task id of a field map, if it is present and valid.
pub fn recover_task_id(fields: &BTreeMap<String, Field>) -> Option<String> {
    match fields.get("task_id") {
        Some(Field::Str(id)) if task_id_ok(id) => Some(id.clone()),
        _ => None,
    }
}

/// Validates fields into a request. The order of checks is fixed, so the first
/// broken rule is always the one reported.
pub fn validate_fields(fields: &BTreeMap<String, Field>, settings: &Settings) -> Result<ValidRequest, DecodeFailure> {
    let task_id = recover_task_id(fields);
    let fail = |rejection: Rejection| DecodeFailure { rejection, task_id: task_id.clone() };
    let Some(id) = task_id.clone() else {
        let message = match fields.get("task_id") {
            None => "task_id is required".to_string(),
            Some(Field::Str(_)) => format!("task_id must be 1-{TASK_ID_MAX} characters of [A-Za-z0-9_-]"),
            Some(other) => format!("task_id must be a string, got {}", other.kind()),
        };
        return Err(fail(Rejection::invalid("task_id", message)));
    };
    match fields.get("v") {
        Some(Field::Int(1)) => {}
        None => return Err(fail(Rejection::invalid("v", "v is required and must be 1"))),
        Some(other) => return Err(fail(Rejection::invalid("v", format!("v must be 1, got {}", show(other))))),
    }
    let model_name = match fields.get("model") {
        Some(Field::Str(m)) => m.clone(),
        None => return Err(fail(Rejection::invalid("model", "model is required"))),
        Some(other) => {
            return Err(fail(Rejection::invalid("model", format!("model must be a string, got {}", other.kind()))))
        }
    };
    let Some(model) = settings.model(&model_name) else {
        let known: Vec<&str> = settings.models.keys().map(String::as_str).collect();
        let shown: String = model_name.chars().take(64).collect();
        return Err(fail(Rejection::new(
            ErrorCode::UnknownModel,
            "model",
            format!("unknown model `{shown}`; known models: {}", known.join(", ")),
        )));
    };
    let checked = check_model_fields(fields, model).map_err(&fail)?;
    Ok(ValidRequest { v: WIRE_VERSION, task_id: id, model: model_name, ..checked })
}

fn check_model_fields(fields: &BTreeMap<String, Field>, model: &ModelSettings) -> Result<ValidRequest, Rejection> {
    let limit = model.prompt_max_chars.min(PROMPT_LIMIT) as usize;
    let prompt = match fields.get("prompt") {
        Some(Field::Str(p)) => p.clone(),
        None => return Err(Rejection::invalid("prompt", "prompt is required")),
        Some(other) => {
            return Err(Rejection::invalid("prompt", format!("prompt must be a string, got {}", other.kind())))
        }
    };
    let chars = prompt.chars().count();
    // Blank: nothing but whitespace and control characters (NUL included).
    if prompt.chars().all(|c| c.is_whitespace() || c.is_control()) {
        return Err(Rejection::invalid("prompt", "prompt must contain visible text"));
    }
    if chars > limit {
        return Err(Rejection::invalid("prompt", format!("prompt is {chars} characters, the limit is {limit}")));
    }
    let negative_prompt = match fields.get("negative_prompt") {
        None | Some(Field::Nil) => None,
        Some(Field::Str(p)) if p.chars().count() <= PROMPT_LIMIT as usize => Some(p.clone()),
        Some(Field::Str(p)) => {
            return Err(Rejection::invalid(
                "negative_prompt",
                format!("negative_prompt is {} characters, the limit is {PROMPT_LIMIT}", p.chars().count()),
            ))
        }
        Some(other) => {
            return Err(Rejection::invalid(
                "negative_prompt",
                format!("negative_prompt must be a string or nil, got {}", other.kind()),
            ))
        }
    };
    let steps = int_param(fields, "steps", &model.steps)?;
    let cfg = float_param(fields, "cfg", &model.cfg)?;
    let width = int_param(fields, "width", &model.width)?;
    let height = int_param(fields, "height", &model.height)?;
    let frames = int_param(fields, "frames", &model.frames)?;
    let seed = match fields.get("seed") {
        None | Some(Field::Nil) => None,
        Some(Field::Int(i)) if (0..=i128::from(u64::MAX)).contains(i) => Some(*i as u64),
        Some(Field::Int(i)) => return Err(Rejection::invalid("seed", format!("seed must be 0..=2^64-1, got {i}"))),
        // JSON integers past u64 arrive as floats; they are out of range, not the wrong type.
        Some(Field::Float(f)) if f.fract() == 0.0 && f.abs() >= 2f64.powi(63) => {
            return Err(Rejection::invalid("seed", format!("seed must be 0..=2^64-1, got {f:.0}")))
        }
        Some(other) => {
            return Err(Rejection::invalid("seed", format!("seed must be an integer or nil, got {}", other.kind())))
        }
    };
    let submitted_at_ms = match fields.get("submitted_at_ms") {
        None | Some(Field::Nil) => None,
        Some(Field::Int(i)) if (0..=i128::from(i64::MAX)).contains(i) => Some(*i as u64),
        Some(other) => {
            return Err(Rejection::invalid(
                "submitted_at_ms",
                format!("submitted_at_ms must be unix milliseconds, got {}", show(other)),
            ))
        }
    };
    Ok(ValidRequest {
        v: WIRE_VERSION,
        task_id: String::new(),
        model: String::new(),
        prompt,
        negative_prompt,
        steps,
        cfg,
        seed,
        width,
        height,
        frames,
        submitted_at_ms,
    })
}

fn show(f: &Field) -> String {
    match f {
        Field::Nil => "nil".into(),
        Field::Int(i) => i.to_string(),
        Field::Float(x) => x.to_string(),
        Field::Str(s) => format!("a string ({} chars)", s.chars().count()),
        Field::Other(k) => k.to_string(),
    }
}

fn int_param(fields: &BTreeMap<String, Field>, name: &str, p: &Param<u32>) -> Result<u32, Rejection> {
    let value = match fields.get(name) {
        None | Some(Field::Nil) => return Ok(p.default),
        Some(Field::Int(i)) => *i,
        Some(other) => return Err(Rejection::invalid(name, format!("{name} must be an integer, got {}", show(other)))),
    };
    if p.fixed && value != i128::from(p.default) {
        return Err(Rejection::invalid(name, format!("{name} is fixed to {} for this model, got {value}", p.default)));
    }
    let min = p.min.unwrap_or(1);
    let max = p.max.unwrap_or(u32::MAX);
    if value < i128::from(min) || value > i128::from(max) {
        return Err(Rejection::invalid(name, format!("{name} must be {min}..={max}, got {value}")));
    }
    let value = value as u32;
    if let Some(m) = p.multiple_of.filter(|m| *m > 0) {
        if !value.is_multiple_of(m) {
            return Err(Rejection::invalid(name, format!("{name} must be a multiple of {m}, got {value}")));
        }
    }
    Ok(value)
}

fn float_param(fields: &BTreeMap<String, Field>, name: &str, p: &Param<f64>) -> Result<f64, Rejection> {
    let value = match fields.get(name) {
        None | Some(Field::Nil) => return Ok(p.default),
        Some(Field::Float(x)) => *x,
        Some(Field::Int(i)) if i.unsigned_abs() <= 1 << 53 => *i as f64,
        Some(other) => return Err(Rejection::invalid(name, format!("{name} must be a number, got {}", show(other)))),
    };
    if !value.is_finite() {
        return Err(Rejection::invalid(name, format!("{name} must be finite, got {value}")));
    }
    if value < 0.0 {
        return Err(Rejection::invalid(name, format!("{name} must not be negative, got {value}")));
    }
    if p.fixed && value != p.default {
        return Err(Rejection::invalid(
            name,
            format!("{name} is fixed to {:?} for this model, got {value:?}", p.default),
        ));
    }
    let min = p.min.unwrap_or(0.0);
    let max = p.max.unwrap_or(f64::MAX);
    if value < min || value > max {
        return Err(Rejection::invalid(name, format!("{name} must be {min}..={max}, got {value}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
