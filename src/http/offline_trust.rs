//! Offline trust over HTTP (SPEC §10): a system's Token Status List and the tenant's signed key
//! schedule, both unauthenticated (devices fetch them; they are signed, and hold no secret).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::OAuthResponse;
use super::{HttpState, tenant};
use crate::domain::{Internal, OAuthError, OAuthErrorCode, SystemId};

/// The media type of a Status List Token (draft-ietf-oauth-status-list).
const STATUS_LIST_TYPE: &str = "application/statuslist+jwt";
/// The media type of the signed key schedule.
const KEY_SCHEDULE_TYPE: &str = "application/jwk-set+jwt";

/// `GET /t/{slug}/statuslists/{systemUuid}`.
pub async fn status_list(
    State(state): State<HttpState>,
    Path((slug, system)): Path<(String, String)>,
) -> Result<Response, OAuthResponse> {
    let tenant = tenant(&state.authority, &slug).await?;
    let no_list = || OAuthError::new(OAuthErrorCode::NotFound, "no such status list");
    // Only a system id can name a list: anything else is not looked up.
    let system = SystemId::parse(&system).map_err(|_| no_list())?;
    let list = state
        .authority
        .status_list(&tenant, &system)
        .await
        .map_err(|e| OAuthError::server_error(Internal::new("reading a status list", e)))?
        .ok_or_else(no_list)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(STATUS_LIST_TYPE),
            ),
            // A revocation must reach whoever asks next.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        list.jwt.clone(),
    )
        .into_response())
}

/// `GET /t/{slug}/.well-known/jwks.jwt`.
pub async fn key_schedule(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
) -> Result<Response, OAuthResponse> {
    let tenant = tenant(&state.authority, &slug).await?;
    let schedule = state
        .authority
        .key_schedule(&tenant)
        .await
        .map_err(|e| OAuthError::server_error(Internal::new("signing the key schedule", e)))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(KEY_SCHEDULE_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        schedule.jwt.clone(),
    )
        .into_response())
}
