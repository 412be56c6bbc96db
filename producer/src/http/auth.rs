//! API and admin keys.
//!
//! Generation routes need a key from `WARMLANE_API_KEYS` in `x-api-key` (when
//! none is configured, auth is off and `serve` warns at start). Admin routes need
//! `WARMLANE_ADMIN_KEY` in `x-admin-key`, and are off when it is unset. A missing
//! header is 401, a wrong key 403. Keys are compared in constant time and never
//! appear in logs or responses.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

/// Header of API keys.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header of the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decision for one request, as a pure function: `Ok` or the error to answer.
pub fn check_key(headers: &HeaderMap, header: &'static str, accepted: &[String]) -> Result<(), ApiError> {
    let Some(given) = headers.get(header) else {
        return Err(ApiError::Unauthorized { header });
    };
    let given = given.as_bytes();
    // Check every key so the time does not tell which one came close.
    let matched = accepted.iter().fold(false, |found, key| constant_time_eq(given, key.as_bytes()) | found);
    if matched {
        Ok(())
    } else {
        Err(ApiError::Forbidden { header, message: format!("the `{header}` header does not hold a valid key") })
    }
}

/// Middleware of generation routes.
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if !state.config.api_keys.is_empty() {
        check_key(req.headers(), API_KEY_HEADER, &state.config.api_keys)?;
    }
    Ok(next.run(req).await)
}

/// Middleware of admin routes.
pub async fn require_admin_key(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let Some(admin) = &state.config.admin_key else {
        return Err(ApiError::Forbidden {
            header: ADMIN_KEY_HEADER,
            message: "admin routes are off: WARMLANE_ADMIN_KEY is not set".into(),
        });
    };
    check_key(req.headers(), ADMIN_KEY_HEADER, std::slice::from_ref(admin))?;
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(API_KEY_HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn missing_is_401_wrong_is_403_right_passes() {
        let keys = vec!["k1".to_string(), "k2".to_string()];
        assert!(matches!(check_key(&headers(None), API_KEY_HEADER, &keys), Err(ApiError::Unauthorized { .. })));
        assert!(matches!(check_key(&headers(Some("nope")), API_KEY_HEADER, &keys), Err(ApiError::Forbidden { .. })));
        assert!(check_key(&headers(Some("k2")), API_KEY_HEADER, &keys).is_ok());
        assert!(matches!(check_key(&headers(Some("k")), API_KEY_HEADER, &keys), Err(ApiError::Forbidden { .. })));
    }

    #[test]
    fn errors_do_not_echo_the_key() {
        let keys = vec!["secret-key".to_string()];
        let err = check_key(&headers(Some("secret-kez")), API_KEY_HEADER, &keys).unwrap_err();
        let d = err.detail();
        assert!(!d.message.contains("secret") && !d.reason.contains("secret"));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
