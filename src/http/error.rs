//! OAuth errors as HTTP responses (RFC 6749 §5.2): the only place status codes are chosen, and
//! where the cause of a `server_error` is logged.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::{OAuthError, OAuthErrorCode};

/// `Cache-Control: no-store` and `Pragma: no-cache`, required on token responses (RFC 6749 §5.1)
/// and used on every OAuth answer.
pub fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// An OAuth error on its way out.
#[derive(Debug)]
pub struct OAuthResponse(pub OAuthError);

impl From<OAuthError> for OAuthResponse {
    fn from(e: OAuthError) -> Self {
        OAuthResponse(e)
    }
}

impl IntoResponse for OAuthResponse {
    fn into_response(self) -> Response {
        let e = self.0;
        if let Some(cause) = &e.internal {
            // Logged here, once; the client gets the description alone.
            cause.log("http");
        }
        let status = match e.code {
            OAuthErrorCode::InvalidClient | OAuthErrorCode::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            OAuthErrorCode::NotFound => StatusCode::NOT_FOUND,
            OAuthErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut headers = HeaderMap::new();
        headers.extend(no_store());
        if e.code == OAuthErrorCode::InvalidClient {
            // RFC 6749 §5.2: a 401 names the authentication scheme.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"lanyard\""),
            );
        }
        if e.code == OAuthErrorCode::InvalidToken {
            // RFC 6750 §3: the challenge names the bearer scheme and the error.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lanyard\", error=\"invalid_token\""),
            );
        }
        if let Some(wait) = e.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        let body = json!({ "error": e.code.as_str(), "error_description": e.description });
        (status, headers, Json(body)).into_response()
    }
}
