//! Two `lanyard serve` nodes on one PostgreSQL database: each node's devices see the changes
//! made through the other, within seconds. Runs only when `TEST_POSTGRES_URL` is set.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use serde_json::{Value, json};

use crate::graphql::{claims_of, gql, world};
use crate::helpers::*;
use crate::mqtt::{V4, V5, device};

/// In a module named so the PostgreSQL suite (`cargo test --test api -- postgres`) runs them.
mod postgres {
    use super::*;

    async fn second_node(app: &TestApp) -> TestApp {
        TestApp::start(app.settings.clone(), tempfile::tempdir().unwrap()).await
    }

    /// Revokes `token` through `node`'s revocation endpoint as the tenant's admin.
    async fn revoke_through(node: &TestApp, t: &TestTenant, token: &str) {
        let res = node
            .post_form(
                &format!("/t/{}/oauth2/revoke", t.slug),
                Some((&t.admin_id, &t.admin_secret)),
                &format!("token={}", urlencode(token)),
            )
            .await;
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn two_nodes_on_postgresql_see_each_others_changes() {
        let Some(backend) = Backend::postgres_from_env() else {
            eprintln!("TEST_POSTGRES_URL is not set: the two-node test is skipped");
            return;
        };
        let a = TestApp::spawn(backend).await;
        let b = second_node(&a).await;
        let w = world(&a).await;

        // A device on node B watches its list and the JWKS.
        let (id, token) = device(&b, &w.t, Some(&w.system), "").await;
        let mut gw = V4::connect(&b, &id, &token).await.unwrap();
        gw.subscribe(&format!(
            "drivr/v1/acme/authorization/localApiTokens/{}",
            w.system
        ))
        .await;
        assert_eq!(
            gw.message(Duration::from_secs(5))
                .await
                .map(|m| m.payload.to_vec()),
            Some(b"[]".to_vec())
        );

        // A token minted through node A reaches node B's device.
        let body = gql(
            &a,
            Some(&w.user_token),
            "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
            json!({ "s": w.system }),
        )
        .await;
        let minted = body["data"]["createLocalApiToken"]["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let msg = gw
            .message(Duration::from_secs(5))
            .await
            .expect("the list on the other node");
        let list: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(list[0]["uuid"], minted.as_str());

        // A role given through node A is in the next token node B mints, though node B has
        // minted (and remembered the person's roles) before.
        let mint_on_b = || async {
            let body = gql(
                &b,
                Some(&w.user_token),
                "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { jwt } }",
                json!({ "s": w.system }),
            )
            .await;
            let jwt = body["data"]["createLocalApiToken"]["jwt"].as_str().unwrap();
            claims_of(jwt.strip_prefix("CLOUD-").unwrap())["roles"]
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(mint_on_b().await, 1);
        let auditor = a
            .authority()
            .create_role(&w.t.tenant, "Auditor")
            .await
            .unwrap();
        a.authority()
            .assign_role(&w.t.tenant, &w.user, &w.system, &auditor.id)
            .await
            .unwrap();
        let mut roles = 0;
        for _ in 0..50 {
            roles = mint_on_b().await;
            if roles == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(roles, 2, "node B mints with the roles it read before");

        // A token revoked through node A ends its session on node B at once.
        let (other_id, other_token) = device(&a, &w.t, None, "").await;
        let mut session = V5::connect(&b, &other_id, &other_token).await.unwrap();
        revoke_through(&a, &w.t, &other_token).await;
        assert_eq!(
            session.disconnected().await,
            DisconnectReasonCode::NotAuthorized
        );
        assert!(V5::connect(&b, &other_id, &other_token).await.is_err());

        // A token node B never saw is refused too: node B holds the revocation list in memory.
        let unseen = a.admin_token(&w.t).await;
        assert!(a.is_active(&w.t, &unseen).await);
        revoke_through(&a, &w.t, &unseen).await;
        let mut refused = false;
        for _ in 0..50 {
            if V4::connect(&b, "unseen", &unseen).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "node B accepts a token revoked on node A");

        // A client secret rotated through node A stops working on node B at once.
        b.admin_token(&w.t).await;
        let reg = a
            .authority()
            .rotate_client_secret(&w.t.tenant, &w.t.admin_id)
            .await
            .unwrap();
        let mut refused = false;
        for _ in 0..50 {
            let res = b
                .post_form(
                    "/t/acme/oauth2/token",
                    Some((&w.t.admin_id, &w.t.admin_secret)),
                    "grant_type=client_credentials",
                )
                .await;
            if res.status() == 401 {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "node B still accepts the old secret");
        b.token("acme", &w.t.admin_id, reg.client_secret.unwrap().expose())
            .await;

        // A key rotated through node A is in node B's JWKS at once.
        let mut watcher = V4::connect(&b, "jwks-watcher", &token).await.unwrap();
        watcher.subscribe("drivr/v1/acme/jwks").await;
        watcher
            .message(Duration::from_secs(3))
            .await
            .expect("the JWKS");
        a.authority().rotate_signing_key(&w.t.tenant).await.unwrap();
        let msg = watcher
            .message(Duration::from_secs(5))
            .await
            .expect("the new JWKS on node B");
        let jwks: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_eq!(jwks, b.jwks("acme").await);
    }

    #[tokio::test]
    async fn the_key_job_runs_on_one_node_at_a_time() {
        let Some(backend) = Backend::postgres_from_env() else {
            eprintln!("TEST_POSTGRES_URL is not set: the two-node test is skipped");
            return;
        };
        let a = TestApp::spawn(backend).await;
        let b = second_node(&a).await;
        a.tenant("acme").await;
        // While node A holds the key job, node B skips its round.
        let lock = lanyard::store::jobs::try_lock(
            a.authority().db(),
            lanyard::authority::keys::KEY_JOB_LOCK,
        )
        .await
        .unwrap()
        .expect("node A takes the lock");
        assert_eq!(
            b.authority().maintain_keys_exclusively().await.unwrap(),
            None
        );
        lock.release().await.unwrap();
        assert!(
            b.authority()
                .maintain_keys_exclusively()
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_database_away_for_a_while_is_reported_and_publishing_resumes() {
        use sqlx::Connection;
        let Some(backend) = Backend::postgres_from_env() else {
            eprintln!("TEST_POSTGRES_URL is not set: the outage test is skipped");
            return;
        };
        let Backend::Postgres(base) = &backend else {
            unreachable!()
        };
        let mut admin = sqlx::PgConnection::connect(base).await.unwrap();
        let app = TestApp::spawn(backend.clone()).await;
        let w = world(&app).await;
        let db = url::Url::parse(&app.settings.database.url)
            .unwrap()
            .path()
            .trim_start_matches('/')
            .to_owned();
        let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
        let mut gw = V4::connect(&app, &id, &token).await.unwrap();
        let topic = format!("drivr/v1/acme/authorization/localApiTokens/{}", w.system);
        gw.subscribe(&topic).await;
        gw.message(Duration::from_secs(3)).await.expect("the list");

        // The database goes away: no new connections, the open ones cut.
        sqlx::query(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&db)
            .execute(&mut admin)
            .await
            .unwrap();
        let mut reported = false;
        for _ in 0..50 {
            let res = app.http.get(app.url("/readyz")).send().await.unwrap();
            if res.status() == 503 {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["database"], "unreachable");
                reported = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reported, "readiness did not report the database");
        // Connected devices are not disturbed: nothing on their path asks the database.
        gw.client
            .subscribe("drivr/v1/acme/jwks", rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        assert!(
            gw.message(Duration::from_secs(3)).await.is_some(),
            "the device lost its session"
        );

        // It comes back: readiness recovers and changes reach the devices again.
        sqlx::query(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut ready = false;
        for _ in 0..100 {
            if app
                .http
                .get(app.url("/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "readiness did not recover");
        let body = gql(&app, Some(&w.user_token),
            "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
            json!({ "s": w.system })).await;
        let minted = body["data"]["createLocalApiToken"]["uuid"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned();
        let mut seen = false;
        while let Some(msg) = gw.message(Duration::from_secs(5)).await {
            if msg.topic == topic && String::from_utf8_lossy(&msg.payload).contains(&minted) {
                seen = true;
                break;
            }
        }
        assert!(seen, "the list did not follow after the outage");
    }

    #[tokio::test]
    async fn a_revocation_through_one_node_sets_the_bit_in_the_other_nodes_status_list() {
        let Some(backend) = Backend::postgres_from_env() else {
            eprintln!("TEST_POSTGRES_URL is not set: the two-node test is skipped");
            return;
        };
        let a = TestApp::spawn(backend).await;
        let b = second_node(&a).await;
        let w = world(&a).await;
        // Tokens minted through both nodes: indices are never given out twice.
        let mint = |node: &'static str| {
            let app = if node == "a" { &a } else { &b };
            let token = w.user_token.clone();
            let system = w.system.clone();
            async move {
                let body = gql(app, Some(&token),
                    "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid jwt } }",
                    json!({ "s": system })).await;
                let created = &body["data"]["createLocalApiToken"];
                let jwt = created["jwt"].as_str().unwrap_or_else(|| panic!("{body}"));
                let idx =
                    claims_of(jwt.strip_prefix("CLOUD-").unwrap())["status"]["status_list"]["idx"]
                        .as_i64()
                        .unwrap();
                (created["uuid"].as_str().unwrap().to_owned(), idx)
            }
        };
        let mut indices = Vec::new();
        let mut on_a = None;
        for node in ["a", "b", "a", "b"] {
            let (uuid, idx) = mint(node).await;
            indices.push(idx);
            on_a.get_or_insert(uuid);
        }
        let mut unique = indices.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "an index was given out twice: {indices:?}");

        // A device on node B holds the status list; the revocation goes through node A.
        let topic = format!("drivr/v1/acme/statuslists/{}", w.system);
        let (id, token) = device(&b, &w.t, Some(&w.system), "").await;
        let mut gw = V4::connect(&b, &id, &token).await.unwrap();
        gw.subscribe(&topic).await;
        gw.message(Duration::from_secs(5))
            .await
            .expect("the retained status list");
        gql(
            &a,
            Some(&w.user_token),
            "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }",
            json!({ "u": on_a.unwrap() }),
        )
        .await;
        let started = std::time::Instant::now();
        let msg = gw
            .message(Duration::from_secs(5))
            .await
            .expect("the new list on the other node within 5 s");
        assert!(started.elapsed() < Duration::from_secs(5));
        let jwt = String::from_utf8(msg.payload.to_vec()).unwrap();
        let lst = claims_of(&jwt)["status_list"]["lst"]
            .as_str()
            .unwrap()
            .to_owned();
        let bits = {
            use base64::Engine;
            use std::io::Read;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(lst)
                .unwrap();
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let idx = indices[0] as usize;
        assert_eq!(bits[idx / 8] >> (idx % 8) & 1, 1, "bit {idx} is not set");
        for &other in &indices[1..] {
            let other = other as usize;
            assert_eq!(bits[other / 8] >> (other % 8) & 1, 0, "bit {other} is set");
        }
        // Over HTTP from node B too.
        let res = b
            .http
            .get(b.url(&format!("/t/acme/statuslists/{}", w.system)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), jwt);
    }
}
