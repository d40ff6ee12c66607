//! Sign-in on the web: the token endpoint redeeming authorization codes against the same
//! endpoint's `client_credentials` tokens, in turn, second by second (tokens per second, and
//! the server's CPU per token); and the forward-auth check of a token seen before
//! (`/t/demo/validate`) against the token endpoint's rate.
//!
//! Codes come from a browser session of the demo person: one sign-in on the hosted page, then
//! an authorization request per code (each answered with a redirect carrying it), made before
//! each second of redemptions, since a code lives 60 seconds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;

use crate::load::{drive_http, http_request};
use crate::procs::{Lanyard, cpu_seconds};
use crate::report::{Row, at_least, row};
use crate::tokens::token_endpoint;

const REDIRECT: &str = "http://127.0.0.1:3000/callback";
const VERIFIER: &str = "bench-verifier-0123456789-0123456789-0123456789";

/// The value of `name="…" value="…"` on a page.
fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.find(&marker).expect("the field is on the page") + marker.len();
    page[at..].split('"').next().unwrap().to_owned()
}

/// The demo person signed in on the hosted page: the session cookie.
async fn session(l: &Lanyard, browser: &reqwest::Client, authorize: &str) -> String {
    let page = browser.get(authorize).send().await.unwrap();
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let page = page.text().await.unwrap();
    let (request, csrf) = (field(&page, "request"), field(&page, "csrf"));
    let before = crate::setup::mails(l);
    browser
        .post(l.url("/t/demo/auth/sign-in"))
        .header("cookie", &cookie)
        .form(&[
            ("request", request.as_str()),
            ("csrf", &csrf),
            ("email", "demo@example.com"),
        ])
        .send()
        .await
        .unwrap();
    let code = crate::setup::mailed_code(l, before).await;
    let done = browser
        .post(l.url("/t/demo/auth/code"))
        .header("cookie", &cookie)
        .form(&[
            ("request", request.as_str()),
            ("csrf", &csrf),
            ("code", &code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303, "the demo person signs in on the page");
    done.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("lanyard_session="))
        .expect("a session cookie")
}

/// `n` fresh codes from authorization requests of the signed-in browser.
async fn codes(browser: &reqwest::Client, authorize: &str, cookie: &str, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|_| async move {
            let res = browser
                .get(authorize)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            let location = res.headers()["location"].to_str().unwrap().to_owned();
            let url = url::Url::parse(&location).unwrap();
            url.query_pairs()
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned()
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Code redemptions for `run`, from `supply`: per second, and the server's CPU µs per token.
async fn redemptions(l: &Lanyard, run: Duration, supply: Vec<String>) -> (f64, f64, u64) {
    let supply = Arc::new(Mutex::new(VecDeque::from(supply)));
    let addr = l.http;
    let template = {
        let l_http = l.http;
        move |code: &str| {
            let body = format!(
                "grant_type=authorization_code&client_id=demo-app&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
                url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
            );
            let mut out = format!(
                "POST /t/demo/oauth2/token HTTP/1.1\r\nhost: {l_http}\r\ncontent-type: application/x-www-form-urlencoded\r\n"
            );
            out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
            out.into_bytes()
        }
    };
    let cpu0 = cpu_seconds(l.pid());
    let (per_s, n) = drive_http(
        addr,
        32,
        run,
        move |_| {
            let code = supply.lock().unwrap().pop_front().unwrap_or_default();
            template(&code)
        },
        |_| true,
    )
    .await;
    (
        per_s,
        (cpu_seconds(l.pid()) - cpu0) / n.max(1) as f64 * 1e6,
        n,
    )
}

pub async fn measure(http: &reqwest::Client, l: &Lanyard, secs: u64) -> Vec<Row> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(16)
        .build()
        .unwrap();
    let challenge = URL_SAFE_NO_PAD.encode(lanyard::crypto::SecretHash::of(VERIFIER.as_bytes()).0);
    let authorize = l.url(&format!(
        "/t/demo/oauth2/authorize?response_type=code&client_id=demo-app&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    ));
    let cookie = session(l, &browser, &authorize).await;

    // A second at a time, each kind in turn, so that both meet the same neighbours.
    let slice = Duration::from_secs(1);
    let (mut cc, mut cc_cpu, mut ac, mut ac_cpu) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..secs {
        let (per_s, cpu) = token_endpoint(l, slice).await;
        cc += per_s;
        cc_cpu += per_s * cpu;
        // Twice what client_credentials reached: a redemption costs no less.
        let supply_size = (per_s * 2.0) as usize + 100;
        let supply = codes(&browser, &authorize, &cookie, supply_size).await;
        // The codes' own write-ahead log is copied back (a checkpoint) soon after they are
        // written: let it finish, or the redemptions would be charged for it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (per_s, cpu, n) = redemptions(l, slice, supply).await;
        if n >= supply_size as u64 {
            eprintln!("  (the codes ran out: the authorization_code rate is a floor)");
        }
        ac += per_s;
        ac_cpu += per_s * cpu;
    }
    let (cc_rate, ac_rate) = (cc / secs as f64, ac / secs as f64);
    let (cc_each, ac_each) = (cc_cpu / cc.max(1.0), ac_cpu / ac.max(1.0));

    // Forward auth with a token seen before, against the token endpoint's rate just measured.
    let device = crate::setup::client_token(http, l, &l.device_id, &l.device_secret).await;
    let check = http_request(
        l,
        "/t/demo/validate",
        &[("authorization", &format!("Bearer {device}"))],
        "",
    );
    let (checks, _) = drive_http(
        l.http,
        32,
        Duration::from_secs(secs),
        move |_| check.clone(),
        |_| true,
    )
    .await;

    vec![
        row(
            "authorization_code tokens/s (with refresh token)",
            format!("{ac_rate:.0}/s"),
            format!("client_credentials {cc_rate:.0}/s"),
            Some(ac_rate / cc_rate.max(1.0)),
            "—",
            None,
        ),
        row(
            "CPU µs per authorization_code token",
            format!("{ac_each:.0} µs"),
            format!("client_credentials {cc_each:.0} µs"),
            Some(ac_each / cc_each.max(1.0)),
            "≤ 1.2×",
            Some(ac_each <= 1.2 * cc_each),
        ),
        at_least(
            "forward-auth checks/s, token seen before",
            format!("{checks:.0}/s"),
            format!("token endpoint {cc_rate:.0}/s"),
            checks,
            cc_rate,
            5.0,
        ),
    ]
}
