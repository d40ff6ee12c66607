//! Token exchange (RFC 8693, SPEC §11) at the token endpoint: delegation with an actor token,
//! impersonation through `may_act`, local API tokens for a system, and every refusal.

use lanyard::authority::NewClient;
use lanyard::domain::{GrantType, ScopeSet};
use serde_json::{Value, json};

use crate::graphql::{World, claims_of, gql, world};
use crate::helpers::*;
use crate::signin::sign_in;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const LOCAL: &str = "urn:lanyard:params:oauth:token-type:local-api-token";

/// A confidential client allowed token exchange.
pub async fn exchanger(app: &TestApp, w: &World) -> (String, String) {
    let (id, secret) = app
        .client(
            &w.t,
            NewClient {
                name: "Backend".into(),
                grant_types: vec![GrantType::TokenExchange, GrantType::ClientCredentials],
                ..NewClient::default()
            },
        )
        .await;
    (id.to_string(), secret)
}

/// The person of `w`'s token, exchanged by `backend` with its own token as actor.
pub async fn delegated(app: &TestApp, w: &World, backend: &(String, String)) -> String {
    let actor = app.token("acme", &backend.0, &backend.1).await;
    let (status, body) = exchange(
        app,
        "acme",
        backend,
        &[
            ("subject_token", &w.user_token),
            ("subject_token_type", ACCESS),
            ("actor_token", &actor),
            ("actor_token_type", ACCESS),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// Posts a token-exchange request as `client`; returns the status and body.
async fn exchange(
    app: &TestApp,
    slug: &str,
    client: &(String, String),
    params: &[(&str, &str)],
) -> (u16, Value) {
    let mut body = format!("grant_type={}", urlencode(EXCHANGE));
    for (k, v) in params {
        body.push_str(&format!("&{k}={}", urlencode(v)));
    }
    let res = app
        .post_form(
            &format!("/t/{slug}/oauth2/token"),
            Some((&client.0, &client.1)),
            &body,
        )
        .await;
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Grace, holding `sensor:read video:gold`, signed in through an app whose tokens name
/// `may_act` when given.
async fn ada_with_scopes(app: &TestApp, w: &World, may_act: Option<&str>) -> String {
    for scope in ["sensor:read", "video:gold"] {
        let _ = app.authority().create_scope(&w.t.tenant, scope, None).await;
    }
    app.authority()
        .create_user(
            &w.t.tenant,
            "grace@example.com",
            "Grace Hopper",
            ScopeSet::parse("sensor:read video:gold").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let (client, _) = app
        .client(
            &w.t,
            NewClient {
                name: "Grace's app".into(),
                public: true,
                may_act: may_act.map(|c| lanyard::domain::ClientId::parse(c).unwrap()),
                ..NewClient::default()
            },
        )
        .await;
    sign_in(app, "acme", &client, "grace@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

on_both_databases! {
    async fn an_actor_token_makes_a_delegation_that_names_the_actor(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        let actor = app.token("acme", &backend.0, &backend.1).await;
        let (status, body) = exchange(&app, "acme", &backend, &[
            ("subject_token", &w.user_token), ("subject_token_type", ACCESS),
            ("actor_token", &actor), ("actor_token_type", ACCESS),
        ]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["issued_token_type"], ACCESS);
        assert_eq!(body["token_type"], "Bearer");
        assert!(body.get("refresh_token").is_none(), "no refresh token: {body}");
        let token = body["access_token"].as_str().unwrap();
        let claims = verify_with_jwks(token, &app.jwks("acme").await, &w.t.tenant.issuer, "acme");
        assert_eq!(claims["sub"], w.user.as_str());
        assert_eq!(claims["client_id"], backend.0.as_str());
        assert_eq!(claims["act"], json!({ "sub": backend.0, "client_id": backend.0, "name": "Backend" }));
        assert!(claims["exp"].as_i64() <= claims_of(&w.user_token)["exp"].as_i64());
        // It works as the person, and a second exchange nests the earlier actor.
        let me = gql(&app, Some(token), "{ me { sub } }", json!({})).await;
        assert_eq!(me["data"]["me"]["sub"], w.user.as_str());
        let (status, body) = exchange(&app, "acme", &backend, &[
            ("subject_token", token), ("subject_token_type", ACCESS),
            ("actor_token", &w.admin_token), ("actor_token_type", ACCESS),
        ]).await;
        assert_eq!(status, 200, "{body}");
        let nested = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(nested["act"]["sub"], w.t.admin_id.as_str());
        assert_eq!(nested["act"]["act"]["sub"], backend.0.as_str(), "{nested}");
    }

    async fn impersonation_needs_may_act_naming_the_client(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        // Ada's token names no one in may_act.
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        let grace = ada_with_scopes(&app, &w, Some(&backend.0)).await;
        assert_eq!(claims_of(&grace)["may_act"], json!({ "client_id": backend.0 }));
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &grace), ("subject_token_type", ACCESS), ("scope", "sensor:read")]).await;
        assert_eq!(status, 200, "{body}");
        let claims = claims_of(body["access_token"].as_str().unwrap());
        assert!(claims.get("act").is_none(), "impersonation names no actor: {claims}");
        assert!(claims.get("may_act").is_none(), "may_act is not passed on: {claims}");
        assert_eq!(claims["scope"], "sensor:read");
        // Another client, even allowed the grant, is not the one named.
        let other = exchanger(&app, &w).await;
        let (status, body) = exchange(&app, "acme", &other, &[("subject_token", &grace), ("subject_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }

    async fn the_scope_and_the_lifetime_never_grow(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        let grace = ada_with_scopes(&app, &w, Some(&backend.0)).await;
        let subject = [("subject_token", grace.as_str()), ("subject_token_type", ACCESS)];
        let (status, body) = exchange(&app, "acme", &backend, &[subject[0], subject[1], ("scope", "sensor:read lanyard:users:read")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
        let (status, body) = exchange(&app, "acme", &backend, &subject).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], "sensor:read video:gold");
        let actor = app.token("acme", &backend.0, &backend.1).await;
        app.clock.advance(3000);
        let (_, body) = exchange(&app, "acme", &backend, &subject).await;
        let claims = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(claims["exp"], claims_of(&grace)["exp"], "it ends with the subject token");
        assert!(body["expires_in"].as_i64().unwrap() <= 600, "{body}");
        // With an actor token older than the subject token, it ends with the actor's.
        let fresh = sign_in(&app, "acme", &crate::signin::app_client(&app, &w.t).await, "ada@example.com").await;
        let fresh = fresh["access_token"].as_str().unwrap();
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", fresh), ("subject_token_type", ACCESS), ("actor_token", &actor), ("actor_token_type", ACCESS)]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(claims_of(body["access_token"].as_str().unwrap())["exp"], claims_of(&actor)["exp"], "it ends with the actor token");
    }

    async fn a_local_api_token_for_a_system_the_subject_holds_a_role_on(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        let actor = app.token("acme", &backend.0, &backend.1).await;
        let (status, body) = exchange(&app, "acme", &backend, &[
            ("subject_token", &w.user_token), ("subject_token_type", ACCESS),
            ("actor_token", &actor), ("actor_token_type", ACCESS),
            ("requested_token_type", LOCAL), ("audience", &w.system),
        ]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["issued_token_type"], LOCAL);
        assert_eq!(body["token_type"], "N_A");
        assert!(body.get("refresh_token").is_none() && body.get("scope").is_none(), "{body}");
        let jwt = body["access_token"].as_str().unwrap();
        let claims = claims_of(jwt.strip_prefix("CLOUD-").unwrap());
        assert_eq!(claims["aud"], w.system.as_str());
        assert_eq!(claims["sub"], w.user.as_str());
        assert_eq!(claims["roles"][0]["uuid"], w.role.as_str());
        assert_eq!(claims["act"]["sub"], backend.0.as_str());
        assert!(claims["status"]["status_list"]["uri"].is_string());
        assert!(claims["exp"].as_i64() <= claims_of(&w.user_token)["exp"].as_i64());
        let list = gql(&app, Some(&w.admin_token), "query($s: UUID!) { localApiTokens(systemUuid: $s) { actor { uuid type name } } }", json!({ "s": w.system })).await;
        assert_eq!(list["data"]["localApiTokens"][0]["actor"], json!({ "uuid": backend.0, "type": "CLIENT", "name": "Backend" }), "{list}");

        // A system the subject holds no role on, a target that is no system, an access
        // token for a system.
        let other = app.authority().create_system(&w.t.tenant, "Other").await.unwrap();
        for params in [
            [("requested_token_type", LOCAL), ("audience", other.as_str())],
            [("requested_token_type", LOCAL), ("audience", "acme")],
            [("requested_token_type", ACCESS), ("audience", w.system.as_str())],
        ] {
            let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &actor), ("actor_token_type", ACCESS), params[0], params[1]]).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{params:?}: {body}");
        }
    }

    async fn an_exchanged_token_dies_with_its_actor(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        // A person as actor: deleting them ends the token, even after it was cached.
        let grace = ada_with_scopes(&app, &w, None).await;
        let grace_id = claims_of(&grace)["sub"].as_str().unwrap().to_owned();
        let (_, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &grace), ("actor_token_type", ACCESS)]).await;
        let by_grace = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(gql(&app, Some(&by_grace), "{ me { sub } }", json!({})).await["data"]["me"]["sub"], w.user.as_str());
        // A client as actor, the earlier actor nested: deleting the client ends it too.
        let (other_id, other_secret) = app.client(&w.t, NewClient { name: "Other".into(), grant_types: vec![GrantType::ClientCredentials], ..NewClient::default() }).await;
        let other = app.token("acme", &other_id, &other_secret).await;
        let (_, body) = exchange(&app, "acme", &backend, &[("subject_token", &by_grace), ("subject_token_type", ACCESS), ("actor_token", &other), ("actor_token_type", ACCESS)]).await;
        let by_other = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(claims_of(&by_other)["act"]["act"]["sub"], grace_id.as_str());
        let introspected = app.introspect(&w.t, &by_other).await;
        assert_eq!(introspected["act"]["sub"], other_id.as_str(), "{introspected}");
        assert_eq!(introspected["act"]["act"]["sub"], grace_id.as_str());
        app.authority().delete_client(&w.t.tenant, &other_id).await.unwrap();
        assert!(!app.is_active(&w.t, &by_other).await, "the client that acted is gone");
        assert!(app.is_active(&w.t, &by_grace).await);
        app.authority().delete_user(&w.t.tenant, &lanyard::domain::UserId::parse(&grace_id).unwrap()).await.unwrap();
        assert!(!app.is_active(&w.t, &by_grace).await, "the person who acted is gone");
        // And from a fresh start, with no cache to forget.
        let app = app.restart().await;
        assert!(!app.is_active(&w.t, &by_grace).await);
    }

    async fn a_chain_of_actors_is_at_most_four_long(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        let mut actors = Vec::new();
        for n in 0..5 {
            let (id, secret) = app.client(&w.t, NewClient { name: format!("service {n}"), grant_types: vec![GrantType::ClientCredentials], ..NewClient::default() }).await;
            actors.push(app.token("acme", &id, &secret).await);
        }
        let mut subject = w.user_token.clone();
        for (depth, actor) in actors.iter().enumerate() {
            let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &subject), ("subject_token_type", ACCESS), ("actor_token", actor), ("actor_token_type", ACCESS)]).await;
            if depth < 4 {
                assert_eq!(status, 200, "depth {}: {body}", depth + 1);
                subject = body["access_token"].as_str().unwrap().to_owned();
            } else {
                assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "a fifth actor: {body}");
            }
        }
        assert!(claims_of(&subject)["act"]["act"]["act"]["act"]["sub"].is_string(), "four actors");
    }

    async fn what_is_refused(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        let actor = app.token("acme", &backend.0, &backend.1).await;
        // A client without the grant.
        let (id, secret) = app.client(&w.t, NewClient { name: "plain".into(), ..NewClient::default() }).await;
        let (status, body) = exchange(&app, "acme", &(id.to_string(), secret), &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &actor), ("actor_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("unauthorized_client")), "{body}");
        // An actor token of another tenant.
        let globex = app.tenant("globex").await;
        let foreign = app.admin_token(&globex).await;
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &foreign), ("actor_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        // A subject token of another tenant, a client's own token, a bad token, a jwt.
        for (subject, kind, error) in [
            (foreign.as_str(), ACCESS, "invalid_grant"),
            (actor.as_str(), ACCESS, "invalid_grant"),
            ("not.a.token", ACCESS, "invalid_grant"),
            (w.user_token.as_str(), "urn:ietf:params:oauth:token-type:jwt", "invalid_request"),
            (w.user_token.as_str(), "urn:ietf:params:oauth:token-type:id_token", "invalid_request"),
        ] {
            let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", subject), ("subject_token_type", kind), ("actor_token", &actor), ("actor_token_type", ACCESS)]).await;
            assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{kind}: {body}");
        }
        // A token that acts for another is no actor token; a delegation's token is neither.
        let exchanged = delegated(&app, &w, &backend).await;
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &exchanged), ("actor_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        // A revoked subject token.
        let revoked_subject = delegated(&app, &w, &backend).await;
        let res = app.post_form("/t/acme/oauth2/revoke", Some((&backend.0, &backend.1)), &format!("token={}", urlencode(&revoked_subject))).await;
        assert_eq!(res.status(), 200);
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &revoked_subject), ("subject_token_type", ACCESS), ("actor_token", &actor), ("actor_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        // An actor token without its type; a resource.
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &actor)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &actor), ("actor_token_type", ACCESS), ("resource", "https://api.example.com")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");
        // Another tenant's application, through its technical token, acts for no one here.
        let vendor = app.tenant("vendor").await;
        let (id, secret) = app.client(&vendor, NewClient { name: "app".into(), application: Some(lanyard::authority::clients::Application::parse("fleet", "1").unwrap()), ..NewClient::default() }).await;
        let grant = gql(&app, Some(&w.admin_token), "mutation { grantApplicationAccess(hostTenant: \"vendor\", appName: \"fleet\", appVersion: \"1\", scopes: []) { hostTenant } }", json!({})).await;
        assert!(grant["errors"].is_null(), "{grant}");
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let technical: Value = app.http.post(app.url("/api/technicaltokenmanager/v3/oauth/token"))
            .header("X-SPACE-AUTH-KEY", format!("Basic {key}"))
            .json(&json!({ "appName": "fleet", "appVersion": "1", "hostTenant": "vendor", "userTenant": "acme" }))
            .send().await.unwrap().json().await.unwrap();
        let technical = technical["access_token"].as_str().unwrap();
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", technical), ("actor_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        // A public client cannot be given the grant.
        let public = app.authority().create_client(&w.t.tenant, NewClient { name: "p".into(), public: true, grant_types: vec![GrantType::TokenExchange], ..NewClient::default() }).await;
        assert!(public.is_err());
        // The grant is advertised.
        let meta: Value = app.http.get(app.url("/t/acme/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
        assert!(meta["grant_types_supported"].as_array().unwrap().iter().any(|g| g == EXCHANGE), "{meta}");
    }
}

/// Runs `tests/interop/token_exchange.py` with `args`; panics with its output when it fails.
async fn python_client(python: &std::path::Path, args: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/token_exchange.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
}

#[tokio::test]
async fn a_client_nobody_here_wrote_exchanges_and_verifies_with_pyjwt() {
    let Some(python) = interop_python() else {
        return;
    };
    let app = reachable_app().await;
    let w = world(&app).await;
    let backend = exchanger(&app, &w).await;
    let actor = app.token("acme", &backend.0, &backend.1).await;
    python_client(
        &python,
        &[
            "--issuer",
            &w.t.tenant.issuer,
            "--client-id",
            &backend.0,
            "--client-secret",
            &backend.1,
            "--subject-token",
            &w.user_token,
            "--actor-token",
            &actor,
            "--expect-sub",
            w.user.as_str(),
            "--expect-actor",
            &backend.0,
        ],
    )
    .await;

    // A technical token of acme for an application of another tenant.
    let vendor = app.tenant("vendor").await;
    let (id, secret) = app
        .client(
            &vendor,
            NewClient {
                name: "Fleet analytics".into(),
                application: Some(
                    lanyard::authority::clients::Application::parse("fleet-analytics", "1.0.0")
                        .unwrap(),
                ),
                ..NewClient::default()
            },
        )
        .await;
    let grant = gql(&app, Some(&w.admin_token), "mutation { grantApplicationAccess(hostTenant: \"vendor\", appName: \"fleet-analytics\", appVersion: \"1.0.0\", scopes: [\"lanyard:systems:read\"]) { hostTenant } }", json!({})).await;
    assert!(grant["errors"].is_null(), "{grant}");
    let res: Value = app
        .http
        .post(app.url("/api/technicaltokenmanager/v3/oauth/token"))
        .basic_auth(id.as_str(), Some(&secret))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        res["error"], "invalid_client",
        "Authorization is not the header: {res}"
    );
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let res: Value = app
        .http
        .post(app.url("/api/technicaltokenmanager/v3/oauth/token"))
        .header("X-SPACE-AUTH-KEY", format!("Basic {key}"))
        .json(&json!({ "appName": "fleet-analytics", "appVersion": "1.0.0", "hostTenant": "vendor", "userTenant": "acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    python_client(
        &python,
        &[
            "--issuer",
            &w.t.tenant.issuer,
            "--technical-token",
            res["access_token"].as_str().unwrap(),
            "--audience",
            "acme",
            "--expect-app",
            "fleet-analytics@1.0.0",
        ],
    )
    .await;
}

on_both_databases! {
    async fn an_mqtt_session_of_an_exchanged_token_ends_with_its_actor(app) {
        use crate::mqtt::V5;
        use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        let grace = ada_with_scopes(&app, &w, None).await;
        let grace_id = claims_of(&grace)["sub"].as_str().unwrap().to_owned();
        let (_, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &grace), ("actor_token_type", ACCESS)]).await;
        let token = body["access_token"].as_str().unwrap().to_owned();
        let mut session = V5::connect(&app, "ada-by-grace", &token).await.expect("an exchanged token connects");
        app.authority().delete_user(&w.t.tenant, &lanyard::domain::UserId::parse(&grace_id).unwrap()).await.unwrap();
        assert_eq!(session.disconnected().await, DisconnectReasonCode::NotAuthorized);
        assert!(V5::connect(&app, "ada-by-grace", &token).await.is_err(), "it cannot come back");
    }

    async fn what_an_exchanged_token_mints_through_graphql_ends_with_it(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        const MINT: &str = "mutation($s: UUID!, $d: String!) { createLocalApiToken(systemUuid: $s, duration: $d) { jwt } }";
        const PERMANENT: &str = "mutation($s: UUID!) { createPermanentLocalApiToken(systemUuid: $s, name: \"x\") { jwt } }";
        // A delegation: capped at its own exp, nothing permanent.
        let acting = delegated(&app, &w, &backend).await;
        let body = gql(&app, Some(&acting), MINT, json!({ "s": w.system, "d": "30D" })).await;
        let minted = claims_of(body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap_or_else(|| panic!("{body}")).strip_prefix("CLOUD-").unwrap());
        assert_eq!(minted["exp"], claims_of(&acting)["exp"], "not 30 days: {minted}");
        assert_eq!(minted["act"]["sub"], backend.0.as_str());
        let body = gql(&app, Some(&acting), PERMANENT, json!({ "s": w.system })).await;
        assert_eq!(crate::graphql::code(&body), "BAD_USER_INPUT", "{body}");
        // An impersonation: the same, and the token and the list name the client that minted.
        let (app_id, _) = app.client(&w.t, NewClient { name: "Phone app".into(), public: true, may_act: Some(lanyard::domain::ClientId::parse(&backend.0).unwrap()), ..NewClient::default() }).await;
        let grace = {
            let hedy = app.authority().create_user(&w.t.tenant, "hedy@example.com", "Hedy Lamarr", Default::default(), Default::default()).await.unwrap();
            app.authority().assign_role(&w.t.tenant, &hedy.id, &w.system, &w.role).await.unwrap();
            sign_in(&app, "acme", &app_id, "hedy@example.com").await["access_token"].as_str().unwrap().to_owned()
        };
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &grace), ("subject_token_type", ACCESS)]).await;
        assert_eq!(status, 200, "{body}");
        let impersonating = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(claims_of(&impersonating)["exchanged"], true);
        let body = gql(&app, Some(&impersonating), MINT, json!({ "s": w.system, "d": "30D" })).await;
        let minted = claims_of(body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap_or_else(|| panic!("{body}")).strip_prefix("CLOUD-").unwrap());
        assert_eq!(minted["exp"], claims_of(&impersonating)["exp"]);
        assert_eq!(minted["act"], json!({ "sub": backend.0, "client_id": backend.0, "name": "Backend" }));
        let body = gql(&app, Some(&impersonating), PERMANENT, json!({ "s": w.system })).await;
        assert_eq!(crate::graphql::code(&body), "BAD_USER_INPUT", "{body}");
        let list = gql(&app, Some(&w.admin_token), "query($s: UUID!) { localApiTokens(systemUuid: $s) { actor { uuid type } } }", json!({ "s": w.system })).await;
        assert_eq!(list["data"]["localApiTokens"][1]["actor"], json!({ "uuid": backend.0, "type": "CLIENT" }), "{list}");
        // The person's own token still mints for as long as asked.
        let body = gql(&app, Some(&grace), PERMANENT, json!({ "s": w.system })).await;
        assert!(body["errors"].is_null(), "{body}");
        // Nobody acts for themselves.
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &grace), ("subject_token_type", ACCESS), ("actor_token", &grace), ("actor_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }

    async fn what_an_exchanged_token_cannot_lead_to(app) {
        let w = world(&app).await;
        let backend = exchanger(&app, &w).await;
        let bianca = app.authority().create_user(&w.t.tenant, "bianca@example.com", "Bianca", Default::default(), Default::default()).await.unwrap();
        let bianca_token = sign_in(&app, "acme", &crate::signin::app_client(&app, &w.t).await, "bianca@example.com").await["access_token"].as_str().unwrap().to_owned();
        // It shares nothing: a share would outlive it.
        let acting = delegated(&app, &w, &backend).await;
        let body = gql(&app, Some(&acting), "mutation($s: UUID!, $r: UUID!) { shareSystem(systemUuid: $s, email: \"bianca@example.com\", roleUuids: [$r]) { uuid } }", json!({ "s": w.system, "r": w.role })).await;
        assert_eq!(crate::graphql::code(&body), "FORBIDDEN", "{body}");
        // An actor already in the chain does not act again.
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &w.user_token), ("subject_token_type", ACCESS), ("actor_token", &bianca_token), ("actor_token_type", ACCESS)]).await;
        assert_eq!(status, 200, "{body}");
        let by_bianca = body["access_token"].as_str().unwrap().to_owned();
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &by_bianca), ("subject_token_type", ACCESS), ("actor_token", &bianca_token), ("actor_token_type", ACCESS)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        // The sharer does not act for the recipient under their own share.
        let shared = gql(&app, Some(&w.user_token), "mutation($s: UUID!, $r: UUID!) { shareSystem(systemUuid: $s, email: \"bianca@example.com\", roleUuids: [$r]) { uuid } }", json!({ "s": w.system, "r": w.role })).await;
        assert!(shared["errors"].is_null(), "{shared}");
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &bianca_token), ("subject_token_type", ACCESS), ("actor_token", &w.user_token), ("actor_token_type", ACCESS), ("requested_token_type", LOCAL), ("audience", &w.system)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
        let _ = bianca;
        // An impersonation exchanged again keeps its client in the chain, and dies with it.
        let (x2_id, x2_secret) = app.client(&w.t, NewClient { name: "X2".into(), grant_types: vec![GrantType::TokenExchange], ..NewClient::default() }).await;
        let x2 = (x2_id.to_string(), x2_secret);
        let (app_id, _) = app.client(&w.t, NewClient { name: "Phone".into(), public: true, may_act: Some(x2_id.clone()), ..NewClient::default() }).await;
        let hedy = app.authority().create_user(&w.t.tenant, "hedy@example.com", "Hedy", Default::default(), Default::default()).await.unwrap();
        let _ = hedy;
        let hedy_token = sign_in(&app, "acme", &app_id, "hedy@example.com").await["access_token"].as_str().unwrap().to_owned();
        let (status, body) = exchange(&app, "acme", &x2, &[("subject_token", &hedy_token), ("subject_token_type", ACCESS)]).await;
        assert_eq!(status, 200, "{body}");
        let impersonating = body["access_token"].as_str().unwrap().to_owned();
        let actor = app.token("acme", &backend.0, &backend.1).await;
        let (status, body) = exchange(&app, "acme", &backend, &[("subject_token", &impersonating), ("subject_token_type", ACCESS), ("actor_token", &actor), ("actor_token_type", ACCESS)]).await;
        assert_eq!(status, 200, "{body}");
        let again = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(claims_of(&again)["act"]["act"]["sub"], x2.0.as_str(), "{}", claims_of(&again));
        app.authority().delete_client(&w.t.tenant, &x2_id).await.unwrap();
        assert!(!app.is_active(&w.t, &again).await, "the impersonating client is gone");
    }
}
