//! A tiny web app that signs people in through lanyard (SPEC §9): authorization code with PKCE,
//! driven by the `oauth2` crate, then the person's userinfo on its front page. The copy-paste
//! start for app developers.
//!
//! ```text
//! cargo run --release                   # lanyard, with its demo tenant and the demo-app client
//! cargo run --example web_app           # this app on http://127.0.0.1:3000
//! ```
//!
//! Open <http://127.0.0.1:3000>, click "Sign in", type `demo@example.com`, and the code lanyard
//! mails (with the shipped `broker.toml`, a file in `data/outbox`). Settings come from
//! the environment: `LANYARD_ISSUER` (default `http://127.0.0.1:8080/t/demo`), `CLIENT_ID`
//! (default `demo-app`) and `LISTEN` (default `127.0.0.1:3000`). The client must have
//! registered `http://127.0.0.1/callback` (any port on the loopback address) as a redirect URI
//! and `http://127.0.0.1/` for logout, as the demo seed's `demo-app` has.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, TokenResponse, TokenUrl,
};
use serde_json::Value;

/// What the app needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// The tenant's issuer: `{public_url}/t/{slug}`.
    pub issuer: String,
    pub client_id: String,
    /// Where this app is reached, e.g. `http://127.0.0.1:3000`.
    pub base_url: String,
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// One browser's visit: what the sign-in needs to finish, and then who signed in.
#[derive(Default)]
struct Visit {
    pending: Option<(CsrfToken, PkceCodeVerifier)>,
    userinfo: Option<Value>,
}

#[derive(Clone)]
struct AppState {
    config: Config,
    oauth: Client,
    http: reqwest::Client,
    visits: Arc<Mutex<HashMap<String, Visit>>>,
}

/// The app's routes: `/`, `/login`, `/callback`, `/logout`.
pub fn router(config: Config) -> Router {
    let oauth = BasicClient::new(ClientId::new(config.client_id.clone()))
        .set_auth_uri(AuthUrl::new(format!("{}/oauth2/authorize", config.issuer)).expect("issuer"))
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", config.issuer)).expect("issuer"))
        .set_redirect_uri(
            RedirectUrl::new(format!("{}/callback", config.base_url)).expect("base url"),
        );
    let http = reqwest::Client::builder()
        // Never follow redirects from the token endpoint (RFC 6749 §10.12 spirit: no surprises).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", get(logout))
        .with_state(AppState {
            config,
            oauth,
            http,
            visits: Arc::default(),
        })
}

/// The visit cookie, or a new visit id.
fn visit_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::COOKIE)?
        .to_str()
        .ok()?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == "app_visit")
        .map(|(_, v)| v.to_owned())
}

fn page(body: String) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Web app</title></head><body><main>{body}</main></body></html>"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Html<String> {
    let visits = state.visits.lock().unwrap();
    let info = visit_id(&headers).and_then(|id| visits.get(&id)?.userinfo.clone());
    match info {
        Some(info) => page(format!(
            "<h1 id=\"greeting\">Signed in as {}</h1><p id=\"email\">{}</p><pre id=\"userinfo\">{}</pre><p><a id=\"logout\" href=\"/logout\">Sign out</a></p>",
            escape(info["name"].as_str().unwrap_or("")),
            escape(info["email"].as_str().unwrap_or("")),
            escape(&serde_json::to_string_pretty(&info).unwrap_or_default()),
        )),
        None => page("<h1 id=\"greeting\">Not signed in</h1><p><a id=\"login\" href=\"/login\">Sign in</a></p>".into()),
    }
}

/// Sends the browser to lanyard with a fresh PKCE pair and `state`.
async fn login(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = state
        .oauth
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .url();
    let id = visit_id(&headers).unwrap_or_else(|| CsrfToken::new_random().secret().clone());
    state
        .visits
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default()
        .pending = Some((csrf, verifier));
    (
        [(
            header::SET_COOKIE,
            format!("app_visit={id}; Path=/; HttpOnly; SameSite=Lax"),
        )],
        Redirect::to(url.as_str()),
    )
        .into_response()
}

/// lanyard sends the browser back here with `code`, `state` and `iss` (or `error`).
async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(id) = visit_id(&headers) else {
        return page("<p>No sign-in was started in this browser.</p>".into()).into_response();
    };
    if let Some(error) = params.get("error") {
        let text = format!(
            "{error}: {}",
            params
                .get("error_description")
                .map(String::as_str)
                .unwrap_or("")
        );
        return page(format!(
            "<p id=\"error\">Sign-in failed: {}</p>",
            escape(&text)
        ))
        .into_response();
    }
    let pending = state
        .visits
        .lock()
        .unwrap()
        .get_mut(&id)
        .and_then(|v| v.pending.take());
    let Some((csrf, verifier)) = pending else {
        return page("<p>No sign-in is pending.</p>".into()).into_response();
    };
    // RFC 9207: the answer must come from the issuer the browser was sent to.
    if params.get("state") != Some(csrf.secret()) || params.get("iss") != Some(&state.config.issuer)
    {
        return page("<p id=\"error\">The answer does not belong to this sign-in.</p>".into())
            .into_response();
    }
    let Some(code) = params.get("code") else {
        return page("<p id=\"error\">No code came back.</p>".into()).into_response();
    };
    let http = state.http.clone();
    let send = move |request: HttpRequest| {
        let http = http.clone();
        async move { forward(&http, request).await }
    };
    let token = match state
        .oauth
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            return page(format!(
                "<p id=\"error\">The code was refused: {}</p>",
                escape(&e.to_string())
            ))
            .into_response();
        }
    };
    let info = state
        .http
        .get(format!("{}/oauth2/userinfo", state.config.issuer))
        .bearer_auth(token.access_token().secret())
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let info: Value = match info {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => {
            return page(format!(
                "<p id=\"error\">userinfo failed: {}</p>",
                escape(&e.to_string())
            ))
            .into_response();
        }
    };
    state.visits.lock().unwrap().entry(id).or_default().userinfo = Some(info);
    Redirect::to("/").into_response()
}

/// Forgets the person here and ends the sign-in session at lanyard too.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = visit_id(&headers) {
        state.visits.lock().unwrap().remove(&id);
    }
    let back = format!("{}/", state.config.base_url);
    let url = url::Url::parse_with_params(
        &format!("{}/oauth2/logout", state.config.issuer),
        [
            ("client_id", state.config.client_id.as_str()),
            ("post_logout_redirect_uri", back.as_str()),
        ],
    )
    .expect("issuer");
    Redirect::to(url.as_str()).into_response()
}

/// The `oauth2` crate's requests, sent with reqwest.
async fn forward(
    http: &reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut out = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    Ok(out
        .body(response.bytes().await?.to_vec())
        .expect("a response"))
}

/// Serves the app on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: Config) {
    axum::serve(listener, router(config))
        .await
        .expect("the web app serves");
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let listen: SocketAddr = env("LISTEN", "127.0.0.1:3000")
        .parse()
        .expect("LISTEN is host:port");
    let config = Config {
        issuer: env("LANYARD_ISSUER", "http://127.0.0.1:8080/t/demo"),
        client_id: env("CLIENT_ID", "demo-app"),
        base_url: format!("http://{listen}"),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("LISTEN is free");
    println!(
        "web app on http://{listen} (signing in with {} as {})",
        config.issuer, config.client_id
    );
    serve(listener, config).await;
}
