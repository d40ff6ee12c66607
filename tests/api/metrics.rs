//! Prometheus metrics (SPEC §14) through the real metrics listener: every family moved by the
//! doors, the scrape checked by `promtool check metrics` and read by a real Prometheus server,
//! the listener off or its port taken, and the operator material in `docs/` (alert rules
//! checked by `promtool check rules`, the dashboard naming only families that exist).
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package; without them the tests
//! that need them say `SKIPPED:` and why, which `.ci/run` refuses.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use lanyard::domain::acl::{AclAction, AclRule};
use rumqttc::QoS;
use serde_json::{Value, json};

use crate::graphql::gql;
use crate::helpers::*;
use crate::mqtt::{V4, device};
use crate::signin::{app_client, person, sign_in};

/// Whether `tool` runs (`tool --version`).
fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET /metrics` on the app's metrics listener.
pub async fn scrape(app: &TestApp) -> String {
    let addr = app
        .app()
        .metrics_addr()
        .expect("the metrics listener is on");
    let res = app
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4",
        "the text exposition format"
    );
    res.text().await.unwrap()
}

/// The value of the sample `name{labels…}` in a scrape, if it is there.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let has = |(k, v): &(&str, &str)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            };
            (series_name == name && labels.iter().all(has)).then(|| value.parse().ok())?
        })
}

/// The families a scrape declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Scrapes until `name{labels}` reaches `at_least` (what lanyard does after a change, such as
/// publishing a retained message, happens a moment later); the last scrape.
async fn scrape_until(app: &TestApp, name: &str, labels: &[(&str, &str)], at_least: f64) -> String {
    for _ in 0..100 {
        let text = scrape(app).await;
        if sample(&text, name, labels).is_some_and(|v| v >= at_least) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!(
        "{name}{labels:?} never reached {at_least}:\n{}",
        scrape(app).await
    );
}

const MINT: &str =
    "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { jwt } }";

/// Starts lanyard on `backend` with a rule letting devices publish under their own tree, moves
/// every family through the doors, and returns the app (a device still connected) and a scrape
/// taken once every asynchronous publish has been counted.
async fn exercised(backend: Backend) -> (TestApp, V4, String) {
    let app = TestApp::spawn_with(backend, |s| {
        s.mqtt.acl = vec![AclRule {
            topic: "tenants/{slug}/clients/{client_id}/#".into(),
            action: AclAction::PublishSubscribe,
            scope: None,
        }];
    })
    .await;
    let t = app.tenant("acme").await;

    // Tokens of each grant, and refusals.
    app.admin_token(&t).await;
    let wrong = app
        .post_form(
            "/t/acme/oauth2/token",
            Some((&t.admin_id, "not-the-secret")),
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let unknown = app
        .post_form("/t/acme/oauth2/token", None, "grant_type=password")
        .await;
    assert_eq!(unknown.status(), 400);
    let system = app
        .authority()
        .create_system(&t.tenant, "Gateway")
        .await
        .unwrap();
    let role = app
        .authority()
        .create_role(&t.tenant, "Domain Owner")
        .await
        .unwrap();
    let ada = person(&app, &t, "ada@example.com", "").await;
    app.authority()
        .assign_role(&t.tenant, &ada.id, &system, &role.id)
        .await
        .unwrap();
    let client = app_client(&app, &t).await;
    let signed_in = sign_in(&app, "acme", &client, "ada@example.com").await;
    let refreshed = app
        .post_form(
            "/t/acme/oauth2/token",
            None,
            &format!(
                "grant_type=refresh_token&client_id={client}&refresh_token={}",
                urlencode(signed_in["refresh_token"].as_str().unwrap())
            ),
        )
        .await;
    assert_eq!(refreshed.status(), 200);

    // GraphQL: a local API token minted, and a request without a token.
    let minted = gql(
        &app,
        signed_in["access_token"].as_str(),
        MINT,
        json!({ "s": system }),
    )
    .await;
    assert!(minted["errors"].is_null(), "{minted}");
    let anonymous = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // MQTT: a CONNECT refused, one accepted, a publish routed back to its subscriber and one
    // refused.
    assert!(V4::connect(&app, "intruder", "not-a-token").await.is_err());
    let (device_id, token) = device(&app, &t, None, "").await;
    let mut mqtt = V4::connect(&app, "sensor", &token).await.unwrap();
    let own = format!("tenants/acme/clients/{device_id}/telemetry");
    mqtt.subscribe(&own).await;
    mqtt.client
        .publish(&own, QoS::AtMostOnce, false, "21.5")
        .await
        .unwrap();
    assert!(mqtt.message(Duration::from_secs(3)).await.is_some());
    mqtt.client
        .publish("tenants/other/secret", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();

    // A key rotation republishes the tenant's JWKS.
    app.authority().rotate_signing_key(&t.tenant).await.unwrap();

    let tokens = [("topic", "tokens")];
    scrape_until(&app, "lanyard_mqtt_retained_published_total", &tokens, 1.0).await;
    scrape_until(
        &app,
        "lanyard_mqtt_messages_received_total",
        &[("outcome", "refused")],
        1.0,
    )
    .await;
    // The tenant's first key, then the rotated one.
    let text = scrape_until(
        &app,
        "lanyard_mqtt_retained_published_total",
        &[("topic", "jwks")],
        2.0,
    )
    .await;
    (app, mqtt, text)
}

/// Every family the doors record into moved as they were used.
fn check_families(text: &str) {
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
    };
    let issued = "lanyard_tokens_issued_total";
    // The admin's token, and the device's.
    assert_eq!(value(issued, &[("grant", "client_credentials")]), 2.0);
    assert_eq!(value(issued, &[("grant", "otp")]), 1.0);
    assert_eq!(value(issued, &[("grant", "refresh_token")]), 1.0);
    let refusals = "lanyard_token_refusals_total";
    assert_eq!(value(refusals, &[("reason", "invalid_client")]), 1.0);
    assert_eq!(
        value(refusals, &[("reason", "unsupported_grant_type")]),
        1.0
    );
    assert_eq!(value(refusals, &[("reason", "server_error")]), 0.0);
    let minted = "lanyard_local_tokens_minted_total";
    assert_eq!(value(minted, &[("lifetime", "expiring")]), 1.0);
    assert_eq!(value(minted, &[("lifetime", "permanent")]), 0.0);
    // "not-a-token" is not a JWS at all: it names no tenant to check it against.
    let rejected = value(
        "lanyard_token_rejections_total",
        &[("reason", "wrong_audience")],
    );
    assert_eq!(rejected, 1.0);

    // HTTP durations by route template, never by the path itself.
    let token_route = [("route", "/t/{slug}/oauth2/token"), ("status", "200")];
    assert_eq!(
        value("lanyard_http_request_duration_seconds_count", &token_route),
        4.0
    );
    let unauthenticated = [("route", "/t/{slug}/oauth2/token"), ("status", "401")];
    assert_eq!(
        value(
            "lanyard_http_request_duration_seconds_count",
            &unauthenticated
        ),
        1.0
    );
    assert!(value("lanyard_http_request_duration_seconds_sum", &token_route) > 0.0);
    assert!(
        !text.contains("route=\"/t/acme"),
        "a raw path became a label:\n{text}"
    );
    let graphql = "lanyard_graphql_request_duration_seconds_count";
    assert_eq!(value(graphql, &[("outcome", "ok")]), 1.0);
    assert_eq!(value(graphql, &[("outcome", "unauthenticated")]), 1.0);

    // MQTT.
    let connects = "lanyard_mqtt_connects_total";
    assert_eq!(value(connects, &[("code", "success")]), 1.0);
    assert_eq!(value(connects, &[("code", "not_authorized")]), 1.0);
    assert_eq!(value("lanyard_mqtt_connections_open", &[]), 1.0);
    assert!(value("lanyard_mqtt_connections_limit", &[]) >= 1.0);
    let received = "lanyard_mqtt_messages_received_total";
    assert_eq!(value(received, &[("outcome", "routed")]), 1.0);
    assert_eq!(value(received, &[("outcome", "refused")]), 1.0);
    assert!(value("lanyard_mqtt_messages_delivered_total", &[]) >= 1.0);
    assert!(
        value(
            "lanyard_mqtt_retained_published_total",
            &[("topic", "jwks")]
        ) >= 2.0
    );
    assert!(
        value(
            "lanyard_mqtt_retained_published_total",
            &[("topic", "tokens")]
        ) >= 1.0
    );

    // Signing: four access tokens, one local token.
    let signing = "lanyard_signing_duration_seconds_count";
    assert_eq!(value(signing, &[("token", "access")]), 4.0);
    assert_eq!(value(signing, &[("token", "local")]), 1.0);
    assert!(
        value(
            "lanyard_signing_duration_seconds_sum",
            &[("token", "access")]
        ) > 0.0
    );

    // The database: waits of every kind, and the pools.
    for kind in ["read", "write", "transaction"] {
        let waits = value("lanyard_db_wait_seconds_count", &[("kind", kind)]);
        assert!(waits >= 1.0, "no {kind} wait counted");
    }
    let pools: Vec<&str> = if text.contains("pool=\"postgres\"") {
        vec!["postgres"]
    } else {
        vec!["read", "write"]
    };
    for pool in pools {
        assert!(value("lanyard_db_pool_connections", &[("pool", pool)]) >= 1.0);
        assert!(value("lanyard_db_pool_idle_connections", &[("pool", pool)]) >= 0.0);
    }
    assert_eq!(value("lanyard_build_info", &[]), 1.0);
    // Two more, the NATS callout's, move in `nats.rs`; the dropped messages' in
    // `mqtt_conformance.rs`.
    assert_eq!(value("lanyard_mqtt_messages_dropped_total", &[]), 0.0);
    let served = families(text);
    assert_eq!(served.len(), 20, "{served:?}");
    assert!(
        served.iter().all(|f| f.starts_with("lanyard_")),
        "{served:?}"
    );
}

/// `promtool check metrics` on a scrape: nothing found.
fn promtool_finds_nothing(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {said}");
    assert!(
        said.trim().is_empty(),
        "promtool check metrics found: {said}"
    );
}

async fn every_family_moves_and_promtool_finds_nothing(backend: Backend) {
    let (app, _mqtt, text) = exercised(backend).await;
    check_families(&text);
    if available("promtool") {
        promtool_finds_nothing(&text);
    } else {
        skipped("promtool not found: `apt-get install prometheus` to check the scrape with it");
    }
    drop(app);
}

mod every_family_moves_and_promtool_finds_nothing {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        every_family_moves_and_promtool_finds_nothing(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        match Backend::postgres_from_env() {
            Some(backend) => every_family_moves_and_promtool_finds_nothing(backend).await,
            None => eprintln!("TEST_POSTGRES_URL is not set: PostgreSQL run skipped"),
        }
    }
}

/// A child process, killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_prometheus_server_scrapes_lanyard_and_answers_promql() {
    if !available("prometheus") {
        skipped("prometheus not found: `apt-get install prometheus` to scrape lanyard with it");
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    for _ in 0..3 {
        app.admin_token(&t).await;
    }
    let target = app.app().metrics_addr().unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: lanyard\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(work.path().join("prometheus.log")).unwrap();
    let _server = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    );
    let query = |q: &str| {
        let url = format!(
            "http://127.0.0.1:{port}/api/v1/query?query={}",
            urlencode(q)
        );
        let http = app.http.clone();
        async move {
            let res = http.get(url).send().await.ok()?;
            let body: Value = res.json().await.ok()?;
            let result = body["data"]["result"].as_array()?.first()?.clone();
            result["value"][1].as_str()?.parse::<f64>().ok()
        }
    };
    let issued = "lanyard_tokens_issued_total{grant=\"client_credentials\",job=\"lanyard\"}";
    let mut seen = None;
    for _ in 0..150 {
        seen = query(issued).await;
        if seen == Some(3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(work.path().join("prometheus.log")).unwrap_or_default();
    assert_eq!(
        seen,
        Some(3.0),
        "Prometheus did not see the counter; its log:\n{log}"
    );
    assert_eq!(query("up{job=\"lanyard\"}").await, Some(1.0));
}

#[tokio::test]
async fn an_empty_listen_address_serves_and_records_nothing() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.metrics.listen = None).await;
    assert_eq!(app.app().metrics_addr(), None);
    let t = app.tenant("acme").await;
    app.admin_token(&t).await;
    let metrics = app.authority().metrics();
    assert!(!metrics.is_on());
    assert_eq!(metrics.render(), "");
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = lanyard::config::Settings::default();
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.mqtt.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.metrics.listen = Some(addr);
    settings.database.url = format!("sqlite://{}/lanyard.db", dir.path().display());
    settings.keys.encryption_key_file = dir.path().join("lanyard.kek");
    settings.mailer.dir = dir.path().join("outbox");
    let Err(e) = lanyard::app::App::build(settings).await else {
        panic!("lanyard started on a taken metrics port");
    };
    let message = format!("{e:#}");
    assert!(message.contains("metrics.listen"), "{message}");
    assert!(message.contains(&addr.to_string()), "{message}");
}

#[tokio::test]
async fn the_metrics_listener_answers_only_get_metrics() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let addr = app.app().metrics_addr().unwrap();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/metrics/"),
        ("GET", "/graphql"),
        ("POST", "/metrics"),
    ] {
        let res = app
            .http
            .request(method.parse().unwrap(), format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{method} {path}");
    }
}

/// The metric names a PromQL expression uses (`lanyard_…`), histogram series by their family.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lanyard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_use_families_lanyard_serves() {
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
    let (app, _mqtt, text) = exercised(Backend::Sqlite).await;
    let served = families(&text);

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{docs}/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(
                target["expr"]
                    .as_str()
                    .expect("a PromQL expression")
                    .to_owned(),
            );
        }
    }
    assert!(
        exprs.len() >= 7,
        "the dashboard has a panel for each family group"
    );
    let alerts = std::fs::read_to_string(format!("{docs}/alerts.yml")).unwrap();
    exprs.extend(
        alerts
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(str::to_owned),
    );
    let mut used = BTreeSet::new();
    for expr in &exprs {
        used.extend(names_in(expr));
    }
    assert!(used.len() >= 8, "{used:?}");
    for name in &used {
        assert!(
            served.contains(name),
            "{name} is used in docs/ but lanyard serves no such family"
        );
    }

    if available("promtool") {
        let out = Command::new("promtool")
            .args(["check", "rules", &format!("{docs}/alerts.yml")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        skipped("promtool not found: `apt-get install prometheus` to check docs/alerts.yml");
    }
    drop(app);
}
