//! The HTTP door (axum): OAuth endpoints under `/t/{slug}` (token, introspection, revocation,
//! userinfo, sign-in codes, token exchange), the browser's sign-in (`web`), forward auth for
//! web servers (`validate`), the token-management endpoints of applications for several
//! tenants (`tms`, under `/api/technicaltokenmanager/v3/`), discovery, health. GraphQL is its
//! own door, merged in by `app`.
//! [`serve`] is the listener both are served on: connection caps, header and idle timeouts,
//! and the source address each request carries for the rate limits.
//!
//! Handlers are three steps: extract and parse, call the authority, map the answer. No SQL or
//! JWT code lives here; status codes are chosen in `error.rs` (and, in the shapes of their own
//! protocols, the pages of `web.rs`, `validate.rs` and `tms.rs`). This module does not import
//! the other doors.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::authority::{Authority, Tenant};
use crate::domain::OAuthError;
use crate::metrics::Metrics;

mod discovery;
mod error;
mod form;
mod health;
mod oauth;
mod offline_trust;
pub mod serve;
mod tms;
mod validate;
mod web;

pub use error::OAuthResponse;

#[derive(Clone)]
pub struct HttpState {
    pub authority: Arc<Authority>,
    pub broker_ready: ReadinessCheck,
    pub metrics: Arc<Metrics>,
}

/// Whether another part of the process (the MQTT broker) can serve; `/readyz` asks it.
pub type ReadinessCheck = Arc<dyn Fn() -> bool + Send + Sync>;

pub fn router(
    authority: Arc<Authority>,
    broker_ready: ReadinessCheck,
    metrics: Arc<Metrics>,
) -> Router {
    let tenant_routes = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route("/.well-known/jwks.jwt", get(offline_trust::key_schedule))
        .route("/statuslists/{system}", get(offline_trust::status_list))
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route(
            "/oauth2/userinfo",
            get(oauth::userinfo).post(oauth::userinfo),
        )
        .route("/auth/send-otp", post(oauth::send_otp))
        .route("/oauth2/authorize", get(web::authorize))
        .route(
            "/auth/sign-in",
            get(web::sign_in_page).post(web::sign_in_email),
        )
        .route("/auth/code", post(web::sign_in_code))
        .route("/auth/link", get(web::sign_in_link))
        .route("/oauth2/logout", get(web::logout).post(web::logout))
        .route("/assets/lanyard.css", get(web::stylesheet))
        .route("/validate", any(validate::validate));
    Router::new()
        .nest("/t/{slug}", tenant_routes)
        .route(
            "/api/technicaltokenmanager/v3/oauth/token",
            post(tms::token),
        )
        .route("/api/technicaltokenmanager/v3/tenants", get(tms::tenants))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(health::not_found)
        .layer(DefaultBodyLimit::max(form::MAX_FORM_BYTES))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::new())
        .with_state(HttpState {
            authority,
            broker_ready,
            metrics,
        })
}

/// The token of an `Authorization: Bearer …` header (RFC 6750 §2.1), if there is one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}

/// The tenant named in the path, or the OAuth-shaped 404.
async fn tenant(authority: &Authority, slug: &str) -> Result<Tenant, OAuthError> {
    match authority.tenant(slug).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(OAuthError::unknown_tenant()),
        Err(e) => Err(OAuthError::server_error(crate::domain::Internal::new(
            "tenant lookup",
            e,
        ))),
    }
}
