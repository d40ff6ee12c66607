//! The token endpoint: client_credentials, client authentication, scopes and bad input.

use lanyard::authority::NewClient;
use lanyard::domain::{GrantType, ScopeSet};
use serde_json::Value;

use crate::helpers::*;

async fn error_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.expect("an OAuth error body"))
}

on_both_databases! {
    async fn client_credentials_token_verifies_with_the_jwks_alone(app) {
        let t = app.tenant("acme").await;
        let system = app.authority().create_system(&t.tenant, "Gateway").await.unwrap();
        let (id, secret) = app
            .client(&t, NewClient {
                name: "device".into(),
                system_id: Some(system.clone()),
                ..NewClient::default()
            })
            .await;
        let res = app
            .post_form("/t/acme/oauth2/token", Some((&id, &secret)), "grant_type=client_credentials")
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(res.headers()["pragma"], "no-cache");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        let token = body["access_token"].as_str().unwrap();

        let header = header_of(token);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "at+jwt");
        let issuer = format!("{PUBLIC_URL}/t/acme");
        let claims = verify_with_jwks(token, &app.jwks("acme").await, &issuer, "acme");
        assert_eq!(claims["sub"], id.as_str());
        assert_eq!(claims["client_id"], id.as_str());
        assert_eq!(claims["aud"], "acme");
        assert_eq!(claims["system"], system.as_str());
        assert_eq!(claims["scope"], "");
        let iat = claims["iat"].as_i64().unwrap();
        assert_eq!(claims["nbf"].as_i64().unwrap(), iat);
        assert_eq!(claims["exp"].as_i64().unwrap(), iat + 3600);
        assert!(claims["jti"].as_str().unwrap().len() >= 32);
    }

    async fn basic_and_post_authentication_both_work_but_not_together(app) {
        let t = app.tenant("acme").await;
        let post = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            t.admin_id, t.admin_secret
        );
        let res = app.post_form("/t/acme/oauth2/token", None, &post).await;
        assert_eq!(res.status(), 200);
        let res = app
            .post_form("/t/acme/oauth2/token", Some((&t.admin_id, &t.admin_secret)), &post)
            .await;
        let (status, body) = error_of(res).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
    }

    async fn unknown_client_and_wrong_secret_get_identical_answers(app) {
        let t = app.tenant("acme").await;
        let wrong = app
            .post_form("/t/acme/oauth2/token", Some((&t.admin_id, "not-the-secret")), "grant_type=client_credentials")
            .await;
        let unknown = app
            .post_form("/t/acme/oauth2/token", Some(("nobody", "not-the-secret")), "grant_type=client_credentials")
            .await;
        assert_eq!(wrong.status(), 401);
        assert_eq!(unknown.status(), 401);
        for h in ["www-authenticate", "cache-control", "content-type"] {
            assert_eq!(wrong.headers()[h], unknown.headers()[h], "{h}");
        }
        assert_eq!(wrong.text().await.unwrap(), unknown.text().await.unwrap());
        // No credentials at all is the same failure.
        let none = app.post_form("/t/acme/oauth2/token", None, "grant_type=client_credentials").await;
        assert_eq!(error_of(none).await.1["error"], "invalid_client");
    }

    async fn a_confidential_client_must_present_its_secret(app) {
        let t = app.tenant("acme").await;
        // Its id alone is how a public client identifies itself; a confidential one needs more.
        let id_only = format!("grant_type=client_credentials&client_id={}", t.admin_id);
        let (status, body) = error_of(app.post_form("/t/acme/oauth2/token", None, &id_only).await).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
        let token = app.admin_token(&t).await;
        let introspect = format!("client_id={}&token={token}", t.admin_id);
        let res = app.post_form("/t/acme/oauth2/introspect", None, &introspect).await;
        assert_eq!(res.status(), 401);
    }

    async fn repeated_failed_authentication_is_rate_limited(app) {
        let t = app.tenant("acme").await;
        for _ in 0..10 {
            let res = app
                .post_form("/t/acme/oauth2/token", Some((&t.admin_id, "guess")), "grant_type=client_credentials")
                .await;
            assert_eq!(res.status(), 401);
        }
        // Guessing from this source is slowed down...
        let res = app
            .post_form("/t/acme/oauth2/token", Some((&t.admin_id, "guess")), "grant_type=client_credentials")
            .await;
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
        // ...but the right secret is always accepted, from that source too.
        app.token("acme", &t.admin_id, &t.admin_secret).await;
        // Another client is not affected, and the window passes.
        let other = app.tenant("acme").await;
        app.token("acme", &other.admin_id, &other.admin_secret).await;
        app.clock.advance(61);
        let res = app
            .post_form("/t/acme/oauth2/token", Some((&t.admin_id, "guess")), "grant_type=client_credentials")
            .await;
        assert_eq!(res.status(), 401);
    }

    async fn failed_authentication_in_a_clients_name_locks_it_out_nowhere(app) {
        let t = app.tenant("acme").await;
        let public = app
            .client(&t, NewClient { name: "Energy App".into(), public: true, ..NewClient::default() })
            .await
            .0;
        let from = |ip: &str| {
            reqwest::Client::builder()
                .local_address(ip.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap()
        };
        let attacker = from("127.0.0.5");
        let token_url = app.url("/t/acme/oauth2/token");
        for _ in 0..12 {
            // Wrong secrets for the admin client, and a secret for a public app that has none.
            let res = attacker
                .post(&token_url)
                .basic_auth(&t.admin_id, Some("guess"))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap();
            assert!([401, 429].contains(&res.status().as_u16()));
            let res = attacker
                .post(&token_url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "garbage"),
                    ("client_id", public.as_str()),
                    ("client_secret", "guess"),
                ])
                .send()
                .await
                .unwrap();
            assert!([401, 429].contains(&res.status().as_u16()));
        }
        // From another source both clients are served at once, failures are merely failures.
        let victim = from("127.0.0.6");
        let res = victim
            .post(&token_url)
            .basic_auth(&t.admin_id, Some(&t.admin_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let res = victim
            .post(&token_url)
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "garbage"), ("client_id", public.as_str())])
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(res).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "the app was locked out");
        let res = victim
            .post(&token_url)
            .basic_auth(&t.admin_id, Some("wrong"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        // The public app identifies itself from the attacker's source too.
        let res = attacker
            .post(&token_url)
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "garbage"), ("client_id", public.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    }

    async fn scopes_are_all_allowed_by_default_and_never_more(app) {
        let t = app.tenant("acme").await;
        app.authority().create_scope(&t.tenant, "sensor:read", None).await.unwrap();
        app.authority().create_scope(&t.tenant, "video:gold", None).await.unwrap();
        let (id, secret) = app
            .client(&t, NewClient {
                name: "sensor".into(),
                scopes: ScopeSet::parse("sensor:read").unwrap(),
                ..NewClient::default()
            })
            .await;
        let ask = |scope: &'static str| {
            let (id, secret) = (id.clone(), secret.clone());
            let app = &app;
            async move {
                let body = format!("grant_type=client_credentials&scope={}", urlencode(scope));
                app.post_form("/t/acme/oauth2/token", Some((&id, &secret)), &body).await
            }
        };
        let body: Value = ask("sensor:read").await.json().await.unwrap();
        assert_eq!(body["scope"], "sensor:read");
        let all = app.token("acme", &id, &secret).await;
        let claims = app.introspect(&t, &all).await;
        assert_eq!(claims["scope"], "sensor:read");
        for refused in ["video:gold", "sensor:read video:gold", "lanyard:keys:write", "bad\"scope"] {
            let (status, body) = error_of(ask(refused).await).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{refused}");
        }
    }

    async fn a_public_client_cannot_use_client_credentials(app) {
        let t = app.tenant("acme").await;
        let (id, _) = app
            .client(&t, NewClient { name: "app".into(), public: true, ..NewClient::default() })
            .await;
        let res = app
            .post_form("/t/acme/oauth2/token", None, &format!("grant_type=client_credentials&client_id={id}"))
            .await;
        let (status, body) = error_of(res).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("unauthorized_client")));
        // Nor with a made-up secret.
        let res = app
            .post_form("/t/acme/oauth2/token", Some((&id, "x")), "grant_type=client_credentials")
            .await;
        assert_eq!(res.status(), 401);
    }

    async fn a_client_without_the_grant_type_is_refused(app) {
        let t = app.tenant("acme").await;
        let (id, secret) = app
            .client(&t, NewClient {
                name: "odd".into(),
                grant_types: vec![GrantType::RefreshToken],
                ..NewClient::default()
            })
            .await;
        let res = app
            .post_form("/t/acme/oauth2/token", Some((&id, &secret)), "grant_type=client_credentials")
            .await;
        assert_eq!(error_of(res).await.1["error"], "unauthorized_client");
    }

    async fn bad_requests_get_rfc_errors_never_a_server_error(app) {
        let t = app.tenant("acme").await;
        let creds = Some((t.admin_id.as_str(), t.admin_secret.as_str()));
        for (body, error) in [
            ("", "invalid_request"),
            ("scope=x", "invalid_request"),
            ("grant_type=", "invalid_request"),
            ("grant_type=password", "unsupported_grant_type"),
            ("grant_type=client_credentials&grant_type=client_credentials", "invalid_request"),
            ("grant_type=client_credentials&scope=%FF", "invalid_request"),
            ("grant_type=client%ZZcredentials", "unsupported_grant_type"),
        ] {
            let (status, json) = error_of(app.post_form("/t/acme/oauth2/token", creds, body).await).await;
            assert_eq!((status, json["error"].as_str()), (400, Some(error)), "{body}");
        }
        // Not a form, not UTF-8, too large.
        let url = app.url("/t/acme/oauth2/token");
        let res = app.http.post(&url).json(&serde_json::json!({"grant_type": "client_credentials"})).send().await.unwrap();
        assert_eq!(error_of(res).await, (400, serde_json::json!({"error": "invalid_request", "error_description": "the body must be application/x-www-form-urlencoded"})));
        let res = app.http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'g', b'=', 0xff, 0xfe])
            .send().await.unwrap();
        assert_eq!(error_of(res).await.1["error"], "invalid_request");
        let res = app.http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=client_credentials&pad={}", "x".repeat(1 << 20)))
            .send().await.unwrap();
        let (status, json) = error_of(res).await;
        assert!(status == 400 || status == 413, "{status}");
        assert_eq!(json["error"], "invalid_request");
        // A malformed Basic header.
        let res = app.http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", "Basic !!!")
            .body("grant_type=client_credentials")
            .send().await.unwrap();
        assert_eq!(error_of(res).await.0, 401);
    }

    async fn unknown_tenants_are_404_in_oauth_form(app) {
        for path in ["/t/nope/oauth2/token", "/t/NOT_A_SLUG/oauth2/token"] {
            let (status, body) = error_of(app.post_form(path, Some(("a", "b")), "grant_type=client_credentials").await).await;
            assert_eq!(status, 404);
            assert_eq!(body["error"], "not_found");
        }
        let res = app.http.get(app.url("/t/nope/.well-known/jwks.json")).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }

    async fn health_and_readiness_answer(app) {
        let res = app.http.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let res = app.http.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["database"], "ok");
        assert_eq!(body["broker"], "ok");
    }
}

on_both_databases! {
    async fn a_rotated_client_secret_replaces_the_old_one_at_once(app) {
        let t = app.tenant("acme").await;
        // Used once before, so the server knows the client (and its old secret) already.
        app.admin_token(&t).await;
        let reg = app.authority().rotate_client_secret(&t.tenant, &t.admin_id).await.unwrap();
        let new_secret = reg.client_secret.unwrap();
        assert_ne!(new_secret.expose(), t.admin_secret);
        let res = app
            .post_form("/t/acme/oauth2/token", Some((&t.admin_id, &t.admin_secret)), "grant_type=client_credentials")
            .await;
        assert_eq!(res.status(), 401);
        app.token("acme", &t.admin_id, new_secret.expose()).await;
        // A public client has no secret to rotate; an unknown client is not found.
        let (public_id, _) = app
            .client(&t, NewClient { name: "app".into(), public: true, ..NewClient::default() })
            .await;
        for id in [public_id, ClientId::parse("nobody").unwrap()] {
            let err = app.authority().rotate_client_secret(&t.tenant, &id).await.unwrap_err();
            assert!(matches!(err, lanyard::authority::Error::NotFound(_)), "{id}: {err}");
        }
    }

    async fn client_registration_refuses_what_it_cannot_grant(app) {
        use lanyard::authority::Error;
        let t = app.tenant("acme").await;
        let auth = app.authority();
        auth.create_scope(&t.tenant, "sensor:read", None).await.unwrap();
        assert!(matches!(auth.create_scope(&t.tenant, "sensor:read", None).await, Err(Error::Conflict(_))));
        assert!(matches!(auth.create_scope(&t.tenant, "lanyard:mine", None).await, Err(Error::Invalid(_))));
        assert!(matches!(auth.create_scope(&t.tenant, "lanyard:keys:write", None).await, Err(Error::Invalid(_))));
        assert!(matches!(auth.create_scope(&t.tenant, "has space", None).await, Err(Error::Invalid(_))));

        let new = |scopes: &str| NewClient {
            name: "c".into(),
            scopes: ScopeSet::parse(scopes).unwrap(),
            ..NewClient::default()
        };
        // A scope the tenant never defined.
        assert!(matches!(auth.create_client(&t.tenant, new("video:gold")).await, Err(Error::Invalid(_))));
        // A caller grants only scopes it holds itself.
        let held = client_caller(&t, "lanyard:clients:write sensor:read");
        let escalation = auth.create_client(&held, new("sensor:read lanyard:keys:write")).await;
        assert!(matches!(escalation, Err(Error::Forbidden(_))), "{escalation:?}");
        auth.create_client(&held, new("sensor:read")).await.unwrap();
        // A public client has no secret, so no client_credentials.
        let public_cc = NewClient {
            public: true,
            grant_types: vec![GrantType::ClientCredentials],
            ..new("")
        };
        assert!(matches!(auth.create_client(&t.tenant, public_cc).await, Err(Error::Invalid(_))));
        // A system of another tenant, or none at all, cannot be bound.
        let other = app.tenant("other").await;
        let foreign = auth.create_system(&other.tenant, "Elsewhere").await.unwrap();
        let bound = NewClient { system_id: Some(foreign), ..new("") };
        assert!(matches!(auth.create_client(&t.tenant, bound).await, Err(Error::NotFound(_))));
    }
}
