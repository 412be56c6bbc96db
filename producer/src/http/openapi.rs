//! The OpenAPI 3 document of the shim, served at `/openapi.json`.
//!
//! Every handler carries its own `#[utoipa::path]`; this file lists them. A test
//! checks that every row of [`super::app::routes`] appears here, so the document
//! cannot drift from the router.

use super::error::{ErrorBody, ErrorDetail};
use super::routes::{admin, dashboard, docs, generate, history, result, system, tasks, vram};
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "warmlane HTTP shim", description = "Submit video generation requests to the warmlane fleet and follow them. Errors use the envelope `{\"error\": {\"code\", \"reason\", \"message\"}}`; 503 answers carry `Retry-After`."),
    paths(
        dashboard::index, dashboard::script, dashboard::history,
        system::health, system::ready, system::metrics, system::lanes, system::models,
        document, docs::page, docs::bundle, docs::css,
        vram::status, vram::check,
        generate::generate,
        history::list, tasks::task, history::cancel, tasks::events, result::result, result::preview,
        admin::disable, admin::enable,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Security),
    tags(
        (name = "tasks", description = "Submit and follow generation tasks (API key)"),
        (name = "system", description = "Probes, metrics, lanes and models"),
        (name = "hardware", description = "Worker memory from heartbeats"),
        (name = "admin", description = "Lane operations (admin key)"),
        (name = "dashboard", description = "The operator dashboard"),
        (name = "docs", description = "This documentation in Swagger UI (vendored, no network)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(super::auth::API_KEY_HEADER))),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(super::auth::ADMIN_KEY_HEADER))),
        );
    }
}

/// The document as JSON.
pub fn json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "The OpenAPI 3 document", body = Object)))]
pub async fn document() -> Json<serde_json::Value> {
    Json(json())
}
