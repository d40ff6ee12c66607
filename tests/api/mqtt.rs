//! The MQTT door with real clients (rumqttc, MQTT 3.1.1 and 5.0): authentication, permissions,
//! the retained JWKS, and sessions ended by expiry, revocation, deletion and key invalidation.

use std::time::Duration;

use lanyard::authority::NewClient;
use lanyard::domain::acl::{AclAction, AclRule};
use lanyard::domain::{GrantType, ScopeSet};
pub use rumqttc::SubscribeReasonCode as Sub4;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as V5Code, DisconnectReasonCode, Packet as P5, PubAckReason,
    SubscribeReasonCode as Sub5,
};
use rumqttc::{ConnectReturnCode as V4Code, Packet as P4, QoS};
use tokio::sync::mpsc;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(400);

/// A device client of tenant `t` (bound to `system` if given) and a fresh token for it.
pub async fn device(
    app: &TestApp,
    t: &TestTenant,
    system: Option<&str>,
    scopes: &str,
) -> (ClientId, String) {
    let (id, secret) = app
        .client(
            t,
            NewClient {
                name: "device".into(),
                scopes: ScopeSet::parse(scopes).unwrap(),
                grant_types: vec![GrantType::ClientCredentials],
                system_id: system.map(|s| SystemId::parse(s).unwrap()),
                ..NewClient::default()
            },
        )
        .await;
    let token = app.token(&t.slug, &id, &secret).await;
    (id, token)
}

pub async fn system(app: &TestApp, t: &TestTenant) -> SystemId {
    app.authority()
        .create_system(&t.tenant, "Gateway")
        .await
        .unwrap()
}

/// An MQTT 3.1.1 client whose packets arrive on a channel.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<P4, String>>,
    /// Packets that arrived while waiting for another (a message before its SUBACK).
    backlog: std::collections::VecDeque<P4>,
    task: tokio::task::JoinHandle<()>,
}

/// Dropping a client drops its connection, without DISCONNECT.
impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V4 {
    pub async fn connect(app: &TestApp, id: &str, password: &str) -> Result<V4, V4Code> {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", app.mqtt_addr().port());
        options.set_credentials("device", password);
        options.set_keep_alive(Duration::from_secs(30));
        // Token lists grow past rumqttc's default of 10 KiB.
        options.set_max_packet_size(4 << 20, 64 << 10);
        Self::with_options(options).await
    }

    pub async fn with_options(options: rumqttc::MqttOptions) -> Result<V4, V4Code> {
        Self::with_options_within(options, WAIT).await
    }

    /// [`V4::with_options`], waiting up to `wait` for the CONNACK.
    pub async fn with_options_within(
        options: rumqttc::MqttOptions,
        wait: Duration,
    ) -> Result<V4, V4Code> {
        let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        let _ = tx.send(Err(format!("{code:?}")));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(Ok(P4::ConnAck(ack)))) if ack.code == V4Code::Success => Ok(V4 {
                client,
                rx,
                task,
                backlog: Default::default(),
            }),
            Ok(Some(Ok(P4::ConnAck(ack)))) => Err(ack.code),
            Ok(Some(Err(e))) => Err(parse_v4_code(&e)),
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }

    /// The next packet (not a PINGRESP), or None after `wait` or when the connection ended.
    pub async fn next(&mut self, wait: Duration) -> Option<Result<P4, String>> {
        match self.backlog.pop_front() {
            Some(p) => Some(Ok(p)),
            None => self.recv(wait).await,
        }
    }

    /// The next packet from the connection itself, past the backlog.
    async fn recv(&mut self, wait: Duration) -> Option<Result<P4, String>> {
        loop {
            match tokio::time::timeout(wait, self.rx.recv()).await {
                Ok(Some(Ok(P4::PingResp))) => continue,
                Ok(item) => return item,
                Err(_) => return None,
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str) -> Sub4 {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match self.recv(WAIT).await {
                Some(Ok(P4::SubAck(ack))) => return ack.return_codes[0],
                Some(Ok(other)) => self.backlog.push_back(other),
                other => panic!("no SUBACK: {other:?}"),
            }
        }
    }

    /// The next message, skipping acknowledgements.
    pub async fn message(&mut self, wait: Duration) -> Option<rumqttc::Publish> {
        loop {
            match self.next(wait).await? {
                Ok(P4::Publish(p)) => return Some(p),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

fn parse_v4_code(e: &str) -> V4Code {
    match e {
        "BadUserNamePassword" => V4Code::BadUserNamePassword,
        "NotAuthorized" => V4Code::NotAuthorized,
        "BadClientId" => V4Code::BadClientId,
        "ServiceUnavailable" => V4Code::ServiceUnavailable,
        other => panic!("connection failed without a CONNACK: {other}"),
    }
}

/// An MQTT 5.0 client whose packets arrive on a channel.
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub connack: rumqttc::v5::mqttbytes::v5::ConnAck,
    rx: mpsc::UnboundedReceiver<Result<P5, String>>,
    backlog: std::collections::VecDeque<P5>,
    task: tokio::task::JoinHandle<()>,
}

impl V5 {
    pub async fn connect(app: &TestApp, id: &str, password: &str) -> Result<V5, V5Code> {
        Self::with_options(options_v5(app, id, password)).await
    }

    pub async fn with_options(options: rumqttc::v5::MqttOptions) -> Result<V5, V5Code> {
        let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
                        let _ = tx.send(Err(format!("{code:?}")));
                        return;
                    }
                    // rumqttc reports the server's DISCONNECT as an error.
                    Err(rumqttc::v5::ConnectionError::MqttState(
                        rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                    )) => {
                        let disconnect = rumqttc::v5::mqttbytes::v5::Disconnect::new(reason_code);
                        let _ = tx.send(Ok(P5::Disconnect(disconnect)));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(Ok(P5::ConnAck(ack)))) if ack.code == V5Code::Success => Ok(V5 {
                client,
                connack: ack,
                rx,
                task,
                backlog: Default::default(),
            }),
            Ok(Some(Ok(P5::ConnAck(ack)))) => Err(ack.code),
            Ok(Some(Err(e))) => Err(match e.as_str() {
                "NotAuthorized" => V5Code::NotAuthorized,
                "BadUserNamePassword" => V5Code::BadUserNamePassword,
                "ClientIdentifierNotValid" => V5Code::ClientIdentifierNotValid,
                "BadAuthenticationMethod" => V5Code::BadAuthenticationMethod,
                other => panic!("connection failed without a CONNACK: {other}"),
            }),
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    pub async fn next(&mut self, wait: Duration) -> Option<Result<P5, String>> {
        match self.backlog.pop_front() {
            Some(p) => Some(Ok(p)),
            None => self.recv(wait).await,
        }
    }

    /// The next packet from the connection itself, past the backlog.
    async fn recv(&mut self, wait: Duration) -> Option<Result<P5, String>> {
        loop {
            match tokio::time::timeout(wait, self.rx.recv()).await {
                Ok(Some(Ok(P5::PingResp(_)))) => continue,
                Ok(item) => return item,
                Err(_) => return None,
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str) -> Sub5 {
        self.client
            .subscribe(filter, Q5::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match self.recv(WAIT).await {
                Some(Ok(P5::SubAck(ack))) => return ack.return_codes[0],
                Some(Ok(other)) => self.backlog.push_back(other),
                other => panic!("no SUBACK: {other:?}"),
            }
        }
    }

    pub async fn message(&mut self, wait: Duration) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
        loop {
            match self.next(wait).await? {
                Ok(P5::Publish(p)) => return Some(p),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits for the server's DISCONNECT and returns its reason.
    pub async fn disconnected(&mut self) -> DisconnectReasonCode {
        loop {
            match self.next(WAIT).await {
                Some(Ok(P5::Disconnect(d))) => return d.reason_code,
                Some(Ok(_)) => continue,
                other => panic!("no DISCONNECT: {other:?}"),
            }
        }
    }
}

pub fn options_v5(app: &TestApp, id: &str, password: &str) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", app.mqtt_addr().port());
    options.set_credentials("device", password);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

fn rule(topic: &str, action: AclAction, scope: Option<&str>) -> AclRule {
    AclRule {
        topic: topic.into(),
        action,
        scope: scope.map(Into::into),
    }
}

/// Everything may be published and subscribed, as far as rules go: only the built-in
/// protections stand between a client and lanyard's topics.
pub async fn wide_open() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.acl = vec![rule("#", AclAction::PublishSubscribe, None)];
    })
    .await
}

/// Signs arbitrary claims with the tenant's real signing key.
async fn forge(app: &TestApp, t: &TestTenant, typ: &str, claims: serde_json::Value) -> String {
    let keys = app.authority().keyring(&t.tenant).await.unwrap();
    let signer = keys.signer.as_ref().unwrap();
    lanyard::crypto::jws::sign(&signer.key, &signer.kid, typ, &claims)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_device_connects_with_its_token_and_receives_the_retained_jwks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let jwks = app.jwks("acme").await;

    let mut v4 = V4::connect(&app, &id, &token)
        .await
        .expect("3.1.1 connects");
    assert_eq!(
        v4.subscribe("drivr/v1/acme/jwks").await,
        Sub4::Success(QoS::AtLeastOnce)
    );
    let msg = v4.message(WAIT).await.expect("the retained JWKS");
    assert!(msg.retain);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap(),
        jwks
    );

    let mut v5 = V5::connect(&app, &format!("{id}-5"), &format!("Bearer {token}"))
        .await
        .expect("5.0 connects, Bearer prefix tolerated");
    let props = v5
        .connack
        .properties
        .clone()
        .expect("5.0 CONNACK properties");
    assert_eq!(
        props.topic_alias_max, None,
        "no topic-alias maximum is advertised"
    );
    assert!(props.max_packet_size.is_some());
    assert_eq!(
        v5.subscribe("drivr/v1/acme/jwks").await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    let msg = v5.message(WAIT).await.expect("the retained JWKS");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap(),
        jwks
    );
}

#[tokio::test]
async fn the_retained_jwks_follows_a_key_rotation() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let mut v5 = V5::connect(&app, &id, &token).await.unwrap();
    v5.subscribe("drivr/v1/acme/jwks").await;
    v5.message(WAIT).await.expect("the first JWKS");
    app.authority().rotate_signing_key(&t.tenant).await.unwrap();
    let msg = v5.message(WAIT).await.expect("the JWKS after rotation");
    let keys: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert_eq!(keys, app.jwks("acme").await);
    // Invalidating the new key takes it out of both JWKS at once.
    let pending = app
        .authority()
        .signing_keys(&t.tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.status == lanyard::domain::KeyStatus::Pending)
        .unwrap();
    app.authority()
        .invalidate_signing_key(&t.tenant, &pending.kid)
        .await
        .unwrap();
    let msg = v5.message(WAIT).await.expect("the JWKS after invalidation");
    let keys: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert!(!keys.to_string().contains(&pending.kid));
    assert_eq!(keys, app.jwks("acme").await);
}

#[tokio::test]
async fn tokens_that_are_not_good_access_tokens_are_refused_with_a_reason() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let iss = format!("{PUBLIC_URL}/t/acme");
    let base = serde_json::json!({
        "iss": iss, "sub": id, "aud": "acme", "client_id": id, "scope": "",
        "iat": now(), "nbf": now(), "exp": now() + 600, "jti": "j-1",
    });
    let with = |k: &str, v: serde_json::Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let system = system(&app, &t).await;
    let local = format!(
        "CLOUD-{}",
        forge(
            &app,
            &t,
            "JWT",
            serde_json::json!({
                "jti": "l-1", "sub": id, "iss": iss, "aud": system, "iat": now(), "nbf": now(),
                "name": "A", "typename": "USER", "roles": [],
            })
        )
        .await
    );
    let refused = [
        ("garbage", "garbage".to_owned()),
        (
            "an opaque refresh token",
            "mR3f-5Jx2vQ9wYkz1Lp8aN0cT4bH7dE6gU_iOsWqZrA".to_owned(),
        ),
        ("a local API token", local.clone()),
        (
            "a local API token without its prefix",
            local["CLOUD-".len()..].to_owned(),
        ),
        (
            "another issuer",
            forge(
                &app,
                &t,
                "at+jwt",
                with("iss", "http://elsewhere/t/acme".into()),
            )
            .await,
        ),
        (
            "another audience",
            forge(&app, &t, "at+jwt", with("aud", "other".into())).await,
        ),
        (
            "expired",
            forge(&app, &t, "at+jwt", with("exp", (now() - 10).into())).await,
        ),
        (
            "not yet valid",
            forge(&app, &t, "at+jwt", with("nbf", (now() + 3600).into())).await,
        ),
        (
            "a client that does not exist",
            forge(&app, &t, "at+jwt", with("client_id", "ghost".into())).await,
        ),
        (
            "a tampered signature",
            format!("{}x", &token[..token.len() - 1]),
        ),
    ];
    for (what, password) in refused {
        assert_eq!(
            V4::connect(&app, "d4", &password).await.err(),
            Some(V4Code::NotAuthorized),
            "3.1.1: {what}"
        );
        assert_eq!(
            V5::connect(&app, "d5", &password).await.err(),
            Some(V5Code::NotAuthorized),
            "5.0: {what}"
        );
    }
    // The forged claims themselves are fine: signed the same way, they connect.
    let good = forge(&app, &t, "at+jwt", base).await;
    assert!(V4::connect(&app, "d4", &good).await.is_ok());
    // No password at all is a bad user name or password.
    let mut options = rumqttc::MqttOptions::new("d4", "127.0.0.1", app.mqtt_addr().port());
    options.set_keep_alive(Duration::from_secs(30));
    assert_eq!(
        V4::with_options(options).await.err(),
        Some(V4Code::BadUserNamePassword)
    );
}

#[tokio::test]
async fn nobody_can_poison_the_jwks_topic() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let jwks = app.jwks("acme").await;
    let mut watcher = V5::connect(&app, "watcher", &token).await.unwrap();
    watcher.subscribe("drivr/v1/acme/jwks").await;
    watcher.message(WAIT).await.expect("the current JWKS");

    let topic = "drivr/v1/acme/jwks";
    let forged = br#"{"keys":[{"kty":"RSA","kid":"evil","n":"AQAB","e":"AQAB"}]}"#.to_vec();
    let mut v5 = V5::connect(&app, &id, &token).await.unwrap();
    v5.client
        .publish(topic, Q5::AtLeastOnce, true, forged.clone())
        .await
        .unwrap();
    loop {
        match v5.next(WAIT).await {
            Some(Ok(P5::PubAck(ack))) => {
                assert_eq!(ack.reason, PubAckReason::NotAuthorized);
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("no PUBACK: {other:?}"),
        }
    }
    v5.client
        .publish(topic, Q5::AtMostOnce, true, Vec::new())
        .await
        .unwrap();
    v5.client
        .publish(topic, Q5::AtMostOnce, false, forged.clone())
        .await
        .unwrap();
    v5.client
        .publish(
            "drivr/v1/acme/anything",
            Q5::AtMostOnce,
            false,
            forged.clone(),
        )
        .await
        .unwrap();
    let mut v4 = V4::connect(&app, &format!("{id}-4"), &token).await.unwrap();
    v4.client
        .publish(topic, QoS::AtLeastOnce, true, forged.clone())
        .await
        .unwrap();
    v4.client
        .publish(topic, QoS::ExactlyOnce, true, Vec::new())
        .await
        .unwrap();
    v4.client
        .publish(topic, QoS::AtMostOnce, false, forged.clone())
        .await
        .unwrap();
    // A will on the topic is refused at CONNECT, on both versions.
    let mut options = rumqttc::MqttOptions::new("willer", "127.0.0.1", app.mqtt_addr().port());
    options.set_credentials("d", token.clone());
    options.set_last_will(rumqttc::LastWill::new(
        topic,
        forged.clone(),
        QoS::AtMostOnce,
        true,
    ));
    assert_eq!(
        V4::with_options(options).await.err(),
        Some(V4Code::NotAuthorized)
    );
    let mut options = options_v5(&app, "willer5", &token);
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        topic,
        forged.clone(),
        Q5::AtMostOnce,
        true,
        None,
    ));
    assert_eq!(
        V5::with_options(options).await.err(),
        Some(V5Code::NotAuthorized)
    );
    // The clients stay connected and nothing reached anyone.
    assert!(
        watcher.message(QUIET).await.is_none(),
        "a forged publish was delivered"
    );
    assert_eq!(v5.subscribe("ok/x").await, Sub5::Success(Q5::AtLeastOnce));
    assert_eq!(v4.subscribe("ok/y").await, Sub4::Success(QoS::AtLeastOnce));
    let mut fresh = V4::connect(&app, "fresh", &token).await.unwrap();
    fresh.subscribe(topic).await;
    let msg = fresh
        .message(WAIT)
        .await
        .expect("the retained JWKS is still there");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap(),
        jwks
    );
}

#[tokio::test]
async fn tenants_do_not_see_each_others_topics() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let acme = app.tenant("acme").await;
    app.tenant("other").await;
    let (id, token) = device(&app, &acme, None, "").await;
    let mut v4 = V4::connect(&app, &id, &token).await.unwrap();
    let mut v5 = V5::connect(&app, &format!("{id}-5"), &token).await.unwrap();
    for filter in [
        "drivr/v1/other/jwks",
        "drivr/v1/+/jwks",
        "drivr/v1/#",
        "#",
        "+/v1/acme/jwks",
        "$share/g/drivr/v1/other/jwks",
        "$SYS/#",
        "$share/g/#",
    ] {
        assert_eq!(v4.subscribe(filter).await, Sub4::Failure, "3.1.1: {filter}");
        assert_eq!(
            v5.subscribe(filter).await,
            Sub5::NotAuthorized,
            "5.0: {filter}"
        );
    }
    // A `$` filter is refused, not a reason to drop the client.
    assert_eq!(
        v4.subscribe("drivr/v1/acme/jwks").await,
        Sub4::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        v5.subscribe("$share/g/drivr/v1/acme/jwks").await,
        Sub5::Success(Q5::AtLeastOnce)
    );
}

#[tokio::test]
async fn a_systems_token_list_is_for_its_device_and_for_local_token_readers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let mine = system(&app, &t).await;
    let theirs = system(&app, &t).await;
    let list = |s: &str| format!("drivr/v1/acme/authorization/localApiTokens/{s}");
    let (id, token) = device(&app, &t, Some(&mine), "").await;
    let mut v5 = V5::connect(&app, &id, &token).await.unwrap();
    assert_eq!(
        v5.subscribe(&list(&mine)).await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    assert_eq!(v5.subscribe(&list(&theirs)).await, Sub5::NotAuthorized);
    assert_eq!(v5.subscribe(&list("+")).await, Sub5::NotAuthorized);
    let mut v4 = V4::connect(&app, &format!("{id}-4"), &token).await.unwrap();
    assert_eq!(
        v4.subscribe(&list(&mine)).await,
        Sub4::Success(QoS::AtLeastOnce)
    );
    assert_eq!(v4.subscribe(&list(&theirs)).await, Sub4::Failure);

    let (unbound, token) = device(&app, &t, None, "").await;
    let mut v4 = V4::connect(&app, &unbound, &token).await.unwrap();
    assert_eq!(v4.subscribe(&list(&mine)).await, Sub4::Failure);

    let (reader, token) = device(&app, &t, None, "lanyard:local-tokens:read").await;
    let mut v4 = V4::connect(&app, &reader, &token).await.unwrap();
    assert_eq!(
        v4.subscribe(&list("+")).await,
        Sub4::Success(QoS::AtLeastOnce)
    );
    assert_eq!(v4.subscribe(&list("#")).await, Sub4::Failure);
    assert_eq!(
        v4.subscribe("drivr/v1/other/authorization/localApiTokens/+")
            .await,
        Sub4::Failure
    );
}

#[tokio::test]
async fn configured_rules_apply_per_identity_and_scope() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.acl = vec![
            rule(
                "tenants/{slug}/clients/{client_id}/#",
                AclAction::PublishSubscribe,
                None,
            ),
            rule(
                "tenants/{slug}/clients/+/telemetry",
                AclAction::Subscribe,
                Some("sensor:read"),
            ),
        ];
    })
    .await;
    let t = app.tenant("acme").await;
    app.authority()
        .create_scope(&t.tenant, "sensor:read", None)
        .await
        .unwrap();
    let (sensor, sensor_token) = device(&app, &t, None, "").await;
    let (other, other_token) = device(&app, &t, None, "").await;
    let (_, reader_token) = device(&app, &t, None, "sensor:read").await;

    let mut reader = V5::connect(&app, "reader", &reader_token).await.unwrap();
    assert_eq!(
        reader.subscribe("tenants/acme/clients/+/telemetry").await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    let mut nosy = V5::connect(&app, "nosy", &other_token).await.unwrap();
    assert_eq!(
        nosy.subscribe("tenants/acme/clients/+/telemetry").await,
        Sub5::NotAuthorized
    );
    assert_eq!(
        nosy.subscribe(&format!("tenants/acme/clients/{sensor}/#"))
            .await,
        Sub5::NotAuthorized
    );
    assert_eq!(
        nosy.subscribe(&format!("tenants/acme/clients/{other}/#"))
            .await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    let mut nosy4 = V4::connect(&app, "nosy4", &other_token).await.unwrap();
    assert_eq!(
        nosy4.subscribe("tenants/acme/clients/+/telemetry").await,
        Sub4::Failure
    );
    assert_eq!(
        nosy4
            .subscribe(&format!("tenants/acme/clients/{other}/x"))
            .await,
        Sub4::Success(QoS::AtLeastOnce)
    );
    let mut reader4 = V4::connect(&app, "reader4", &reader_token).await.unwrap();
    assert_eq!(
        reader4.subscribe("tenants/acme/clients/+/telemetry").await,
        Sub4::Success(QoS::AtLeastOnce)
    );

    let s = V5::connect(&app, &sensor, &sensor_token).await.unwrap();
    let mine = format!("tenants/acme/clients/{sensor}/telemetry");
    s.client
        .publish(&mine, Q5::AtLeastOnce, false, b"21.5".to_vec())
        .await
        .unwrap();
    let msg = reader.message(WAIT).await.expect("the reading");
    assert_eq!(&msg.payload[..], b"21.5");
    let msg = reader4.message(WAIT).await.expect("the reading, on 3.1.1");
    assert_eq!(&msg.payload[..], b"21.5");
    // Publishing into another client's tree is refused.
    let theirs = format!("tenants/acme/clients/{other}/telemetry");
    s.client
        .publish(&theirs, Q5::AtLeastOnce, false, b"x".to_vec())
        .await
        .unwrap();
    assert!(nosy.message(QUIET).await.is_none());
    assert!(reader.message(QUIET).await.is_none());
}

#[tokio::test]
async fn another_principal_cannot_take_over_a_session() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token_a) = device(&app, &t, None, "").await;
    let (_, token_b) = device(&app, &t, None, "").await;
    let mut holder = V5::connect(&app, "gw-1", &token_a).await.unwrap();
    assert_eq!(
        V5::connect(&app, "gw-1", &token_b).await.err(),
        Some(V5Code::NotAuthorized)
    );
    assert_eq!(
        V4::connect(&app, "gw-1", &token_b).await.err(),
        Some(V4Code::NotAuthorized)
    );
    // The holder is still connected and served.
    assert_eq!(
        holder.subscribe("x/y").await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    // The same id in another tenant is another session.
    let other = app.tenant("other").await;
    let (_, token_c) = device(&app, &other, None, "").await;
    let mut elsewhere = V5::connect(&app, "gw-1", &token_c)
        .await
        .expect("ids are per tenant");
    assert_eq!(
        elsewhere.subscribe("x/y").await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    assert!(
        holder.next(QUIET).await.is_none(),
        "the holder was disturbed"
    );
    // The same principal may take its own session over; the old connection is told why.
    let _again = V5::connect(&app, "gw-1", &token_a).await.unwrap();
    assert_eq!(
        holder.disconnected().await,
        DisconnectReasonCode::SessionTakenOver
    );
}

#[tokio::test]
async fn a_stored_session_is_not_resumed_by_another_principal() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token_a) = device(&app, &t, None, "").await;
    let (_, token_b) = device(&app, &t, None, "").await;
    let mut options = rumqttc::MqttOptions::new("keeper", "127.0.0.1", app.mqtt_addr().port());
    options.set_credentials("d", token_a.clone());
    options.set_clean_session(false);
    let mut a = V4::with_options(options.clone()).await.unwrap();
    a.subscribe("secret/#").await;
    a.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stolen = options.clone();
    stolen.set_credentials("d", token_b);
    assert_eq!(
        V4::with_options(stolen).await.err(),
        Some(V4Code::NotAuthorized)
    );
    // The owner resumes it.
    let mut back = V4::with_options(options).await.unwrap();
    let publisher = V4::connect(&app, "pub", &token_a).await.unwrap();
    publisher
        .client
        .publish("secret/1", QoS::AtLeastOnce, false, b"s".to_vec())
        .await
        .unwrap();
    assert_eq!(
        &back
            .message(WAIT)
            .await
            .expect("the resumed subscription")
            .payload[..],
        b"s"
    );
}

#[tokio::test]
async fn a_stored_session_is_not_resumed_under_other_permissions() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.acl = vec![
            rule("feed/#", AclAction::Publish, None),
            rule("feed/#", AclAction::Subscribe, Some("sensor:read")),
        ];
    })
    .await;
    let t = app.tenant("acme").await;
    for scope in ["sensor:read", "video:gold"] {
        app.authority()
            .create_scope(&t.tenant, scope, None)
            .await
            .unwrap();
    }
    let (id, secret) = app
        .client(
            &t,
            NewClient {
                name: "reader".into(),
                scopes: ScopeSet::parse("sensor:read video:gold").unwrap(),
                grant_types: vec![GrantType::ClientCredentials],
                ..NewClient::default()
            },
        )
        .await;
    let reader = app.token("acme", &id, &secret).await;
    // The same client, this time with only one of its scopes.
    let res = app
        .post_form(
            "/t/acme/oauth2/token",
            Some((&id, &secret)),
            "grant_type=client_credentials&scope=video:gold",
        )
        .await;
    let body: serde_json::Value = res.json().await.unwrap();
    let narrower = body["access_token"].as_str().unwrap().to_owned();

    let mut options = rumqttc::MqttOptions::new("keeper", "127.0.0.1", app.mqtt_addr().port());
    options.set_credentials("d", reader);
    options.set_clean_session(false);
    let mut a = V4::with_options(options.clone()).await.unwrap();
    assert_eq!(a.subscribe("feed/#").await, Sub4::Success(QoS::AtLeastOnce));
    a.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Without sensor:read the subscription it made with it does not come back.
    options.set_credentials("d", narrower.clone());
    let mut back = V4::with_options(options).await.unwrap();
    let publisher = V4::connect(&app, "pub", &narrower).await.unwrap();
    publisher
        .client
        .publish("feed/1", QoS::AtLeastOnce, false, b"s".to_vec())
        .await
        .unwrap();
    assert!(
        back.message(QUIET).await.is_none(),
        "a subscription outlived its scope"
    );
}

/// Waits until the router holds `n` links; the feeder counts them as it handles commands.
pub async fn router_links_settle(app: &TestApp, n: usize) {
    let mqtt = app.app().mqtt();
    let deadline = tokio::time::Instant::now() + WAIT;
    while mqtt.router_links() != n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mqtt.router_links(), n, "links open in the router");
}

#[tokio::test]
async fn router_links_are_opened_when_needed_and_never_left_behind() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    let base = app.app().mqtt().router_links();

    // A clean session costs the router nothing until it subscribes or publishes.
    let mut a = V4::connect(&app, "a", &token).await.unwrap();
    router_links_settle(&app, base).await;
    a.subscribe("reuse/a").await;
    router_links_settle(&app, base + 1).await;
    a.client.disconnect().await.unwrap();
    router_links_settle(&app, base).await;

    // The next clean session may get the same pooled link; it inherits nothing.
    let mut b = V4::connect(&app, "b", &token).await.unwrap();
    b.subscribe("reuse/b").await;
    let publisher = V4::connect(&app, "pub", &token).await.unwrap();
    for topic in ["reuse/a", "reuse/b"] {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let msg = b.message(WAIT).await.expect("its own subscription");
    assert_eq!(msg.topic, "reuse/b");
    assert!(
        b.message(QUIET).await.is_none(),
        "a previous holder's subscription"
    );
    router_links_settle(&app, base + 2).await;

    // Taking a clean session over closes its link.
    let _b_again = V4::connect(&app, "b", &token).await.unwrap();
    router_links_settle(&app, base + 1).await;

    // A persistent session keeps one link under its name while connected, and a clean session
    // with the same id discards it.
    let mut options = rumqttc::MqttOptions::new("p", "127.0.0.1", app.mqtt_addr().port());
    options.set_credentials("d", token.clone());
    options.set_clean_session(false);
    let mut p = V4::with_options(options.clone()).await.unwrap();
    p.subscribe("keep/#").await;
    router_links_settle(&app, base + 2).await;
    let _p_again = V4::with_options(options).await.unwrap();
    router_links_settle(&app, base + 2).await;
    let _p_clean = V4::connect(&app, "p", &token).await.unwrap();
    router_links_settle(&app, base + 1).await;
}

on_both_databases! {
    async fn revoking_a_token_ends_its_live_sessions(app) {
        let t = app.tenant("acme").await;
        let (id, token) = device(&app, &t, None, "").await;
        let mut v5 = V5::connect(&app, &id, &token).await.unwrap();
        let mut v4 = V4::connect(&app, &format!("{id}-4"), &token).await.unwrap();
        let res = app
            .post_form(
                "/t/acme/oauth2/revoke",
                Some((&t.admin_id, &t.admin_secret)),
                &format!("token={}", urlencode(&token)),
            )
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(v5.disconnected().await, DisconnectReasonCode::NotAuthorized);
        assert!(matches!(v4.next(WAIT).await, Some(Err(_)) | None), "3.1.1 session closed");
        assert_eq!(V5::connect(&app, &id, &token).await.err(), Some(V5Code::NotAuthorized));
    }

    async fn deleting_a_client_ends_its_sessions(app) {
        let t = app.tenant("acme").await;
        let (id, token) = device(&app, &t, None, "").await;
        let (_, bystander_token) = device(&app, &t, None, "").await;
        let mut v5 = V5::connect(&app, &id, &token).await.unwrap();
        let mut bystander = V5::connect(&app, "bystander", &bystander_token).await.unwrap();
        app.authority().delete_client(&t.tenant, &id).await.unwrap();
        assert_eq!(v5.disconnected().await, DisconnectReasonCode::NotAuthorized);
        assert_eq!(V5::connect(&app, &id, &token).await.err(), Some(V5Code::NotAuthorized));
        assert!(bystander.next(QUIET).await.is_none(), "another client's session ended");
    }

    async fn deleting_a_person_ends_the_sessions_of_their_tokens(app) {
        let t = app.tenant("acme").await;
        let ada = crate::signin::person(&app, &t, "ada@example.com", "").await;
        let client = crate::signin::app_client(&app, &t).await;
        let tokens = crate::signin::sign_in(&app, "acme", &client, "ada@example.com").await;
        let token = tokens["access_token"].as_str().unwrap();
        let mut v5 = V5::connect(&app, "ada-phone", token).await.expect("a person's token connects");
        app.authority().delete_user(&t.tenant, &ada.id).await.unwrap();
        assert_eq!(v5.disconnected().await, DisconnectReasonCode::NotAuthorized);
        assert_eq!(V5::connect(&app, "ada-phone", token).await.err(), Some(V5Code::NotAuthorized));
    }

    async fn invalidating_a_key_ends_the_sessions_it_signed(app) {
        let t = app.tenant("acme").await;
        let (id, token) = device(&app, &t, None, "").await;
        let mut v5 = V5::connect(&app, &id, &token).await.unwrap();
        let kid = header_of(&token)["kid"].as_str().unwrap().to_owned();
        app.authority().invalidate_signing_key(&t.tenant, &kid).await.unwrap();
        assert_eq!(v5.disconnected().await, DisconnectReasonCode::NotAuthorized);
        assert_eq!(V5::connect(&app, &id, &token).await.err(), Some(V5Code::NotAuthorized));
    }
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let mut v5 = V5::connect(&app, &id, &token).await.unwrap();
    let mut v4 = V4::connect(&app, &format!("{id}-4"), &token).await.unwrap();
    assert_eq!(app.app().mqtt().end_expired_sessions_once(), 0);
    app.clock.advance(3600);
    assert_eq!(app.app().mqtt().end_expired_sessions_once(), 2);
    assert_eq!(
        v5.disconnected().await,
        DisconnectReasonCode::MaximumConnectTime
    );
    assert!(matches!(v4.next(WAIT).await, Some(Err(_)) | None));
    assert_eq!(
        V5::connect(&app, &id, &token).await.err(),
        Some(V5Code::NotAuthorized)
    );
}

#[tokio::test]
async fn the_last_will_is_published_when_a_connection_is_lost_but_not_after_disconnect() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    let mut watcher = V4::connect(&app, "watcher", &token).await.unwrap();
    watcher.subscribe("status/#").await;

    let mut options = rumqttc::MqttOptions::new("polite", "127.0.0.1", app.mqtt_addr().port());
    options.set_credentials("d", token.clone());
    options.set_last_will(rumqttc::LastWill::new(
        "status/polite",
        "gone",
        QoS::AtMostOnce,
        false,
    ));
    let polite = V4::with_options(options).await.unwrap();
    polite.client.disconnect().await.unwrap();
    assert!(
        watcher.message(QUIET).await.is_none(),
        "a will after DISCONNECT"
    );

    // A raw connection with a will that just drops.
    let rude = crate::mqtt_packets::Connect {
        login: Some(("device", &token)),
        will: Some(("status/rude", b"lost")),
        ..crate::mqtt_packets::Connect::new(4, "rude")
    };
    let mut raw = crate::mqtt_bytes::connect_raw(&app, rude.bytes()).await;
    assert_eq!(
        crate::mqtt_bytes::read_some(&mut raw).await,
        vec![0x20, 0x02, 0x00, 0x00]
    );
    drop(raw);
    let msg = watcher.message(WAIT).await.expect("the will");
    assert_eq!(msg.topic, "status/rude");
    assert_eq!(&msg.payload[..], b"lost");
}

#[tokio::test]
async fn a_message_larger_than_a_v5_client_accepts_is_dropped_not_fatal() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    let mut options = options_v5(&app, "small", &token);
    options.set_max_packet_size(Some(1024));
    let mut small = V5::with_options(options).await.unwrap();
    small.subscribe("big/#").await;
    let mut publisher = V5::connect(&app, "pub", &token).await.unwrap();
    publisher
        .client
        .publish("big/1", Q5::AtLeastOnce, false, vec![b'x'; 4000])
        .await
        .unwrap();
    publisher
        .client
        .publish("big/2", Q5::AtLeastOnce, false, b"small".to_vec())
        .await
        .unwrap();
    let msg = small
        .message(WAIT)
        .await
        .expect("the small message still arrives");
    assert_eq!(&msg.payload[..], b"small");
    assert!(
        publisher
            .next(QUIET)
            .await
            .map(|p| p.is_ok())
            .unwrap_or(true)
    );
}

async fn with_tls() -> TestApp {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        s.mqtt.tls_cert_file = format!("{fixtures}/tls-cert.pem");
        s.mqtt.tls_key_file = format!("{fixtures}/tls-key.pem");
        s.mqtt.connect_timeout = lanyard::domain::Period::from_secs(1);
    })
    .await
}

fn tls_options(app: &TestApp, id: &str, password: &str) -> rumqttc::MqttOptions {
    let ca = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tls-ca.pem"
    ))
    .unwrap();
    let port = app.app().mqtt_tls_addr().expect("a TLS listener").port();
    let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    options.set_credentials("device", password);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        },
    ));
    options
}

#[tokio::test]
async fn the_tls_listener_serves_the_same_door() {
    let app = with_tls().await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let mut v4 = V4::with_options(tls_options(&app, &id, &token))
        .await
        .expect("connects over TLS");
    v4.subscribe("drivr/v1/acme/jwks").await;
    let msg = v4.message(WAIT).await.expect("the retained JWKS over TLS");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap(),
        app.jwks("acme").await
    );
    assert_eq!(v4.subscribe("drivr/v1/other/jwks").await, Sub4::Failure);
    assert_eq!(
        V4::with_options(tls_options(&app, "x", "garbage"))
            .await
            .err(),
        Some(V4Code::NotAuthorized)
    );
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_closed_after_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = with_tls().await;
    let addr = app.app().mqtt_tls_addr().unwrap();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(&crate::mqtt_packets::Connect::new(4, "").bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    for s in [&mut silent, &mut plain] {
        // A TLS alert may come first; then the connection must close.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("a connection without a TLS handshake was kept open"),
            }
        }
    }
}

#[tokio::test]
async fn refused_qos2_publishes_complete_their_flow_and_reach_no_one() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let mut watcher = V4::connect(&app, "w", &token).await.unwrap();
    watcher.subscribe("drivr/v1/acme/jwks").await;
    watcher.message(WAIT).await.expect("the JWKS");
    // 3.1.1 has no refusal: PUBREC, PUBREL, PUBCOMP run their course, and nothing is delivered.
    let mut v4 = V4::connect(&app, &id, &token).await.unwrap();
    v4.client
        .publish("drivr/v1/acme/jwks", QoS::ExactlyOnce, true, b"{}".to_vec())
        .await
        .unwrap();
    loop {
        match v4.next(WAIT).await {
            Some(Ok(P4::PubComp(_))) => break,
            Some(Ok(_)) => continue,
            other => panic!("no PUBCOMP: {other:?}"),
        }
    }
    // 5.0 says no at PUBREC.
    let mut v5 = V5::connect(&app, &format!("{id}-5"), &token).await.unwrap();
    v5.client
        .publish("drivr/v1/acme/jwks", Q5::ExactlyOnce, true, b"{}".to_vec())
        .await
        .unwrap();
    loop {
        match v5.next(WAIT).await {
            Some(Ok(P5::PubRec(rec))) => {
                assert_eq!(
                    rec.reason,
                    rumqttc::v5::mqttbytes::v5::PubRecReason::NotAuthorized
                );
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("no PUBREC: {other:?}"),
        }
    }
    assert!(watcher.message(QUIET).await.is_none());
    assert_eq!(
        v4.subscribe("drivr/v1/acme/jwks").await,
        Sub4::Success(QoS::AtLeastOnce)
    );
}

#[tokio::test]
async fn a_v5_will_waits_for_its_delay_and_is_cancelled_by_a_reconnect() {
    use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill, LastWillProperties};
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    let mut watcher = V4::connect(&app, "watcher", &token).await.unwrap();
    watcher.subscribe("status/#").await;
    let with_will = |id: &str| {
        let mut options = options_v5(&app, id, &token);
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(60);
        options.set_connect_properties(props);
        let will_props = LastWillProperties {
            delay_interval: Some(1),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        };
        options.set_last_will(LastWill::new(
            format!("status/{id}"),
            "gone",
            Q5::AtMostOnce,
            false,
            Some(will_props),
        ));
        options.set_clean_start(false);
        options
    };
    // Dropped, and back within the delay: no will.
    let comeback = V5::with_options(with_will("comeback")).await.unwrap();
    drop(comeback);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _back = V5::with_options(with_will("comeback")).await.unwrap();
    // Dropped for good: the will comes after its delay, not before.
    let gone = V5::with_options(with_will("gone")).await.unwrap();
    drop(gone);
    let started = std::time::Instant::now();
    let msg = watcher.message(WAIT).await.expect("a will");
    assert_eq!(
        msg.topic, "status/gone",
        "only the client that stayed away leaves a will"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "the will came before its delay"
    );
    assert!(watcher.message(Duration::from_millis(1200)).await.is_none());
}

#[tokio::test]
async fn a_tenant_bootstrapped_by_another_process_has_its_jwks_published_within_seconds() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // Another process on the same database, as `lanyard bootstrap` would be.
    let other = lanyard::app::open_authority(
        app.settings.clone(),
        std::sync::Arc::new(lanyard::domain::SystemClock),
    )
    .await
    .unwrap();
    let boot = other
        .bootstrap(&lanyard::domain::Slug::parse("late").unwrap(), None)
        .await
        .unwrap();
    let token = app
        .token("late", &boot.client_id, &boot.client_secret)
        .await;
    let mut v4 = V4::connect(&app, "late-device", &token).await.unwrap();
    let jwks = app.jwks("late").await;
    // Subscribed before or after the publish, the device has the JWKS within 5 s.
    v4.subscribe("drivr/v1/late/jwks").await;
    let msg = v4
        .message(Duration::from_secs(5))
        .await
        .expect("the JWKS was not published within 5 s");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap(),
        jwks
    );
}

#[tokio::test]
async fn the_jwks_arrives_once_per_subscribe_also_on_resubscribe_and_resumed_sessions() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, token) = device(&app, &t, None, "").await;
    let jwks = app.jwks("acme").await;
    let topic = "drivr/v1/acme/jwks";
    let is_jwks = |p: &[u8]| serde_json::from_slice::<serde_json::Value>(p).unwrap() == jwks;

    let mut options = rumqttc::MqttOptions::new(id.as_str(), "127.0.0.1", app.mqtt_addr().port());
    options.set_credentials("device", token.clone());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    let mut v4 = V4::with_options(options.clone()).await.unwrap();
    for round in 0..2 {
        v4.subscribe(topic).await;
        let msg = v4
            .message(WAIT)
            .await
            .unwrap_or_else(|| panic!("subscribe {round}: no JWKS"));
        assert!(is_jwks(&msg.payload) && msg.retain);
        assert!(
            v4.message(QUIET).await.is_none(),
            "subscribe {round}: delivered twice"
        );
    }
    drop(v4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut resumed = V4::with_options(options).await.unwrap();
    let msg = resumed
        .message(WAIT)
        .await
        .expect("the JWKS on the resumed session");
    assert!(is_jwks(&msg.payload));
    assert!(
        resumed.message(QUIET).await.is_none(),
        "delivered twice on resume"
    );

    let mut v5 = V5::connect(&app, &format!("{id}-5"), &token).await.unwrap();
    for round in 0..2 {
        v5.subscribe(topic).await;
        let msg = v5
            .message(WAIT)
            .await
            .unwrap_or_else(|| panic!("5.0 subscribe {round}: no JWKS"));
        assert!(is_jwks(&msg.payload));
        assert!(
            v5.message(QUIET).await.is_none(),
            "5.0 subscribe {round}: delivered twice"
        );
    }
}

/// lanyard with the `[[mqtt.acl]]` rules of the shipped `broker.toml`.
async fn with_shipped_rules() -> TestApp {
    let shipped = lanyard::config::Settings::from_toml(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/broker.toml"
    )))
    .unwrap();
    TestApp::spawn_with(Backend::Sqlite, |s| s.mqtt.acl = shipped.mqtt.acl).await
}

#[tokio::test]
async fn two_people_of_one_app_neither_read_nor_speak_for_each_other() {
    let app = with_shipped_rules().await;
    let t = app.tenant("acme").await;
    let client = crate::signin::app_client(&app, &t).await;
    let ada = crate::signin::person(&app, &t, "ada@example.com", "").await;
    let bob = crate::signin::person(&app, &t, "bob@example.com", "").await;
    let token_of = |tokens: serde_json::Value| tokens["access_token"].as_str().unwrap().to_owned();
    let ada_token = token_of(crate::signin::sign_in(&app, "acme", &client, &ada.email).await);
    let bob_token = token_of(crate::signin::sign_in(&app, "acme", &client, &bob.email).await);

    let mut ada_phone = V5::connect(&app, "ada-phone", &ada_token).await.unwrap();
    let mut bob_phone = V5::connect(&app, "bob-phone", &bob_token).await.unwrap();
    // The app's tree is its own client's, not every person's who signs in through it.
    let app_tree = format!("tenants/acme/clients/{client}/#");
    assert_eq!(ada_phone.subscribe(&app_tree).await, Sub5::NotAuthorized);
    assert_eq!(bob_phone.subscribe(&app_tree).await, Sub5::NotAuthorized);
    // Each has a tree of their own.
    let ada_tree = format!("tenants/acme/users/{}/#", ada.id);
    assert_eq!(
        ada_phone.subscribe(&ada_tree).await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    assert_eq!(bob_phone.subscribe(&ada_tree).await, Sub5::NotAuthorized);
    // Bob can neither publish as Ada nor into the app's tree.
    for topic in [
        format!("tenants/acme/users/{}/lock", ada.id),
        format!("tenants/acme/clients/{client}/lock"),
    ] {
        bob_phone
            .client
            .publish(&topic, Q5::AtLeastOnce, false, b"unlock 1234".to_vec())
            .await
            .unwrap();
        loop {
            match bob_phone.next(WAIT).await {
                Some(Ok(P5::PubAck(ack))) => {
                    assert_eq!(ack.reason, PubAckReason::NotAuthorized, "{topic}");
                    break;
                }
                Some(Ok(_)) => continue,
                other => panic!("no PUBACK: {other:?}"),
            }
        }
    }
    // Ada's own message reaches her.
    ada_phone
        .client
        .publish(
            format!("tenants/acme/users/{}/lock", ada.id),
            Q5::AtLeastOnce,
            false,
            b"lock".to_vec(),
        )
        .await
        .unwrap();
    let msg = ada_phone.message(WAIT).await.expect("her own message");
    assert_eq!(&msg.payload[..], b"lock");
    assert!(
        ada_phone.message(QUIET).await.is_none(),
        "Bob's message reached Ada"
    );
}

#[tokio::test]
async fn shared_subscription_groups_of_equal_names_stay_apart_across_tenants_and_filters() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.acl = vec![rule("tenants/{slug}/#", AclAction::PublishSubscribe, None)];
    })
    .await;
    let mut subscribers = Vec::new();
    let mut publishers = Vec::new();
    for slug in ["acme", "demo"] {
        let t = app.tenant(slug).await;
        let (_, token) = device(&app, &t, None, "").await;
        // Same group name, same topic layout; in acme also a second filter under that name.
        let filters = match slug {
            "acme" => vec!["feed", "other"],
            _ => vec!["feed"],
        };
        for topic in filters {
            let mut sub = V5::connect(&app, &format!("sub-{topic}"), &token)
                .await
                .unwrap();
            let filter = format!("$share/g/tenants/{slug}/{topic}");
            assert_eq!(sub.subscribe(&filter).await, Sub5::Success(Q5::AtLeastOnce));
            subscribers.push((format!("tenants/{slug}/{topic}"), sub));
        }
        publishers.push(V5::connect(&app, "pub", &token).await.unwrap());
    }
    for round in 0..4 {
        for (i, (topic, _)) in subscribers.iter().enumerate() {
            let publisher = &publishers[usize::from(!topic.starts_with("tenants/acme"))];
            publisher
                .client
                .publish(topic, Q5::AtLeastOnce, false, format!("{i}-{round}"))
                .await
                .unwrap();
        }
    }
    for (i, (topic, sub)) in subscribers.iter_mut().enumerate() {
        for round in 0..4 {
            let msg = sub
                .message(WAIT)
                .await
                .unwrap_or_else(|| panic!("{topic}: message {round} did not arrive"));
            assert_eq!(msg.payload, format!("{i}-{round}").as_bytes(), "{topic}");
        }
        assert!(
            sub.message(QUIET).await.is_none(),
            "{topic}: a stranger's message"
        );
    }
}

#[tokio::test]
async fn a_pending_will_is_dropped_when_its_token_is_revoked_or_its_client_or_person_deleted() {
    use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill, LastWillProperties};
    let app = wide_open().await;
    let w = crate::graphql::world(&app).await;
    let t = &w.t;
    let (_, watcher_token) = device(&app, t, None, "").await;
    let mut watcher = V4::connect(&app, "watcher", &watcher_token).await.unwrap();
    watcher.subscribe("status/#").await;
    let with_will = |id: &str, token: &str| {
        let mut options = options_v5(&app, id, token);
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(60);
        options.set_connect_properties(props);
        let will_props = LastWillProperties {
            delay_interval: Some(1),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        };
        options.set_last_will(LastWill::new(
            format!("status/{id}"),
            "door open",
            Q5::AtMostOnce,
            false,
            Some(will_props),
        ));
        options.set_clean_start(false);
        options
    };
    // One device's token is revoked while its will waits.
    let (_, revoked) = device(&app, t, None, "").await;
    drop(
        V5::with_options(with_will("revoked", &revoked))
            .await
            .unwrap(),
    );
    // Another device's client is deleted through GraphQL while its will waits.
    let (deleted_id, deleted) = device(&app, t, None, "").await;
    drop(
        V5::with_options(with_will("deleted", &deleted))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let res = app
        .post_form(
            "/t/acme/oauth2/revoke",
            Some((&t.admin_id, &t.admin_secret)),
            &format!("token={}", urlencode(&revoked)),
        )
        .await;
    assert_eq!(res.status(), 200);
    let admin = app.admin_token(t).await;
    let body = crate::graphql::gql(
        &app,
        Some(&admin),
        "mutation($id: String!) { deleteClient(clientId: $id) }",
        serde_json::json!({ "id": deleted_id }),
    )
    .await;
    assert_eq!(body["data"]["deleteClient"], true, "{body}");
    // A person is deleted while the will of their session waits.
    drop(
        V5::with_options(with_will("person", &w.user_token))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = crate::graphql::gql(
        &app,
        Some(&w.admin_token),
        "mutation($u: UUID!) { deleteUser(uuid: $u) }",
        serde_json::json!({ "u": w.user }),
    )
    .await;
    assert_eq!(body["data"]["deleteUser"], true, "{body}");
    // A third device that just went away still leaves its will.
    let (_, kept) = device(&app, t, None, "").await;
    drop(V5::with_options(with_will("kept", &kept)).await.unwrap());
    let msg = watcher.message(WAIT).await.expect("the untouched will");
    assert_eq!(msg.topic, "status/kept");
    assert!(
        watcher.message(Duration::from_millis(1500)).await.is_none(),
        "a will outlived its token, client or person"
    );
}

/// A device client and its secret, to ask for fresh tokens as the clock moves on.
async fn device_with_secret(app: &TestApp, t: &TestTenant) -> (ClientId, String) {
    app.client(
        t,
        NewClient {
            name: "device".into(),
            grant_types: vec![GrantType::ClientCredentials],
            ..NewClient::default()
        },
    )
    .await
}

/// Publishes one QoS 1 message as a fresh client of `t`.
async fn publish_once(app: &TestApp, token: &str, topic: &str) {
    let mut publisher = V4::connect(app, "publisher", token).await.unwrap();
    publisher
        .client
        .publish(topic, QoS::AtLeastOnce, false, b"queued".to_vec())
        .await
        .unwrap();
    loop {
        match publisher.next(WAIT).await {
            Some(Ok(P4::PubAck(_))) => break,
            Some(Ok(_)) => continue,
            other => panic!("no PUBACK: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stored_session_ends_after_its_expiry_and_frees_what_it_held() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (id, secret) = device_with_secret(&app, &t).await;
    let token = app.token("acme", &id, &secret).await;
    let before = app.app().mqtt().stored_sessions();
    // A 3.1.1 persistent session and a 5.0 session asking for ten minutes, each subscribed;
    // a message waits for each while they are away.
    let mut v4_options = rumqttc::MqttOptions::new("v4", "127.0.0.1", app.mqtt_addr().port());
    v4_options.set_credentials("d", token.clone());
    v4_options.set_clean_session(false);
    let mut v4 = V4::with_options(v4_options.clone()).await.unwrap();
    v4.subscribe("queue/v4").await;
    let mut v5_options = options_v5(&app, "v5", &token);
    v5_options.set_clean_start(false);
    let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
    props.session_expiry_interval = Some(600);
    v5_options.set_connect_properties(props.clone());
    let mut v5 = V5::with_options(v5_options.clone()).await.unwrap();
    v5.subscribe("queue/v5").await;
    v4.client.disconnect().await.unwrap();
    v5.client.disconnect().await.unwrap();
    drop((v4, v5));
    publish_once(&app, &token, "queue/v4").await;
    publish_once(&app, &token, "queue/v5").await;
    let gate = app.app().mqtt();
    let deadline = tokio::time::Instant::now() + WAIT;
    while gate.stored_sessions() < before + 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gate.stored_sessions(), before + 2);

    // Within its expiry the 5.0 session stays; past it, it is gone.
    app.clock.advance(599);
    gate.expire_sessions_once().await;
    assert_eq!(gate.stored_sessions(), before + 2);
    app.clock.advance(2);
    gate.expire_sessions_once().await;
    assert_eq!(gate.stored_sessions(), before + 1);
    // The 3.1.1 session lasts mqtt.session_expiry (1D).
    app.clock.advance(86_400 - 603);
    gate.expire_sessions_once().await;
    assert_eq!(gate.stored_sessions(), before + 1);
    app.clock.advance(3);
    gate.expire_sessions_once().await;
    assert_eq!(gate.stored_sessions(), before, "expired sessions are freed");

    // Coming back asking to resume, each finds nothing: no session, no queued message.
    let token = app.token("acme", &id, &secret).await;
    v4_options.set_credentials("d", token.clone());
    let mut v4 = V4::with_options(v4_options).await.unwrap();
    v5_options.set_credentials("d", token.clone());
    let mut v5 = V5::with_options(v5_options).await.unwrap();
    assert!(
        !v5.connack.session_present,
        "5.0 session present after expiry"
    );
    assert!(
        v4.message(QUIET).await.is_none(),
        "3.1.1: a message of the expired session"
    );
    assert!(
        v5.message(QUIET).await.is_none(),
        "5.0: a message of the expired session"
    );
}

#[tokio::test]
async fn a_v5_session_with_expiry_zero_ends_with_its_connection() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    let before = app.app().mqtt().stored_sessions();
    let mut options = options_v5(&app, "brief", &token);
    options.set_clean_start(false);
    let mut v5 = V5::with_options(options.clone()).await.unwrap();
    v5.subscribe("queue/brief").await;
    v5.client.disconnect().await.unwrap();
    drop(v5);
    tokio::time::sleep(QUIET).await;
    assert_eq!(app.app().mqtt().stored_sessions(), before);
    publish_once(&app, &token, "queue/brief").await;
    let mut back = V5::with_options(options).await.unwrap();
    assert!(
        !back.connack.session_present,
        "a session with expiry 0 was kept"
    );
    assert!(
        back.message(QUIET).await.is_none(),
        "a message for an ended session"
    );
}

#[tokio::test]
async fn a_v5_session_started_clean_with_an_expiry_is_kept() {
    let app = wide_open().await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    let mut options = options_v5(&app, "kept", &token);
    let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
    props.session_expiry_interval = Some(600);
    options.set_connect_properties(props);
    let mut v5 = V5::with_options(options.clone()).await.unwrap();
    v5.subscribe("queue/kept").await;
    v5.client.disconnect().await.unwrap();
    drop(v5);
    tokio::time::sleep(QUIET).await;
    publish_once(&app, &token, "queue/kept").await;
    options.set_clean_start(false);
    let mut back = V5::with_options(options).await.unwrap();
    assert!(back.connack.session_present);
    let msg = back
        .message(WAIT)
        .await
        .expect("the message kept for the session");
    assert_eq!(&msg.payload[..], b"queued");
}

#[tokio::test]
async fn v5_sessions_with_expiry_zero_taken_over_by_clean_ones_leave_nothing_in_the_router() {
    // The router holds at most max_connections + 16 links: leaked ones would fill it.
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.acl = vec![rule("#", AclAction::PublishSubscribe, None)];
        s.mqtt.max_connections = 4;
    })
    .await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    for round in 0..30 {
        let id = format!("phone-{round}");
        let mut options = options_v5(&app, &id, &token);
        options.set_clean_start(false);
        let mut first = V5::with_options(options).await.unwrap();
        assert_eq!(
            first.subscribe("x/#").await,
            Sub5::Success(Q5::AtLeastOnce),
            "round {round}"
        );
        // The same device again, clean: the first connection is taken over.
        let mut second = V5::connect(&app, &id, &token).await.unwrap();
        assert_eq!(
            first.disconnected().await,
            DisconnectReasonCode::SessionTakenOver
        );
        assert_eq!(
            second.subscribe("x/#").await,
            Sub5::Success(Q5::AtLeastOnce),
            "round {round}"
        );
        second.client.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn people_signing_in_through_a_bound_app_do_not_get_its_systems_topics() {
    let app = with_shipped_rules().await;
    let t = app.tenant("acme").await;
    let system = system(&app, &t).await;
    let (bound_app, _) = app
        .client(
            &t,
            NewClient {
                name: "Gateway App".into(),
                public: true,
                system_id: Some(system.clone()),
                ..NewClient::default()
            },
        )
        .await;
    let ada = crate::signin::person(&app, &t, "ada@example.com", "").await;
    let tokens = crate::signin::sign_in(&app, "acme", &bound_app, &ada.email).await;
    let token = tokens["access_token"].as_str().unwrap();
    let mut phone = V5::connect(&app, "ada-phone", token).await.unwrap();
    // The system's list holds other people's live local tokens; its tree is its devices'.
    let list = format!("drivr/v1/acme/authorization/localApiTokens/{system}");
    assert_eq!(phone.subscribe(&list).await, Sub5::NotAuthorized);
    let tree = format!("tenants/acme/systems/{system}/#");
    assert_eq!(phone.subscribe(&tree).await, Sub5::NotAuthorized);
    // The system's own device still has both.
    let (device_id, device_token) = device(&app, &t, Some(&system), "").await;
    let mut gateway = V5::connect(&app, &device_id, &device_token).await.unwrap();
    assert_eq!(
        gateway.subscribe(&list).await,
        Sub5::Success(Q5::AtLeastOnce)
    );
    assert_eq!(
        gateway.subscribe(&tree).await,
        Sub5::Success(Q5::AtLeastOnce)
    );
}
