//! Introspection (RFC 7662) and, through it, every refusal of token verification.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard::crypto::jws;
use serde_json::{Value, json};

use crate::helpers::*;

/// Signs `claims` with the tenant's real signing key: the forgeries below differ from a good
/// token only in what each test changes.
async fn sign_with_tenant_key(app: &TestApp, t: &TestTenant, typ: &str, claims: &Value) -> String {
    let keys = app.authority().keyring(&t.tenant).await.unwrap();
    let signer = keys.signer.as_ref().unwrap();
    jws::sign(&signer.key, &signer.kid, typ, claims)
}

fn claims_of(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

on_both_databases! {
    async fn an_active_token_is_described(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        let body = app.introspect(&t, &token).await;
        assert_eq!(body["active"], true);
        assert_eq!(body["client_id"], t.admin_id.as_str());
        assert_eq!(body["aud"], "acme");
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["scope"].as_str().unwrap().contains("lanyard:keys:write"));
    }

    async fn introspection_needs_an_authenticated_client(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        let res = app.post_form("/t/acme/oauth2/introspect", None, &format!("token={token}")).await;
        assert_eq!(res.status(), 401);
        let res = app.post_form("/t/acme/oauth2/introspect", Some((&t.admin_id, "wrong")), &format!("token={token}")).await;
        assert_eq!(res.status(), 401);
        let res = app.post_form("/t/acme/oauth2/introspect", Some((&t.admin_id, &t.admin_secret)), "").await;
        assert_eq!(res.status(), 400);
    }

    async fn a_public_client_cannot_introspect(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        let (id, _) = app
            .client(&t, lanyard::authority::NewClient { name: "app".into(), public: true, ..Default::default() })
            .await;
        let res = app
            .post_form("/t/acme/oauth2/introspect", None, &format!("client_id={id}&token={token}"))
            .await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized_client");
    }

    async fn the_genuine_template_of_the_forgeries_is_active(app) {
        // Guards the forgery tests: an unchanged template signed the same way is accepted.
        let t = app.tenant("acme").await;
        let claims = claims_of(&app.admin_token(&t).await);
        let token = sign_with_tenant_key(&app, &t, "at+jwt", &claims).await;
        assert!(app.is_active(&t, &token).await);
    }

    async fn tokens_with_wrong_claims_are_inactive(app) {
        let t = app.tenant("acme").await;
        let good = claims_of(&app.admin_token(&t).await);
        let now = app.clock_now();
        let cases: Vec<(&str, Value)> = vec![
            ("aud", json!("other")),
            ("aud", json!(["acme"])),
            ("iss", json!("http://evil.test/t/acme")),
            ("exp", json!(now - 1)),
            ("exp", json!(now)),
            ("nbf", json!(now + 600)),
            ("client_id", json!("deleted-or-never-existed")),
            ("jti", Value::Null),
        ];
        for (claim, value) in cases {
            let mut claims = good.clone();
            claims[claim] = value.clone();
            let token = sign_with_tenant_key(&app, &t, "at+jwt", &claims).await;
            assert!(!app.is_active(&t, &token).await, "{claim} = {value}");
        }
    }

    async fn tokens_of_another_type_are_inactive(app) {
        let t = app.tenant("acme").await;
        let claims = claims_of(&app.admin_token(&t).await);
        for typ in ["JWT", "refresh+jwt", "AT+JWT "] {
            let token = sign_with_tenant_key(&app, &t, typ, &claims).await;
            assert!(!app.is_active(&t, &token).await, "{typ}");
        }
    }

    async fn forged_headers_and_signatures_are_inactive(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        let claims = claims_of(&token);
        let kid = header_of(&token)["kid"].as_str().unwrap().to_owned();
        let jwks = app.jwks("acme").await;
        let n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();

        // alg none, no signature.
        let none = format!("{}.{}.", b64(&json!({"alg":"none","typ":"at+jwt","kid":kid})), b64(&claims));
        // HS256 keyed with the public key (the classic confusion attack).
        let hs_input = format!("{}.{}", b64(&json!({"alg":"HS256","typ":"at+jwt","kid":kid})), b64(&claims));
        let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, n.as_bytes());
        let hs = format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&hmac_key, hs_input.as_bytes())));
        // A kid nobody published.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[0] = b64(&json!({"alg":"RS256","typ":"at+jwt","kid":"unknown"}));
        let unknown_kid = parts.join(".");
        // A changed claim under the old signature.
        let mut escalated = claims.clone();
        escalated["scope"] = json!("everything");
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = b64(&escalated);
        let tampered = parts.join(".");

        for (name, forged) in [("none", none), ("hs256", hs), ("kid", unknown_kid), ("tampered", tampered)] {
            assert!(!app.is_active(&t, &forged).await, "{name}");
        }
        for garbage in ["x", "a.b.c", "....", &"A".repeat(9_000)] {
            assert!(!app.is_active(&t, garbage).await, "{garbage:.20}");
        }
    }

    async fn tokens_pointing_at_their_own_keys_are_inactive(app) {
        let t = app.tenant("acme").await;
        let claims = claims_of(&app.admin_token(&t).await);
        let keys = app.authority().keyring(&t.tenant).await.unwrap();
        let signer = keys.signer.as_ref().unwrap();
        for member in ["jku", "jwk", "x5u", "x5c"] {
            let mut header = json!({"alg":"RS256","typ":"at+jwt","kid":signer.kid});
            header[member] = json!("https://evil.test/keys");
            let input = format!("{}.{}", b64(&header), b64(&claims));
            let sig = signer.key.sign(input.as_bytes());
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
            assert!(!app.is_active(&t, &token).await, "{member}");
        }
    }

    async fn a_token_expires_at_its_exp(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        app.clock.advance(3599);
        assert!(app.is_active(&t, &token).await);
        app.clock.advance(1);
        // The admin's own token for introspection must be fresh, which `introspect` ensures by
        // authenticating with the client secret rather than a token.
        assert!(!app.is_active(&t, &token).await);
    }

    async fn a_token_one_tenant_has_verified_is_inactive_at_another(app) {
        // Verified tokens are remembered; the memory must not carry one across tenants.
        let acme = app.tenant("acme").await;
        let beta = app.tenant("beta").await;
        let token = app.admin_token(&acme).await;
        assert!(app.is_active(&acme, &token).await);
        assert!(!app.is_active(&beta, &token).await);
    }

    async fn a_deleted_clients_tokens_are_inactive(app) {
        let t = app.tenant("acme").await;
        let other = app.tenant("acme").await;
        let token = app.admin_token(&other).await;
        assert!(app.is_active(&t, &token).await);
        app.authority().delete_client(&t.tenant, &other.admin_id).await.unwrap();
        assert!(!app.is_active(&t, &token).await);
    }
}

impl TestApp {
    fn clock_now(&self) -> i64 {
        use lanyard::domain::Clock;
        self.clock.now()
    }
}
