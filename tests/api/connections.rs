//! Connections as an attacker holds them: half-sent requests, idle sockets, many from one
//! address. Each is closed (at once when it is one too many, after `http.header_timeout` when
//! it is slow) while everyone else is still served (SPEC §7).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;
use crate::mqtt_bytes::connect;

/// A test deadline, far beyond any timeout configured here: reaching it means "never".
const NEVER: Duration = Duration::from_secs(30);

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all loopback).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.expect("the listener accepts")
}

/// Whether the server closes `stream` before `deadline` (whatever it sends first is read and
/// dropped).
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A reqwest client whose connections come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn healthz_from(app: &TestApp, from: &str) -> u16 {
    client_from(from)
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz answers")
        .status()
        .as_u16()
}

/// Sends a CONNECT with a password that is no token from `from` and returns the answer's
/// first byte (0x20: a CONNACK), or `None` when the connection was closed instead.
async fn mqtt_answer_from(app: &TestApp, from: &str) -> Option<u8> {
    let mut stream = connect_from(from, app.mqtt_addr()).await;
    stream
        .write_all(&connect(4, "probe", Some("not-a-token")))
        .await
        .ok()?;
    let mut first = [0u8; 1];
    tokio::time::timeout(NEVER, stream.read_exact(&mut first))
        .await
        .expect("the broker answers or closes")
        .ok()?;
    Some(first[0])
}

async fn mqtt_answers_from(app: &TestApp, from: &str) -> u8 {
    mqtt_answer_from(app, from).await.expect("a CONNACK")
}

const HALF_A_REQUEST: &[u8] = b"POST /t/acme/oauth2/token HTTP/1.1\r\nHost: lanyard.test\r\n";

#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_timeout_while_others_are_served() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.http.header_timeout = "1s".parse().unwrap();
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = connect_from("127.0.0.1", app.app().http_addr()).await;
        stream.write_all(HALF_A_REQUEST).await.unwrap();
        slow.push(stream);
    }
    // Idle sockets that never send a byte are held to the same deadline.
    for _ in 0..50 {
        slow.push(connect_from("127.0.0.1", app.app().http_addr()).await);
    }
    assert_eq!(healthz_from(&app, "127.0.0.2").await, 200);
    for stream in &mut slow {
        assert!(
            closed_within(stream, NEVER).await,
            "a half-sent request was held open"
        );
    }
    assert_eq!(healthz_from(&app, "127.0.0.1").await, 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_of_one_address_are_closed_at_once_on_each_listener() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.limits.connections_per_ip = 40;
        // Long enough that only the cap can close what this test sees closed.
        s.http.header_timeout = "5m".parse().unwrap();
        s.mqtt.connect_timeout = "5m".parse().unwrap();
    })
    .await;
    let (http, mqtt) = (app.app().http_addr(), app.mqtt_addr());
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut stream = connect_from("127.0.0.1", http).await;
        stream.write_all(HALF_A_REQUEST).await.unwrap();
        held.push(stream);
        held.push(connect_from("127.0.0.1", mqtt).await);
    }
    for to in [http, mqtt] {
        for _ in 0..20 {
            let mut excess = connect_from("127.0.0.1", to).await;
            assert!(
                closed_within(&mut excess, NEVER).await,
                "a connection beyond the cap was kept"
            );
        }
    }
    // Another address is served on both listeners meanwhile.
    assert_eq!(healthz_from(&app, "127.0.0.2").await, 200);
    assert_eq!(mqtt_answers_from(&app, "127.0.0.2").await, 0x20);
    let res = client_from("127.0.0.2")
        .post(app.url("/t/acme/oauth2/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "the token endpoint answers");
    // Closing one makes room for one more.
    held.truncate(79);
    let answered = tokio::time::timeout(NEVER, async {
        loop {
            if let Some(answer) = mqtt_answer_from(&app, "127.0.0.1").await {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        answered.ok(),
        Some(0x20),
        "the freed place was not given again"
    );
}

#[tokio::test]
async fn a_request_head_too_large_is_refused_without_being_held() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut stream = connect_from("127.0.0.1", app.app().http_addr()).await;
    let padding = "a".repeat(200 * 1024);
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: lanyard.test\r\nX-Padding: {padding}\r\n\r\n");
    // The server may stop reading before the whole head is sent.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(NEVER, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "a 200 KiB head was read whole: {answer}"
    );
    assert_eq!(healthz_from(&app, "127.0.0.1").await, 200);
}

/// Sends a GET for `/healthz` on `stream` and reads its answer (a small, complete response).
async fn healthz_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: lanyard.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok") {
        let n = tokio::time::timeout(NEVER, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_keep_alive_connection_waits_the_idle_timeout_between_requests_then_is_closed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.http.header_timeout = "1s".parse().unwrap();
        s.http.idle_timeout = "3s".parse().unwrap();
    })
    .await;
    let mut stream = connect_from("127.0.0.1", app.app().http_addr()).await;
    assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle between requests longer than the header timeout: the header timeout counts from a
    // request's first byte, not from the last answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Left idle, it is closed.
    assert!(
        closed_within(&mut stream, NEVER).await,
        "an idle keep-alive connection was held open"
    );
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_cut_off_after_the_header_timeout() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.http.header_timeout = "1s".parse().unwrap();
    })
    .await;
    app.tenant("acme").await;
    let mut stream = connect_from("127.0.0.1", app.app().http_addr()).await;
    stream
        .write_all(
            b"POST /t/acme/oauth2/token HTTP/1.1\r\nHost: lanyard.test\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    // A byte every 200 ms keeps the connection busy, far within the idle timeout, but the
    // body as a whole is late.
    let mut answer = Vec::new();
    let answered = tokio::time::timeout(NEVER, async {
        let mut buf = [0u8; 1024];
        loop {
            if stream.write_all(b"a").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
                Err(_) => {}
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "the trickling body was waited for");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
}
