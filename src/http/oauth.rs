//! The token (RFC 6749), introspection (RFC 7662) and revocation (RFC 7009) endpoints.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::{OAuthResponse, no_store};
use super::form::{Form, client_credentials};
use super::{HttpState, tenant};
use crate::authority::GrantRequest;
use crate::authority::exchange::{ExchangeRequest, LOCAL_API_TOKEN_TYPE};
use crate::domain::{GrantType, OAuthError, OAuthErrorCode};

type Answer = Result<Response, OAuthResponse>;

/// The token endpoint; every answer counted (`lanyard_tokens_issued_total` by grant,
/// `lanyard_token_refusals_total` by error code).
pub async fn token(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    match issue(&state, &slug, peer, &headers, body).await {
        Ok((response, grant)) => {
            state.metrics.token_issued(grant);
            Ok(response)
        }
        Err(refused) => {
            state.metrics.token_refused(refused.0.code);
            Err(refused)
        }
    }
}

async fn issue(
    state: &HttpState,
    slug: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Response, GrantType), OAuthResponse> {
    let tenant = tenant(&state.authority, slug).await?;
    let form = Form::from_request(headers, body)?;
    let grant: GrantType = form.require("grant_type")?.parse().map_err(|_| {
        OAuthError::new(
            OAuthErrorCode::UnsupportedGrantType,
            "grant_type is not supported",
        )
    })?;
    let request = match grant {
        GrantType::ClientCredentials => GrantRequest::ClientCredentials,
        GrantType::Otp => GrantRequest::Otp {
            email: form.require("email")?,
            code: form.require("code")?,
        },
        GrantType::RefreshToken => GrantRequest::Refresh {
            refresh_token: form.require("refresh_token")?,
        },
        GrantType::AuthorizationCode => GrantRequest::AuthorizationCode {
            code: form.require("code")?,
            redirect_uri: form.require("redirect_uri")?,
            code_verifier: form.require("code_verifier")?,
        },
        GrantType::TokenExchange => GrantRequest::TokenExchange(ExchangeRequest {
            subject_token: form.require("subject_token")?,
            subject_token_type: form.require("subject_token_type")?,
            actor_token: form.get("actor_token"),
            actor_token_type: form.get("actor_token_type"),
            audience: form.get("audience"),
            resource: form.get("resource"),
            requested_token_type: form.get("requested_token_type"),
        }),
    };
    let creds = client_credentials(headers, &form, peer)?;
    let issued = state
        .authority
        .grant(&tenant, &creds, request, form.get("scope"))
        .await?;
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope.to_string(),
    });
    if let Some(kind) = issued.issued_token_type {
        body["issued_token_type"] = kind.into();
        if kind == LOCAL_API_TOKEN_TYPE {
            // Not an access token (RFC 8693 §2.2.1), and it carries roles, not scopes.
            body["token_type"] = "N_A".into();
            body.as_object_mut().expect("an object").remove("scope");
        }
    }
    if let Some(refresh) = &issued.refresh_token {
        body["refresh_token"] = refresh.expose().into();
    }
    Ok(((no_store(), Json(body)).into_response(), grant))
}

pub async fn introspect(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant(&state.authority, &slug).await?;
    let form = Form::from_request(&headers, body)?;
    let caller = client_credentials(&headers, &form, peer)?;
    let token = form.require("token")?;
    let body = match state.authority.introspect(&tenant, &caller, token).await? {
        None => json!({ "active": false }),
        Some((verified, client_metadata)) => {
            let c = verified.claims;
            let mut out = Map::new();
            out.insert("active".into(), Value::Bool(true));
            out.insert("token_type".into(), "Bearer".into());
            out.insert("scope".into(), c.scope.into());
            out.insert("client_id".into(), c.client_id.into());
            out.insert("sub".into(), c.sub.into());
            out.insert("aud".into(), c.aud.into());
            out.insert("iss".into(), c.iss.into());
            out.insert("exp".into(), c.exp.into());
            out.insert("iat".into(), c.iat.into());
            out.insert("nbf".into(), c.nbf.into());
            out.insert("jti".into(), c.jti.into());
            if let Some(system) = c.system {
                out.insert("system".into(), system.into());
            }
            // Who acts for the subject (RFC 8693 §4.1), and a technical token's application.
            if let Some(act) = c.act {
                out.insert(
                    "act".into(),
                    serde_json::to_value(act).expect("act serialises"),
                );
            }
            if let Some(app) = c.app {
                out.insert(
                    "app".into(),
                    serde_json::to_value(app).expect("app serialises"),
                );
            }
            if let Some(metadata) = client_metadata.filter(|m| !m.is_empty()) {
                out.insert("client_metadata".into(), Value::Object(metadata));
            }
            Value::Object(out)
        }
    };
    Ok((no_store(), Json(body)).into_response())
}

pub async fn revoke(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let tenant = tenant(&state.authority, &slug).await?;
    let form = Form::from_request(&headers, body)?;
    let caller = client_credentials(&headers, &form, peer)?;
    let token = form.require("token")?;
    // token_type_hint is only a hint (RFC 7009 §2.1): every kind of token is searched anyway.
    state.authority.revoke(&tenant, &caller, token).await?;
    Ok(no_store().into_response())
}

/// UserInfo (OpenID Connect Core §5.3), with the access token as a bearer (RFC 6750 §2.1).
pub async fn userinfo(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let tenant = tenant(&state.authority, &slug).await?;
    let bearer = super::bearer(&headers).ok_or_else(|| {
        OAuthError::new(
            OAuthErrorCode::InvalidToken,
            "send the access token as Authorization: Bearer",
        )
    })?;
    let info = state.authority.userinfo(&tenant, bearer).await?;
    Ok((no_store(), Json(Value::Object(info))).into_response())
}

/// `POST /t/{slug}/auth/send-otp` with `{"email", "client_id"}`: 202 whether or not the user
/// exists.
pub async fn send_otp(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SendOtp {
        email: String,
        client_id: String,
    }
    let tenant = tenant(&state.authority, &slug).await?;
    let body =
        body.map_err(|_| OAuthError::invalid_request("the body is too large or unreadable"))?;
    let request: SendOtp = serde_json::from_slice(&body).map_err(|e| {
        OAuthError::invalid_request(format!(
            "send a JSON object {{\"email\": …, \"client_id\": …}}: {e}"
        ))
    })?;
    state
        .authority
        .send_otp(
            &tenant,
            &request.email,
            &request.client_id,
            crate::connections::source_key(peer.ip()),
        )
        .await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        no_store(),
        Json(json!({ "status": "accepted" })),
    )
        .into_response())
}
