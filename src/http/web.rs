//! The browser's door (SPEC §9): the authorization endpoint, the hosted sign-in page (HTML
//! from the compiled templates in `templates/`, one stylesheet, no script), the mailed link and
//! logout.
//!
//! Two cookies, both `HttpOnly`, `SameSite=Lax`, on the tenant's path and `Secure` when
//! `public_url` is https: `lanyard_browser`, a random value that binds a sign-in request (its
//! forms and its mailed link) to the browser that began it, and `lanyard_session`, the
//! sign-in session. Every page is sent with a Content-Security-Policy that allows no script,
//! `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer` (so no code leaks in a Referer).

use std::net::SocketAddr;

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::form::{Form, decode};
use super::{HttpState, tenant};
use crate::authority::Tenant;
use crate::authority::web_sign_in::{AuthorizeParams, PendingSignIn, Prompt, SignedIn, WebError};
use crate::crypto::Secret;

const BROWSER_COOKIE: &str = "lanyard_browser";
const SESSION_COOKIE: &str = "lanyard_session";
/// The browser cookie outlives a sign-in request, so a link opened a while later still finds it.
const BROWSER_COOKIE_MAX_AGE: i64 = 86_400;

const STYLESHEET: &str = include_str!("../../assets/lanyard.css");

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    base: &'a str,
    tenant_name: &'a str,
    app_name: &'a str,
    request: &'a str,
    csrf: &'a str,
    email: Option<&'a str>,
    login_hint: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    base: &'a str,
    tenant_name: &'a str,
    heading: &'a str,
    message: &'a str,
    error: bool,
}

/// What a handler answers: a page, a redirect, and the cookies to set.
struct Answer {
    status: StatusCode,
    body: Option<String>,
    location: Option<String>,
    cookies: Vec<String>,
    retry_after: Option<u64>,
}

impl Answer {
    fn page(status: StatusCode, html: String) -> Answer {
        Answer {
            status,
            body: Some(html),
            location: None,
            cookies: Vec::new(),
            retry_after: None,
        }
    }

    fn redirect(location: String) -> Answer {
        Answer {
            status: StatusCode::SEE_OTHER,
            body: None,
            location: Some(location),
            cookies: Vec::new(),
            retry_after: None,
        }
    }

    fn cookie(mut self, cookie: String) -> Answer {
        self.cookies.push(cookie);
        self
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, body).into_response(),
            None => self.status.into_response(),
        };
        let headers = response.headers_mut();
        let mut broken = false;
        if let Some(location) = self.location {
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    headers.insert(header::LOCATION, v);
                }
                Err(_) => {
                    // Redirect URIs are ASCII by registration; this cannot happen.
                    tracing::error!("http: a redirect to a URI that is no header value");
                    broken = true;
                }
            }
        }
        if let Some(wait) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        for cookie in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, v);
            }
        }
        security_headers(headers);
        if broken {
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        response
    }
}

fn security_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// The tenant's path, the base of every link and form on its pages.
fn base(tenant: &Tenant) -> String {
    format!("/t/{}", tenant.slug)
}

fn cookie(tenant: &Tenant, secure: bool, name: &str, value: &str, max_age: i64) -> String {
    format!(
        "{name}={value}; Path=/t/{}/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        tenant.slug,
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name` the browser sent, if any.
fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The pages of one tenant, as one request answers them.
struct Pages {
    state: HttpState,
    tenant: Tenant,
}

impl Pages {
    /// The tenant named in the path, or a plain 404 (500 if it cannot be read).
    async fn open(state: &HttpState, slug: &str) -> Result<Pages, Response> {
        match tenant(&state.authority, slug).await {
            Ok(tenant) => Ok(Pages {
                state: state.clone(),
                tenant,
            }),
            Err(e) => {
                let status = if e.code == crate::domain::OAuthErrorCode::NotFound {
                    StatusCode::NOT_FOUND
                } else {
                    if let Some(cause) = &e.internal {
                        cause.log("http");
                    }
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                let mut r = (status, e.description).into_response();
                security_headers(r.headers_mut());
                Err(r)
            }
        }
    }

    fn secure(&self) -> bool {
        self.state
            .authority
            .settings()
            .http
            .public_url
            .starts_with("https://")
    }

    fn message(&self, status: StatusCode, heading: &str, message: &str) -> Answer {
        let base = base(&self.tenant);
        let html = MessagePage {
            base: &base,
            tenant_name: &self.tenant.name,
            heading,
            message,
            error: status.is_client_error() || status.is_server_error(),
        }
        .render()
        .unwrap_or_else(|_| message.to_owned());
        Answer::page(status, html)
    }

    fn sign_in(&self, pending: &PendingSignIn, error: Option<&str>) -> Answer {
        let base = base(&self.tenant);
        let html = SignInPage {
            base: &base,
            tenant_name: &self.tenant.name,
            app_name: &pending.client_name,
            request: &pending.id,
            csrf: &pending.csrf,
            email: pending.email.as_deref(),
            login_hint: pending.login_hint.as_deref().unwrap_or(""),
            error,
        }
        .render()
        .unwrap_or_default();
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Answer::page(status, html)
    }

    /// A refusal as the browser sees it.
    fn refused(&self, e: WebError) -> Answer {
        match e {
            WebError::Page(message) => {
                self.message(StatusCode::BAD_REQUEST, "Sign-in is not possible", &message)
            }
            WebError::Redirect(location) => Answer::redirect(location),
            WebError::TooMany(wait) => {
                let mut answer = self.message(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Sign-in is not possible",
                    "Too many sign-ins were started from this network address. Try again in a few minutes.",
                );
                answer.retry_after = Some(wait);
                answer
            }
            WebError::Retry(message) => {
                self.message(StatusCode::BAD_REQUEST, "Sign-in is not possible", &message)
            }
            WebError::Internal(cause) => {
                cause.log("http");
                self.message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The sign-in could not be completed. Try again in a moment.",
                )
            }
        }
    }

    /// The browser is signed in: its session cookie, and on to the application.
    fn signed_in(&self, done: SignedIn) -> Answer {
        let ttl = self
            .state
            .authority
            .settings()
            .web
            .session_ttl
            .as_secs_i64();
        Answer::redirect(done.redirect).cookie(cookie(
            &self.tenant,
            self.secure(),
            SESSION_COOKIE,
            done.session.expose(),
            ttl,
        ))
    }
}

/// The parameters of a query string, each once; names given twice are listed.
fn authorize_params(query: Option<&str>) -> Result<AuthorizeParams, String> {
    let mut p = AuthorizeParams::default();
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name).map_err(|e| e.description)?;
        let value = decode(value).map_err(|e| e.description)?;
        // A parameter without a value is as if it were not sent (RFC 6749 §3.1).
        if value.is_empty() {
            continue;
        }
        let slot = match name.as_str() {
            "client_id" => &mut p.client_id,
            "redirect_uri" => &mut p.redirect_uri,
            "response_type" => &mut p.response_type,
            "scope" => &mut p.scope,
            "state" => &mut p.state,
            "code_challenge" => &mut p.code_challenge,
            "code_challenge_method" => &mut p.code_challenge_method,
            "login_hint" => &mut p.login_hint,
            "prompt" => &mut p.prompt,
            // Unknown parameters are ignored (RFC 6749 §3.1).
            _ => continue,
        };
        if slot.is_some() {
            if !p.repeated.contains(&name) {
                p.repeated.push(name);
            }
        } else {
            *slot = Some(value);
        }
    }
    Ok(p)
}

/// `GET /t/{slug}/oauth2/authorize`.
pub async fn authorize(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pages = match Pages::open(&state, &slug).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let tenant = &pages.tenant;
    let authority = &state.authority;
    let params = match authorize_params(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return pages.refused(WebError::Page(e)).into_response(),
    };
    let auth = match authority.authorization_request(tenant, params).await {
        Ok(a) => a,
        Err(e) => return pages.refused(e).into_response(),
    };
    // A session cookie that signs nobody in (ended, expired, another tenant's) is cleared.
    let mut stale = None;
    if auth.prompt != Prompt::Login
        && let Some(session) = read_cookie(&headers, SESSION_COOKIE)
    {
        match authority.web_session(tenant, session).await {
            Ok(Some(user)) => {
                return match authority.authorize_signed_in(tenant, &auth, &user).await {
                    Ok(location) => Answer::redirect(location).into_response(),
                    Err(e) => pages.refused(e).into_response(),
                };
            }
            Ok(None) => stale = Some(cookie(tenant, pages.secure(), SESSION_COOKIE, "", 0)),
            Err(e) => return pages.refused(e).into_response(),
        }
    }
    if auth.prompt == Prompt::None {
        let mut answer = Answer::redirect(authority.login_required(tenant, &auth));
        if let Some(c) = stale {
            answer = answer.cookie(c);
        }
        return answer.into_response();
    }
    let (browser, new_cookie) = match read_cookie(&headers, BROWSER_COOKIE) {
        Some(b) => (Secret::new(b), None),
        None => {
            let b = Secret::generate();
            let c = cookie(
                tenant,
                pages.secure(),
                BROWSER_COOKIE,
                b.expose(),
                BROWSER_COOKIE_MAX_AGE,
            );
            (b, Some(c))
        }
    };
    let source = crate::connections::source_key(peer.ip());
    match authority
        .begin_sign_in(tenant, &auth, &browser, source)
        .await
    {
        Ok(pending) => {
            let mut answer = pages.sign_in(&pending, None);
            for c in new_cookie.into_iter().chain(stale) {
                answer = answer.cookie(c);
            }
            answer.into_response()
        }
        Err(e) => pages.refused(e).into_response(),
    }
}

/// `GET /t/{slug}/auth/sign-in?request=…`: the hosted page of an open request.
pub async fn sign_in_page(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pages = match Pages::open(&state, &slug).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let tenant = &pages.tenant;
    let query = Form::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let id = query.get("request").unwrap_or("");
    match state
        .authority
        .pending_sign_in(tenant, id, read_cookie(&headers, BROWSER_COOKIE))
        .await
    {
        Ok(mut pending) => {
            if query.get("change").is_some() {
                pending.login_hint = pending.email.take();
            }
            pages.sign_in(&pending, None).into_response()
        }
        Err(e) => pages.refused(e).into_response(),
    }
}

/// The tenant's pages and the fields a page's form posted, or the answer to give instead.
async fn posted(
    state: &HttpState,
    slug: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Pages, Form), Response> {
    let pages = Pages::open(state, slug).await?;
    match Form::from_request(headers, body) {
        Ok(form) => Ok((pages, form)),
        Err(e) => Err(pages
            .message(
                StatusCode::BAD_REQUEST,
                "Sign-in is not possible",
                &e.description,
            )
            .into_response()),
    }
}

/// The page of request `id` again (as `adjust` leaves it), with `message` next to its field.
async fn again(
    pages: &Pages,
    id: &str,
    browser: Option<&str>,
    message: &str,
    adjust: impl FnOnce(&mut PendingSignIn),
) -> Response {
    match pages
        .state
        .authority
        .pending_sign_in(&pages.tenant, id, browser)
        .await
    {
        Ok(mut pending) => {
            adjust(&mut pending);
            pages.sign_in(&pending, Some(message)).into_response()
        }
        Err(e) => pages.refused(e).into_response(),
    }
}

/// `POST /t/{slug}/auth/sign-in` (`request`, `csrf`, `email`): mails a code and a link.
pub async fn sign_in_email(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (pages, form) = match posted(&state, &slug, &headers, body).await {
        Ok(opened) => opened,
        Err(r) => return r,
    };
    let tenant = &pages.tenant;
    let id = form.get("request").unwrap_or("");
    let browser = read_cookie(&headers, BROWSER_COOKIE);
    let authority = &state.authority;
    let done = authority
        .sign_in_email(
            tenant,
            id,
            browser,
            form.get("csrf").unwrap_or(""),
            form.get("email").unwrap_or(""),
            crate::connections::source_key(peer.ip()),
        )
        .await;
    match done {
        Ok(()) => Answer::redirect(format!(
            "{}/auth/sign-in?request={}",
            base(tenant),
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        ))
        .into_response(),
        Err(WebError::Retry(message)) => {
            again(&pages, id, browser, &message, |pending| {
                pending.email = None;
                pending.login_hint = form.get("email").map(str::to_owned);
            })
            .await
        }
        Err(e) => pages.refused(e).into_response(),
    }
}

/// `POST /t/{slug}/auth/code` (`request`, `csrf`, `code`): the code finishes the sign-in.
pub async fn sign_in_code(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (pages, form) = match posted(&state, &slug, &headers, body).await {
        Ok(opened) => opened,
        Err(r) => return r,
    };
    let tenant = &pages.tenant;
    let id = form.get("request").unwrap_or("");
    let browser = read_cookie(&headers, BROWSER_COOKIE);
    let authority = &state.authority;
    let done = authority
        .sign_in_code(
            tenant,
            id,
            browser,
            read_cookie(&headers, SESSION_COOKIE),
            form.get("csrf").unwrap_or(""),
            form.get("code").unwrap_or(""),
        )
        .await;
    match done {
        Ok(done) => pages.signed_in(done).into_response(),
        Err(WebError::Retry(message)) => again(&pages, id, browser, &message, |_| {}).await,
        Err(e) => pages.refused(e).into_response(),
    }
}

/// `GET /t/{slug}/auth/link?request=…&token=…`: the mailed one-click link.
pub async fn sign_in_link(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let pages = match Pages::open(&state, &slug).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let tenant = &pages.tenant;
    let query = Form::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    match state
        .authority
        .sign_in_link(
            tenant,
            query.get("request").unwrap_or(""),
            query.get("token").unwrap_or(""),
            read_cookie(&headers, BROWSER_COOKIE),
            read_cookie(&headers, SESSION_COOKIE),
        )
        .await
    {
        Ok(done) => pages.signed_in(done).into_response(),
        Err(e) => pages.refused(e).into_response(),
    }
}

/// `GET|POST /t/{slug}/oauth2/logout` (`client_id` and `post_logout_redirect_uri`, both
/// optional): ends the sign-in session; back to the application only to a registered URI.
pub async fn logout(
    State(state): State<HttpState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let pages = match Pages::open(&state, &slug).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let tenant = &pages.tenant;
    let from_body = headers.contains_key(header::CONTENT_TYPE);
    let params = if from_body {
        Form::from_request(&headers, body)
    } else {
        Form::parse(query.unwrap_or_default().as_bytes())
    };
    let params = match params {
        Ok(p) => p,
        Err(e) => {
            return pages
                .message(StatusCode::BAD_REQUEST, "Sign-out failed", &e.description)
                .into_response();
        }
    };
    let authority = &state.authority;
    if let Some(session) = read_cookie(&headers, SESSION_COOKIE)
        && let Err(e) = authority.end_web_session(tenant, session).await
    {
        return pages.refused(e).into_response();
    }
    let expired = cookie(tenant, pages.secure(), SESSION_COOKIE, "", 0);
    let target = match (
        params.get("client_id"),
        params.get("post_logout_redirect_uri"),
    ) {
        (Some(client_id), Some(uri)) => {
            match authority
                .post_logout_redirect(tenant, client_id, uri, params.get("state"))
                .await
            {
                Ok(target) => target,
                Err(e) => return pages.refused(e).into_response(),
            }
        }
        _ => None,
    };
    let answer = match target {
        Some(uri) => Answer::redirect(uri),
        None => pages.message(
            StatusCode::OK,
            "You are signed out",
            "You have signed out. You can close this window.",
        ),
    };
    answer.cookie(expired).into_response()
}

/// `GET /t/{slug}/assets/lanyard.css`: the pages' one stylesheet.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}
