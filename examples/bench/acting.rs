//! Acting for others (SPEC §11): token exchange to an access token against `client_credentials`
//! tokens, in turn, second by second (the server's CPU per token); and a token-management
//! request for five tenants against one `client_credentials` token.
//!
//! Each exchange presents a subject token not seen before (a person's token, exchanged ahead of
//! each second and unmeasured), so its signature is verified as a service's would be; the actor
//! token is the exchanging client's own, the same each time, as a service presents it.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::load::{drive_http, http_request};
use crate::procs::{Lanyard, cpu_seconds};
use crate::report::{Row, row};
use crate::setup::{bootstrap_admin, client_token, graphql, tenant_client_token};
use crate::tokens::token_endpoint;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const USER_TENANTS: [&str; 5] = ["acme", "globex", "initech", "umbrella", "hooli"];

fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// A confidential client of the demo tenant registered by `admin`: its id and secret.
async fn register(
    http: &reqwest::Client,
    l: &Lanyard,
    admin: &str,
    input: &str,
) -> (String, String) {
    let created = graphql(
        http,
        l,
        admin,
        &format!("mutation {{ createClient(input: {input}) {{ clientId clientSecret }} }}"),
        json!({}),
    )
    .await;
    let c = &created["data"]["createClient"];
    (
        c["clientId"].as_str().expect("a client").to_owned(),
        c["clientSecret"].as_str().unwrap().to_owned(),
    )
}

/// `n` fresh subject tokens: the person's token exchanged by `backend`.
async fn subjects(
    http: &reqwest::Client,
    l: &Lanyard,
    backend: &(String, String),
    person: &str,
    actor: &str,
    n: usize,
) -> Vec<String> {
    let body = form(&[
        ("grant_type", EXCHANGE),
        ("subject_token", person),
        ("subject_token_type", ACCESS),
        ("actor_token", actor),
        ("actor_token_type", ACCESS),
    ]);
    futures::stream::iter(0..n)
        .map(|_| {
            let body = body.clone();
            async move {
                let res: Value = http
                    .post(l.url("/t/demo/oauth2/token"))
                    .basic_auth(&backend.0, Some(&backend.1))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                res["access_token"]
                    .as_str()
                    .expect("an exchanged token")
                    .to_owned()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Exchanges for `run`, a subject token from `supply` each: per second, and CPU µs per token.
async fn exchanges(
    l: &Lanyard,
    run: Duration,
    backend: &(String, String),
    actor: &str,
    supply: Vec<String>,
) -> (f64, f64, u64) {
    let supply = Arc::new(Mutex::new(VecDeque::from(supply)));
    let basic = STANDARD.encode(format!("{}:{}", backend.0, backend.1));
    let (l_http, actor) = (l.http, actor.to_owned());
    let cpu0 = cpu_seconds(l.pid());
    let (per_s, n) = drive_http(
        l.http,
        32,
        run,
        move |_| {
            let subject = supply.lock().unwrap().pop_front().unwrap_or_default();
            let body = form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS),
                ("actor_token", &actor),
                ("actor_token_type", ACCESS),
            ]);
            format!(
                "POST /t/demo/oauth2/token HTTP/1.1\r\nhost: {l_http}\r\nauthorization: Basic {basic}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
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

pub async fn measure(
    http: &reqwest::Client,
    l: &Lanyard,
    bin: &Path,
    person: &str,
    secs: u64,
) -> Vec<Row> {
    let (admin_id, admin_secret) = bootstrap_admin(bin, &l.dir, "demo");
    let admin = client_token(http, l, &admin_id, &admin_secret).await;
    let backend = register(
        http,
        l,
        &admin,
        "{name: \"Backend\", grantTypes: [TOKEN_EXCHANGE, CLIENT_CREDENTIALS]}",
    )
    .await;
    let actor = client_token(http, l, &backend.0, &backend.1).await;

    // An application of the demo tenant, granted access by five others.
    let application = register(
        http,
        l,
        &admin,
        "{name: \"Fleet analytics\", appName: \"fleet-analytics\", appVersion: \"1.0.0\"}",
    )
    .await;
    for tenant in USER_TENANTS {
        let (id, secret) = bootstrap_admin(bin, &l.dir, tenant);
        let token = tenant_client_token(http, l, tenant, &id, &secret).await;
        let granted = graphql(
            http,
            l,
            &token,
            "mutation { grantApplicationAccess(hostTenant: \"demo\", appName: \"fleet-analytics\", appVersion: \"1.0.0\", scopes: [\"lanyard:systems:read\"]) { hostTenant } }",
            json!({}),
        )
        .await;
        assert!(granted["errors"].is_null(), "{granted}");
    }
    let tms = http_request(
        l,
        "/api/technicaltokenmanager/v3/oauth/token",
        &[
            (
                "x-space-auth-key",
                &format!(
                    "Basic {}",
                    STANDARD.encode(format!("{}:{}", application.0, application.1))
                ),
            ),
            ("content-type", "application/json"),
        ],
        &json!({ "appName": "fleet-analytics", "appVersion": "1.0.0", "hostTenant": "demo", "userTenants": USER_TENANTS }).to_string(),
    );

    // A second at a time, each kind in turn, so that all meet the same neighbours.
    let slice = Duration::from_secs(1);
    let (mut cc, mut cc_cpu, mut ex, mut ex_cpu, mut tm, mut tm_cpu) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for _ in 0..secs {
        let (per_s, cpu) = token_endpoint(l, slice).await;
        cc += per_s;
        cc_cpu += per_s * cpu;
        // More than client_credentials reached: an exchange costs no less.
        let supply_size = (per_s * 1.5) as usize + 100;
        let supply = subjects(http, l, &backend, person, &actor, supply_size).await;
        let (per_s, cpu, n) = exchanges(l, slice, &backend, &actor, supply).await;
        if n >= supply_size as u64 {
            eprintln!("  (the subject tokens ran out: the exchange rate is a floor)");
        }
        ex += per_s;
        ex_cpu += per_s * cpu;
        let request = tms.clone();
        let cpu0 = cpu_seconds(l.pid());
        let (per_s, n) = drive_http(
            l.http,
            32,
            slice,
            move |_| request.clone(),
            |body| {
                // Five tokens, not five refusals.
                body.windows(14)
                    .filter(|w| w == b"\"access_token\"")
                    .count()
                    == 5
            },
        )
        .await;
        tm += per_s;
        tm_cpu += (cpu_seconds(l.pid()) - cpu0) / n.max(1) as f64 * 1e6 * per_s;
    }
    let (cc_each, ex_each, tm_each) = (
        cc_cpu / cc.max(1.0),
        ex_cpu / ex.max(1.0),
        tm_cpu / tm.max(1.0),
    );
    let (ex_rate, tm_rate) = (ex / secs as f64, tm / secs as f64);
    vec![
        row(
            "CPU µs per token exchange (a new subject token, an actor token)",
            format!("{ex_each:.0} µs ({ex_rate:.0}/s)"),
            format!("client_credentials {cc_each:.0} µs"),
            Some(ex_each / cc_each.max(1.0)),
            "≤ 1.3×",
            Some(ex_each <= 1.3 * cc_each),
        ),
        row(
            "CPU µs per token-management request for five tenants",
            format!("{tm_each:.0} µs ({tm_rate:.0}/s)"),
            format!("client_credentials {cc_each:.0} µs"),
            Some(tm_each / cc_each.max(1.0)),
            "≤ 5.5×",
            Some(tm_each <= 5.5 * cc_each),
        ),
    ]
}
