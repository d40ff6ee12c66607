//! The GraphQL API: minting, listing and revoking local API tokens, management behind
//! `lanyard:` scopes, error codes and limits.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::signin::{app_client, person, sign_in};

#[test]
fn the_checked_in_schema_is_the_one_the_code_serves() {
    let sdl = lanyard::graphql::sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/graphql/schema.graphql");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &sdl).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == sdl,
        "graphql/schema.graphql differs from the schema; regenerate it with UPDATE_SCHEMA=1 cargo test --test api schema"
    );
}

/// Posts a GraphQL request with `token` as bearer; returns the response body.
pub async fn gql(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut req = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

pub fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// A tenant with a system, a role on it, and a person holding that role, signed in.
pub struct World {
    pub t: TestTenant,
    pub system: SystemId,
    pub role: RoleId,
    pub user: UserId,
    pub user_token: String,
    pub admin_token: String,
}

pub async fn world(app: &TestApp) -> World {
    let t = app.tenant("acme").await;
    let system = app
        .authority()
        .create_system(&t.tenant, "Gateway")
        .await
        .unwrap();
    let role = app
        .authority()
        .create_role(&t.tenant, "Domain Owner")
        .await
        .unwrap();
    let ada = person(app, &t, "ada@example.com", "").await;
    app.authority()
        .assign_role(&t.tenant, &ada.id, &system, &role.id)
        .await
        .unwrap();
    let client = app_client(app, &t).await;
    let tokens = sign_in(app, "acme", &client, "ada@example.com").await;
    let admin_token = app.admin_token(&t).await;
    World {
        t,
        system,
        role: role.id,
        user: ada.id,
        user_token: tokens["access_token"].as_str().unwrap().to_owned(),
        admin_token,
    }
}

const MINT: &str = "mutation($s: UUID!, $d: String!, $dev: String) {
    createLocalApiToken(systemUuid: $s, duration: $d, requestedDevice: $dev) { jwt uuid } }";

pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

on_both_databases! {
    async fn a_person_mints_a_local_token_for_a_system_they_hold_a_role_on(app) {
        let w = world(&app).await;
        let body = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D", "dev": "Kitchen panel" })).await;
        assert!(body["errors"].is_null(), "{body}");
        let jwt = body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap();
        let id = body["data"]["createLocalApiToken"]["uuid"].as_str().unwrap();
        let raw = jwt.strip_prefix("CLOUD-").expect("the local token prefix");
        assert_eq!(header_of(raw)["typ"], "JWT");
        let claims = claims_of(raw);
        assert_eq!(claims["jti"], id);
        assert_eq!(claims["sub"], w.user.as_str());
        assert_eq!(claims["aud"], w.system.as_str());
        assert_eq!(claims["iss"], format!("{PUBLIC_URL}/t/acme"));
        assert_eq!(claims["typename"], "USER");
        assert_eq!(claims["name"], "Ada Lovelace");
        assert_eq!(claims["device"], "Kitchen panel");
        assert_eq!(claims["roles"], json!([{ "uuid": w.role, "name": "Domain Owner" }]));
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 86_400);
        // It verifies with the JWKS alone, audience = the system.
        verify_with_jwks(raw, &app.jwks("acme").await, &format!("{PUBLIC_URL}/t/acme"), &w.system);

        let body = gql(&app, Some(&w.user_token),
            "mutation($s: UUID!) { createPermanentLocalApiToken(systemUuid: $s, name: \"Installer\") { jwt uuid } }",
            json!({ "s": w.system })).await;
        let permanent = body["data"]["createPermanentLocalApiToken"]["jwt"].as_str().unwrap();
        assert!(claims_of(permanent.strip_prefix("CLOUD-").unwrap()).get("exp").is_none());

        let list = gql(&app, Some(&w.user_token),
            "query($s: UUID!) { localApiTokens(systemUuid: $s) { uuid status systemUuid expiresAt notBefore name requestedDevice } }",
            json!({ "s": w.system })).await;
        let tokens = list["data"]["localApiTokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 2);
        let (minted, installer) = if tokens[0]["uuid"] == id { (&tokens[0], &tokens[1]) } else { (&tokens[1], &tokens[0]) };
        assert_eq!(minted["uuid"], id);
        assert_eq!(minted["status"], "ACTIVATED");
        assert_eq!(minted["requestedDevice"], "Kitchen panel");
        assert!(installer["expiresAt"].is_null());
        assert_eq!(installer["name"], "Installer");
    }

    async fn a_role_given_after_a_mint_is_in_the_next_token(app) {
        let w = world(&app).await;
        let roles_minted = || async {
            let body = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
            let jwt = body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap();
            claims_of(jwt.strip_prefix("CLOUD-").unwrap())["roles"].clone()
        };
        assert_eq!(roles_minted().await, json!([{ "uuid": w.role, "name": "Domain Owner" }]));
        let body = gql(&app, Some(&w.admin_token), "mutation { createRole(name: \"Auditor\") { uuid } }", json!({})).await;
        let auditor = body["data"]["createRole"]["uuid"].as_str().unwrap().to_owned();
        let body = gql(&app, Some(&w.admin_token),
            "mutation($u: UUID!, $s: UUID!, $r: UUID!) { assignRole(userUuid: $u, systemUuid: $s, roleUuid: $r) }",
            json!({ "u": w.user, "s": w.system, "r": auditor })).await;
        assert!(body["errors"].is_null(), "{body}");
        assert_eq!(roles_minted().await, json!([
            { "uuid": auditor, "name": "Auditor" },
            { "uuid": w.role, "name": "Domain Owner" },
        ]));
    }

    async fn a_person_with_roles_on_several_systems_gets_each_systems_own_roles(app) {
        let w = world(&app).await;
        let auth = app.authority();
        let auditor = auth.create_role(&w.t.tenant, "Auditor").await.unwrap();
        let installer = auth.create_role(&w.t.tenant, "Installer").await.unwrap();
        let second = auth.create_system(&w.t.tenant, "Second").await.unwrap();
        auth.assign_role(&w.t.tenant, &w.user, &second, &auditor.id).await.unwrap();
        auth.assign_role(&w.t.tenant, &w.user, &second, &installer.id).await.unwrap();
        let roles_on = |system: SystemId| {
            let (app, token) = (&app, &w.user_token);
            async move {
                let body = gql(app, Some(token), MINT, json!({ "s": system, "d": "1D" })).await;
                match body["data"]["createLocalApiToken"]["jwt"].as_str() {
                    Some(jwt) => claims_of(jwt.strip_prefix("CLOUD-").unwrap())["roles"].clone(),
                    None => json!(code(&body)),
                }
            }
        };
        // The first mint reads every role the person holds; each system keeps its own.
        assert_eq!(roles_on(w.system.clone()).await, json!([{ "uuid": w.role, "name": "Domain Owner" }]));
        assert_eq!(roles_on(second.clone()).await, json!([
            { "uuid": auditor.id, "name": "Auditor" },
            { "uuid": installer.id, "name": "Installer" },
        ]));
        // A role given in the database without a word to this process (by another node, or
        // an operator) on a system that was not among them counts at once: what was read is
        // never taken to mean a role is missing.
        let third = auth.create_system(&w.t.tenant, "Third").await.unwrap();
        assert_eq!(roles_on(third.clone()).await, json!("FORBIDDEN"));
        let event = lanyard::store::audit::AuditRow {
            time: 0,
            tenant_id: w.t.tenant.id.to_string(),
            actor: "operator".into(),
            action: "role.assigned".into(),
            target: "elsewhere".into(),
            outcome: "success".into(),
        };
        lanyard::store::users::assign_role(auth.db(), &event, &w.user, &third, &auditor.id, 0).await.unwrap();
        assert_eq!(roles_on(third).await, json!([{ "uuid": auditor.id, "name": "Auditor" }]));
    }

    async fn minting_needs_a_person_with_a_role_and_a_sane_duration(app) {
        let w = world(&app).await;
        let elsewhere = app.authority().create_system(&w.t.tenant, "Not mine").await.unwrap();
        let missing = uuid::Uuid::new_v4().to_string();
        let no_role = gql(&app, Some(&w.user_token), MINT, json!({ "s": elsewhere, "d": "1D" })).await;
        let no_system = gql(&app, Some(&w.user_token), MINT, json!({ "s": missing, "d": "1D" })).await;
        assert_eq!(code(&no_role), "FORBIDDEN");
        assert_eq!(no_role["errors"][0]["message"], no_system["errors"][0]["message"], "a missing system is told apart");
        assert_eq!(code(&no_system), "FORBIDDEN");
        // A client's own token is no person.
        let body = gql(&app, Some(&w.admin_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
        assert_eq!(code(&body), "FORBIDDEN");
        for bad in ["30S", "0M", "31D", "1Y", "P1M", "99999999999999999999D", "", "soon", "-1D"] {
            let body = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": bad })).await;
            assert_eq!(code(&body), "BAD_USER_INPUT", "duration {bad:?}: {body}");
        }
        for good in ["1M", "15M", "12H", "1W", "PT12H", "30D"] {
            let body = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": good })).await;
            assert!(body["errors"].is_null(), "duration {good:?}: {body}");
        }
        let long = "x".repeat(201);
        let body = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D", "dev": long })).await;
        assert_eq!(code(&body), "BAD_USER_INPUT");
        let body = gql(&app, Some(&w.user_token), MINT, json!({ "s": "not-a-uuid", "d": "1D" })).await;
        assert_eq!(code(&body), "BAD_USER_INPUT");
    }

    async fn revoking_is_for_the_subject_or_a_local_tokens_writer(app) {
        let w = world(&app).await;
        let body = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
        let id = body["data"]["createLocalApiToken"]["uuid"].as_str().unwrap().to_owned();
        const REVOKE: &str = "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { uuid status } }";
        // Another person of the tenant may not.
        let bob = person(&app, &w.t, "bob@example.com", "").await;
        app.authority().assign_role(&w.t.tenant, &bob.id, &w.system, &w.role).await.unwrap();
        let client = app_client(&app, &w.t).await;
        let bob_token = sign_in(&app, "acme", &client, "bob@example.com").await["access_token"].as_str().unwrap().to_owned();
        let body = gql(&app, Some(&bob_token), REVOKE, json!({ "u": id })).await;
        assert_eq!(code(&body), "FORBIDDEN");
        let body = gql(&app, Some(&w.user_token), REVOKE, json!({ "u": uuid::Uuid::new_v4() })).await;
        assert_eq!(code(&body), "NOT_FOUND");
        let body = gql(&app, Some(&w.user_token), REVOKE, json!({ "u": id })).await;
        assert_eq!(body["data"]["revokeLocalApiToken"]["status"], "REVOKED", "{body}");
        // The admin (every lanyard: scope) may revoke anyone's.
        let body = gql(&app, Some(&bob_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
        let bobs = body["data"]["createLocalApiToken"]["uuid"].as_str().unwrap().to_owned();
        let body = gql(&app, Some(&w.admin_token), REVOKE, json!({ "u": bobs })).await;
        assert_eq!(body["data"]["revokeLocalApiToken"]["status"], "REVOKED", "{body}");
        // Listing: people with a role, or lanyard:local-tokens:read.
        let list = "query($s: UUID!) { localApiTokens(systemUuid: $s) { uuid status } }";
        let body = gql(&app, Some(&w.admin_token), list, json!({ "s": w.system })).await;
        assert_eq!(body["data"]["localApiTokens"].as_array().unwrap().len(), 2);
        let carol = person(&app, &w.t, "carol@example.com", "").await;
        let _ = carol;
        let carol_token = sign_in(&app, "acme", &client, "carol@example.com").await["access_token"].as_str().unwrap().to_owned();
        let body = gql(&app, Some(&carol_token), list, json!({ "s": w.system })).await;
        assert_eq!(code(&body), "FORBIDDEN");
    }

    async fn deleting_a_person_revokes_their_local_tokens(app) {
        let w = world(&app).await;
        gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
        let body = gql(&app, Some(&w.admin_token), "mutation($u: UUID!) { deleteUser(uuid: $u) }", json!({ "u": w.user })).await;
        assert_eq!(body["data"]["deleteUser"], true, "{body}");
        let list = "query($s: UUID!) { localApiTokens(systemUuid: $s) { status } }";
        let body = gql(&app, Some(&w.admin_token), list, json!({ "s": w.system })).await;
        assert_eq!(body["data"]["localApiTokens"][0]["status"], "REVOKED");
        // Their access token stopped working too.
        let body = gql(&app, Some(&w.user_token), "{ me { sub } }", json!({})).await;
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }

    async fn management_needs_its_scope_and_grants_only_what_the_caller_holds(app) {
        let w = world(&app).await;
        // The person holds no lanyard: scope.
        for (op, vars) in [
            ("mutation { createSystem(name: \"S\") { uuid } }", json!({})),
            ("mutation { createRole(name: \"R\") { uuid } }", json!({})),
            ("mutation { createUser(email: \"z@example.com\", name: \"Z\") { uuid } }", json!({})),
            ("mutation { createScope(name: \"x:y\") { name } }", json!({})),
            ("mutation { createClient(input: {name: \"C\"}) { clientId } }", json!({})),
            ("mutation { rotateSigningKey { kid } }", json!({})),
            ("{ systems { uuid } }", json!({})),
            ("{ signingKeys { kid } }", json!({})),
        ] {
            let body = gql(&app, Some(&w.user_token), op, vars).await;
            assert_eq!(code(&body), "FORBIDDEN", "{op}: {body}");
        }
        // The admin may, within what it holds.
        let body = gql(&app, Some(&w.admin_token), "mutation { createSystem(name: \"Lock\") { uuid name } }", json!({})).await;
        assert_eq!(body["data"]["createSystem"]["name"], "Lock", "{body}");
        let body = gql(&app, Some(&w.admin_token),
            "mutation { createClient(input: {name: \"Meter\", scopes: [\"lanyard:keys:read\"]}) { clientId clientSecret clientIdIssuedAt clientSecretExpiresAt } }", json!({})).await;
        assert!(body["data"]["createClient"]["clientSecret"].as_str().is_some_and(|s| s.len() == 43), "{body}");
        // A narrower caller cannot hand out more than it holds.
        let (id, secret) = app.client(&w.t, lanyard::authority::NewClient {
            name: "narrow".into(),
            scopes: lanyard::domain::ScopeSet::parse("lanyard:clients:write").unwrap(),
            ..Default::default()
        }).await;
        let narrow = app.token("acme", &id, &secret).await;
        let body = gql(&app, Some(&narrow), "mutation { createClient(input: {name: \"X\", scopes: [\"lanyard:keys:write\"]}) { clientId } }", json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = gql(&app, Some(&w.admin_token), "mutation { createRole(name: \"Domain Owner\") { uuid } }", json!({})).await;
        assert_eq!(code(&body), "CONFLICT");
        let body = gql(&app, Some(&w.admin_token), "{ signingKeys { kid status } systems { name } me { sub clientId tenant } }", json!({})).await;
        assert_eq!(body["data"]["signingKeys"][0]["status"], "ACTIVE", "{body}");
        assert_eq!(body["data"]["me"]["tenant"], "acme");
    }
}

/// `n` copies of `{ me { sub } }` in one batch.
async fn post_batch(app: &TestApp, token: &str, n: usize) -> reqwest::Response {
    let batch: Vec<Value> = (0..n)
        .map(|_| json!({ "query": "{ me { sub } }" }))
        .collect();
    app.http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .json(&batch)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_requests_get_graphql_errors_with_codes() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    for token in [None, Some("garbage")] {
        let mut req = app
            .http
            .post(app.url("/graphql"))
            .json(&json!({ "query": "{ me { sub } }" }));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert_eq!(code(&res.json().await.unwrap()), "UNAUTHENTICATED");
    }
    for query in [
        "{ me { sub ",
        "{ nope }",
        "{ me { nope } }",
        "mutation { createSystem(name: 5) { uuid } }",
    ] {
        let body = gql(&app, Some(&w.admin_token), query, json!({})).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{query}: {body}");
    }
    let deep = format!(
        "{{ me {{ {} }} }}",
        "user { ".repeat(20) + "uuid" + &" }".repeat(20)
    );
    let body = gql(&app, Some(&w.admin_token), &deep, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let wide = format!(
        "{{ {} }}",
        (0..300)
            .map(|i| format!("a{i}: me {{ sub }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let body = gql(&app, Some(&w.admin_token), &wide, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "complexity: {body}");
    let res = post_batch(&app, &w.admin_token, 11).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(code(&body), "BAD_USER_INPUT");
    let res = post_batch(&app, &w.admin_token, 3).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 3);
    let huge = json!({ "query": format!("{{ me {{ sub }} }} #{}", "x".repeat(70_000)) });
    let res = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&w.admin_token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let res = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&w.admin_token)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert!(res.text().await.unwrap().contains("graphiql"));
}
