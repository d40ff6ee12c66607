//! Who may act on whom, and what one request may cost, tried as an attacker would: fragment
//! bombs, a client admin reaching for the tenant admin's secret, a binding that reads, and a
//! person piling tokens into a system's list.

use std::time::Duration;

use lanyard::authority::NewClient;
use lanyard::domain::ScopeSet;
use serde_json::{Value, json};

use crate::graphql::{World, claims_of, code, gql, world};
use crate::helpers::*;
use crate::mqtt::{Sub4, V4, device};
use crate::signin::{person, sign_in};

/// Long enough for any answer that does not hang; a bomb that is walked takes minutes.
const DEADLINE: Duration = Duration::from_secs(20);

/// `{ ...F0 }` where each of `levels` fragments spreads the next `width` times.
fn bomb(levels: usize, width: usize) -> String {
    let mut q = String::from("query { ...F0 }");
    for i in 0..levels {
        let spreads = format!(" ...F{}", i + 1).repeat(width);
        q.push_str(&format!(" fragment F{i} on Query {{{spreads} }}"));
    }
    q.push_str(&format!(" fragment F{levels} on Query {{ __typename }}"));
    q
}

async fn post_graphql(app: &TestApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = app.http.post(app.url("/graphql")).json(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = tokio::time::timeout(DEADLINE, req.send())
        .await
        .expect("an answer before the deadline")
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// A client of `w`'s tenant holding just `scopes`, and its token.
async fn narrow_client(app: &TestApp, w: &World, scopes: &str) -> (ClientId, String) {
    let (id, secret) = app
        .client(
            &w.t,
            NewClient {
                name: "narrow".into(),
                scopes: ScopeSet::parse(scopes).unwrap(),
                ..Default::default()
            },
        )
        .await;
    let token = app.token("acme", &id, &secret).await;
    (id, token)
}

#[tokio::test]
async fn fragment_bombs_are_refused_at_once_and_the_service_keeps_answering() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let (device_id, device_token) = device(&app, &w.t, None, "").await;
    let bombs = [bomb(30, 2), bomb(10, 8), bomb(22, 2)];
    let mut attacks = Vec::new();
    for query in &bombs {
        for token in [None, Some(w.admin_token.clone())] {
            let (app, body) = (&app, json!({ "query": query }));
            attacks.push(async move {
                (
                    token.is_some(),
                    post_graphql(app, token.as_deref(), &body).await,
                )
            });
        }
    }
    let meanwhile = async {
        let health = tokio::time::timeout(DEADLINE, app.http.get(app.url("/healthz")).send())
            .await
            .expect("/healthz answers while bombs are in flight")
            .unwrap();
        assert_eq!(health.status(), 200);
        tokio::time::timeout(DEADLINE, V4::connect(&app, &device_id, &device_token))
            .await
            .expect("an MQTT CONNECT is answered while bombs are in flight")
            .expect("and accepted");
    };
    let (answers, ()) = tokio::join!(futures::future::join_all(attacks), meanwhile);
    for (authenticated, (status, body)) in answers {
        if authenticated {
            assert_eq!(status, 400, "{body}");
            assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        } else {
            assert_eq!(status, 401, "{body}");
            assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
        }
    }
    // The anonymous answer does not depend on what the body holds.
    let res = app
        .http
        .post(app.url("/graphql"))
        .body("not even json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    // A legitimate query with fragments still works, each use counted.
    let (status, body) = post_graphql(
        &app,
        Some(&w.admin_token),
        &json!({ "query": "{ ...A ...A } fragment A on Query { me { sub } }" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["sub"], w.t.admin_id.as_str());
    // A document nested past what the parser may recurse is refused before parsing.
    let deep = format!("{{{}}}", "me { user { ".repeat(3000) + &"}".repeat(6000));
    let (status, body) = post_graphql(&app, Some(&w.admin_token), &json!({ "query": deep })).await;
    assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
}

#[tokio::test]
async fn a_document_full_of_mistakes_gets_a_short_answer() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let variables: Vec<String> = (0..2000).map(|i| format!("$v{i}: Int")).collect();
    let query = format!("query({}) {{ me {{ sub }} }}", variables.join(", "));
    let (status, body) = post_graphql(&app, Some(&w.admin_token), &json!({ "query": query })).await;
    assert_eq!(status, 200);
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        !errors.is_empty() && errors.len() <= 20,
        "{} errors",
        errors.len()
    );
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn the_graphql_page_works_without_reaching_another_host() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = app
        .http
        .get(app.url("/graphql"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("graphiql"));
    assert!(
        !page.contains("https://"),
        "the page loads nothing from elsewhere: {page}"
    );
    for asset in [
        "graphiql.min.js",
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
        "start.js",
    ] {
        assert!(
            page.contains(&format!("/graphql/assets/{asset}")),
            "{asset}"
        );
        let res = app
            .http
            .get(app.url(&format!("/graphql/assets/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        assert!(!res.bytes().await.unwrap().is_empty());
    }
    let res = app
        .http
        .get(app.url("/graphql/assets/..%2Fmod.rs"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

on_both_databases! {
    async fn a_request_minting_more_than_twenty_tokens_is_refused_whole(app) {
        let w = world(&app).await;
        let mints = |n: usize| {
            let fields: Vec<String> = (0..n)
                .map(|i| format!("m{i}: createPermanentLocalApiToken(systemUuid: $s, name: \"t{i}\") {{ uuid }}"))
                .collect();
            format!("mutation($s: UUID!) {{ {} }}", fields.join(" "))
        };
        let list = || gql(&app, Some(&w.admin_token), "query($s: UUID!) { localApiTokens(systemUuid: $s) { uuid } }", json!({ "s": w.system }));
        // 21 in one operation.
        let (status, body) = post_graphql(&app, Some(&w.user_token), &json!({ "query": mints(21), "variables": { "s": w.system } })).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
        // 3 operations of 7 in one batch: the batch counts as one request.
        let op = json!({ "query": mints(7), "variables": { "s": w.system } });
        let (status, body) = post_graphql(&app, Some(&w.user_token), &json!([op, op, op])).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
        // Fragments on Mutation count per use.
        let spread = format!(
            "mutation($s: UUID!) {{ ...M ...M ...M }} fragment M on Mutation {{ {} }}",
            (0..7).map(|i| format!("m{i}: createPermanentLocalApiToken(systemUuid: $s, name: \"t\") {{ uuid }}")).collect::<Vec<_>>().join(" ")
        );
        let (status, body) = post_graphql(&app, Some(&w.user_token), &json!({ "query": spread, "variables": { "s": w.system } })).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
        assert_eq!(list().await["data"]["localApiTokens"], json!([]), "nothing was minted");
        // Twenty is allowed.
        let (status, body) = post_graphql(&app, Some(&w.user_token), &json!({ "query": mints(20), "variables": { "s": w.system } })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(list().await["data"]["localApiTokens"].as_array().unwrap().len(), 20);
    }

    async fn a_request_reading_more_than_ten_lists_is_refused_whole(app) {
        let w = world(&app).await;
        let reads = |n: usize| {
            let fields: Vec<String> = (0..n).map(|i| format!("l{i}: localApiTokens(systemUuid: $s) {{ uuid }}")).collect();
            json!({ "query": format!("query($s: UUID!) {{ {} }}", fields.join(" ")), "variables": { "s": w.system } })
        };
        let (status, body) = post_graphql(&app, Some(&w.user_token), &json!([reads(6), reads(5)])).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
        let (status, body) = post_graphql(&app, Some(&w.user_token), &json!([reads(5), reads(5)])).await;
        assert_eq!(status, 200, "{body}");
        // Audit pages count as lists too.
        let audit: Vec<String> = (0..11).map(|i| format!("a{i}: auditEvents(limit: 500) {{ seq }}")).collect();
        let (status, body) = post_graphql(&app, Some(&w.admin_token), &json!({ "query": format!("{{ {} }}", audit.join(" ")) })).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
        // A document that does not parse is refused once, with the parser's message.
        let (status, body) = post_graphql(&app, Some(&w.user_token), &json!({ "query": "{ me { sub " })).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("does not parse"), "{body}");
    }

    async fn a_client_admin_cannot_take_over_or_delete_a_client_holding_more(app) {
        let w = world(&app).await;
        let (narrow_id, narrow) = narrow_client(&app, &w, "lanyard:clients:write").await;
        for op in [
            "mutation($c: String!) { rotateClientSecret(clientId: $c) { clientSecret } }",
            "mutation($c: String!) { deleteClient(clientId: $c) }",
        ] {
            let body = gql(&app, Some(&narrow), op, json!({ "c": w.t.admin_id })).await;
            assert_eq!(code(&body), "FORBIDDEN", "{op}: {body}");
            assert!(body["data"].is_null() || body["data"]["rotateClientSecret"].is_null(), "{body}");
        }
        // The admin's secret still works: nothing was rotated or deleted.
        app.admin_token(&w.t).await;
        // A client holding nothing the caller lacks is the caller's to manage, itself included.
        let (plain_id, _) = narrow_client(&app, &w, "").await;
        let body = gql(&app, Some(&narrow), "mutation($c: String!) { rotateClientSecret(clientId: $c) { clientSecret } }", json!({ "c": plain_id })).await;
        assert!(body["data"]["rotateClientSecret"]["clientSecret"].is_string(), "{body}");
        let body = gql(&app, Some(&narrow), "mutation($c: String!) { deleteClient(clientId: $c) }", json!({ "c": plain_id })).await;
        assert_eq!(body["data"]["deleteClient"], true, "{body}");
        let body = gql(&app, Some(&narrow), "mutation($c: String!) { rotateClientSecret(clientId: $c) { clientSecret } }", json!({ "c": narrow_id })).await;
        assert!(body["data"]["rotateClientSecret"]["clientSecret"].is_string(), "{body}");
        // An unknown client is NOT_FOUND, whoever asks.
        let body = gql(&app, Some(&narrow), "mutation { deleteClient(clientId: \"nobody-here\") }", json!({})).await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
        // Text that cannot be a client id is the caller's mistake, and says so.
        let body = gql(&app, Some(&narrow), "mutation { deleteClient(clientId: \"a/../b\") }", json!({})).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("is not a client id"), "{body}");
    }

    async fn a_client_admin_cannot_revoke_the_tokens_of_a_client_holding_more(app) {
        let w = world(&app).await;
        let (narrow_id, _) = narrow_client(&app, &w, "lanyard:clients:write").await;
        let narrow_secret = app.authority().rotate_client_secret(&w.t.tenant, &narrow_id).await.unwrap();
        let narrow_secret = narrow_secret.client_secret.unwrap().expose().to_owned();
        let revoke = |token: String| {
            let (app, id, secret) = (&app, narrow_id.clone(), narrow_secret.clone());
            async move {
                app.post_form("/t/acme/oauth2/revoke", Some((&id, &secret)), &format!("token={}", urlencode(&token))).await
            }
        };
        let res = revoke(w.admin_token.clone()).await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized_client", "{body}");
        assert!(app.is_active(&w.t, &w.admin_token).await, "the admin's token still works");
        // A token carrying nothing it lacks is its to revoke.
        let (_, plain_token) = narrow_client(&app, &w, "").await;
        assert_eq!(revoke(plain_token.clone()).await.status(), 200);
        assert!(!app.is_active(&w.t, &plain_token).await);
    }

    async fn a_user_admin_cannot_delete_a_person_holding_more(app) {
        let w = world(&app).await;
        let (_, users_admin) = narrow_client(&app, &w, "lanyard:users:write").await;
        let keeper = person(&app, &w.t, "keeper@example.com", "lanyard:keys:write").await;
        let body = gql(&app, Some(&users_admin), "mutation($u: UUID!) { deleteUser(uuid: $u) }", json!({ "u": keeper.id })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        assert!(app.authority().user(&w.t.tenant, &keeper.id).await.unwrap().is_some());
        // A person holding no admin scope is theirs to delete.
        let plain = person(&app, &w.t, "plain@example.com", "").await;
        let body = gql(&app, Some(&users_admin), "mutation($u: UUID!) { deleteUser(uuid: $u) }", json!({ "u": plain.id })).await;
        assert_eq!(body["data"]["deleteUser"], true, "{body}");
    }

    async fn the_tenants_own_scopes_can_be_handed_out_by_whoever_writes_clients_and_users(app) {
        let w = world(&app).await;
        let body = gql(&app, Some(&w.admin_token), "mutation { createScope(name: \"sensor:read\") { name } }", json!({})).await;
        assert_eq!(body["data"]["createScope"]["name"], "sensor:read", "{body}");
        let (_, clients_admin) = narrow_client(&app, &w, "lanyard:clients:write lanyard:users:write").await;
        let body = gql(&app, Some(&clients_admin), "mutation { createClient(input: {name: \"Sensor\", scopes: [\"sensor:read\"]}) { clientId clientSecret } }", json!({})).await;
        let id = body["data"]["createClient"]["clientId"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
        let secret = body["data"]["createClient"]["clientSecret"].as_str().unwrap().to_owned();
        let token = app.token("acme", &id, &secret).await;
        assert_eq!(claims_of(&token)["scope"], "sensor:read");
        let body = gql(&app, Some(&clients_admin), "mutation { createUser(email: \"s@example.com\", name: \"S\", scopes: [\"sensor:read\"]) { uuid } }", json!({})).await;
        assert!(body["data"]["createUser"]["uuid"].is_string(), "{body}");
        // Admin scopes still only by whoever holds them.
        let body = gql(&app, Some(&clients_admin), "mutation { createClient(input: {name: \"X\", scopes: [\"sensor:read\", \"lanyard:keys:write\"]}) { clientId } }", json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }

    async fn binding_a_client_to_a_system_needs_the_right_to_read_its_tokens(app) {
        let w = world(&app).await;
        let (_, clients_admin) = narrow_client(&app, &w, "lanyard:clients:write").await;
        let bind = "mutation($s: UUID!) { createClient(input: {name: \"Spy\", systemUuid: $s}) { clientId clientSecret } }";
        let body = gql(&app, Some(&clients_admin), bind, json!({ "s": w.system })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let (_, reader) = narrow_client(&app, &w, "lanyard:clients:write lanyard:local-tokens:read").await;
        let body = gql(&app, Some(&reader), bind, json!({ "s": w.system })).await;
        assert!(body["data"]["createClient"]["clientId"].is_string(), "{body}");
        // Taking over a bound device is binding too: its new secret would read the list.
        let (device_id, _) = device(&app, &w.t, Some(&w.system), "").await;
        for op in [
            "mutation($c: String!) { rotateClientSecret(clientId: $c) { clientSecret } }",
            "mutation($c: String!) { deleteClient(clientId: $c) }",
        ] {
            let body = gql(&app, Some(&clients_admin), op, json!({ "c": device_id })).await;
            assert_eq!(code(&body), "FORBIDDEN", "{op}: {body}");
        }
        let body = gql(&app, Some(&reader), "mutation($c: String!) { rotateClientSecret(clientId: $c) { clientSecret } }", json!({ "c": device_id })).await;
        assert!(body["data"]["rotateClientSecret"]["clientSecret"].is_string(), "{body}");
    }

    async fn a_person_signing_in_through_a_bound_app_is_not_the_systems_device(app) {
        let w = world(&app).await;
        let (app_id, _) = app.client(&w.t, NewClient {
            name: "Bound app".into(),
            public: true,
            system_id: Some(w.system.clone()),
            ..NewClient::default()
        }).await;
        let tokens = sign_in(&app, "acme", &app_id, "ada@example.com").await;
        let token = tokens["access_token"].as_str().unwrap();
        assert_eq!(claims_of(token).get("system"), None, "a person's token carries no system");
        let mut v4 = V4::connect(&app, "ada-phone", token).await.unwrap();
        let topic = format!("drivr/v1/acme/authorization/localApiTokens/{}", w.system);
        assert_eq!(v4.subscribe(&topic).await, Sub4::Failure);
        // The app's own device token (confidential, bound) still carries it.
        let (_, device_token) = device(&app, &w.t, Some(&w.system), "").await;
        assert_eq!(claims_of(&device_token)["system"], w.system.as_str());
    }
}

async fn capped(cap: u32) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.tokens.max_local_tokens_per_system = cap
    })
    .await
}

#[tokio::test]
async fn a_person_holds_at_most_the_cap_of_live_tokens_on_a_system() {
    let app = capped(3).await;
    let w = world(&app).await;
    let mint = |d: &'static str| {
        gql(
            &app,
            Some(&w.user_token),
            "mutation($s: UUID!, $d: String!) { createLocalApiToken(systemUuid: $s, duration: $d) { uuid } }",
            json!({ "s": w.system, "d": d }),
        )
    };
    let permanent = gql(&app, Some(&w.user_token), "mutation($s: UUID!) { createPermanentLocalApiToken(systemUuid: $s, name: \"door\") { uuid } }", json!({ "s": w.system })).await;
    let permanent = permanent["data"]["createPermanentLocalApiToken"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(mint("1M").await["data"]["createLocalApiToken"]["uuid"].is_string());
    assert!(mint("1D").await["data"]["createLocalApiToken"]["uuid"].is_string());
    let body = mint("1D").await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    // A revoked token no longer counts.
    gql(
        &app,
        Some(&w.user_token),
        "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }",
        json!({ "u": permanent }),
    )
    .await;
    assert!(mint("1D").await["data"]["createLocalApiToken"]["uuid"].is_string());
    assert_eq!(code(&mint("1D").await), "CONFLICT");
    // Nor does an expired one.
    app.clock.advance(61);
    assert!(mint("1D").await["data"]["createLocalApiToken"]["uuid"].is_string());
    assert_eq!(code(&mint("1D").await), "CONFLICT");
    // After a restart, the count is read from the database.
    let app = app.restart().await;
    let body = gql(
        &app,
        Some(&w.user_token),
        "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
        json!({ "s": w.system }),
    )
    .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    // The cap is per system: another system is not full.
    let other = app
        .authority()
        .create_system(&w.t.tenant, "Lock")
        .await
        .unwrap();
    app.authority()
        .assign_role(&w.t.tenant, &w.user, &other, &w.role)
        .await
        .unwrap();
    let body = gql(
        &app,
        Some(&w.user_token),
        "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
        json!({ "s": other }),
    )
    .await;
    assert!(
        body["data"]["createLocalApiToken"]["uuid"].is_string(),
        "{body}"
    );
}

on_both_databases! {
    async fn a_revoked_permanent_token_leaves_the_list_after_the_revoked_listing(app) {
        let w = world(&app).await;
        // What a device of the system connecting now receives.
        let current_list = || async {
            let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
            let mut gw = V4::connect(&app, &id, &token).await.unwrap();
            gw.subscribe(&format!("drivr/v1/acme/authorization/localApiTokens/{}", w.system)).await;
            let msg = gw.message(Duration::from_secs(3)).await.expect("the current list");
            serde_json::from_slice::<Value>(&msg.payload).unwrap()
        };
        let body = gql(&app, Some(&w.user_token), "mutation($s: UUID!) { createPermanentLocalApiToken(systemUuid: $s, name: \"door\") { uuid } }", json!({ "s": w.system })).await;
        let uuid = body["data"]["createPermanentLocalApiToken"]["uuid"].as_str().unwrap().to_owned();
        gql(&app, Some(&w.user_token), "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }", json!({ "u": uuid })).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let list = current_list().await;
        assert_eq!((list[0]["uuid"].as_str(), list[0]["status"].as_str()), (Some(uuid.as_str()), Some("REVOKED")), "{list}");
        // Still listed a day before the listing ends...
        app.clock.advance(29 * 86_400);
        app.app().mqtt().expire_lists_once().await.unwrap();
        assert_eq!(current_list().await[0]["uuid"], uuid.as_str());
        // ...and gone once it has.
        app.clock.advance(86_400);
        assert!(app.app().mqtt().expire_lists_once().await.unwrap() >= 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(current_list().await, json!([]));
    }
}
