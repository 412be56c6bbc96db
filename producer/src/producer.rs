//! [`Producer::submit`]: admission and FR-020's routing order, every publish confirmed.
//!
//! 1. The request is stamped with its admission time and its task id reserved in
//!    Redis (`pending` hash + deadline); an id in use is refused without a reply.
//! 2. The dedicated lane when it is ready and its queue confirms the publish.
//! 3. Otherwise the degraded exchange, with the fallback cause recorded.
//! 4. A nack there is `queue_overloaded`/`queue_full`: the producer writes the
//!    terminal reply itself and returns the refusal synchronously. So is a full
//!    admission guard, checked before the publish (`Store::routed_degraded`): the
//!    degraded depth holds with any number of producers, and on a quorum queue,
//!    which may accept a few publishes past `x-max-length`.

use crate::consumers::LaneConsumers;
use crate::error::ProducerError;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::sync::Arc;
use warmlane_infra::amqp::{message_properties, Published, Publisher};
use warmlane_infra::store::{FinishWhen, Store};
use warmlane_infra::{Endpoint, Report};
use warmlane_shared::metrics as m;
use warmlane_shared::request::DecodeFailure;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::topology::{DEGRADED_KEY, HEADER_ENQUEUED_MS, HEADER_FALLBACK_CAUSE};
use warmlane_shared::{
    now_ms, route, ErrorCode, FallbackCause, Rejection, Reply, ReplyStatus, Route, Settings, Timings, Topology,
    ValidRequest,
};

/// A request the broker has confirmed (stored in its lane or the degraded queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The task.
    pub task_id: String,
    /// The lane it was published to: the model's, or `degraded`.
    pub lane: String,
    /// Why it went degraded, when it did.
    pub fallback: Option<FallbackCause>,
    /// Admission time, unix ms.
    pub submitted_at_ms: u64,
}

/// Result of a submit: admitted, or refused with the reply that was written.
pub type SubmitOutcome = Result<Accepted, ProducerError>;

/// Publishes validated requests. Cheap to share behind an `Arc`.
pub struct Producer {
    settings: Arc<Settings>,
    topology: Topology,
    publisher: Arc<Publisher>,
    store: Store,
    consumers: LaneConsumers,
}

impl Producer {
    /// Connects to Redis, declares the topology on RabbitMQ and starts caching the
    /// lane queues' consumer counts (stopped when the producer drops).
    pub async fn connect(
        settings: Arc<Settings>,
        amqp: &Endpoint,
        redis: &Endpoint,
        prefix: &str,
    ) -> Result<Producer, ProducerError> {
        let store = Store::connect(redis, prefix, &settings).await?;
        let publisher = Publisher::new(amqp)?;
        let topology = Topology::new(prefix);
        publisher.declare(&topology.declarations(&settings)).await?;
        let publisher = Arc::new(publisher);
        let consumers = LaneConsumers::start(publisher.clone(), &topology, &settings);
        Ok(Producer { settings, topology, publisher, store, consumers })
    }

    /// The settings in force.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The Redis store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The topology names.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The publisher (for tools that publish raw messages, e.g. dead-letter replay).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The lane queues' consumer counts that routing uses.
    pub fn lane_consumers(&self) -> &LaneConsumers {
        &self.consumers
    }

    /// Whether RabbitMQ and Redis both answer.
    pub async fn ready(&self) -> (bool, bool) {
        tokio::join!(self.publisher.is_connected(), self.store.ping())
    }

    /// Validates a JSON body and submits it; a refusal with a valid task id is also
    /// written as that task's terminal reply.
    pub async fn submit_json(&self, body: &serde_json::Value) -> SubmitOutcome {
        match warmlane_shared::validate_json(body, &self.settings) {
            Ok(req) => self.submit(req).await,
            Err(failure) => Err(self.refuse_invalid(failure).await),
        }
    }

    /// Validates a MessagePack body and submits it (see [`Producer::submit_json`]).
    pub async fn submit_msgpack(&self, body: &[u8]) -> SubmitOutcome {
        match warmlane_shared::decode_msgpack(body, &self.settings) {
            Ok(req) => self.submit(req).await,
            Err(failure) => Err(self.refuse_invalid(failure).await),
        }
    }

    async fn refuse_invalid(&self, failure: DecodeFailure) -> ProducerError {
        let rejection = failure.rejection;
        metrics::counter!(m::VALIDATION_REJECTIONS, m::TAG_CODE => rejection.code.as_str(), m::TAG_REASON => rejection.reason.clone()).increment(1);
        metrics::counter!(m::REQUESTS_ROUTED, m::TAG_PATH => "rejected", m::TAG_MODEL => "unknown").increment(1);
        if let Some(task_id) = failure.task_id {
            let reply = Reply::coded(&task_id, ReplyStatus::Rejected, None, &rejection, Timings::default());
            if let Err(e) = self.store.finish(&reply, FinishWhen::Absent).await {
                tracing::warn!(task_id = %task_id, error = %Report(&e), "could not record the refusal in Redis");
            }
        }
        ProducerError::Rejected(rejection)
    }

    /// Admits and routes a validated request (FR-020). When the broker never took
    /// the message ([`ProducerError::is_unpublished`]), the admission is undone, so the
    /// caller may retry with the same task_id; when the publish is unconfirmed
    /// (`InfraError::Unconfirmed`) the task stays and ends with a reply either way.
    pub async fn submit(&self, req: ValidRequest) -> SubmitOutcome {
        let task_id = req.task_id.clone();
        let outcome = self.admit_and_publish(req).await;
        if let Some(e) = outcome.as_ref().err().filter(|e| e.is_unpublished()) {
            let detail = Report(e).to_string();
            match self.store.forget_unpublished(&task_id).await {
                Ok(true) => {
                    tracing::warn!(task_id = %task_id, error = %detail, "not queued (broker unavailable); the admission was undone")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(task_id = %task_id, error = %Report(&e), "not queued, and the admission could not be undone; the backstop will answer it")
                }
            }
        }
        outcome
    }

    async fn admit_and_publish(&self, req: ValidRequest) -> SubmitOutcome {
        let now = now_ms();
        let req = req.admitted_at(now);
        let lanes = &self.settings.lanes;
        let lane_deadline = self.settings.lane_deadline_ms(now);
        let degraded_deadline = self.settings.degraded_deadline_ms(now);
        let dedicated = self.settings.model(&req.model).is_some_and(|m| m.dedicated_lane);
        let Some((mut health, fallback_active)) =
            self.store.admit_and_read_lane(&req, lane_deadline, dedicated, lanes.heartbeat_ttl_ms).await?
        else {
            return Err(Rejection::invalid("task_id", format!("task_id `{}` is already in use", req.task_id)).into());
        };
        // A dead worker's heartbeat outlives it; the broker's cached consumer count does not.
        health.consumers = self.consumers.get(&req.model);
        let body = req.to_msgpack();
        let cause = match route(&health) {
            Route::Degraded(cause) => cause,
            Route::Lane => {
                // The admission already named the lane: a worker may start the task before the confirm arrives.
                let props = message_properties(&req.task_id, FieldTable::default());
                match self.publisher.publish(&self.topology.lanes_exchange(), &req.model, &body, props).await? {
                    Published::Acked => {
                        if fallback_active {
                            self.note_lane_ready(&req.model).await;
                        }
                        metrics::counter!(m::REQUESTS_ROUTED, m::TAG_PATH => "lane", m::TAG_MODEL => req.model.clone())
                            .increment(1);
                        tracing::info!(task_id = %req.task_id, model = %req.model, lane = %req.model, "admitted to its warm lane");
                        return Ok(Accepted {
                            task_id: req.task_id,
                            lane: req.model,
                            fallback: None,
                            submitted_at_ms: now,
                        });
                    }
                    refused => {
                        tracing::info!(task_id = %req.task_id, model = %req.model, answer = ?refused, "lane refused the publish; falling back");
                        warmlane_shared::routing::after_lane_refused()
                    }
                }
            }
        };
        self.publish_degraded(&req, &body, cause, degraded_deadline).await
    }

    async fn publish_degraded(
        &self,
        req: &ValidRequest,
        body: &[u8],
        cause: FallbackCause,
        deadline: u64,
    ) -> SubmitOutcome {
        let now = now_ms();
        let props = message_properties(&req.task_id, degraded_headers(now, cause));
        // Ready plus delivered-but-not-started stays within max_depth (the window's held
        // deliveries included; the broker's x-max-length bounds the ready ones alone).
        let limit = self.settings.degraded.max_depth;
        let answer = if self.store.routed_degraded(&req.task_id, cause, deadline, limit).await? {
            self.publisher.publish(&self.topology.degraded_exchange(), DEGRADED_KEY, body, props).await?
        } else {
            // Every place is taken: refused as the broker would refuse it at x-max-length.
            Published::Nacked
        };
        if answer == Published::Acked {
            if self.store.fallback_started(&req.model, cause).await? {
                metrics::counter!(m::FALLBACK_ACTIVATIONS, m::TAG_MODEL => req.model.clone(), m::TAG_CAUSE => cause.as_str()).increment(1);
                tracing::warn!(model = %req.model, cause = cause.as_str(), "degraded fallback activated");
            }
            metrics::counter!(m::REQUESTS_ROUTED, m::TAG_PATH => "degraded", m::TAG_MODEL => req.model.clone())
                .increment(1);
            tracing::info!(task_id = %req.task_id, model = %req.model, lane = DEGRADED_LANE, cause = cause.as_str(), "admitted to the degraded queue");
            let submitted_at_ms = req.submitted_at_ms.unwrap_or(now);
            return Ok(Accepted {
                task_id: req.task_id.clone(),
                lane: DEGRADED_LANE.into(),
                fallback: Some(cause),
                submitted_at_ms,
            });
        }
        let rejection = if answer == Published::Nacked {
            Rejection::queue_full(self.settings.degraded.max_depth)
        } else {
            tracing::error!(task_id = %req.task_id, "the degraded queue is not bound; check the topology");
            Rejection::new(ErrorCode::QueueOverloaded, "unroutable", "no degraded queue is bound; retry later")
        };
        let reply = Reply::coded(
            &req.task_id,
            ReplyStatus::Rejected,
            Some(DEGRADED_LANE),
            &rejection,
            Timings { queued_ms: Some(0), inference_ms: None },
        );
        self.store.finish(&reply, FinishWhen::NotTerminal).await?;
        metrics::counter!(m::QUEUE_OVERLOADED, m::TAG_REASON => rejection.reason.clone()).increment(1);
        metrics::counter!(m::REQUESTS_ROUTED, m::TAG_PATH => "rejected", m::TAG_MODEL => req.model.clone())
            .increment(1);
        tracing::warn!(task_id = %req.task_id, model = %req.model, reason = %rejection.reason, "queue_overloaded");
        Err(rejection.into())
    }

    /// Republishes a request whose lane wait ran out to the degraded queue (FR-021c).
    pub async fn move_to_degraded(&self, req: &ValidRequest) -> SubmitOutcome {
        let deadline = self.settings.degraded_deadline_ms(now_ms());
        self.publish_degraded(req, &req.to_msgpack(), FallbackCause::Capacity, deadline).await
    }

    async fn note_lane_ready(&self, model: &str) {
        match self.store.fallback_ended(model).await {
            Ok(Some((cause, ms))) => {
                metrics::histogram!(m::FALLBACK_DURATION_MS, m::TAG_MODEL => model.to_string(), m::TAG_CAUSE => cause.as_str()).record(ms as f64);
                tracing::info!(model, cause = cause.as_str(), duration_ms = ms, "degraded fallback ended");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(model, error = %Report(&e), "could not update the fallback record"),
        }
    }
}

/// Headers of a degraded message: when it entered the queue and why.
pub fn degraded_headers(now: u64, cause: FallbackCause) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_ENQUEUED_MS.into(), AMQPValue::LongLongInt(now as i64));
    headers.insert(HEADER_FALLBACK_CAUSE.into(), AMQPValue::LongString(LongString::from(cause.as_str())));
    headers
}
