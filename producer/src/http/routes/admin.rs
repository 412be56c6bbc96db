//! Operator routes behind the admin key: take a lane out of routing with a cause
//! (`manual` or `quota`), and put it back. Same effect as `warmlane-producer
//! disable|enable`.

use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warmlane_shared::{ErrorCode, FallbackCause, Rejection, Settings};

/// Body of `disable`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DisableRequest {
    /// `manual` (operator) or `quota` (provider denied the lane); default `manual`.
    pub cause: Option<String>,
    /// Free-form note for other operators.
    pub note: Option<String>,
}

/// The lane's flag after the change.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LaneFlag {
    /// The model.
    pub model: String,
    /// Whether it is disabled now.
    pub disabled: bool,
    /// The cause, when disabled.
    pub cause: Option<String>,
    /// For `enable`: whether it was disabled before.
    pub was_disabled: Option<bool>,
}

/// Pure: the model must have a dedicated lane.
pub fn known_lane(settings: &Settings, model: &str) -> Result<(), ApiError> {
    match settings.model(model) {
        None => Err(Rejection::new(
            ErrorCode::UnknownModel,
            "model",
            format!("unknown model; lanes: {}", settings.lane_models().collect::<Vec<_>>().join(", ")),
        )
        .into()),
        Some(m) if !m.dedicated_lane => Err(ApiError::invalid("model", "this model has no dedicated lane")),
        Some(_) => Ok(()),
    }
}

/// Pure: parses the body (empty means `manual`) into a cause and note.
pub fn disable_request(bytes: &[u8]) -> Result<(FallbackCause, String), ApiError> {
    let req: DisableRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        DisableRequest::default()
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::malformed("body", format!("the body is not a valid disable request: {e}")))?
    };
    let cause = FallbackCause::parse_operator(req.cause.as_deref().unwrap_or("manual"))
        .ok_or_else(|| ApiError::invalid("cause", "cause must be `manual` or `quota`"))?;
    Ok((cause, req.note.unwrap_or_default().chars().take(500).collect()))
}

/// Takes a lane out of routing; its requests go degraded with this cause.
#[utoipa::path(
    post, path = "/admin/lanes/{model}/disable", tag = "admin",
    params(("model" = String, Path, description = "A model with a dedicated lane")),
    request_body(content = DisableRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Disabled", body = LaneFlag),
        (status = 400, description = "`malformed_message`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no `x-admin-key`", body = ErrorBody),
        (status = 403, description = "`forbidden`: wrong key, or admin routes off", body = ErrorBody),
        (status = 422, description = "`unknown_model` or `invalid_parameter` (`cause`, `model`)", body = ErrorBody),
        (status = 503, description = "`service_unavailable`", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn disable(
    State(state): State<AppState>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Json<LaneFlag>, ApiError> {
    known_lane(state.backend.settings(), &model)?;
    let (cause, note) = disable_request(&body)?;
    super::bounded("disabling the lane", state.backend.disable_lane(&model, cause, &note)).await?;
    tracing::warn!(model = %model, cause = cause.as_str(), "lane disabled over HTTP");
    Ok(Json(LaneFlag { model, disabled: true, cause: Some(cause.as_str().into()), was_disabled: None }))
}

/// Puts a disabled lane back into routing.
#[utoipa::path(
    post, path = "/admin/lanes/{model}/enable", tag = "admin",
    params(("model" = String, Path, description = "A model with a dedicated lane")),
    responses(
        (status = 200, description = "Enabled", body = LaneFlag),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`unknown_model` or `invalid_parameter`", body = ErrorBody),
        (status = 503, description = "`service_unavailable`", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn enable(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<LaneFlag>, ApiError> {
    known_lane(state.backend.settings(), &model)?;
    let was = super::bounded("enabling the lane", state.backend.enable_lane(&model)).await?;
    tracing::info!(model = %model, was_disabled = was, "lane enabled over HTTP");
    Ok(Json(LaneFlag { model, disabled: false, cause: None, was_disabled: Some(was) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_bodies() {
        assert_eq!(disable_request(b"").unwrap().0, FallbackCause::Manual);
        assert_eq!(
            disable_request(br#"{"cause":"quota","note":"n"}"#).unwrap(),
            (FallbackCause::Quota, "n".to_string())
        );
        assert!(
            matches!(disable_request(br#"{"cause":"capacity"}"#), Err(ApiError::Rejected(r)) if r.reason == "cause")
        );
        assert_eq!(disable_request(b"{").unwrap_err().status(), 400);
    }
}
