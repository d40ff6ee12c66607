//! Offline trust (SPEC §10) through its doors: the token status list over HTTP and MQTT, the
//! signed key schedule, and the device's side (`examples/ems_device/trust.rs`) refusing what was
//! tampered with, revoked, expired, or signed by a key it does not trust.

use std::time::Duration;

use lanyard::domain::Clock;
use serde_json::{Value, json};

use crate::graphql::{World, gql, world};
use crate::helpers::*;
use crate::mqtt::{Sub4, V4, device};

#[path = "../../examples/ems_device/trust.rs"]
#[allow(dead_code)]
pub mod trust;
use trust::{StatusList, Trust};

const WAIT: Duration = Duration::from_secs(3);
const MINT: &str = "mutation($s: UUID!, $d: String!) { createLocalApiToken(systemUuid: $s, duration: $d) { jwt uuid } }";
const REVOKE: &str = "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }";

async fn mint(app: &TestApp, w: &World) -> (String, String) {
    let body = gql(
        app,
        Some(&w.user_token),
        MINT,
        json!({ "s": w.system, "d": "1D" }),
    )
    .await;
    let created = &body["data"]["createLocalApiToken"];
    (
        created["uuid"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned(),
        created["jwt"].as_str().unwrap().to_owned(),
    )
}

async fn revoke(app: &TestApp, w: &World, id: &str) {
    let body = gql(app, Some(&w.user_token), REVOKE, json!({ "u": id })).await;
    assert_eq!(
        body["data"]["revokeLocalApiToken"]["status"], "REVOKED",
        "{body}"
    );
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let jwt = token.strip_prefix("CLOUD-").unwrap_or(token);
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn list_uri(w: &World) -> String {
    format!("{}/statuslists/{}", w.t.tenant.issuer, w.system)
}

/// The system's status list over HTTP, as its JWT.
async fn fetch_list(app: &TestApp, slug: &str, system: &str) -> String {
    let res = app
        .http
        .get(app.url(&format!("/t/{slug}/statuslists/{system}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/statuslist+jwt");
    res.text().await.unwrap()
}

async fn fetch_schedule(app: &TestApp, slug: &str) -> String {
    let res = app
        .http
        .get(app.url(&format!("/t/{slug}/.well-known/jwks.jwt")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/jwk-set+jwt");
    res.text().await.unwrap()
}

/// A device that trusts the tenant's JWKS as it is now.
async fn device_trust(app: &TestApp, w: &World) -> Trust {
    Trust::from_jwks(&w.t.tenant.issuer, &app.jwks(&w.t.slug).await).unwrap()
}

async fn believed_list(app: &TestApp, w: &World, trust: &Trust) -> StatusList {
    let jwt = fetch_list(app, &w.t.slug, &w.system).await;
    trust
        .accept_status_list(&jwt, &list_uri(w), app.clock.now(), None)
        .unwrap()
}

on_both_databases! {
    async fn a_retired_key_stays_published_while_local_tokens_it_signed_live(app) {
        let w = world(&app).await;
        let (_, week) = mint(&app, &w).await;
        let kid = header_of(week.strip_prefix("CLOUD-").unwrap())["kid"].as_str().unwrap().to_owned();
        let body = gql(&app, Some(&w.user_token),
            "mutation($s: UUID!) { createPermanentLocalApiToken(systemUuid: $s, name: \"Installer\") { uuid } }",
            json!({ "s": w.system })).await;
        assert!(body["errors"].is_null(), "{body}");
        app.authority().rotate_signing_key(&w.t.tenant).await.unwrap();
        app.clock.advance(601);
        app.authority().maintain_keys_once().await.unwrap();
        // Past the access tokens' lifetime: the key's local tokens still need it.
        app.clock.advance(2 * 3600);
        app.authority().maintain_keys_once().await.unwrap();
        assert!(app.kids(&w.t.slug).await.contains(&kid), "the retired key left the JWKS");
        let schedule = claims_of(&fetch_schedule(&app, &w.t.slug).await);
        let retired = schedule["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap().clone();
        assert_eq!(retired["status"], "RETIRED");
        assert!(retired.get("exp").is_none(), "a permanent token holds it: no exp yet {retired}");
        let trust = device_trust(&app, &w).await;
        let list = believed_list(&app, &w, &trust).await;
        trust.check_token(&week, "CLOUD-", &w.system, Some(&list), &[], app.clock.now()).unwrap();
    }

    async fn a_local_token_points_at_its_systems_list_and_revoking_it_sets_its_bit_for_good(app) {
        let w = world(&app).await;
        let (first, first_jwt) = mint(&app, &w).await;
        let (_, second_jwt) = mint(&app, &w).await;
        for (jwt, idx) in [(&first_jwt, 0), (&second_jwt, 1)] {
            let status = &claims_of(jwt)["status"]["status_list"];
            assert_eq!(status["idx"], idx, "indices are given out in order: {status}");
            assert_eq!(status["uri"], list_uri(&w).as_str());
        }
        let jwt = fetch_list(&app, &w.t.slug, &w.system).await;
        let header = header_of(&jwt);
        assert_eq!(header["typ"], "statuslist+jwt");
        assert_eq!(header["alg"], "RS256");
        // An independent JWT library verifies it with the JWKS.
        let claims = {
            use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, jwk::JwkSet};
            let set: JwkSet = serde_json::from_value(app.jwks(&w.t.slug).await).unwrap();
            let jwk = set.find(header["kid"].as_str().unwrap()).expect("signed by a published key");
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_issuer(&[&w.t.tenant.issuer]);
            validation.validate_aud = false;
            decode::<Value>(&jwt, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims
        };
        assert_eq!(claims["sub"], list_uri(&w).as_str());
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 86_400);
        assert_eq!(claims["ttl"], 86_400);
        let trust = device_trust(&app, &w).await;
        let list = trust.accept_status_list(&jwt, &list_uri(&w), app.clock.now(), None).unwrap();
        assert_eq!((list.is_set(0), list.is_set(1)), (Some(false), Some(false)));

        revoke(&app, &w, &first).await;
        let list = believed_list(&app, &w, &trust).await;
        assert_eq!((list.is_set(0), list.is_set(1)), (Some(true), Some(false)));
        let now = app.clock.now();
        let err = trust.check_token(&first_jwt, "CLOUD-", &w.system, Some(&list), &[], now).unwrap_err();
        assert!(err.contains("revoked"), "{err}");
        trust.check_token(&second_jwt, "CLOUD-", &w.system, Some(&list), &[], now).unwrap();

        // A new token gets the next index, and the revoked bit stays set.
        let (_, third_jwt) = mint(&app, &w).await;
        assert_eq!(claims_of(&third_jwt)["status"]["status_list"]["idx"], 2);
        let list = believed_list(&app, &w, &trust).await;
        assert_eq!(list.is_set(0), Some(true));
        assert_eq!(list.is_set(2), Some(false));
        // After a restart, numbering goes on: never an index given out before.
        let app = app.restart().await;
        let (_, fourth_jwt) = mint(&app, &w).await;
        assert!(claims_of(&fourth_jwt)["status"]["status_list"]["idx"].as_i64().unwrap() > 2);
        assert_eq!(believed_list(&app, &w, &trust).await.is_set(0), Some(true));
    }

    async fn a_status_list_is_only_found_under_its_own_tenant(app) {
        let w = world(&app).await;
        let other = app.tenant("other").await;
        for (slug, system) in [
            (other.slug.as_str(), w.system.as_str()),
            (w.t.slug.as_str(), "8a5d3f0e-0000-4000-8000-000000000000"),
            (w.t.slug.as_str(), "not-a-uuid"),
            ("nobody", w.system.as_str()),
        ] {
            let res = app.http.get(app.url(&format!("/t/{slug}/statuslists/{system}"))).send().await.unwrap();
            assert_eq!(res.status(), 404, "{slug}/{system}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"], "not_found");
        }
    }

    async fn invalidating_a_key_or_deleting_the_person_sets_the_bits_and_reactivating_clears_none(app) {
        let w = world(&app).await;
        let (_, jwt) = mint(&app, &w).await;
        let kid = header_of(jwt.strip_prefix("CLOUD-").unwrap())["kid"].as_str().unwrap().to_owned();
        app.authority().invalidate_signing_key(&w.t.tenant, &kid).await.unwrap();
        let trust = device_trust(&app, &w).await;
        assert_eq!(believed_list(&app, &w, &trust).await.is_set(0), Some(true));
        app.authority().reactivate_signing_key(&w.t.tenant, &kid).await.unwrap();
        assert_eq!(believed_list(&app, &w, &trust).await.is_set(0), Some(true), "a reactivated key's local tokens stay revoked");
        let listed = app.authority().system_local_tokens(&w.t.tenant, &w.system).await.unwrap();
        assert_eq!(listed[0].status, lanyard::authority::LocalTokenStatus::Revoked);

        let (_, jwt) = mint(&app, &w).await;
        let idx = claims_of(&jwt)["status"]["status_list"]["idx"].as_u64().unwrap();
        assert_eq!(believed_list(&app, &w, &trust).await.is_set(idx), Some(false));
        app.authority().delete_user(&w.t.tenant, &w.user).await.unwrap();
        assert_eq!(believed_list(&app, &w, &trust).await.is_set(idx), Some(true));
    }

    async fn the_status_list_is_retained_for_whoever_may_read_the_token_list(app) {
        let w = world(&app).await;
        let (_, jwt) = mint(&app, &w).await;
        let topic = format!("drivr/v1/acme/statuslists/{}", w.system);
        let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
        let mut gw = V4::connect(&app, &id, &token).await.unwrap();
        assert_eq!(gw.subscribe(&topic).await, Sub4::Success(rumqttc::QoS::AtLeastOnce));
        let retained = gw.message(WAIT).await.expect("the retained status list");
        assert!(retained.retain);
        let trust = device_trust(&app, &w).await;
        let now = app.clock.now();
        let list = trust.accept_status_list(std::str::from_utf8(&retained.payload).unwrap(), &list_uri(&w), now, None).unwrap();
        assert_eq!(list.is_set(0), Some(false));
        let id0 = claims_of(&jwt)["jti"].as_str().unwrap().to_owned();
        revoke(&app, &w, &id0).await;
        let update = gw.message(Duration::from_secs(2)).await.expect("a new list within 2 s");
        let list = trust.accept_status_list(std::str::from_utf8(&update.payload).unwrap(), &list_uri(&w), now, None).unwrap();
        assert_eq!(list.is_set(0), Some(true));

        // Another system's device may not read it; a reader of every list may.
        let elsewhere = crate::mqtt::system(&app, &w.t).await;
        let (id, token) = device(&app, &w.t, Some(&elsewhere), "").await;
        let mut stranger = V4::connect(&app, &id, &token).await.unwrap();
        assert_eq!(stranger.subscribe(&topic).await, Sub4::Failure);
        let (id, token) = device(&app, &w.t, None, "lanyard:local-tokens:read").await;
        let mut reader = V4::connect(&app, &id, &token).await.unwrap();
        assert_eq!(reader.subscribe("drivr/v1/acme/statuslists/+").await, Sub4::Success(rumqttc::QoS::AtLeastOnce));
        assert!(reader.message(WAIT).await.is_some());
    }

    async fn a_device_refuses_a_list_that_was_tampered_with_expired_or_signed_by_a_stranger(app) {
        let w = world(&app).await;
        let (first, first_jwt) = mint(&app, &w).await;
        let trust = device_trust(&app, &w).await;
        let now = app.clock.now();
        let uri = list_uri(&w);
        let before = fetch_list(&app, &w.t.slug, &w.system).await;
        // The token list as it stood before the revocation: it still says ACTIVATED.
        let stale_tokens: Vec<Value> = app
            .authority()
            .system_local_tokens(&w.t.tenant, &w.system)
            .await
            .unwrap()
            .iter()
            .map(|t| json!({ "uuid": t.id.as_str(), "status": "ACTIVATED" }))
            .collect();
        app.clock.advance(1);
        revoke(&app, &w, &first).await;
        let after = believed_list(&app, &w, &trust).await;
        let err = trust.check_token(&first_jwt, "CLOUD-", &w.system, Some(&after), &stale_tokens, now).unwrap_err();
        assert!(err.contains("revoked"), "the status list outranks a stale token list: {err}");
        // The list from before the revocation, replayed, is refused: it is older than the one held.
        let err = trust.accept_status_list(&before, &uri, now, Some(&after)).unwrap_err();
        assert!(err.contains("before the list held"), "{err}");
        trust.accept_status_list(&before, &uri, now, None).expect("genuine, only older");

        // The revoked list with its bit cleared again, under its old signature.
        let after_jwt = fetch_list(&app, &w.t.slug, &w.system).await;
        let mut parts: Vec<String> = after_jwt.split('.').map(str::to_owned).collect();
        let mut claims = claims_of(&after_jwt);
        claims["status_list"] = serde_json::from_str::<Value>(&before.split('.').nth(1).map(|p| {
            use base64::Engine;
            String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        }).unwrap()).unwrap()["status_list"].clone();
        {
            use base64::Engine;
            parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        }
        let flipped = parts.join(".");
        let err = trust.accept_status_list(&flipped, &uri, now, None).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");

        // Signed by another tenant's key, or for another system, or expired.
        let other = app.tenant("other").await;
        let other_system = app.authority().create_system(&other.tenant, "Gateway").await.unwrap();
        let foreign = fetch_list(&app, &other.slug, &other_system).await;
        let err = trust.accept_status_list(&foreign, &uri, now, None).unwrap_err();
        assert!(err.contains("does not trust"), "{err}");
        let elsewhere = crate::mqtt::system(&app, &w.t).await;
        let theirs = fetch_list(&app, &w.t.slug, &elsewhere).await;
        let err = trust.accept_status_list(&theirs, &uri, now, None).unwrap_err();
        assert!(err.contains("not "), "{err}");
        let err = trust.accept_status_list(&after_jwt, &uri, app.clock.now() + 86_400, None).unwrap_err();
        assert!(err.contains("expired"), "{err}");
        // A list believed once is not believed past its exp.
        let mut stale = after.clone();
        stale.exp = now;
        let err = trust.check_token(&first_jwt, "CLOUD-", &w.system, Some(&stale), &[], now).unwrap_err();
        assert!(err.contains("the status list expired"), "{err}");
        // A token without a list to judge it by is not accepted.
        let err = trust.check_token(&first_jwt, "CLOUD-", &w.system, None, &stale_tokens, now).unwrap_err();
        assert!(err.contains("no status list"), "{err}");
    }

    async fn a_list_is_signed_again_before_half_its_lifetime_and_at_once_on_a_change(app) {
        let w = world(&app).await;
        // A week: no expiry republishes the lists while the clock moves on a day.
        gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1W" })).await;
        let first = fetch_list(&app, &w.t.slug, &w.system).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(fetch_list(&app, &w.t.slug, &w.system).await, first, "an unchanged list is not signed again");
        app.clock.advance(12 * 3600);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let later = fetch_list(&app, &w.t.slug, &w.system).await;
        assert_ne!(later, first);
        let trust = device_trust(&app, &w).await;
        let list = trust.accept_status_list(&later, &list_uri(&w), app.clock.now(), None).unwrap();
        assert_eq!(list.iat, app.clock.now());
        // Over MQTT too: the sweep republishes what has lived half its lifetime.
        let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
        let mut gw = V4::connect(&app, &id, &token).await.unwrap();
        gw.subscribe(&format!("drivr/v1/acme/statuslists/{}", w.system)).await;
        gw.message(WAIT).await.expect("the retained list");
        app.clock.advance(12 * 3600);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(app.app().mqtt().refresh_status_lists_once().await.unwrap() >= 1);
        // (The gateway's own access token expired meanwhile: it comes back with a new one.)
        assert!(gw.message(WAIT).await.is_none());
        let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
        let mut gw = V4::connect(&app, &id, &token).await.unwrap();
        gw.subscribe(&format!("drivr/v1/acme/statuslists/{}", w.system)).await;
        let fresh = gw.message(WAIT).await.expect("the list signed again");
        let list = trust.accept_status_list(std::str::from_utf8(&fresh.payload).unwrap(), &list_uri(&w), app.clock.now(), None).unwrap();
        assert_eq!(list.iat, app.clock.now());
    }

    async fn a_device_follows_planned_rotations_through_the_key_schedule_and_no_further(app) {
        let w = world(&app).await;
        let mut trust = device_trust(&app, &w).await;
        let now = || app.clock.now();
        let first = fetch_schedule(&app, &w.t.slug).await;
        assert_eq!(header_of(&first)["typ"], "jwk-set+jwt");
        trust.accept_schedule(&first, now()).unwrap();
        let seq = trust.seq.unwrap();
        let claims = claims_of(&first);
        assert_eq!(claims["iss"], w.t.tenant.issuer.as_str());
        assert_eq!(claims["keys"][0]["status"], "ACTIVE");
        let old_kid = claims["keys"][0]["kid"].as_str().unwrap().to_owned();

        // A rotation: the new key appears PENDING, vouched for by the key the device trusts.
        let pending = app.authority().rotate_signing_key(&w.t.tenant).await.unwrap();
        let rotated = fetch_schedule(&app, &w.t.slug).await;
        assert_eq!(header_of(&rotated)["kid"], old_kid.as_str());
        trust.accept_schedule(&rotated, now()).unwrap();
        assert_eq!(trust.seq, Some(seq + 1));
        let keys = &claims_of(&rotated)["keys"];
        let new = keys.as_array().unwrap().iter().find(|k| k["kid"] == pending.kid.as_str()).unwrap();
        assert_eq!(new["status"], "PENDING");
        assert_eq!(new["nbf"], pending.activates_at.unwrap());
        assert!(new.get("exp").is_none());

        // Once it signs, the schedule comes from the new key, which the device already trusts.
        app.clock.advance(601);
        app.authority().maintain_keys_once().await.unwrap();
        let promoted = fetch_schedule(&app, &w.t.slug).await;
        assert_eq!(header_of(&promoted)["kid"], pending.kid.as_str());
        trust.accept_schedule(&promoted, now()).unwrap();
        assert_eq!(trust.seq, Some(seq + 2));
        let keys = &claims_of(&promoted)["keys"];
        let retired = keys.as_array().unwrap().iter().find(|k| k["kid"] == old_kid.as_str()).unwrap();
        assert_eq!(retired["status"], "RETIRED");
        assert!(retired["exp"].as_i64().unwrap() > now());
        // An older schedule, replayed, is refused.
        let err = trust.accept_schedule(&rotated, now()).unwrap_err();
        assert!(err.contains("goes back"), "{err}");

        // An invalidated signer cannot vouch for its successor: the device refuses the
        // schedule signed by a key it never saw, and keeps what it trusted.
        app.authority().invalidate_signing_key(&w.t.tenant, &pending.kid).await.unwrap();
        let after = fetch_schedule(&app, &w.t.slug).await;
        assert_ne!(header_of(&after)["kid"], pending.kid.as_str());
        let err = trust.accept_schedule(&after, now()).unwrap_err();
        assert!(err.contains("does not trust"), "{err}");
        assert_eq!(trust.seq, Some(seq + 2));

        // Every node signs the same number for the same keys.
        let other = lanyard::app::open_authority(app.settings.clone(), std::sync::Arc::new(lanyard::domain::SystemClock)).await.unwrap();
        let theirs = other.key_schedule(&w.t.tenant).await.unwrap();
        assert_eq!(claims_of(&theirs.jwt)["seq"], claims_of(&after)["seq"]);
    }

    async fn the_key_schedule_is_retained_for_every_client_of_the_tenant(app) {
        let w = world(&app).await;
        let (id, token) = device(&app, &w.t, None, "").await;
        let mut v4 = V4::connect(&app, &id, &token).await.unwrap();
        assert_eq!(v4.subscribe("drivr/v1/acme/jwks/signed").await, Sub4::Success(rumqttc::QoS::AtLeastOnce));
        let first = v4.message(WAIT).await.expect("the retained schedule");
        assert_eq!(std::str::from_utf8(&first.payload).unwrap(), fetch_schedule(&app, &w.t.slug).await);
        assert_eq!(v4.subscribe("drivr/v1/other/jwks/signed").await, Sub4::Failure);
        app.authority().rotate_signing_key(&w.t.tenant).await.unwrap();
        let next = v4.message(WAIT).await.expect("the schedule after a rotation");
        assert_eq!(claims_of(std::str::from_utf8(&next.payload).unwrap())["seq"].as_i64(), claims_of(std::str::from_utf8(&first.payload).unwrap())["seq"].as_i64().map(|s| s + 1));
    }
}

#[tokio::test]
async fn an_independent_implementation_of_the_draft_reads_the_same_bits() {
    let Some(python) = interop_python() else {
        return;
    };
    let app = reachable_app().await;
    let w = world(&app).await;
    let mut valid = Vec::new();
    let mut revoked = Vec::new();
    for n in 0..12 {
        let (id, jwt) = mint(&app, &w).await;
        if n % 3 == 1 {
            revoke(&app, &w, &id).await;
            revoked.push(jwt);
        } else {
            valid.push(jwt);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (valid_file, revoked_file) = (dir.path().join("valid"), dir.path().join("revoked"));
    std::fs::write(&valid_file, valid.join("\n")).unwrap();
    std::fs::write(&revoked_file, revoked.join("\n")).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/status_list.py");
    let run = |args: Vec<std::ffi::OsString>| {
        let python = python.clone();
        async move {
            tokio::process::Command::new(python)
                .arg(script)
                .args(args)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec![
        "--issuer".into(),
        w.t.tenant.issuer.clone().into(),
        "--valid".into(),
        valid_file.clone().into(),
        "--revoked".into(),
        revoked_file.clone().into(),
    ])
    .await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("OK 12 tokens checked"), "{said}");
    // The same decoder tells a revoked token from a valid one: swapped, every token fails.
    let out = run(vec![
        "--issuer".into(),
        w.t.tenant.issuer.clone().into(),
        "--valid".into(),
        revoked_file.into(),
        "--revoked".into(),
        valid_file.into(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The `ems_device` example, as `cargo test` builds it next to the test binaries.
fn ems_device() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples/ems_device");
    path.exists().then_some(path)
}

#[tokio::test]
async fn a_device_offline_during_a_revocation_refuses_the_token_once_back_from_the_status_list() {
    let Some(device_bin) = ems_device() else {
        skipped(
            "the ems_device example is not built: run `cargo test` (it builds the examples) or `cargo build --example ems_device`",
        );
        return;
    };
    let app = reachable_app().await;
    let w = world(&app).await;
    let (gateway, secret) = app
        .client(
            &w.t,
            lanyard::authority::NewClient {
                name: "gateway".into(),
                grant_types: vec![lanyard::domain::GrantType::ClientCredentials],
                system_id: Some(w.system.clone()),
                ..Default::default()
            },
        )
        .await;
    let (id, token) = mint(&app, &w).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("gateway.json");
    let run = |offline: bool| {
        let mut cmd = tokio::process::Command::new(&device_bin);
        cmd.env("ISSUER", &w.t.tenant.issuer)
            .env("MQTT", app.mqtt_addr().to_string())
            .env("CLIENT_ID", gateway.as_str())
            .env("CLIENT_SECRET", &secret)
            .arg("--state")
            .arg(&state);
        if offline {
            cmd.arg("--offline");
        }
        cmd.arg(&token);
        async move {
            let out = cmd.output().await.unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code(), said)
        }
    };
    let (code, said) = run(false).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("ACCEPTED: Ada Lovelace"), "{said}");
    // Offline, it cannot know of the revocation.
    revoke(&app, &w, &id).await;
    let (code, said) = run(true).await;
    assert_eq!(code, Some(0), "{said}");
    // Back online: the new status list refuses it.
    let (code, said) = run(false).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("REFUSED: revoked (bit 0 of the status list is set)"),
        "{said}"
    );
    // A token list tampered back to ACTIVATED changes nothing: the signed list decides.
    let mut kept: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    for entry in kept["token_list"].as_array_mut().unwrap() {
        entry["status"] = "ACTIVATED".into();
    }
    std::fs::write(&state, kept.to_string()).unwrap();
    let (code, said) = run(true).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("REFUSED: revoked"), "{said}");
}

/// The upgrade to status lists, on a database that already holds tokens: each system's tokens
/// are numbered in the order they were minted, and the tokens of a key no longer published are
/// revoked for good. Run on SQLite, and on PostgreSQL when `TEST_POSTGRES_URL` is set.
#[tokio::test]
async fn tokens_minted_before_status_lists_are_numbered_by_the_upgrade() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}?mode=rwc",
        database_url(&Backend::Sqlite, dir.path()).await
    );
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    upgrade_old_rows!(db, "sqlite");
    if let Some(backend) = Backend::postgres_from_env() {
        let url = database_url(&backend, dir.path()).await;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        upgrade_old_rows!(db, "postgres");
    }
}

/// Applies the migrations before status lists to `$db`, writes tokens as they were then, applies
/// the upgrade and checks what it did; the same on both databases.
macro_rules! upgrade_old_rows {
    ($db:ident, $name:literal) => {{
        let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let (before, upgrade): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|f| f.file_name().unwrap().to_str().unwrap() < "0009");
        for file in &before {
            sqlx::raw_sql(&std::fs::read_to_string(file).unwrap()).execute(&mut $db).await.unwrap();
        }
        sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ('t', 'acme', 'Acme', 1)")
            .execute(&mut $db).await.unwrap();
        sqlx::query("INSERT INTO systems (id, tenant_id, name, created_at) VALUES ('s1', 't', 'One', 1), ('s2', 't', 'Two', 1)")
            .execute(&mut $db).await.unwrap();
        for (kid, status) in [("live", "ACTIVE"), ("gone", "INVALIDATED")] {
            sqlx::query("INSERT INTO signing_keys (kid, tenant_id, status, public_n, public_e, sealed_private_key, created_at, updated_at) VALUES ($1, 't', $2, 'n', 'e', $3, 1, 1)")
                .bind(kid).bind(status).bind(vec![0u8]).execute(&mut $db).await.unwrap();
        }
        // id, system, key, status, created_at
        let tokens = [
            ("b", "s1", "live", "REVOKED", 100),
            ("a", "s1", "live", "ACTIVATED", 100),
            ("c", "s1", "gone", "ACTIVATED", 50),
            ("d", "s1", "deleted", "ACTIVATED", 200),
            ("e", "s2", "live", "ACTIVATED", 10),
        ];
        for (id, system, kid, status, at) in tokens {
            sqlx::query("INSERT INTO local_api_tokens (id, tenant_id, system_id, user_id, user_name, roles, kid, token, status, not_before, created_at, updated_at) VALUES ($1, 't', $2, 'u', 'Ada', '[]', $3, 'CLOUD-x', $4, $5, $5, $5)")
                .bind(id).bind(system).bind(kid).bind(status).bind(at as i64)
                .execute(&mut $db).await.unwrap();
        }
        for file in &upgrade {
            sqlx::raw_sql(&std::fs::read_to_string(file).unwrap()).execute(&mut $db).await.unwrap();
        }
        let rows: Vec<(String, i64, String)> = sqlx::query_as("SELECT id, status_idx, status FROM local_api_tokens ORDER BY id")
            .fetch_all(&mut $db).await.unwrap();
        let rows: Vec<(&str, i64, &str)> = rows.iter().map(|(i, x, s)| (i.as_str(), *x, s.as_str())).collect();
        assert_eq!(rows, vec![
            ("a", 1, "ACTIVATED"),
            ("b", 2, "REVOKED"),
            ("c", 0, "REVOKED"), // its key was invalidated
            ("d", 3, "REVOKED"), // its key was deleted
            ("e", 0, "ACTIVATED"),
        ], $name);
        let next: Vec<(String, i64)> = sqlx::query_as("SELECT id, status_list_next FROM systems ORDER BY id")
            .fetch_all(&mut $db).await.unwrap();
        assert_eq!(next, vec![("s1".to_owned(), 4), ("s2".to_owned(), 1)], $name);
    }};
}
use upgrade_old_rows;

#[tokio::test]
async fn a_device_refuses_an_older_list_signed_in_the_same_second() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let (a, _) = mint(&app, &w).await;
    let (b, _) = mint(&app, &w).await;
    let trust = device_trust(&app, &w).await;
    revoke(&app, &w, &a).await;
    let first = fetch_list(&app, &w.t.slug, &w.system).await;
    revoke(&app, &w, &b).await;
    let held = believed_list(&app, &w, &trust).await;
    assert_eq!((held.is_set(0), held.is_set(1)), (Some(true), Some(true)));
    // The clock has not moved: both lists carry the same iat.
    assert_eq!(claims_of(&first)["iat"], held.iat);
    let err = trust
        .accept_status_list(&first, &list_uri(&w), app.clock.now(), Some(&held))
        .unwrap_err();
    assert!(err.contains("clears bit 1"), "{err}");
}

#[tokio::test]
async fn a_token_minted_with_a_key_invalidated_meanwhile_is_not_minted() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let (_, jwt) = mint(&app, &w).await;
    let kid = header_of(jwt.strip_prefix("CLOUD-").unwrap())["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another node invalidates the key; this one still signs with it for a moment (its keyring
    // is read again within seconds).
    let other = lanyard::app::open_authority(
        app.settings.clone(),
        std::sync::Arc::new(lanyard::domain::SystemClock),
    )
    .await
    .unwrap();
    other
        .invalidate_signing_key(&w.t.tenant, &kid)
        .await
        .unwrap();
    let body = gql(
        &app,
        Some(&w.user_token),
        MINT,
        json!({ "s": w.system, "d": "1D" }),
    )
    .await;
    if body["errors"].is_null() {
        // The keyring had been read again already: the token is signed by the new key.
        let jwt = body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap();
        assert_ne!(
            header_of(jwt.strip_prefix("CLOUD-").unwrap())["kid"],
            kid.as_str()
        );
    } else {
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "CONFLICT",
            "{body}"
        );
    }
    // Whatever happened, no token of that key is live.
    let listed = app
        .authority()
        .system_local_tokens(&w.t.tenant, &w.system)
        .await
        .unwrap();
    let db = app.authority().db().clone();
    let lanyard::store::Db::Sqlite { reader, .. } = &db else {
        unreachable!()
    };
    let live: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM local_api_tokens WHERE kid = $1 AND status = 'ACTIVATED'")
            .bind(&kid)
            .fetch_all(&mut *reader.acquire().await.unwrap())
            .await
            .unwrap();
    assert!(
        live.is_empty(),
        "live tokens of an invalidated key: {live:?} ({} listed)",
        listed.len()
    );
}
