//! People's sign-in (SPEC §3): one-time codes sent by mail, the OTP grant, rotating refresh
//! tokens, and userinfo.
//!
//! Codes are six digits, bound to the client that asked, valid 10 minutes, dead after 5 wrong
//! attempts, and consumed by one conditional `UPDATE`, so of concurrent redemptions exactly one
//! wins. Only the newest code for a person and an app works (the last asked for, by a strictly
//! increasing number, not by the second it was made): asking again replaces the code, so at
//! most one code per person and app can be guessed at. Asking for a code always gets the same
//! answer, whether the user exists or not, and the mail is sent in the background so timing
//! says nothing either. Requests are limited per address (5 in 15 minutes, known or not) and
//! per source address (100 in 15 minutes), never per app; a request naming a client that does
//! not exist or lacks the OTP grant counts against its source only. Refresh tokens are 256-bit,
//! stored as SHA-256, rotated on every use; presenting one already used revokes its family. A
//! refresh that is refused before the token is checked out (another client, a wider scope)
//! leaves the token good.

use std::net::IpAddr;

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::clients::Client;
use super::mail::Mail;
use super::tokens::TokenRejected;
use super::{Authority, IssuedToken, Tenant, User, log_internal};
use crate::crypto::{Secret, SecretHash, random_bytes};
use crate::domain::{Email, GrantType, OAuthError, OAuthErrorCode, ScopeSet};
use crate::store::{StoreError, clients, otp, refresh_tokens};

/// How long a code is good for.
pub const CODE_TTL_SECS: i64 = 600;
/// Wrong attempts after which a code is dead.
pub const CODE_MAX_ATTEMPTS: i64 = 5;
/// At most this many codes per email per window (the next request gets 429).
pub const CODES_PER_EMAIL: i64 = 5;
/// At most this many requests for codes from one source address per window, in all tenants.
pub const CODES_PER_SOURCE: i64 = 100;
/// The rate-limit window.
pub const CODE_WINDOW_SECS: i64 = 900;

fn server_error(context: &str) -> impl Fn(StoreError) -> OAuthError + '_ {
    move |e| {
        log_internal(context, &e);
        OAuthError::server_error()
    }
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, description)
}

/// A uniformly random six-digit code.
fn six_digits() -> String {
    loop {
        let n = u32::from_be_bytes(random_bytes::<4>());
        // Rejection sampling: 4_294_000_000 is the largest multiple of 10^6 below 2^32.
        if n < 4_294_000_000 {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

/// The stored form of a code: bound to its row, so equal codes do not hash alike.
fn code_hash(id: &str, code: &str) -> SecretHash {
    SecretHash::of(format!("{id}:{code}").as_bytes())
}

impl Authority {
    /// Sends a sign-in code to `email` for `client_id`, if that user and client exist and the
    /// client may use the OTP grant. The answer is the same either way; only the rate limits
    /// (per address and per source, never per app: SPEC §7) and a malformed address are told
    /// apart. A request naming no usable client counts against its source only, so naming a
    /// made-up app cannot lock anybody's address.
    pub async fn send_otp(
        &self,
        tenant: &Tenant,
        email: &str,
        client_id: &str,
        source: IpAddr,
    ) -> Result<(), OAuthError> {
        let email = Email::parse(email).map_err(|e| OAuthError::invalid_request(e.to_string()))?;
        if client_id.is_empty() || client_id.len() > 256 {
            return Err(OAuthError::invalid_request(
                "client_id is missing or too long",
            ));
        }
        let now = self.now();
        let since = now - CODE_WINDOW_SECS;
        let limited = |what: &str| {
            let mut e = OAuthError::new(
                OAuthErrorCode::TooManyRequests,
                format!("too many sign-in codes requested {what}; try again later"),
            );
            e.retry_after = Some(CODE_WINDOW_SECS as u64);
            e
        };
        let source = source.to_string();
        let from_source = otp::count_for_source_since(&self.db, &source, since)
            .await
            .map_err(server_error("counting sign-in codes"))?;
        if from_source >= CODES_PER_SOURCE {
            return Err(limited("from this network address"));
        }
        let sent = otp::count_for_email_since(&self.db, &tenant.id, email.as_str(), since)
            .await
            .map_err(server_error("counting sign-in codes"))?;
        if sent >= CODES_PER_EMAIL {
            return Err(limited("for this address"));
        }
        let client = clients::find(&self.db, &tenant.id, client_id)
            .await
            .map_err(server_error("client lookup"))?
            .map(|row| Client::from_row(&row))
            .filter(|c| c.grant_types.contains(&GrantType::Otp));
        let user = self.user_by_email(tenant, &email).await.map_err(|e| {
            log_internal("user lookup", &e);
            OAuthError::server_error()
        })?;
        // Every request is recorded, for the rate limits; one that reaches nobody gets a code
        // nobody knows, and one naming no usable client is recorded under no address.
        let id = uuid::Uuid::new_v4().to_string();
        let code = six_digits();
        let hash = match (&client, &user) {
            (Some(_), Some(_)) => code_hash(&id, &code),
            _ => SecretHash::of(&random_bytes::<32>()),
        };
        let counted_address = if client.is_some() {
            email.to_string()
        } else {
            String::new()
        };
        otp::insert(
            &self.db,
            &otp::OtpRow {
                id: id.clone(),
                tenant_id: tenant.id.clone(),
                email: counted_address,
                client_id: client_id.to_owned(),
                code_hash: hash.0.to_vec(),
                attempts: 0,
                used: false,
                created_at: now,
                expires_at: now + CODE_TTL_SECS,
                source,
            },
        )
        .await
        .map_err(server_error("storing a sign-in code"))?;
        if let (Some(client), Some(user)) = (client, user) {
            let mail = Mail {
                to: user.email.clone(),
                subject: format!("Your sign-in code for {}", client.name),
                body: format!(
                    "Hello {},\n\n{code} is your code to sign in to {} ({}).\n\
                     It is valid for 10 minutes and can be used once.\n\n\
                     If you did not ask to sign in, you can ignore this message.\n",
                    user.name, client.name, tenant.name
                ),
            };
            let mailer = self.mailer.clone();
            tokio::spawn(async move {
                if let Err(e) = mailer.send(mail).await {
                    tracing::error!("sending a sign-in code: {e:#}");
                }
            });
        }
        Ok(())
    }

    /// The OTP grant: a code from [`Authority::send_otp`] for a token pair. The scope is the
    /// user's granted scopes, narrowed to `scope` when given.
    pub async fn otp_grant(
        &self,
        tenant: &Tenant,
        creds: &super::ClientCredentials,
        email: &str,
        code: &str,
        scope: Option<&str>,
    ) -> Result<IssuedToken, OAuthError> {
        let client = self.authenticate_client(tenant, creds).await?;
        if !client.grant_types.contains(&GrantType::Otp) {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "this client may not use the one-time-code grant",
            ));
        }
        let requested = parse_scope(scope)?;
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
            .map_err(|e| {
                log_internal("user lookup", &e);
                OAuthError::server_error()
            })?
            .ok_or_else(wrong)?;
        let scope = narrow(&user.scopes, requested.as_ref());
        let family = uuid::Uuid::new_v4().to_string();
        self.issue_user_tokens(tenant, &client, &user, scope, &family)
            .await
    }

    /// The refresh grant (RFC 6749 §6) with rotation: the token is used up and a new one
    /// returned; a used one presented again revokes every token of its sign-in.
    pub async fn refresh_grant(
        &self,
        tenant: &Tenant,
        creds: &super::ClientCredentials,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<IssuedToken, OAuthError> {
        let client = self.authenticate_client(tenant, creds).await?;
        if !client.grant_types.contains(&GrantType::RefreshToken) {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "this client may not use the refresh_token grant",
            ));
        }
        let requested = parse_scope(scope)?;
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
                // RFC 9700 §4.14.2: reuse means the token leaked; end the whole sign-in.
                refresh_tokens::revoke_family(&self.db, &found.family_id)
                    .await
                    .map_err(server_error("revoking a refresh token family"))?;
                tracing::warn!(tenant = %tenant.slug, user = %found.user_id, "refresh token reused; its sign-in was revoked");
            }
            return Err(bad());
        };
        let user = self
            .user(tenant, &row.user_id)
            .await
            .map_err(|e| {
                log_internal("user lookup", &e);
                OAuthError::server_error()
            })?
            .ok_or_else(bad)?;
        // The user's grants may have shrunk since the sign-in.
        let scope = narrow(&narrow(&user.scopes, Some(&granted)), requested.as_ref());
        self.issue_user_tokens(tenant, &client, &user, scope, &row.family_id)
            .await
    }

    async fn issue_user_tokens(
        &self,
        tenant: &Tenant,
        client: &Client,
        user: &User,
        scope: ScopeSet,
        family: &str,
    ) -> Result<IssuedToken, OAuthError> {
        let mut issued = self
            .issue_access_token(tenant, &user.id, client, scope.clone())
            .await?;
        if !client.grant_types.contains(&GrantType::RefreshToken) {
            // A refresh token is optional (RFC 6749 §5.1) and of no use to this client.
            return Ok(issued);
        }
        let refresh = Secret::generate();
        let now = self.now();
        refresh_tokens::insert(
            &self.db,
            &refresh_tokens::RefreshRow {
                token_hash: refresh.hash().0.to_vec(),
                family_id: family.to_owned(),
                tenant_id: tenant.id.clone(),
                user_id: user.id.clone(),
                client_id: client.client_id.clone(),
                scope: scope.to_string(),
                used: false,
                revoked: false,
                created_at: now,
                expires_at: now + self.settings.tokens.refresh_token_ttl.as_secs_i64(),
            },
        )
        .await
        .map_err(server_error("storing a refresh token"))?;
        issued.refresh_token = Some(refresh);
        Ok(issued)
    }

    /// Revokes the sign-in a refresh token belongs to (RFC 7009), if the caller may: the
    /// client it was issued to, or a client holding `lanyard:clients:write` and every `lanyard:`
    /// scope of the sign-in. Returns false when
    /// the string is no refresh token of this tenant.
    pub(crate) async fn revoke_refresh_token(
        &self,
        tenant: &Tenant,
        caller: &Client,
        token: &str,
    ) -> Result<bool, OAuthError> {
        if token.len() > 256 {
            return Ok(false);
        }
        let hash = SecretHash::of(token.as_bytes());
        let Some(row) = refresh_tokens::find(&self.db, &tenant.id, &hash.0)
            .await
            .map_err(server_error("reading a refresh token"))?
        else {
            return Ok(false);
        };
        if row.client_id != caller.client_id {
            super::tokens::may_revoke_others(caller, &row.scope)?;
        }
        refresh_tokens::revoke_family(&self.db, &row.family_id)
            .await
            .map_err(server_error("revoking a refresh token"))?;
        Ok(true)
    }

    /// UserInfo (OpenID Connect Core §5.3): `sub`, `email`, `name` and the user's metadata
    /// keys. A client's own token has no user: `invalid_request`.
    pub async fn userinfo(
        &self,
        tenant: &Tenant,
        bearer: &str,
    ) -> Result<Map<String, Value>, OAuthError> {
        let verified = match self.verify_access_token(tenant, bearer).await {
            Ok(v) => v,
            Err(TokenRejected::Unavailable) => return Err(OAuthError::server_error()),
            Err(e) => return Err(OAuthError::new(OAuthErrorCode::InvalidToken, e.to_string())),
        };
        let claims = verified.claims;
        if claims.sub == claims.client_id {
            return Err(OAuthError::invalid_request(
                "this is a client's token; userinfo is about people",
            ));
        }
        let user = self
            .user(tenant, &claims.sub)
            .await
            .map_err(|e| {
                log_internal("user lookup", &e);
                OAuthError::server_error()
            })?
            .ok_or_else(|| {
                OAuthError::new(OAuthErrorCode::InvalidToken, "the user no longer exists")
            })?;
        let mut out = user.metadata.clone();
        out.insert("sub".into(), user.id.into());
        out.insert("email".into(), user.email.into());
        out.insert("name".into(), user.name.into());
        Ok(out)
    }

    /// Forgets sign-in codes that expired more than a rate-limit window ago.
    pub async fn prune_codes_once(&self) -> super::Result<u64> {
        Ok(otp::prune(&self.db, self.now() - CODE_WINDOW_SECS).await?)
    }
}

fn parse_scope(scope: Option<&str>) -> Result<Option<ScopeSet>, OAuthError> {
    scope
        .map(|s| {
            ScopeSet::parse(s)
                .map_err(|e| OAuthError::new(OAuthErrorCode::InvalidScope, e.to_string()))
        })
        .transpose()
}

/// `held` narrowed to `requested` (all of `held` when nothing is requested).
fn narrow(held: &ScopeSet, requested: Option<&ScopeSet>) -> ScopeSet {
    match requested {
        None => held.clone(),
        Some(r) => held.iter().filter(|s| r.contains(s)).cloned().collect(),
    }
}
