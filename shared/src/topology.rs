//! AMQP topology as plain data: exchanges, queues with their arguments, bindings.
//!
//! The producer and the consumer declare the same topology idempotently at start
//! from [`Topology::declarations`]; the RabbitMQ definitions file in `ops/` is the
//! same data for a broker that starts before any of them.

use crate::settings::{QueueType, Settings, DEGRADED_LANE};

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

/// Header RabbitMQ sets on dead-lettered messages: why they left their first queue
/// (`expired`, `rejected`, `maxlen`, `delivery_limit`).
pub const HEADER_FIRST_DEATH_REASON: &str = "x-first-death-reason";
/// [`HEADER_FIRST_DEATH_REASON`] of a message a quorum queue dropped at its `x-delivery-limit`.
pub const DEATH_DELIVERY_LIMIT: &str = "delivery_limit";

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
        let mut args = vec![
            ("x-max-length", ArgValue::Int(i64::from(settings.degraded.queue_max_length()))),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
            ("x-message-ttl", ArgValue::Int(settings.degraded.max_wait_ms as i64)),
            ("x-single-active-consumer", ArgValue::Bool(true)),
            ("x-dead-letter-exchange", ArgValue::Str(self.expired_exchange())),
            ("x-dead-letter-routing-key", ArgValue::Str(EXPIRED_KEY.into())),
        ];
        args.extend(work_queue_type_args(settings));
        args
    }

    /// Arguments of a lane queue: its own depth, and a TTL that moves unclaimed
    /// requests to the reaper, which sends them degraded (FR-021c).
    pub fn lane_queue_args(&self, settings: &Settings) -> Vec<(&'static str, ArgValue)> {
        let mut args = vec![
            ("x-max-length", ArgValue::Int(i64::from(settings.lanes.max_depth))),
            ("x-overflow", ArgValue::Str("reject-publish".into())),
            ("x-message-ttl", ArgValue::Int(settings.lanes.lane_wait_ms as i64)),
            ("x-dead-letter-exchange", ArgValue::Str(self.expired_exchange())),
            ("x-dead-letter-routing-key", ArgValue::Str(EXPIRED_KEY.into())),
        ];
        args.extend(work_queue_type_args(settings));
        args
    }

    /// Arguments of the expired and dead queues: only their type.
    pub fn holding_queue_args(&self, settings: &Settings) -> Vec<(&'static str, ArgValue)> {
        queue_type_arg(settings.broker.queue_type).into_iter().collect()
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
        d.queues.push(QueueDecl { name: self.expired_queue(), args: self.holding_queue_args(settings) });
        d.bindings.push(Binding {
            queue: self.expired_queue(),
            exchange: self.expired_exchange(),
            key: EXPIRED_KEY.into(),
        });
        d.queues.push(QueueDecl { name: self.dead_queue(), args: self.holding_queue_args(settings) });
        d.bindings.push(Binding { queue: self.dead_queue(), exchange: self.dead_exchange(), key: DEAD_KEY.into() });
        d
    }
}

/// `x-queue-type`: declared only for quorum queues, so that a fleet on classic
/// queues declares exactly what it declared before the setting existed (a queue's
/// arguments must match on every declare).
fn queue_type_arg(queue_type: QueueType) -> Option<(&'static str, ArgValue)> {
    match queue_type {
        QueueType::Classic => None,
        QueueType::Quorum => Some(("x-queue-type", ArgValue::Str(QueueType::Quorum.as_str().into()))),
    }
}

/// The type-specific arguments of a queue that workers consume (a lane, the degraded queue).
///
/// Quorum: `x-delivery-limit` is `max_attempts`, so the broker lets a message be
/// delivered `max_attempts + 1` times, and the worker's own count (which sends the
/// message to the dead queue with its reply on delivery `max_attempts + 1`) acts
/// first; the broker's limit is the backstop when that count is lost, and what it
/// drops is dead-lettered to `<prefix>.expired`, where the reaper sends it to the
/// dead queue. Dead-lettering is `at-least-once` (a message is kept until the
/// expired queue has confirmed it), which quorum queues allow with `reject-publish`.
fn work_queue_type_args(settings: &Settings) -> Vec<(&'static str, ArgValue)> {
    match settings.broker.queue_type {
        QueueType::Classic => Vec::new(),
        QueueType::Quorum => vec![
            ("x-queue-type", ArgValue::Str(QueueType::Quorum.as_str().into())),
            ("x-delivery-limit", ArgValue::Int(i64::from(settings.lanes.max_attempts))),
            ("x-dead-letter-strategy", ArgValue::Str("at-least-once".into())),
        ],
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

    #[test]
    fn quorum_queues_keep_every_guarantee_and_classic_declares_as_before() {
        let t = Topology::new("p");
        let mut s = fixture();
        let classic = t.declarations(&s);
        for q in &classic.queues {
            assert!(q.args.iter().all(|(k, _)| !k.starts_with("x-queue-type") && *k != "x-delivery-limit"), "{q:?}");
        }
        s.broker.queue_type = QueueType::Quorum;
        let quorum = t.declarations(&s);
        assert_eq!(quorum.queues.len(), classic.queues.len());
        for (q, c) in quorum.queues.iter().zip(&classic.queues) {
            assert!(q.args.contains(&("x-queue-type", ArgValue::Str("quorum".into()))), "{q:?}");
            // Every classic argument stays (overflow, TTL, single active consumer, DLX).
            for arg in &c.args {
                assert!(q.args.contains(arg), "{}: {arg:?} lost", q.name);
            }
        }
        let max_attempts = i64::from(s.lanes.max_attempts);
        for name in ["p.degraded", "p.lane.anisora"] {
            let q = quorum.queues.iter().find(|q| q.name == name).unwrap();
            assert!(q.args.contains(&("x-delivery-limit", ArgValue::Int(max_attempts))), "{q:?}");
            assert!(q.args.contains(&("x-dead-letter-strategy", ArgValue::Str("at-least-once".into()))), "{q:?}");
            assert!(q.args.contains(&("x-overflow", ArgValue::Str("reject-publish".into()))), "{q:?}");
        }
    }
}
