//! The operator dashboard: one HTML page and two scripts, compiled into the
//! binary (`include_str!`), no build step. The page talks to the same public API
//! as any client.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("../dashboard.html");
const SCRIPT: &str = include_str!("../static/dashboard.js");
const HISTORY: &str = include_str!("../static/history.js");

/// The dashboard page.
#[utoipa::path(get, path = "/", tag = "dashboard", responses((status = 200, description = "The dashboard", content_type = "text/html", body = String)))]
pub async fn index() -> Html<&'static str> {
    Html(PAGE)
}

/// The dashboard's script.
#[utoipa::path(get, path = "/dashboard.js", tag = "dashboard", responses((status = 200, description = "The dashboard's script", content_type = "text/javascript", body = String)))]
pub async fn script() -> Response {
    javascript(SCRIPT)
}

/// The dashboard's history table, Cancel buttons and gallery.
#[utoipa::path(get, path = "/history.js", tag = "dashboard", responses((status = 200, description = "The dashboard's history and gallery script", content_type = "text/javascript", body = String)))]
pub async fn history() -> Response {
    javascript(HISTORY)
}

fn javascript(body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    r
}
