//! Probes and status: `/health` (liveness), `/ready` (broker and Redis answer),
//! `/lanes` ([`crate::lanes::status`], as `warmlane-producer lanes` prints it),
//! `/models` (what the dashboard offers) and `/metrics` (Prometheus).

use crate::http::backend::Readiness;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::lanes::LanesStatus;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use warmlane_shared::Settings;

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Both answer.
    pub ready: bool,
    /// RabbitMQ answers.
    pub broker: bool,
    /// Redis answers.
    pub redis: bool,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, description = "Alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: RabbitMQ and Redis both answer.
#[utoipa::path(
    get, path = "/ready", tag = "system",
    responses(
        (status = 200, description = "Broker and Redis answer", body = Ready),
        (status = 503, description = "`service_unavailable`; `reason` is `broker`, `redis` or `broker,redis`", body = ErrorBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let Readiness { broker, redis } = tokio::time::timeout(super::READ_TIMEOUT, state.backend.ready())
        .await
        .unwrap_or(Readiness { broker: false, redis: false });
    match (broker, redis) {
        (true, true) => Ok(Json(Ready { ready: true, broker, redis })),
        _ => {
            let failed: Vec<&str> =
                [(!broker).then_some("broker"), (!redis).then_some("redis")].into_iter().flatten().collect();
            Err(ApiError::Unavailable { reason: failed.join(","), detail: "readiness probe failed".into() })
        }
    }
}

/// Lanes: readiness, warm workers, queue depth, fallback; the degraded queue and workers.
#[utoipa::path(
    get, path = "/lanes", tag = "system",
    responses(
        (status = 200, description = "Per-lane status; `degraded.oldest_wait_ms` is the wait of the oldest task still pending in the degraded queue (null when none)", body = LanesStatus),
        (status = 503, description = "`service_unavailable`", body = ErrorBody),
    )
)]
pub async fn lanes(State(state): State<AppState>) -> Result<Json<LanesStatus>, ApiError> {
    Ok(Json(super::bounded("reading lane status", state.backend.lanes()).await?))
}

/// This shim's metrics in the Prometheus text format: the names, labels and buckets
/// the statsd-exporter gives its StatsD lines (`ops/statsd/mapping.yml`), so the
/// Grafana dashboard reads either. `warmlane-producer serve` always records them;
/// lane readiness and queue depths are sampled every 5 s.
#[utoipa::path(
    get, path = "/metrics", tag = "system",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4 (`warmlane_lane_ready`, `warmlane_lane_depth`, `warmlane_degraded_depth`, `warmlane_requests_routed_total`, ...; label `prefix` is `--metrics-prefix`)", content_type = "text/plain; version=0.0.4", body = String),
        (status = 404, description = "`not_found`: this process records no Prometheus metrics (the router embedded without `serve`'s exporters)", body = ErrorBody),
    )
)]
pub async fn metrics() -> Result<Response, ApiError> {
    let text = warmlane_infra::prometheus::render().ok_or_else(|| ApiError::NotFound {
        what: "metrics",
        message: "this process records no Prometheus metrics".into(),
    })?;
    Ok(([(header::CONTENT_TYPE, warmlane_infra::prometheus::CONTENT_TYPE)], text).into_response())
}

/// A model as the dashboard shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    /// Name (the lane and routing key).
    pub name: String,
    /// Name for people.
    pub display_name: String,
    /// Whether it has a warm lane.
    pub dedicated_lane: bool,
    /// Sampler steps: default, fixed, min, max.
    #[schema(value_type = Object)]
    pub steps: serde_json::Value,
    /// Guidance scale: default, fixed, min, max.
    #[schema(value_type = Object)]
    pub cfg: serde_json::Value,
    /// Width limits.
    #[schema(value_type = Object)]
    pub width: serde_json::Value,
    /// Height limits.
    #[schema(value_type = Object)]
    pub height: serde_json::Value,
    /// Frame limits.
    #[schema(value_type = Object)]
    pub frames: serde_json::Value,
    /// Longest prompt.
    pub prompt_max_chars: u32,
}

/// Pure: the models of the settings, in name order.
pub fn model_infos(settings: &Settings) -> Vec<ModelInfo> {
    settings
        .models
        .iter()
        .map(|(name, m)| ModelInfo {
            name: name.clone(),
            display_name: m.display_name.clone(),
            dedicated_lane: m.dedicated_lane,
            steps: j(&m.steps),
            cfg: j(&m.cfg),
            width: j(&m.width),
            height: j(&m.height),
            frames: j(&m.frames),
            prompt_max_chars: m.prompt_max_chars,
        })
        .collect()
}

fn j<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The models of `inference_settings.json` with their parameter rules.
#[utoipa::path(get, path = "/models", tag = "system", responses((status = 200, description = "Models", body = Vec<ModelInfo>)))]
pub async fn models(State(state): State<AppState>) -> Json<Vec<ModelInfo>> {
    Json(model_infos(state.backend.settings()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../inference_settings.json");
        Settings::load(std::path::Path::new(path)).unwrap()
    }

    #[test]
    fn models_list_fixed_parameters() {
        let infos = model_infos(&settings());
        let anisora = infos.iter().find(|m| m.name == "anisora").unwrap();
        assert_eq!(anisora.steps["default"], 8);
        assert_eq!(anisora.steps["fixed"], true);
        let phr00t = infos.iter().find(|m| m.name == "phr00t").unwrap();
        assert_eq!(phr00t.cfg["default"], 1.0);
    }
}
