//! AMQP topology as plain data: exchanges, queues with their arguments, bindings.
//!
//! The producer and the consumer declare the same topology idempotently at start
//! from [`Topology::declarations`]; the RabbitMQ definitions file in `ops/` is the
//! same data for a broker that starts before any of them.

use crate::settings::{Settings, DEGRADED_LANE};

/// Routing key of the degraded exchange.
pub const DEGRADED_KEY: &str = "degraded";
/// Routing key of dead-lettered (expired) messages.
pub const EXPIRED_KEY: &str = "expired";
/// Routing key of the dead exchange.
pub const DEAD_KEY: &str = "dead";

/// Header carrying the time a message entered the degraded queue (unix ms).
pub const HEADER_ENQUEUED_MS: &str = "x-warmlane-enqueued-ms";
/// Header carrying why a message went degraded (`capacity`, `quota`, `manual`).
pub const HEADER_FALLBACK_CAUSE: &str = "x-warmlane-fallback-cause";
/// Header on dead messages: the error code.
pub const HEADER_ERROR_CODE: &str = "x-warmlane-error-code";
/// Header on dead messages: the reason.
pub const HEADER_ERROR_REASON: &str = "x-warmlane-error-reason";
/// Header on dead messages: the queue the message came from.
pub const HEADER_SOURCE_QUEUE: &str = "x-warmlane-source-queue";
/// Header RabbitMQ sets on dead-lettered messages: the queue they left first.
pub const HEADER_FIRST_DEATH_QUEUE: &str = "x-first-death-queue";

/// Content type of every message.
pub const CONTENT_TYPE: &str = "application/msgpack";

/// A queue argument value.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// Integer argument (`x-max-length`, `x-message-ttl`).
    Int(i64),
    /// String argument (`x-overflow`, `x-dead-letter-exchange`).
    Str(String),
    /// Boolean argument (`x-single-active-consumer`).
    Bool(bool),
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDecl {
    /// Exchange name.
    pub name: String,
    /// Always `direct` in warmlane.
    pub kind: &'static str,
}

/// A durable queue with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDecl {
    /// Queue name.
    pub name: String,
    /// `x-` arguments.
    pub args: Vec<(&'static str, ArgValue)>,
}

/// A queue bound to an exchange by routing key.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Queue name.
    pub queue: String,
    /// Exchange name.
    pub exchange: String,
    /// Routing key.
    pub key: String,
}

/// Everything to declare.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Declarations {
    /// Exchanges.
    pub exchanges: Vec<ExchangeDecl>,
    /// Queues.
    pub queues: Vec<QueueDecl>,
    /// Bindings.
    pub bindings: Vec<Binding>,
}

/// Names of the topology under a prefix (`warmlane` by default; tests use their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Topology under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Topology {
        Topology { prefix: prefix.into() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Exchange of the dedicated lanes; routing key = model.
    pub fn lanes_exchange(&self) -> String {
        format!("{}.lanes", self.prefix)
    }

    /// Exchange of the degraded queue; routing key [`DEGRADED_KEY`].
    pub fn degraded_exchange(&self) -> String {
        format!("{}.degraded", self.prefix)
    }

    /// Dead-letter exchange of the degraded queue and the lane queues.
    pub fn expired_exchange(&self) -> String {
        format!("{}.expired", self.prefix)
    }

    /// Exchange for poison and undecodable messages.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Queue of a model's dedicated lane.
    pub fn lane_queue(&self, model: &str) -> String {
        format!("{}.lane.{model}", self.prefix)
    }

    /// The degraded queue.
    pub fn degraded_queue(&self) -> String {
        format!("{}.degraded", self.prefix)
    }

    /// Queue of expired messages, consumed by the reaper.
    pub fn expired_queue(&self) -> String {
        format!("{}.expired", self.prefix)
    }

    /// Queue of dead messages, kept for inspection and replay.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Queue a worker of `lane` consumes (`degraded` or a model name).
    pub fn queue_of_lane(&self, lane: &str) -> String {
        if lane == DEGRADED_LANE {
            self.degraded_queue()
        } else {
            self.lane_queue(lane)
        }
    }

    /// The lane a queue name belongs to, if it is one of ours.
    pub fn lane_of_queue(&self, queue: &str) -> Option<String> {
        if queue == self.degraded_queue() {
            return Some(DEGRADED_LANE.to_string());
        }
        queue.strip_prefix(&format!("{}.lane.", self.prefix)).map(str::to_string)
    }

    /// Arguments of the degraded queue (contract): depth, overflow, TTL, single active consumer, DLX.
    /// The depth is `max_depth - window + 1`: the worker holds up to `window` deliveries
    /// unacked, and ready plus held stays within `max_depth` (with a window of 1, `max_depth`).
    pub fn degraded_queue_args(&self, settings: &Settings) -> Vec<(&'static str, ArgValue)> {
        vec![
            ("x-max-length", ArgValue::Int(i64::from(settings.degraded.queue_max_length()))),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
            ("x-message-ttl", ArgValue::Int(settings.degraded.max_wait_ms as i64)),
            ("x-single-active-consumer", ArgValue::Bool(true)),
            ("x-dead-letter-exchange", ArgValue::Str(self.expired_exchange())),
            ("x-dead-letter-routing-key", ArgValue::Str(EXPIRED_KEY.into())),
        ]
    }

    /// Arguments of a lane queue: its own depth, and a TTL that moves unclaimed
    /// requests to the reaper, which sends them degraded (FR-021c).
    pub fn lane_queue_args(&self, settings: &Settings) -> Vec<(&'static str, ArgValue)> {
        vec![
            ("x-max-length", ArgValue::Int(i64::from(settings.lanes.max_depth))),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
            ("x-message-ttl", ArgValue::Int(settings.lanes.lane_wait_ms as i64)),
            ("x-dead-letter-exchange", ArgValue::Str(self.expired_exchange())),
            ("x-dead-letter-routing-key", ArgValue::Str(EXPIRED_KEY.into())),
        ]
    }

    /// The whole topology for these settings.
    pub fn declarations(&self, settings: &Settings) -> Declarations {
        let mut d = Declarations::default();
        for name in [self.lanes_exchange(), self.degraded_exchange(), self.expired_exchange(), self.dead_exchange()] {
            d.exchanges.push(ExchangeDecl { name, kind: "direct" });
        }
        for model in settings.lane_models() {
            let queue = self.lane_queue(model);
            d.queues.push(QueueDecl { name: queue.clone(), args: self.lane_queue_args(settings) });
            d.bindings.push(Binding { queue, exchange: self.lanes_exchange(), key: model.to_string() });
        }
        d.queues.push(QueueDecl { name: self.degraded_queue(), args: self.degraded_queue_args(settings) });
        d.bindings.push(Binding {
            queue: self.degraded_queue(),
            exchange: self.degraded_exchange(),
            key: DEGRADED_KEY.into(),
        });
        d.queues.push(QueueDecl { name: self.expired_queue(), args: vec![] });
        d.bindings.push(Binding {
            queue: self.expired_queue(),
            exchange: self.expired_exchange(),
            key: EXPIRED_KEY.into(),
        });
        d.queues.push(QueueDecl { name: self.dead_queue(), args: vec![] });
        d.bindings.push(Binding { queue: self.dead_queue(), exchange: self.dead_exchange(), key: DEAD_KEY.into() });
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::fixture;

    #[test]
    fn default_names_match_the_contract() {
        let t = Topology::new("warmlane");
        assert_eq!(t.lanes_exchange(), "warmlane.lanes");
        assert_eq!(t.degraded_exchange(), "warmlane.degraded");
        assert_eq!(t.expired_exchange(), "warmlane.expired");
        assert_eq!(t.dead_exchange(), "warmlane.dead");
        assert_eq!(t.lane_queue("anisora"), "warmlane.lane.anisora");
        assert_eq!(t.queue_of_lane("degraded"), "warmlane.degraded");
        assert_eq!(t.lane_of_queue("warmlane.lane.phr00t").as_deref(), Some("phr00t"));
        assert_eq!(t.lane_of_queue("warmlane.degraded").as_deref(), Some("degraded"));
        assert_eq!(t.lane_of_queue("other.lane.x"), None);
    }

    #[test]
    fn degraded_queue_has_the_contract_arguments() {
        let t = Topology::new("warmlane");
        let args = t.degraded_queue_args(&fixture());
        assert!(args.contains(&("x-max-length", ArgValue::Int(25))));
        assert!(args.contains(&("x-overflow", ArgValue::Str("reject-publish".into()))));
        assert!(args.contains(&("x-message-ttl", ArgValue::Int(30_000))));
        assert!(args.contains(&("x-single-active-consumer", ArgValue::Bool(true))));
        assert!(args.contains(&("x-dead-letter-exchange", ArgValue::Str("warmlane.expired".into()))));
    }

    #[test]
    fn a_degraded_window_shortens_the_queue_so_ready_plus_held_stays_within_max_depth() {
        let t = Topology::new("warmlane");
        let mut s = fixture();
        for (window, max_length) in [(1, 25), (4, 22), (25, 1)] {
            s.degraded.window = window;
            let args = t.degraded_queue_args(&s);
            assert!(args.contains(&("x-max-length", ArgValue::Int(max_length))), "window {window}: {args:?}");
            assert_eq!(max_length + i64::from(window) - 1, 25);
        }
    }

    #[test]
    fn declarations_cover_every_lane_and_bind_every_queue() {
        let d = Topology::new("p").declarations(&fixture());
        assert_eq!(d.exchanges.len(), 4);
        for q in &d.queues {
            assert!(d.bindings.iter().any(|b| b.queue == q.name), "{} is unbound", q.name);
        }
        assert!(d.queues.iter().any(|q| q.name == "p.lane.anisora"));
        assert!(d.queues.iter().any(|q| q.name == "p.lane.phr00t"));
    }
}
