//! The `lanyard` binary: bootstrap, config, and starts that must fail with a clear message.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use lanyard::config::Settings;
use serde_json::{Value, json};

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
        assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
        let again: Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_ne!(again["client_id"], printed["client_id"]);
        assert_eq!(app.kids("fresh").await.len(), 1);
    }

    async fn rekey_moves_every_signing_key_to_the_new_key_and_the_old_one_stops_starting(app) {
        let t = app.tenant("acme").await;
        let kids = app.kids("acme").await;
        let new_key = app.dir.path().join("new.kek");
        std::fs::write(&new_key, lanyard::crypto::KeyEncryptionKey::generate().1).unwrap();
        let new_text = std::fs::read_to_string(&new_key).unwrap();
        let env = env_for(&app.settings);

        // A file that holds no key changes nothing.
        let bad = app.dir.path().join("bad.kek");
        std::fs::write(&bad, "not a key").unwrap();
        fails_naming(app.dir.path(), &["rekey", "--new-key-file", bad.to_str().unwrap()], env.clone(), "--new-key-file");

        let out = lanyard(app.dir.path(), &["rekey", "--new-key-file", new_key.to_str().unwrap()], env.clone());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("resealed 1 signing key"));

        // The node still running with the old key serves what it holds, and stores no new key.
        app.admin_token(&t).await;
        let err = app.authority().rotate_signing_key(&t.tenant).await.unwrap_err();
        assert!(err.to_string().contains("key-encryption key"), "{err}");
        assert_eq!(app.kids("acme").await, kids);

        // The old key no longer starts; the new one does, and opens the same keys.
        let stderr = fails_naming(app.dir.path(), &["migrate"], env.clone(), "not the one the database records");
        assert!(!stderr.contains(new_text.trim()), "{stderr}");
        let mut with_new = env.clone();
        with_new.push(("LANYARD_KEYS__ENCRYPTION_KEY", new_text.trim().to_owned()));
        let out = lanyard(app.dir.path(), &["bootstrap", "--tenant", "acme"], with_new.clone());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        // A node with the new key signs with the same, resealed key.
        let mut settings = app.settings.clone();
        settings.keys.encryption_key = lanyard::config::SecretSetting::new(new_text.trim());
        let node = lanyard::app::App::build_with_clock(settings, std::sync::Arc::new(lanyard::domain::ManualClock::starting_now()))
            .await
            .expect("the new key starts");
        let res = reqwest::Client::new()
            .post(format!("http://{}/t/acme/oauth2/token", node.http_addr()))
            .basic_auth(printed["client_id"].as_str().unwrap(), printed["client_secret"].as_str())
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let token: Value = res.json().await.unwrap();
        let kid = header_of(token["access_token"].as_str().unwrap())["kid"].clone();
        assert_eq!(json!([kid]), json!(kids));
        node.shutdown().await;
    }

    async fn a_different_key_encryption_key_stops_the_start(app) {
        app.tenant("acme").await;
        let mut env = env_for(&app.settings);
        env.push(("LANYARD_KEYS__ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()));
        fails_naming(app.dir.path(), &["migrate"], env, "keys.encryption_key");

        // A lost key file is not silently replaced either.
        std::fs::remove_file(&app.settings.keys.encryption_key_file).unwrap();
        let stderr = fails_naming(app.dir.path(), &["migrate"], env_for(&app.settings), "keys.encryption_key_file");
        if app.settings.database.url.starts_with("sqlite:") {
            assert!(stderr.contains("does not exist"), "{stderr}");
        } else {
            // PostgreSQL never gets a key file: the key must be given.
            assert!(stderr.contains("on PostgreSQL a key-encryption key must be given"), "{stderr}");
        }
        assert!(!app.settings.keys.encryption_key_file.exists());
    }
}

#[tokio::test]
async fn the_demo_seed_runs_once_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::from_toml(include_str!("../../broker.toml")).unwrap();
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.http.public_url = PUBLIC_URL.into();
    settings.mqtt.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
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
    let port = app.mqtt_addr().port();
    let message = lanyard::app::demo_instructions(seed, &app.settings, Some(port));
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
            (
                "LANYARD_DATABASE__URL",
                "postgres://lanyard:hunter2@db.example/lanyard",
            ),
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
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("postgres://lanyard:***@db.example/lanyard"),
        "{printed}"
    );
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
        ("LANYARD_HTTP__LISTEN", addr.clone()),
        ("LANYARD_DATABASE__URL", db.clone()),
    ];
    fails_naming(dir.path(), &["serve"], env, "http.listen");
    let env = [
        ("LANYARD_HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("LANYARD_MQTT__LISTEN", "127.0.0.1:0".to_owned()),
        ("LANYARD_METRICS__LISTEN", addr),
        ("LANYARD_DATABASE__URL", db),
    ];
    fails_naming(dir.path(), &["serve"], env, "metrics.listen");
}

/// A `lanyard serve` child: its listeners, and its log as far as it has been read.
struct Served {
    child: std::process::Child,
    http: std::net::SocketAddr,
    mqtt: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Starts `lanyard serve` on free ports in `dir`, with `env`, and `open_files` as its soft and
/// hard `RLIMIT_NOFILE` when given; returns once both listeners are logged.
fn serve_in(dir: &Path, env: &[(&str, &str)], open_files: Option<u64>) -> Served {
    use std::io::BufRead;
    let mut command = Command::new(env!("CARGO_BIN_EXE_lanyard"));
    command
        .current_dir(dir)
        .arg("serve")
        .env_remove("LANYARD_CONFIG")
        .env("RUST_LOG", "info")
        .env("LANYARD_HTTP__LISTEN", "127.0.0.1:0")
        .env("LANYARD_MQTT__LISTEN", "127.0.0.1:0")
        .env("LANYARD_METRICS__LISTEN", "127.0.0.1:0")
        .env("LANYARD_DEMO__SEED", "false")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(limit) = open_files {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().expect("lanyard starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (mut http, mut mqtt) = (None, None);
    while http.is_none() || mqtt.is_none() {
        let line = lines
            .next()
            .expect("lanyard logs its listeners before it ends")
            .unwrap();
        // A JSON log line carries the message in `fields.message`.
        let message = match serde_json::from_str::<Value>(&line) {
            Ok(object) => object["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            Err(_) => line.clone(),
        };
        for (marker, addr) in [
            ("http listening on ", &mut http),
            ("mqtt listening on ", &mut mqtt),
        ] {
            if let Some(at) = message.find(marker) {
                *addr = Some(message[at + marker.len()..].trim().parse().unwrap());
            }
        }
        log.lock().unwrap().push_str(&(line + "\n"));
    }
    // The rest of the log is kept as it comes, so the child never blocks on a full pipe.
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    Served {
        child,
        http: http.unwrap(),
        mqtt: mqtt.unwrap(),
        log,
    }
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
    let Served {
        mut child, http, ..
    } = serve_in(
        dir.path(),
        &[
            ("LANYARD_LIMITS__SHUTDOWN_TIMEOUT", "1s"),
            // Nothing but the shutdown may end the stuck request.
            ("LANYARD_HTTP__HEADER_TIMEOUT", "5m"),
            ("LANYARD_HTTP__IDLE_TIMEOUT", "5m"),
        ],
        None,
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

#[tokio::test]
async fn connections_from_many_addresses_stay_within_the_open_file_limit() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    // 400 descriptors: after the headroom, about 50 HTTP and 150 MQTT connections.
    let mut served = serve_in(
        dir.path(),
        &[
            ("LANYARD_HTTP__HEADER_TIMEOUT", "5m"),
            ("LANYARD_MQTT__CONNECT_TIMEOUT", "5m"),
        ],
        Some(400),
    );
    // 400 connections, one from each of 400 loopback addresses: the cap per address does not
    // help here, the budget must.
    let mut held = Vec::new();
    for i in 0..400u32 {
        let from = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 1, 0, 1)) + i);
        let to = if i % 2 == 0 { served.http } else { served.mqtt };
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        held.push(socket.connect(to).await.expect("the kernel accepts"));
    }
    // The excess is closed at once; what is kept stays open (its timeouts are minutes).
    let closed = futures::future::join_all(held.iter_mut().map(|stream| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await
    .into_iter()
    .filter(|closed| *closed)
    .count();
    assert!(
        closed >= 100,
        "only {closed} of 400 connections were closed"
    );
    assert!(closed < 400, "every connection was closed");
    drop(held);
    // Once they are gone, lanyard answers again.
    let healthz = format!("http://{}/healthz", served.http);
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Ok(res) = reqwest::get(&healthz).await
                && res.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let log = served.log.lock().unwrap().clone();
    let _ = served.child.kill();
    let _ = served.child.wait();
    assert!(answered.is_ok(), "lanyard stopped answering: {log}");
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("connections: open-file limit 400"), "{log}");
}

#[tokio::test]
async fn a_server_failure_is_logged_once_with_its_cause_and_answered_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = lanyard(dir.path(), &["bootstrap", "--tenant", "acme"], NO_ENV);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Served {
        mut child,
        http,
        log,
        ..
    } = serve_in(dir.path(), &[], None);
    // The database loses a table under the running server.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}/data/lanyard.db",
        dir.path().display()
    ))
    .await
    .unwrap();
    sqlx::query("ALTER TABLE clients RENAME TO clients_elsewhere")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    // A client nobody has seen must be looked up, and the lookup fails.
    let res = reqwest::Client::new()
        .post(format!("http://{http}/t/acme/oauth2/token"))
        .basic_auth("nobody-knows-me", Some("secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let body = res.text().await.unwrap();
    assert!(body.contains("\"server_error\""), "{body}");
    assert!(
        !body.contains("clients"),
        "internals reached the client: {body}"
    );

    // The log tells what failed and why, once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let logged = loop {
        let logged = log.lock().unwrap().clone();
        if logged.contains("no such table: clients") || std::time::Instant::now() > deadline {
            break logged;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("no such table: clients"))
        .collect();
    assert_eq!(lines.len(), 1, "{logged}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("client lookup"),
        "{}",
        lines[0]
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_that_jq_reads() {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        mut child,
        http,
        log,
        ..
    } = serve_in(dir.path(), &[("LANYARD_LOG__FORMAT", "json")], None);
    // A refused token request logs too (at info, with its fields).
    let res = reqwest::Client::new()
        .post(format!("http://{http}/t/nope/oauth2/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // SAFETY: kill sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let logged = log.lock().unwrap().clone();
    assert!(logged.lines().count() >= 3, "{logged}");
    let Ok(jq) = Command::new("jq")
        .args([
            "-e",
            "-c",
            "select(.timestamp and .level and .fields.message) | .level",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        skipped("jq is not installed (apt-get install jq)");
        return;
    };
    let mut jq = jq;
    use std::io::Write;
    jq.stdin
        .take()
        .unwrap()
        .write_all(logged.as_bytes())
        .unwrap();
    let out = jq.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jq: {}\n{logged}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every line is an object with a time, a level and a message.
    let levels = String::from_utf8(out.stdout).unwrap();
    assert_eq!(levels.lines().count(), logged.lines().count(), "{logged}");
    assert!(levels.lines().all(|l| l.starts_with('"')), "{levels}");
}

#[test]
fn nats_key_prints_an_account_key_whose_seed_signs_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = lanyard(dir.path(), &["nats-key"], NO_ENV);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {text}"))
            .to_owned()
    };
    let (issuer, seed) = (field("issuer"), field("seed"));
    assert!(issuer.starts_with('A') && seed.starts_with("SA"), "{text}");
    let key = nkeys::KeyPair::from_seed(&seed).unwrap();
    assert_eq!(key.public_key(), issuer);
    // Each run makes a new key.
    let again = lanyard(dir.path(), &["nats-key"], NO_ENV);
    assert!(!String::from_utf8_lossy(&again.stdout).contains(&seed));
}
