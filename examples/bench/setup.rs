//! What the figures need from lanyard before they measure: tokens (a device's, an admin's, the
//! demo person's, signed in with a code from the mail outbox), GraphQL calls, and the systems
//! the person holds a role on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::procs::Lanyard;

/// The GraphQL mutation that mints a local API token for the system `$s`.
pub const MINT: &str =
    "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }";

/// A `client_credentials` token of the demo tenant for the client `id`.
pub async fn client_token(http: &reqwest::Client, l: &Lanyard, id: &str, secret: &str) -> String {
    tenant_client_token(http, l, "demo", id, secret).await
}

/// A `client_credentials` token of `tenant` for the client `id`.
pub async fn tenant_client_token(
    http: &reqwest::Client,
    l: &Lanyard,
    tenant: &str,
    id: &str,
    secret: &str,
) -> String {
    access_token(
        http.post(l.url(&format!("/t/{tenant}/oauth2/token")))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await
}

/// The access token a token request answers with.
async fn access_token(request: reqwest::RequestBuilder) -> String {
    let res: Value = request.send().await.unwrap().json().await.unwrap();
    res["access_token"].as_str().expect("a token").to_owned()
}

/// The mails in the file outbox so far, oldest first.
fn outbox(l: &Lanyard) -> Vec<std::path::PathBuf> {
    crate::outbox::mails(&l.dir.join("outbox"))
}

/// Mails in the file outbox so far.
pub fn mails(l: &Lanyard) -> usize {
    outbox(l).len()
}

/// The code in the first mail after the `before`th in the file outbox, once it is there.
pub async fn mailed_code(l: &Lanyard, before: usize) -> String {
    for _ in 0..100 {
        let files = outbox(l);
        if files.len() > before {
            let text = std::fs::read_to_string(files.last().unwrap()).unwrap();
            let at = text.find(" is your code").unwrap();
            return text[at - 6..at].to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no mail came");
}

/// Signs the demo person in with a code from the file outbox.
pub async fn person_token(http: &reqwest::Client, l: &Lanyard) -> String {
    let before = mails(l);
    http.post(l.url("/t/demo/auth/send-otp"))
        .json(&json!({ "email": "demo@example.com", "client_id": "demo-app" }))
        .send()
        .await
        .unwrap();
    let code = mailed_code(l, before).await;
    access_token(http.post(l.url("/t/demo/oauth2/token")).form(&[
        ("grant_type", "urn:lanyard:params:oauth:grant-type:otp"),
        ("client_id", "demo-app"),
        ("email", "demo@example.com"),
        ("code", code.as_str()),
    ]))
    .await
}

/// A GraphQL request with `token` as bearer: the answer's JSON, errors included.
pub async fn graphql(
    http: &reqwest::Client,
    l: &Lanyard,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    http.post(l.url("/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// An admin client of `tenant` (made first if there is none), from `lanyard bootstrap`.
pub fn bootstrap_admin(bin: &Path, dir: &Path, tenant: &str) -> (String, String) {
    let out = Command::new(bin)
        .args(["--config"])
        .arg(dir.join("broker.toml"))
        .args(["bootstrap", "--tenant", tenant])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("bootstrap prints JSON");
    (
        v["client_id"].as_str().unwrap().into(),
        v["client_secret"].as_str().unwrap().into(),
    )
}

/// The systems the demo person holds a role on, and the admin token that created them.
pub struct Systems {
    pub ids: Vec<String>,
    pub admin: String,
}

/// Creates `count` systems with an admin client from `lanyard bootstrap` (`bin`), and gives the
/// person signed in with `person` a role on each.
pub async fn systems(
    http: &reqwest::Client,
    l: &Lanyard,
    bin: &Path,
    person: &str,
    count: usize,
) -> Systems {
    let (admin_id, admin_secret) = bootstrap_admin(bin, &l.dir, "demo");
    let admin_token = client_token(http, l, &admin_id, &admin_secret).await;
    let person_id =
        graphql(http, l, person, "{ me { sub } }", json!({})).await["data"]["me"]["sub"]
            .as_str()
            .unwrap()
            .to_owned();
    let role = graphql(
        http,
        l,
        &admin_token,
        "mutation { createRole(name: \"Bench\") { uuid } }",
        json!({}),
    )
    .await["data"]["createRole"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (person_id, role, admin) = (&person_id, &role, &admin_token);
    let ids = futures::stream::iter(0..count)
        .map(|i| async move {
            let s = graphql(
                http,
                l,
                admin,
                "mutation($n: String!) { createSystem(name: $n) { uuid } }",
                json!({ "n": format!("S{i}") }),
            )
            .await["data"]["createSystem"]["uuid"]
                .as_str()
                .expect("a system")
                .to_owned();
            graphql(http, l, admin, "mutation($u: UUID!, $s: UUID!, $r: UUID!) { assignRole(userUuid: $u, systemUuid: $s, roleUuid: $r) }", json!({ "u": person_id, "s": s, "r": role })).await;
            s
        })
        .buffer_unordered(8)
        .collect()
        .await;
    Systems {
        ids,
        admin: admin_token,
    }
}
