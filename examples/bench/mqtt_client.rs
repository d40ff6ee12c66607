//! The benchmark's MQTT client: 3.1.1 over a bare TCP stream, written with the packet writers
//! the API tests use, so that opening a connection costs the load generator little. It talks
//! to lanyard with a token as password and to Mosquitto anonymously.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt_packets::{Connect, DISCONNECT};

/// The user name of every CONNECT with a password, unless one is named.
const USER: &str = "bench";

/// An MQTT 3.1.1 CONNECT, with a user name and password when given.
fn connect_packet(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    Connect {
        login,
        ..Connect::new(4, client_id)
    }
    .bytes()
}

/// Connects from 127.0.0.2 to 127.0.0.254 in turn. A connection closed by the client leaves its
/// port in TIME_WAIT for a minute: from one address, the 28,000 ports of the ephemeral range
/// run out within two seconds of CONNECTs, and the kernel's search for a free port then costs
/// the load generator more than the CONNECT costs the server.
async fn connect_spread(addr: SocketAddr) -> std::io::Result<TcpStream> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = (NEXT.fetch_add(1, Ordering::Relaxed) % 253) as u8;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 2 + n], 0)))?;
    socket.connect(addr).await
}

/// Connects (see [`connect_spread`]) as user `bench` with `password`, waits for a successful
/// CONNACK; the stream stays open.
pub async fn mqtt_connect(
    addr: SocketAddr,
    client_id: &str,
    password: Option<&str>,
) -> Option<TcpStream> {
    mqtt_connect_as(addr, client_id, password.map(|p| (USER, p))).await
}

/// [`mqtt_connect`] with a user name of the caller's.
async fn mqtt_connect_as(
    addr: SocketAddr,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> Option<TcpStream> {
    let mut s = connect_spread(addr).await.ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(&connect_packet(client_id, login)).await.ok()?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.ok()?;
    (ack == [0x20, 2, 0, 0]).then_some(s)
}

/// CONNECT, CONNACK, DISCONNECT.
pub async fn connect_cycle(addr: SocketAddr, client_id: &str, password: Option<&str>) -> bool {
    connect_cycle_as(addr, client_id, password.map(|p| (USER, p))).await
}

/// [`connect_cycle`] with a user name of the caller's.
pub async fn connect_cycle_as(
    addr: SocketAddr,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> bool {
    match mqtt_connect_as(addr, client_id, login).await {
        Some(mut s) => s.write_all(&DISCONNECT).await.is_ok(),
        None => false,
    }
}
