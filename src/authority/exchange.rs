//! Token exchange (RFC 8693, SPEC §11): a confidential client allowed `TOKEN_EXCHANGE` trades a
//! person's access token (the subject token) for a narrower one, or for a local API token of a
//! system the person holds a role on.
//!
//! - With an actor token it is a delegation: the new token's `act` names the actor (its
//!   person, or its client), the subject token's own `act` nested inside (§4.1).
//! - Without one it is impersonation, allowed only when the subject token's `may_act` names the
//!   calling client (§4.4): a client registered with `mayAct` has its tokens carry it.
//! - The scope never grows beyond the subject token's; the lifetime never outlives the subject
//!   token (nor the actor token); no refresh token is issued.
//! - The subject and actor tokens must be this tenant's access tokens and good now (every check
//!   of [`super::tokens`]); a client's own token is no subject (exchange acts for people), a
//!   technical token (another tenant's application) is neither, nor is a delegation's token.
//!   A token names at most [`MAX_ACT_DEPTH`] actors, and dies with any of them.
//!
//! Only `…:token-type:access_token` subject tokens are taken: `…:token-type:jwt` subject
//! tokens come from external issuers a tenant trusts, and this server registers none yet, so
//! they are refused with `invalid_request` saying so.

use super::clients::Client;
use super::grants::IssuedToken;
use super::local_tokens::MIN_DURATION_SECS;
use super::{Authority, Caller, Error, Tenant, TokenRejected};
use crate::domain::claims::{Act, MAX_ACT_DEPTH};
use crate::domain::{
    AccessClaims, GrantType, Internal, OAuthError, OAuthErrorCode, ScopeSet, SystemId,
};
use crate::store::users;

/// RFC 8693 §3: an OAuth 2.0 access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3: a JWT, for a subject token of an external issuer.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// A local API token of a system (SPEC §3), as `requested_token_type`.
pub const LOCAL_API_TOKEN_TYPE: &str = "urn:lanyard:params:oauth:token-type:local-api-token";

/// What a token-exchange request presents (RFC 8693 §2.1), besides the client and the scope.
#[derive(Clone, Copy)]
pub struct ExchangeRequest<'a> {
    pub subject_token: &'a str,
    pub subject_token_type: &'a str,
    pub actor_token: Option<&'a str>,
    pub actor_token_type: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub requested_token_type: Option<&'a str>,
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidRequest, description)
}

fn invalid_grant(description: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, description)
}

fn invalid_target(description: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidTarget, description)
}

impl Authority {
    /// The `token-exchange` grant, for an authenticated `client` allowed it.
    pub(super) async fn token_exchange(
        &self,
        tenant: &Tenant,
        client: &Client,
        r: ExchangeRequest<'_>,
        requested: Option<ScopeSet>,
    ) -> Result<IssuedToken, OAuthError> {
        if r.resource.is_some() {
            return Err(invalid_target(
                "name the target with audience (this tenant's slug, or a system uuid), not resource",
            ));
        }
        match r.subject_token_type {
            ACCESS_TOKEN_TYPE => {}
            JWT_TOKEN_TYPE => {
                return Err(invalid_request(
                    "subject tokens of type jwt come from external issuers this tenant trusts, and it trusts none",
                ));
            }
            _ => {
                return Err(invalid_request(format!(
                    "subject_token_type must be {ACCESS_TOKEN_TYPE}"
                )));
            }
        }
        if r.actor_token.is_some() != r.actor_token_type.is_some() {
            return Err(invalid_request(
                "actor_token and actor_token_type go together",
            ));
        }
        if r.actor_token_type.is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
            return Err(invalid_request(format!(
                "actor_token_type must be {ACCESS_TOKEN_TYPE}"
            )));
        }
        let wanted = match r.requested_token_type {
            None | Some(ACCESS_TOKEN_TYPE) => ACCESS_TOKEN_TYPE,
            Some(LOCAL_API_TOKEN_TYPE) => LOCAL_API_TOKEN_TYPE,
            Some(_) => {
                return Err(invalid_request(format!(
                    "requested_token_type must be {ACCESS_TOKEN_TYPE} or {LOCAL_API_TOKEN_TYPE}"
                )));
            }
        };
        let subject = self
            .exchanged_token(tenant, r.subject_token, "subject_token")
            .await?;
        if subject.sub == subject.client_id {
            return Err(invalid_grant(
                "the subject_token is a client's own token: token exchange acts for people",
            ));
        }
        let mut exp = subject.exp;
        let act = match r.actor_token {
            Some(token) => {
                let actor = self.exchanged_token(tenant, token, "actor_token").await?;
                if actor.app.is_some() {
                    return Err(invalid_grant(
                        "a technical token acts in its own right only: it is no actor_token",
                    ));
                }
                if actor.sub == subject.sub
                    || subject.act.as_ref().is_some_and(|a| a.names(&actor.sub))
                {
                    return Err(invalid_grant(
                        "the actor_token's party is the subject, or acts for it already",
                    ));
                }
                // The actor is who holds the actor token, not someone it acts for.
                if actor.act.is_some() {
                    return Err(invalid_grant(
                        "the actor_token itself acts for another: present the actor's own token",
                    ));
                }
                exp = exp.min(actor.exp);
                // Who acted before: the subject token's actors, or the client of an
                // impersonation.
                let prior = self
                    .acting(tenant, &subject)
                    .await
                    .map_err(|e| OAuthError::server_error(Internal::new("actors", e)))?;
                let act = self.actor_claim(tenant, &actor, prior).await?;
                if act.chain().count() > MAX_ACT_DEPTH {
                    return Err(invalid_request(format!(
                        "a token names at most {MAX_ACT_DEPTH} actors, one acting for the next: this exchange would name more"
                    )));
                }
                Some(act)
            }
            None => {
                let may = subject.may_act.as_ref().map(|m| m.client_id.as_str());
                if may != Some(client.client_id.as_str()) {
                    return Err(invalid_grant(
                        "without an actor_token, the subject_token must name this client in may_act",
                    ));
                }
                subject.act.clone()
            }
        };
        let granted = ScopeSet::parse(&subject.scope).unwrap_or_default();
        let scope = match requested {
            None => granted,
            Some(requested) if requested.is_subset(&granted) => requested,
            Some(_) => {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidScope,
                    "the scope can only narrow the subject_token's",
                ));
            }
        };
        let now = self.now();
        if wanted == LOCAL_API_TOKEN_TYPE {
            return self
                .exchange_for_local_token(tenant, client, &subject, act, r.audience, exp)
                .await;
        }
        if r.audience.is_some_and(|a| a != tenant.slug.as_str()) {
            return Err(invalid_target(format!(
                "an access token's audience is this tenant ({}); a system's is a local API token (requested_token_type {LOCAL_API_TOKEN_TYPE})",
                tenant.slug
            )));
        }
        let ttl = self.settings.tokens.access_token_ttl.as_secs_i64();
        let mut claims = AccessClaims::new(
            tenant.issuer.clone(),
            subject.sub.clone(),
            tenant.slug.to_string(),
            client.client_id.to_string(),
            scope.to_string(),
            now,
            (now + ttl).min(exp),
            uuid::Uuid::new_v4().to_string(),
        );
        claims.act = act;
        claims.exchanged = true;
        let mut issued = self
            .sign_claims(tenant, claims, GrantType::TokenExchange.as_str())
            .await?;
        issued.issued_token_type = Some(ACCESS_TOKEN_TYPE);
        Ok(issued)
    }

    /// A subject or actor token verified as every door verifies one; refused with
    /// `invalid_grant` saying which and why.
    async fn exchanged_token(
        &self,
        tenant: &Tenant,
        token: &str,
        which: &str,
    ) -> Result<AccessClaims, OAuthError> {
        match self.verify_access_token(tenant, token).await {
            Ok(v) => Ok(v.claims),
            Err(TokenRejected::Unavailable(cause)) => Err(OAuthError::server_error(cause)),
            Err(e) => Err(invalid_grant(format!(
                "the {which} is not a good access token of this tenant: {e}"
            ))),
        }
    }

    /// The `act` claim naming the actor token's party (its person, or its client), the prior
    /// actors nested inside.
    async fn actor_claim(
        &self,
        tenant: &Tenant,
        actor: &AccessClaims,
        prior: Option<Act>,
    ) -> Result<Act, OAuthError> {
        let is_client = actor.sub == actor.client_id;
        let name = if is_client {
            self.client_row(&tenant.id, &actor.client_id)
                .await
                .map_err(|e| OAuthError::server_error(Internal::new("client lookup", e)))?
                .map(|c| c.name.clone())
        } else {
            users::find(&self.db, &tenant.id, &actor.sub)
                .await
                .map_err(|e| OAuthError::server_error(Internal::new("user lookup", e)))?
                .map(|u| u.name)
        };
        Ok(Act {
            sub: actor.sub.clone(),
            client_id: is_client.then(|| actor.client_id.clone()),
            name,
            act: prior.map(Box::new),
        })
    }

    /// A local API token for the system `audience` names, minted exactly as GraphQL mints one
    /// for the subject (its roles there, the list, the status list), `act` its actor, expiring
    /// with the subject (and actor) token at the latest.
    async fn exchange_for_local_token(
        &self,
        tenant: &Tenant,
        client: &Client,
        subject: &AccessClaims,
        act: Option<Act>,
        audience: Option<&str>,
        exp: i64,
    ) -> Result<IssuedToken, OAuthError> {
        let system_id = audience
            .and_then(|a| SystemId::parse(a).ok())
            .ok_or_else(|| {
                invalid_target("a local API token's audience is the uuid of a system")
            })?;
        let now = self.now();
        let max = self.settings.tokens.max_local_token_duration.as_secs_i64();
        let secs = (exp - now).min(max);
        if secs < MIN_DURATION_SECS as i64 {
            return Err(invalid_grant(
                "the subject_token expires within a minute: too soon for a local API token",
            ));
        }
        // The subject as a caller of the GraphQL mint, the exchanging client its client.
        let mut claims = AccessClaims::new(
            tenant.issuer.clone(),
            subject.sub.clone(),
            tenant.slug.to_string(),
            client.client_id.to_string(),
            String::new(),
            now,
            exp,
            subject.jti.clone(),
        );
        claims.act = act;
        claims.exchanged = true;
        let caller = Caller::new(tenant.clone(), claims);
        let minted = self
            .create_local_token(&caller, &system_id, None, &format!("{secs}S"), None)
            .await
            .map_err(|e| match e {
                Error::Forbidden(_) | Error::NotFound(_) => {
                    invalid_target("the subject holds no role on that system")
                }
                Error::Invalid(m) | Error::Conflict(m) => invalid_request(m),
                Error::Internal(e) => {
                    OAuthError::server_error(Internal::new("minting a local API token", e))
                }
            })?;
        Ok(IssuedToken {
            access_token: minted.token,
            expires_in: secs,
            scope: ScopeSet::default(),
            refresh_token: None,
            issued_token_type: Some(LOCAL_API_TOKEN_TYPE),
        })
    }
}
