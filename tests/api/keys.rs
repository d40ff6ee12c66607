//! The signing-key lifecycle (SPEC §5), driven through the one-step job function.

use lanyard::authority::Error;
use lanyard::domain::KeyStatus;

use crate::helpers::*;

fn kid_of(token: &str) -> String {
    header_of(token)["kid"].as_str().unwrap().to_owned()
}

on_both_databases! {
    async fn a_rotated_key_is_published_ahead_and_signs_only_after(app) {
        let t = app.tenant("acme").await;
        let auth = app.authority();
        let old_token = app.admin_token(&t).await;
        let old_kid = kid_of(&old_token);

        let pending = auth.rotate_signing_key(&t.tenant).await.unwrap();
        assert_eq!(pending.status, KeyStatus::Pending);
        let mut published = app.kids("acme").await;
        published.sort();
        let mut expected = vec![old_kid.clone(), pending.kid.clone()];
        expected.sort();
        assert_eq!(published, expected);
        // Published, but not signing yet.
        assert_eq!(kid_of(&app.admin_token(&t).await), old_kid);
        app.clock.advance(599);
        auth.maintain_keys_once().await.unwrap();
        assert_eq!(kid_of(&app.admin_token(&t).await), old_kid);
        // A second rotation while one is pending is refused.
        assert!(matches!(auth.rotate_signing_key(&t.tenant).await, Err(Error::Conflict(_))));

        app.clock.advance(1);
        auth.maintain_keys_once().await.unwrap();
        let new_token = app.admin_token(&t).await;
        assert_eq!(kid_of(&new_token), pending.kid);
        let keys = auth.signing_keys(&t.tenant).await.unwrap();
        let status = |kid: &str| keys.iter().find(|k| k.kid == kid).unwrap().status;
        assert_eq!(status(&old_kid), KeyStatus::Retired);
        assert_eq!(status(&pending.kid), KeyStatus::Active);
        // The retired key still verifies what it signed, for a JWKS-only verifier too.
        assert!(app.is_active(&t, &old_token).await);
        let issuer = format!("{PUBLIC_URL}/t/acme");
        verify_with_jwks(&old_token, &app.jwks("acme").await, &issuer, "acme");
        verify_with_jwks(&new_token, &app.jwks("acme").await, &issuer, "acme");
    }

    async fn a_retired_key_leaves_the_jwks_once_its_tokens_have_expired(app) {
        let t = app.tenant("acme").await;
        let auth = app.authority();
        let old_kid = app.kids("acme").await[0].clone();
        auth.rotate_signing_key(&t.tenant).await.unwrap();
        app.clock.advance(600);
        auth.maintain_keys_once().await.unwrap();
        // access_token_ttl (1h) plus a minute's margin.
        app.clock.advance(3600 + 60);
        auth.maintain_keys_once().await.unwrap();
        assert!(app.kids("acme").await.contains(&old_kid));
        app.clock.advance(1);
        auth.maintain_keys_once().await.unwrap();
        assert!(!app.kids("acme").await.contains(&old_kid));
    }

    async fn keys_rotate_by_themselves_after_the_interval(app) {
        let t = app.tenant("acme").await;
        let auth = app.authority();
        let first = app.kids("acme").await;
        // The rotation starts publish-ahead before the 90 days are up ...
        app.clock.advance(90 * 86_400 - 600 - 1);
        auth.maintain_keys_once().await.unwrap();
        assert_eq!(app.kids("acme").await, first);
        app.clock.advance(1);
        auth.maintain_keys_once().await.unwrap();
        let keys = auth.signing_keys(&t.tenant).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].status, KeyStatus::Pending);
        // ... and the new key signs when they are.
        app.clock.advance(600);
        auth.maintain_keys_once().await.unwrap();
        assert_eq!(kid_of(&app.admin_token(&t).await), keys[1].kid);
    }

    async fn invalidating_the_signer_withdraws_it_at_once_and_a_new_key_signs(app) {
        let t = app.tenant("acme").await;
        let auth = app.authority();
        let token = app.admin_token(&t).await;
        let kid = kid_of(&token);
        let key = auth.invalidate_signing_key(&t.tenant, &kid).await.unwrap();
        assert_eq!(key.status, KeyStatus::Invalidated);
        assert!(!app.kids("acme").await.contains(&kid));
        assert!(!app.is_active(&t, &token).await);
        let fresh = app.admin_token(&t).await;
        assert_ne!(kid_of(&fresh), kid);
        assert!(app.is_active(&t, &fresh).await);

        // Reactivation publishes it again (RETIRED: it verifies, it does not sign).
        let key = auth.reactivate_signing_key(&t.tenant, &kid).await.unwrap();
        assert_eq!(key.status, KeyStatus::Retired);
        assert!(app.kids("acme").await.contains(&kid));
        assert!(app.is_active(&t, &token).await);
        assert_ne!(kid_of(&app.admin_token(&t).await), kid);

        // Deletion is final; the signer cannot be deleted.
        auth.delete_signing_key(&t.tenant, &kid).await.unwrap();
        assert!(!app.kids("acme").await.contains(&kid));
        assert!(!app.is_active(&t, &token).await);
        assert!(matches!(auth.reactivate_signing_key(&t.tenant, &kid).await, Err(Error::NotFound(_))));
        let signer = kid_of(&app.admin_token(&t).await);
        assert!(matches!(auth.delete_signing_key(&t.tenant, &signer).await, Err(Error::Conflict(_))));
    }

    async fn invalidating_the_signer_promotes_a_pending_key(app) {
        let t = app.tenant("acme").await;
        let auth = app.authority();
        let old = app.kids("acme").await[0].clone();
        let pending = auth.rotate_signing_key(&t.tenant).await.unwrap();
        auth.invalidate_signing_key(&t.tenant, &old).await.unwrap();
        assert_eq!(kid_of(&app.admin_token(&t).await), pending.kid);
        assert_eq!(app.kids("acme").await, vec![pending.kid]);
    }

    async fn concurrent_key_jobs_never_make_two_signers(app) {
        let t = app.tenant("acme").await;
        let auth = app.authority();
        auth.rotate_signing_key(&t.tenant).await.unwrap();
        app.clock.advance(600);
        let (a, b, c) = tokio::join!(auth.maintain_keys_once(), auth.maintain_keys_once(), auth.maintain_keys_once());
        assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 1);
        let active = auth.signing_keys(&t.tenant).await.unwrap().into_iter().filter(|k| k.status == KeyStatus::Active).count();
        assert_eq!(active, 1);
    }

    async fn keys_survive_a_restart_sealed(app) {
        let t = app.tenant("acme").await;
        let token = app.admin_token(&t).await;
        let app = app.restart().await;
        assert!(app.is_active(&t, &token).await);
        assert_eq!(kid_of(&app.admin_token(&t).await), kid_of(&token));
    }
}
