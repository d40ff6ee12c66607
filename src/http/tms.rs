//! The token management endpoints (SPEC §11) under `/api/technicaltokenmanager/v3/`, in the
//! request and answer shapes of the service whose clients they serve: an application
//! authenticates with `X-SPACE-AUTH-KEY: Basic base64(client_id:client_secret)` and gets
//! technical tokens for the tenants that granted its version access, or pages through them.
//!
//! Errors are JSON `{"error", "error_description"}`: 400 `invalid_request`, 401
//! `invalid_client` (credentials that are not this application version's), 403
//! `access_denied` (a tenant that did not grant access), 429 `too_many_requests`.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::HttpState;
use super::error::no_store;
use super::form::{Form, parse_basic};
use crate::authority::IssuedToken;
use crate::authority::applications::{MAX_TENANTS_PER_REQUEST, TmsError};
use crate::authority::clients::{Application, ClientCredentials};

/// The header an application's credentials come in.
const AUTH_HEADER: &str = "x-space-auth-key";

pub struct Refused(TmsError);

impl From<TmsError> for Refused {
    fn from(e: TmsError) -> Self {
        Refused(e)
    }
}

fn bad_request(description: impl Into<String>) -> Refused {
    Refused(TmsError::BadRequest(description.into()))
}

/// The status, `error` and description of a refusal.
fn refusal(e: &TmsError) -> (StatusCode, &'static str, String) {
    match e {
        TmsError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "invalid_client", m.clone()),
        TmsError::Forbidden(m) => (StatusCode::FORBIDDEN, "access_denied", m.clone()),
        TmsError::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m.clone()),
        TmsError::TooManyRequests(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            e.to_string(),
        ),
        TmsError::Internal(cause) => {
            cause.log("tms");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            )
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, error, description) = refusal(&self.0);
        let mut response = (
            status,
            no_store(),
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response();
        if let TmsError::TooManyRequests(secs) = self.0 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The application's credentials from `X-SPACE-AUTH-KEY`.
fn credentials(headers: &HeaderMap, peer: SocketAddr) -> Result<ClientCredentials, Refused> {
    let missing = || {
        Refused(TmsError::Unauthorized(
            "send the application's credentials as X-SPACE-AUTH-KEY: Basic base64(client_id:client_secret)".into(),
        ))
    };
    let value = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let encoded = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => rest.trim(),
        _ => return Err(missing()),
    };
    let mut creds = parse_basic(encoded).map_err(|_| missing())?;
    if creds.secret.is_none() {
        return Err(missing());
    }
    creds.source = Some(crate::connections::source_key(peer.ip()));
    Ok(creds)
}

/// `POST /api/technicaltokenmanager/v3/oauth/token`.
pub async fn token(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refused> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Request {
        app_name: String,
        app_version: String,
        host_tenant: String,
        user_tenant: Option<String>,
        user_tenants: Option<Vec<String>>,
    }
    let creds = credentials(&headers, peer)?;
    let body = body.map_err(|_| bad_request("the request body is too large"))?;
    let request: Request = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "the body must be JSON {{\"appName\", \"appVersion\", \"hostTenant\", \"userTenant\" or \"userTenants\"}}: {e}"
        ))
    })?;
    let application = Application::parse(&request.app_name, &request.app_version)
        .map_err(|e| bad_request(e.to_string()))?;
    let (tenants, many) = match (&request.user_tenant, &request.user_tenants) {
        (Some(one), None) => (vec![one.as_str()], false),
        (None, Some(many)) if (1..=MAX_TENANTS_PER_REQUEST).contains(&many.len()) => {
            (many.iter().map(String::as_str).collect(), true)
        }
        (None, Some(_)) => {
            return Err(bad_request(format!(
                "userTenants names 1 to {MAX_TENANTS_PER_REQUEST} tenants"
            )));
        }
        _ => return Err(bad_request("name userTenant, or userTenants, not both")),
    };
    let authority = &state.authority;
    let (host, client) = authority
        .authenticate_application(Some(&request.host_tenant), &creds, Some(&application))
        .await?;
    let mut results = authority.technical_tokens(&host, &client, &tenants).await;
    if !many {
        let token = results.pop().expect("one answer per tenant")?;
        return Ok((no_store(), Json(token_body(&token))).into_response());
    }
    let results: Vec<Value> = tenants
        .iter()
        .zip(results)
        .map(|(tenant, result)| {
            let mut entry = match result {
                Ok(token) => token_body(&token),
                Err(e) => {
                    let (status, error, description) = refusal(&e);
                    json!({ "status": status.as_u16(), "error": error, "error_description": description })
                }
            };
            entry["userTenant"] = (*tenant).into();
            entry
        })
        .collect();
    Ok((no_store(), Json(json!({ "results": results }))).into_response())
}

fn token_body(token: &IssuedToken) -> Value {
    json!({
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
        "scope": token.scope.to_string(),
    })
}

/// `GET /api/technicaltokenmanager/v3/tenants?page=0&size=20`.
pub async fn tenants(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Refused> {
    let creds = credentials(&headers, peer)?;
    let query = Form::parse(query.unwrap_or_default().as_bytes())
        .map_err(|e| bad_request(e.description))?;
    let number = |name: &str, default: i64| match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| bad_request(format!("{name} must be a whole number"))),
    };
    let page = number("page", 0)?;
    let size = number("size", 20)?;
    let authority = &state.authority;
    let (host, client) = authority
        .authenticate_application(query.get("hostTenant"), &creds, None)
        .await?;
    let found = authority
        .granting_tenants(&host, &client, page, size)
        .await?;
    let content: Vec<Value> = found
        .content
        .iter()
        .map(|g| {
            json!({
                "tenant": g.tenant,
                "grantedAt": DateTime::<Utc>::from_timestamp(g.granted_at, 0)
                    .unwrap_or_default()
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
                "scopes": g.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body = json!({
        "content": content,
        "page": {
            "number": page,
            "size": size,
            "totalElements": found.total,
            "totalPages": found.pages,
        },
    });
    Ok((no_store(), Json(body)).into_response())
}
