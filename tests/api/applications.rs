//! Applications for several tenants (SPEC §11): a vendor's application version gets technical
//! tokens for the tenants that granted it access, through the token management endpoints.

use base64::Engine;
use lanyard::authority::NewClient;
use lanyard::authority::clients::Application;
use serde_json::{Value, json};

use crate::graphql::{claims_of, code, gql};
use crate::helpers::*;

const TOKEN: &str = "/api/technicaltokenmanager/v3/oauth/token";
const GRANT: &str = "mutation($h: String!, $n: String!, $v: String!, $s: [String!]!) {
    grantApplicationAccess(hostTenant: $h, appName: $n, appVersion: $v, scopes: $s) { hostTenant appName appVersion scopes } }";

/// The vendor tenant's application client of `version`.
async fn application(app: &TestApp, vendor: &TestTenant, version: &str) -> (String, String) {
    let (id, secret) = app
        .client(
            vendor,
            NewClient {
                name: format!("Fleet analytics {version}"),
                application: Some(Application::parse("fleet-analytics", version).unwrap()),
                ..NewClient::default()
            },
        )
        .await;
    (id.to_string(), secret)
}

fn auth_key((id, secret): &(String, String)) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    format!("Basic {pair}")
}

async fn request_tokens(app: &TestApp, creds: &(String, String), body: Value) -> (u16, Value) {
    let res = app
        .http
        .post(app.url(TOKEN))
        .header("X-SPACE-AUTH-KEY", auth_key(creds))
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn tenants_page(app: &TestApp, creds: &(String, String), query: &str) -> (u16, Value) {
    let res = app
        .http
        .get(app.url(&format!("/api/technicaltokenmanager/v3/tenants{query}")))
        .header("X-SPACE-AUTH-KEY", auth_key(creds))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn ask(version: &str, user_tenant: &str) -> Value {
    json!({ "appName": "fleet-analytics", "appVersion": version, "hostTenant": "vendor", "userTenant": user_tenant })
}

/// A user tenant whose admin grants version 1.0.0 access with `scopes`.
async fn granting(app: &TestApp, slug: &str, scopes: &[&str]) -> (TestTenant, String) {
    let t = app.tenant(slug).await;
    let admin = app.admin_token(&t).await;
    for scope in scopes.iter().filter(|s| !s.starts_with("lanyard:")) {
        app.authority()
            .create_scope(&t.tenant, scope, None)
            .await
            .unwrap();
    }
    let body = gql(
        app,
        Some(&admin),
        GRANT,
        json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": scopes }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    (t, admin)
}

on_both_databases! {
    async fn an_application_gets_a_token_signed_by_each_tenant_that_granted_it_access(app) {
        let vendor = app.tenant("vendor").await;
        let v1 = application(&app, &vendor, "1.0.0").await;
        let (acme, _) = granting(&app, "acme", &["lanyard:systems:read"]).await;
        app.tenant("initech").await;

        let (status, body) = request_tokens(&app, &v1, ask("1.0.0", "acme")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 1800);
        let token = body["access_token"].as_str().unwrap();
        let claims = verify_with_jwks(token, &app.jwks("acme").await, &acme.tenant.issuer, "acme");
        assert_eq!(claims["sub"], v1.0.as_str());
        assert_eq!(claims["client_id"], v1.0.as_str());
        assert_eq!(claims["scope"], "lanyard:systems:read");
        assert_eq!(claims["app"]["name"], "fleet-analytics");
        assert_eq!(claims["app"]["version"], "1.0.0");
        assert_eq!(claims["app"]["host_tenant"], "vendor");
        assert!(claims["app"]["grant"].is_string(), "the grant it was issued under: {claims}");
        // It is good in the user tenant, for what was granted.
        let systems = gql(&app, Some(token), "{ systems { uuid } }", json!({})).await;
        assert!(systems["errors"].is_null(), "{systems}");
        let users = gql(&app, Some(token), "query($u: UUID!) { user(uuid: $u) { uuid } }", json!({ "u": uuid::Uuid::new_v4() })).await;
        assert_eq!(code(&users), "FORBIDDEN", "{users}");
        // Not in the vendor's tenant, nor in another user tenant: it is acme's.
        assert!(!app.is_active(&vendor, token).await, "introspected by the vendor tenant");
        assert!(app.is_active(&acme, token).await);
        let (globex, _) = granting(&app, "globex", &["sensor:read"]).await;
        assert!(!app.is_active(&globex, token).await, "introspected by another user tenant");

        // Several at once: one answer per tenant, a token or an error.
        let (status, body) = request_tokens(&app, &v1, json!({ "appName": "fleet-analytics", "appVersion": "1.0.0", "hostTenant": "vendor", "userTenants": ["acme", "globex", "initech", "nowhere"] })).await;
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 4);
        assert_eq!(results[0]["userTenant"], "acme");
        assert_eq!(claims_of(results[1]["access_token"].as_str().unwrap())["iss"], format!("{PUBLIC_URL}/t/globex"));
        assert_eq!(results[1]["scope"], "sensor:read");
        for refused in &results[2..] {
            assert_eq!(refused["status"], 403, "{refused}");
            assert_eq!(refused["error"], "access_denied");
        }
    }

    async fn credentials_and_access_are_refused_alike(app) {
        let vendor = app.tenant("vendor").await;
        let v1 = application(&app, &vendor, "1.0.0").await;
        let v2 = application(&app, &vendor, "2.0.0").await;
        let (acme, admin) = granting(&app, "acme", &["lanyard:systems:read"]).await;
        // Another version's credentials, a wrong secret, an unknown host, no credentials.
        let (status, body) = request_tokens(&app, &v2, ask("1.0.0", "acme")).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
        let (status, _) = request_tokens(&app, &(v1.0.clone(), "wrong".into()), ask("1.0.0", "acme")).await;
        assert_eq!(status, 401);
        let (status, _) = request_tokens(&app, &v1, json!({ "appName": "fleet-analytics", "appVersion": "1.0.0", "hostTenant": "acme", "userTenant": "acme" })).await;
        assert_eq!(status, 401);
        let res = app.http.post(app.url(TOKEN)).json(&ask("1.0.0", "acme")).send().await.unwrap();
        assert_eq!(res.status(), 401);
        // A tenant that did not grant this version; a grant revoked.
        let (status, body) = request_tokens(&app, &v2, ask("2.0.0", "acme")).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")), "{body}");
        let (_, body) = request_tokens(&app, &v1, ask("1.0.0", "acme")).await;
        let token = body["access_token"].as_str().unwrap().to_owned();
        let revoked = gql(&app, Some(&admin), "mutation { revokeApplicationAccess(hostTenant: \"vendor\", appName: \"fleet-analytics\", appVersion: \"1.0.0\") }", json!({})).await;
        assert!(revoked["errors"].is_null(), "{revoked}");
        let (status, _) = request_tokens(&app, &v1, ask("1.0.0", "acme")).await;
        assert_eq!(status, 403);
        let systems = gql(&app, Some(&token), "{ systems { uuid } }", json!({})).await;
        assert_eq!(code(&systems), "UNAUTHENTICATED", "a technical token of a revoked grant: {systems}");
        // Granted again, in the same second: the tokens of the grant before stay dead.
        let body = gql(&app, Some(&admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": ["lanyard:systems:read"] })).await;
        assert!(body["errors"].is_null(), "{body}");
        assert!(!app.is_active(&acme, &token).await, "a revoked grant's token came back");
        let systems = gql(&app, Some(&token), "{ systems { uuid } }", json!({})).await;
        assert_eq!(code(&systems), "UNAUTHENTICATED", "{systems}");
        let (status, _) = request_tokens(&app, &v1, ask("1.0.0", "acme")).await;
        assert_eq!(status, 200);
        // Six tenants at once, both forms, bad JSON.
        let six: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
        for body in [
            json!({ "appName": "fleet-analytics", "appVersion": "1.0.0", "hostTenant": "vendor", "userTenants": six }),
            json!({ "appName": "fleet-analytics", "appVersion": "1.0.0", "hostTenant": "vendor", "userTenants": ["acme"], "userTenant": "acme" }),
            json!({ "appName": "fleet-analytics", "appVersion": "1.0.0", "hostTenant": "vendor", "userTenant": "acme", "extra": 1 }),
        ] {
            let (status, answer) = request_tokens(&app, &v1, body).await;
            assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_request")), "{answer}");
        }
    }

    async fn the_tenants_that_granted_access_page_by_page(app) {
        let vendor = app.tenant("vendor").await;
        let v1 = application(&app, &vendor, "1.0.0").await;
        let v2 = application(&app, &vendor, "2.0.0").await;
        for slug in ["acme", "globex", "initech"] {
            granting(&app, slug, &["lanyard:systems:read"]).await;
        }
        let (status, body) = tenants_page(&app, &v1, "?page=1&size=2").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["page"], json!({ "number": 1, "size": 2, "totalElements": 3, "totalPages": 2 }));
        assert_eq!(body["content"][0]["tenant"], "initech");
        assert_eq!(body["content"][0]["scopes"], json!(["lanyard:systems:read"]));
        assert!(body["content"][0]["grantedAt"].as_str().unwrap().ends_with('Z'));
        let (_, body) = tenants_page(&app, &v1, "").await;
        assert_eq!(body["content"].as_array().unwrap().len(), 3, "{body}");
        let (_, body) = tenants_page(&app, &v2, "").await;
        assert_eq!(body["content"], json!([]), "another version was granted nothing: {body}");
        for query in ["?page=2&size=2", "?size=0", "?size=101", "?page=-1", "?page=x"] {
            let (status, body) = tenants_page(&app, &v1, query).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{query}: {body}");
        }
        let (status, _) = tenants_page(&app, &(v1.0.clone(), "wrong".into()), "").await;
        assert_eq!(status, 401);
    }

    async fn who_may_grant_what(app) {
        let vendor = app.tenant("vendor").await;
        application(&app, &vendor, "1.0.0").await;
        let acme = app.tenant("acme").await;
        let (id, secret) = app.client(&acme, NewClient {
            name: "apps admin".into(),
            scopes: lanyard::domain::ScopeSet::parse("lanyard:applications:write").unwrap(),
            ..NewClient::default()
        }).await;
        let apps_admin = app.token("acme", &id, &secret).await;
        let body = gql(&app, Some(&apps_admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": ["lanyard:users:write"] })).await;
        assert_eq!(code(&body), "FORBIDDEN", "a scope the granter lacks: {body}");
        let body = gql(&app, Some(&apps_admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "9.9.9", "s": [] })).await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
        let body = gql(&app, Some(&apps_admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": ["lanyard:applications:write"] })).await;
        assert!(body["errors"].is_null(), "{body}");
        // A grant holding more than the caller is not the caller's to change or revoke.
        let admin = app.admin_token(&acme).await;
        let body = gql(&app, Some(&admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": ["lanyard:users:write"] })).await;
        assert!(body["errors"].is_null(), "{body}");
        let body = gql(&app, Some(&apps_admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": [] })).await;
        assert_eq!(code(&body), "FORBIDDEN", "narrowing a grant that holds more: {body}");
        let body = gql(&app, Some(&apps_admin), "mutation { revokeApplicationAccess(hostTenant: \"vendor\", appName: \"fleet-analytics\", appVersion: \"1.0.0\") }", json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "revoking a grant that holds more: {body}");
        let body = gql(&app, Some(&admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": ["lanyard:applications:write"] })).await;
        assert!(body["errors"].is_null(), "{body}");
        let (id, secret) = app.client(&acme, NewClient { name: "reader".into(), scopes: lanyard::domain::ScopeSet::parse("lanyard:systems:read").unwrap(), ..NewClient::default() }).await;
        let reader = app.token("acme", &id, &secret).await;
        let body = gql(&app, Some(&reader), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": [] })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = gql(&app, Some(&reader), "mutation { revokeApplicationAccess(hostTenant: \"vendor\", appName: \"fleet-analytics\", appVersion: \"1.0.0\") }", json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let list = gql(&app, Some(&admin), "{ applicationAccess { hostTenant appName appVersion scopes } }", json!({})).await;
        assert_eq!(list["data"]["applicationAccess"], json!([{ "hostTenant": "vendor", "appName": "fleet-analytics", "appVersion": "1.0.0", "scopes": ["lanyard:applications:write"] }]));
        // An application's credentials are a confidential client's.
        let public = app.authority().create_client(&vendor.tenant, NewClient { name: "p".into(), public: true, application: Some(Application::parse("x", "1").unwrap()), ..NewClient::default() }).await;
        assert!(public.is_err());
    }

    async fn a_technical_token_ends_with_a_narrower_grant_or_its_vendors_client(app) {
        let vendor = app.tenant("vendor").await;
        let v1 = application(&app, &vendor, "1.0.0").await;
        let (_, admin) = granting(&app, "acme", &["lanyard:systems:read", "lanyard:users:read"]).await;
        let (_, body) = request_tokens(&app, &v1, ask("1.0.0", "acme")).await;
        let wide = body["access_token"].as_str().unwrap().to_owned();
        assert!(gql(&app, Some(&wide), "{ systems { uuid } }", json!({})).await["errors"].is_null());
        // Granted again with less: the token that carries more stops working.
        let body = gql(&app, Some(&admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": ["lanyard:systems:read"] })).await;
        assert!(body["errors"].is_null(), "{body}");
        assert_eq!(code(&gql(&app, Some(&wide), "{ systems { uuid } }", json!({})).await), "UNAUTHENTICATED");
        let (_, body) = request_tokens(&app, &v1, ask("1.0.0", "acme")).await;
        let narrow = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(claims_of(&narrow)["scope"], "lanyard:systems:read");
        assert!(gql(&app, Some(&narrow), "{ systems { uuid } }", json!({})).await["errors"].is_null());
        // The vendor deletes the application's client: its tokens stop working everywhere.
        app.authority().delete_client(&vendor.tenant, &lanyard::domain::ClientId::parse(&v1.0).unwrap()).await.unwrap();
        assert_eq!(code(&gql(&app, Some(&narrow), "{ systems { uuid } }", json!({})).await), "UNAUTHENTICATED");
    }

    async fn a_technical_tokens_mqtt_session_ends_with_its_grant_and_with_its_vendors_client(app) {
        use crate::mqtt::V5;
        use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
        let vendor = app.tenant("vendor").await;
        let v1 = application(&app, &vendor, "1.0.0").await;
        let (_, admin) = granting(&app, "acme", &["lanyard:systems:read"]).await;
        let (mut session, token) = technical_session(&app, &v1).await.expect("a technical token connects");
        // A grant to another application changes nothing for it.
        application(&app, &vendor, "2.0.0").await;
        let other = gql(&app, Some(&admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "2.0.0", "s": [] })).await;
        assert!(other["errors"].is_null(), "{other}");
        assert!(session.next(std::time::Duration::from_millis(300)).await.is_none(), "ended by another application's grant");
        let revoked = gql(&app, Some(&admin), "mutation { revokeApplicationAccess(hostTenant: \"vendor\", appName: \"fleet-analytics\", appVersion: \"1.0.0\") }", json!({})).await;
        assert!(revoked["errors"].is_null(), "{revoked}");
        assert_eq!(session.disconnected().await, DisconnectReasonCode::NotAuthorized);
        assert!(V5::connect(&app, &v1.0, &token).await.is_err());
        // Granted again: a new token connects, and ends when the vendor deletes its client.
        let body = gql(&app, Some(&admin), GRANT, json!({ "h": "vendor", "n": "fleet-analytics", "v": "1.0.0", "s": [] })).await;
        assert!(body["errors"].is_null(), "{body}");
        let (mut session, _) = technical_session(&app, &v1).await.expect("a new token connects");
        app.authority().delete_client(&vendor.tenant, &lanyard::domain::ClientId::parse(&v1.0).unwrap()).await.unwrap();
        assert_eq!(session.disconnected().await, DisconnectReasonCode::NotAuthorized);
    }
}

/// An MQTT 5 session of a technical token of acme for `v1`, and the token.
async fn technical_session(
    app: &TestApp,
    v1: &(String, String),
) -> Result<(crate::mqtt::V5, String), rumqttc::v5::mqttbytes::v5::ConnectReturnCode> {
    let (_, body) = request_tokens(app, v1, ask("1.0.0", "acme")).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    crate::mqtt::V5::connect(app, &v1.0, &token)
        .await
        .map(|c| (c, token))
}
