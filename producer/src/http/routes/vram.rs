//! Memory of the fleet, fed by the workers' heartbeats: `GET /api/v1/hardware/vram`
//! (per worker: budget, used, free, utilization level, pipelines with placements)
//! and `POST /api/v1/hardware/vram/check` (would a request of this size fit now?).
//!
//! The workers' memory snapshot is the typed [`MemorySnapshot`] of `warmlane-shared`,
//! written by the worker's memory manager; a worker whose engine has no manager
//! sends none. The decisions (level, fit) are pure functions with table tests.

use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warmlane_shared::settings::{MemoryEstimate, DEGRADED_LANE};
use warmlane_shared::{ErrorCode, Heartbeat, MemorySnapshot, Rejection, WorkerState};

/// Utilization at or above which the bar turns amber.
pub const AMBER_AT: f64 = 0.6;
/// Utilization at or above which the bar turns red.
pub const RED_AT: f64 = 0.8;
/// Utilization at or above which the dashboard warns.
pub const CRITICAL_AT: f64 = 0.9;

/// Color of a memory bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below 60 %.
    Green,
    /// 60 % to below 80 %.
    Amber,
    /// 80 % and above.
    Red,
}

/// Pure: the color of a utilization in 0..=1.
pub fn level(utilization: f64) -> Level {
    if utilization >= RED_AT {
        Level::Red
    } else if utilization >= AMBER_AT {
        Level::Amber
    } else {
        Level::Green
    }
}

/// The figures read from a worker's memory snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Memory the worker may use.
    pub budget: Option<u64>,
    /// In use now.
    pub used: Option<u64>,
    /// Free within the budget.
    pub free: Option<u64>,
}

/// Pure: the budget, used and free bytes of a snapshot (all unknown without one).
pub fn figures(memory: Option<&MemorySnapshot>) -> Figures {
    memory.map_or(Figures::default(), |m| Figures {
        budget: Some(m.budget_bytes),
        used: Some(m.used_bytes),
        free: Some(m.free_bytes),
    })
}

/// Pure: models whose pipeline the worker holds.
pub fn resident_models(memory: Option<&MemorySnapshot>) -> Vec<String> {
    memory.map(|m| m.resident_models().map(str::to_string).collect()).unwrap_or_default()
}

/// One worker's memory, as `GET /api/v1/hardware/vram` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerMemory {
    /// Worker id.
    pub worker_id: String,
    /// `degraded` or a model.
    pub lane: String,
    /// Model resident now.
    pub model: Option<String>,
    /// Worker state (`warm`, `busy`, ...).
    #[schema(value_type = String)]
    pub state: WorkerState,
    /// Heartbeat time, unix ms.
    pub at_ms: u64,
    /// Budget bytes, when reported.
    pub budget_bytes: Option<u64>,
    /// Used bytes, when reported.
    pub used_bytes: Option<u64>,
    /// Free bytes, when reported or derivable.
    pub free_bytes: Option<u64>,
    /// used / budget.
    pub utilization: Option<f64>,
    /// Bar color.
    pub level: Option<Level>,
    /// Utilization at or above 90 %.
    pub critical: bool,
    /// The worker's snapshot as it sent it (pipelines, components, placements);
    /// null for a worker without a memory manager.
    #[schema(value_type = Object)]
    pub memory: Option<MemorySnapshot>,
}

/// Pure: the view of one heartbeat.
pub fn worker_memory(hb: &Heartbeat) -> WorkerMemory {
    let f = figures(hb.memory.as_ref());
    let utilization = hb.memory.as_ref().and_then(MemorySnapshot::utilization);
    WorkerMemory {
        worker_id: hb.worker_id.clone(),
        lane: hb.lane.clone(),
        model: hb.model.clone(),
        state: hb.state,
        at_ms: hb.at_ms,
        budget_bytes: f.budget,
        used_bytes: f.used,
        free_bytes: f.free,
        utilization,
        level: utilization.map(level),
        critical: utilization.is_some_and(|u| u >= CRITICAL_AT),
        memory: hb.memory.clone(),
    }
}

/// The fleet's memory.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VramStatus {
    /// Per live worker.
    pub workers: Vec<WorkerMemory>,
    /// Amber, red and critical thresholds (fractions).
    #[schema(value_type = Object)]
    pub thresholds: serde_json::Value,
}

/// Memory per worker from the heartbeats.
#[utoipa::path(
    get, path = "/api/v1/hardware/vram", tag = "hardware",
    responses((status = 200, description = "Per-worker memory", body = VramStatus), (status = 503, description = "`service_unavailable`", body = ErrorBody))
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<VramStatus>, ApiError> {
    let workers = super::bounded("reading heartbeats", state.backend.workers()).await?;
    Ok(Json(VramStatus {
        workers: workers.iter().map(worker_memory).collect(),
        thresholds: serde_json::json!({ "amber": AMBER_AT, "red": RED_AT, "critical": CRITICAL_AT }),
    }))
}

/// A pre-flight question: would this request fit now?
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FitRequest {
    /// The model.
    pub model: String,
    /// Width; the model's default when left out.
    pub width: Option<u32>,
    /// Height; the model's default when left out.
    pub height: Option<u32>,
    /// Frames; the model's default when left out.
    pub frames: Option<u32>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FitAnswer {
    /// Whether the best worker has room.
    pub fits: bool,
    /// Bytes the request needs on that worker (weights are left out where it already holds the model).
    pub required_bytes: u64,
    /// Free bytes of the best worker, when any reports memory.
    pub free_bytes: Option<u64>,
    /// The best worker.
    pub worker_id: Option<String>,
    /// For humans.
    pub message: String,
}

/// A candidate worker for the fit check.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Worker id.
    pub worker_id: String,
    /// Its lane.
    pub lane: String,
    /// Its free bytes, if reported.
    pub free: Option<u64>,
    /// Models it holds.
    pub resident: Vec<String>,
}

/// Pure: bytes a request of this size needs (`weights + per_voxel * w*h*frames`), saturating.
pub fn required_bytes(estimate: &MemoryEstimate, width: u32, height: u32, frames: u32, resident: bool) -> u64 {
    let voxels = u128::from(width) * u128::from(height) * u128::from(frames);
    let runtime = voxels.saturating_mul(u128::from(estimate.runtime_bytes_per_voxel));
    let weights = if resident { 0 } else { u128::from(estimate.weights_bytes) };
    u64::try_from(runtime.saturating_add(weights)).unwrap_or(u64::MAX)
}

/// Pure: the fit against the best worker that can serve `model` (its lane, or degraded).
pub fn check_fit(model: &str, estimate: &MemoryEstimate, size: (u32, u32, u32), workers: &[Candidate]) -> FitAnswer {
    let (w, h, f) = size;
    let cold = required_bytes(estimate, w, h, f, false);
    let best = workers
        .iter()
        .filter(|c| c.lane == model || c.lane == DEGRADED_LANE)
        .filter_map(|c| {
            let need = required_bytes(estimate, w, h, f, c.resident.iter().any(|m| m == model));
            Some((c, need, c.free?))
        })
        .max_by_key(|(_, need, free)| i128::from(*free) - i128::from(*need));
    match best {
        None => FitAnswer {
            fits: false,
            required_bytes: cold,
            free_bytes: None,
            worker_id: None,
            message: format!(
                "no worker that can serve `{model}` reports its free memory; {cold} bytes would be needed"
            ),
        },
        Some((c, need, free)) => FitAnswer {
            fits: free >= need,
            required_bytes: need,
            free_bytes: Some(free),
            worker_id: Some(c.worker_id.clone()),
            message: if free >= need {
                format!("fits on {}: needs {need} bytes, {free} free", c.worker_id)
            } else {
                format!("does not fit: needs {need} bytes, the best worker ({}) has {free} free", c.worker_id)
            },
        },
    }
}

fn body_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::invalid("body", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::malformed("content_type", "the body must be sent as `content-type: application/json`")
        }
        other => ApiError::malformed("body", other.body_text()),
    }
}

fn within(name: &str, value: u32, p: &warmlane_shared::settings::Param<u32>) -> Result<u32, ApiError> {
    let (min, max) = (p.min.unwrap_or(1), p.max.unwrap_or(u32::MAX));
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(name, format!("{name} must be {min}..={max}, got {value}")))
    }
}

/// Pre-flight memory check of a request size against the workers' free memory.
#[utoipa::path(
    post, path = "/api/v1/hardware/vram/check", tag = "hardware",
    request_body(content = FitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The answer (also when it does not fit)", body = FitAnswer),
        (status = 400, description = "`malformed_message`", body = ErrorBody),
        (status = 422, description = "`unknown_model` or `invalid_parameter`", body = ErrorBody),
        (status = 503, description = "`service_unavailable`", body = ErrorBody),
    )
)]
pub async fn check(
    State(state): State<AppState>,
    body: Result<Json<FitRequest>, JsonRejection>,
) -> Result<Json<FitAnswer>, ApiError> {
    let Json(req) = body.map_err(body_error)?;
    let settings = state.backend.settings();
    let Some(m) = settings.model(&req.model) else {
        return Err(Rejection::new(
            ErrorCode::UnknownModel,
            "model",
            format!("unknown model; known models: {}", settings.models.keys().cloned().collect::<Vec<_>>().join(", ")),
        )
        .into());
    };
    let width = within("width", req.width.unwrap_or(m.width.default), &m.width)?;
    let height = within("height", req.height.unwrap_or(m.height.default), &m.height)?;
    let frames = within("frames", req.frames.unwrap_or(m.frames.default), &m.frames)?;
    let candidates: Vec<Candidate> = super::bounded("reading heartbeats", state.backend.workers())
        .await?
        .iter()
        .map(|hb| Candidate {
            worker_id: hb.worker_id.clone(),
            lane: hb.lane.clone(),
            free: figures(hb.memory.as_ref()).free,
            resident: resident_models(hb.memory.as_ref()),
        })
        .collect();
    Ok(Json(check_fit(&req.model, &m.memory, (width, height, frames), &candidates)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EST: MemoryEstimate = MemoryEstimate { weights_bytes: 1000, runtime_bytes_per_voxel: 2 };

    fn cand(id: &str, lane: &str, free: Option<u64>, resident: &[&str]) -> Candidate {
        Candidate {
            worker_id: id.into(),
            lane: lane.into(),
            free,
            resident: resident.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn levels_follow_the_thresholds() {
        for (u, l) in [
            (0.0, Level::Green),
            (0.599, Level::Green),
            (0.6, Level::Amber),
            (0.799, Level::Amber),
            (0.8, Level::Red),
            (1.0, Level::Red),
        ] {
            assert_eq!(level(u), l, "{u}");
        }
    }

    fn snapshot(budget: u64, used: u64, models: &[&str]) -> MemorySnapshot {
        use warmlane_shared::memory::{Backend, BudgetSource, PipelineStatus};
        let pipelines = models
            .iter()
            .map(|m| PipelineStatus { model: m.to_string(), bytes: 0, last_used_ms: 0, components: vec![] })
            .collect();
        MemorySnapshot {
            used_bytes: used,
            free_bytes: budget.saturating_sub(used),
            pipelines,
            ..MemorySnapshot::empty(budget, BudgetSource::Flag, Backend::Rss)
        }
    }

    #[test]
    fn figures_come_from_the_snapshot() {
        assert_eq!(
            figures(Some(&snapshot(100, 30, &[]))),
            Figures { budget: Some(100), used: Some(30), free: Some(70) }
        );
        assert_eq!(figures(None), Figures::default());
        assert_eq!(resident_models(Some(&snapshot(1, 0, &["anisora", "phr00t"]))), vec!["anisora", "phr00t"]);
        assert!(resident_models(None).is_empty());
    }

    #[test]
    fn required_bytes_is_weights_plus_voxels() {
        assert_eq!(required_bytes(&EST, 4, 4, 2, false), 1000 + 2 * 32);
        assert_eq!(required_bytes(&EST, 4, 4, 2, true), 64);
        let huge = MemoryEstimate { weights_bytes: u64::MAX, runtime_bytes_per_voxel: u64::MAX };
        assert_eq!(required_bytes(&huge, u32::MAX, u32::MAX, u32::MAX, false), u64::MAX);
    }

    #[test]
    fn fit_table() {
        let size = (4, 4, 2); // 64 runtime bytes, 1064 cold
        let cases: Vec<(Vec<Candidate>, bool, Option<&str>, u64)> = vec![
            (vec![], false, None, 1064),
            (vec![cand("a", "anisora", None, &[])], false, None, 1064),
            (vec![cand("a", "anisora", Some(1064), &[])], true, Some("a"), 1064),
            (vec![cand("a", "anisora", Some(1063), &[])], false, Some("a"), 1064),
            (vec![cand("a", "anisora", Some(100), &["anisora"])], true, Some("a"), 64),
            (vec![cand("p", "phr00t", Some(1_000_000), &[])], false, None, 1064),
            (vec![cand("a", "anisora", Some(500), &[]), cand("d", "degraded", Some(2000), &[])], true, Some("d"), 1064),
        ];
        for (i, (workers, fits, best, need)) in cases.into_iter().enumerate() {
            let a = check_fit("anisora", &EST, size, &workers);
            assert_eq!(
                (a.fits, a.worker_id.as_deref(), a.required_bytes),
                (fits, best, need),
                "case {i}: {}",
                a.message
            );
        }
    }

    #[test]
    fn worker_view_flags_critical() {
        let hb = Heartbeat {
            worker_id: "w".into(),
            lane: "anisora".into(),
            model: None,
            state: WorkerState::Warm,
            pid: 1,
            started_at_ms: 0,
            at_ms: 0,
            loads: 0,
            tasks: 0,
            memory: Some(snapshot(100, 95, &[])),
        };
        let v = worker_memory(&hb);
        assert_eq!(v.level, Some(Level::Red));
        assert!(v.critical);
        assert_eq!(serde_json::to_value(v.state).unwrap(), "warm");
        let bare = worker_memory(&Heartbeat { memory: None, ..hb });
        assert_eq!((bare.level, bare.critical, bare.free_bytes), (None, false, None));
    }
}
