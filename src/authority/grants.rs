//! The token endpoint's grants (RFC 6749): `client_credentials` (§4.4), the one-time code of
//! SPEC §3, refresh with rotation (§6), and `authorization_code` (§4.1, redeemed in
//! [`web_sign_in`](super::web_sign_in)).
//!
//! Every grant opens the same way, in [`Authority::grant`]: the client is authenticated
//! ([`Authority::authenticate_client`], with the clients), must be allowed the grant, and the requested scope is parsed. Then each does its own part and every
//! access token is signed in one place ([`Authority::issue_access_token`]). Sending codes,
//! revoking a sign-in and userinfo live in [`signin`](super::signin); verifying, introspecting
//! and revoking access tokens in [`tokens`](super::tokens).

use subtle::ConstantTimeEq;

use super::audit::LANYARD;
use super::clients::{Client, ClientCredentials};
use super::signin::{CODE_MAX_ATTEMPTS, code_hash};
use super::{Authority, Tenant};
use crate::crypto::{Secret, SecretHash, jws};
use crate::domain::claims::ACCESS_TOKEN_TYP;
use crate::domain::claims::MayAct;
use crate::domain::{
    AccessClaims, Email, GrantType, Internal, OAuthError, OAuthErrorCode, ScopeSet, SystemId,
    UserId,
};
use crate::metrics::Signed;
use crate::store::audit::Recorder;
use crate::store::{StoreError, otp, refresh_tokens, revocations, web_sign_in};

/// What a token request asks for, beyond the client and the scope.
#[derive(Clone, Copy)]
pub enum GrantRequest<'a> {
    /// The client's own token.
    ClientCredentials,
    /// A person's sign-in with a code mailed by [`Authority::send_otp`].
    Otp { email: &'a str, code: &'a str },
    /// The next token pair of a sign-in.
    Refresh { refresh_token: &'a str },
    /// A code from the authorization endpoint (SPEC §9), with its PKCE verifier.
    AuthorizationCode {
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: &'a str,
    },
    /// Token exchange (RFC 8693, SPEC §11), in [`exchange`](super::exchange).
    TokenExchange(super::exchange::ExchangeRequest<'a>),
}

impl GrantRequest<'_> {
    pub fn grant_type(&self) -> GrantType {
        match self {
            GrantRequest::ClientCredentials => GrantType::ClientCredentials,
            GrantRequest::Otp { .. } => GrantType::Otp,
            GrantRequest::Refresh { .. } => GrantType::RefreshToken,
            GrantRequest::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            GrantRequest::TokenExchange(_) => GrantType::TokenExchange,
        }
    }
}

/// What a person's sign-in issues tokens for.
pub(super) struct SignIn<'a> {
    pub user: &'a UserId,
    pub scope: ScopeSet,
    /// The sign-in's refresh-token family.
    pub family: &'a str,
    pub grant: GrantType,
    /// The access token's id.
    pub jti: String,
}

/// A token response (RFC 6749 §5.1).
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: ScopeSet,
    /// For people's sign-in, to a client allowed the refresh grant: the next refresh token.
    pub refresh_token: Option<Secret>,
    /// Token exchange's `issued_token_type` (RFC 8693 §2.2.1); `None`: an access token of
    /// another grant.
    pub issued_token_type: Option<&'static str>,
}

// Written out so that a code, a refresh token or an access token is never printed.
impl std::fmt::Debug for GrantRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrantRequest({})", self.grant_type())
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn server_error(context: &'static str) -> impl Fn(StoreError) -> OAuthError {
    move |e| OAuthError::server_error(Internal::new(context, e))
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, description)
}

impl Authority {
    /// (`client_credentials` only for a confidential client), `scope` well formed; then the
    /// grant's own part. `scope` absent: everything the client (or the person) holds.
    pub async fn grant(
        &self,
        tenant: &Tenant,
        creds: &ClientCredentials,
        request: GrantRequest<'_>,
        scope: Option<&str>,
    ) -> Result<IssuedToken, OAuthError> {
        let client = self.authenticate_client(tenant, creds).await?;
        let grant_type = request.grant_type();
        // Nothing proves who a public client is: it acts for no one but the person signing in.
        let allowed = client.grant_types.contains(&grant_type)
            && !(client.public
                && matches!(
                    grant_type,
                    GrantType::ClientCredentials | GrantType::TokenExchange
                ));
        if !allowed {
            let name = match grant_type {
                GrantType::Otp => "one-time-code",
                other => other.as_str(),
            };
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                format!("this client may not use the {name} grant"),
            ));
        }
        let requested = scope
            .map(|s| {
                ScopeSet::parse(s)
                    .map_err(|e| OAuthError::new(OAuthErrorCode::InvalidScope, e.to_string()))
            })
            .transpose()?;
        match request {
            GrantRequest::ClientCredentials => {
                self.client_credentials(tenant, &client, requested).await
            }
            GrantRequest::Otp { email, code } => {
                self.otp(tenant, &client, email, code, requested).await
            }
            GrantRequest::Refresh { refresh_token } => {
                self.refresh(tenant, &client, refresh_token, requested)
                    .await
            }
            // The scope was settled at the authorization endpoint (RFC 6749 §4.1.3 has none).
            GrantRequest::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                self.authorization_code(
                    tenant,
                    &client,
                    CodeRedemption {
                        code,
                        redirect_uri,
                        code_verifier,
                    },
                )
                .await
            }
            GrantRequest::TokenExchange(exchange) => {
                self.token_exchange(tenant, &client, exchange, requested)
                    .await
            }
        }
    }

    /// `client_credentials`: any scope the client is not allowed is `invalid_scope`.
    async fn client_credentials(
        &self,
        tenant: &Tenant,
        client: &Client,
        requested: Option<ScopeSet>,
    ) -> Result<IssuedToken, OAuthError> {
        let scope = match requested {
            None => client.scopes.clone(),
            Some(requested) => {
                let refused = requested.difference(&client.scopes);
                if !refused.is_empty() {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidScope,
                        format!(
                            "scope not allowed for this client: {}",
                            refused
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    ));
                }
                requested
            }
        };
        self.issue_access_token(
            tenant,
            &client.client_id,
            client,
            scope,
            GrantType::ClientCredentials,
        )
        .await
    }

    /// The one-time code for a token pair: the person's granted scopes, narrowed to those
    /// requested.
    async fn otp(
        &self,
        tenant: &Tenant,
        client: &Client,
        email: &str,
        code: &str,
        requested: Option<ScopeSet>,
    ) -> Result<IssuedToken, OAuthError> {
        let email = Email::parse(email).map_err(|e| OAuthError::invalid_request(e.to_string()))?;
        let wrong = || invalid_grant("the code is wrong, expired or used up; ask for a new one");
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(wrong());
        }
        let now = self.now();
        let row = otp::latest(&self.db, &tenant.id, email.as_str(), &client.client_id)
            .await
            .map_err(server_error("reading a sign-in code"))?
            .ok_or_else(wrong)?;
        if row.used || row.expires_at <= now || row.attempts >= CODE_MAX_ATTEMPTS {
            return Err(wrong());
        }
        let matches: bool = code_hash(&row.id, code).0.ct_eq(&row.code_hash[..]).into();
        if !matches {
            otp::record_failed_attempt(&self.db, &row.id)
                .await
                .map_err(server_error("recording a failed attempt"))?;
            return Err(wrong());
        }
        if !otp::consume(&self.db, &row.id, CODE_MAX_ATTEMPTS, now)
            .await
            .map_err(server_error("consuming a sign-in code"))?
        {
            return Err(wrong());
        }
        let user = self
            .user_by_email(tenant, &email)
            .await
            .map_err(|e| OAuthError::server_error(Internal::new("user lookup", e)))?
            .ok_or_else(wrong)?;
        let scope = narrow(&user.scopes, requested.as_ref());
        let family = uuid::Uuid::new_v4().to_string();
        self.issue_user_tokens(
            tenant,
            client,
            SignIn {
                user: &user.id,
                scope,
                family: &family,
                grant: GrantType::Otp,
                jti: uuid::Uuid::new_v4().to_string(),
            },
        )
        .await
    }

    /// Refresh with rotation: the token is used up and a new one returned; a used one presented
    /// again revokes every token of its sign-in (RFC 9700 §4.14.2).
    async fn refresh(
        &self,
        tenant: &Tenant,
        client: &Client,
        refresh_token: &str,
        requested: Option<ScopeSet>,
    ) -> Result<IssuedToken, OAuthError> {
        let bad = || invalid_grant("the refresh token is not valid");
        if refresh_token.len() > 256 {
            return Err(bad());
        }
        let hash = SecretHash::of(refresh_token.as_bytes());
        let now = self.now();
        let Some(found) = refresh_tokens::find(&self.db, &tenant.id, &hash.0)
            .await
            .map_err(server_error("reading a refresh token"))?
        else {
            return Err(bad());
        };
        if found.client_id != client.client_id {
            return Err(bad());
        }
        // The scope is checked before the token is used up: a refused request must leave the
        // token good, or its next honest use would count as reuse and end the sign-in.
        let granted = ScopeSet::parse(&found.scope).unwrap_or_default();
        if let Some(requested) = &requested
            && !requested.is_subset(&granted)
        {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidScope,
                "a refresh can only narrow the scope of the sign-in",
            ));
        }
        let Some(row) = refresh_tokens::take(&self.db, &tenant.id, &hash.0, now)
            .await
            .map_err(server_error("using a refresh token"))?
        else {
            if found.used && !found.revoked {
                let event = self.event_of(
                    tenant,
                    LANYARD.into(),
                    "sign_in.revoked_on_reuse",
                    format!("user:{} client:{}", found.user_id, found.client_id),
                );
                refresh_tokens::revoke_family(&self.db, &event, &found.family_id)
                    .await
                    .map_err(server_error("revoking a refresh token family"))?;
                tracing::warn!(tenant = %tenant.slug, user = %found.user_id, "refresh token reused; its sign-in was revoked");
            }
            return Err(bad());
        };
        let user = self
            .user(tenant, &UserId::stored(row.user_id))
            .await
            .map_err(|e| OAuthError::server_error(Internal::new("user lookup", e)))?
            .ok_or_else(bad)?;
        // The user's grants may have shrunk since the sign-in.
        let scope = narrow(&narrow(&user.scopes, Some(&granted)), requested.as_ref());
        self.issue_user_tokens(
            tenant,
            client,
            SignIn {
                user: &user.id,
                scope,
                family: &row.family_id,
                grant: GrantType::RefreshToken,
                jti: uuid::Uuid::new_v4().to_string(),
            },
        )
        .await
    }

    /// An access token for a person's sign-in and, to a client allowed the refresh grant, a
    /// refresh token of the sign-in's family.
    pub(super) async fn issue_user_tokens(
        &self,
        tenant: &Tenant,
        client: &Client,
        sign_in: SignIn<'_>,
    ) -> Result<IssuedToken, OAuthError> {
        let SignIn {
            user,
            scope,
            family,
            grant,
            jti,
        } = sign_in;
        let mut issued = self
            .sign_access_token(tenant, user.as_str(), client, scope.clone(), grant, jti)
            .await?;
        if !client.grant_types.contains(&GrantType::RefreshToken) {
            // A refresh token is optional (RFC 6749 §5.1) and of no use to this client.
            return Ok(issued);
        }
        let refresh = Secret::generate();
        let now = self.now();
        let row = refresh_tokens::RefreshRow {
            token_hash: refresh.hash().0.to_vec(),
            family_id: family.to_owned(),
            tenant_id: tenant.id.to_string(),
            user_id: user.to_string(),
            client_id: client.client_id.to_string(),
            scope: scope.to_string(),
            used: false,
            revoked: false,
            created_at: now,
            expires_at: now + self.settings.tokens.refresh_token_ttl.as_secs_i64(),
        };
        refresh_tokens::insert(&self.db, &row)
            .await
            .map_err(server_error("storing a refresh token"))?;
        issued.refresh_token = Some(refresh);
        Ok(issued)
    }

    /// Signs an access token for `subject` (a user uuid, or the client id itself) issued by
    /// `grant`, and records its `token.issued` event (with `audit.token_issuance`) before it is
    /// answered: no token leaves without its event.
    pub(crate) async fn issue_access_token(
        &self,
        tenant: &Tenant,
        subject: &str,
        client: &Client,
        scope: ScopeSet,
        grant: GrantType,
    ) -> Result<IssuedToken, OAuthError> {
        let jti = uuid::Uuid::new_v4().to_string();
        self.sign_access_token(tenant, subject, client, scope, grant, jti)
            .await
    }

    /// [`Authority::issue_access_token`] with the token id chosen by the caller.
    async fn sign_access_token(
        &self,
        tenant: &Tenant,
        subject: &str,
        client: &Client,
        scope: ScopeSet,
        grant: GrantType,
        jti: String,
    ) -> Result<IssuedToken, OAuthError> {
        let now = self.now();
        let ttl = self.settings.tokens.access_token_ttl.as_secs_i64();
        let mut claims = AccessClaims::new(
            tenant.issuer.clone(),
            subject.to_owned(),
            tenant.slug.to_string(),
            client.client_id.to_string(),
            scope.to_string(),
            now,
            now + ttl,
            jti,
        );
        // The binding marks the client's own tokens; a person signing in through a bound
        // app is not the system's device (SPEC §6).
        if client.client_id == subject {
            claims.system = client.system_id.as_ref().map(SystemId::to_string);
        }
        claims.may_act = client.may_act.as_ref().map(|c| MayAct {
            client_id: c.to_string(),
        });
        self.sign_claims(tenant, claims, grant.as_str()).await
    }

    /// Signs `claims` with the tenant's ACTIVE key and records the `token.issued` event (with
    /// `audit.token_issuance`, `grant` naming how it was issued) before answering: no token
    /// leaves without its event. Every access token lanyard issues is signed here.
    pub(super) async fn sign_claims(
        &self,
        tenant: &Tenant,
        claims: AccessClaims,
        grant: &str,
    ) -> Result<IssuedToken, OAuthError> {
        let keys = self
            .keyring(tenant)
            .await
            .map_err(|e| OAuthError::server_error(Internal::new("loading signing keys", e)))?;
        let Some(signer) = &keys.signer else {
            return Err(OAuthError::server_error(Internal::msg(
                "issuing a token",
                format!("tenant {} has no ACTIVE signing key", tenant.slug),
            )));
        };
        let recorder = self.settings.audit.token_issuance.then(|| {
            self.audit_recorder
                .get_or_init(|| Recorder::start(self.db.clone()))
        });
        let coming = recorder.map(Recorder::expect);
        let signing = self.metrics.signing(Signed::AccessToken);
        let access_token = jws::sign(&signer.key, &signer.kid, ACCESS_TOKEN_TYP, &claims);
        drop(signing);
        if let (Some(recorder), Some(coming)) = (recorder, coming) {
            let who = if claims.client_id == claims.sub {
                "client"
            } else {
                "user"
            };
            // Who asked: the client, and for a delegation the person it is for; a technical
            // token's client is another tenant's.
            let mut asked = match (&claims.share, &claims.act) {
                (Some(_), Some(recipient)) => {
                    format!("user:{} via client:{}", recipient.sub, claims.client_id)
                }
                _ => format!("client:{}", claims.client_id),
            };
            if let Some(app) = &claims.app {
                asked.push_str(&format!(" of tenant:{}", app.host_tenant));
            }
            let mut target = format!(
                "access_token:{} ({grant}) for {who}:{}",
                claims.jti, claims.sub
            );
            for actor in claims.act.iter().flat_map(|a| a.named()) {
                target.push_str(&format!(", acting: {actor}"));
            }
            let event = self.event_of(tenant, asked, "token.issued", target);
            recorder.record(event, coming).await.map_err(|e| {
                OAuthError::server_error(Internal::new("recording a token issued", e))
            })?;
        }
        Ok(IssuedToken {
            access_token,
            expires_in: claims.exp - claims.iat,
            scope: ScopeSet::parse(&claims.scope).unwrap_or_default(),
            refresh_token: None,
            issued_token_type: None,
        })
    }
}

/// What a redemption of an authorization code presents besides the client.
pub struct CodeRedemption<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: &'a str,
}

impl Authority {
    /// `authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6), for codes from the authorization
    /// endpoint ([`web_sign_in`](super::web_sign_in)): the code's client, redirect URI and PKCE
    /// challenge must match, all in the one statement that uses it up. A code presented again
    /// with its verifier is refused and revokes what its first use issued; a wrong verifier is
    /// refused and revokes nothing, so whoever merely saw a spent code cannot end the sign-in.
    /// The scope is the one the code was issued with, a minute ago at most; a person deleted
    /// since has no codes left.
    async fn authorization_code(
        &self,
        tenant: &Tenant,
        client: &Client,
        r: CodeRedemption<'_>,
    ) -> Result<IssuedToken, OAuthError> {
        let bad = || {
            invalid_grant(
                "the code is not valid, expired, or was issued for another client or redirect_uri",
            )
        };
        // A redirect URI the client never registered cannot be a code's: refused before it
        // costs a write (and before odd bytes reach the database).
        if r.code.len() > 256
            || !client
                .redirect_uris
                .iter()
                .any(|u| u.matches(r.redirect_uri))
        {
            return Err(bad());
        }
        if !crate::domain::web::valid_code_verifier(r.code_verifier) {
            return Err(OAuthError::invalid_request(
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        let hash = SecretHash::of(r.code.as_bytes());
        let challenge = crate::crypto::pkce_s256(r.code_verifier);
        let now = self.now();
        let jti = uuid::Uuid::new_v4().to_string();
        let refresh = client
            .grant_types
            .contains(&GrantType::RefreshToken)
            .then(Secret::generate);
        let redemption = web_sign_in::Redemption {
            tenant_id: tenant.id.to_string(),
            code_hash: hash.0.to_vec(),
            client_id: client.client_id.to_string(),
            redirect_uri: r.redirect_uri.to_owned(),
            code_challenge: challenge.clone(),
            family_id: uuid::Uuid::new_v4().to_string(),
            access_jti: jti.clone(),
            // Past the token's `exp` (signed a moment later) by a margin, so a revocation on
            // reuse is kept as long as the token lives.
            access_exp: now + self.settings.tokens.access_token_ttl.as_secs_i64() + 60,
            now,
            refresh: refresh.as_ref().map(|s| {
                let ttl = self.settings.tokens.refresh_token_ttl.as_secs_i64();
                (s.hash().0.to_vec(), now + ttl)
            }),
        };
        let taken = self
            .redeemer
            .get_or_init(|| web_sign_in::Redeemer::start(self.db.clone()))
            .redeem(redemption)
            .await
            .map_err(server_error("using an authorization code"))?;
        let Some(taken) = taken else {
            // Refused: say why, and revoke when it was a second use by the code's owner.
            let row = web_sign_in::find_code(&self.db, &tenant.id, &hash.0)
                .await
                .map_err(server_error("reading an authorization code"))?
                .ok_or_else(bad)?;
            if row.client_id != client.client_id.as_str() || row.redirect_uri != r.redirect_uri {
                return Err(bad());
            }
            if row.code_challenge != challenge {
                return Err(invalid_grant(
                    "code_verifier does not match the code_challenge",
                ));
            }
            if row.used {
                self.revoke_code_issue(tenant, &hash.0).await?;
                return Err(invalid_grant(
                    "the code was already used; the tokens it gave were revoked",
                ));
            }
            return Err(bad());
        };
        let scope = ScopeSet::parse(&taken.scope).map_err(|e| {
            OAuthError::server_error(Internal::msg("a stored code's scope", e.to_string()))
        })?;
        let mut issued = self
            .sign_access_token(
                tenant,
                &taken.user_id,
                client,
                scope,
                GrantType::AuthorizationCode,
                jti,
            )
            .await?;
        // Stored with the code's use, in the same transaction.
        issued.refresh_token = refresh;
        Ok(issued)
    }

    /// Revokes the access token and the sign-in a used code issued (RFC 6749 §4.1.2).
    async fn revoke_code_issue(&self, tenant: &Tenant, hash: &[u8]) -> Result<(), OAuthError> {
        let Some(row) = web_sign_in::find_code(&self.db, &tenant.id, hash)
            .await
            .map_err(server_error("reading an authorization code"))?
        else {
            return Ok(());
        };
        let target = format!("user:{} client:{}", row.user_id, row.client_id);
        if let Some(family) = &row.family_id {
            let event = self.event_of(tenant, LANYARD.into(), "sign_in.revoked_on_reuse", &target);
            refresh_tokens::revoke_family(&self.db, &event, family)
                .await
                .map_err(server_error("revoking a sign-in"))?;
        }
        if let (Some(jti), Some(exp)) = (&row.access_jti, row.access_exp) {
            let event = self.event_of(
                tenant,
                LANYARD.into(),
                "token.revoked",
                format!(
                    "access_token:{jti} of client:{} (code reused)",
                    row.client_id
                ),
            );
            revocations::revoke(&self.db, &event, &tenant.id, jti, exp, self.now())
                .await
                .map_err(server_error("revoking a token"))?;
            self.emit(super::Event::AccessTokenRevoked {
                tenant_id: tenant.id.to_string(),
                jti: jti.clone(),
            });
        }
        tracing::warn!(tenant = %tenant.slug, %target, "authorization code reused; what it issued was revoked");
        Ok(())
    }
}

/// `held` narrowed to `requested` (all of `held` when nothing is requested).
fn narrow(held: &ScopeSet, requested: Option<&ScopeSet>) -> ScopeSet {
    match requested {
        None => held.clone(),
        Some(r) => held.iter().filter(|s| r.contains(s)).cloned().collect(),
    }
}
