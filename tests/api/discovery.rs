//! RFC 8414 metadata and the JWKS.

use serde_json::Value;

use crate::helpers::*;

on_both_databases! {
    async fn metadata_is_served_at_both_well_known_paths(app) {
        app.tenant("acme").await;
        let mut docs = Vec::new();
        for path in ["openid-configuration", "oauth-authorization-server"] {
            let res = app.http.get(app.url(&format!("/t/acme/.well-known/{path}"))).send().await.unwrap();
            assert_eq!(res.status(), 200);
            docs.push(res.json::<Value>().await.unwrap());
        }
        assert_eq!(docs[0], docs[1]);
        let issuer = format!("{PUBLIC_URL}/t/acme");
        assert_eq!(docs[0]["issuer"], issuer.as_str());
        assert_eq!(docs[0]["token_endpoint"], format!("{issuer}/oauth2/token"));
        assert_eq!(docs[0]["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
        assert_eq!(docs[0]["introspection_endpoint"], format!("{issuer}/oauth2/introspect"));
        assert_eq!(docs[0]["revocation_endpoint"], format!("{issuer}/oauth2/revoke"));
        assert!(docs[0]["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&"client_secret_basic".into()));
        assert!(docs[0]["grant_types_supported"].as_array().unwrap().contains(&"client_credentials".into()));
    }

    async fn jwks_is_cacheable_and_holds_no_private_member(app) {
        app.tenant("acme").await;
        let res = app.http.get(app.url("/t/acme/.well-known/jwks.json")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["cache-control"].to_str().unwrap().contains("max-age="));
        let jwks: Value = res.json().await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let key = keys[0].as_object().unwrap();
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(!key.contains_key(member), "{member}");
        }
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["e"], "AQAB");
        // 2048-bit modulus: 256 bytes, 342 base64url characters.
        assert_eq!(key["n"].as_str().unwrap().len(), 342);
    }

    async fn tenants_have_their_own_keys_and_issuers(app) {
        let a = app.tenant("tenant-a").await;
        let b = app.tenant("tenant-b").await;
        assert_ne!(app.kids("tenant-a").await, app.kids("tenant-b").await);
        let token_b = app.admin_token(&b).await;
        // tenant-a does not accept tenant-b's token, though it is genuine.
        assert!(!app.is_active(&a, &token_b).await);
        assert!(app.is_active(&b, &token_b).await);
    }
}
