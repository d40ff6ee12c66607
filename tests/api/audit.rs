//! Audit events (SPEC §14): every change and every token issued or revoked is an event, written
//! with its change or not at all, listed behind `lanyard:audit:read`, pruned after the
//! retention, and never holding a secret, a token or a code.

use serde_json::{Value, json};

use crate::graphql::{code, gql, world};
use crate::helpers::*;
use crate::signin::{code_for, outbox_files, redeem, send_otp};

const EVENTS: &str = "query($after: Int, $limit: Int) { auditEvents(after: $after, limit: $limit) { seq time actor action target outcome } }";

async fn events(app: &TestApp, token: &str, after: i64, limit: i64) -> Vec<Value> {
    let body = gql(
        app,
        Some(token),
        EVENTS,
        json!({ "after": after, "limit": limit }),
    )
    .await;
    body["data"]["auditEvents"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .clone()
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

/// Every event of every tenant, read from the database.
async fn every_event(app: &TestApp) -> String {
    let url = &app.settings.database.url;
    let rows: Vec<(String, String, String, String)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_as("SELECT actor, action, target, outcome FROM audit_events")
            .fetch_all(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_as("SELECT actor, action, target, outcome FROM audit_events")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    rows.iter()
        .map(|r| format!("{} {} {} {}\n", r.0, r.1, r.2, r.3))
        .collect()
}

on_both_databases! {
    async fn every_change_and_token_is_an_event_and_none_holds_a_secret(app) {
        let w = world(&app).await;
        let mut secrets: Vec<String> = vec![w.t.admin_secret.clone(), w.user_token.clone(), w.admin_token.clone()];

        // A person signs in again: the code and the refresh token are secrets too.
        let before = outbox_files(&app).len();
        let app_id = crate::signin::app_client(&app, &w.t).await;
        let res = send_otp(&app, "acme", json!({ "email": "ada@example.com", "client_id": app_id })).await;
        assert_eq!(res.status(), 202);
        let (otp, _) = code_for(&app, "ada@example.com", before).await;
        let signed_in: Value = redeem(&app, "acme", &app_id, "ada@example.com", &otp).await.json().await.unwrap();
        secrets.push(otp);
        secrets.push(signed_in["access_token"].as_str().unwrap().to_owned());
        let refresh = signed_in["refresh_token"].as_str().unwrap().to_owned();
        secrets.push(refresh.clone());

        // Management through GraphQL, tokens through OAuth.
        let body = gql(&app, Some(&w.admin_token), "mutation { createClient(input: { name: \"meter\" }) { clientId clientSecret } }", json!({})).await;
        let meter = body["data"]["createClient"]["clientId"].as_str().unwrap().to_owned();
        secrets.push(body["data"]["createClient"]["clientSecret"].as_str().unwrap().to_owned());
        let meter_token = app.token("acme", &meter, secrets.last().unwrap()).await;
        secrets.push(meter_token.clone());
        let body = gql(&app, Some(&w.admin_token), "mutation($c: String!) { rotateClientSecret(clientId: $c) { clientSecret } }", json!({ "c": meter })).await;
        secrets.push(body["data"]["rotateClientSecret"]["clientSecret"].as_str().unwrap().to_owned());
        let res = app.post_form("/t/acme/oauth2/revoke", Some((w.t.admin_id.as_str(), w.t.admin_secret.as_str())), &format!("token={meter_token}")).await;
        assert_eq!(res.status(), 200);
        let res = app.post_form("/t/acme/oauth2/revoke", None, &format!("token={refresh}&client_id={app_id}")).await;
        assert_eq!(res.status(), 200);
        let body = gql(&app, Some(&w.user_token), "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { jwt uuid } }", json!({ "s": w.system })).await;
        secrets.push(body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap().to_owned());
        let local = body["data"]["createLocalApiToken"]["uuid"].as_str().unwrap().to_owned();
        gql(&app, Some(&w.user_token), "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { uuid } }", json!({ "u": local })).await;
        let body = gql(&app, Some(&w.admin_token), "mutation { rotateSigningKey { kid } }", json!({})).await;
        assert!(body["data"]["rotateSigningKey"]["kid"].is_string(), "{body}");
        let body = gql(&app, Some(&w.admin_token), "mutation($c: String!) { deleteClient(clientId: $c) }", json!({ "c": meter })).await;
        assert_eq!(body["data"]["deleteClient"], true, "{body}");
        // Invalidating the signer ends the tokens it signed: the listing asks with a new one.
        let keys = gql(&app, Some(&w.admin_token), "{ signingKeys { kid status } }", json!({})).await;
        let signer = keys["data"]["signingKeys"].as_array().unwrap().iter()
            .find(|k| k["status"] == "ACTIVE").unwrap()["kid"].as_str().unwrap().to_owned();
        let body = gql(&app, Some(&w.admin_token), "mutation($k: String!) { invalidateSigningKey(kid: $k) { status } }", json!({ "k": signer })).await;
        assert_eq!(body["data"]["invalidateSigningKey"]["status"], "INVALIDATED", "{body}");
        let admin_token = app.admin_token(&w.t).await;

        let listed = events(&app, &admin_token, 0, 500).await;
        let done = actions(&listed);
        for action in [
            "tenant.created", "client.created", "system.created", "role.created", "user.created",
            "role.assigned", "token.issued", "client.secret_rotated", "token.revoked",
            "local_token.issued", "local_token.revoked", "key.created", "client.deleted",
            "sign_in.revoked",
        ] {
            assert!(done.contains(&action), "{action} missing from {done:?}");
        }
        // Who did it: the admin client, the person through the app, the operator at bootstrap.
        let invalidated = listed.iter().find(|e| e["action"] == "key.invalidated").unwrap();
        assert!(invalidated["target"].as_str().unwrap().starts_with(&format!("key:{signer}, signing handed to key:")), "{invalidated}");
        let deleted = listed.iter().find(|e| e["action"] == "client.deleted").unwrap();
        assert_eq!(deleted["actor"], format!("client:{}", w.t.admin_id));
        assert_eq!(deleted["target"], format!("client:{meter}"));
        assert_eq!(deleted["outcome"], "success");
        let minted = listed.iter().find(|e| e["action"] == "local_token.issued").unwrap();
        assert!(minted["actor"].as_str().unwrap().starts_with(&format!("user:{} via client:", w.user)), "{minted}");
        assert_eq!(listed[0]["action"], "tenant.created");
        assert_eq!(listed[0]["actor"], "operator");
        let issued = listed.iter().filter(|e| e["action"] == "token.issued").count();
        assert!(issued >= 4, "{issued} token.issued events in {done:?}");

        // No event anywhere holds a secret, a token or a code.
        let everything = every_event(&app).await;
        for secret in &secrets {
            assert!(!secret.is_empty());
            assert!(!everything.contains(secret.as_str()), "a secret in the audit trail: {secret}");
            // Not even a signature or a token's payload.
            for part in secret.split('.').filter(|p| p.len() > 12) {
                assert!(!everything.contains(part), "part of a secret in the audit trail");
            }
        }
    }

    async fn the_listing_pages_and_needs_its_scope(app) {
        let w = world(&app).await;
        let all = events(&app, &w.admin_token, 0, 500).await;
        assert!(all.len() >= 5, "{all:?}");
        let first_two = events(&app, &w.admin_token, 0, 2).await;
        assert_eq!(first_two, all[..2]);
        let next = events(&app, &w.admin_token, first_two[1]["seq"].as_i64().unwrap(), 2).await;
        assert_eq!(next, all[2..4]);
        // Another tenant's events are not listed.
        let other = app.tenant("other").await;
        let other_token = app.admin_token(&other).await;
        let theirs = events(&app, &other_token, 0, 500).await;
        assert!(theirs.iter().all(|e| !e["target"].as_str().unwrap().contains(&w.system.to_string())));
        assert_eq!(theirs[0]["action"], "tenant.created");
        // A page of nothing is a mistake; a page past the most is the most.
        for bad in [0, -1] {
            let body = gql(&app, Some(&w.admin_token), EVENTS, json!({ "limit": bad })).await;
            assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        }
        assert_eq!(events(&app, &w.admin_token, 0, 100_000).await, all);
        // The person holds no lanyard scope.
        let body = gql(&app, Some(&w.user_token), EVENTS, json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }

    async fn an_event_commits_with_its_change_or_not_at_all(app) {
        let w = world(&app).await;
        let before = events(&app, &w.admin_token, 0, 500).await.len();
        // A change refused by the database leaves no event.
        let body = gql(&app, Some(&w.admin_token), "mutation { createScope(name: \"sensor:read\") { name } }", json!({})).await;
        assert_eq!(body["data"]["createScope"]["name"], "sensor:read", "{body}");
        let body = gql(&app, Some(&w.admin_token), "mutation { createScope(name: \"sensor:read\") { name } }", json!({})).await;
        assert_eq!(code(&body), "CONFLICT", "{body}");
        let after = events(&app, &w.admin_token, 0, 500).await;
        assert_eq!(after.len(), before + 1, "{:?}", actions(&after));
        assert_eq!(actions(&after).iter().filter(|a| **a == "scope.created").count(), 1);

        // An event that cannot be written takes its change with it.
        let url = app.settings.database.url.clone();
        crate::kek::execute(&url, "ALTER TABLE audit_events RENAME TO audit_events_away").await;
        let body = gql(&app, Some(&w.admin_token), "mutation { createSystem(name: \"Unrecorded\") { uuid } }", json!({})).await;
        assert_eq!(code(&body), "INTERNAL", "{body}");
        crate::kek::execute(&url, "ALTER TABLE audit_events_away RENAME TO audit_events").await;
        let body = gql(&app, Some(&w.admin_token), "{ systems { name } }", json!({})).await;
        let names: Vec<&str> = body["data"]["systems"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert!(!names.contains(&"Unrecorded"), "{names:?}");
    }

    async fn events_older_than_the_retention_are_pruned(app) {
        let w = world(&app).await;
        assert!(!events(&app, &w.admin_token, 0, 500).await.is_empty());
        app.clock.advance(89 * 86_400);
        assert_eq!(app.authority().prune_audit_once().await.unwrap(), 0);
        app.clock.advance(2 * 86_400);
        assert!(app.authority().prune_audit_once().await.unwrap() > 0);
        let token = app.admin_token(&w.t).await;
        // Only the token just issued is left.
        assert_eq!(actions(&events(&app, &token, 0, 500).await), ["token.issued"]);
    }
}
