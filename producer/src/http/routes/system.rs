//! Probes and status: `/health` (liveness), `/ready` (broker and Redis answer),
//! `/lanes` (the same JSON as `warmlane-producer lanes`, plus the degraded
//! queue's oldest wait) and `/models` (what the dashboard offers).

use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use axum::extract::State;
use axum::Json;
use redis::AsyncCommands;
use serde::Serialize;
use utoipa::ToSchema;
use warmlane_shared::reply::field;
use warmlane_shared::settings::DEGRADED_LANE;
use warmlane_shared::{now_ms, Settings};

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
    let (broker, redis) =
        tokio::time::timeout(super::READ_TIMEOUT, state.producer.ready()).await.unwrap_or((false, false));
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
        (status = 200, description = "Per-lane status; `degraded.oldest_wait_ms` is the wait of the oldest task still pending in the degraded queue (null when none)", body = Object),
        (status = 503, description = "`service_unavailable`", body = ErrorBody),
    )
)]
pub async fn lanes(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut status = super::bounded("reading lane status", crate::commands::lanes_status(&state.producer)).await?;
    let oldest = super::bounded("reading the degraded queue's oldest task", oldest_degraded_wait_ms(&state)).await?;
    if let Some(degraded) = status.get_mut("degraded").and_then(|d| d.as_object_mut()) {
        degraded.insert("oldest_wait_ms".into(), oldest.into());
    }
    Ok(Json(status))
}

/// How many of the earliest deadlines to inspect for the degraded queue's oldest task.
const OLDEST_SCAN: isize = 64;

/// The wait of the oldest task still pending on the degraded lane, from the deadline index:
/// a degraded task's deadline is its entry time plus the degraded wait and grace.
async fn oldest_degraded_wait_ms(state: &AppState) -> Result<Option<u64>, ApiError> {
    let store = state.producer.store();
    let mut c = store.connection();
    let earliest: Vec<(String, u64)> =
        c.zrange_withscores(store.keys().deadlines(), 0, OLDEST_SCAN - 1).await.map_err(crate::ProducerError::from)?;
    let settings = state.producer.settings();
    for (task_id, deadline) in earliest {
        let (status, lane): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(store.keys().task(&task_id))
            .arg(field::STATUS)
            .arg(field::LANE)
            .query_async(&mut c)
            .await
            .map_err(crate::ProducerError::from)?;
        if status.as_deref() == Some("pending") && lane.as_deref() == Some(DEGRADED_LANE) {
            return Ok(Some(degraded_wait_ms(deadline, now_ms(), settings)));
        }
    }
    Ok(None)
}

/// Pure: how long a degraded task with this deadline has waited at `now`.
pub fn degraded_wait_ms(deadline_ms: u64, now: u64, settings: &Settings) -> u64 {
    let entered = deadline_ms.saturating_sub(settings.degraded.max_wait_ms + settings.degraded.expiry_grace_ms);
    now.saturating_sub(entered)
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
    Json(model_infos(state.producer.settings()))
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

    #[test]
    fn degraded_wait_counts_from_entry() {
        let s = settings();
        let entered = 1_000_000;
        let deadline = entered + s.degraded.max_wait_ms + s.degraded.expiry_grace_ms;
        assert_eq!(degraded_wait_ms(deadline, entered + 1234, &s), 1234);
        assert_eq!(degraded_wait_ms(deadline, entered - 5, &s), 0);
    }
}
