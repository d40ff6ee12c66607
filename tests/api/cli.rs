//! The `lanyard` binary: bootstrap, config, and starts that must fail with a clear message.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use lanyard::config::Settings;
use serde_json::Value;

use crate::helpers::*;

fn lanyard<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    dir: &Path,
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .current_dir(dir)
        .args(args)
        .env_remove("LANYARD_CONFIG")
        .envs(env)
        .output()
        .expect("lanyard runs")
}

/// Runs lanyard, expects it to fail, and expects stderr to name `needle`.
fn fails_naming<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    dir: &Path,
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
    needle: &str,
) -> String {
    let out = lanyard(dir, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    stderr
}

const NO_ENV: [(&str, &str); 0] = [];

fn env_for(settings: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("LANYARD_DATABASE__URL", settings.database.url.clone()),
        (
            "LANYARD_KEYS__ENCRYPTION_KEY_FILE",
            settings.keys.encryption_key_file.display().to_string(),
        ),
        ("LANYARD_HTTP__PUBLIC_URL", PUBLIC_URL.to_owned()),
    ]
}

on_both_databases! {
    async fn bootstrap_prints_a_working_admin_client_and_a_running_server_sees_the_tenant(app) {
        let env = env_for(&app.settings);
        let out = lanyard(app.dir.path(), &["bootstrap", "--tenant", "fresh", "--name", "Fresh Energy"], env.clone());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
        assert_eq!(printed["tenant"], "fresh");
        assert_eq!(printed["issuer"], format!("{PUBLIC_URL}/t/fresh"));
        assert_eq!(printed["token_endpoint"], format!("{PUBLIC_URL}/t/fresh/oauth2/token"));
        assert!(printed["scope"].as_str().unwrap().contains("lanyard:clients:write"));
        // The running server knows the new tenant and its admin client.
        let token = app
            .token("fresh", printed["client_id"].as_str().unwrap(), printed["client_secret"].as_str().unwrap())
            .await;
        let claims = verify_with_jwks(&token, &app.jwks("fresh").await, &format!("{PUBLIC_URL}/t/fresh"), "fresh");
        assert_eq!(claims["scope"], printed["scope"]);
        // Bootstrapping again adds another admin client to the same tenant.
        let again = lanyard(app.dir.path(), &["bootstrap", "--tenant", "fresh"], env);
        let again: Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_ne!(again["client_id"], printed["client_id"]);
        assert_eq!(app.kids("fresh").await.len(), 1);
    }

    async fn a_different_key_encryption_key_stops_the_start(app) {
        app.tenant("acme").await;
        let mut env = env_for(&app.settings);
        env.push(("LANYARD_KEYS__ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()));
        fails_naming(app.dir.path(), &["migrate"], env, "keys.encryption_key");

        // A lost key file is not silently replaced either.
        std::fs::remove_file(&app.settings.keys.encryption_key_file).unwrap();
        let stderr = fails_naming(app.dir.path(), &["migrate"], env_for(&app.settings), "keys.encryption_key_file");
        assert!(stderr.contains("does not exist"), "{stderr}");
        assert!(!app.settings.keys.encryption_key_file.exists());
    }
}

#[tokio::test]
async fn the_demo_seed_runs_once_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::from_toml(include_str!("../../broker.toml")).unwrap();
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.http.public_url = PUBLIC_URL.into();
    settings.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    settings.database.url = format!("sqlite://{}/lanyard.db", dir.path().display());
    settings.keys.encryption_key_file = dir.path().join("lanyard.kek");
    settings.mailer.dir = dir.path().join("outbox");
    assert!(settings.demo.seed, "the shipped broker.toml seeds the demo");
    let app = TestApp::start(settings, dir).await;
    let seed = app.app().demo().expect("seeded");
    {
        use std::os::unix::fs::PermissionsExt;
        let kek = std::fs::metadata(&app.settings.keys.encryption_key_file).unwrap();
        assert_eq!(
            kek.permissions().mode() & 0o777,
            0o600,
            "the generated key file is private"
        );
    }
    let port = app.app().mqtt_addr().port();
    let message = lanyard::app::demo_instructions(seed, &app.settings, port);
    assert!(message.contains(&format!(
        "mosquitto_sub -h 127.0.0.1 -p {port} -u \"$CLIENT_ID\" -P \"$TOKEN\" -t 'drivr/v1/demo/jwks'"
    )));
    assert!(message.contains(seed.device_secret.expose()));
    assert!(message.contains(&format!("SYSTEM={}", seed.system_id)));
    assert!(message.contains(r#"-d '{"email":"demo@example.com","client_id":"demo-app"}'"#));
    assert!(
        message
            .contains("curl -s -u \"$CLIENT_ID:$CLIENT_SECRET\" -d grant_type=client_credentials")
    );
    let token = app
        .token("demo", "demo-device", seed.device_secret.expose())
        .await;
    let claims = verify_with_jwks(
        &token,
        &app.jwks("demo").await,
        &format!("{PUBLIC_URL}/t/demo"),
        "demo",
    );
    assert_eq!(claims["system"], seed.system_id.as_str());
    // The demo device reads the retained JWKS over MQTT, as the message says.
    let mut device = crate::mqtt::V4::connect(&app, "demo-device", &token)
        .await
        .expect("the demo device connects");
    device.subscribe("drivr/v1/demo/jwks").await;
    let jwks = device
        .message(std::time::Duration::from_secs(3))
        .await
        .expect("the JWKS");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&jwks.payload).unwrap(),
        app.jwks("demo").await
    );
    // The demo person signs in with the demo app and mints a token for the demo system.
    let tokens = crate::signin::sign_in(&app, "demo", "demo-app", "demo@example.com").await;
    let body = crate::graphql::gql(
        &app,
        tokens["access_token"].as_str(),
        "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
        serde_json::json!({ "s": seed.system_id }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let app = app.restart().await;
    assert!(
        app.app().demo().is_none(),
        "a second start does not seed again"
    );
}

#[test]
fn unknown_config_keys_and_bad_values_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broker.toml"),
        "[http]\nlisen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    fails_naming(dir.path(), &["config"], NO_ENV, "lisen");
    fails_naming(
        dir.path(),
        &["--config", "missing.toml", "config"],
        NO_ENV,
        "missing.toml",
    );

    std::fs::remove_file(dir.path().join("broker.toml")).unwrap();
    let ttl = [("LANYARD_TOKENS__ACCESS_TOKEN_TTL", "forever")];
    fails_naming(dir.path(), &["config"], ttl, "tokens.access_token_ttl");
    let db = [(
        "LANYARD_DATABASE__URL",
        "postgres://nobody@127.0.0.1:1/none",
    )];
    fails_naming(dir.path(), &["serve"], db, "database.url");
    fails_naming(
        dir.path(),
        &["bootstrap", "--tenant", "Not A Slug"],
        NO_ENV,
        "--tenant",
    );
}

#[test]
fn config_prints_the_effective_settings_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = lanyard(
        dir.path(),
        &["config"],
        [
            (
                "LANYARD_KEYS__ENCRYPTION_KEY",
                "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
            ),
            ("LANYARD_HTTP__LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("listen = \"127.0.0.1:0\""));
    assert!(!printed.contains("c2VjcmV0"));
    let reparsed = Settings::from_toml(&printed.replace("<redacted>", "")).unwrap();
    assert_eq!(reparsed.http.listen.port(), 0);
}

#[test]
fn a_taken_port_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = format!("sqlite://{}/l.db", dir.path().display());
    let env = [
        ("LANYARD_HTTP__LISTEN", addr),
        ("LANYARD_DATABASE__URL", db),
    ];
    fails_naming(dir.path(), &["serve"], env, "http.listen");
}

/// Starts `lanyard serve` on free ports in `dir`; returns the child and its HTTP address, read
/// from the start-up log line.
fn serve_in(dir: &Path, env: &[(&str, &str)]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .current_dir(dir)
        .arg("serve")
        .env_remove("LANYARD_CONFIG")
        .env("RUST_LOG", "info")
        .env("LANYARD_HTTP__LISTEN", "127.0.0.1:0")
        .env("LANYARD_MQTT__LISTEN", "127.0.0.1:0")
        .env("LANYARD_DEMO__SEED", "false")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lanyard starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("lanyard logs its HTTP address before it ends")
            .unwrap();
        if let Some(at) = line.find("http listening on ") {
            break line[at + "http listening on ".len()..]
                .trim()
                .parse()
                .unwrap();
        }
    };
    // The rest of the log is read and dropped, so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// Waits up to `deadline` for the child to end; kills it if it does not.
fn ends_within(child: &mut std::process::Child, deadline: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[tokio::test]
async fn sigterm_ends_the_process_even_while_a_request_is_stuck() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, http) = serve_in(
        dir.path(),
        &[
            ("LANYARD_LIMITS__SHUTDOWN_TIMEOUT", "1s"),
            // Nothing but the shutdown may end the stuck request.
            ("LANYARD_HTTP__HEADER_TIMEOUT", "5m"),
            ("LANYARD_HTTP__IDLE_TIMEOUT", "5m"),
        ],
    );
    // A request whose body never finishes: its handler waits for the rest.
    let mut stuck = tokio::net::TcpStream::connect(http).await.unwrap();
    stuck
        .write_all(
            b"POST /t/acme/oauth2/token HTTP/1.1\r\nHost: lanyard.test\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type=",
        )
        .await
        .unwrap();
    let res = reqwest::get(format!("http://{http}/healthz"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The signal comes while lanyard serves, well after its start.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // SAFETY: kill sends a signal to the child this test started.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = tokio::task::spawn_blocking(move || {
        ends_within(&mut child, std::time::Duration::from_secs(30)).then(|| child.wait().unwrap())
    })
    .await
    .unwrap();
    let status = status.expect("lanyard did not end after SIGTERM");
    // It ended by itself, not by the signal's default action.
    assert!(status.code().is_some(), "{status:?}");
    drop(stuck);
}
