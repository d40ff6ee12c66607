//! The MQTT door at the byte level: the answers a client gets to malformed, oversized, out of
//! order and never-finished packets, each costing only its own connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::mqtt::{V4, V5, device, wide_open};
use crate::mqtt_packets::{Connect, PINGREQ, Publish, fixed_header, pubrel, subscribe};

/// A CONNECT with clean session and keep-alive 60, and with a password the user name `device`;
/// `level` 4 or 5 (or another, to be refused).
pub fn connect(level: u8, client_id: &str, password: Option<&str>) -> Vec<u8> {
    Connect {
        login: password.map(|p| ("device", p)),
        ..Connect::new(level, client_id)
    }
    .bytes()
}

/// A 3.1.1 PUBLISH at QoS 0.
fn publish(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    Publish {
        retain,
        ..Publish::new(4, topic, payload)
    }
    .bytes()
}

pub async fn connect_raw(app: &TestApp, bytes: Vec<u8>) -> TcpStream {
    let mut stream = TcpStream::connect(app.mqtt_addr()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    stream
}

/// What the server sends until it pauses or closes.
pub async fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Whether the server closed the connection (EOF or reset) within a few seconds.
async fn closed(stream: &mut TcpStream) -> bool {
    closed_within(stream, Duration::from_secs(5)).await
}

async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn token(app: &TestApp) -> String {
    let t = app.tenant("acme").await;
    device(app, &t, None, "").await.1
}

#[tokio::test]
async fn refused_connects_get_a_connack_with_the_reason_before_the_close() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = token(&app).await;
    let cases: [(Vec<u8>, Vec<u8>); 6] = [
        (connect(4, "a", Some("bad")), vec![0x20, 2, 0, 0x05]),
        (connect(5, "a", Some("bad")), vec![0x20, 3, 0, 0x87, 0]),
        (connect(4, "a", None), vec![0x20, 2, 0, 0x04]),
        (connect(5, "a", None), vec![0x20, 3, 0, 0x86, 0]),
        (connect(4, "a/b", Some(&token)), vec![0x20, 2, 0, 0x02]),
        (connect(3, "a", Some(&token)), vec![0x20, 2, 0, 0x01]),
    ];
    // A 5.0 CONNECT that announces a user name and password it does not carry is malformed.
    let mut malformed = connect(5, "a", None);
    malformed[9] = 0xc2;
    let mut s = connect_raw(&app, malformed).await;
    assert_eq!(read_some(&mut s).await, vec![0x20, 3, 0, 0x81, 0]);
    assert!(closed(&mut s).await);
    for (request, answer) in cases {
        let mut s = connect_raw(&app, request.clone()).await;
        assert_eq!(
            read_some(&mut s).await,
            answer,
            "for {:02x?}",
            &request[..12]
        );
        assert!(closed(&mut s).await);
    }
    let mut s = connect_raw(&app, connect(4, "a", Some(&token))).await;
    assert_eq!(read_some(&mut s).await, vec![0x20, 2, 0, 0]);
}

#[tokio::test]
async fn packets_pipelined_after_a_refused_connect_are_not_processed() {
    let app = wide_open().await;
    let token = token(&app).await;
    let mut watcher = V4::connect(&app, "watcher", &token).await.unwrap();
    watcher.subscribe("open/#").await;
    let mut bytes = connect(4, "intruder", Some("bad"));
    bytes.extend(publish("open/door", b"now", true));
    let mut s = connect_raw(&app, bytes).await;
    assert_eq!(read_some(&mut s).await, vec![0x20, 2, 0, 0x05]);
    assert!(watcher.message(Duration::from_millis(500)).await.is_none());
    // The same publish after a good CONNECT goes through: the check above can fail.
    let mut bytes = connect(4, "friend", Some(&token));
    bytes.extend(publish("open/door", b"now", false));
    let _s = connect_raw(&app, bytes).await;
    assert!(watcher.message(Duration::from_secs(3)).await.is_some());
}

#[tokio::test]
async fn a_packet_that_arrives_in_pieces_is_put_together() {
    let app = wide_open().await;
    let token = token(&app).await;
    let mut watcher = V4::connect(&app, "watcher", &token).await.unwrap();
    watcher.subscribe("slow/#").await;
    let mut s = connect_raw(&app, connect(4, "trickle", Some(&token))).await;
    assert_eq!(read_some(&mut s).await, vec![0x20, 2, 0, 0]);
    // A long payload, so that the packet's length itself spans two bytes.
    let payload = vec![b'x'; 300];
    let mut bytes = publish("slow/one", &payload, false);
    bytes.extend(publish("slow/two", b"2", false));
    // One byte, then the rest of the length, then the packet and a half, then the rest.
    for piece in [&bytes[..1], &bytes[1..3], &bytes[3..320], &bytes[320..]] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let one = watcher
        .message(Duration::from_secs(3))
        .await
        .expect("the first");
    assert_eq!((one.topic.as_str(), one.payload.len()), ("slow/one", 300));
    let two = watcher
        .message(Duration::from_secs(3))
        .await
        .expect("the second");
    assert_eq!(
        (two.topic.as_str(), &two.payload[..]),
        ("slow/two", &b"2"[..])
    );
}

#[tokio::test]
async fn garbage_half_packets_and_server_only_packets_cost_only_their_connection() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = token(&app).await;
    // Not MQTT at all.
    let mut s = connect_raw(&app, b"GET / HTTP/1.1\r\n\r\n".to_vec()).await;
    assert!(closed(&mut s).await);
    // A remaining length that never ends.
    let mut s = connect_raw(&app, vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]).await;
    assert!(closed(&mut s).await);
    // Server-only packets after a good CONNECT: 5.0 says why, then closes; nothing panics.
    for server_only in [
        vec![0x20, 0x03, 0x00, 0x00, 0x00],       // CONNACK
        vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x00], // SUBACK
        vec![0xb0, 0x04, 0x00, 0x01, 0x00, 0x00], // UNSUBACK
        vec![0xd0, 0x00],                         // PINGRESP
        vec![0xf0, 0x00],                         // AUTH
    ] {
        let mut bytes = connect(5, "odd", Some(&token));
        bytes.extend(server_only.clone());
        let mut s = connect_raw(&app, bytes).await;
        let answer = read_some(&mut s).await;
        assert_eq!(
            (answer[0], answer[2], answer[3]),
            (0x20, 0, 0),
            "CONNACK first: {answer:02x?}"
        );
        assert!(
            answer.ends_with(&[0xe0, 0x02, 0x82, 0x00]),
            "DISCONNECT protocol error after {server_only:02x?}: {answer:02x?}"
        );
        assert!(closed(&mut s).await);
    }
    // A second CONNECT is a protocol error too; 3.1.1 just closes.
    let mut bytes = connect(4, "twice", Some(&token));
    bytes.extend(connect(4, "twice", Some(&token)));
    let mut s = connect_raw(&app, bytes).await;
    assert_eq!(read_some(&mut s).await, vec![0x20, 2, 0, 0]);
    assert!(closed(&mut s).await);
    // The server is fine.
    assert!(V5::connect(&app, "after", &token).await.is_ok());
}

#[tokio::test]
async fn oversized_packets_are_refused_with_a_reason() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.mqtt.max_packet_size = 4096).await;
    let token = token(&app).await;
    // A PUBLISH announcing 2 MiB, more than the limit, without sending it.
    let mut bytes = connect(5, "big", Some(&token));
    bytes.extend(fixed_header(0x30, 2_097_151));
    let mut s = connect_raw(&app, bytes).await;
    let answer = read_some(&mut s).await;
    assert!(answer.ends_with(&[0xe0, 0x02, 0x95, 0x00]), "{answer:02x?}");
    assert!(closed(&mut s).await);
    // A CONNECT larger than the CONNECT limit.
    let huge = "x".repeat(70_000);
    let mut s = connect_raw(&app, connect(5, "big", Some(&huge))).await;
    assert_eq!(read_some(&mut s).await, vec![0x20, 3, 0, 0x95, 0]);
    // A password longer than any token.
    let long = "x".repeat(9_000);
    let mut s = connect_raw(&app, connect(4, "big", Some(&long))).await;
    assert_eq!(read_some(&mut s).await, vec![0x20, 2, 0, 0x04]);
}

#[tokio::test]
async fn connections_that_never_send_connect_are_bounded_and_timed_out() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.connect_timeout = lanyard::domain::Period::from_secs(1);
        s.mqtt.max_connections = 1050;
        // All come from one address: this test is about the listener's own limit.
        s.limits.connections_per_ip = 2000;
    })
    .await;
    let token = token(&app).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(app.mqtt_addr()).await.unwrap());
    }
    // Half a CONNECT is no better than none.
    let half = connect(4, "half", Some(&token));
    idle[0].write_all(&half[..half.len() / 2]).await.unwrap();
    // A real device still gets in meanwhile.
    assert!(V4::connect(&app, "real", &token).await.is_ok());
    // Beyond the limit, new connections are closed at once.
    let mut extra = Vec::new();
    for _ in 0..60 {
        extra.push(TcpStream::connect(app.mqtt_addr()).await.unwrap());
    }
    let mut refused = 0;
    for s in &mut extra {
        // Well before the CONNECT timeout: closed because of the limit.
        if closed_within(s, Duration::from_millis(100)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 11,
        "connections beyond the limit were kept: {refused}"
    );
    // The idle ones are all closed by the CONNECT timeout.
    for s in &mut idle {
        assert!(closed(s).await, "an idle connection was kept open");
    }
    assert!(V4::connect(&app, "later", &token).await.is_ok());
}

/// A CONNECT with a chosen keep-alive.
fn connect_keep_alive(level: u8, client_id: &str, password: &str, keep_alive: u16) -> Vec<u8> {
    Connect {
        keep_alive,
        login: Some(("device", password)),
        ..Connect::new(level, client_id)
    }
    .bytes()
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = token(&app).await;
    let mut v5 = connect_raw(&app, connect_keep_alive(5, "sleepy", &token, 1)).await;
    let mut v4 = connect_raw(&app, connect_keep_alive(4, "sleepy4", &token, 1)).await;
    let started = std::time::Instant::now();
    let answer = read_some(&mut v5).await;
    assert_eq!(answer[0], 0x20, "CONNACK: {answer:02x?}");
    let mut rest = answer[answer[1] as usize + 2..].to_vec();
    while rest.len() < 4 {
        let more = read_some(&mut v5).await;
        if more.is_empty() && started.elapsed() > Duration::from_secs(5) {
            break;
        }
        rest.extend(more);
    }
    assert_eq!(
        rest,
        vec![0xe0, 0x02, 0x8d, 0x00],
        "DISCONNECT keep-alive timeout"
    );
    assert!(closed(&mut v5).await);
    assert_eq!(read_some(&mut v4).await, vec![0x20, 2, 0, 0]);
    assert!(closed(&mut v4).await);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "dropped before its time"
    );
    // A client that pings in time stays.
    let mut awake = connect_raw(&app, connect_keep_alive(4, "awake", &token, 1)).await;
    assert_eq!(read_some(&mut awake).await, vec![0x20, 2, 0, 0]);
    for _ in 0..4 {
        awake.write_all(&PINGREQ).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let mut answers = Vec::new();
    awake.write_all(&PINGREQ).await.unwrap();
    answers.extend(read_some(&mut awake).await);
    assert!(
        answers.ends_with(&[0xd0, 0x00]),
        "PINGRESP after 3 s of pings: {answers:02x?}"
    );
}

/// A 5.0 SUBSCRIBE of `filters` at QoS 0, without properties.
fn subscribe_v5(pkid: u16, filters: &[&str]) -> Vec<u8> {
    subscribe(5, pkid, filters, 0)
}

/// Everything the server sends until it closes; None if it is still open after a few seconds
/// of silence.
async fn until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_device_that_pipelines_resubscribes_to_its_token_list_and_never_reads_is_ended() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.mqtt.max_queued_bytes = 64 * 1024).await;
    let w = crate::graphql::world(&app).await;
    // A list of a few kilobytes.
    for _ in 0..8 {
        let body = crate::graphql::gql(
            &app,
            Some(&w.user_token),
            "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
            serde_json::json!({ "s": w.system }),
        )
        .await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
    let list = format!("drivr/v1/acme/authorization/localApiTokens/{}", w.system);
    // Each SUBSCRIBE asks for the list several times over; a few kilobytes of them ask for
    // megabytes of answers.
    let mut attack = connect(5, &id, Some(&token));
    for pkid in 1..=200u16 {
        attack.extend(subscribe_v5(pkid, &[&list, &list, &list]));
    }
    assert!(attack.len() < 64 * 1024);
    let mut s = connect_raw(&app, attack).await;
    let seen = until_closed(&mut s)
        .await
        .expect("a client that does not read what it asks for is ended");
    assert!(
        seen.ends_with(&[0xe0, 0x02, 0x97, 0x00]),
        "5.0: DISCONNECT 0x97 (quota exceeded) last"
    );
    assert!(
        seen.len() < 1024 * 1024,
        "{} bytes were sent to a client that never read",
        seen.len()
    );
    // Others are still served.
    let mut other = V4::connect(&app, "other", &token).await.unwrap();
    other.subscribe(&list).await;
    other
        .message(Duration::from_secs(3))
        .await
        .expect("the list");
}

#[tokio::test]
async fn a_subscribe_naming_lanyards_topic_several_times_delivers_it_once() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = token(&app).await;
    let mut s = connect_raw(&app, connect(5, "twice", Some(&token))).await;
    let jwks = "drivr/v1/acme/jwks";
    let count = |bytes: &[u8]| {
        // Each retained JWKS publish carries the topic once.
        bytes
            .windows(jwks.len())
            .filter(|w| *w == jwks.as_bytes())
            .count()
    };
    s.write_all(&subscribe_v5(1, &[jwks, jwks, jwks]))
        .await
        .unwrap();
    assert_eq!(count(&read_some(&mut s).await), 1, "first subscribe");
    s.write_all(&subscribe_v5(2, &[jwks, jwks, jwks]))
        .await
        .unwrap();
    assert_eq!(count(&read_some(&mut s).await), 1, "subscribe again");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_still_ended_when_its_token_is_revoked() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.mqtt.max_queued_bytes = 256 * 1024 * 1024;
    })
    .await;
    let w = crate::graphql::world(&app).await;
    for _ in 0..8 {
        crate::graphql::gql(
            &app,
            Some(&w.user_token),
            "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
            serde_json::json!({ "s": w.system }),
        )
        .await;
    }
    let (id, token) = device(&app, &w.t, Some(&w.system), "").await;
    let base = app.app().mqtt().router_links();
    let list = format!("drivr/v1/acme/authorization/localApiTokens/{}", w.system);
    // Far more answers than the socket buffers hold, and not one of them read.
    let mut stuck = connect(5, &id, Some(&token));
    for pkid in 1..=3000u16 {
        stuck.extend(subscribe_v5(pkid, &[&list]));
    }
    let mut s = connect_raw(&app, stuck).await;
    crate::mqtt::router_links_settle(&app, base + 1).await;
    let res = app
        .post_form(
            "/t/acme/oauth2/revoke",
            Some((&w.t.admin_id, &w.t.admin_secret)),
            &format!("token={}", urlencode(&token)),
        )
        .await;
    assert_eq!(res.status(), 200);
    // The session ends although its client never read: its link is gone before anything is.
    crate::mqtt::router_links_settle(&app, base).await;
    assert!(until_closed(&mut s).await.is_some());
}

#[tokio::test]
async fn a_packet_trickled_in_a_byte_at_a_time_does_not_keep_a_connection_alive() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = token(&app).await;
    let mut s = connect_raw(&app, connect_keep_alive(5, "trickle", &token, 1)).await;
    let answer = read_some(&mut s).await;
    assert_eq!(answer[0], 0x20, "CONNACK: {answer:02x?}");
    // A PUBLISH announcing 200 KB, sent a byte every 300 ms: bytes arrive well within the
    // keep-alive, a packet never does.
    s.write_all(&fixed_header(0x30, 200_000)).await.unwrap();
    let mut closed_early = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(b"x").await.is_err() {
            closed_early = true;
            break;
        }
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await;
        if let Ok(Ok(n)) = read
            && (n == 0 || buf[..n].ends_with(&[0xe0, 0x02, 0x8d, 0x00]))
        {
            closed_early = true;
            break;
        }
    }
    assert!(
        closed_early,
        "a never-finished packet kept the connection alive"
    );
}

/// Clients such as paho send the PUBREL of a QoS 2 publish even after a 5.0 PUBREC `0x87`. It
/// is answered (PUBCOMP `0x92`, Packet Identifier not found) and the connection stays, also
/// once the session has a router link: the router never saw the message and would end it.
#[tokio::test]
async fn a_pubrel_after_a_refused_qos2_publish_is_answered_and_the_connection_stays() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = token(&app).await;
    let mut stream = connect_raw(&app, connect(5, "paho-like", Some(&token))).await;
    stream
        .write_all(&subscribe_v5(1, &["drivr/v1/acme/jwks"]))
        .await
        .unwrap();
    let answers = read_some(&mut stream).await;
    assert!(answers.contains(&0x90), "a SUBACK: {answers:02x?}");
    // PUBLISH QoS 2 under lanyard's prefix, packet id 7, no properties.
    let publish = Publish {
        qos: 2,
        packet_id: 7,
        ..Publish::new(5, "drivr/v1/acme/jwks", b"{}")
    };
    stream.write_all(&publish.bytes()).await.unwrap();
    let pubrec = read_some(&mut stream).await;
    // PUBREC, its length, packet id 7, reason 0x87 (Not authorized).
    assert_eq!(
        (pubrec.first(), pubrec.get(2..5)),
        (Some(&0x50), Some(&[0x00, 0x07, 0x87][..])),
        "{pubrec:02x?}"
    );
    // PUBREL 7 anyway, then a PINGREQ.
    stream
        .write_all(&[&pubrel(7)[..], &PINGREQ].concat())
        .await
        .unwrap();
    let answers = read_some(&mut stream).await;
    // PUBCOMP, its length, packet id 7, reason 0x92 (Packet Identifier not found).
    assert_eq!(
        (answers.first(), answers.get(2..5)),
        (Some(&0x70), Some(&[0x00, 0x07, 0x92][..])),
        "{answers:02x?}"
    );
    assert!(
        answers.ends_with(&[0xd0, 0x00]),
        "still connected: {answers:02x?}"
    );
}
