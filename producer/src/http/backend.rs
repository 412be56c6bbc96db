//! [`Backend`]: everything the HTTP shim asks of the fleet, as one trait.
//!
//! The shim is an adapter: it turns HTTP into calls on the producer and back. The
//! seam lets a test serve [`super::app`] over an in-memory backend when what it
//! checks is HTTP (statuses, envelopes, auth, limits), with no broker or Redis
//! running; [`Producer`] is the one implementation that ships.

use crate::lanes::{self, LanesStatus};
use crate::producer::{Producer, SubmitOutcome};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::Arc;
use warmlane_infra::store::CancelOutcome;
use warmlane_infra::InfraError;
use warmlane_shared::{FallbackCause, Heartbeat, Settings};

/// Whether the shim's dependencies answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// RabbitMQ answers.
    pub broker: bool,
    /// Redis answers.
    pub redis: bool,
}

/// Task ids with their hashes, newest first.
pub type TaskHashes = Vec<(String, HashMap<String, String>)>;

/// What the HTTP handlers need of the fleet.
pub trait Backend: Send + Sync + 'static {
    /// The settings in force.
    fn settings(&self) -> &Arc<Settings>;

    /// Validates and submits a JSON request (admission, routing, confirms).
    fn submit_json<'a>(&'a self, body: &'a serde_json::Value) -> BoxFuture<'a, SubmitOutcome>;

    /// A task's hash (empty when unknown or expired).
    fn task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<HashMap<String, String>, InfraError>>;

    /// Up to `count` recent tasks from the `skip`-th newest on, with their hashes.
    fn recent_tasks(&self, skip: usize, count: usize) -> BoxFuture<'_, Result<TaskHashes, InfraError>>;

    /// Cancels a task (see [`warmlane_infra::Store::cancel`]).
    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelOutcome, InfraError>>;

    /// Whether the broker and Redis answer now.
    fn ready(&self) -> BoxFuture<'_, Readiness>;

    /// Every lane's status.
    fn lanes(&self) -> BoxFuture<'_, Result<LanesStatus, InfraError>>;

    /// Every live worker's last heartbeat.
    fn workers(&self) -> BoxFuture<'_, Result<Vec<Heartbeat>, InfraError>>;

    /// Takes a lane out of routing with a cause.
    fn disable_lane<'a>(
        &'a self,
        model: &'a str,
        cause: FallbackCause,
        note: &'a str,
    ) -> BoxFuture<'a, Result<(), InfraError>>;

    /// Puts a lane back into routing; whether it was disabled.
    fn enable_lane<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<bool, InfraError>>;
}

impl Backend for Producer {
    fn settings(&self) -> &Arc<Settings> {
        Producer::settings(self)
    }

    fn submit_json<'a>(&'a self, body: &'a serde_json::Value) -> BoxFuture<'a, SubmitOutcome> {
        Producer::submit_json(self, body).boxed()
    }

    fn task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<HashMap<String, String>, InfraError>> {
        self.store().task(task_id).boxed()
    }

    fn recent_tasks(&self, skip: usize, count: usize) -> BoxFuture<'_, Result<TaskHashes, InfraError>> {
        self.store().recent_tasks(skip, count).boxed()
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelOutcome, InfraError>> {
        self.store().cancel(task_id).boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Readiness> {
        async move {
            let (broker, redis) = Producer::ready(self).await;
            Readiness { broker, redis }
        }
        .boxed()
    }

    fn lanes(&self) -> BoxFuture<'_, Result<LanesStatus, InfraError>> {
        lanes::status(self).boxed()
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<Heartbeat>, InfraError>> {
        self.store().workers().boxed()
    }

    fn disable_lane<'a>(
        &'a self,
        model: &'a str,
        cause: FallbackCause,
        note: &'a str,
    ) -> BoxFuture<'a, Result<(), InfraError>> {
        self.store().disable_lane(model, cause, note).boxed()
    }

    fn enable_lane<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<bool, InfraError>> {
        self.store().enable_lane(model).boxed()
    }
}
