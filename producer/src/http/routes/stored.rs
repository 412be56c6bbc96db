//! A result served from a remote results store (`s3://`): the object streamed
//! through the shim, so that any host can fetch it with the shim's URL, with
//! single byte ranges (`206 Partial Content`) for a browser's media stack. Which
//! object may be served is decided by `result::expected_result_name`.

use crate::http::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::ops::Range;
use warmlane_infra::{Report, ResultStore};

/// What a `Range` header asks of an object of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole object (no header, or one this shim ignores: several ranges, or
    /// not `bytes=`, as RFC 9110 allows).
    Full,
    /// One range, `start..end` (end exclusive), within the object.
    Part(Range<u64>),
    /// A range that starts past the end (416).
    Unsatisfiable,
}

/// Reads a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against `size`. Pure.
pub fn byte_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return ByteRange::Full };
    let Some((first, last)) = spec.trim().split_once('-').filter(|_| !spec.contains(',')) else {
        return ByteRange::Full;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), number(first), number(last)) {
        // `bytes=-n`: the last n bytes.
        (true, _, Some(n)) if n > 0 && size > 0 => size.saturating_sub(n)..size,
        (true, _, Some(_)) => return ByteRange::Unsatisfiable,
        (false, Some(a), None) if last.trim().is_empty() => a..size,
        (false, Some(a), Some(b)) if a <= b => a..size.min(b.saturating_add(1)),
        _ => return ByteRange::Full,
    };
    if range.start >= size {
        ByteRange::Unsatisfiable
    } else {
        ByteRange::Part(range)
    }
}

/// Streams `name` from `store`, or the range the request asks for.
pub async fn serve(
    store: &ResultStore,
    name: &str,
    content_type: &'static str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = store.size(name).await.map_err(|e| store_error(name, e))?;
    let asked = byte_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size);
    let range = match asked {
        ByteRange::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
        ByteRange::Full => None,
        ByteRange::Part(r) => Some(r),
    };
    let fetched = store.get(name, range.clone()).await.map_err(|e| store_error(name, e))?;
    let (start, end) = (fetched.range.start, fetched.range.end);
    let mut response = Response::new(Body::from_stream(fetched.body));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let content_range = format!("bytes {start}-{}/{}", end.saturating_sub(1), fetched.size);
        if let Ok(v) = HeaderValue::from_str(&content_range) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// A missing object is 404; a store that fails is 503 `storage` (the cause is logged).
fn store_error(name: &str, e: warmlane_infra::results::ResultsError) -> ApiError {
    if e.is_not_found() {
        let message = format!("the result file `{name}` is gone (expired or deleted)");
        return ApiError::NotFound { what: "result", message };
    }
    ApiError::Unavailable { reason: warmlane_shared::error::reason::STORAGE.into(), detail: Report(&e).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_table() {
        use ByteRange::{Full, Part, Unsatisfiable};
        let cases = [
            (None, 100, Full),
            (Some("bytes=0-9"), 100, Part(0..10)),
            (Some("bytes=90-"), 100, Part(90..100)),
            (Some("bytes=90-500"), 100, Part(90..100)),
            (Some("bytes=-10"), 100, Part(90..100)),
            (Some("bytes=-500"), 100, Part(0..100)),
            (Some(" bytes= 5 - 5 "), 100, Part(5..6)),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=9-2"), 100, Full),
            (Some("bytes=0-1,5-6"), 100, Full),
            (Some("items=0-1"), 100, Full),
            (Some("bytes=x-1"), 100, Full),
            (Some("bytes=-"), 100, Full),
        ];
        for (header, size, want) in cases {
            assert_eq!(byte_range(header, size), want, "{header:?} of {size}");
        }
    }
}
