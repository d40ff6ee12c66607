//! Token metadata (SPEC §9) through GraphQL, and where it shows: userinfo for a person,
//! introspection for a client.

use serde_json::{Value, json};

use crate::graphql::{code, gql};
use crate::helpers::{Backend, database_url};
use crate::mqtt::device;
use crate::signin::{app_client, person, sign_in};

const SET_USER: &str = "mutation($u: UUID!, $k: String!, $v: JSON!) { setUserMetadata(userUuid: $u, key: $k, value: $v) }";
const DELETE_USER: &str =
    "mutation($u: UUID!, $k: String!) { deleteUserMetadata(userUuid: $u, key: $k) }";
const SET_CLIENT: &str = "mutation($c: String!, $k: String!, $v: JSON!) { setClientMetadata(clientId: $c, key: $k, value: $v) }";

on_both_databases! {
    async fn a_persons_metadata_is_set_read_merged_into_userinfo_and_deleted(app) {
        let t = app.tenant("acme").await;
        let admin = app.admin_token(&t).await;
        let ada = person(&app, &t, "ada@example.com", "").await;
        let u = ada.id.to_string();
        let body = gql(&app, Some(&admin), SET_USER, json!({"u": u, "k": "plan", "v": {"tier": "gold", "seats": 3}})).await;
        assert_eq!(body["data"]["setUserMetadata"], true, "{body}");
        let body = gql(&app, Some(&admin), "query($u: UUID!) { user(uuid: $u) { email metadata } }", json!({"u": u})).await;
        assert_eq!(body["data"]["user"]["metadata"], json!({"ingest_context": "site-7", "plan": {"tier": "gold", "seats": 3}}), "{body}");

        let client = app_client(&app, &t).await;
        let tokens = sign_in(&app, "acme", &client, "ada@example.com").await;
        let info: Value = app.http.get(app.url("/t/acme/oauth2/userinfo")).bearer_auth(tokens["access_token"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
        assert_eq!(info["plan"]["tier"], "gold");
        assert_eq!(info["email"], "ada@example.com");

        let body = gql(&app, Some(&admin), DELETE_USER, json!({"u": u, "k": "plan"})).await;
        assert_eq!(body["data"]["deleteUserMetadata"], true);
        let info: Value = app.http.get(app.url("/t/acme/oauth2/userinfo")).bearer_auth(tokens["access_token"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
        assert!(info.get("plan").is_none(), "{info}");
    }

    async fn keys_values_and_rights_are_checked(app) {
        let t = app.tenant("acme").await;
        let admin = app.admin_token(&t).await;
        let ada = person(&app, &t, "ada@example.com", "").await;
        let u = ada.id.to_string();
        for key in ["sub", "email", "name", "client_id", "act", "Plan", "2fa", "a-b", ""] {
            let body = gql(&app, Some(&admin), SET_USER, json!({"u": u, "k": key, "v": 1})).await;
            assert_eq!(code(&body), "BAD_USER_INPUT", "{key}: {body}");
        }
        let big = "x".repeat(17 * 1024);
        let body = gql(&app, Some(&admin), SET_USER, json!({"u": u, "k": "blob", "v": big})).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        let body = gql(&app, Some(&admin), SET_USER, json!({"u": uuid::Uuid::new_v4(), "k": "plan", "v": 1})).await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");

        // The scope, and every lanyard: scope of the person changed.
        let (_, users_only) = device(&app, &t, None, "lanyard:users:write lanyard:users:read").await;
        let body = gql(&app, Some(&users_only), SET_USER, json!({"u": u, "k": "plan", "v": 1})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = gql(&app, Some(&users_only), "query($u: UUID!) { user(uuid: $u) { metadata } }", json!({"u": u})).await;
        assert_eq!(code(&body), "FORBIDDEN", "reading needs token-metadata:read: {body}");
        let (_, writer) = device(&app, &t, None, "lanyard:token-metadata:write").await;
        let boss = person(&app, &t, "boss@example.com", "lanyard:keys:write").await;
        let body = gql(&app, Some(&writer), SET_USER, json!({"u": boss.id.to_string(), "k": "plan", "v": 1})).await;
        assert_eq!(code(&body), "FORBIDDEN", "a person with more rights: {body}");
        let body = gql(&app, Some(&writer), SET_USER, json!({"u": u, "k": "plan", "v": 1})).await;
        assert_eq!(body["data"]["setUserMetadata"], true, "{body}");
        let body = gql(&app, Some(&writer), SET_CLIENT, json!({"c": t.admin_id.to_string(), "k": "plan", "v": 1})).await;
        assert_eq!(code(&body), "FORBIDDEN", "the admin client has more rights: {body}");
    }

    async fn a_holder_keeps_at_most_32_keys_and_concurrent_writers_keep_theirs(app) {
        let t = app.tenant("acme").await;
        let admin = app.admin_token(&t).await;
        let ada = person(&app, &t, "ada@example.com", "").await;
        let u = ada.id.to_string();
        // One key is there already (ingest_context); 31 more at once, each its own request.
        let writes = (0..31).map(|i| {
            let (app, admin, u) = (&app, &admin, &u);
            async move { gql(app, Some(admin), SET_USER, json!({"u": u, "k": format!("k{i}"), "v": i})).await }
        });
        for body in futures::future::join_all(writes).await {
            assert_eq!(body["data"]["setUserMetadata"], true, "{body}");
        }
        let body = gql(&app, Some(&admin), "query($u: UUID!) { user(uuid: $u) { metadata } }", json!({"u": u})).await;
        assert_eq!(body["data"]["user"]["metadata"].as_object().unwrap().len(), 32, "none lost: {body}");
        let body = gql(&app, Some(&admin), SET_USER, json!({"u": u, "k": "one_more", "v": 1})).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        let body = gql(&app, Some(&admin), SET_USER, json!({"u": u, "k": "k0", "v": "changed"})).await;
        assert_eq!(body["data"]["setUserMetadata"], true, "an existing key may change: {body}");
        // Deleting needs the same rights as setting.
        let (_, writer) = device(&app, &t, None, "lanyard:token-metadata:write").await;
        let boss = person(&app, &t, "boss@example.com", "lanyard:keys:write").await;
        let body = gql(&app, Some(&writer), DELETE_USER, json!({"u": boss.id.to_string(), "k": "ingest_context"})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }

    async fn a_clients_metadata_travels_in_introspection(app) {
        let t = app.tenant("acme").await;
        let admin = app.admin_token(&t).await;
        let (id, token) = device(&app, &t, None, "").await;
        let body = gql(&app, Some(&admin), SET_CLIENT, json!({"c": id.to_string(), "k": "site", "v": "plant-4"})).await;
        assert_eq!(body["data"]["setClientMetadata"], true, "{body}");
        let body = gql(&app, Some(&admin), "query($c: String!) { client(clientId: $c) { name metadata } }", json!({"c": id.to_string()})).await;
        assert_eq!(body["data"]["client"]["metadata"], json!({"site": "plant-4"}), "{body}");
        let answer = app.introspect(&t, &token).await;
        assert_eq!(answer["client_metadata"], json!({"site": "plant-4"}), "{answer}");
        let plain = app.introspect(&t, &admin).await;
        assert!(plain.get("client_metadata").is_none(), "no metadata, no member: {plain}");
        let body = gql(&app, Some(&admin), "mutation($c: String!) { deleteClientMetadata(clientId: $c, key: \"site\") }", json!({"c": id.to_string()})).await;
        assert_eq!(body["data"]["deleteClientMetadata"], true, "{body}");
        assert!(app.introspect(&t, &token).await.get("client_metadata").is_none());
    }
}

/// The upgrade that brings token metadata gives its scopes to the admin clients that held the
/// whole catalogue before, and to no other; on both databases.
#[tokio::test]
async fn an_upgraded_tenants_admin_gets_the_metadata_scopes() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}?mode=rwc",
        database_url(&Backend::Sqlite, dir.path()).await
    );
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    upgrade_clients!(db, "sqlite");
    if let Some(backend) = Backend::postgres_from_env() {
        let url = database_url(&backend, dir.path()).await;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        upgrade_clients!(db, "postgres");
    }
}

macro_rules! upgrade_clients {
    ($db:ident, $name:literal) => {{
        let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let (before, upgrade): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f.file_name().unwrap().to_str().unwrap() < "0010");
        for file in &before {
            sqlx::raw_sql(&std::fs::read_to_string(file).unwrap()).execute(&mut $db).await.unwrap();
        }
        sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ('t', 'acme', 'Acme', 1)").execute(&mut $db).await.unwrap();
        let old_catalogue: Vec<&str> = lanyard::domain::scope::ADMIN_CATALOGUE.iter().copied().filter(|s| !s.starts_with("lanyard:token-metadata:") && !s.starts_with("lanyard:applications:") && *s != "lanyard:local-tokens:mint").collect();
        let partial = old_catalogue[1..].join(" ");
        let full = format!("sensor:read {}", old_catalogue.join(" "));
        for (id, scopes) in [("admin", full.as_str()), ("clients-admin", partial.as_str()), ("device", "")] {
            sqlx::query("INSERT INTO clients (client_id, tenant_id, name, is_public, scopes, grant_types, metadata, created_at, secret_rotated_at) VALUES ($1, 't', 'c', FALSE, $2, 'client_credentials', '{}', 1, 1)")
                .bind(id).bind(scopes).execute(&mut $db).await.unwrap();
        }
        for file in &upgrade {
            sqlx::raw_sql(&std::fs::read_to_string(file).unwrap()).execute(&mut $db).await.unwrap();
        }
        let scopes = |id: &'static str| sqlx::query_scalar::<_, String>("SELECT scopes FROM clients WHERE client_id = $1").bind(id);
        let admin: String = scopes("admin").fetch_one(&mut $db).await.unwrap();
        let admin = lanyard::domain::ScopeSet::parse(&admin).unwrap();
        assert!(admin.contains_str("lanyard:token-metadata:write") && admin.contains_str("lanyard:token-metadata:read") && admin.contains_str("sensor:read"), "{admin:?}");
        assert!(admin.contains_str("lanyard:applications:write") && !admin.contains_str("lanyard:local-tokens:mint"), "{admin:?}");
        for id in ["clients-admin", "device"] {
            let held: String = scopes(id).fetch_one(&mut $db).await.unwrap();
            assert!(!held.contains("token-metadata") && !held.contains("applications"), "{id}: {held}");
        }
    }};
}
use upgrade_clients;
