//! Sign-in on the web (SPEC §9): the authorization endpoint's request, the hosted page's email
//! step (a mailed code and a one-click link), the browser's sign-in session, and the
//! authorization codes the token endpoint redeems (its grant is in [`grants`](super::grants)).
//!
//! - A request is checked in two halves: the client and its redirect URI first (a failure is
//!   an error page, never a redirect, RFC 6749 §4.1.2.1), then everything else (a failure is a
//!   redirect with `error`, `state` and `iss`). PKCE with S256 is required of every client.
//! - The page works on a stored request, bound to the browser that began it: a random cookie,
//!   stored as a hash on the request. Every form carries the request's CSRF token, and a form or
//!   a mailed link counts only from that browser. The email step mails a code and a link and
//!   answers alike whether or not the address has an account (an unknown address gets no mail
//!   and a code nobody knows); it counts against send-otp's limits. Five wrong codes end the
//!   request for good; a source address opens at most [`SIGN_IN_PAGES_PER_SOURCE`] pages in
//!   10 minutes.
//! - A finished sign-in leaves a session cookie (its hash stored) for `web.session_ttl`, in
//!   place of the browser's earlier one; a later request within it needs no code unless
//!   `prompt=login`.
//! - A code lives 60 seconds and works once, bound to the client, the redirect URI and the
//!   PKCE challenge; `grants` redeems it.

use subtle::ConstantTimeEq;

use super::clients::Client;
use super::mail::Mail;
use super::signin::{code_hash, six_digits};
use super::{Authority, Tenant, User};
use crate::crypto::{Secret, SecretHash, random_bytes};
use crate::domain::web::{redirect_with, valid_code_challenge};
use crate::domain::{Email, GrantType, Internal, OAuthErrorCode, ScopeSet, UserId};
use crate::store::{StoreError, clients, otp, web_sign_in as store};

/// How long an authorization code is good for.
pub const AUTHORIZATION_CODE_TTL_SECS: i64 = 60;
/// How long the hosted page's request (its code and link) is good for.
pub const SIGN_IN_REQUEST_TTL_SECS: i64 = 600;
/// Wrong codes after which the request is dead.
pub const SIGN_IN_MAX_ATTEMPTS: i64 = 5;
/// Hosted sign-in pages one source address may open (each a stored request) per
/// [`SIGN_IN_REQUEST_TTL_SECS`], on each node.
pub const SIGN_IN_PAGES_PER_SOURCE: u32 = 1000;
/// The longest value of any authorization request parameter.
pub const MAX_PARAM_LEN: usize = 2048;

fn internal(context: &'static str) -> impl Fn(StoreError) -> WebError {
    move |e| WebError::Internal(Internal::new(context, e))
}

/// The parameters of `GET /oauth2/authorize` as they came: each given once, or not at all.
#[derive(Debug, Default, Clone)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub login_hint: Option<String>,
    pub prompt: Option<String>,
    /// Names given more than once (RFC 6749 §3.1 forbids it).
    pub repeated: Vec<String>,
}

/// An authorization request that passed every check.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client: Client,
    pub redirect_uri: String,
    /// `None`: no `scope` was given.
    pub scope: Option<ScopeSet>,
    pub state: Option<String>,
    pub code_challenge: String,
    pub login_hint: Option<String>,
    pub prompt: Prompt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// Use the session if there is one.
    Default,
    /// A fresh sign-in even with a session.
    Login,
    /// Never show the page: the session, or `login_required`.
    None,
}

/// Why the web sign-in refused, as its door shows it.
#[derive(Debug)]
pub enum WebError {
    /// An error page (400): the client or its redirect URI cannot be trusted with a redirect,
    /// or the page's own request is gone.
    Page(String),
    /// A redirect to the client with an error (RFC 6749 §4.1.2.1).
    Redirect(String),
    /// Too many pages opened from one source address (429), with the seconds to wait.
    TooMany(u64),
    /// The hosted page again, with a message next to the field (wrong code, too many codes).
    Retry(String),
    Internal(Internal),
}

/// The hosted page's request as the page shows it.
#[derive(Debug, Clone)]
pub struct PendingSignIn {
    pub id: String,
    pub csrf: String,
    pub client_name: String,
    /// Set once the email step is done: the page asks for the code.
    pub email: Option<String>,
    pub login_hint: Option<String>,
}

/// A finished sign-in: where the browser goes, and the session cookie it gets.
#[derive(Debug)]
pub struct SignedIn {
    pub redirect: String,
    pub session: Secret,
}

impl Authorization {
    /// The redirect carrying an error (RFC 6749 §4.1.2.1, RFC 9207).
    fn error_redirect(&self, tenant: &Tenant, error: &str, description: &str) -> String {
        error_redirect(
            &self.redirect_uri,
            self.state.as_deref(),
            tenant,
            error,
            description,
        )
    }
}

fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    tenant: &Tenant,
    error: &str,
    description: &str,
) -> String {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", &tenant.issuer));
    redirect_with(redirect_uri, &params)
}

impl Authority {
    /// Checks an authorization request (SPEC §9). The client and the redirect URI come first:
    /// until both are known good, every failure is an error page.
    pub async fn authorization_request(
        &self,
        tenant: &Tenant,
        params: AuthorizeParams,
    ) -> Result<Authorization, WebError> {
        let page = |m: &str| Err(WebError::Page(m.to_owned()));
        for name in ["client_id", "redirect_uri"] {
            if params.repeated.iter().any(|r| r == name) {
                return page(&format!("{name} is given more than once"));
            }
        }
        let Some(client_id) = params.client_id.as_deref().filter(|c| !c.is_empty()) else {
            return page("client_id is missing");
        };
        if client_id.len() > 256 {
            return page("client_id is too long");
        }
        let client = clients::find(&self.db, &tenant.id, client_id)
            .await
            .map_err(internal("client lookup"))?
            .map(|row| Client::from_row(&row));
        let Some(client) = client else {
            return page("this application is not known here");
        };
        let Some(redirect_uri) = params.redirect_uri.as_deref() else {
            return page("redirect_uri is missing");
        };
        if !client.redirect_uris.iter().any(|r| r.matches(redirect_uri)) {
            return page("redirect_uri is not registered for this application");
        }
        let redirect_uri = redirect_uri.to_owned();
        // From here on, errors go back to the application.
        let state = params
            .state
            .clone()
            .filter(|s| s.len() <= MAX_PARAM_LEN && !params.repeated.iter().any(|r| r == "state"));
        let fail = |error: &str, description: &str| {
            Err(WebError::Redirect(error_redirect(
                &redirect_uri,
                state.as_deref(),
                tenant,
                error,
                description,
            )))
        };
        if let Some(name) = params.repeated.first() {
            return fail(
                "invalid_request",
                &format!("{name} is given more than once"),
            );
        }
        let too_long = [
            ("response_type", &params.response_type),
            ("scope", &params.scope),
            ("state", &params.state),
            ("code_challenge", &params.code_challenge),
            ("code_challenge_method", &params.code_challenge_method),
            ("login_hint", &params.login_hint),
            ("prompt", &params.prompt),
        ]
        .into_iter()
        .find(|(_, v)| v.as_ref().is_some_and(|v| v.len() > MAX_PARAM_LEN));
        if let Some((name, _)) = too_long {
            return fail("invalid_request", &format!("{name} is too long"));
        }
        match params.response_type.as_deref() {
            Some("code") => {}
            None => return fail("invalid_request", "response_type is missing"),
            Some(_) => {
                return fail(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                );
            }
        }
        if !client.grant_types.contains(&GrantType::AuthorizationCode) {
            return fail(
                "unauthorized_client",
                "this application may not use the authorization code grant",
            );
        }
        let Some(challenge) = params.code_challenge.clone() else {
            return fail(
                "invalid_request",
                "code_challenge is missing: PKCE with S256 is required",
            );
        };
        match params.code_challenge_method.as_deref() {
            Some("S256") => {}
            None => {
                return fail(
                    "invalid_request",
                    "code_challenge_method is missing: only S256 is accepted",
                );
            }
            Some(_) => {
                return fail("invalid_request", "code_challenge_method must be S256");
            }
        }
        if !valid_code_challenge(&challenge) {
            return fail(
                "invalid_request",
                "code_challenge must be the 43-character base64url SHA-256 of the verifier",
            );
        }
        let scope = match params.scope.as_deref() {
            None => None,
            Some(s) => match ScopeSet::parse(s) {
                Ok(set) => Some(set),
                Err(e) => return fail("invalid_scope", &e.to_string()),
            },
        };
        let prompt = match params.prompt.as_deref() {
            None | Some("") => Prompt::Default,
            Some("login") => Prompt::Login,
            Some("none") => Prompt::None,
            Some(_) => return fail("invalid_request", "prompt may be login or none"),
        };
        let login_hint = params.login_hint.filter(|h| Email::parse(h).is_ok());
        Ok(Authorization {
            client,
            redirect_uri,
            scope,
            state,
            code_challenge: challenge,
            login_hint,
            prompt,
        })
    }

    /// The person a browser's session cookie signs in, if it is one of this tenant's live
    /// sessions and the person still exists.
    pub async fn web_session(
        &self,
        tenant: &Tenant,
        cookie: &str,
    ) -> Result<Option<User>, WebError> {
        let hash = SecretHash::of(cookie.as_bytes());
        let Some(row) = store::find_session(&self.db, &tenant.id, &hash.0, self.now())
            .await
            .map_err(internal("reading a session"))?
        else {
            return Ok(None);
        };
        self.user(tenant, &UserId::stored(row.user_id))
            .await
            .map_err(|e| WebError::Internal(Internal::new("user lookup", e)))
    }

    /// Ends a sign-in session (logout). An unknown cookie is not an error.
    pub async fn end_web_session(&self, tenant: &Tenant, cookie: &str) -> Result<(), WebError> {
        let hash = SecretHash::of(cookie.as_bytes());
        store::delete_session(&self.db, &tenant.id, &hash.0)
            .await
            .map_err(internal("ending a session"))
    }

    /// Where logout may send the browser: `uri` (with `state`, if given) if `client_id`
    /// registered it.
    pub async fn post_logout_redirect(
        &self,
        tenant: &Tenant,
        client_id: &str,
        uri: &str,
        state: Option<&str>,
    ) -> Result<Option<String>, WebError> {
        if client_id.len() > 256 || uri.len() > MAX_PARAM_LEN {
            return Ok(None);
        }
        let client = clients::find(&self.db, &tenant.id, client_id)
            .await
            .map_err(internal("client lookup"))?
            .map(|row| Client::from_row(&row));
        let registered =
            client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r.matches(uri)));
        let state: Vec<(&str, &str)> = state.map(|s| ("state", s)).into_iter().collect();
        Ok(registered.then(|| redirect_with(uri, &state)))
    }

    /// The redirect for a request the person is signed in for: a new authorization code.
    pub async fn authorize_signed_in(
        &self,
        tenant: &Tenant,
        auth: &Authorization,
        user: &User,
    ) -> Result<String, WebError> {
        let code = Secret::generate();
        let now = self.now();
        let scope = grant_scope(user, &auth.client, auth.scope.as_ref());
        store::insert_code(
            &self.db,
            &store::CodeRow {
                code_hash: code.hash().0.to_vec(),
                tenant_id: tenant.id.to_string(),
                client_id: auth.client.client_id.to_string(),
                redirect_uri: auth.redirect_uri.clone(),
                code_challenge: auth.code_challenge.clone(),
                user_id: user.id.to_string(),
                scope: scope.to_string(),
                created_at: now,
                expires_at: now + AUTHORIZATION_CODE_TTL_SECS,
                used: false,
                family_id: None,
                access_jti: None,
                access_exp: None,
            },
        )
        .await
        .map_err(internal("storing an authorization code"))?;
        let mut params = vec![("code", code.expose())];
        if let Some(state) = &auth.state {
            params.push(("state", state));
        }
        params.push(("iss", &tenant.issuer));
        Ok(redirect_with(&auth.redirect_uri, &params))
    }

    /// `prompt=none` without a session: the application is told at once.
    pub fn login_required(&self, tenant: &Tenant, auth: &Authorization) -> String {
        auth.error_redirect(tenant, "login_required", "the person is not signed in")
    }

    /// Stores the request for the hosted page, bound to the browser whose cookie is `browser`;
    /// a source address stores at most [`SIGN_IN_PAGES_PER_SOURCE`] in 10 minutes.
    pub async fn begin_sign_in(
        &self,
        tenant: &Tenant,
        auth: &Authorization,
        browser: &Secret,
        source: std::net::IpAddr,
    ) -> Result<PendingSignIn, WebError> {
        let now = self.now();
        let key = source.to_string();
        if let Some(wait) = self.sign_in_pages.blocked(&key, now) {
            return Err(WebError::TooMany(wait));
        }
        self.sign_in_pages.record(&key, now);
        let row = store::RequestRow {
            id: Secret::generate().expose().to_owned(),
            tenant_id: tenant.id.to_string(),
            client_id: auth.client.client_id.to_string(),
            redirect_uri: auth.redirect_uri.clone(),
            scope: auth.scope.as_ref().map(ToString::to_string),
            state: auth.state.clone(),
            code_challenge: auth.code_challenge.clone(),
            browser_hash: browser.hash().0.to_vec(),
            csrf: Secret::generate().expose().to_owned(),
            email: None,
            code_hash: None,
            link_hash: None,
            attempts: 0,
            done: false,
            created_at: now,
            expires_at: now + SIGN_IN_REQUEST_TTL_SECS,
        };
        store::insert_request(&self.db, &row)
            .await
            .map_err(internal("storing a sign-in request"))?;
        Ok(PendingSignIn {
            id: row.id,
            csrf: row.csrf,
            client_name: auth.client.name.clone(),
            email: None,
            login_hint: auth.login_hint.clone(),
        })
    }

    /// The open request `id` of this browser, as the page shows it.
    pub async fn pending_sign_in(
        &self,
        tenant: &Tenant,
        id: &str,
        browser: Option<&str>,
    ) -> Result<PendingSignIn, WebError> {
        let (row, client) = self.open_request(tenant, id, browser).await?;
        Ok(PendingSignIn {
            id: row.id,
            csrf: row.csrf,
            client_name: client.name,
            email: row.email,
            login_hint: None,
        })
    }

    /// The request `id`, open and begun by this browser, with its client.
    async fn open_request(
        &self,
        tenant: &Tenant,
        id: &str,
        browser: Option<&str>,
    ) -> Result<(store::RequestRow, Client), WebError> {
        let gone = || ended();
        if id.len() > 64 {
            return Err(gone());
        }
        let row = store::find_request(&self.db, &tenant.id, id)
            .await
            .map_err(internal("reading a sign-in request"))?
            .ok_or_else(gone)?;
        if row.done || row.expires_at <= self.now() {
            return Err(gone());
        }
        let same_browser = browser.is_some_and(|b| {
            bool::from(SecretHash::of(b.as_bytes()).0.ct_eq(&row.browser_hash[..]))
        });
        if !same_browser {
            return Err(WebError::Page(
                "This sign-in was started in another browser. Open the link in the browser where you started signing in."
                    .into(),
            ));
        }
        let client = clients::find(&self.db, &tenant.id, &row.client_id)
            .await
            .map_err(internal("client lookup"))?
            .map(|c| Client::from_row(&c))
            .ok_or_else(gone)?;
        Ok((row, client))
    }

    /// The email step: mails a code and a one-click link to the address, if it has an
    /// account; the page answers alike either way.
    pub async fn sign_in_email(
        &self,
        tenant: &Tenant,
        id: &str,
        browser: Option<&str>,
        csrf: &str,
        email: &str,
        source: std::net::IpAddr,
    ) -> Result<(), WebError> {
        let (row, client) = self.open_request(tenant, id, browser).await?;
        check_csrf(&row, csrf)?;
        let email = Email::parse(email)
            .map_err(|_| WebError::Retry("Enter an email address like name@example.com.".into()))?;
        let now = self.now();
        // Counted against the address like a request to send-otp; the row itself redeems
        // nothing (no client id, a hash of nothing anybody knows).
        let counted = otp::OtpRow {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant.id.to_string(),
            email: email.to_string(),
            client_id: String::new(),
            code_hash: SecretHash::of(&random_bytes::<32>()).0.to_vec(),
            attempts: 0,
            used: true,
            created_at: now,
            expires_at: row.expires_at,
            source: source.to_string(),
        };
        self.record_code_request(&counted, email.as_str())
            .await
            .map_err(|e| match e.code {
                OAuthErrorCode::TooManyRequests => WebError::Retry(
                    "Too many codes were asked for. Wait 15 minutes and try again.".into(),
                ),
                _ => WebError::Internal(
                    e.internal
                        .unwrap_or_else(|| Internal::msg("counting sign-in codes", e.description)),
                ),
            })?;
        let user = self
            .user_by_email(tenant, &email)
            .await
            .map_err(|e| WebError::Internal(Internal::new("user lookup", e)))?;
        let code = six_digits();
        let link = Secret::generate();
        let code_hash = match &user {
            Some(_) => code_hash(&row.id, &code),
            None => SecretHash::of(&random_bytes::<32>()),
        };
        if !store::set_email(
            &self.db,
            &row.id,
            email.as_str(),
            &code_hash.0,
            &link.hash().0,
            now,
        )
        .await
        .map_err(internal("storing a sign-in code"))?
        {
            return Err(ended());
        }
        if let Some(user) = user {
            let url = redirect_with(
                &format!("{}/auth/link", tenant.issuer),
                &[("request", &row.id), ("token", link.expose())],
            );
            let mail = Mail {
                to: user.email.clone(),
                subject: format!("Your sign-in code for {}", client.name),
                body: format!(
                    "Hello {},\n\n{code} is your code to sign in to {} ({}).\n\n\
                     Or sign in with one click, in the browser where you asked for it:\n{url}\n\n\
                     Both are valid for 10 minutes and work once. Asking again replaces them.\n\n\
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

    /// The code step: the mailed code finishes the sign-in; five wrong ones end the request.
    /// `session` is the browser's current sign-in session, replaced by the new one.
    pub async fn sign_in_code(
        &self,
        tenant: &Tenant,
        id: &str,
        browser: Option<&str>,
        session: Option<&str>,
        csrf: &str,
        code: &str,
    ) -> Result<SignedIn, WebError> {
        let (row, client) = self.open_request(tenant, id, browser).await?;
        check_csrf(&row, csrf)?;
        let (Some(email), Some(stored)) = (&row.email, &row.code_hash) else {
            return Err(WebError::Retry("Enter your email address first.".into()));
        };
        let code = code.trim();
        let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
        let matches = well_formed && bool::from(code_hash(&row.id, code).0.ct_eq(&stored[..]));
        if !matches {
            let attempts = store::record_wrong_code(&self.db, &row.id, SIGN_IN_MAX_ATTEMPTS)
                .await
                .map_err(internal("counting a wrong code"))?;
            if attempts >= SIGN_IN_MAX_ATTEMPTS {
                return Err(WebError::Redirect(error_redirect(
                    &row.redirect_uri,
                    row.state.as_deref(),
                    tenant,
                    "access_denied",
                    "too many wrong codes",
                )));
            }
            return Err(WebError::Retry(
                "That code is not right. Check the newest mail and try again.".into(),
            ));
        }
        let proof = (store::Proof::Code, stored.as_slice());
        self.finish_sign_in(tenant, &row, client, email, proof, session)
            .await
    }

    /// The mailed link: finishes the sign-in, once, only in the browser that began it.
    pub async fn sign_in_link(
        &self,
        tenant: &Tenant,
        id: &str,
        token: &str,
        browser: Option<&str>,
        session: Option<&str>,
    ) -> Result<SignedIn, WebError> {
        let (row, client) = self.open_request(tenant, id, browser).await?;
        let (Some(email), Some(stored)) = (&row.email, &row.link_hash) else {
            return Err(WebError::Page("This link is not valid.".into()));
        };
        let matches =
            token.len() <= 64 && bool::from(SecretHash::of(token.as_bytes()).0.ct_eq(&stored[..]));
        if !matches {
            return Err(WebError::Page(
                "This link is not valid: use the link in the newest mail.".into(),
            ));
        }
        let proof = (store::Proof::Link, stored.as_slice());
        self.finish_sign_in(tenant, &row, client, email, proof, session)
            .await
    }

    /// Ends the request (once, while `proof` is its newest code or link), opens a session in
    /// place of the browser's `previous` one, and issues the code.
    async fn finish_sign_in(
        &self,
        tenant: &Tenant,
        row: &store::RequestRow,
        client: Client,
        email: &str,
        proof: (store::Proof, &[u8]),
        previous: Option<&str>,
    ) -> Result<SignedIn, WebError> {
        let now = self.now();
        let email = Email::parse(email)
            .map_err(|e| WebError::Internal(Internal::msg("a stored email", e.to_string())))?;
        let user = self
            .user_by_email(tenant, &email)
            .await
            .map_err(|e| WebError::Internal(Internal::new("user lookup", e)))?;
        let Some(user) = user else {
            return Err(WebError::Page(
                "There is no account for this address any more.".into(),
            ));
        };
        let scope = row
            .scope
            .as_deref()
            .map(ScopeSet::parse)
            .transpose()
            .map_err(|e| {
                WebError::Internal(Internal::msg("a stored request's scope", e.to_string()))
            })?;
        if !store::finish_request(&self.db, &row.id, proof.0, proof.1, now)
            .await
            .map_err(internal("finishing a sign-in"))?
        {
            return Err(ended());
        }
        let session = Secret::generate();
        store::insert_session(
            &self.db,
            &store::SessionRow {
                token_hash: session.hash().0.to_vec(),
                tenant_id: tenant.id.to_string(),
                user_id: user.id.to_string(),
                created_at: now,
                expires_at: now + self.settings.web.session_ttl.as_secs_i64(),
            },
        )
        .await
        .map_err(internal("opening a session"))?;
        if let Some(previous) = previous {
            self.end_web_session(tenant, previous).await?;
        }
        let auth = Authorization {
            client,
            redirect_uri: row.redirect_uri.clone(),
            scope,
            state: row.state.clone(),
            code_challenge: row.code_challenge.clone(),
            login_hint: None,
            prompt: Prompt::Default,
        };
        let redirect = self.authorize_signed_in(tenant, &auth, &user).await?;
        tracing::info!(tenant = %tenant.slug, user = %user.id, client = %auth.client.client_id, "signed in on the web");
        Ok(SignedIn { redirect, session })
    }

    /// Forgets requests, codes and sessions long expired (codes kept an hour, so that a late
    /// second redemption still revokes what the first issued).
    pub async fn prune_web_sign_in_once(&self) -> super::Result<u64> {
        Ok(store::prune(&self.db, self.now() - 3600).await?)
    }
}

/// The request is over (finished, expired, or five wrong codes).
fn ended() -> WebError {
    WebError::Page(
        "This sign-in has ended or expired. Go back to the application and start again.".into(),
    )
}

fn check_csrf(row: &store::RequestRow, csrf: &str) -> Result<(), WebError> {
    if bool::from(csrf.as_bytes().ct_eq(row.csrf.as_bytes())) {
        Ok(())
    } else {
        Err(WebError::Page(
            "This form has expired. Go back to the application and start again.".into(),
        ))
    }
}

/// The scope a person's sign-in through `client` gets: their granted scopes ∩ the client's
/// allowed scopes ∩ the requested ones, if any (SPEC §9).
pub(super) fn grant_scope(user: &User, client: &Client, requested: Option<&ScopeSet>) -> ScopeSet {
    user.scopes
        .iter()
        .filter(|s| client.scopes.contains(s))
        .filter(|s| requested.is_none_or(|r| r.contains(s)))
        .cloned()
        .collect()
}
