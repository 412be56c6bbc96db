//! The shim's HTTP behaviour over an in-memory [`Backend`], with no broker or Redis
//! running: what these tests check is HTTP (statuses, envelopes, headers, keys), and
//! the in-memory backend lets them do what the real servers cannot do on demand, such
//! as failing one dependency at a time. Validation is the real shared validator. The
//! same routes against the real RabbitMQ and Redis are in `http_handlers.rs`.

mod http_support;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http_support::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use warmlane_infra::store::CancelOutcome;
use warmlane_infra::{InfraError, Service};
use warmlane_producer::http::{app, AppState, Backend, HttpConfig, Readiness, ServeArgs};
use warmlane_producer::lanes::{DegradedStatus, LaneStatus, LanesStatus};
use warmlane_producer::{Accepted, ProducerError, SubmitOutcome};
use warmlane_shared::{now_ms, FallbackCause, Heartbeat, Settings};

/// A password that must never reach a client.
const SECRET: &str = "hunter2";

/// The fleet as a few maps, with switches to take the broker or Redis away.
struct InMemory {
    settings: Arc<Settings>,
    tasks: Mutex<HashMap<String, HashMap<String, String>>>,
    disabled: Mutex<Vec<(String, FallbackCause)>>,
    broker_up: AtomicBool,
    redis_up: AtomicBool,
}

impl InMemory {
    fn new() -> Arc<InMemory> {
        Arc::new(InMemory {
            settings: Arc::new(settings_with(|_| {})),
            tasks: Mutex::default(),
            disabled: Mutex::default(),
            broker_up: AtomicBool::new(true),
            redis_up: AtomicBool::new(true),
        })
    }

    fn redis(&self) -> Result<(), InfraError> {
        if self.redis_up.load(Ordering::SeqCst) {
            return Ok(());
        }
        let io = std::io::Error::other(format!("redis://:{SECRET}@10.0.0.9:6379 refused the connection"));
        Err(InfraError::Redis(io.into()))
    }

    fn broker(&self) -> Result<(), InfraError> {
        if self.broker_up.load(Ordering::SeqCst) {
            return Ok(());
        }
        let url = format!("amqp://guest:{SECRET}@10.0.0.9/");
        Err(InfraError::Connect { service: Service::Broker, url, source: "connection refused".into() })
    }

    fn submit(&self, body: &serde_json::Value) -> SubmitOutcome {
        let req = warmlane_shared::validate_json(body, &self.settings).map_err(|f| f.rejection)?;
        self.redis()?;
        self.broker()?;
        let task: HashMap<String, String> =
            [("status", "pending"), ("model", &req.model), ("lane", &req.model), ("progress", "0/8")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).insert(req.task_id.clone(), task);
        Ok(Accepted { task_id: req.task_id, lane: req.model, fallback: None, submitted_at_ms: now_ms() })
    }

    fn lanes_now(&self) -> LanesStatus {
        let lane = |m: &warmlane_shared::ModelSettings| LaneStatus {
            ready: false,
            dedicated: m.dedicated_lane,
            warm_workers: 0,
            consumers: Some(0),
            queue_depth: Some(0),
            cold_starts: 0,
            disabled: None,
            fallback: None,
        };
        LanesStatus {
            lanes: self.settings.models.iter().map(|(name, m)| (name.clone(), lane(m))).collect::<BTreeMap<_, _>>(),
            degraded: DegradedStatus {
                queue_depth: Some(0),
                max_depth: self.settings.degraded.max_depth,
                max_wait_ms: self.settings.degraded.max_wait_ms,
                workers: 0,
                cold_starts: 0,
                oldest_wait_ms: None,
            },
            workers: vec![],
        }
    }
}

impl Backend for InMemory {
    fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    fn submit_json<'a>(&'a self, body: &'a serde_json::Value) -> BoxFuture<'a, SubmitOutcome> {
        async move { self.submit(body) }.boxed()
    }

    fn task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<HashMap<String, String>, InfraError>> {
        async move {
            self.redis()?;
            Ok(self.tasks.lock().unwrap().get(task_id).cloned().unwrap_or_default())
        }
        .boxed()
    }

    fn recent_tasks(
        &self,
        skip: usize,
        count: usize,
    ) -> BoxFuture<'_, Result<warmlane_producer::http::backend::TaskHashes, InfraError>> {
        async move {
            self.redis()?;
            let tasks = self.tasks.lock().unwrap();
            Ok(tasks.iter().skip(skip).take(count).map(|(id, h)| (id.clone(), h.clone())).collect())
        }
        .boxed()
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelOutcome, InfraError>> {
        async move {
            self.redis()?;
            let tasks = self.tasks.lock().unwrap();
            Ok(match tasks.get(task_id).and_then(|h| h.get("status")) {
                None => CancelOutcome::Unknown,
                Some(s) => CancelOutcome::Finished(s.clone()),
            })
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Readiness> {
        let up = Readiness { broker: self.broker().is_ok(), redis: self.redis().is_ok() };
        async move { up }.boxed()
    }

    fn lanes(&self) -> BoxFuture<'_, Result<LanesStatus, InfraError>> {
        async move { self.redis().map(|()| self.lanes_now()) }.boxed()
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<Heartbeat>, InfraError>> {
        async move { self.redis().map(|()| vec![]) }.boxed()
    }

    fn disable_lane<'a>(
        &'a self,
        model: &'a str,
        cause: FallbackCause,
        _note: &'a str,
    ) -> BoxFuture<'a, Result<(), InfraError>> {
        async move {
            self.redis()?;
            self.disabled.lock().unwrap().push((model.to_string(), cause));
            Ok(())
        }
        .boxed()
    }

    fn enable_lane<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<bool, InfraError>> {
        async move {
            self.redis()?;
            let mut disabled = self.disabled.lock().unwrap();
            let was = disabled.iter().any(|(m, _)| m == model);
            disabled.retain(|(m, _)| m != model);
            Ok(was)
        }
        .boxed()
    }
}

fn app_over(backend: Arc<InMemory>, admin_key: Option<&str>) -> axum::Router {
    let mut args = ServeArgs::for_tests(std::env::temp_dir().join("warmlane-http-app"));
    args.admin_key = admin_key.map(str::to_string);
    let config = HttpConfig::from_args(&args).expect("config");
    app(AppState::new(backend, config))
}

#[tokio::test]
async fn requests_are_admitted_followed_and_refused_over_any_backend() {
    let backend = InMemory::new();
    let app = app_over(backend.clone(), None);
    let accepted = post_json(&app, "/generate", &anisora("a lantern"), &[]).await;
    assert_eq!(accepted.status, 202, "{}", String::from_utf8_lossy(&accepted.bytes));
    let id = accepted.json()["task_id"].as_str().expect("a task id").to_string();
    assert_eq!(accepted.headers["location"], format!("/tasks/{id}").as_str());
    let task = get(&app, &format!("/tasks/{id}"), &[]).await;
    assert_eq!(task.status, 200);
    assert_eq!(task.json()["status"], "pending");

    let mut bad = anisora("a lantern");
    bad["steps"] = 3.into();
    let refused = post_json(&app, "/generate", &bad, &[]).await.envelope(422, "invalid_parameter");
    assert_eq!(refused["reason"], "steps");
    assert_eq!(backend.tasks.lock().unwrap().len(), 1, "a refused request reaches nothing");
    get(&app, "/tasks/never-seen", &[]).await.envelope(404, "not_found");
    let lanes = get(&app, "/lanes", &[]).await;
    assert_eq!(lanes.status, 200);
    assert_eq!(lanes.json()["lanes"]["anisora"]["ready"], false);
    assert_eq!(lanes.json()["degraded"]["max_depth"], 25);
}

#[tokio::test]
async fn a_dependency_that_is_down_is_503_naming_it_without_details() {
    let backend = InMemory::new();
    let app = app_over(backend.clone(), None);
    backend.redis_up.store(false, Ordering::SeqCst);
    let task = get(&app, "/tasks/t-1", &[]).await;
    assert_eq!(task.envelope(503, "service_unavailable")["reason"], "redis");
    assert!(task.headers.contains_key("retry-after"), "a 503 says when to come back");
    assert_eq!(get(&app, "/lanes", &[]).await.envelope(503, "service_unavailable")["reason"], "redis");
    assert_eq!(get(&app, "/api/v1/hardware/vram", &[]).await.envelope(503, "service_unavailable")["reason"], "redis");

    backend.redis_up.store(true, Ordering::SeqCst);
    backend.broker_up.store(false, Ordering::SeqCst);
    let submit = post_json(&app, "/generate", &anisora("a kite"), &[]).await;
    assert_eq!(submit.envelope(503, "service_unavailable")["reason"], "broker");
    assert!(backend.tasks.lock().unwrap().is_empty());
    backend.redis_up.store(false, Ordering::SeqCst);
    let ready = get(&app, "/ready", &[]).await;
    assert_eq!(ready.envelope(503, "service_unavailable")["reason"], "broker,redis");
    for answer in [task, submit, ready] {
        let body = String::from_utf8_lossy(&answer.bytes).to_string();
        assert!(!body.contains(SECRET), "{body}");
    }
}

#[tokio::test]
async fn admin_routes_reach_the_backend_only_with_the_key() {
    let backend = InMemory::new();
    let app = app_over(backend.clone(), Some("adm-key"));
    let disable = "/admin/lanes/anisora/disable";
    post_json(&app, disable, &json!({"cause": "quota"}), &[]).await.envelope(401, "unauthorized");
    post_json(&app, disable, &json!({"cause": "quota"}), &[("x-admin-key", "nope")]).await.envelope(403, "forbidden");
    assert!(backend.disabled.lock().unwrap().is_empty(), "a refused call changes nothing");
    let done = post_json(&app, disable, &json!({"cause": "quota"}), &[("x-admin-key", "adm-key")]).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.json()["cause"], "quota");
    assert_eq!(*backend.disabled.lock().unwrap(), [("anisora".to_string(), FallbackCause::Quota)]);
    let enabled = post_json(&app, "/admin/lanes/anisora/enable", &json!({}), &[("x-admin-key", "adm-key")]).await;
    assert_eq!(enabled.json()["was_disabled"], true);
    let unknown = post_json(&app, "/admin/lanes/nope/disable", &json!({}), &[("x-admin-key", "adm-key")]).await;
    assert!(unknown.status.is_client_error(), "{}", unknown.status);
}

#[test]
fn producer_errors_keep_their_cause() {
    let e = ProducerError::Infra(InfraError::Redis(std::io::Error::other("reset").into()));
    assert!(e.is_unavailable() && !e.is_unpublished());
    assert!(std::error::Error::source(&e).is_some(), "the infrastructure error is the source chain");
}
