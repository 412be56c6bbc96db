//! Interactive API documentation at `/docs`: Swagger UI pointed at `/openapi.json`.
//!
//! Swagger UI is vendored (`src/http/static/swagger-ui/`, see its README for the
//! version and checksums) and compiled into the binary, so the page needs no network
//! at build or run time. Its validator badge, which would call validator.swagger.io,
//! is off.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The vendored Swagger UI release (`swagger-ui-dist` on npm).
pub const SWAGGER_UI_VERSION: &str = "5.35.0";

const PAGE: &str = include_str!("../docs.html");
const BUNDLE: &[u8] = include_bytes!("../static/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../static/swagger-ui/swagger-ui.css");

/// Validator of the vendored assets: changes with the release, so a browser that
/// revalidates after `max-age` gets 304 until the binary carries another one.
const ETAG: &str = "\"swagger-ui-5.35.0\"";
/// The assets change only with the binary: a day in any cache, then revalidated.
const ASSET_CACHE: &str = "public, max-age=86400";

/// The documentation page.
#[utoipa::path(get, path = "/docs", tag = "docs", responses((status = 200, description = "Swagger UI for /openapi.json", content_type = "text/html", body = String)))]
pub async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, PAGE).into_response()
}

/// Swagger UI's script (vendored).
#[utoipa::path(
    get, path = "/docs/swagger-ui-bundle.js", tag = "docs",
    responses(
        (status = 200, description = "Swagger UI's script bundle", content_type = "text/javascript", body = String),
        (status = 304, description = "Not modified (`If-None-Match` holds the ETag)"),
    )
)]
pub async fn bundle(request: HeaderMap) -> Response {
    asset(&request, BUNDLE, "text/javascript; charset=utf-8")
}

/// Swagger UI's style sheet (vendored).
#[utoipa::path(
    get, path = "/docs/swagger-ui.css", tag = "docs",
    responses(
        (status = 200, description = "Swagger UI's style sheet", content_type = "text/css", body = String),
        (status = 304, description = "Not modified (`If-None-Match` holds the ETag)"),
    )
)]
pub async fn css(request: HeaderMap) -> Response {
    asset(&request, CSS, "text/css; charset=utf-8")
}

/// Pure: whether an `If-None-Match` value names this release's ETag (or `*`).
pub fn not_modified(if_none_match: Option<&str>) -> bool {
    if_none_match
        .is_some_and(|v| v.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == ETAG))
}

fn asset(request: &HeaderMap, body: &'static [u8], content_type: &'static str) -> Response {
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE)),
        (header::ETAG, HeaderValue::from_static(ETAG)),
    ];
    if not_modified(request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_and_page_name_the_vendored_release() {
        let marker = format!("PACKAGE_VERSION:\"{SWAGGER_UI_VERSION}\"");
        assert!(String::from_utf8_lossy(BUNDLE).contains(&marker), "the bundle is not Swagger UI {SWAGGER_UI_VERSION}");
        assert_eq!(ETAG, format!("\"swagger-ui-{SWAGGER_UI_VERSION}\""));
        assert!(PAGE.contains("/openapi.json") && PAGE.contains("/docs/swagger-ui-bundle.js"));
        assert!(PAGE.contains("validatorUrl: null"), "no calls to validator.swagger.io");
    }

    #[test]
    fn if_none_match() {
        assert!(not_modified(Some(ETAG)));
        assert!(not_modified(Some(&format!("\"other\", W/{ETAG}"))));
        assert!(not_modified(Some("*")));
        assert!(!not_modified(Some("\"swagger-ui-4.0.0\"")));
        assert!(!not_modified(None));
    }
}
