//! Authorization server metadata (RFC 8414) and the JWKS (RFC 7517).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::OAuthResponse;
use super::{HttpState, tenant};
use crate::domain::scope::ADMIN_CATALOGUE;
use crate::domain::{GrantType, Internal, OAuthError};

/// Verifiers may cache the JWKS this long; a new key is published `key_publish_ahead` (minutes)
/// before it signs, so a minute of caching never hides a key in use.
const JWKS_MAX_AGE_SECS: u32 = 60;

pub async fn metadata(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
) -> Result<Response, OAuthResponse> {
    let tenant = tenant(&state.authority, &slug).await?;
    let custom = state
        .authority
        .custom_scopes(&tenant)
        .await
        .map_err(|e| OAuthError::server_error(Internal::new("listing scopes", e)))?;
    let mut scopes: Vec<String> = custom.iter().map(|s| s.to_string()).collect();
    scopes.extend(ADMIN_CATALOGUE.iter().map(|s| s.to_string()));
    let issuer = &tenant.issuer;
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let body = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "end_session_endpoint": format!("{issuer}/oauth2/logout"),
        "grant_types_supported": [
            GrantType::ClientCredentials.as_str(),
            GrantType::Otp.as_str(),
            GrantType::RefreshToken.as_str(),
            GrantType::AuthorizationCode.as_str(),
            GrantType::TokenExchange.as_str(),
        ],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_methods_supported": auth_methods,
        // Introspection answers confidential clients only.
        "introspection_endpoint_auth_methods_supported": &auth_methods[..2],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": scopes,
    });
    Ok(Json(body).into_response())
}

pub async fn jwks(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
) -> Result<Response, OAuthResponse> {
    let tenant = tenant(&state.authority, &slug).await?;
    let keys = state
        .authority
        .keyring(&tenant)
        .await
        .map_err(|e| OAuthError::server_error(Internal::new("loading signing keys", e)))?;
    let cache = HeaderValue::from_str(&format!("public, max-age={JWKS_MAX_AGE_SECS}"))
        .expect("a valid header value");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, cache),
        ],
        keys.jwks.as_str().to_owned(),
    )
        .into_response())
}
