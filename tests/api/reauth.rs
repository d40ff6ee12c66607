//! MQTT 5 re-authentication (SPEC §10, MQTT 5.0 §4.12): a CONNECT with Authentication Method
//! `lanyard-jwt`, then AUTH `0x19` with a new token. rumqttc's v5 client connects with the
//! method; its client API cannot send AUTH (nor does its codec export the AUTH types), so the
//! exchanges run over a bare stream: rumqttc's v5 codec writes the CONNECT and SUBSCRIBE and
//! reads every answer but AUTH, which it does not decode either; AUTH is written and read byte
//! by byte here.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lanyard::authority::NewClient;
use lanyard::domain::{GrantType, ScopeSet};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode as V5Code, DisconnectReasonCode, Filter,
    Packet, Subscribe,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::graphql::{gql, world};
use crate::helpers::*;
use crate::mqtt::V5;

const WAIT: Duration = Duration::from_secs(3);
const METHOD: &str = "lanyard-jwt";

/// A bare MQTT 5.0 stream speaking through rumqttc's packet codec.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects with `method` and `data` as Authentication Method and Data (no password).
    async fn connect(app: &TestApp, client_id: &str, method: &str, data: &str) -> (Raw, ConnAck) {
        let mut props = ConnectProperties::new();
        props.authentication_method = Some(method.into());
        props.authentication_data = Some(Bytes::copy_from_slice(data.as_bytes()));
        let connect = Connect {
            keep_alive: 60,
            client_id: client_id.into(),
            clean_start: true,
            properties: Some(props),
        };
        Raw::connect_with(app, connect, None).await
    }

    async fn connect_with(
        app: &TestApp,
        connect: Connect,
        login: Option<rumqttc::v5::mqttbytes::v5::Login>,
    ) -> (Raw, ConnAck) {
        let stream = TcpStream::connect(app.mqtt_addr()).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
        };
        raw.send(Packet::Connect(connect, None, login)).await;
        match raw.recv(WAIT).await {
            Some(In::P(Packet::ConnAck(ack))) => (raw, ack),
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, None).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn reauth(&mut self, method: &str, token: &str) {
        let auth = crate::mqtt_packets::auth(0x19, method, Some(token.as_bytes()));
        self.stream.write_all(&auth).await.unwrap();
    }

    /// The next packet, `None` when nothing came in time or the stream closed.
    async fn recv(&mut self, wait: Duration) -> Option<In> {
        loop {
            if self.buf.first() == Some(&0xf0)
                && let Some((len, header)) = crate::mqtt_packets::frame_len(&self.buf)
                && self.buf.len() >= len
            {
                let frame = self.buf.split_to(len);
                let body = &frame[header..];
                // reason, property length, then Authentication Method (0x15) first
                let method = (body.len() > 5 && body[2] == 0x15)
                    .then(|| String::from_utf8_lossy(&body[5..]).into_owned());
                return Some(In::Auth(body[0], method));
            }
            match Packet::read(&mut self.buf, None) {
                Ok(packet) => return Some(In::P(packet)),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!(
                    "rumqttc cannot read what lanyard sent: {e:?} {:x?}",
                    &self.buf[..]
                ),
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The next packet that is not a message.
    async fn control(&mut self, wait: Duration) -> Option<In> {
        loop {
            match self.recv(wait).await? {
                In::P(Packet::Publish(_)) => continue,
                other => return Some(other),
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) -> In {
        let mut subscribe = Subscribe::new(Filter::new(filter, Q5::AtMostOnce), None);
        subscribe.pkid = 7;
        self.send(Packet::Subscribe(subscribe)).await;
        self.control(WAIT).await.expect("a SUBACK")
    }
}

/// What a bare stream received: a packet rumqttc read, or an AUTH (its reason code and
/// Authentication Method).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum In {
    P(Packet),
    Auth(u8, Option<String>),
}

/// A client of `t` with `scopes`, and its secret.
async fn client(app: &TestApp, t: &TestTenant, scopes: &str) -> (ClientId, String) {
    app.client(
        t,
        NewClient {
            name: "sensor".into(),
            scopes: ScopeSet::parse(scopes).unwrap(),
            grant_types: vec![GrantType::ClientCredentials],
            ..NewClient::default()
        },
    )
    .await
}

/// A token for the client with only `scope`.
async fn token_with_scope(
    app: &TestApp,
    slug: &str,
    id: &str,
    secret: &str,
    scope: &str,
) -> String {
    let res = app
        .post_form(
            &format!("/t/{slug}/oauth2/token"),
            Some((id, secret)),
            &format!("grant_type=client_credentials&scope={}", urlencode(scope)),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

fn disconnect_reason(packet: Option<In>) -> Option<DisconnectReasonCode> {
    match packet {
        Some(In::P(Packet::Disconnect(d))) => Some(d.reason_code),
        _ => None,
    }
}

#[tokio::test]
async fn rumqttc_connects_with_the_method_and_an_unknown_method_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, secret) = client(&app, &t, "").await;
    let token = app.token(&t.slug, &id, &secret).await;
    let options = |method: &str| {
        let mut o = rumqttc::v5::MqttOptions::new(id.as_str(), "127.0.0.1", app.mqtt_addr().port());
        o.set_authentication_method(Some(method.into()));
        o.set_authentication_data(Some(Bytes::from(token.clone())));
        o
    };
    let mut v5 = V5::with_options(options(METHOD))
        .await
        .expect("connected with the method");
    assert_eq!(v5.connack.code, V5Code::Success);
    assert_eq!(
        v5.connack
            .properties
            .as_ref()
            .and_then(|p| p.authentication_method.as_deref()),
        Some(METHOD),
        "the CONNACK names the method"
    );
    v5.subscribe("drivr/v1/acme/jwks").await;
    assert!(v5.message(WAIT).await.is_some());
    let refused = V5::with_options(options("SCRAM-SHA-256")).await.err();
    assert_eq!(refused, Some(V5Code::BadAuthenticationMethod));
    // Without data, or with a token that is not good: as a bad password would be.
    let (_, ack) = Raw::connect(&app, "nodata", METHOD, "").await;
    assert_eq!(ack.code, V5Code::BadUserNamePassword);
    let (_, ack) = Raw::connect(&app, "forged", METHOD, "a.b.c").await;
    assert_eq!(ack.code, V5Code::NotAuthorized);
}

on_both_databases! {
    async fn re_authentication_moves_the_sessions_end_to_the_new_tokens(app) {
        let t = app.tenant("acme").await;
        let (id, secret) = client(&app, &t, "").await;
        let first = app.token(&t.slug, &id, &secret).await;
        let (mut raw, ack) = Raw::connect(&app, "meter", METHOD, &first).await;
        assert_eq!(ack.code, V5Code::Success);
        assert!(matches!(raw.subscribe("drivr/v1/acme/jwks").await, In::P(Packet::SubAck(_))));
        // 50 minutes into an hour-long token, a new one.
        app.clock.advance(50 * 60);
        let second = app.token(&t.slug, &id, &secret).await;
        raw.reauth(METHOD, &second).await;
        match raw.control(WAIT).await {
            Some(In::Auth(reason, method)) => {
                assert_eq!(reason, 0x00);
                assert_eq!(method.as_deref(), Some(METHOD));
            }
            other => panic!("no AUTH 0x00: {other:?}"),
        }
        // The first token's end passes: the session stays.
        app.clock.advance(20 * 60);
        assert_eq!(app.app().mqtt().end_expired_sessions_once(), 0);
        // Revoking the first token no longer concerns it; revoking the second ends it.
        for (token, ends) in [(&first, false), (&second, true)] {
            let res = app
                .post_form(&format!("/t/{}/oauth2/revoke", t.slug), Some((&id, &secret)), &format!("token={token}"))
                .await;
            assert_eq!(res.status(), 200);
            let reason = disconnect_reason(raw.control(Duration::from_millis(700)).await);
            assert_eq!(reason.is_some(), ends, "{reason:?}");
            if ends {
                assert_eq!(reason, Some(DisconnectReasonCode::NotAuthorized));
            }
        }
    }

    async fn a_renewed_session_ends_when_the_new_token_expires(app) {
        let t = app.tenant("acme").await;
        let (id, secret) = client(&app, &t, "").await;
        let first = app.token(&t.slug, &id, &secret).await;
        let (mut raw, _) = Raw::connect(&app, "meter", METHOD, &first).await;
        app.clock.advance(30 * 60);
        raw.reauth(METHOD, &app.token(&t.slug, &id, &secret).await).await;
        assert!(matches!(raw.control(WAIT).await, Some(In::Auth(0, _))));
        app.clock.advance(31 * 60);
        assert_eq!(app.app().mqtt().end_expired_sessions_once(), 0, "ended at the first token's exp");
        app.clock.advance(30 * 60);
        assert_eq!(app.app().mqtt().end_expired_sessions_once(), 1);
        assert_eq!(disconnect_reason(raw.control(WAIT).await), Some(DisconnectReasonCode::MaximumConnectTime));
    }
}

#[tokio::test]
async fn re_authentication_refuses_another_principal_a_bad_token_and_another_method() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, secret) = client(&app, &t, "").await;
    let (other_id, other_secret) = client(&app, &t, "").await;
    let other = app.token(&t.slug, &other_id, &other_secret).await;
    let foreign_tenant = app.tenant("other").await;
    let (f_id, f_secret) = client(&app, &foreign_tenant, "").await;
    let foreign = app.token(&foreign_tenant.slug, &f_id, &f_secret).await;
    for (method, token, why) in [
        (METHOD, other.as_str(), "another client's token"),
        (METHOD, foreign.as_str(), "another tenant's token"),
        (METHOD, "not-a-token", "no token at all"),
        ("SCRAM-SHA-256", "x", "another method"),
    ] {
        let mine = app.token(&t.slug, &id, &secret).await;
        let (mut raw, ack) = Raw::connect(&app, "meter", METHOD, &mine).await;
        assert_eq!(ack.code, V5Code::Success);
        raw.reauth(method, token).await;
        assert_eq!(
            disconnect_reason(raw.control(WAIT).await),
            Some(DisconnectReasonCode::NotAuthorized),
            "{why}"
        );
        assert!(
            raw.recv(WAIT).await.is_none(),
            "{why}: the connection stays open"
        );
    }
}

#[tokio::test]
async fn a_session_that_used_a_password_may_not_send_auth() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, secret) = client(&app, &t, "").await;
    let token = app.token(&t.slug, &id, &secret).await;
    let stream = TcpStream::connect(app.mqtt_addr()).await.unwrap();
    let mut raw = Raw {
        stream,
        buf: BytesMut::new(),
    };
    let connect = Connect {
        keep_alive: 60,
        client_id: "meter".into(),
        clean_start: true,
        properties: None,
    };
    let login = rumqttc::v5::mqttbytes::v5::Login::new("meter", token.clone());
    raw.send(Packet::Connect(connect, None, Some(login))).await;
    assert!(
        matches!(raw.recv(WAIT).await, Some(In::P(Packet::ConnAck(ack))) if ack.code == V5Code::Success)
    );
    raw.reauth(METHOD, &token).await;
    assert_eq!(
        disconnect_reason(raw.control(WAIT).await),
        Some(DisconnectReasonCode::ProtocolError)
    );
}

#[tokio::test]
async fn re_authentication_with_fewer_scopes_takes_back_what_they_no_longer_allow() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let w = world(&app).await;
    let both = "lanyard:local-tokens:read lanyard:systems:read";
    let (id, secret) = client(&app, &w.t, both).await;
    let wide = token_with_scope(&app, &w.t.slug, &id, &secret, both).await;
    let (mut raw, _) = Raw::connect(&app, "reader", METHOD, &wide).await;
    assert!(
        matches!(raw.subscribe("drivr/v1/acme/statuslists/+").await, In::P(Packet::SubAck(ack)) if format!("{:?}", ack.return_codes).contains("Success"))
    );
    assert!(
        matches!(raw.recv(WAIT).await, Some(In::P(Packet::Publish(_)))),
        "the retained list"
    );
    let narrow = token_with_scope(&app, &w.t.slug, &id, &secret, "lanyard:systems:read").await;
    raw.reauth(METHOD, &narrow).await;
    assert!(matches!(raw.control(WAIT).await, Some(In::Auth(0, _))));
    // A change to the list no longer reaches it, and the filter cannot be taken again.
    let minted = gql(
        &app,
        Some(&w.user_token),
        "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
        json!({ "s": w.system }),
    )
    .await;
    let uuid = minted["data"]["createLocalApiToken"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    gql(
        &app,
        Some(&w.user_token),
        "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }",
        json!({ "u": uuid }),
    )
    .await;
    assert!(
        raw.recv(Duration::from_millis(800)).await.is_none(),
        "a list still arrived"
    );
    match raw.subscribe("drivr/v1/acme/statuslists/+").await {
        In::P(Packet::SubAck(ack)) => assert!(
            !format!("{:?}", ack.return_codes).contains("Success"),
            "{ack:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_session_stored_by_a_password_connection_is_not_resumed_under_the_method() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (id, secret) = client(&app, &t, "").await;
    let token = app.token(&t.slug, &id, &secret).await;
    let persistent = |method: bool| {
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(3600);
        if method {
            props.authentication_method = Some(METHOD.into());
            props.authentication_data = Some(Bytes::from(token.clone()));
        }
        Connect {
            keep_alive: 60,
            client_id: "meter".into(),
            clean_start: false,
            properties: Some(props),
        }
    };
    let login = || {
        Some(rumqttc::v5::mqttbytes::v5::Login::new(
            "meter",
            token.clone(),
        ))
    };
    // Stored by a password connection: its filters were not followed, so a connection that
    // may re-authenticate (and must be able to take them back) starts clean.
    let (mut raw, _) = Raw::connect_with(&app, persistent(false), login()).await;
    raw.subscribe("drivr/v1/acme/jwks").await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (raw, ack) = Raw::connect_with(&app, persistent(true), None).await;
    assert_eq!(ack.code, V5Code::Success);
    assert!(
        !ack.session_present,
        "a session whose filters are unknown was resumed"
    );
    // Stored by a connection with the method: resumed.
    let mut raw = raw;
    raw.subscribe("drivr/v1/acme/jwks").await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, ack) = Raw::connect_with(&app, persistent(true), None).await;
    assert!(ack.session_present);
}
