//! MQTT conformance (docs/mqtt.md, "Conformance"): the behaviours of MQTT 3.1.1 and 5.0 that
//! the router and the gate share, each checked at the packet level with rumqttc's codecs over a
//! bare socket (no client logic in between: no automatic acknowledgements, no retries), and all
//! of them again with Eclipse paho-mqtt 2.x (`tests/interop/mqtt_conformance.py`).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{self, Packet as P4};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    self, ConnectProperties, ConnectReturnCode, DisconnectProperties, DisconnectReasonCode, Filter,
    LastWill, LastWillProperties, Packet as P5, PublishProperties, RetainForwardRule,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::mqtt::{device, wide_open};

const WAIT: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(400);

/// A wide-open lanyard and a token for a client of tenant `demo`: the password of every client
/// id a test connects with.
async fn open_broker() -> (TestApp, String) {
    let app = wide_open().await;
    let t = app.tenant("demo").await;
    let (_, token) = device(&app, &t, None, "").await;
    (app, token)
}

/// One MQTT 5.0 connection, packet by packet.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    /// Packets that came while waiting for another (a retained message before its SUBACK,
    /// which MQTT allows).
    backlog: std::collections::VecDeque<P5>,
}

/// What a CONNECT asks for beyond its client id.
#[derive(Default)]
struct Hello {
    clean_start: bool,
    properties: Option<ConnectProperties>,
    will: Option<LastWill>,
}

impl Hello {
    fn clean() -> Hello {
        Hello {
            clean_start: true,
            ..Hello::default()
        }
    }

    fn expiry(mut self, seconds: u32) -> Hello {
        let props = self.properties.get_or_insert_with(ConnectProperties::new);
        props.session_expiry_interval = Some(seconds);
        self
    }

    fn receive_maximum(mut self, max: u16) -> Hello {
        let props = self.properties.get_or_insert_with(ConnectProperties::new);
        props.receive_maximum = Some(max);
        self
    }
}

impl Wire {
    async fn connect(app: &TestApp, id: &str, token: &str, hello: Hello) -> (Wire, v5::ConnAck) {
        let mut connect = v5::Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: hello.clean_start,
            properties: hello.properties,
        };
        connect.client_id = id.into();
        let login = v5::Login::new("device", token);
        let mut wire = Wire {
            stream: TcpStream::connect(app.mqtt_addr()).await.unwrap(),
            buf: BytesMut::new(),
            backlog: Default::default(),
        };
        wire.send(P5::Connect(connect, hello.will, Some(login)))
            .await;
        match wire.recv(WAIT).await {
            Some(P5::ConnAck(ack)) => (wire, ack),
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    /// A clean session with no properties.
    async fn open(app: &TestApp, id: &str, token: &str) -> Wire {
        let (wire, ack) = Wire::connect(app, id, token, Hello::clean()).await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        wire
    }

    async fn send(&mut self, packet: P5) {
        let mut out = BytesMut::new();
        packet.write(&mut out, None).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet (PINGRESPs skipped), or None if none comes within `wait` or the server
    /// closed.
    async fn recv(&mut self, wait: Duration) -> Option<P5> {
        if let Some(p) = self.backlog.pop_front() {
            return Some(p);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match P5::read(&mut self.buf, None) {
                Ok(P5::PingResp(_)) => continue,
                Ok(packet) => return Some(packet),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("unreadable packet: {e:?}"),
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The next PUBLISH; any other packet first fails the test.
    async fn message(&mut self) -> v5::Publish {
        match self.recv(WAIT).await {
            Some(P5::Publish(p)) => p,
            other => panic!("no PUBLISH: {other:?}"),
        }
    }

    /// Every packet the server sends until it is quiet.
    async fn quiet(&mut self) -> Vec<P5> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv(QUIET).await {
            seen.push(p);
        }
        seen
    }

    async fn subscribe(&mut self, pkid: u16, filters: Vec<Filter>) -> Vec<v5::SubscribeReasonCode> {
        self.send(P5::Subscribe(v5::Subscribe {
            pkid,
            filters,
            properties: None,
        }))
        .await;
        let mut before = Vec::new();
        let codes = loop {
            match self.recv(WAIT).await {
                Some(P5::SubAck(ack)) if ack.pkid == pkid => break ack.return_codes,
                Some(P5::Publish(p)) => before.push(P5::Publish(p)),
                other => panic!("no SUBACK: {other:?}"),
            }
        };
        self.backlog.extend(before);
        codes
    }

    async fn publish(&mut self, topic: &str, payload: &str, qos: QoS, retain: bool, pkid: u16) {
        let mut publish = v5::Publish::new(topic, qos, payload.to_owned(), None);
        publish.retain = retain;
        publish.pkid = pkid;
        self.send(P5::Publish(publish)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv(WAIT).await {
                Some(P5::PubAck(ack)) if ack.pkid == pkid => {}
                other => panic!("no PUBACK: {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv(WAIT).await {
                    Some(P5::PubRec(rec)) if rec.pkid == pkid => {}
                    other => panic!("no PUBREC: {other:?}"),
                }
                self.send(P5::PubRel(v5::PubRel::new(pkid, None))).await;
                match self.recv(WAIT).await {
                    Some(P5::PubComp(comp)) if comp.pkid == pkid => {}
                    other => panic!("no PUBCOMP: {other:?}"),
                }
            }
        }
    }

    async fn disconnect(&mut self, expiry: Option<u32>) {
        let properties = expiry.map(|e| DisconnectProperties {
            session_expiry_interval: Some(e),
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        });
        self.send(P5::Disconnect(v5::Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
            properties,
        }))
        .await;
    }
}

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

fn topic(name: &str) -> String {
    format!("conformance/{name}/{}", uuid::Uuid::new_v4().simple())
}

/// One MQTT 3.1.1 connection, packet by packet.
struct Wire4 {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire4 {
    async fn connect(app: &TestApp, id: &str, token: &str, clean: bool) -> (Wire4, v4::ConnAck) {
        let mut connect = v4::Connect::new(id);
        connect.clean_session = clean;
        connect.keep_alive = 30;
        connect.login = Some(v4::Login::new("device", token));
        let mut wire = Wire4 {
            stream: TcpStream::connect(app.mqtt_addr()).await.unwrap(),
            buf: BytesMut::new(),
        };
        wire.send(P4::Connect(connect)).await;
        match wire.recv(WAIT).await {
            Some(P4::ConnAck(ack)) => (wire, ack),
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    async fn send(&mut self, packet: P4) {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self, wait: Duration) -> Option<P4> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match P4::read(&mut self.buf, 1 << 20) {
                Ok(P4::PingResp) => continue,
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("unreadable packet: {e:?}"),
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    async fn subscribe(&mut self, path: &str, qos: rumqttc::QoS) {
        self.send(P4::Subscribe(v4::Subscribe::new(path, qos)))
            .await;
        match self.recv(WAIT).await {
            Some(P4::SubAck(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    async fn message(&mut self) -> v4::Publish {
        match self.recv(WAIT).await {
            Some(P4::Publish(p)) => p,
            other => panic!("no PUBLISH: {other:?}"),
        }
    }
}

#[tokio::test]
async fn delivered_qos_is_the_minimum_of_published_and_granted() {
    let (app, token) = open_broker().await;
    let t = topic("qos");
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    publisher
        .publish(&format!("{t}/retained"), "r0", QoS::AtMostOnce, true, 0)
        .await;
    let mut v5 = Wire::open(&app, "five", &token).await;
    v5.subscribe(1, vec![filter(&format!("{t}/#"), QoS::ExactlyOnce)])
        .await;
    let retained = v5.message().await;
    assert_eq!((retained.qos, retained.retain), (QoS::AtMostOnce, true));
    let (mut v4, _) = Wire4::connect(&app, "four", &token, true).await;
    v4.subscribe(&format!("{t}/#"), rumqttc::QoS::ExactlyOnce)
        .await;
    assert_eq!(v4.message().await.qos, rumqttc::QoS::AtMostOnce, "retained");

    publisher
        .publish(&format!("{t}/live"), "q0", QoS::AtMostOnce, false, 0)
        .await;
    publisher
        .publish(&format!("{t}/live"), "q1", QoS::AtLeastOnce, false, 1)
        .await;
    let (q0, q1) = (v5.message().await, v5.message().await);
    assert_eq!((q0.payload.as_ref(), q0.qos), (&b"q0"[..], QoS::AtMostOnce));
    assert_eq!(
        (q1.payload.as_ref(), q1.qos),
        (&b"q1"[..], QoS::AtLeastOnce)
    );
    let (q0, q1) = (v4.message().await, v4.message().await);
    assert_eq!(q0.qos, rumqttc::QoS::AtMostOnce);
    assert_eq!(q1.qos, rumqttc::QoS::AtLeastOnce);

    // A QoS 2 message to a QoS 1 subscription arrives at QoS 1.
    let mut low = Wire::open(&app, "low", &token).await;
    low.subscribe(1, vec![filter(&format!("{t}/live"), QoS::AtLeastOnce)])
        .await;
    publisher
        .publish(&format!("{t}/live"), "q2", QoS::ExactlyOnce, false, 2)
        .await;
    assert_eq!(low.message().await.qos, QoS::AtLeastOnce);
    app.stop().await;
}

#[tokio::test]
async fn the_clients_receive_maximum_holds_back_further_messages() {
    let (app, token) = open_broker().await;
    let t = topic("receive-maximum");
    let hello = Hello::clean().receive_maximum(2);
    let (mut sub, _) = Wire::connect(&app, "slow", &token, hello).await;
    sub.subscribe(1, vec![filter(&t, QoS::ExactlyOnce)]).await;
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    let qos = |i: u16| {
        if i.is_multiple_of(2) {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        }
    };
    for i in 0..5u16 {
        publisher
            .publish(&t, &format!("m{i}"), qos(i), false, i + 1)
            .await;
    }
    let mut inflight: Vec<v5::Publish> = sub
        .quiet()
        .await
        .into_iter()
        .map(|p| match p {
            P5::Publish(p) => p,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(inflight.len(), 2, "Receive Maximum 2: {inflight:?}");
    // The QoS 2 message is acknowledged first (MQTT orders QoS 1 and QoS 2 acknowledgements
    // separately); it holds its place until its PUBCOMP.
    let (m0, m1) = (inflight.remove(0), inflight.remove(0));
    assert_eq!((m0.qos, m1.qos), (QoS::AtLeastOnce, QoS::ExactlyOnce));
    sub.send(P5::PubRec(v5::PubRec::new(m1.pkid, None))).await;
    match sub.recv(WAIT).await {
        Some(P5::PubRel(rel)) if rel.pkid == m1.pkid => {}
        other => panic!("no PUBREL: {other:?}"),
    }
    assert!(
        sub.quiet().await.is_empty(),
        "a QoS 2 message counts until PUBCOMP"
    );
    sub.send(P5::PubComp(v5::PubComp::new(m1.pkid, None))).await;
    let m2 = sub.message().await;
    assert_eq!(m2.payload.as_ref(), b"m2");
    assert!(sub.quiet().await.is_empty());
    sub.send(P5::PubAck(v5::PubAck::new(m0.pkid, None))).await;
    assert_eq!(sub.message().await.payload.as_ref(), b"m3");
    app.stop().await;
}

#[tokio::test]
async fn a_packet_id_awaiting_its_acknowledgement_is_not_given_again() {
    let (app, token) = open_broker().await;
    let t = topic("pkid");
    let mut sub = Wire::open(&app, "sub", &token).await;
    sub.subscribe(1, vec![filter(&t, QoS::AtLeastOnce)]).await;
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    for i in 0..100u16 {
        publisher
            .publish(&t, &format!("m{i}"), QoS::AtLeastOnce, false, i + 1)
            .await;
    }
    let mut first = None;
    for i in 0..100 {
        let m = sub.message().await;
        // Every message is acknowledged but the first.
        if i == 0 {
            first = Some(m.pkid);
        } else {
            sub.send(P5::PubAck(v5::PubAck::new(m.pkid, None))).await;
        }
    }
    let first = first.unwrap();
    for i in 0..150u16 {
        publisher
            .publish(&t, &format!("n{i}"), QoS::AtLeastOnce, false, i + 1)
            .await;
        let m = sub.message().await;
        assert_ne!(
            m.pkid, first,
            "a packet id still awaiting its PUBACK was given again"
        );
        sub.send(P5::PubAck(v5::PubAck::new(m.pkid, None))).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_client_beyond_lanyards_receive_maximum_is_disconnected() {
    let (app, token) = open_broker().await;
    let (mut wire, ack) = Wire::connect(&app, "flood", &token, Hello::clean()).await;
    let advertised = ack
        .properties
        .and_then(|p| p.receive_max)
        .expect("a Receive Maximum");
    assert_eq!(advertised, 100);
    // One write: every PUBLISH is read before any acknowledgement could be sent.
    let mut out = BytesMut::new();
    for pkid in 1..=advertised + 1 {
        let publish = v5::Publish::new("conformance/flood", QoS::AtLeastOnce, "x", None);
        let mut publish = publish;
        publish.pkid = pkid;
        P5::Publish(publish).write(&mut out, None).unwrap();
    }
    wire.stream.write_all(&out).await.unwrap();
    let mut reason = None;
    while let Some(p) = wire.recv(WAIT).await {
        if let P5::Disconnect(d) = p {
            reason = Some(d.reason_code);
            break;
        }
    }
    assert_eq!(reason, Some(DisconnectReasonCode::ReceiveMaximumExceeded));

    // Receive Maximum 0 is a protocol error (MQTT 5.0 §3.1.2.11.3).
    let (_, ack) = Wire::connect(&app, "zero", &token, Hello::clean().receive_maximum(0)).await;
    assert_eq!(ack.code, ConnectReturnCode::ProtocolError);
    app.stop().await;
}

#[tokio::test]
async fn session_expiry_not_clean_start_decides_what_outlives_the_connection() {
    let (app, token) = open_broker().await;
    let t = topic("expiry");
    // Clean Start 1 with an expiry: fresh now, kept after.
    let (mut sub, ack) = Wire::connect(&app, "keeper", &token, Hello::clean().expiry(99_999)).await;
    assert!(!ack.session_present);
    sub.subscribe(1, vec![filter(&t, QoS::AtLeastOnce)]).await;
    sub.disconnect(None).await;
    drop(sub);
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    publisher
        .publish(&t, "while away", QoS::AtLeastOnce, false, 1)
        .await;
    let resume = || Hello::default().expiry(99_999);
    let (mut sub, ack) = Wire::connect(&app, "keeper", &token, resume()).await;
    assert!(ack.session_present, "kept for its expiry");
    assert_eq!(sub.message().await.payload.as_ref(), b"while away");

    // Expiry 0 at DISCONNECT ends the session with the connection.
    sub.disconnect(Some(0)).await;
    drop(sub);
    let (sub, ack) = Wire::connect(&app, "keeper", &token, resume()).await;
    assert!(!ack.session_present, "ended by the DISCONNECT's expiry 0");
    drop(sub);

    // A session that was to end with its connection cannot be kept at DISCONNECT.
    let (mut brief, _) = Wire::connect(&app, "brief", &token, Hello::clean()).await;
    brief.disconnect(Some(60)).await;
    match brief.recv(WAIT).await {
        Some(P5::Disconnect(d)) => assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError),
        other => panic!("no DISCONNECT: {other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn a_will_keeps_its_qos_and_properties_and_its_delay() {
    let (app, token) = open_broker().await;
    let t = topic("will");
    let mut watcher = Wire::open(&app, "watcher", &token).await;
    watcher
        .subscribe(1, vec![filter(&format!("{t}/#"), QoS::ExactlyOnce)])
        .await;

    let properties = LastWillProperties {
        delay_interval: None,
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(600),
        content_type: Some("text/plain".into()),
        response_topic: Some(format!("{t}/reply")),
        correlation_data: Some(Bytes::from_static(b"42")),
        user_properties: vec![("device".into(), "boiler-7".into())],
    };
    let will = LastWill::new(
        format!("{t}/gone"),
        "gone",
        QoS::AtMostOnce,
        false,
        Some(properties),
    );
    let hello = Hello {
        will: Some(will),
        ..Hello::clean()
    };
    let (dying, _) = Wire::connect(&app, "dying", &token, hello).await;
    drop(dying);
    let will = watcher.message().await;
    assert_eq!(
        will.qos,
        QoS::AtMostOnce,
        "a QoS 0 will to a QoS 2 subscription"
    );
    let props = will.properties.expect("the will's properties");
    assert_eq!(
        props.user_properties,
        vec![("device".into(), "boiler-7".into())]
    );
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic, Some(format!("{t}/reply")));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"42"[..]));
    assert_eq!(props.payload_format_indicator, Some(1));
    assert!(props.message_expiry_interval.is_some_and(|e| e <= 600));

    // A QoS 1 will arrives at QoS 1.
    let will = LastWill::new(format!("{t}/one"), "one", QoS::AtLeastOnce, false, None);
    let (dying, _) = Wire::connect(
        &app,
        "dying",
        &token,
        Hello {
            will: Some(will),
            ..Hello::clean()
        },
    )
    .await;
    drop(dying);
    assert_eq!(watcher.message().await.qos, QoS::AtLeastOnce);

    // A delayed will of a session that outlives its connection waits for its delay...
    let delayed = |delay| LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    let will = LastWill::new(
        format!("{t}/late"),
        "late",
        QoS::AtLeastOnce,
        false,
        Some(delayed(2)),
    );
    let hello = Hello {
        will: Some(will),
        ..Hello::clean().expiry(5)
    };
    let (dying, _) = Wire::connect(&app, "late", &token, hello).await;
    drop(dying);
    let dropped = Instant::now();
    assert!(
        watcher.recv(Duration::from_millis(1200)).await.is_none(),
        "before its delay"
    );
    assert_eq!(watcher.message().await.payload.as_ref(), b"late");
    assert!(dropped.elapsed() >= Duration::from_millis(1900));

    // ...or for the end of the session, if that comes first (MQTT 5.0 §3.1.3.2.2).
    let will = LastWill::new(
        format!("{t}/ends"),
        "ends",
        QoS::AtLeastOnce,
        false,
        Some(delayed(60)),
    );
    let hello = Hello {
        will: Some(will),
        ..Hello::clean().expiry(1)
    };
    let (dying, _) = Wire::connect(&app, "ends", &token, hello).await;
    drop(dying);
    assert_eq!(watcher.message().await.payload.as_ref(), b"ends");
    app.stop().await;
}

#[tokio::test]
async fn no_local_keeps_a_clients_own_messages_from_it() {
    let (app, token) = open_broker().await;
    let t = topic("no-local");
    let mut me = Wire::open(&app, "me", &token).await;
    let mut own = filter(&t, QoS::AtLeastOnce);
    own.nolocal = true;
    me.subscribe(1, vec![own]).await;
    let mut other = Wire::open(&app, "other", &token).await;
    other.subscribe(1, vec![filter(&t, QoS::AtLeastOnce)]).await;

    me.publish(&t, "mine", QoS::AtMostOnce, false, 0).await;
    assert_eq!(other.message().await.payload.as_ref(), b"mine");
    assert!(me.quiet().await.is_empty(), "its own message came back");
    other
        .publish(&t, "theirs", QoS::AtLeastOnce, false, 1)
        .await;
    assert_eq!(me.message().await.payload.as_ref(), b"theirs");
    app.stop().await;
}

#[tokio::test]
async fn retain_as_published_and_retain_handling() {
    let (app, token) = open_broker().await;
    let t = topic("retain");
    let mut keep = Wire::open(&app, "keep", &token).await;
    let mut kept = filter(&t, QoS::AtLeastOnce);
    kept.preserve_retain = true;
    keep.subscribe(1, vec![kept]).await;
    let mut clear = Wire::open(&app, "clear", &token).await;
    clear.subscribe(1, vec![filter(&t, QoS::AtLeastOnce)]).await;
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    publisher
        .publish(&t, "state", QoS::AtLeastOnce, true, 1)
        .await;
    assert!(keep.message().await.retain, "Retain As Published");
    assert!(!clear.message().await.retain, "RETAIN cleared without it");

    // Retain Handling 0: on every subscribe, re-subscribes included.
    let mut again = Wire::open(&app, "again", &token).await;
    again.subscribe(1, vec![filter(&t, QoS::AtLeastOnce)]).await;
    assert!(again.message().await.retain);
    again.subscribe(2, vec![filter(&t, QoS::AtLeastOnce)]).await;
    assert_eq!(again.message().await.payload.as_ref(), b"state");
    // 1: only for a new subscription.
    let mut new_only = filter(&t, QoS::AtLeastOnce);
    new_only.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    again.subscribe(3, vec![new_only.clone()]).await;
    assert!(
        again.quiet().await.is_empty(),
        "Retain Handling 1 on a subscription held"
    );
    let mut fresh = Wire::open(&app, "fresh", &token).await;
    fresh.subscribe(1, vec![new_only]).await;
    assert_eq!(fresh.message().await.payload.as_ref(), b"state");
    // 2: never.
    let mut never = filter(&t, QoS::AtLeastOnce);
    never.retain_forward_rule = RetainForwardRule::Never;
    let mut none = Wire::open(&app, "none", &token).await;
    none.subscribe(1, vec![never]).await;
    assert!(none.quiet().await.is_empty(), "Retain Handling 2");
    app.stop().await;
}

#[tokio::test]
async fn retain_handling_applies_to_lanyards_own_topics() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let t = app.tenant("acme").await;
    let (_, token) = device(&app, &t, None, "").await;
    let jwks = "drivr/v1/acme/jwks";
    let mut wire = Wire::open(&app, "device", &token).await;
    wire.subscribe(1, vec![filter(jwks, QoS::AtMostOnce)]).await;
    assert!(wire.message().await.retain);
    wire.subscribe(2, vec![filter(jwks, QoS::AtMostOnce)]).await;
    assert!(wire.message().await.retain, "Retain Handling 0 again");
    let mut held = filter(jwks, QoS::AtMostOnce);
    held.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    wire.subscribe(3, vec![held]).await;
    assert!(
        wire.quiet().await.is_empty(),
        "Retain Handling 1 on a subscription held"
    );
    let mut never = filter(jwks, QoS::AtMostOnce);
    never.retain_forward_rule = RetainForwardRule::Never;
    let mut other = Wire::open(&app, "other", &token).await;
    other.subscribe(1, vec![never]).await;
    assert!(other.quiet().await.is_empty(), "Retain Handling 2");
    app.stop().await;
}

#[tokio::test]
async fn unsubscribing_from_a_shared_subscription_ends_its_delivery_and_no_other() {
    let (app, token) = open_broker().await;
    let (a, b) = (topic("shared-a"), topic("shared-b"));
    let mut member = Wire::open(&app, "member", &token).await;
    member
        .subscribe(
            1,
            vec![
                filter(&format!("$share/one/{a}"), QoS::AtMostOnce),
                filter(&format!("$share/two/{b}"), QoS::AtMostOnce),
            ],
        )
        .await;
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    publisher.publish(&a, "a1", QoS::AtMostOnce, false, 0).await;
    assert_eq!(member.message().await.payload.as_ref(), b"a1");

    member
        .send(P5::Unsubscribe(v5::Unsubscribe::new(
            format!("$share/one/{a}"),
            None,
        )))
        .await;
    assert!(matches!(member.recv(WAIT).await, Some(P5::UnsubAck(_))));
    publisher.publish(&a, "a2", QoS::AtMostOnce, false, 0).await;
    publisher.publish(&b, "b1", QoS::AtMostOnce, false, 0).await;
    let seen: Vec<Bytes> = member
        .quiet()
        .await
        .into_iter()
        .filter_map(|p| match p {
            P5::Publish(p) => Some(p.payload),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        vec![Bytes::from_static(b"b1")],
        "delivery after UNSUBSCRIBE, or the other group lost"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wildcard_subscription_gets_every_retained_message() {
    let (app, token) = open_broker().await;
    let t = topic("many");
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    // More than the router's inflight window (100) at QoS 1, and more than it forwards per
    // read (200) at QoS 0.
    for i in 0..250u16 {
        publisher
            .publish(&format!("{t}/{i}"), "r", QoS::AtLeastOnce, true, i + 1)
            .await;
    }
    let mut sub = Wire::open(&app, "sub", &token).await;
    sub.subscribe(1, vec![filter(&format!("{t}/#"), QoS::AtLeastOnce)])
        .await;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(p) = sub.recv(Duration::from_secs(2)).await {
        if let P5::Publish(p) = p {
            assert!(p.retain);
            seen.insert(p.topic.clone());
            sub.send(P5::PubAck(v5::PubAck::new(p.pkid, None))).await;
        }
    }
    assert_eq!(seen.len(), 250);
    app.stop().await;
}

#[tokio::test]
async fn a_resumed_session_gets_its_unacknowledged_messages_again_with_dup() {
    let (app, token) = open_broker().await;
    let t = topic("dup");
    let mut publisher = Wire::open(&app, "publisher", &token).await;

    // 5.0: the first message is acknowledged, the second not, the third is QoS 0.
    let (mut sub, _) = Wire::connect(&app, "five", &token, Hello::clean().expiry(300)).await;
    sub.subscribe(1, vec![filter(&t, QoS::ExactlyOnce)]).await;
    publisher
        .publish(&t, "acked", QoS::AtLeastOnce, false, 1)
        .await;
    publisher
        .publish(&t, "q2", QoS::ExactlyOnce, false, 2)
        .await;
    publisher.publish(&t, "q0", QoS::AtMostOnce, false, 0).await;
    let acked = sub.message().await;
    sub.send(P5::PubAck(v5::PubAck::new(acked.pkid, None)))
        .await;
    let first = sub.message().await;
    assert_eq!((first.payload.as_ref(), first.dup), (&b"q2"[..], false));
    assert_eq!(sub.message().await.payload.as_ref(), b"q0");
    drop(sub);
    let (mut sub, ack) = Wire::connect(&app, "five", &token, Hello::default().expiry(300)).await;
    assert!(ack.session_present);
    let again = sub.message().await;
    assert_eq!((again.payload.as_ref(), again.dup), (&b"q2"[..], true));
    // The same packet id ([MQTT-4.4.0-1]): a QoS 2 receiver knows it by that id.
    assert_eq!(again.pkid, first.pkid);
    assert_ne!(
        first.pkid, 1,
        "the test needs an id a fresh connection would not give"
    );
    assert!(
        sub.quiet().await.is_empty(),
        "an acknowledged or QoS 0 message went twice"
    );

    // 3.1.1
    let (mut sub, _) = Wire4::connect(&app, "four", &token, false).await;
    sub.subscribe(&t, rumqttc::QoS::AtLeastOnce).await;
    publisher
        .publish(&t, "again", QoS::AtLeastOnce, true, 2)
        .await;
    let first = sub.message().await;
    assert!(!first.dup && !first.retain);
    drop(sub);
    let (mut sub, ack) = Wire4::connect(&app, "four", &token, false).await;
    assert!(ack.session_present);
    let again = sub.message().await;
    assert_eq!((again.payload.as_ref(), again.dup), (&b"again"[..], true));
    app.stop().await;
}

#[tokio::test]
async fn only_what_was_unacknowledged_goes_again_when_a_session_resumes() {
    let (app, token) = open_broker().await;
    let t = topic("again");
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    let (mut sub, _) = Wire::connect(&app, "sub", &token, Hello::clean().expiry(300)).await;
    sub.subscribe(1, vec![filter(&t, QoS::ExactlyOnce)]).await;
    publisher.publish(&t, "x", QoS::AtLeastOnce, false, 1).await;
    publisher.publish(&t, "y", QoS::ExactlyOnce, false, 2).await;
    publisher.publish(&t, "z", QoS::AtMostOnce, false, 0).await;
    let (x, y) = (sub.message().await, sub.message().await);
    assert_eq!(sub.message().await.payload.as_ref(), b"z");
    // y is received (PUBREC) before x is acknowledged, which it never is.
    sub.send(P5::PubRec(v5::PubRec::new(y.pkid, None))).await;
    match sub.recv(WAIT).await {
        Some(P5::PubRel(rel)) => assert_eq!(rel.pkid, y.pkid),
        other => panic!("no PUBREL: {other:?}"),
    }
    drop(sub);
    let (mut sub, ack) = Wire::connect(&app, "sub", &token, Hello::default().expiry(300)).await;
    assert!(ack.session_present);
    let mut seen = sub.quiet().await;
    seen.sort_by_key(|p| matches!(p, P5::PubRel(_)));
    match &seen[..] {
        [P5::Publish(again), P5::PubRel(rel)] => {
            assert_eq!(
                (again.payload.as_ref(), again.dup, again.pkid),
                (&b"x"[..], true, x.pkid)
            );
            assert_eq!(rel.pkid, y.pkid);
        }
        other => panic!("x again and y's PUBREL, nothing else: {other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn a_qos2_publish_released_after_the_session_resumes_is_delivered_once() {
    let (app, token) = open_broker().await;
    let t = topic("release");
    let mut watcher = Wire::open(&app, "watcher", &token).await;
    watcher
        .subscribe(1, vec![filter(&t, QoS::ExactlyOnce)])
        .await;
    let (mut publisher, _) =
        Wire::connect(&app, "publisher", &token, Hello::clean().expiry(300)).await;
    let mut publish = v5::Publish::new(&t, QoS::ExactlyOnce, "once", None);
    publish.pkid = 7;
    publisher.send(P5::Publish(publish)).await;
    match publisher.recv(WAIT).await {
        Some(P5::PubRec(rec)) => assert_eq!(rec.pkid, 7),
        other => panic!("no PUBREC: {other:?}"),
    }
    drop(publisher);
    assert!(
        watcher.quiet().await.is_empty(),
        "released before its PUBREL"
    );
    let (mut publisher, ack) =
        Wire::connect(&app, "publisher", &token, Hello::default().expiry(300)).await;
    assert!(ack.session_present);
    // The client resends its PUBREL ([MQTT-4.4.0-1]).
    publisher.send(P5::PubRel(v5::PubRel::new(7, None))).await;
    match publisher.recv(WAIT).await {
        Some(P5::PubComp(comp)) => {
            assert_eq!((comp.pkid, comp.reason), (7, v5::PubCompReason::Success));
        }
        other => panic!("no PUBCOMP: {other:?}"),
    }
    assert_eq!(watcher.message().await.payload.as_ref(), b"once");
    // Once more: nothing is held under that id now, and the connection stays.
    publisher.send(P5::PubRel(v5::PubRel::new(7, None))).await;
    match publisher.recv(WAIT).await {
        Some(P5::PubComp(comp)) => {
            assert_eq!(comp.reason, v5::PubCompReason::PacketIdentifierNotFound);
        }
        other => panic!("no PUBCOMP: {other:?}"),
    }
    publisher
        .publish(&t, "after", QoS::AtLeastOnce, false, 8)
        .await;
    assert_eq!(watcher.message().await.payload.as_ref(), b"after");
    assert!(watcher.quiet().await.is_empty(), "delivered twice");
    app.stop().await;
}

#[tokio::test]
async fn unreleased_qos2_publishes_stay_bounded_across_resumptions() {
    let (app, token) = open_broker().await;
    let hello = || Hello::clean().expiry(300);
    let (mut hoarder, _) = Wire::connect(&app, "hoarder", &token, hello()).await;
    let qos2 = |pkid: u16| {
        let mut publish = v5::Publish::new("conformance/hoard", QoS::ExactlyOnce, "x", None);
        publish.pkid = pkid;
        let mut out = BytesMut::new();
        P5::Publish(publish).write(&mut out, None).unwrap();
        out
    };
    let mut batch = BytesMut::new();
    for pkid in 1..=100 {
        batch.extend_from_slice(&qos2(pkid));
    }
    hoarder.stream.write_all(&batch).await.unwrap();
    for _ in 0..100 {
        assert!(matches!(hoarder.recv(WAIT).await, Some(P5::PubRec(_))));
    }
    drop(hoarder);
    // Resumed, with a hundred publishes still unreleased: one more is one too many.
    let resume = Hello::default().expiry(300);
    let (mut hoarder, ack) = Wire::connect(&app, "hoarder", &token, resume).await;
    assert!(ack.session_present);
    hoarder.stream.write_all(&qos2(101)).await.unwrap();
    match hoarder.recv(WAIT).await {
        Some(P5::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::ReceiveMaximumExceeded);
        }
        other => panic!("no DISCONNECT: {other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn a_disconnect_of_one_byte_is_a_reason_code_alone() {
    let (app, token) = open_broker().await;
    let t = topic("short-disconnect");
    let mut watcher = Wire::open(&app, "watcher", &token).await;
    watcher
        .subscribe(1, vec![filter(&t, QoS::AtMostOnce)])
        .await;
    for (reason, will_expected) in [(0x00u8, false), (0x04, true)] {
        let will = LastWill::new(&t, format!("will {reason}"), QoS::AtMostOnce, false, None);
        let hello = Hello {
            will: Some(will),
            ..Hello::clean()
        };
        let (mut leaving, _) = Wire::connect(&app, "leaving", &token, hello).await;
        // Remaining length 1: a reason code and no properties (MQTT 5.0 §3.14.2.2.1).
        leaving
            .stream
            .write_all(&[0xe0, 0x01, reason])
            .await
            .unwrap();
        let answer = leaving.recv(WAIT).await;
        assert!(answer.is_none(), "the server answered {answer:?}");
        let will = watcher.recv(QUIET).await;
        assert_eq!(
            will.is_some(),
            will_expected,
            "reason {reason:#04x}: {will:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_pubrel_for_nothing_held_is_answered_not_found() {
    let (app, token) = open_broker().await;
    let mut wire = Wire::open(&app, "fresh", &token).await;
    wire.send(P5::PubRel(v5::PubRel::new(777, None))).await;
    match wire.recv(WAIT).await {
        Some(P5::PubComp(comp)) => {
            assert_eq!(
                (comp.pkid, comp.reason),
                (777, v5::PubCompReason::PacketIdentifierNotFound)
            );
        }
        other => panic!("no PUBCOMP: {other:?}"),
    }
    // Maximum Packet Size 0 is a protocol error (MQTT 5.0 §3.1.2.11.4).
    let mut hello = Hello::clean();
    let mut props = ConnectProperties::new();
    props.max_packet_size = Some(0);
    hello.properties = Some(props);
    let (_, ack) = Wire::connect(&app, "zero", &token, hello).await;
    assert_eq!(ack.code, ConnectReturnCode::ProtocolError);
    app.stop().await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let (app, token) = open_broker().await;
    let mut wire = Wire::open(&app, "shared", &token).await;
    let mut shared = filter(&format!("$share/g/{}", topic("nl")), QoS::AtMostOnce);
    shared.nolocal = true;
    wire.send(P5::Subscribe(v5::Subscribe {
        pkid: 1,
        filters: vec![shared],
        properties: None,
    }))
    .await;
    match wire.recv(WAIT).await {
        Some(P5::Disconnect(d)) => assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError),
        other => panic!("no DISCONNECT: {other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn a_v5_message_with_properties_reaches_a_v311_subscriber() {
    let (app, token) = open_broker().await;
    let t = topic("mixed");
    let (mut old, _) = Wire4::connect(&app, "old", &token, true).await;
    old.subscribe(&t, rumqttc::QoS::AtLeastOnce).await;
    let mut new = Wire::open(&app, "new", &token).await;
    let properties = PublishProperties {
        user_properties: vec![("unit".into(), "kWh".into())],
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    };
    let publish = v5::Publish::new(&t, QoS::AtMostOnce, "42", Some(properties));
    new.send(P5::Publish(publish)).await;
    assert_eq!(old.message().await.payload.as_ref(), b"42");
    app.stop().await;
}

#[tokio::test]
async fn after_the_suback_every_message_published_reaches_the_subscriber() {
    let (app, token) = open_broker().await;
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    for round in 0..50 {
        let t = topic("suback");
        // A clean session's router link is opened by its first SUBSCRIBE.
        let mut sub = Wire::open(&app, &format!("responder-{round}"), &token).await;
        sub.subscribe(1, vec![filter(&t, QoS::AtMostOnce)]).await;
        publisher
            .publish(&t, "request", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(
            sub.message().await.payload.as_ref(),
            b"request",
            "round {round}"
        );
    }
    app.stop().await;
}

/// A thousand QoS 0 PUBLISHes of 100 bytes to `topic`, written out once.
fn thousand_messages(topic: &str) -> BytesMut {
    let mut batch = BytesMut::new();
    for _ in 0..1000 {
        let publish = v5::Publish::new(topic, QoS::AtMostOnce, vec![b'x'; 100], None);
        P5::Publish(publish).write(&mut batch, None).unwrap();
    }
    batch
}

/// A subscriber reading everything, at most 16 KiB every `pause`, counting the messages of
/// `topic` until none has come for a few seconds.
async fn reader(
    app: &TestApp,
    token: &str,
    id: &str,
    topic: &str,
    pause: Duration,
) -> tokio::task::JoinHandle<u64> {
    let mut wire = Wire::open(app, id, token).await;
    wire.subscribe(1, vec![filter(topic, QoS::AtMostOnce)])
        .await;
    tokio::spawn(async move {
        let mut count = 0;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            loop {
                match P5::read(&mut wire.buf, None) {
                    Ok(P5::Publish(_)) => count += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let read = tokio::time::timeout(Duration::from_secs(3), wire.stream.read(&mut chunk));
            match read.await {
                Ok(Ok(n)) if n > 0 => wire.buf.extend_from_slice(&chunk[..n]),
                _ => return count,
            }
            tokio::time::sleep(pause).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_qos0_publisher_is_slowed_down_not_dropped_from() {
    let (app, token) = open_broker().await;
    let t = topic("load");
    // Readers that keep reading, at most about 8 MB/s each: slower than the publisher.
    let mut readers = Vec::new();
    for i in 0..4 {
        let pace = Duration::from_millis(2);
        readers.push(reader(&app, &token, &format!("reader-{i}"), &t, pace).await);
    }
    // 300,000 messages of 100 bytes: 30 MB, about twice what a topic's log keeps.
    let count = 300_000u64;
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    let batch = thousand_messages(&t);
    for _ in 0..count / 1000 {
        publisher.stream.write_all(&batch).await.unwrap();
    }
    for (i, reader) in readers.into_iter().enumerate() {
        assert_eq!(reader.await.unwrap(), count, "reader {i}");
    }
    let scrape = crate::metrics::scrape(&app).await;
    assert!(
        scrape.contains("lanyard_mqtt_messages_dropped_total 0"),
        "{scrape}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_holds_publishers_only_briefly_and_its_losses_are_counted()
{
    let (app, token) = open_broker().await;
    let t = topic("stalled");
    // It subscribes, then reads nothing until the publisher is done.
    let mut stalled = Wire::open(&app, "stalled", &token).await;
    stalled
        .subscribe(1, vec![filter(&t, QoS::AtMostOnce)])
        .await;
    let live = reader(&app, &token, "live", &t, Duration::ZERO).await;
    let count = 300_000u64;
    let mut publisher = Wire::open(&app, "publisher", &token).await;
    let batch = thousand_messages(&t);
    let started = Instant::now();
    let publishing = async {
        for _ in 0..count / 1000 {
            publisher.stream.write_all(&batch).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("the publisher is not held for good");
    assert_eq!(
        live.await.unwrap(),
        count,
        "the subscriber that reads gets everything"
    );
    let elapsed = started.elapsed();
    // What it missed is known, and counted, when it reads on.
    let mut received = 0u64;
    while let Some(p) = stalled.recv(Duration::from_secs(3)).await {
        if let P5::Publish(_) = p {
            received += 1;
        }
    }
    let scrape = crate::metrics::scrape(&app).await;
    let dropped: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("lanyard_mqtt_messages_dropped_total "))
        .expect("the dropped counter")
        .parse()
        .unwrap();
    assert!(received < count, "it kept up after all ({elapsed:?})");
    assert_eq!(
        received + dropped as u64,
        count,
        "every message received or counted"
    );
    app.stop().await;
}

#[tokio::test]
async fn paho_mqtt_finds_every_behaviour_conforming() {
    let Some(python) = interop_python() else {
        return;
    };
    let (app, token) = open_broker().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/mqtt_conformance.py"
    );
    let mut command = tokio::process::Command::new(python);
    command.arg(script).args([
        "--port",
        &app.mqtt_addr().port().to_string(),
        "--token",
        &token,
    ]);
    let out = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .expect("the paho checks finish")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(out.status.success(), "{said}");
    app.stop().await;
}
