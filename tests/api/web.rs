//! Sign-in on the web (SPEC §9) through its doors, as a browser without script would use it:
//! the authorization endpoint, the hosted page's forms, the mailed code and link, the session
//! cookie, logout, and the authorization_code grant; every refusal of the section.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use lanyard::authority::NewClient;
use lanyard::domain::web::RedirectUri;
use lanyard::domain::{GrantType, ScopeSet};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::signin::{code_for, outbox_files, person};

pub const REDIRECT: &str = "https://app.example.com/cb";

/// A PKCE pair: a random verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier =
        URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()) + "-verifier-0123456789-abcdef";
    let challenge = URL_SAFE_NO_PAD.encode(lanyard::crypto::SecretHash::of(verifier.as_bytes()).0);
    (verifier, challenge)
}

/// A web app client: public (or confidential with a secret), with these redirect URIs.
pub async fn web_client(
    app: &TestApp,
    t: &TestTenant,
    public: bool,
    redirect_uris: &[&str],
    scopes: &str,
) -> (ClientId, String) {
    for scope in scopes.split_whitespace() {
        let _ = app.authority().create_scope(&t.tenant, scope, None).await;
    }
    let mut grants = vec![GrantType::AuthorizationCode, GrantType::RefreshToken];
    if !public {
        grants.push(GrantType::ClientCredentials);
    }
    app.client(
        t,
        NewClient {
            name: "Energy Portal".into(),
            public,
            scopes: ScopeSet::parse(scopes).unwrap(),
            grant_types: grants,
            redirect_uris: redirect_uris
                .iter()
                .map(|u| RedirectUri::parse(u).unwrap())
                .collect(),
            post_logout_redirect_uris: vec![
                RedirectUri::parse("https://app.example.com/bye").unwrap(),
            ],
            ..NewClient::default()
        },
    )
    .await
}

/// A browser: its own cookies, no redirects followed.
pub struct Browser {
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The value of the form field `name` on this page.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    /// The query parameters of the redirect.
    pub fn redirect_params(&self) -> HashMap<String, String> {
        let location = self
            .location
            .as_deref()
            .unwrap_or_else(|| panic!("no redirect: {} {}", self.status, self.body));
        url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        let res = req.send().await.unwrap();
        for set in res.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: res.status().as_u16(),
            location: res
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let req = self.http.get(url);
        self.send(req).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }
}

/// The authorize URL with the usual parameters and `extra` ones.
pub fn authorize_url(
    app: &TestApp,
    slug: &str,
    client_id: &str,
    challenge: &str,
    extra: &str,
) -> String {
    app.url(&format!(
        "/t/{slug}/oauth2/authorize?response_type=code&client_id={client_id}&redirect_uri={}&state=st-1&code_challenge={challenge}&code_challenge_method=S256{extra}",
        urlencode(REDIRECT)
    ))
}

/// Opens the authorize URL, types the email and the mailed code: the redirect back to the app.
pub async fn sign_in_on_page(app: &TestApp, browser: &mut Browser, url: &str, email: &str) -> Page {
    let page = browser.get(url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (request, csrf) = (page.field("request"), page.field("csrf"));
    let before = outbox_files(app).len();
    let base = url.split("/oauth2/").next().unwrap().to_owned();
    let sent = browser
        .post(
            &format!("{base}/auth/sign-in"),
            &[("request", &request), ("csrf", &csrf), ("email", email)],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let (code, _) = code_for(app, email, before).await;
    browser
        .post(
            &format!("{base}/auth/code"),
            &[("request", &request), ("csrf", &csrf), ("code", &code)],
        )
        .await
}

/// Redeems an authorization code at the token endpoint as a public client.
pub async fn redeem_code(
    app: &TestApp,
    slug: &str,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    app.post_form(
        &format!("/t/{slug}/oauth2/token"),
        None,
        &format!(
            "grant_type=authorization_code&client_id={client_id}&code={}&redirect_uri={}&code_verifier={verifier}",
            urlencode(code),
            urlencode(REDIRECT)
        ),
    )
    .await
}

async fn userinfo(app: &TestApp, slug: &str, token: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/t/{slug}/oauth2/userinfo")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn error_of(res: reqwest::Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_owned()
}

/// A mail's text as a mail client shows it: when it is quoted-printable, soft breaks joined and
/// `=XX` decoded.
pub fn mail_text(raw: &str) -> String {
    if !raw
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        return raw.to_owned();
    }
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one-click link in a mail, as sent (under `public_url`).
pub fn link_of(mail: &str) -> String {
    let text = mail_text(mail);
    let line = text
        .lines()
        .find(|l| l.contains("/auth/link?"))
        .unwrap_or_else(|| panic!("no link in {text}"));
    line.trim().to_owned()
}

/// The link in a mail, pointed at the test server.
fn link_in(app: &TestApp, mail: &str) -> String {
    link_of(mail).replace(PUBLIC_URL, &app.base)
}

on_both_databases! {
    async fn a_person_signs_in_on_the_hosted_page_and_the_app_redeems_the_code(app) {
        let t = app.tenant("acme").await;
        let ada = person(&app, &t, "ada@example.com", "sensor:read video:gold").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "sensor:read").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let page = browser.get(&url).await;
        assert_eq!(page.status, 200);
        // The page names the tenant and the app, has labelled fields and no script, and is
        // sent with the security headers.
        assert!(page.body.contains("Energy Portal") && page.body.contains("acme"), "{}", page.body);
        assert!(page.body.contains("<label for=\"email\">") && !page.body.contains("<script"));
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
        assert_eq!(page.headers["x-frame-options"], "DENY");
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert!(browser.cookies.contains_key("lanyard_browser"));

        let back = sign_in_on_page(&app, &mut browser, &url, "ada@example.com").await;
        assert_eq!(back.status, 303, "{}", back.body);
        assert!(back.location.as_deref().unwrap().starts_with(REDIRECT), "{:?}", back.location);
        let params = back.redirect_params();
        assert_eq!(params["state"], "st-1");
        assert_eq!(params["iss"], t.tenant.issuer);
        let session = back.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).find(|c| c.starts_with("lanyard_session=")).expect("a session cookie");
        assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Path=/t/acme/"), "{session}");
        assert!(!session.contains("Secure"), "public_url is http here: {session}");

        let res = redeem_code(&app, "acme", &client_id, &params["code"], &verifier).await;
        let status = res.status();
        let tokens: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "{tokens}");
        // The person's scopes ∩ the client's.
        assert_eq!(tokens["scope"], "sensor:read");
        assert!(tokens["refresh_token"].is_string());
        let access = tokens["access_token"].as_str().unwrap();
        let claims = verify_with_jwks(access, &app.jwks("acme").await, &t.tenant.issuer, "acme");
        assert_eq!(claims["sub"], ada.id.to_string());
        assert_eq!(claims["client_id"], client_id.to_string());
        let info: Value = userinfo(&app, "acme", access).await.json().await.unwrap();
        assert_eq!(info["email"], "ada@example.com");
        assert_eq!(info["ingest_context"], "site-7");
    }

    async fn a_signed_in_browser_needs_no_code_until_it_logs_out(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let first = sign_in_on_page(&app, &mut browser, &url, "ada@example.com").await;
        assert_eq!(first.status, 303);
        let mails = outbox_files(&app).len();

        let again = browser.get(&url).await;
        assert_eq!(again.status, 303, "no page with a session: {}", again.body);
        let code = again.redirect_params()["code"].clone();
        assert_eq!(outbox_files(&app).len(), mails, "no mail with a session");
        let res = redeem_code(&app, "acme", &client_id, &code, &verifier).await;
        assert_eq!(res.status(), 200);
        let tokens: Value = res.json().await.unwrap();
        // A client registered without scopes gets a token without scope.
        assert_eq!(tokens["scope"], "");

        // prompt=login shows the page even so; prompt=none answers at once.
        let fresh = browser.get(&format!("{url}&prompt=login")).await;
        assert_eq!(fresh.status, 200);
        assert!(fresh.body.contains("name=\"email\""));
        let silent = browser.get(&format!("{url}&prompt=none")).await;
        assert!(silent.redirect_params().contains_key("code"));

        // login_hint prefills the address.
        let mut other = Browser::new();
        let hinted = other.get(&format!("{url}&login_hint=ada%40example.com")).await;
        assert!(hinted.body.contains("value=\"ada@example.com\""), "{}", hinted.body);
        let none = other.get(&format!("{url}&prompt=none")).await;
        assert_eq!(none.redirect_params()["error"], "login_required");

        // Logout ends the session; back to the app only to a registered URI.
        let bye = browser.get(&app.url(&format!("/t/acme/oauth2/logout?client_id={client_id}&post_logout_redirect_uri={}", urlencode("https://app.example.com/bye")))).await;
        assert_eq!(bye.status, 303);
        assert_eq!(bye.location.as_deref(), Some("https://app.example.com/bye"));
        assert!(!browser.cookies.contains_key("lanyard_session"));
        let after = browser.get(&url).await;
        assert_eq!(after.status, 200, "signed out: the page again");
        let with_state = browser.get(&app.url(&format!("/t/acme/oauth2/logout?client_id={client_id}&post_logout_redirect_uri={}&state=s%201", urlencode("https://app.example.com/bye")))).await;
        assert_eq!(with_state.location.as_deref(), Some("https://app.example.com/bye?state=s+1"));
        let elsewhere = browser.get(&app.url(&format!("/t/acme/oauth2/logout?client_id={client_id}&post_logout_redirect_uri={}", urlencode("https://evil.example/")))).await;
        assert_eq!(elsewhere.status, 200, "no redirect to an unregistered URI");
        assert!(elsewhere.location.is_none());
    }

    async fn a_loopback_logout_target_takes_any_real_port_and_state(app) {
        let t = app.tenant("acme").await;
        let admin = app.admin_token(&t).await;
        let body = crate::graphql::gql(&app, Some(&admin), "mutation { createClient(input: {name: \"Desk\", public: true, redirectUris: [\"http://127.0.0.1/cb\"], postLogoutRedirectUris: [\"http://127.0.0.1/\"]}) { clientId } }", json!({})).await;
        let id = body["data"]["createClient"]["clientId"].as_str().unwrap().to_owned();
        let mut browser = Browser::new();
        let back = browser.get(&app.url(&format!("/t/acme/oauth2/logout?client_id={id}&post_logout_redirect_uri={}&state=x", urlencode("http://127.0.0.1:8765/")))).await;
        assert_eq!(back.location.as_deref(), Some("http://127.0.0.1:8765/?state=x"));
        for no_port in ["http://127.0.0.1:99999/", "http://127.0.0.1:65536/"] {
            let page = browser.get(&app.url(&format!("/t/acme/oauth2/logout?client_id={id}&post_logout_redirect_uri={}&state=x", urlencode(no_port)))).await;
            assert_eq!(page.status, 200, "{no_port}: signed out, not sent there");
            assert!(page.location.is_none());
            let (_, challenge) = pkce();
            let authorize = browser.get(&app.url(&format!("/t/acme/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256", urlencode(&format!("{no_port}cb"))))).await;
            assert_eq!(authorize.status, 400, "{no_port}");
        }
    }

    async fn a_new_sign_in_replaces_the_browsers_session(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let mut browser = Browser::new();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        sign_in_on_page(&app, &mut browser, &url, "ada@example.com").await;
        let first = browser.cookies["lanyard_session"].clone();
        let again = sign_in_on_page(&app, &mut browser, &format!("{url}&prompt=login"), "ada@example.com").await;
        assert_eq!(again.status, 303);
        assert_ne!(browser.cookies["lanyard_session"], first);
        let mut old = Browser::new();
        old.cookies.insert("lanyard_session".into(), first);
        assert_eq!(old.get(&url).await.status, 200, "the replaced session signs nobody in");
    }

    async fn sessions_requests_and_their_codes_expire(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let mut browser = Browser::new();
        sign_in_on_page(&app, &mut browser, &url, "ada@example.com").await;
        app.clock.advance(12 * 3600 - 10);
        assert_eq!(browser.get(&url).await.status, 303, "within web.session_ttl");
        app.clock.advance(20);
        assert_eq!(browser.get(&url).await.status, 200, "after it: the page again");

        let page = browser.get(&url).await;
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let before = outbox_files(&app).len();
        browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        let (code, mail) = code_for(&app, "ada@example.com", before).await;
        app.clock.advance(601);
        let late = browser.post(&app.url("/t/acme/auth/code"), &[("request", &request), ("csrf", &csrf), ("code", &code)]).await;
        assert_eq!(late.status, 400, "a code after 10 minutes");
        assert!(late.location.is_none());
        assert_eq!(browser.get(&link_in(&app, &mail)).await.status, 400, "a link after 10 minutes");
    }

    async fn the_code_form_needs_its_csrf_token(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let mut browser = Browser::new();
        let page = browser.get(&url).await;
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let other = browser.get(&url).await.field("csrf");
        let before = outbox_files(&app).len();
        browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        let (code, _) = code_for(&app, "ada@example.com", before).await;
        for form in [vec![("request", request.as_str()), ("code", code.as_str())], vec![("request", request.as_str()), ("csrf", other.as_str()), ("code", code.as_str())]] {
            let page = browser.post(&app.url("/t/acme/auth/code"), &form).await;
            assert_eq!(page.status, 400);
            assert!(page.location.is_none());
        }
        let done = browser.post(&app.url("/t/acme/auth/code"), &[("request", &request), ("csrf", &csrf), ("code", &code)]).await;
        assert_eq!(done.status, 303, "the request was still good");
    }

    async fn the_requested_scope_narrows_the_grant(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "sensor:read video:gold").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "sensor:read video:gold").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let back = sign_in_on_page(&app, &mut browser, &authorize_url(&app, "acme", &client_id, &challenge, "&scope=video%3Agold"), "ada@example.com").await;
        let res = redeem_code(&app, "acme", &client_id, &back.redirect_params()["code"], &verifier).await;
        let tokens: Value = res.json().await.unwrap();
        assert_eq!(tokens["scope"], "video:gold");
    }

    async fn a_session_ends_server_side_at_logout_not_only_in_the_browser(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let mut browser = Browser::new();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        sign_in_on_page(&app, &mut browser, &url, "ada@example.com").await;
        let kept = browser.cookies["lanyard_session"].clone();
        browser.post(&app.url("/t/acme/oauth2/logout"), &[]).await;
        let mut thief = Browser::new();
        thief.cookies.insert("lanyard_session".into(), kept);
        assert_eq!(thief.get(&url).await.status, 200, "a logged-out session signs nobody in");
        assert!(!thief.cookies.contains_key("lanyard_session"), "and its cookie is cleared");
    }

    async fn the_mailed_link_works_once_and_only_in_the_browser_that_asked(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let page = browser.get(&url).await;
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let before = outbox_files(&app).len();
        browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        let (_, mail) = code_for(&app, "ada@example.com", before).await;
        let link = link_in(&app, &mail);

        let mut elsewhere = Browser::new();
        let refused = elsewhere.get(&link).await;
        assert_eq!(refused.status, 400);
        assert!(refused.body.contains("another browser"), "{}", refused.body);
        assert!(refused.location.is_none());

        let done = browser.get(&link).await;
        assert_eq!(done.status, 303, "{}", done.body);
        let code = done.redirect_params()["code"].clone();
        assert_eq!(redeem_code(&app, "acme", &client_id, &code, &verifier).await.status(), 200);
        let replay = browser.get(&link).await;
        assert_eq!(replay.status, 400, "a link works once");
        assert!(replay.location.is_none());

        // A link whose token was tampered with does nothing.
        let page = browser.get(&format!("{url}&prompt=login")).await;
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let before = outbox_files(&app).len();
        browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        let (_, mail) = code_for(&app, "ada@example.com", before).await;
        let link = link_in(&app, &mail);
        let forged = format!("{}x", &link[..link.len() - 1]);
        assert_eq!(browser.get(&forged).await.status, 400);
    }

    async fn the_page_answers_alike_for_an_address_without_an_account(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let mut pages = Vec::new();
        for email in ["ada@example.com", "nobody@example.com"] {
            let mut browser = Browser::new();
            let page = browser.get(&url).await;
            let (request, csrf) = (page.field("request"), page.field("csrf"));
            let sent = browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", email)]).await;
            assert_eq!(sent.status, 303);
            let shown = browser.get(&app.url(&sent.location.unwrap())).await;
            pages.push(shown.body.replace(&request, "R").replace(&csrf, "C").replace(email, "E"));
            // Every guess at the unknown address is wrong.
            if email == "nobody@example.com" {
                let wrong = browser.post(&app.url("/t/acme/auth/code"), &[("request", &request), ("csrf", &csrf), ("code", "123456")]).await;
                assert_eq!(wrong.status, 400);
            }
        }
        assert_eq!(pages[0], pages[1]);
    }

    async fn five_wrong_codes_end_the_request(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let mut browser = Browser::new();
        let page = browser.get(&authorize_url(&app, "acme", &client_id, &challenge, "")).await;
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let before = outbox_files(&app).len();
        browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        let (code, _) = code_for(&app, "ada@example.com", before).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..4 {
            let page = browser.post(&app.url("/t/acme/auth/code"), &[("request", &request), ("csrf", &csrf), ("code", wrong)]).await;
            assert_eq!(page.status, 400);
            // The error sits next to the field, and the field says so.
            assert!(page.body.contains("role=\"alert\"") && page.body.contains("aria-invalid=\"true\""), "{}", page.body);
        }
        let fifth = browser.post(&app.url("/t/acme/auth/code"), &[("request", &request), ("csrf", &csrf), ("code", wrong)]).await;
        assert_eq!(fifth.redirect_params()["error"], "access_denied");
        let late = browser.post(&app.url("/t/acme/auth/code"), &[("request", &request), ("csrf", &csrf), ("code", &code)]).await;
        assert_eq!(late.status, 400, "the right code after five wrong ones does nothing");
        assert!(late.location.is_none());
        // Asking for a new code gives no new guesses: the request is over.
        let mails = outbox_files(&app).len();
        let again = browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        assert_eq!(again.status, 400, "{}", again.body);
        assert!(again.body.contains("ended"), "{}", again.body);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(outbox_files(&app).len(), mails, "no mail for an ended request");
        let (_, mail) = (0, std::fs::read_to_string(outbox_files(&app).last().unwrap()).unwrap());
        assert_eq!(browser.get(&link_in(&app, &mail)).await.status, 400, "nor does its link work");
    }

    async fn forms_need_their_csrf_token_and_the_browser_that_began(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let mut browser = Browser::new();
        let page = browser.get(&url).await;
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let mut other = Browser::new();
        let other_page = other.get(&url).await;
        let before = outbox_files(&app).len();
        for (who, form) in [
            ("no csrf", vec![("request", request.as_str()), ("email", "ada@example.com")]),
            ("another request's csrf", vec![("request", request.as_str()), ("csrf", other_page.field("csrf").leak()), ("email", "ada@example.com")]),
        ] {
            let page = browser.post(&app.url("/t/acme/auth/sign-in"), &form).await;
            assert_eq!(page.status, 400, "{who}");
        }
        // The right token from another browser.
        let page = other.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        assert_eq!(page.status, 400);
        assert_eq!(outbox_files(&app).len(), before, "no mail was sent");
    }

    async fn a_session_cookie_of_another_tenant_signs_nobody_in(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let mut browser = Browser::new();
        sign_in_on_page(&app, &mut browser, &authorize_url(&app, "acme", &client_id, &challenge, ""), "ada@example.com").await;
        let t2 = app.tenant("beta").await;
        person(&app, &t2, "ada@example.com", "").await;
        let (other_client, _) = web_client(&app, &t2, true, &[REDIRECT], "").await;
        let page = browser.get(&authorize_url(&app, "beta", &other_client, &challenge, "")).await;
        assert_eq!(page.status, 200, "acme's session is no session at beta");
    }

    async fn an_authorization_code_works_once_and_a_second_use_revokes_what_it_gave(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let back = sign_in_on_page(&app, &mut browser, &authorize_url(&app, "acme", &client_id, &challenge, ""), "ada@example.com").await;
        let code = back.redirect_params()["code"].clone();
        let res = redeem_code(&app, "acme", &client_id, &code, &verifier).await;
        let tokens: Value = res.json().await.unwrap();
        let access = tokens["access_token"].as_str().unwrap();
        assert!(app.is_active(&t, access).await);
        let again = redeem_code(&app, "acme", &client_id, &code, &verifier).await;
        assert_eq!(again.status(), 400);
        assert_eq!(error_of(again).await, "invalid_grant");
        assert!(!app.is_active(&t, access).await, "the first use's access token is revoked");
        let refresh = app.post_form("/t/acme/oauth2/token", None, &format!("grant_type=refresh_token&client_id={client_id}&refresh_token={}", urlencode(tokens["refresh_token"].as_str().unwrap()))).await;
        assert_eq!(error_of(refresh).await, "invalid_grant", "and its refresh token");

        // Whoever merely saw a spent code (no verifier) cannot end the sign-in with it.
        let back = browser.get(&authorize_url(&app, "acme", &client_id, &challenge, "")).await;
        let code = back.redirect_params()["code"].clone();
        let tokens: Value = redeem_code(&app, "acme", &client_id, &code, &verifier).await.json().await.unwrap();
        let (guess, _) = pkce();
        let replay = redeem_code(&app, "acme", &client_id, &code, &guess).await;
        assert_eq!(error_of(replay).await, "invalid_grant");
        assert!(app.is_active(&t, tokens["access_token"].as_str().unwrap()).await);
    }

    async fn a_code_is_bound_to_its_verifier_client_redirect_uri_and_sixty_seconds(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT, "https://app.example.com/other"], "").await;
        let (thief_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let back = sign_in_on_page(&app, &mut browser, &url, "ada@example.com").await;
        let code = back.redirect_params()["code"].clone();
        let (other_verifier, _) = pkce();
        for (what, res) in [
            ("wrong verifier", redeem_code(&app, "acme", &client_id, &code, &other_verifier).await),
            ("another client", redeem_code(&app, "acme", &thief_id, &code, &verifier).await),
            ("another redirect_uri", app.post_form("/t/acme/oauth2/token", None, &format!("grant_type=authorization_code&client_id={client_id}&code={}&redirect_uri={}&code_verifier={verifier}", urlencode(&code), urlencode("https://app.example.com/other"))).await),
            ("no verifier", app.post_form("/t/acme/oauth2/token", None, &format!("grant_type=authorization_code&client_id={client_id}&code={}&redirect_uri={}", urlencode(&code), urlencode(REDIRECT))).await),
        ] {
            let status = res.status();
            let error = error_of(res).await;
            assert_eq!(status, 400, "{what}");
            assert!(error == "invalid_grant" || error == "invalid_request", "{what}: {error}");
        }
        // Those failures did not use the code up.
        assert_eq!(redeem_code(&app, "acme", &client_id, &code, &verifier).await.status(), 200);

        let back = browser.get(&url).await;
        let late = back.redirect_params()["code"].clone();
        app.clock.advance(61);
        let res = redeem_code(&app, "acme", &client_id, &late, &verifier).await;
        assert_eq!(error_of(res).await, "invalid_grant", "a code lives 60 s");
    }

    async fn of_concurrent_redemptions_of_one_code_exactly_one_wins(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let back = sign_in_on_page(&app, &mut browser, &authorize_url(&app, "acme", &client_id, &challenge, ""), "ada@example.com").await;
        let code = back.redirect_params()["code"].clone();
        let tries = (0..8).map(|_| redeem_code(&app, "acme", &client_id, &code, &verifier));
        let answers = futures::future::join_all(tries).await;
        let won: Vec<_> = answers.into_iter().filter(|r| r.status() == 200).collect();
        assert_eq!(won.len(), 1);
        // The others were second uses: what the winner got is revoked.
        let tokens: Value = won.into_iter().next().unwrap().json().await.unwrap();
        assert!(!app.is_active(&t, tokens["access_token"].as_str().unwrap()).await);
    }

    async fn one_write_of_many_redemptions_takes_each_code_once_and_only_as_bound(app) {
        use lanyard::store::web_sign_in::{CodeRow, Redemption, insert_code, take_codes};
        let t = app.tenant("acme").await;
        let ada = person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let db = app.authority().db();
        let now = app.authority().now();
        let code = |name: &str, expires_at: i64| CodeRow {
            code_hash: name.as_bytes().to_vec(),
            tenant_id: t.tenant.id.to_string(),
            client_id: client_id.to_string(),
            redirect_uri: REDIRECT.into(),
            code_challenge: format!("challenge-{name}"),
            user_id: ada.id.to_string(),
            scope: String::new(),
            created_at: now,
            expires_at,
            used: false,
            family_id: None,
            access_jti: None,
            access_exp: None,
        };
        for (name, expires_at) in [("a", now + 60), ("b", now + 60), ("c", now - 1), ("d", now + 60)] {
            insert_code(db, &code(name, expires_at)).await.unwrap();
        }
        let redemption = |name: &str, family: &str, challenge: &str, client: &str| Redemption {
            tenant_id: t.tenant.id.to_string(),
            code_hash: name.as_bytes().to_vec(),
            client_id: client.into(),
            redirect_uri: REDIRECT.into(),
            code_challenge: challenge.into(),
            family_id: family.into(),
            access_jti: format!("jti-{family}"),
            access_exp: now + 3600,
            now,
            refresh: Some((format!("refresh-{family}").into_bytes(), now + 3600)),
        };
        let c = client_id.to_string();
        let batch = [
            redemption("a", "a1", "challenge-a", &c),
            redemption("a", "a2", "challenge-a", &c),
            redemption("b", "b-wrong", "challenge-x", &c),
            redemption("b", "b-right", "challenge-b", &c),
            redemption("c", "c1", "challenge-c", &c),
            redemption("d", "d-other", "challenge-d", "another-client"),
        ];
        let taken = take_codes(db, &batch.iter().collect::<Vec<_>>()).await.unwrap();
        let got: Vec<bool> = taken.iter().map(Option::is_some).collect();
        assert_eq!(got[0] as u8 + got[1] as u8, 1, "one of two uses of a: {got:?}");
        assert_eq!(&got[2..], &[false, true, false, false], "{got:?}");
        assert_eq!(taken[3].as_ref().unwrap().user_id, ada.id.to_string());
        // Refresh tokens for the taken only, committed with them.
        for (family, stored) in [("a1", got[0]), ("a2", got[1]), ("b-right", true), ("b-wrong", false), ("c1", false), ("d-other", false)] {
            let row = lanyard::store::refresh_tokens::find(db, &t.tenant.id, format!("refresh-{family}").as_bytes()).await.unwrap();
            assert_eq!(row.is_some(), stored, "{family}");
        }
        // A second write finds them used.
        let again = take_codes(db, &[&redemption("b", "b-again", "challenge-b", &c)]).await.unwrap();
        assert_eq!(again, vec![None]);
    }

    async fn a_confidential_client_authenticates_to_redeem(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, secret) = web_client(&app, &t, false, &[REDIRECT], "").await;
        let (verifier, challenge) = pkce();
        let mut browser = Browser::new();
        let back = sign_in_on_page(&app, &mut browser, &authorize_url(&app, "acme", &client_id, &challenge, ""), "ada@example.com").await;
        let code = back.redirect_params()["code"].clone();
        let unauthenticated = redeem_code(&app, "acme", &client_id, &code, &verifier).await;
        assert_eq!(unauthenticated.status(), 401);
        let form = format!("grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}", urlencode(&code), urlencode(REDIRECT));
        let res = app.post_form("/t/acme/oauth2/token", Some((&client_id, &secret)), &form).await;
        assert_eq!(res.status(), 200);
    }

    async fn the_email_step_shares_the_limits_of_send_otp(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let mut browser = Browser::new();
        let page = browser.get(&authorize_url(&app, "acme", &client_id, &challenge, "")).await;
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        for _ in 0..5 {
            let sent = browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
            assert_eq!(sent.status, 303);
        }
        let sixth = browser.post(&app.url("/t/acme/auth/sign-in"), &[("request", &request), ("csrf", &csrf), ("email", "ada@example.com")]).await;
        assert_eq!(sixth.status, 400);
        assert!(sixth.body.contains("Too many codes"), "{}", sixth.body);
        let (app_id, _) = (crate::signin::app_client(&app, &t).await, ());
        let res = crate::signin::send_otp(&app, "acme", json!({"email": "ada@example.com", "client_id": app_id.to_string()})).await;
        assert_eq!(res.status(), 429, "send-otp counts the page's codes");
    }
}

/// Every way the authorization request can be wrong, and where each answer goes.
mod refusals {
    use super::*;

    #[tokio::test]
    async fn an_untrusted_client_or_redirect_uri_gets_a_page_never_a_redirect() {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let t = app.tenant("acme").await;
        let (client_id, _) =
            web_client(&app, &t, true, &[REDIRECT, "http://127.0.0.1/cb"], "").await;
        let (_, challenge) = pkce();
        let base = format!(
            "/t/acme/oauth2/authorize?response_type=code&code_challenge={challenge}&code_challenge_method=S256&state=s"
        );
        let mut cases = vec![
            (
                "no client",
                format!("{base}&redirect_uri={}", urlencode(REDIRECT)),
            ),
            (
                "unknown client",
                format!("{base}&client_id=nope&redirect_uri={}", urlencode(REDIRECT)),
            ),
            (
                "two client ids",
                format!(
                    "{base}&client_id={client_id}&client_id={client_id}&redirect_uri={}",
                    urlencode(REDIRECT)
                ),
            ),
            ("no redirect", format!("{base}&client_id={client_id}")),
            (
                "two redirects",
                format!(
                    "{base}&client_id={client_id}&redirect_uri={0}&redirect_uri={0}",
                    urlencode(REDIRECT)
                ),
            ),
            (
                "long client id",
                format!(
                    "{base}&client_id={}&redirect_uri={}",
                    "a".repeat(300),
                    urlencode(REDIRECT)
                ),
            ),
        ];
        for differs in [
            "https://app.example.com/cb/",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com:8443/cb",
            "https://app.example.com/cb#x",
            "https://app.example.com/cb?x=1",
            "https://evil.example/cb",
            "http://127.0.0.1:5000/cb/",
            "http://localhost:5000/cb",
        ] {
            cases.push((
                differs,
                format!(
                    "{base}&client_id={client_id}&redirect_uri={}",
                    urlencode(differs)
                ),
            ));
        }
        for (what, path) in cases {
            let page = Browser::new().get(&app.url(&path)).await;
            assert_eq!(page.status, 400, "{what}: {}", page.body);
            assert!(page.location.is_none(), "{what}");
            assert!(
                page.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{what}"
            );
        }
        // The loopback rule: registered without a port, any port matches.
        let path = format!(
            "{base}&client_id={client_id}&redirect_uri={}",
            urlencode("http://127.0.0.1:5000/cb")
        );
        assert_eq!(Browser::new().get(&app.url(&path)).await.status, 200);
    }

    #[tokio::test]
    async fn every_other_error_goes_back_to_the_app_with_state_and_iss() {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let t = app.tenant("acme").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (otp_only, _) = app
            .client(
                &t,
                NewClient {
                    name: "OTP app".into(),
                    public: true,
                    grant_types: vec![GrantType::Otp],
                    redirect_uris: vec![RedirectUri::parse(REDIRECT).unwrap()],
                    ..NewClient::default()
                },
            )
            .await;
        let (_, challenge) = pkce();
        let r = urlencode(REDIRECT);
        let ok = format!("client_id={client_id}&redirect_uri={r}&state=st");
        let cases = [
            (
                "invalid_request",
                format!("{ok}&code_challenge={challenge}&code_challenge_method=S256"),
            ),
            (
                "unsupported_response_type",
                format!(
                    "{ok}&response_type=token&code_challenge={challenge}&code_challenge_method=S256"
                ),
            ),
            ("invalid_request", format!("{ok}&response_type=code")),
            (
                "invalid_request",
                format!("{ok}&response_type=code&code_challenge={challenge}"),
            ),
            (
                "invalid_request",
                format!(
                    "{ok}&response_type=code&code_challenge={challenge}&code_challenge_method=plain"
                ),
            ),
            (
                "invalid_request",
                format!("{ok}&response_type=code&code_challenge=short&code_challenge_method=S256"),
            ),
            (
                "invalid_request",
                format!(
                    "{ok}&response_type=code&response_type=code&code_challenge={challenge}&code_challenge_method=S256"
                ),
            ),
            (
                "invalid_request",
                format!(
                    "{ok}&response_type=code&code_challenge={challenge}&code_challenge_method=S256&scope={}",
                    "a".repeat(3000)
                ),
            ),
            (
                "invalid_scope",
                format!(
                    "{ok}&response_type=code&code_challenge={challenge}&code_challenge_method=S256&scope=%00"
                ),
            ),
            (
                "invalid_request",
                format!(
                    "{ok}&response_type=code&code_challenge={challenge}&code_challenge_method=S256&prompt=consent"
                ),
            ),
            (
                "unauthorized_client",
                format!(
                    "client_id={otp_only}&redirect_uri={r}&state=st&response_type=code&code_challenge={challenge}&code_challenge_method=S256"
                ),
            ),
        ];
        for (error, query) in cases {
            let page = Browser::new()
                .get(&app.url(&format!("/t/acme/oauth2/authorize?{query}")))
                .await;
            assert_eq!(page.status, 303, "{query}: {}", page.body);
            assert!(page.location.as_deref().unwrap().starts_with(REDIRECT));
            let params = page.redirect_params();
            assert_eq!(params["error"], error, "{query}");
            assert_eq!(params["state"], "st", "{query}");
            assert_eq!(params["iss"], t.tenant.issuer, "{query}");
            assert!(!params.contains_key("code"));
        }
    }

    #[tokio::test]
    async fn redirect_uris_are_checked_when_registered() {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let t = app.tenant("acme").await;
        let admin = app.admin_token(&t).await;
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#f",
            "javascript:alert(1)",
            "/cb",
        ] {
            let body = crate::graphql::gql(&app, Some(&admin), "mutation($u: [String!]) { createClient(input: {name: \"W\", public: true, redirectUris: $u}) { clientId } }", json!({"u": [bad]})).await;
            assert_eq!(
                crate::graphql::code(&body),
                "BAD_USER_INPUT",
                "{bad}: {body}"
            );
        }
        let body = crate::graphql::gql(&app, Some(&admin), "mutation($u: [String!]) { createClient(input: {name: \"W\", public: true, redirectUris: $u, postLogoutRedirectUris: $u}) { clientId } }", json!({"u": ["https://app.example.com/cb", "http://127.0.0.1/cb", "com.example.app:/cb"]})).await;
        let id = body["data"]["createClient"]["clientId"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned();
        let body = crate::graphql::gql(&app, Some(&admin), "query($id: String!) { client(clientId: $id) { redirectUris postLogoutRedirectUris grantTypes } }", json!({"id": id})).await;
        assert_eq!(
            body["data"]["client"]["redirectUris"],
            json!([
                "https://app.example.com/cb",
                "http://127.0.0.1/cb",
                "com.example.app:/cb"
            ]),
            "{body}"
        );
        assert_eq!(
            body["data"]["client"]["grantTypes"],
            json!(["OTP", "REFRESH_TOKEN", "AUTHORIZATION_CODE"]),
            "{body}"
        );
    }

    #[tokio::test]
    async fn one_source_opens_a_bounded_number_of_sign_in_pages() {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let t = app.tenant("acme").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let url = authorize_url(&app, "acme", &client_id, &challenge, "");
        let opened =
            futures::stream::iter(0..lanyard::authority::web_sign_in::SIGN_IN_PAGES_PER_SOURCE)
                .map(|_| async { Browser::new().get(&url).await.status })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await;
        assert!(opened.iter().all(|s| *s == 200));
        let page = Browser::new().get(&url).await;
        assert_eq!(page.status, 429, "{}", page.body);
        assert!(page.headers.contains_key("retry-after"));
        // Ten minutes later the source may open pages again.
        app.clock.advance(601);
        assert_eq!(Browser::new().get(&url).await.status, 200);
    }

    #[tokio::test]
    async fn cookies_are_secure_when_the_public_url_is_https() {
        let app = TestApp::spawn_with(Backend::Sqlite, |s| {
            s.http.public_url = "https://id.example.com".into()
        })
        .await;
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let (client_id, _) = web_client(&app, &t, true, &[REDIRECT], "").await;
        let (_, challenge) = pkce();
        let mut browser = Browser::new();
        let page = browser
            .get(&authorize_url(&app, "acme", &client_id, &challenge, ""))
            .await;
        let set = page.headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            set.starts_with("lanyard_browser=") && set.contains("; Secure"),
            "{set}"
        );
        let back = sign_in_on_page(
            &app,
            &mut browser,
            &authorize_url(&app, "acme", &client_id, &challenge, ""),
            "ada@example.com",
        )
        .await;
        let session = back.headers["set-cookie"].to_str().unwrap();
        assert!(
            session.starts_with("lanyard_session=") && session.contains("; Secure"),
            "{session}"
        );
    }

    #[tokio::test]
    async fn metadata_advertises_the_code_flow() {
        let app = TestApp::spawn(Backend::Sqlite).await;
        app.tenant("acme").await;
        let meta: Value = app
            .http
            .get(app.url("/t/acme/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            meta["authorization_endpoint"],
            "http://lanyard.test/t/acme/oauth2/authorize"
        );
        assert_eq!(
            meta["end_session_endpoint"],
            "http://lanyard.test/t/acme/oauth2/logout"
        );
        assert_eq!(meta["response_types_supported"], json!(["code"]));
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
        assert!(
            meta["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("authorization_code"))
        );
    }
}
