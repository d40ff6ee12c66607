//! Each system's retained list of local API tokens follows the database: mint, revoke, expiry,
//! key invalidation, user deletion, and changes made by another process.

use std::time::Duration;

use serde_json::{Value, json};

use crate::graphql::{World, gql, world};
use crate::helpers::*;
use crate::mqtt::{V4, device};

const WAIT: Duration = Duration::from_secs(3);
const MINT: &str = "mutation($s: UUID!, $d: String!) { createLocalApiToken(systemUuid: $s, duration: $d) { jwt uuid } }";

fn list_topic(system: &str) -> String {
    format!("drivr/v1/acme/authorization/localApiTokens/{system}")
}

/// The system's own device, subscribed to its list; returns it after the first (current) list.
async fn gateway(app: &TestApp, w: &World) -> (V4, Value) {
    let (id, token) = device(app, &w.t, Some(&w.system), "").await;
    let mut v4 = V4::connect(app, &id, &token).await.unwrap();
    v4.subscribe(&list_topic(&w.system)).await;
    let first = next_list(&mut v4).await;
    (v4, first)
}

/// A client with `lanyard:local-tokens:read`, subscribed to the system's (empty) list.
async fn list_reader(app: &TestApp, w: &World) -> (V4, ClientId, String) {
    let (id, token) = device(app, &w.t, None, "lanyard:local-tokens:read").await;
    let mut reader = V4::connect(app, &id, &token).await.unwrap();
    reader.subscribe(&list_topic(&w.system)).await;
    assert_eq!(next_list(&mut reader).await, json!([]));
    (reader, id, token)
}

async fn next_list(v4: &mut V4) -> Value {
    let msg = v4.message(WAIT).await.expect("a list");
    serde_json::from_slice(&msg.payload).unwrap()
}

/// The signed-in person of `w` as the authority sees a caller, for minting from another
/// process (no HTTP there).
fn person_caller(w: &World) -> lanyard::authority::Caller {
    lanyard::authority::Caller::new(
        w.t.tenant.clone(),
        lanyard::domain::AccessClaims::new(
            w.t.tenant.issuer.clone(),
            w.user.to_string(),
            "acme".into(),
            "app".into(),
            String::new(),
            0,
            i64::MAX,
            "x".into(),
        ),
    )
}

async fn mint(app: &TestApp, w: &World, duration: &str) -> (String, String) {
    let body = gql(
        app,
        Some(&w.user_token),
        MINT,
        json!({ "s": w.system, "d": duration }),
    )
    .await;
    let created = &body["data"]["createLocalApiToken"];
    (
        created["uuid"].as_str().unwrap().to_owned(),
        created["jwt"].as_str().unwrap().to_owned(),
    )
}

on_both_databases! {
    async fn a_list_as_minted_is_the_list_read_back_from_the_database(app) {
        let w = world(&app).await;
        let (mut gw, _) = gateway(&app, &w).await;
        gql(
            &app,
            Some(&w.user_token),
            "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\", requestedDevice: \"Kitchen panel\") { uuid } }",
            json!({ "s": w.system }),
        )
        .await;
        next_list(&mut gw).await;
        gql(
            &app,
            Some(&w.user_token),
            "mutation($s: UUID!) { createPermanentLocalApiToken(systemUuid: $s, name: \"Installer\") { uuid } }",
            json!({ "s": w.system }),
        )
        .await;
        let as_minted = gw.message(WAIT).await.expect("a list").payload;
        let app = app.restart().await;
        let (_, as_read) = gateway(&app, &w).await;
        assert_eq!(serde_json::from_slice::<Value>(&as_minted).unwrap(), as_read);
        let entries = as_read.as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["requestedDevice"], "Kitchen panel");
        assert_eq!(entries[1]["name"], "Installer");
        assert_eq!(entries[1]["roles"].as_array().unwrap().len(), 1);
    }

    async fn a_minted_token_reaches_its_systems_list_and_a_revoked_one_shows_revoked(app) {
        let w = world(&app).await;
        let (mut gw, first) = gateway(&app, &w).await;
        assert_eq!(first, json!([]), "an empty system has an empty list");
        let (id, jwt) = mint(&app, &w, "1D").await;
        let list = next_list(&mut gw).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        let e = &list[0];
        assert_eq!(e["uuid"], id.as_str());
        assert_eq!(e["status"], "ACTIVATED");
        assert_eq!(e["token"], jwt.as_str());
        assert_eq!(e["systemUuid"], w.system.as_str());
        assert_eq!(e["roles"], json!([{ "uuid": w.role, "name": "Domain Owner" }]));
        assert_eq!(e["subject"], json!({ "uuid": w.user, "name": "Ada Lovelace", "type": "USER" }));
        for time in ["createdAt", "updatedAt", "notBefore", "expiresAt"] {
            let t = e[time].as_str().unwrap_or_else(|| panic!("{time}: {e}"));
            assert!(t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{time}: {t}");
        }
        let body = gql(&app, Some(&w.user_token), "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }", json!({ "u": id })).await;
        assert_eq!(body["data"]["revokeLocalApiToken"]["status"], "REVOKED");
        let list = next_list(&mut gw).await;
        assert_eq!(list[0]["status"], "REVOKED");
        assert!(list[0].get("token").is_none(), "a revoked entry still carries its token");
    }

    async fn an_expired_token_leaves_the_list_and_a_revoked_one_stays_until_then(app) {
        let w = world(&app).await;
        let (mut gw, _) = gateway(&app, &w).await;
        let (short, _) = mint(&app, &w, "1M").await;
        next_list(&mut gw).await;
        let (long, _) = mint(&app, &w, "1H").await;
        next_list(&mut gw).await;
        gql(&app, Some(&w.user_token), "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }", json!({ "u": long })).await;
        let list = next_list(&mut gw).await;
        assert_eq!(list.as_array().unwrap().len(), 2);
        app.clock.advance(61);
        assert!(app.app().mqtt().expire_lists_once().await.unwrap() >= 1);
        let list = next_list(&mut gw).await;
        let ids: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["uuid"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![long.as_str()], "the expired token {short} is still listed");
        assert_eq!(list[0]["status"], "REVOKED");
        app.clock.advance(3600);
        app.app().mqtt().expire_lists_once().await.unwrap();
        assert_eq!(next_list(&mut gw).await, json!([]));
    }

    async fn invalidating_the_key_and_deleting_the_person_revoke_their_tokens_in_the_list(app) {
        let w = world(&app).await;
        let (mut gw, _) = gateway(&app, &w).await;
        let (_, jwt) = mint(&app, &w, "1D").await;
        next_list(&mut gw).await;
        let kid = header_of(jwt.strip_prefix("CLOUD-").unwrap())["kid"].as_str().unwrap().to_owned();
        app.authority().invalidate_signing_key(&w.t.tenant, &kid).await.unwrap();
        // The gateway's own session was signed by that key too: it ends, and the gateway
        // comes back with a token from the new key.
        assert!(gw.message(WAIT).await.is_none());
        let (mut gw, list) = gateway(&app, &w).await;
        assert_eq!(list[0]["status"], "REVOKED", "{list}");
        // SPEC §10: reactivating the key does not bring its local tokens back.
        app.authority().reactivate_signing_key(&w.t.tenant, &kid).await.unwrap();
        assert!(gw.message(Duration::from_millis(500)).await.is_none(), "the list changed");
        let (_, jwt) = mint(&app, &w, "1D").await;
        let list = next_list(&mut gw).await;
        assert_eq!((list[0]["status"].as_str(), list[1]["status"].as_str()), (Some("REVOKED"), Some("ACTIVATED")));
        assert!(list[1]["token"] == jwt.as_str());
        app.authority().delete_user(&w.t.tenant, &w.user).await.unwrap();
        assert_eq!(next_list(&mut gw).await[1]["status"], "REVOKED");
    }

    async fn a_token_minted_by_another_process_reaches_the_list_within_seconds(app) {
        let w = world(&app).await;
        let (mut gw, _) = gateway(&app, &w).await;
        let other = lanyard::app::open_authority(
            app.settings.clone(),
            std::sync::Arc::new(lanyard::domain::SystemClock),
        )
        .await
        .unwrap();
        let caller = person_caller(&w);
        let minted = other.create_local_token(&caller, &w.system, None, "1D", None).await.unwrap();
        let msg = gw.message(Duration::from_secs(5)).await.expect("the list within 5 s");
        let list: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(list[0]["uuid"], minted.id.as_str());
    }

    async fn a_key_invalidated_by_another_process_ends_its_sessions_and_revokes_its_tokens(app) {
        let w = world(&app).await;
        let (_, jwt) = mint(&app, &w, "1D").await;
        let kid = header_of(jwt.strip_prefix("CLOUD-").unwrap())["kid"].as_str().unwrap().to_owned();
        let (id, token) = device(&app, &w.t, None, "").await;
        let mut session = crate::mqtt::V5::connect(&app, &id, &token).await.unwrap();
        let other = lanyard::app::open_authority(
            app.settings.clone(),
            std::sync::Arc::new(lanyard::domain::SystemClock),
        )
        .await
        .unwrap();
        other.invalidate_signing_key(&w.t.tenant, &kid).await.unwrap();
        // Heard of or not, the change reaches this server within seconds: the session its key
        // signed ends, and the list shows the token REVOKED.
        let ended = loop {
            match session.next(Duration::from_secs(10)).await {
                Some(Ok(rumqttc::v5::mqttbytes::v5::Packet::Disconnect(d))) => break Some(d.reason_code),
                Some(Ok(_)) => continue,
                _ => break None,
            }
        };
        assert_eq!(ended, Some(rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::NotAuthorized));
        let mut status = Value::Null;
        for _ in 0..50 {
            let (_, list) = gateway(&app, &w).await;
            status = list[0]["status"].clone();
            if status == "REVOKED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(status, "REVOKED");
    }

    async fn a_token_revoked_by_another_process_shows_revoked_within_seconds(app) {
        let w = world(&app).await;
        let (mut gw, _) = gateway(&app, &w).await;
        // Minted here, so the published list already shows it; revoked elsewhere, most likely
        // within the same second, so only its status tells the change.
        let (id, _) = mint(&app, &w, "1D").await;
        assert_eq!(next_list(&mut gw).await[0]["status"], "ACTIVATED");
        let other = lanyard::app::open_authority(
            app.settings.clone(),
            std::sync::Arc::new(lanyard::domain::SystemClock),
        )
        .await
        .unwrap();
        other.revoke_local_token(&person_caller(&w), &LocalTokenId::parse(&id).unwrap()).await.unwrap();
        let msg = gw.message(Duration::from_secs(5)).await.expect("the list within 5 s");
        let list: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(list[0]["uuid"], id.as_str());
        assert_eq!(list[0]["status"], "REVOKED");
    }
}

#[tokio::test]
async fn every_system_has_its_list_from_the_start_and_a_new_one_at_once() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let (mut reader, id, token) = list_reader(&app, &w).await;
    let fresh = app
        .authority()
        .create_system(&w.t.tenant, "New")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.subscribe(&list_topic(&fresh)).await;
    assert_eq!(next_list(&mut reader).await, json!([]));
    // After a restart the lists are there before the first client connects, each its own
    // (three systems, read together).
    let spare = app
        .authority()
        .create_system(&w.t.tenant, "Spare")
        .await
        .unwrap();
    let (minted, _) = mint(&app, &w, "1D").await;
    let app = app.restart().await;
    let mut reader = V4::connect(&app, &id, &token).await.unwrap();
    reader.subscribe(&list_topic(&w.system)).await;
    let list = next_list(&mut reader).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["uuid"], minted.as_str());
    for empty in [&fresh, &spare] {
        reader.subscribe(&list_topic(empty)).await;
        assert_eq!(next_list(&mut reader).await, json!([]));
    }
}

#[tokio::test]
async fn concurrent_mints_all_reach_the_list_and_a_list_of_500_tokens_still_publishes() {
    // One person mints them all here; many people share a system's list in practice.
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.tokens.max_local_tokens_per_system = 1000
    })
    .await;
    let w = world(&app).await;
    let (mut gw, _) = gateway(&app, &w).await;
    let mints = (0..10).map(|_| mint(&app, &w, "1D"));
    let minted: Vec<String> = futures::future::join_all(mints)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut last = Value::Null;
    while let Some(msg) = gw.message(Duration::from_millis(700)).await {
        last = serde_json::from_slice(&msg.payload).unwrap();
    }
    let listed: Vec<&str> = last
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uuid"].as_str().unwrap())
        .collect();
    for id in &minted {
        assert!(
            listed.contains(&id.as_str()),
            "{id} is missing from the final list"
        );
    }
    // 500 tokens: about 700 KB, still one retained message.
    let caller = person_caller(&w);
    for _ in 0..490 {
        app.authority()
            .create_local_token(&caller, &w.system, Some("Panel"), "1D", None)
            .await
            .unwrap();
    }
    let mut last = Vec::new();
    while let Some(msg) = gw.message(Duration::from_secs(2)).await {
        last = msg.payload.to_vec();
    }
    let list: Value = serde_json::from_slice(&last).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 500);
    eprintln!("a list of 500 tokens is {} bytes", last.len());
    // A fresh subscriber gets it whole, retained.
    let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
    let mut fresh = V4::connect(&app, &id, &token).await.unwrap();
    fresh.subscribe(&list_topic(&w.system)).await;
    let msg = fresh.message(WAIT).await.expect("the whole list");
    assert_eq!(msg.payload.len(), last.len());
}

#[tokio::test]
async fn a_change_committed_while_the_server_was_down_is_published_before_it_accepts() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let settings = app.settings.clone();
    let caller = person_caller(&w);
    let minted = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let noted = minted.clone();
    let system = w.system.clone();
    // While the server is down, another process commits a mint and publishes nothing, as a
    // node killed between its commit and its publish would.
    let app = app
        .restart_after(async move {
            let other = lanyard::app::open_authority(
                settings,
                std::sync::Arc::new(lanyard::domain::SystemClock),
            )
            .await
            .unwrap();
            let token = other
                .create_local_token(&caller, &system, None, "1D", None)
                .await
                .unwrap();
            *noted.lock().unwrap() = token.id.to_string();
        })
        .await;
    let minted = minted.lock().unwrap().clone();
    let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
    let mut gw = V4::connect(&app, &id, &token).await.unwrap();
    gw.subscribe(&list_topic(&w.system)).await;
    let list = next_list(&mut gw).await;
    assert_eq!(
        list[0]["uuid"],
        minted.as_str(),
        "the first list a device sees holds it"
    );
}

#[tokio::test]
async fn the_topic_of_a_system_removed_from_the_database_is_cleared() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let (mut reader, _, token) = list_reader(&app, &w).await;
    assert_eq!(app.app().mqtt().clear_orphans_once().await.unwrap(), 0);
    // An operator removes the system by hand.
    let lanyard::store::Db::Sqlite { writer, .. } = app.authority().db() else {
        unreachable!()
    };
    sqlx::query("DELETE FROM systems WHERE id = $1")
        .bind(w.system.as_str())
        .execute(&mut *writer.acquire().await.unwrap())
        .await
        .unwrap();
    // Its token list and its status list.
    assert_eq!(app.app().mqtt().clear_orphans_once().await.unwrap(), 2);
    let msg = reader.message(WAIT).await.expect("the clearing message");
    assert!(msg.payload.is_empty());
    // A device subscribing now finds nothing retained.
    let mut fresh = V4::connect(&app, "fresh", &token).await.unwrap();
    fresh.subscribe(&list_topic(&w.system)).await;
    assert!(fresh.message(Duration::from_millis(500)).await.is_none());
}

/// A server on SQLite, a token minted there, and the system's device, which has its list.
async fn a_listed_token() -> (TestApp, V4, String) {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let (mut gw, _) = gateway(&app, &w).await;
    let (id, _) = mint(&app, &w, "1D").await;
    assert_eq!(next_list(&mut gw).await[0]["status"], "ACTIVATED");
    (app, gw, id)
}

/// Revokes the token `id` in the database as the process `node` would (`None`: one that does
/// not say), and announces nothing.
async fn revoke_unannounced(app: &TestApp, id: &str, node: Option<&str>) {
    let lanyard::store::Db::Sqlite { writer, .. } = app.authority().db() else {
        unreachable!()
    };
    sqlx::query(
        "UPDATE local_api_tokens SET status = 'REVOKED', updated_at = updated_at + 1, written_by = $1
         WHERE id = $2",
    )
    .bind(node)
    .bind(id)
    .execute(&mut *writer.acquire().await.unwrap())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_change_this_node_made_is_read_back_only_once_it_missed_announcements() {
    let (app, mut gw, id) = a_listed_token().await;
    revoke_unannounced(&app, &id, Some(app.authority().node_id())).await;
    // This node publishes its changes as it makes them: the reconciliation does not read them.
    app.app().mqtt().reconcile_once().await.unwrap();
    assert!(gw.message(Duration::from_millis(500)).await.is_none());
    // Once announcements were missed, it republishes everything.
    app.app().mqtt().events_missed(1).await;
    app.app().mqtt().reconcile_once().await.unwrap();
    assert_eq!(next_list(&mut gw).await[0]["status"], "REVOKED");
}

#[tokio::test]
async fn a_change_by_a_process_that_does_not_name_itself_is_read() {
    let (app, mut gw, id) = a_listed_token().await;
    revoke_unannounced(&app, &id, None).await;
    app.app().mqtt().reconcile_once().await.unwrap();
    assert_eq!(next_list(&mut gw).await[0]["status"], "REVOKED");
}
