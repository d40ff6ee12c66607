//! Forward auth for web servers (SPEC §9): `/t/{slug}/validate` answers nginx's
//! `auth_request` and Caddy's `forward_auth` with a status and headers, no body.
//!
//! The token is checked as at the MQTT CONNECT (every check of an access token; local API
//! tokens are not access tokens), through the token cache: a token seen before costs no
//! signature check and no database query, and a revocation removes it from the cache at once.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::authority::TokenRejected;
use crate::domain::ScopeSet;

/// A bare status with `WWW-Authenticate` (RFC 6750 §3).
fn challenge(status: StatusCode, value: String) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Any method (proxies forward the original one), `Authorization: Bearer …`, optional
/// `?scope=a%20b` (every one required).
pub async fn validate(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let required = match super::form::Form::parse(query.unwrap_or_default().as_bytes())
        .map(|q| q.get("scope").map(ScopeSet::parse).transpose())
    {
        Ok(Ok(scopes)) => scopes.unwrap_or_default(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "the scope parameter is not a space-separated list of scopes",
            )
                .into_response();
        }
    };
    let tenant = match super::tenant(&state.authority, &slug).await {
        Ok(t) => t,
        Err(e) => return super::OAuthResponse(e).into_response(),
    };
    let realm = format!("realm=\"{}\"", tenant.issuer);
    let Some(bearer) = super::bearer(&headers) else {
        return challenge(StatusCode::UNAUTHORIZED, format!("Bearer {realm}"));
    };
    if bearer.len() > crate::authority::tokens::MAX_BEARER_LEN {
        return challenge(
            StatusCode::UNAUTHORIZED,
            format!("Bearer {realm}, error=\"invalid_token\""),
        );
    }
    let known = match state
        .authority
        .verify_access_token_known(&tenant, bearer)
        .await
    {
        Ok(k) => k,
        Err(TokenRejected::Unavailable(cause)) => {
            cause.log("http");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Err(_) => {
            return challenge(
                StatusCode::UNAUTHORIZED,
                format!("Bearer {realm}, error=\"invalid_token\""),
            );
        }
    };
    if !required.is_subset(&known.scopes) {
        return challenge(
            StatusCode::FORBIDDEN,
            format!(
                "Bearer {realm}, error=\"insufficient_scope\", scope=\"{}\"",
                required
            ),
        );
    }
    let claims = &known.verified.claims;
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    for (name, value) in [
        ("x-user", claims.sub.as_str()),
        ("x-client-id", claims.client_id.as_str()),
        ("x-scope", claims.scope.as_str()),
        ("x-tenant", tenant.slug.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
