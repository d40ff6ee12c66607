//! People's sign-in (SPEC §3): one-time codes sent by mail, ending a sign-in, and userinfo. The
//! grants that redeem codes and refresh tokens are in [`grants`](super::grants).
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

use super::clients::Client;
use super::mail::Mail;
use super::tokens::TokenRejected;
use super::{Authority, Tenant};
use crate::crypto::{SecretHash, random_bytes};
use crate::domain::{Email, GrantType, Internal, OAuthError, OAuthErrorCode, UserId};
use crate::store::{StoreError, clients, otp, refresh_tokens};
use serde_json::{Map, Value};

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

fn server_error(context: &'static str) -> impl Fn(StoreError) -> OAuthError {
    move |e| OAuthError::server_error(Internal::new(context, e))
}

/// A uniformly random six-digit code.
pub(super) fn six_digits() -> String {
    loop {
        let n = u32::from_be_bytes(random_bytes::<4>());
        // Rejection sampling: 4_294_000_000 is the largest multiple of 10^6 below 2^32.
        if n < 4_294_000_000 {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

/// The stored form of a code: bound to its row, so equal codes do not hash alike.
pub(super) fn code_hash(id: &str, code: &str) -> SecretHash {
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
        let source = source.to_string();
        let client = clients::find(&self.db, &tenant.id, client_id)
            .await
            .map_err(server_error("client lookup"))?
            .map(|row| Client::from_row(&row))
            .filter(|c| c.grant_types.contains(&GrantType::Otp));
        let user = self
            .user_by_email(tenant, &email)
            .await
            .map_err(|e| OAuthError::server_error(Internal::new("user lookup", e)))?;
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
        let row = otp::OtpRow {
            id: id.clone(),
            tenant_id: tenant.id.to_string(),
            email: counted_address,
            client_id: client_id.to_owned(),
            code_hash: hash.0.to_vec(),
            attempts: 0,
            used: false,
            created_at: now,
            expires_at: now + CODE_TTL_SECS,
            source,
        };
        // The address asked for counts against its limit even when it names no usable client.
        self.record_code_request(&row, email.as_str()).await?;
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

    /// Records a request for a code (`row`), unless it is past the limits: 100 from one
    /// source address, 5 for one address (`counted_email`), in 15 minutes. The hosted sign-in
    /// page's email step counts alike (SPEC §9). Counting and recording are one step, so
    /// requests sent at once cannot all slip under a limit.
    pub(super) async fn record_code_request(
        &self,
        row: &otp::OtpRow,
        counted_email: &str,
    ) -> Result<(), OAuthError> {
        let limited = |what: &str| {
            let mut e = OAuthError::new(
                OAuthErrorCode::TooManyRequests,
                format!("too many sign-in codes requested {what}; try again later"),
            );
            e.retry_after = Some(CODE_WINDOW_SECS as u64);
            e
        };
        let limits = otp::Limits {
            since: self.now() - CODE_WINDOW_SECS,
            per_email: CODES_PER_EMAIL,
            per_source: CODES_PER_SOURCE,
        };
        match otp::insert_within_limits(&self.db, row, counted_email, limits)
            .await
            .map_err(server_error("recording a request for a sign-in code"))?
        {
            otp::Admission::Recorded => Ok(()),
            otp::Admission::SourceLimited => Err(limited("from this network address")),
            otp::Admission::AddressLimited => Err(limited("for this address")),
        }
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
        let event = self.event_of(
            tenant,
            format!("client:{}", caller.client_id),
            "sign_in.revoked",
            format!("user:{} client:{}", row.user_id, row.client_id),
        );
        refresh_tokens::revoke_family(&self.db, &event, &row.family_id)
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
            Err(TokenRejected::Unavailable(cause)) => return Err(OAuthError::server_error(cause)),
            Err(e) => return Err(OAuthError::new(OAuthErrorCode::InvalidToken, e.to_string())),
        };
        let claims = verified.claims;
        if claims.sub == claims.client_id {
            return Err(OAuthError::invalid_request(
                "this is a client's token; userinfo is about people",
            ));
        }
        let gone = || OAuthError::new(OAuthErrorCode::InvalidToken, "the user no longer exists");
        let user_id = UserId::parse(&claims.sub).map_err(|_| gone())?;
        let user = self
            .user(tenant, &user_id)
            .await
            .map_err(|e| OAuthError::server_error(Internal::new("user lookup", e)))?
            .ok_or_else(gone)?;
        let mut out = user.metadata.clone();
        out.insert("sub".into(), user.id.to_string().into());
        out.insert("email".into(), user.email.into());
        out.insert("name".into(), user.name.into());
        let delegations = self.delegations(tenant, &user.id, &claims).await?;
        out.insert("delegations".into(), Value::Array(delegations));
        Ok(out)
    }

    /// Forgets sign-in codes that expired more than a rate-limit window ago.
    pub async fn prune_codes_once(&self) -> super::Result<u64> {
        Ok(otp::prune(&self.db, self.now() - CODE_WINDOW_SECS).await?)
    }
}
