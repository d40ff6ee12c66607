//! Forward auth for web servers (SPEC §9): `/t/{slug}/validate` as nginx's `auth_request` and
//! Caddy's `forward_auth` call it. nginx itself in front of it: `nginx.rs`.

use serde_json::json;

use crate::graphql::{gql, world};
use crate::helpers::*;
use crate::mqtt::device;

async fn validate(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = app.http.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

on_both_databases! {
    async fn a_good_token_passes_with_who_it_is_in_headers(app) {
        let t = app.tenant("acme").await;
        app.authority().create_scope(&t.tenant, "sensor:read", None).await.unwrap();
        app.authority().create_scope(&t.tenant, "video:gold", None).await.unwrap();
        let (id, token) = device(&app, &t, None, "sensor:read").await;
        for method in [reqwest::Method::GET, reqwest::Method::HEAD, reqwest::Method::POST, reqwest::Method::DELETE] {
            let res = validate(&app, method.clone(), "/t/acme/validate?scope=sensor%3Aread", Some(&token)).await;
            assert_eq!(res.status(), 200, "{method}");
            assert_eq!(header(&res, "x-user"), id.to_string());
            assert_eq!(header(&res, "x-client-id"), id.to_string());
            assert_eq!(header(&res, "x-scope"), "sensor:read");
            assert_eq!(header(&res, "x-tenant"), "acme");
        }
        let res = validate(&app, reqwest::Method::GET, "/t/acme/validate", Some(&token)).await;
        assert_eq!(res.status(), 200, "no scope asked for");

        let res = validate(&app, reqwest::Method::GET, "/t/acme/validate?scope=sensor%3Aread%20video%3Agold", Some(&token)).await;
        assert_eq!(res.status(), 403, "every scope named is required");
        let challenge = header(&res, "www-authenticate");
        assert!(challenge.starts_with("Bearer ") && challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"sensor:read video:gold\""), "{challenge}");
    }

    async fn a_missing_or_bad_token_is_401_with_the_rfc_6750_challenge(app) {
        let w = world(&app).await;
        let res = validate(&app, reqwest::Method::GET, "/t/acme/validate", None).await;
        assert_eq!(res.status(), 401);
        let challenge = header(&res, "www-authenticate");
        assert!(challenge.starts_with("Bearer") && !challenge.contains("error="), "{challenge}");

        let minted = gql(&app, Some(&w.user_token), "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { jwt } }", json!({ "s": w.system })).await;
        let local = minted["data"]["createLocalApiToken"]["jwt"].as_str().unwrap().to_owned();
        let other = app.tenant("umbrella").await;
        let foreign = app.admin_token(&other).await;
        let too_long = "a".repeat(9000);
        for (what, token) in [("garbage", "not-a-token"), ("a local API token", local.as_str()), ("another tenant's token", foreign.as_str()), ("too long", too_long.as_str())] {
            let res = validate(&app, reqwest::Method::GET, "/t/acme/validate", Some(token)).await;
            assert_eq!(res.status(), 401, "{what}");
            assert!(header(&res, "www-authenticate").contains("error=\"invalid_token\""), "{what}");
        }
        let res = validate(&app, reqwest::Method::GET, "/t/nope/validate", Some(&w.admin_token)).await;
        assert_eq!(res.status(), 404);
    }

    async fn a_revoked_token_is_refused_at_once_though_it_was_seen_before(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        assert_eq!(validate(&app, reqwest::Method::GET, "/t/acme/validate", Some(&token)).await.status(), 200);
        let res = app.post_form("/t/acme/oauth2/revoke", Some((&t.admin_id, &t.admin_secret)), &format!("token={token}")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(validate(&app, reqwest::Method::GET, "/t/acme/validate", Some(&token)).await.status(), 401);
        // And an expired one.
        let fresh = app.admin_token(&t).await;
        assert_eq!(validate(&app, reqwest::Method::GET, "/t/acme/validate", Some(&fresh)).await.status(), 200);
        app.clock.advance(3601);
        assert_eq!(validate(&app, reqwest::Method::GET, "/t/acme/validate", Some(&fresh)).await.status(), 401);
    }
}
