//! The key-encryption key (SPEC §14): the database records its check value, a node with
//! another key refuses to start, PostgreSQL never gets a key file, and `lanyard rekey` (in
//! `cli.rs`) moves every key to a new one.

use std::sync::Arc;

use lanyard::app::App;
use lanyard::config::{SecretSetting, Settings};
use lanyard::crypto::KeyEncryptionKey;
use lanyard::domain::ManualClock;

use crate::helpers::*;

/// `settings` with a new, random key-encryption key given in the config.
fn with_another_key(settings: &Settings) -> Settings {
    let mut other = settings.clone();
    other.keys.encryption_key = SecretSetting::new(KeyEncryptionKey::generate().1);
    other
}

async fn start(settings: Settings) -> anyhow::Result<App> {
    App::build_with_clock(settings, Arc::new(ManualClock::starting_now())).await
}

/// Runs a statement on the test's database, whichever it is.
pub async fn execute(url: &str, statement: &str) {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

on_both_databases! {
    async fn a_second_node_with_another_key_refuses_to_start_even_on_an_empty_database(app) {
        // The database holds no tenant and no signing key yet: only the check value tells.
        assert!(app.authority().tenants().await.unwrap().is_empty());
        let refused = start(with_another_key(&app.settings)).await.err().expect("refused");
        let message = format!("{refused:#}");
        assert!(message.contains("not the one the database records"), "{message}");
        // The first node goes on serving, and a tenant made through it works.
        let t = app.tenant("acme").await;
        app.admin_token(&t).await;
        // A node with the right key starts.
        start(app.settings.clone()).await.expect("the same key starts").shutdown().await;
    }

    async fn a_database_from_before_the_check_records_it_at_the_next_start(app) {
        app.tenant("acme").await;
        let settings = app.settings.clone();
        let app = app
            .restart_after(execute(&settings.database.url, "DELETE FROM key_encryption"))
            .await;
        // Recorded again by the restart, which first checked the key opens the stored keys.
        let refused = start(with_another_key(&app.settings)).await.err().expect("refused");
        assert!(format!("{refused:#}").contains("not the one the database records"), "{refused:#}");
        // With nothing recorded, a wrong key is caught by the keys it cannot open.
        execute(&app.settings.database.url, "DELETE FROM key_encryption").await;
        let refused = start(with_another_key(&app.settings)).await.err().expect("refused");
        assert!(format!("{refused:#}").contains("does not open stored signing key"), "{refused:#}");
        // …and nothing was recorded for it: the right key still starts.
        start(app.settings.clone()).await.expect("the right key starts").shutdown().await;
    }

    async fn with_nothing_recorded_every_stored_key_must_open(app) {
        app.tenant("acme").await;
        app.tenant("beta").await;
        let kids = app.kids("beta").await;
        let url = app.settings.database.url.clone();
        // One key sealed under something else (here: another key's blob, bound to its kid).
        execute(&url, &format!(
            "UPDATE signing_keys SET sealed_private_key = (SELECT sealed_private_key FROM signing_keys WHERE kid <> '{kid}' LIMIT 1) WHERE kid = '{kid}'",
            kid = kids[0]
        )).await;
        execute(&url, "DELETE FROM key_encryption").await;
        let refused = start(app.settings.clone()).await.err().expect("refused");
        let message = format!("{refused:#}");
        assert!(message.contains("does not open stored signing key") && message.contains(&kids[0]), "{message}");
    }
}

#[tokio::test]
async fn on_postgresql_nodes_starting_together_agree_on_one_key_and_create_no_file() {
    let Some(backend) = Backend::postgres_from_env() else {
        eprintln!("TEST_POSTGRES_URL is not set: PostgreSQL run skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.mqtt.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.database.url = database_url(&backend, dir.path()).await;
    settings.database.max_connections = 3;
    settings.keys.encryption_key_file = dir.path().join("lanyard.kek");
    settings.mailer.dir = dir.path().join("outbox");

    // No key given: the node refuses, naming the setting, and writes no file.
    let refused = start(settings.clone()).await.err().expect("refused");
    assert!(
        format!("{refused:#}").contains("keys.encryption_key"),
        "{refused:#}"
    );
    assert!(!settings.keys.encryption_key_file.exists());

    // Two nodes, each with its own key, start at the same moment on the empty database: one
    // wins, the other refuses.
    let (a, b) = tokio::join!(
        start(with_another_key(&settings)),
        start(with_another_key(&settings))
    );
    let (winner, loser) = match (a, b) {
        (Ok(app), Err(e)) | (Err(e), Ok(app)) => (app, e),
        (Ok(_), Ok(_)) => panic!("two keys were accepted for one database"),
        (Err(a), Err(b)) => panic!("both refused: {a:#} / {b:#}"),
    };
    assert!(
        format!("{loser:#}").contains("not the one the database records"),
        "{loser:#}"
    );
    assert!(!settings.keys.encryption_key_file.exists());
    winner.shutdown().await;
}
