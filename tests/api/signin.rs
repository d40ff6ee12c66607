//! People's sign-in: one-time codes by mail, the OTP grant, rotating refresh tokens, userinfo.

use std::time::Duration;

use lanyard::authority::NewClient;
use lanyard::domain::GrantType;
use lanyard::domain::ScopeSet;
use serde_json::{Value, json};

use crate::helpers::*;

pub struct Person {
    pub id: UserId,
    pub email: String,
}

/// A user with the given scopes (defined in the tenant first) and a little metadata.
pub async fn person(app: &TestApp, t: &TestTenant, email: &str, scopes: &str) -> Person {
    for scope in scopes.split_whitespace() {
        if !scope.starts_with("lanyard:") {
            let _ = app.authority().create_scope(&t.tenant, scope, None).await;
        }
    }
    let metadata = json!({ "ingest_context": "site-7" });
    let user = app
        .authority()
        .create_user(
            &t.tenant,
            email,
            "Ada Lovelace",
            ScopeSet::parse(scopes).unwrap(),
            metadata.as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    Person {
        id: user.id,
        email: user.email,
    }
}

/// A public app client that may sign people in.
pub async fn app_client(app: &TestApp, t: &TestTenant) -> ClientId {
    app.client(
        t,
        NewClient {
            name: "Energy App".into(),
            public: true,
            ..NewClient::default()
        },
    )
    .await
    .0
}

pub async fn send_otp(app: &TestApp, slug: &str, body: Value) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/t/{slug}/auth/send-otp")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub fn outbox_files(app: &TestApp) -> Vec<std::path::PathBuf> {
    crate::outbox::mails(&app.settings.mailer.dir)
}

/// The newest code mailed to `email`, read from the file mailer's outbox.
pub async fn code_for(app: &TestApp, email: &str, before: usize) -> (String, String) {
    for _ in 0..60 {
        let files = outbox_files(app);
        if files.len() > before {
            let text = std::fs::read_to_string(files.last().unwrap()).unwrap();
            assert!(text.contains(&format!("To: {email}")), "{text}");
            let at = text
                .find(" is your code")
                .unwrap_or_else(|| panic!("no code in {text}"));
            let code = text[at - 6..at].to_owned();
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{text}");
            return (code, text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no mail for {email}");
}

/// Signs `email` in with a mailed code; returns the token response.
pub async fn sign_in(app: &TestApp, slug: &str, client_id: &str, email: &str) -> Value {
    let before = outbox_files(app).len();
    let res = send_otp(app, slug, json!({ "email": email, "client_id": client_id })).await;
    assert_eq!(res.status(), 202);
    let (code, _) = code_for(app, email, before).await;
    let res = redeem(app, slug, client_id, email, &code).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

pub async fn redeem(
    app: &TestApp,
    slug: &str,
    client_id: &str,
    email: &str,
    code: &str,
) -> reqwest::Response {
    app.post_form(
        &format!("/t/{slug}/oauth2/token"),
        None,
        &format!(
            "grant_type={}&client_id={client_id}&email={}&code={code}",
            urlencode("urn:lanyard:params:oauth:grant-type:otp"),
            urlencode(email)
        ),
    )
    .await
}

async fn refresh(app: &TestApp, slug: &str, client_id: &str, token: &str) -> reqwest::Response {
    refresh_with_scope(app, slug, client_id, token, None).await
}

async fn refresh_with_scope(
    app: &TestApp,
    slug: &str,
    client_id: &str,
    token: &str,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut form = format!(
        "grant_type=refresh_token&client_id={client_id}&refresh_token={}",
        urlencode(token)
    );
    if let Some(scope) = scope {
        form.push_str(&format!("&scope={}", urlencode(scope)));
    }
    app.post_form(&format!("/t/{slug}/oauth2/token"), None, &form)
        .await
}

/// A `send-otp` sent from the loopback address `from`.
async fn send_otp_from(app: &TestApp, from: &str, slug: &str, body: Value) -> reqwest::Response {
    reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(app.url(&format!("/t/{slug}/auth/send-otp")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn userinfo(app: &TestApp, slug: &str, token: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/t/{slug}/oauth2/userinfo")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn error_of(res: reqwest::Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_owned()
}

on_both_databases! {
    async fn a_person_signs_in_with_a_mailed_code_and_reads_userinfo(app) {
        let t = app.tenant("acme").await;
        let ada = person(&app, &t, "Ada@Example.com", "sensor:read video:gold").await;
        let client = app_client(&app, &t).await;
        let before = outbox_files(&app).len();
        let res = send_otp(&app, "acme", json!({ "email": "ada@example.com", "client_id": client })).await;
        assert_eq!(res.status(), 202);
        let (code, mail) = code_for(&app, "ada@example.com", before).await;
        assert!(mail.contains("Energy App"), "the mail names the app that asked: {mail}");
        let res = app
            .post_form(
                "/t/acme/oauth2/token",
                None,
                &format!(
                    "grant_type={}&client_id={client}&email=ada%40example.com&code={code}&scope=sensor%3Aread",
                    urlencode("urn:lanyard:params:oauth:grant-type:otp")
                ),
            )
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["scope"], "sensor:read");
        assert!(body["refresh_token"].as_str().is_some_and(|r| r.len() >= 43));
        let access = body["access_token"].as_str().unwrap();
        let claims = verify_with_jwks(access, &app.jwks("acme").await, &format!("{PUBLIC_URL}/t/acme"), "acme");
        assert_eq!(claims["sub"], ada.id.as_str());
        assert_eq!(claims["client_id"], client.as_str());

        let res = userinfo(&app, "acme", access).await;
        assert_eq!(res.status(), 200);
        let info: Value = res.json().await.unwrap();
        assert_eq!(info["sub"], ada.id.as_str());
        assert_eq!(info["email"], ada.email.as_str());
        assert_eq!(info["name"], "Ada Lovelace");
        assert_eq!(info["ingest_context"], "site-7");

        // A client's own token has no person behind it; no token is no answer.
        let client_token = app.admin_token(&t).await;
        let res = userinfo(&app, "acme", &client_token).await;
        assert_eq!(res.status(), 400);
        let res = app.http.get(app.url("/t/acme/oauth2/userinfo")).send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        assert_eq!(userinfo(&app, "acme", "garbage").await.status(), 401);
    }

    async fn asking_for_a_code_tells_nothing_about_who_exists(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let before = outbox_files(&app).len();
        for body in [
            json!({ "email": "nobody@example.com", "client_id": client }),
            json!({ "email": "ada@example.com", "client_id": "no-such-client" }),
        ] {
            let res = send_otp(&app, "acme", body).await;
            assert_eq!(res.status(), 202);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(outbox_files(&app).len(), before, "a mail went to nobody");
        for bad in [
            json!({ "email": "not-an-email", "client_id": client }),
            json!({ "email": "ada@example.com" }),
            json!({ "email": "ada@example.com", "client_id": client, "extra": 1 }),
        ] {
            let res = send_otp(&app, "acme", bad).await;
            assert_eq!(res.status(), 400);
            assert_eq!(error_of(res).await, "invalid_request");
        }
        let res = app.http.post(app.url("/t/acme/auth/send-otp")).body("{").send().await.unwrap();
        assert_eq!(res.status(), 400);
    }

    async fn the_sixth_code_for_one_address_within_fifteen_minutes_is_refused(app) {
        let t = app.tenant("acme").await;
        let client = app_client(&app, &t).await;
        for _ in 0..5 {
            let res = send_otp(&app, "acme", json!({ "email": "x@example.com", "client_id": client })).await;
            assert_eq!(res.status(), 202);
        }
        let res = send_otp(&app, "acme", json!({ "email": "X@example.com", "client_id": client })).await;
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
        let res = send_otp(&app, "acme", json!({ "email": "y@example.com", "client_id": client })).await;
        assert_eq!(res.status(), 202, "another address is not limited");
        app.clock.advance(15 * 60 + 1);
        let res = send_otp(&app, "acme", json!({ "email": "x@example.com", "client_id": client })).await;
        assert_eq!(res.status(), 202, "the window moves on");
    }

    async fn requests_sent_at_once_cannot_slip_past_the_limits(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let body = json!({ "email": "ada@example.com", "client_id": client.to_string() });
        let answers = futures::future::join_all((0..20).map(|_| send_otp(&app, "acme", body.clone()))).await;
        let accepted = answers.iter().filter(|r| r.status() == 202).count();
        let limited = answers.iter().filter(|r| r.status() == 429).count();
        assert_eq!((accepted, limited), (5, 15));
        // And per source: 100 addresses at once from one source, 95 more than it may.
        let answers = futures::future::join_all((0..110).map(|i| {
            send_otp(&app, "acme", json!({ "email": format!("p{i}@example.com"), "client_id": client.to_string() }))
        }))
        .await;
        let accepted = answers.iter().filter(|r| r.status() == 202).count();
        assert_eq!(accepted, 95, "100 per source, 5 of them used above");
    }

    async fn naming_an_app_that_does_not_exist_locks_nobody_out(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let (machine, _) = app.client(&t, NewClient { name: "Gateway".into(), ..NewClient::default() }).await;
        // An attacker names the victim's address with apps that cannot sign anybody in.
        for unusable in ["no-such-client", machine.as_str()] {
            for _ in 0..6 {
                let body = json!({ "email": "ada@example.com", "client_id": unusable });
                assert_eq!(send_otp(&app, "acme", body).await.status(), 202);
            }
        }
        // The victim still gets her code and signs in.
        let tokens = sign_in(&app, "acme", &client, "ada@example.com").await;
        assert!(tokens["access_token"].is_string());
    }

    async fn one_source_asking_for_many_codes_locks_no_other_source_out_of_the_app(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let mut refused = 0;
        for i in 0..201 {
            let body = json!({ "email": format!("user{i}@example.com"), "client_id": client });
            let res = send_otp_from(&app, "127.0.0.3", "acme", body).await;
            match res.status().as_u16() {
                202 => {}
                429 => refused += 1,
                other => panic!("send-otp answered {other}"),
            }
        }
        assert!(refused > 0, "one source asked for 201 codes unhindered");
        // The flooding source is limited, the app is not: a person elsewhere still signs in.
        let before = outbox_files(&app).len();
        let body = json!({ "email": "ada@example.com", "client_id": client });
        assert_eq!(send_otp_from(&app, "127.0.0.4", "acme", body).await.status(), 202);
        let (code, _) = code_for(&app, "ada@example.com", before).await;
        assert_eq!(redeem(&app, "acme", &client, "ada@example.com", &code).await.status(), 200);
    }

    async fn the_newest_of_two_codes_asked_for_within_one_second_works(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        // The test clock stands still: both codes are asked for within one second. Which of
        // two rows of one second came first was once a coin toss; eight rounds make it certain.
        for _ in 0..8 {
            let body = json!({ "email": "ada@example.com", "client_id": client });
            let before = outbox_files(&app).len();
            assert_eq!(send_otp(&app, "acme", body.clone()).await.status(), 202);
            let (older, _) = code_for(&app, "ada@example.com", before).await;
            assert_eq!(send_otp(&app, "acme", body).await.status(), 202);
            let (newest, _) = code_for(&app, "ada@example.com", before + 1).await;
            if older != newest {
                // Asking again replaced the older code.
                let res = redeem(&app, "acme", &client, "ada@example.com", &older).await;
                assert_eq!(error_of(res).await, "invalid_grant", "the replaced code worked");
            }
            let res = redeem(&app, "acme", &client, "ada@example.com", &newest).await;
            assert_eq!(res.status(), 200, "the newest mailed code was refused");
            // Past the per-address window, for the next round.
            app.clock.advance(15 * 60 + 1);
        }
    }

    async fn codes_are_bound_to_their_client_expire_and_die_after_five_wrong_attempts(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let other = app_client(&app, &t).await;

        // Another client cannot redeem it.
        let before = outbox_files(&app).len();
        send_otp(&app, "acme", json!({ "email": "ada@example.com", "client_id": client })).await;
        let (code, _) = code_for(&app, "ada@example.com", before).await;
        let res = redeem(&app, "acme", &other, "ada@example.com", &code).await;
        assert_eq!(error_of(res).await, "invalid_grant");
        // Five wrong attempts kill it.
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            let res = redeem(&app, "acme", &client, "ada@example.com", wrong).await;
            assert_eq!(error_of(res).await, "invalid_grant");
        }
        let res = redeem(&app, "acme", &client, "ada@example.com", &code).await;
        assert_eq!(error_of(res).await, "invalid_grant", "a dead code still worked");

        // A code expires after 10 minutes.
        let before = outbox_files(&app).len();
        send_otp(&app, "acme", json!({ "email": "ada@example.com", "client_id": client })).await;
        let (code, _) = code_for(&app, "ada@example.com", before).await;
        app.clock.advance(601);
        let res = redeem(&app, "acme", &client, "ada@example.com", &code).await;
        assert_eq!(error_of(res).await, "invalid_grant", "an expired code worked");

        // A good code works once.
        let before = outbox_files(&app).len();
        send_otp(&app, "acme", json!({ "email": "ada@example.com", "client_id": client })).await;
        let (code, _) = code_for(&app, "ada@example.com", before).await;
        for bad in ["12345", "abcdef", "1234567"] {
            let res = redeem(&app, "acme", &client, "ada@example.com", bad).await;
            assert_eq!(error_of(res).await, "invalid_grant");
        }
        assert_eq!(redeem(&app, "acme", &client, "ada@example.com", &code).await.status(), 200);
        let res = redeem(&app, "acme", &client, "ada@example.com", &code).await;
        assert_eq!(error_of(res).await, "invalid_grant", "a code worked twice");
    }

    async fn of_concurrent_redemptions_of_one_code_exactly_one_wins(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let before = outbox_files(&app).len();
        send_otp(&app, "acme", json!({ "email": "ada@example.com", "client_id": client })).await;
        let (code, _) = code_for(&app, "ada@example.com", before).await;
        let attempts = (0..8).map(|_| redeem(&app, "acme", &client, "ada@example.com", &code));
        let results = futures::future::join_all(attempts).await;
        let wins = results.iter().filter(|r| r.status() == 200).count();
        assert_eq!(wins, 1, "statuses: {:?}", results.iter().map(|r| r.status()).collect::<Vec<_>>());
    }

    async fn refresh_tokens_rotate_and_a_reused_one_ends_the_sign_in(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "sensor:read").await;
        let client = app_client(&app, &t).await;
        let first = sign_in(&app, "acme", &client, "ada@example.com").await;
        let r1 = first["refresh_token"].as_str().unwrap().to_owned();
        let res = refresh(&app, "acme", &client, &r1).await;
        assert_eq!(res.status(), 200);
        let second: Value = res.json().await.unwrap();
        let r2 = second["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(r1, r2);
        assert_eq!(second["scope"], "sensor:read");
        // Another client cannot use it.
        let other = app_client(&app, &t).await;
        assert_eq!(error_of(refresh(&app, "acme", &other, &r2).await).await, "invalid_grant");
        // Reusing the first one revokes the family: the second dies too.
        assert_eq!(error_of(refresh(&app, "acme", &client, &r1).await).await, "invalid_grant");
        assert_eq!(error_of(refresh(&app, "acme", &client, &r2).await).await, "invalid_grant");
        assert_eq!(error_of(refresh(&app, "acme", &client, "garbage").await).await, "invalid_grant");
    }

    async fn a_client_uses_only_the_grants_it_was_given(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        // A machine client (client_credentials only) cannot redeem a code.
        let (machine, secret) = app.client(&t, NewClient { name: "Gateway".into(), ..NewClient::default() }).await;
        let otp = format!(
            "grant_type={}&email={}&code=123456",
            urlencode("urn:lanyard:params:oauth:grant-type:otp"),
            urlencode("ada@example.com")
        );
        let res = app.post_form("/t/acme/oauth2/token", Some((&machine, &secret)), &otp).await;
        assert_eq!(error_of(res).await, "unauthorized_client");
        // An app that signs people in but may not refresh gets no refresh token, and cannot use
        // another app's.
        let kiosk = NewClient { name: "Kiosk".into(), public: true, grant_types: vec![GrantType::Otp], ..NewClient::default() };
        let (kiosk, _) = app.client(&t, kiosk).await;
        let tokens = sign_in(&app, "acme", &kiosk, "ada@example.com").await;
        assert!(tokens["access_token"].is_string());
        assert!(tokens.get("refresh_token").is_none(), "{tokens}");
        let other = app_client(&app, &t).await;
        let theirs = sign_in(&app, "acme", &other, "ada@example.com").await;
        let r = theirs["refresh_token"].as_str().unwrap();
        assert_eq!(error_of(refresh(&app, "acme", &kiosk, r).await).await, "unauthorized_client");
        assert_eq!(refresh(&app, "acme", &other, r).await.status(), 200);
    }

    async fn a_refresh_narrows_the_scope_and_never_widens_it(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "sensor:read video:gold").await;
        let client = app_client(&app, &t).await;
        let tokens = sign_in(&app, "acme", &client, "ada@example.com").await;
        let r1 = tokens["refresh_token"].as_str().unwrap();
        let res = refresh_with_scope(&app, "acme", &client, r1, Some("sensor:read")).await;
        assert_eq!(res.status(), 200);
        let narrowed: Value = res.json().await.unwrap();
        assert_eq!(narrowed["scope"], "sensor:read");
        let r2 = narrowed["refresh_token"].as_str().unwrap();
        let res = refresh_with_scope(&app, "acme", &client, r2, Some("sensor:read video:gold")).await;
        assert_eq!(error_of(res).await, "invalid_scope");
    }

    async fn a_refresh_refused_for_a_wider_scope_leaves_the_token_good(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "sensor:read video:gold").await;
        let client = app_client(&app, &t).await;
        let tokens = sign_in(&app, "acme", &client, "ada@example.com").await;
        let r1 = tokens["refresh_token"].as_str().unwrap();
        let res = refresh_with_scope(&app, "acme", &client, r1, Some("sensor:read")).await;
        let narrowed: Value = res.json().await.unwrap();
        let r2 = narrowed["refresh_token"].as_str().unwrap();
        let res = refresh_with_scope(&app, "acme", &client, r2, Some("sensor:read video:gold")).await;
        assert_eq!(error_of(res).await, "invalid_scope");
        // The refused request used nothing up: the same token still refreshes, and the
        // sign-in goes on.
        let res = refresh_with_scope(&app, "acme", &client, r2, Some("sensor:read")).await;
        assert_eq!(res.status(), 200);
        let next: Value = res.json().await.unwrap();
        let r3 = next["refresh_token"].as_str().unwrap();
        assert_eq!(refresh(&app, "acme", &client, r3).await.status(), 200);
    }

    async fn of_concurrent_refreshes_exactly_one_succeeds(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let tokens = sign_in(&app, "acme", &client, "ada@example.com").await;
        let r = tokens["refresh_token"].as_str().unwrap().to_owned();
        let results = futures::future::join_all((0..8).map(|_| refresh(&app, "acme", &client, &r))).await;
        let wins = results.iter().filter(|r| r.status() == 200).count();
        assert_eq!(wins, 1, "statuses: {:?}", results.iter().map(|r| r.status()).collect::<Vec<_>>());
    }

    async fn a_refresh_token_can_be_revoked(app) {
        let t = app.tenant("acme").await;
        person(&app, &t, "ada@example.com", "").await;
        let client = app_client(&app, &t).await;
        let tokens = sign_in(&app, "acme", &client, "ada@example.com").await;
        let r = tokens["refresh_token"].as_str().unwrap();
        let res = app
            .post_form(
                "/t/acme/oauth2/revoke",
                None,
                &format!("client_id={client}&token={}&token_type_hint=refresh_token", urlencode(r)),
            )
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(error_of(refresh(&app, "acme", &client, r).await).await, "invalid_grant");
    }
}
