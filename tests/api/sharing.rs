//! Sharing a system between people (SPEC §11), through GraphQL, userinfo and the system's
//! retained list: Ada holds a role on the gateway and lets Bianca mint tokens for it.

use std::time::Duration;

use lanyard::domain::Clock;
use serde_json::{Value, json};

use crate::graphql::{World, claims_of, code, gql, world};
use crate::helpers::*;
use crate::mqtt::{V4, device};
use crate::signin::{app_client, sign_in};

const WAIT: Duration = Duration::from_secs(3);
const SHARE: &str = "mutation($s: UUID!, $e: String!, $r: [UUID!]!, $x: DateTime) {
    shareSystem(systemUuid: $s, email: $e, roleUuids: $r, expiresAt: $x) {
        uuid systemUuid owner { uuid name } recipient { uuid name } roles { uuid name } expiresAt } }";
const MINT: &str = "mutation($s: UUID!, $d: String!, $sh: UUID) {
    createLocalApiToken(systemUuid: $s, duration: $d, shareUuid: $sh) { jwt uuid } }";
const REVOKE: &str = "mutation($u: UUID!) { revokeShare(uuid: $u) { uuid revokedAt } }";

/// Bianca, a person of the tenant with no role of her own, signed in.
struct Bianca {
    id: String,
    token: String,
}

async fn bianca(app: &TestApp, w: &World) -> Bianca {
    let user = app
        .authority()
        .create_user(
            &w.t.tenant,
            "bianca@example.com",
            "Bianca",
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let client = app_client(app, &w.t).await;
    let tokens = sign_in(app, "acme", &client, "bianca@example.com").await;
    Bianca {
        id: user.id.to_string(),
        token: tokens["access_token"].as_str().unwrap().to_owned(),
    }
}

/// Ada shares her role with Bianca, until `expires` when given; returns the share.
async fn share(app: &TestApp, w: &World, expires: Option<&str>) -> Value {
    let body = gql(
        app,
        Some(&w.user_token),
        SHARE,
        json!({ "s": w.system, "e": "bianca@example.com", "r": [w.role], "x": expires }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["shareSystem"].clone()
}

async fn mint(app: &TestApp, token: &str, w: &World, share: Option<&str>) -> Value {
    gql(
        app,
        Some(token),
        MINT,
        json!({ "s": w.system, "d": "1D", "sh": share }),
    )
    .await
}

fn list_topic(system: &str) -> String {
    format!("drivr/v1/acme/authorization/localApiTokens/{system}")
}

async fn next_list(v4: &mut V4) -> Value {
    let msg = v4.message(WAIT).await.expect("a list");
    serde_json::from_slice(&msg.payload).unwrap()
}

/// The system's own device, subscribed to its list, past the current one.
async fn gateway(app: &TestApp, w: &World) -> V4 {
    let (id, token) = device(app, &w.t, Some(&w.system), "").await;
    let mut v4 = V4::connect(app, &id, &token).await.unwrap();
    v4.subscribe(&list_topic(&w.system)).await;
    next_list(&mut v4).await;
    v4
}

async fn userinfo(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .get(app.url("/t/acme/oauth2/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn status_list_bit(app: &TestApp, w: &World, jwt: &str) -> bool {
    let raw = jwt.strip_prefix("CLOUD-").unwrap();
    let idx = claims_of(raw)["status"]["status_list"]["idx"]
        .as_u64()
        .unwrap();
    let list = app
        .http
        .get(app.url(&format!("/t/acme/statuslists/{}", w.system)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let trust =
        crate::offline_trust::trust::Trust::from_jwks(&w.t.tenant.issuer, &app.jwks("acme").await)
            .unwrap();
    let uri = format!("{}/statuslists/{}", w.t.tenant.issuer, w.system);
    let list = trust
        .accept_status_list(&list, &uri, app.clock.now(), None)
        .unwrap();
    list.is_set(idx).unwrap()
}

on_both_databases! {
    async fn a_recipient_mints_in_the_sharers_name_and_the_device_sees_who_acts_for_whom(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        let mut gw = gateway(&app, &w).await;
        let shared = share(&app, &w, None).await;
        assert_eq!(shared["owner"]["uuid"], w.user.as_str());
        assert_eq!(shared["recipient"], json!({ "uuid": b.id, "name": "Bianca" }));
        assert_eq!(shared["roles"], json!([{ "uuid": w.role, "name": "Domain Owner" }]));
        let share_id = shared["uuid"].as_str().unwrap();

        let body = mint(&app, &b.token, &w, None).await;
        assert!(body["errors"].is_null(), "{body}");
        let jwt = body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap();
        let claims = claims_of(jwt.strip_prefix("CLOUD-").unwrap());
        assert_eq!(claims["sub"], w.user.as_str(), "the sharer is the subject");
        assert_eq!(claims["name"], "Ada Lovelace");
        assert_eq!(claims["act"], json!({ "sub": b.id, "name": "Bianca" }));
        assert_eq!(claims["roles"], json!([{ "uuid": w.role, "name": "Domain Owner" }]));

        let list = next_list(&mut gw).await;
        let entry = &list[0];
        assert_eq!(entry["actor"], json!({ "uuid": b.id, "name": "Bianca", "type": "USER" }));
        assert_eq!(entry["share"], share_id);
        assert_eq!(entry["subject"]["uuid"], w.user.as_str());

        let me = gql(&app, Some(&b.token), "{ me { sharesReceived { uuid owner { name } roles { name } } } }", json!({})).await;
        assert_eq!(me["data"]["me"]["sharesReceived"][0]["uuid"], share_id, "{me}");
        let shares = gql(&app, Some(&w.user_token), "query($s: UUID!) { shares(systemUuid: $s) { uuid recipient { name } } }", json!({ "s": w.system })).await;
        assert_eq!(shares["data"]["shares"][0]["recipient"]["name"], "Bianca", "{shares}");
        // Bianca holds no role there: the shares are not hers to list, nor the tokens.
        let shares = gql(&app, Some(&b.token), "query($s: UUID!) { shares(systemUuid: $s) { uuid } }", json!({ "s": w.system })).await;
        assert_eq!(code(&shares), "FORBIDDEN");
        let tokens = gql(&app, Some(&b.token), "query($s: UUID!) { localApiTokens(systemUuid: $s) { uuid actor { uuid type } shareUuid } }", json!({ "s": w.system })).await;
        assert_eq!(code(&tokens), "FORBIDDEN");
        let tokens = gql(&app, Some(&w.user_token), "query($s: UUID!) { localApiTokens(systemUuid: $s) { uuid actor { uuid type } shareUuid } }", json!({ "s": w.system })).await;
        assert_eq!(tokens["data"]["localApiTokens"][0]["actor"], json!({ "uuid": b.id, "type": "USER" }));
        assert_eq!(tokens["data"]["localApiTokens"][0]["shareUuid"], share_id);
    }

    async fn userinfo_carries_a_delegation_that_can_only_mint_under_its_share(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        let shared = share(&app, &w, None).await;
        let info: Value = userinfo(&app, &b.token).await.json().await.unwrap();
        let delegation = &info["delegations"][0];
        assert_eq!(delegation["share"], shared["uuid"]);
        assert_eq!(delegation["owner"]["sub"], w.user.as_str());
        assert_eq!(delegation["system"], w.system.as_str());
        assert_eq!(delegation["roles"][0]["uuid"], w.role.as_str());
        assert!(delegation["expires_at"].is_null());
        assert_eq!(delegation["expires_in"], 300);
        let token = delegation["access_token"].as_str().unwrap();
        let claims = claims_of(token);
        assert_eq!(claims["sub"], w.user.as_str());
        assert_eq!(claims["act"]["sub"], b.id.as_str());
        assert_eq!(claims["system"], w.system.as_str());
        assert_eq!(claims["scope"], "lanyard:local-tokens:mint");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);

        // Asked again, userinfo hands out the same token while it has a minute to live.
        let again: Value = userinfo(&app, &b.token).await.json().await.unwrap();
        assert_eq!(again["delegations"][0]["access_token"], token);
        app.clock.advance(241);
        let later: Value = userinfo(&app, &b.token).await.json().await.unwrap();
        assert_ne!(later["delegations"][0]["access_token"], token, "a new one when it has less");
        assert_eq!(later["delegations"][0]["expires_in"], 300);
        let token = later["delegations"][0]["access_token"].as_str().unwrap().to_owned();
        let token = token.as_str();
        // Its audit event names Bianca, who asked for it.
        let events = gql(&app, Some(&w.admin_token), "{ auditEvents(limit: 500) { actor action target } }", json!({})).await;
        let issued: Vec<&Value> = events["data"]["auditEvents"].as_array().unwrap().iter()
            .filter(|e| e["target"].as_str().unwrap().contains("(delegation)")).collect();
        assert_eq!(issued.len(), 2, "one event per token signed: {issued:?}");
        assert!(issued[0]["actor"].as_str().unwrap().starts_with(&format!("user:{} via client:", b.id)), "{issued:?}");
        // Its one purpose works, under its own share only.
        let other_share = share(&app, &w, None).await;
        let body = mint(&app, token, &w, other_share["uuid"].as_str()).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = mint(&app, token, &w, None).await;
        assert!(body["errors"].is_null(), "{body}");
        let minted = claims_of(body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap().strip_prefix("CLOUD-").unwrap());
        assert_eq!(minted["act"]["sub"], b.id.as_str());
        // Nothing else does: another system, the sharer's own business, other doors.
        let other = app.authority().create_system(&w.t.tenant, "Other").await.unwrap();
        app.authority().assign_role(&w.t.tenant, &w.user, &other, &w.role).await.unwrap();
        let body = gql(&app, Some(token), MINT, json!({ "s": other, "d": "1D", "sh": null })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        for query in [
            "query($s: UUID!) { localApiTokens(systemUuid: $s) { uuid } }",
            "query($s: UUID!) { shares(systemUuid: $s) { uuid } }",
            "query($s: UUID!) { me { sub roles(systemUuid: $s) { uuid } } }",
        ] {
            let body = gql(&app, Some(token), query, json!({ "s": w.system })).await;
            assert_eq!(code(&body), "FORBIDDEN", "{query}: {body}");
        }
        let body = gql(&app, Some(token), SHARE, json!({ "s": w.system, "e": "bianca@example.com", "r": [w.role] })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        assert_eq!(userinfo(&app, token).await.status(), 401);
        let res = app.http.get(app.url("/t/acme/validate")).bearer_auth(token).send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert!(!app.is_active(&w.t, token).await, "introspection calls it inactive");
        let (id, _) = device(&app, &w.t, None, "").await;
        assert!(V4::connect(&app, &id, token).await.is_err(), "it opens no MQTT session");
        // Revoked on its own by its client (RFC 7009), it stops, and userinfo hands out another.
        let client = claims_of(token)["client_id"].as_str().unwrap().to_owned();
        let res = app.post_form("/t/acme/oauth2/revoke", None, &format!("client_id={client}&token={token}")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(code(&mint(&app, token, &w, None).await), "UNAUTHENTICATED");
        let fresh: Value = userinfo(&app, &b.token).await.json().await.unwrap();
        let fresh = fresh["delegations"][0]["access_token"].as_str().unwrap().to_owned();
        assert_ne!(fresh, token);
        // A key change hands out a token of the new key.
        gql(&app, Some(&w.admin_token), "mutation { rotateSigningKey { kid } }", json!({})).await;
        let keyed: Value = userinfo(&app, &b.token).await.json().await.unwrap();
        assert_ne!(keyed["delegations"][0]["access_token"].as_str().unwrap(), fresh, "the delegations were forgotten with the keys");
        let token = fresh.as_str();
        // It dies with the share.
        gql(&app, Some(&w.user_token), REVOKE, json!({ "u": shared["uuid"] })).await;
        let body = mint(&app, token, &w, None).await;
        assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    }

    async fn revoking_a_share_revokes_its_tokens_in_the_list_and_the_status_list(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        let shared = share(&app, &w, None).await;
        let mut gw = gateway(&app, &w).await;
        let body = mint(&app, &b.token, &w, None).await;
        let jwt = body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap().to_owned();
        next_list(&mut gw).await;
        // Ada's own token stays.
        let own = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
        assert!(own["errors"].is_null(), "{own}");
        next_list(&mut gw).await;
        assert!(!status_list_bit(&app, &w, &jwt).await);

        // Bianca may not revoke it; Ada may.
        let body = gql(&app, Some(&b.token), REVOKE, json!({ "u": shared["uuid"] })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = gql(&app, Some(&w.user_token), REVOKE, json!({ "u": shared["uuid"] })).await;
        assert!(body["data"]["revokeShare"]["revokedAt"].is_string(), "{body}");
        let list = next_list(&mut gw).await;
        assert_eq!(list[0]["status"], "REVOKED", "{list}");
        assert!(list[0].get("token").is_none());
        assert_eq!(list[1]["status"], "ACTIVATED", "the sharer's own token stays: {list}");
        assert!(status_list_bit(&app, &w, &jwt).await, "its status bit is set");
        let events = gql(&app, Some(&w.admin_token), "{ auditEvents(limit: 500) { action target } }", json!({})).await;
        assert!(events["data"]["auditEvents"].as_array().unwrap().iter().any(|e| e["action"] == "local_token.revoked" && e["target"].as_str().unwrap().contains(shared["uuid"].as_str().unwrap())), "an event for each token revoked with the share: {events}");
        let body = mint(&app, &b.token, &w, None).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let me = gql(&app, Some(&b.token), "{ me { sharesReceived { uuid } } }", json!({})).await;
        assert_eq!(me["data"]["me"]["sharesReceived"], json!([]));
    }

    async fn a_token_under_a_share_never_outlives_it_and_an_expired_share_mints_nothing(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        let until = chrono::DateTime::from_timestamp(app.clock.now() + 1800, 0).unwrap().to_rfc3339();
        let shared = share(&app, &w, Some(&until)).await;
        let body = mint(&app, &b.token, &w, None).await;
        let claims = claims_of(body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap().strip_prefix("CLOUD-").unwrap());
        assert_eq!(claims["exp"].as_i64().unwrap(), chrono::DateTime::parse_from_rfc3339(&until).unwrap().timestamp(), "capped at the share's end");
        let body = gql(&app, Some(&b.token), "mutation($s: UUID!) { createPermanentLocalApiToken(systemUuid: $s, name: \"x\") { uuid } }", json!({ "s": w.system })).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        app.clock.advance(1800);
        let body = mint(&app, &b.token, &w, shared["uuid"].as_str()).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = mint(&app, &b.token, &w, None).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }

    async fn what_one_cannot_share(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        // The delegation's scope is granted to no one.
        let body = gql(&app, Some(&w.admin_token), "mutation { createClient(input: {name: \"x\", scopes: [\"lanyard:local-tokens:mint\"]}) { clientId } }", json!({})).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        // A role Ada does not hold there.
        let other_role = app.authority().create_role(&w.t.tenant, "Installer").await.unwrap();
        let body = gql(&app, Some(&w.user_token), SHARE, json!({ "s": w.system, "e": "bianca@example.com", "r": [other_role.id] })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        // A person of another tenant.
        let globex = app.tenant("globex").await;
        app.authority().create_user(&globex.tenant, "carl@example.com", "Carl", Default::default(), Default::default()).await.unwrap();
        let body = gql(&app, Some(&w.user_token), SHARE, json!({ "s": w.system, "e": "carl@example.com", "r": [w.role] })).await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
        // Oneself, a past expiry.
        let body = gql(&app, Some(&w.user_token), SHARE, json!({ "s": w.system, "e": "ada@example.com", "r": [w.role] })).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        let past = chrono::DateTime::from_timestamp(app.clock.now() - 10, 0).unwrap().to_rfc3339();
        let body = gql(&app, Some(&w.user_token), SHARE, json!({ "s": w.system, "e": "bianca@example.com", "r": [w.role], "x": past })).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        // What was shared with you.
        share(&app, &w, None).await;
        app.authority().create_user(&w.t.tenant, "dora@example.com", "Dora", Default::default(), Default::default()).await.unwrap();
        let body = gql(&app, Some(&b.token), SHARE, json!({ "s": w.system, "e": "dora@example.com", "r": [w.role] })).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("shared on"), "{body}");
        // Another person's share, named.
        let shared = share(&app, &w, None).await;
        let dora = app_client(&app, &w.t).await;
        let dora = sign_in(&app, "acme", &dora, "dora@example.com").await;
        let body = mint(&app, dora["access_token"].as_str().unwrap(), &w, shared["uuid"].as_str()).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        // Several shares of one system: Bianca names one.
        let body = mint(&app, &b.token, &w, None).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        let body = mint(&app, &b.token, &w, shared["uuid"].as_str()).await;
        assert!(body["errors"].is_null(), "{body}");
    }

    async fn deleting_either_person_revokes_the_tokens_minted_under_their_share(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        share(&app, &w, None).await;
        let mut gw = gateway(&app, &w).await;
        mint(&app, &b.token, &w, None).await;
        next_list(&mut gw).await;
        let own = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
        assert!(own["errors"].is_null());
        next_list(&mut gw).await;
        let body = gql(&app, Some(&w.admin_token), "mutation($u: UUID!) { deleteUser(uuid: $u) }", json!({ "u": b.id })).await;
        assert!(body["errors"].is_null(), "{body}");
        let list = next_list(&mut gw).await;
        assert_eq!(list[0]["status"], "REVOKED", "{list}");
        assert_eq!(list[1]["status"], "ACTIVATED", "{list}");
        // Each share and token that ended with her has its event.
        let events = gql(&app, Some(&w.admin_token), "{ auditEvents(limit: 500) { action target } }", json!({})).await;
        let events = events["data"]["auditEvents"].as_array().unwrap();
        let ended = |action: &str| events.iter().filter(|e| e["action"] == action && e["target"].as_str().unwrap().ends_with(&format!("with user:{}", b.id))).count();
        assert_eq!((ended("share.revoked"), ended("local_token.revoked")), (1, 1), "{events:?}");
    }

    async fn no_token_minted_after_a_share_is_revoked_is_ever_listed_activated(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        for _ in 0..3 {
            let shared = share(&app, &w, None).await;
            let share_id = shared["uuid"].as_str().unwrap().to_owned();
            let mut minting = Vec::new();
            for _ in 0..8 {
                let (app, token, w) = (&app, b.token.clone(), &w);
                let share_id = share_id.clone();
                minting.push(async move { mint(app, &token, w, Some(&share_id)).await });
            }
            let revoking = async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                gql(&app, Some(&w.user_token), REVOKE, json!({ "u": share_id })).await
            };
            let (_, revoked) = tokio::join!(futures::future::join_all(minting), revoking);
            assert!(revoked["errors"].is_null(), "{revoked}");
            let tokens = gql(&app, Some(&w.admin_token), "query($s: UUID!) { localApiTokens(systemUuid: $s) { status shareUuid } }", json!({ "s": w.system })).await;
            let live: Vec<&Value> = tokens["data"]["localApiTokens"].as_array().unwrap().iter()
                .filter(|t| t["shareUuid"] == share_id.as_str() && t["status"] == "ACTIVATED")
                .collect();
            assert!(live.is_empty(), "tokens of a revoked share still ACTIVATED: {live:?}");
        }
    }

    async fn a_person_gives_at_most_twenty_live_shares_of_a_system_and_an_admin_may_revoke_them(app) {
        let w = world(&app).await;
        bianca(&app, &w).await;
        let roles = gql(&app, Some(&w.user_token), "query($s: UUID!) { me { roles(systemUuid: $s) { uuid } } }", json!({ "s": w.system })).await;
        assert_eq!(roles["data"]["me"]["roles"], json!([{ "uuid": w.role }]), "{roles}");
        let mut last = Value::Null;
        for _ in 0..20 {
            last = share(&app, &w, None).await;
        }
        let body = gql(&app, Some(&w.user_token), SHARE, json!({ "s": w.system, "e": "bianca@example.com", "r": [w.role] })).await;
        assert_eq!(code(&body), "CONFLICT", "{body}");
        // The tenant's role admin revokes one; then there is room for another.
        let body = gql(&app, Some(&w.admin_token), REVOKE, json!({ "u": last["uuid"] })).await;
        assert!(body["errors"].is_null(), "{body}");
        let listed = gql(&app, Some(&w.admin_token), "query($s: UUID!) { shares(systemUuid: $s) { uuid } }", json!({ "s": w.system })).await;
        assert_eq!(listed["data"]["shares"].as_array().unwrap().len(), 19, "{listed}");
        share(&app, &w, None).await;
    }

    async fn shares_made_at_once_stay_within_the_limit(app) {
        let w = world(&app).await;
        bianca(&app, &w).await;
        let sharing = (0..40).map(|_| {
            gql(&app, Some(&w.user_token), SHARE, json!({ "s": w.system, "e": "bianca@example.com", "r": [w.role] }))
        });
        let answers = futures::future::join_all(sharing).await;
        let made = answers.iter().filter(|a| a["errors"].is_null()).count();
        assert_eq!(made, 20, "{:?}", answers.iter().filter(|a| !a["errors"].is_null()).map(code).collect::<Vec<_>>());
        let listed = gql(&app, Some(&w.admin_token), "query($s: UUID!) { shares(systemUuid: $s) { uuid } }", json!({ "s": w.system })).await;
        assert_eq!(listed["data"]["shares"].as_array().unwrap().len(), 20);
    }

    async fn mints_made_at_once_under_a_share_stay_within_the_sharers_cap(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        share(&app, &w, None).await;
        let cap = app.settings.tokens.max_local_tokens_per_system as usize;
        let minting = (0..cap + 30).map(|_| mint(&app, &b.token, &w, None));
        let answers = futures::future::join_all(minting).await;
        let made = answers.iter().filter(|a| a["errors"].is_null()).count();
        assert_eq!(made, cap, "at most the cap, however many at once");
        assert!(answers.iter().filter(|a| !a["errors"].is_null()).all(|a| code(a) == "CONFLICT"));
        let own = gql(&app, Some(&w.user_token), MINT, json!({ "s": w.system, "d": "1D" })).await;
        assert_eq!(code(&own), "CONFLICT", "the tokens under the share count against the sharer: {own}");
    }

    async fn a_service_exchanging_the_recipients_token_acts_for_her_under_the_share(app) {
        let w = world(&app).await;
        let b = bianca(&app, &w).await;
        let shared = share(&app, &w, None).await;
        let (id, secret) = app.client(&w.t, lanyard::authority::NewClient {
            name: "Backend".into(),
            grant_types: vec![lanyard::domain::GrantType::TokenExchange, lanyard::domain::GrantType::ClientCredentials],
            ..Default::default()
        }).await;
        let actor = app.token("acme", &id, &secret).await;
        let access = urlencode("urn:ietf:params:oauth:token-type:access_token");
        let body = format!(
            "grant_type={}&subject_token={}&subject_token_type={access}&actor_token={actor}&actor_token_type={access}&requested_token_type={}&audience={}",
            urlencode("urn:ietf:params:oauth:grant-type:token-exchange"),
            b.token,
            urlencode("urn:lanyard:params:oauth:token-type:local-api-token"),
            w.system,
        );
        let res = app.post_form("/t/acme/oauth2/token", Some((id.as_str(), &secret)), &body).await;
        let answer: Value = res.json().await.unwrap();
        let jwt = answer["access_token"].as_str().unwrap_or_else(|| panic!("{answer}"));
        let claims = claims_of(jwt.strip_prefix("CLOUD-").unwrap());
        assert_eq!(claims["sub"], w.user.as_str(), "the sharer is the subject");
        assert_eq!(claims["act"]["sub"], id.as_str(), "the service acts now: {claims}");
        assert_eq!(claims["act"]["act"]["sub"], b.id.as_str(), "for Bianca before it");
        let tokens = gql(&app, Some(&w.user_token), "query($s: UUID!) { localApiTokens(systemUuid: $s) { actor { uuid } shareUuid } }", json!({ "s": w.system })).await;
        assert_eq!(tokens["data"]["localApiTokens"][0]["actor"]["uuid"], b.id.as_str());
        assert_eq!(tokens["data"]["localApiTokens"][0]["shareUuid"], shared["uuid"]);
        // The service, acting for Bianca, gets no delegations of hers from userinfo.
        let access = urlencode("urn:ietf:params:oauth:token-type:access_token");
        let body = format!(
            "grant_type={}&subject_token={}&subject_token_type={access}&actor_token={actor}&actor_token_type={access}",
            urlencode("urn:ietf:params:oauth:grant-type:token-exchange"),
            b.token,
        );
        let answer: Value = app.post_form("/t/acme/oauth2/token", Some((id.as_str(), &secret)), &body).await.json().await.unwrap();
        let acting = answer["access_token"].as_str().unwrap();
        let info: Value = userinfo(&app, acting).await.json().await.unwrap();
        assert_eq!(info["delegations"], json!([]), "{info}");
    }
}
