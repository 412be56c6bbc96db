//! The router: one route table ([`routes`]) builds it, and the OpenAPI test reads
//! the same table, so a route cannot be served without being documented.
//!
//! `app(state)` returns a plain [`Router`], so handlers are tested with
//! `oneshot` and the same value is served on a real socket.

use super::error::ApiError;
use super::{auth, routes, Backend, HttpConfig};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What every handler shares: the fleet behind the shim and the checked settings.
#[derive(Clone)]
pub struct AppState {
    /// Admission, routing, Redis: the [`crate::Producer`] in service.
    pub backend: Arc<dyn Backend>,
    /// Keys, limits, results dir.
    pub config: Arc<HttpConfig>,
}

impl AppState {
    /// Bundles the backend and the settings.
    pub fn new(backend: Arc<dyn Backend>, config: HttpConfig) -> AppState {
        AppState { backend, config: Arc::new(config) }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes, status, metrics, documentation, the dashboard.
    Public,
    /// Callers with an API key in `x-api-key` (when keys are configured).
    ApiKey,
    /// Operators with the admin key in `x-admin-key`.
    Admin,
}

/// One row of the route table.
pub struct RouteSpec {
    /// Path in axum's (and OpenAPI's) `{param}` syntax.
    pub path: &'static str,
    /// The method.
    pub method: Method,
    /// Who may call it.
    pub access: Access,
    /// The handler.
    pub handler: MethodRouter<AppState>,
}

fn spec(path: &'static str, method: Method, access: Access, handler: MethodRouter<AppState>) -> RouteSpec {
    RouteSpec { path, method, access, handler }
}

/// The single route table.
pub fn routes() -> Vec<RouteSpec> {
    use Access::{Admin, ApiKey, Public};
    vec![
        spec("/", Method::GET, Public, get(routes::dashboard::index)),
        spec("/dashboard.js", Method::GET, Public, get(routes::dashboard::script)),
        spec("/history.js", Method::GET, Public, get(routes::dashboard::history)),
        spec("/health", Method::GET, Public, get(routes::system::health)),
        spec("/ready", Method::GET, Public, get(routes::system::ready)),
        spec("/metrics", Method::GET, Public, get(routes::system::metrics)),
        spec("/lanes", Method::GET, Public, get(routes::system::lanes)),
        spec("/models", Method::GET, Public, get(routes::system::models)),
        spec("/openapi.json", Method::GET, Public, get(super::openapi::document)),
        spec("/docs", Method::GET, Public, get(routes::docs::page)),
        spec("/docs/swagger-ui-bundle.js", Method::GET, Public, get(routes::docs::bundle)),
        spec("/docs/swagger-ui.css", Method::GET, Public, get(routes::docs::css)),
        spec("/api/v1/hardware/vram", Method::GET, Public, get(routes::vram::status)),
        spec("/api/v1/hardware/vram/check", Method::POST, Public, post(routes::vram::check)),
        spec("/generate", Method::POST, ApiKey, post(routes::generate::generate)),
        spec("/tasks", Method::GET, ApiKey, get(routes::history::list)),
        spec("/tasks/{id}", Method::GET, ApiKey, get(routes::tasks::task)),
        spec("/tasks/{id}", Method::DELETE, ApiKey, delete(routes::history::cancel)),
        spec("/tasks/{id}/events", Method::GET, ApiKey, get(routes::tasks::events)),
        spec("/tasks/{id}/result", Method::GET, ApiKey, get(routes::result::result)),
        spec("/tasks/{id}/preview", Method::GET, ApiKey, get(routes::result::preview)),
        spec("/admin/lanes/{model}/disable", Method::POST, Admin, post(routes::admin::disable)),
        spec("/admin/lanes/{model}/enable", Method::POST, Admin, post(routes::admin::enable)),
    ]
}

/// `(path, method, access)` of every route, for tests and documentation.
pub fn route_table() -> Vec<(&'static str, Method, Access)> {
    routes().into_iter().map(|r| (r.path, r.method, r.access)).collect()
}

/// Builds the router: the route table, auth per access class, body limit, CORS, request log.
pub fn app(state: AppState) -> Router {
    let (mut public, mut keyed, mut admin) = (Router::new(), Router::new(), Router::new());
    for r in routes() {
        match r.access {
            Access::Public => public = public.route(r.path, r.handler),
            Access::ApiKey => keyed = keyed.route(r.path, r.handler),
            Access::Admin => admin = admin.route(r.path, r.handler),
        }
    }
    let keyed = keyed.route_layer(middleware::from_fn_with_state(state.clone(), auth::require_api_key));
    let admin = admin.route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin_key));
    let mut router = public
        .merge(keyed)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit));
    if let Some(cors) = cors_layer(&state.config.cors_origins) {
        router = router.layer(cors);
    }
    router.layer(middleware::from_fn(log_request)).with_state(state)
}

/// CORS for the configured origins; `None` (same-origin only) when the list is empty.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "ignoring a CORS origin that is not a valid header value");
                    None
                }
            })
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::CONTENT_TYPE,
                HeaderName::from_static(auth::API_KEY_HEADER),
                HeaderName::from_static(auth::ADMIN_KEY_HEADER),
            ])
            .expose_headers([header::RETRY_AFTER, header::LOCATION]),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound { what: "route", message: "no such route; see /openapi.json".into() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Logs method, route, status and latency. Never headers (keys travel there) nor query strings.
async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "(unmatched)".into());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    if status >= 500 {
        tracing::warn!(%method, route = %route, status, ms, "http request");
    } else {
        tracing::debug!(%method, route = %route, status, ms, "http request");
    }
    response
}
