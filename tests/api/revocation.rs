//! Revocation (RFC 7009).

use crate::helpers::*;

async fn revoke(
    app: &TestApp,
    slug: &str,
    id: &str,
    secret: &str,
    token: &str,
) -> reqwest::Response {
    app.post_form(
        &format!("/t/{slug}/oauth2/revoke"),
        Some((id, secret)),
        &format!("token={}&token_type_hint=access_token", urlencode(token)),
    )
    .await
}

fn claims_jti(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

on_both_databases! {
    async fn a_revoked_token_stops_verifying(app) {
        let t = app.tenant("acme").await;
        let device = app.tenant("acme").await; // a second client of the same tenant
        let token = app.admin_token(&device).await;
        assert!(app.is_active(&t, &token).await);
        let res = revoke(&app, "acme", &device.admin_id, &device.admin_secret, &token).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert!(!app.is_active(&t, &token).await);
        // Revoking again, or revoking garbage, is not an error (RFC 7009 §2.2).
        assert_eq!(revoke(&app, "acme", &device.admin_id, &device.admin_secret, &token).await.status(), 200);
        assert_eq!(revoke(&app, "acme", &device.admin_id, &device.admin_secret, "garbage").await.status(), 200);
    }

    async fn revocations_key_changes_and_deletions_are_announced(app) {
        use lanyard::authority::Event;
        let t = app.tenant("acme").await;
        let other = app.tenant("acme").await;
        let mut events = app.authority().subscribe();
        let token = app.admin_token(&t).await;
        revoke(&app, "acme", &t.admin_id, &t.admin_secret, &token).await;
        assert_eq!(
            events.recv().await.unwrap(),
            Event::AccessTokenRevoked { tenant_id: t.tenant.id.to_string(), jti: claims_jti(&token) }
        );
        app.authority().rotate_signing_key(&t.tenant).await.unwrap();
        assert_eq!(events.recv().await.unwrap(), Event::KeysChanged { tenant_id: t.tenant.id.to_string(), slug: "acme".into() });
        app.authority().delete_client(&t.tenant, &other.admin_id).await.unwrap();
        assert_eq!(events.recv().await.unwrap(), Event::ClientDeleted { tenant_id: t.tenant.id.to_string(), client_id: other.admin_id.to_string() });
    }

    async fn revocation_survives_a_restart(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        revoke(&app, "acme", &t.admin_id, &t.admin_secret, &token).await;
        let app = app.restart().await;
        assert!(!app.is_active(&t, &token).await);
    }

    async fn pruning_expired_revocations_keeps_the_others(app) {
        let t = app.tenant("acme").await;
        let early = app.admin_token(&t).await;
        app.clock.advance(1_800);
        let late = app.admin_token(&t).await;
        for token in [&early, &late] {
            assert_eq!(revoke(&app, "acme", &t.admin_id, &t.admin_secret, token).await.status(), 200);
        }
        // The first token has expired (an hour's lifetime), the second has not.
        app.clock.advance(1_801);
        assert_eq!(app.authority().prune_revocations_once().await.unwrap(), 1);
        assert!(!app.is_active(&t, &late).await);
        assert!(!app.is_active(&t, &early).await);
        // A token never presented before is checked against the list read again.
        let fresh = app.admin_token(&t).await;
        assert_eq!(revoke(&app, "acme", &t.admin_id, &t.admin_secret, &fresh).await.status(), 200);
        assert!(!app.is_active(&t, &fresh).await);
        assert!(app.is_active(&t, &app.admin_token(&t).await).await);
    }

    async fn a_client_cannot_revoke_another_clients_token_without_the_admin_scope(app) {
        let t = app.tenant("acme").await;
        let (id, secret) = app
            .client(&t, lanyard::authority::NewClient { name: "plain".into(), ..Default::default() })
            .await;
        let admin_token = app.admin_token(&t).await;
        let res = revoke(&app, "acme", &id, &secret, &admin_token).await;
        assert_eq!(res.status(), 400);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized_client");
        assert!(app.is_active(&t, &admin_token).await);
        // The admin (lanyard:clients:write) may revoke the plain client's token.
        let plain_token = app.token("acme", &id, &secret).await;
        assert_eq!(revoke(&app, "acme", &t.admin_id, &t.admin_secret, &plain_token).await.status(), 200);
        assert!(!app.is_active(&t, &plain_token).await);
    }

    async fn revocation_needs_client_authentication(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        let res = revoke(&app, "acme", &t.admin_id, "wrong", &token).await;
        assert_eq!(res.status(), 401);
        assert!(app.is_active(&t, &token).await);
    }
}
