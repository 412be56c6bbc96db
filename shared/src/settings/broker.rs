//! `broker`: how the fleet's queues are declared on RabbitMQ.
//!
//! Every producer and worker must declare the same queues with the same
//! arguments, so the queue type is a fleet-wide setting of the settings file;
//! `WARMLANE_QUEUE_TYPE` overrides it (compose's cluster profile, the test suite's
//! second pass).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The environment variable that overrides `broker.queue_type`.
pub const QUEUE_TYPE_ENV: &str = "WARMLANE_QUEUE_TYPE";

/// The `broker` section (optional; every field has a default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// `classic` (the default: one node, as before) or `quorum` (replicated with
    /// Raft across a RabbitMQ cluster; survives the loss of a minority of nodes).
    #[serde(default)]
    pub queue_type: QueueType,
}

/// The RabbitMQ queue type of the lane, degraded, expired and dead queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Classic queues: the data lives on one node.
    #[default]
    Classic,
    /// Quorum queues: replicated to a majority of the cluster before a publish is confirmed.
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` argument's value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }

    /// Parses `classic` or `quorum` (any case, spaces around ignored).
    pub fn parse(text: &str) -> Option<QueueType> {
        match text.trim().to_ascii_lowercase().as_str() {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            _ => None,
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pure: the queue type in force, given the file's and the environment's value
/// (`None` when the variable is unset; an empty value counts as unset). An
/// unknown value is an error message naming the variable.
pub fn queue_type_in_force(from_file: QueueType, from_env: Option<&str>) -> Result<QueueType, String> {
    match from_env.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(from_file),
        Some(v) => QueueType::parse(v)
            .ok_or_else(|| format!("{QUEUE_TYPE_ENV} must be `classic` or `quorum`, got `{}`", v.escape_debug())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_file_and_a_bad_value_is_refused() {
        use QueueType::{Classic, Quorum};
        // (file, env, in force)
        let cases: [(QueueType, Option<&str>, Result<QueueType, ()>); 7] = [
            (Classic, None, Ok(Classic)),
            (Quorum, None, Ok(Quorum)),
            (Classic, Some("quorum"), Ok(Quorum)),
            (Quorum, Some(" Classic "), Ok(Classic)),
            (Quorum, Some(""), Ok(Quorum)),
            (Classic, Some("stream"), Err(())),
            (Classic, Some("quorum\n\u{1b}[31m"), Err(())),
        ];
        for (file, env, want) in cases {
            let got = queue_type_in_force(file, env);
            assert_eq!(got.as_ref().map_err(|_| ()).copied(), want, "{file:?} {env:?}");
            if let Err(message) = got {
                assert!(message.starts_with(QUEUE_TYPE_ENV), "{message}");
                assert!(!message.contains('\u{1b}'), "{message}");
            }
        }
    }

    #[test]
    fn the_section_defaults_to_classic_and_names_its_values_in_lowercase() {
        let s: BrokerSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s.queue_type, QueueType::Classic);
        let s: BrokerSettings = serde_json::from_str(r#"{"queue_type": "quorum"}"#).unwrap();
        assert_eq!((s.queue_type, s.queue_type.as_str()), (QueueType::Quorum, "quorum"));
        assert!(serde_json::from_str::<BrokerSettings>(r#"{"queue_type": "stream"}"#).is_err());
    }
}
