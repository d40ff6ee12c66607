//! Access tokens once issued (by [`grants`](super::grants)): verification as every door needs
//! it, introspection (RFC 7662) and revocation (RFC 7009).
//!
//! Verification is the one place that decides whether an access token is good: signature by a
//! published key of the tenant, `typ`, `iss`, `aud`, time claims, the revocation list (held in
//! memory, see [`revoked`](super::revoked)), and its principals still standing
//! ([`Authority::principal_refusal`]): the client (for a technical token of another tenant's
//! application, the grant it was issued under and the host tenant's client), for a person's
//! token the person, every actor its `act` names, and a delegation's share. The HTTP door uses
//! it for introspection; the MQTT, NATS and GraphQL doors use the same function, and the MQTT
//! and NATS doors re-check what they admitted with [`Authority::grant_still_valid`]. A
//! delegation's token (SPEC §11) is refused by every door but GraphQL's mint
//! ([`Authority::verify_bearer_or_delegation`]). A token that passed is remembered until its
//! `exp` (see [`token_cache`](super::token_cache)), so presenting it again costs no database
//! round trip; the events that end a principal forget what they end.

use std::sync::Arc;

use super::cache::token_cache::{CacheKey, KnownToken};
use super::clients::Client;
use super::clients::ClientCredentials;
use super::{Authority, Event, Tenant};
use crate::crypto::{JwsError, jws};
use crate::domain::claims::{ACCESS_TOKEN_TYP, Act, MAX_ACT_DEPTH};
use crate::domain::{AccessClaims, Internal, OAuthError, OAuthErrorCode, ScopeSet};
use crate::store::{clients, revocations, users};

/// The longest password a door reads as a bearer token (an MQTT CONNECT's, a NATS callout's):
/// longer ones are refused before any work.
pub const MAX_BEARER_LEN: usize = 8 * 1024;

/// A token whose `nbf` is at most this far ahead is accepted: clocks of nodes differ a little.
pub const NOT_BEFORE_LEEWAY_SECS: i64 = 30;
/// An access token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedAccessToken {
    pub claims: AccessClaims,
    pub kid: String,
}

/// Why an access token was refused. Doors log it; clients see only their protocol's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error(transparent)]
    Jws(#[from] JwsError),
    #[error("the token is not an access token (typ is not at+jwt)")]
    NotAnAccessToken,
    #[error("the token's claims are malformed")]
    MalformedClaims,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token's client no longer exists")]
    ClientGone,
    #[error("the token's user no longer exists")]
    UserGone,
    /// A delegation's token (SPEC §11), presented anywhere but to mint a local API token.
    #[error("the token can only mint local API tokens under its share")]
    DelegationOnly,
    #[error("the token could not be checked right now")]
    Unavailable(Internal),
}

impl TokenRejected {
    /// The reason as labelled in `lanyard_token_rejections_total`, one of
    /// [`crate::metrics::TOKEN_REJECTIONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            TokenRejected::Jws(JwsError::Malformed) => "malformed",
            TokenRejected::Jws(JwsError::TooLong) => "too_long",
            TokenRejected::Jws(JwsError::Algorithm) => "algorithm",
            TokenRejected::Jws(JwsError::ForbiddenHeader) => "forbidden_header",
            TokenRejected::Jws(JwsError::UnknownKey) => "unknown_key",
            TokenRejected::Jws(JwsError::Signature) => "signature",
            TokenRejected::NotAnAccessToken => "not_an_access_token",
            TokenRejected::MalformedClaims => "malformed_claims",
            TokenRejected::WrongIssuer => "wrong_issuer",
            TokenRejected::WrongAudience => "wrong_audience",
            TokenRejected::Expired => "expired",
            TokenRejected::NotYetValid => "not_yet_valid",
            TokenRejected::Revoked => "revoked",
            TokenRejected::ClientGone => "client_gone",
            TokenRejected::UserGone => "user_gone",
            TokenRejected::DelegationOnly => "delegation_only",
            TokenRejected::Unavailable(_) => "unavailable",
        }
    }
}

impl Authority {
    /// Verifies an access token of `tenant` with every check (see the module docs).
    /// A delegation's token (SPEC §11) is refused here: it only mints local API tokens
    /// ([`Authority::verify_bearer_or_delegation`]).
    pub async fn verify_access_token(
        &self,
        tenant: &Tenant,
        token: &str,
    ) -> Result<VerifiedAccessToken, TokenRejected> {
        match self
            .verify_known(tenant, token)
            .await
            .and_then(no_delegation)
        {
            Ok(known) => Ok(known.verified.clone()),
            Err(e) => Err(self.rejected(e)),
        }
    }

    /// [`Authority::verify_access_token`], answered with the token cache's entry (its scopes
    /// parsed once): a token seen before costs no signature check and no database query.
    pub async fn verify_access_token_known(
        &self,
        tenant: &Tenant,
        token: &str,
    ) -> Result<Arc<KnownToken>, TokenRejected> {
        self.verify_known(tenant, token)
            .await
            .and_then(no_delegation)
            .map_err(|e| self.rejected(e))
    }

    /// Counts a refusal (`lanyard_token_rejections_total`) and passes it on.
    fn rejected(&self, e: TokenRejected) -> TokenRejected {
        self.metrics.token_rejected(e.reason());
        e
    }

    /// [`Authority::verify_access_token`], answered with the entry it leaves in the token
    /// cache: those who keep the answer share it.
    async fn verify_known(
        &self,
        tenant: &Tenant,
        token: &str,
    ) -> Result<Arc<KnownToken>, TokenRejected> {
        let key = CacheKey::of(token);
        if let Some(known) = self.token_cache.get(&key, self.now())
            && known.tenant.id == tenant.id
        {
            return Ok(known);
        }
        self.verify_unknown(tenant, token, key).await
    }

    /// Every check of a token not found in the cache (under `key`), which is then remembered.
    async fn verify_unknown(
        &self,
        tenant: &Tenant,
        token: &str,
        key: CacheKey,
    ) -> Result<Arc<KnownToken>, TokenRejected> {
        let now = self.now();
        let generation = self.token_cache.generation();
        let keys = self
            .keyring(tenant)
            .await
            .map_err(|e| TokenRejected::Unavailable(Internal::new("loading signing keys", e)))?;
        let verified = jws::verify(token, |kid| keys.verifier(kid))?;
        if verified.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(TokenRejected::NotAnAccessToken);
        }
        let claims: AccessClaims = serde_json::from_slice(&verified.payload)
            .map_err(|_| TokenRejected::MalformedClaims)?;
        if claims.iss != tenant.issuer {
            return Err(TokenRejected::WrongIssuer);
        }
        if claims.aud != tenant.slug.as_str() {
            return Err(TokenRejected::WrongAudience);
        }
        if now >= claims.exp {
            return Err(TokenRejected::Expired);
        }
        if claims.nbf > now + NOT_BEFORE_LEEWAY_SECS {
            return Err(TokenRejected::NotYetValid);
        }
        let unavailable = |e: crate::store::StoreError| {
            TokenRejected::Unavailable(Internal::new("checking a token", e))
        };
        if self
            .revoked
            .contains(&self.db, &claims.jti, now)
            .await
            .map_err(unavailable)?
        {
            return Err(TokenRejected::Revoked);
        }
        if let Some(refused) = self
            .principal_refusal(tenant, &claims)
            .await
            .map_err(|e| TokenRejected::Unavailable(Internal::new("checking a token", e)))?
        {
            return Err(refused);
        }
        let known = Arc::new(KnownToken {
            tenant: tenant.clone(),
            scopes: ScopeSet::parse(&claims.scope).unwrap_or_default(),
            verified: VerifiedAccessToken {
                claims,
                kid: verified.kid,
            },
        });
        self.token_cache.insert(key, known.clone(), generation, now);
        Ok(known)
    }

    /// Why a token's principals no longer stand, or `None` when they all do: its client (a
    /// technical token's grant and host client, [`Authority::technical_token_granted`]), its
    /// person, every actor it names, and a delegation's share. Verification asks it, and so
    /// do the doors re-checking what they admitted ([`Authority::grant_still_valid`]).
    pub(super) async fn principal_refusal(
        &self,
        tenant: &Tenant,
        claims: &AccessClaims,
    ) -> super::Result<Option<TokenRejected>> {
        match &claims.app {
            // A technical token: its client is the host tenant's, and lives while the grant
            // it was issued under does, with scopes the grant still gives.
            Some(app) => {
                if !self.technical_token_granted(tenant, app, claims).await? {
                    return Ok(Some(TokenRejected::Revoked));
                }
            }
            None => {
                if self
                    .client_row(&tenant.id, &claims.client_id)
                    .await?
                    .is_none()
                {
                    return Ok(Some(TokenRejected::ClientGone));
                }
            }
        }
        // A person's token (sub is a user, not the client itself) dies with its user.
        if claims.sub != claims.client_id
            && users::find(&self.db, &tenant.id, &claims.sub)
                .await?
                .is_none()
        {
            return Ok(Some(TokenRejected::UserGone));
        }
        // A token that says who acts for its subject dies with any of them.
        if let Some(act) = &claims.act
            && !self.actors_still_there(tenant, act).await?
        {
            return Ok(Some(TokenRejected::UserGone));
        }
        // A delegation's token lives while its share does (and its recipient, who acts).
        if let Some(share) = &claims.share
            && !self
                .share_is_live(tenant, share, claims.act.as_ref())
                .await?
        {
            return Ok(Some(TokenRejected::Revoked));
        }
        Ok(None)
    }

    /// Who acts for a token's subject, as what it leads to names them: its actors, or for an
    /// impersonation (a token exchanged without an actor, which names none) the client that
    /// exchanged it.
    pub(super) async fn acting(
        &self,
        tenant: &Tenant,
        claims: &AccessClaims,
    ) -> Result<Option<Act>, crate::store::StoreError> {
        if claims.act.is_some() || !claims.exchanged {
            return Ok(claims.act.clone());
        }
        let name = self
            .client_row(&tenant.id, &claims.client_id)
            .await?
            .map(|c| c.name.clone());
        Ok(Some(Act {
            sub: claims.client_id.clone(),
            client_id: Some(claims.client_id.clone()),
            name,
            act: None,
        }))
    }

    /// Whether every actor of a chain still exists: a person of the tenant, or its client.
    async fn actors_still_there(
        &self,
        tenant: &Tenant,
        act: &Act,
    ) -> Result<bool, crate::store::StoreError> {
        for actor in act.chain().take(MAX_ACT_DEPTH + 1) {
            let there = if actor.is_client() {
                self.client_row(&tenant.id, &actor.sub).await?.is_some()
            } else {
                users::find(&self.db, &tenant.id, &actor.sub)
                    .await?
                    .is_some()
            };
            if !there {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Verifies a bearer token presented without naming its tenant (an MQTT password): the
    /// tenant is the one the token's `aud` names, and then every check of
    /// [`Authority::verify_access_token`] applies. A `Bearer ` prefix is tolerated.
    /// A delegation's token is refused, as by [`Authority::verify_access_token`].
    pub async fn verify_bearer(&self, token: &str) -> Result<Arc<KnownToken>, TokenRejected> {
        self.find_bearer(token)
            .await
            .and_then(no_delegation)
            .map_err(|e| self.rejected(e))
    }

    /// [`Authority::verify_bearer`], a delegation's token accepted: for the GraphQL door, where
    /// such a caller has no person ([`super::Caller::user_id`]) and no scope but
    /// `lanyard:local-tokens:mint`, which only minting under its share accepts.
    pub async fn verify_bearer_or_delegation(
        &self,
        token: &str,
    ) -> Result<Arc<KnownToken>, TokenRejected> {
        self.find_bearer(token).await.map_err(|e| self.rejected(e))
    }

    async fn find_bearer(&self, token: &str) -> Result<Arc<KnownToken>, TokenRejected> {
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        let key = CacheKey::of(token);
        if let Some(known) = self.token_cache.get(&key, self.now()) {
            return Ok(known);
        }
        // Only picks the tenant whose keys and issuer the token is then checked against.
        let slug =
            jws::unverified_string_claim(token, "aud").ok_or(TokenRejected::WrongAudience)?;
        let tenant = self
            .tenant(&slug)
            .await
            .map_err(|e| TokenRejected::Unavailable(Internal::new("looking up a tenant", e)))?
            .ok_or(TokenRejected::WrongAudience)?;
        self.verify_unknown(&tenant, token, key).await
    }

    /// Token introspection (RFC 7662) for an authenticated confidential client of the tenant,
    /// with the metadata of the token's client (SPEC §9). `None` is `{"active": false}`: the
    /// token is not one this tenant would accept now.
    pub async fn introspect(
        &self,
        tenant: &Tenant,
        caller: &ClientCredentials,
        token: &str,
    ) -> Result<
        Option<(
            VerifiedAccessToken,
            Option<serde_json::Map<String, serde_json::Value>>,
        )>,
        OAuthError,
    > {
        let client = self.authenticate_client(tenant, caller).await?;
        if client.public {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "introspection needs a confidential client",
            ));
        }
        let verified = match self.verify_access_token(tenant, token).await {
            Ok(v) => v,
            Err(TokenRejected::Unavailable(cause)) => return Err(OAuthError::server_error(cause)),
            Err(_) => return Ok(None),
        };
        let metadata = clients::find(&self.db, &tenant.id, &verified.claims.client_id)
            .await
            .map_err(|e| OAuthError::server_error(Internal::new("client lookup", e)))?
            .map(|row| Client::from_row(&row).metadata);
        Ok(Some((verified, metadata)))
    }

    /// Token revocation (RFC 7009), of access tokens and of refresh tokens (which ends the whole
    /// sign-in they belong to). A token that is invalid, expired or already revoked is not an
    /// error (§2.2). A client may revoke the tokens issued to it; a client holding
    /// `lanyard:clients:write` may revoke other tokens of the tenant that carry no `lanyard:`
    /// scope it lacks (SPEC §6: a caller never acts on a principal with more rights).
    pub async fn revoke(
        &self,
        tenant: &Tenant,
        caller: &ClientCredentials,
        token: &str,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate_client(tenant, caller).await?;
        // Refresh tokens are opaque; access tokens are JWTs.
        if !token.contains('.') {
            self.revoke_refresh_token(tenant, &client, token).await?;
            return Ok(());
        }
        // A delegation's token too: it is revoked like any other, by its client.
        let verified = match self.verify_known(tenant, token).await {
            Ok(known) => known.verified.clone(),
            Err(TokenRejected::Unavailable(cause)) => return Err(OAuthError::server_error(cause)),
            Err(_) => return Ok(()),
        };
        let claims = &verified.claims;
        if claims.client_id != client.client_id {
            may_revoke_others(&client, &claims.scope)?;
        }
        let event = self.event_of(
            tenant,
            format!("client:{}", client.client_id),
            "token.revoked",
            format!("access_token:{} of client:{}", claims.jti, claims.client_id),
        );
        revocations::revoke(
            &self.db,
            &event,
            &tenant.id,
            &claims.jti,
            claims.exp,
            self.now(),
        )
        .await
        .map_err(|e| OAuthError::server_error(Internal::new("revoking a token", e)))?;
        tracing::info!(tenant = %tenant.slug, jti = %claims.jti, "access token revoked");
        self.emit(Event::AccessTokenRevoked {
            tenant_id: tenant.id.to_string(),
            jti: claims.jti.clone(),
        });
        Ok(())
    }

    /// Whether a token verified earlier is still good as far as its signing key goes (still
    /// published) and, with `tokens`, its revocation and its principals
    /// ([`Authority::principal_refusal`]). The MQTT and NATS doors re-check what they admitted
    /// with it when they may have missed an event.
    pub async fn grant_still_valid(
        &self,
        slug: &str,
        kid: &str,
        claims: &AccessClaims,
        tokens: bool,
    ) -> super::Result<bool> {
        let Some(tenant) = self.tenant(slug).await? else {
            return Ok(false);
        };
        if self.keyring(&tenant).await?.verifier(kid).is_none() {
            return Ok(false);
        }
        if tokens
            && (self
                .revoked
                .contains(&self.db, &claims.jti, self.now())
                .await?
                || self.principal_refusal(&tenant, claims).await?.is_some())
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Forgets revocations of tokens that expired anyway.
    pub async fn prune_revocations_once(&self) -> super::Result<u64> {
        let pruned = revocations::prune(&self.db, self.now()).await?;
        if pruned > 0 {
            self.revoked.reset();
        }
        Ok(pruned)
    }
}

/// Refuses a delegation's token (SPEC §11) where it is not accepted.
fn no_delegation(known: Arc<KnownToken>) -> Result<Arc<KnownToken>, TokenRejected> {
    if known.verified.claims.is_delegation() {
        Err(TokenRejected::DelegationOnly)
    } else {
        Ok(known)
    }
}

/// Refuses unless `client` may revoke a token issued to another client that carries `scope`:
/// it needs `lanyard:clients:write` and every `lanyard:` scope the token carries, so a client
/// admin cannot keep the tenant admin's tokens revoked.
pub(crate) fn may_revoke_others(client: &Client, scope: &str) -> Result<(), OAuthError> {
    let carried = ScopeSet::parse(scope).unwrap_or_default();
    if !client.scopes.contains_str(super::caller::CLIENTS_WRITE) {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "the token was not issued to this client",
        ));
    }
    let missing = super::caller::admin_scopes_missing(&carried, &client.scopes);
    if !missing.is_empty() {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            format!("the token carries scopes this client does not hold: {missing}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_one_the_metrics_know() {
        let internal = Internal::msg("test", "down");
        let all = [
            TokenRejected::Jws(JwsError::Malformed),
            TokenRejected::Jws(JwsError::TooLong),
            TokenRejected::Jws(JwsError::Algorithm),
            TokenRejected::Jws(JwsError::ForbiddenHeader),
            TokenRejected::Jws(JwsError::UnknownKey),
            TokenRejected::Jws(JwsError::Signature),
            TokenRejected::NotAnAccessToken,
            TokenRejected::MalformedClaims,
            TokenRejected::WrongIssuer,
            TokenRejected::WrongAudience,
            TokenRejected::Expired,
            TokenRejected::NotYetValid,
            TokenRejected::Revoked,
            TokenRejected::ClientGone,
            TokenRejected::UserGone,
            TokenRejected::DelegationOnly,
            TokenRejected::Unavailable(internal),
        ];
        let reasons: Vec<&str> = all.iter().map(TokenRejected::reason).collect();
        assert_eq!(reasons, crate::metrics::TOKEN_REJECTIONS);
    }
}
