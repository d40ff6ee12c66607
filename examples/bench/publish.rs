//! Publish throughput: 100-byte messages from one publisher at QoS 0 and 1, to one and to four
//! subscribers, in deliveries per second until every subscriber has every message (or stopped
//! receiving), against Mosquitto under the same load; beside each rate, the share of the
//! messages published that reached every subscriber (a broker that drops QoS 0 messages shows
//! a high rate and a low share).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt_client::mqtt_connect;
use crate::mqtt_packets::{Publish, frame_len, puback, subscribe};
use crate::procs::{Lanyard, Mosquitto};
use crate::report::{Row, row};
use crate::setup::client_token;

/// How long a subscriber waits for the next message before it counts the rest as lost.
const SILENCE: Duration = Duration::from_secs(3);

/// Reads MQTT frames from `s`, counting PUBLISHes (and acknowledging QoS 1 ones) until `want`
/// arrived or none came for [`SILENCE`]; returns the count and when the last one came.
async fn count_publishes(mut s: TcpStream, want: u64) -> (u64, Instant) {
    let mut buf = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut got = 0;
    let mut last = Instant::now();
    while got < want {
        let n = match tokio::time::timeout(SILENCE, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        last = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        let mut acks = Vec::new();
        let mut at = 0;
        while let Some((len, header)) = frame_len(&buf[at..]) {
            if buf.len() - at < len {
                break;
            }
            let first = buf[at];
            if first >> 4 == 3 {
                got += 1;
                if (first >> 1) & 3 == 1 {
                    let body = &buf[at + header..at + len];
                    let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let packet_id = u16::from_be_bytes([body[2 + tl], body[3 + tl]]);
                    acks.extend_from_slice(&puback(packet_id));
                }
            }
            at += len;
        }
        buf.drain(..at);
        if !acks.is_empty() && s.write_all(&acks).await.is_err() {
            break;
        }
    }
    (got, last)
}

/// What a fan-out measured: deliveries per second, and the share of the deliveries due that
/// arrived.
struct FanOut {
    rate: f64,
    delivered: f64,
}

/// Publishes `count` messages of 100 bytes at `qos` from one connection to `subscribers`
/// connections, until every subscriber has all of them or none arrived for a while.
async fn fan_out(
    addr: SocketAddr,
    password: Option<&str>,
    qos: u8,
    subscribers: usize,
    count: u64,
    tag: &str,
) -> FanOut {
    let topic = format!("bench/{tag}");
    let mut receivers = Vec::new();
    for i in 0..subscribers {
        let mut s = mqtt_connect(addr, &format!("sub-{tag}-{i}"), password)
            .await
            .expect("subscriber connects");
        s.write_all(&subscribe(4, 1, &[&topic], qos)).await.unwrap();
        let mut suback = [0u8; 5];
        s.read_exact(&mut suback).await.unwrap();
        assert_eq!(suback[0], 0x90, "SUBACK");
        receivers.push(tokio::spawn(count_publishes(s, count)));
    }
    let mut publisher = mqtt_connect(addr, &format!("pub-{tag}"), password)
        .await
        .expect("publisher connects");
    let payload = [b'x'; 100];
    let started = Instant::now();
    // The publisher's own acknowledgements are read and dropped in the background.
    let (mut rd, mut wr) = publisher.split();
    let drain = async {
        let mut sink = vec![0u8; 1 << 16];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(60), rd.read(&mut sink)).await
        {
            if n == 0 {
                break;
            }
        }
    };
    let send = async {
        let mut batch = Vec::with_capacity(64 * 1024);
        for i in 0..count {
            let publish = Publish {
                qos,
                packet_id: (i % 65_000 + 1) as u16,
                ..Publish::new(4, &topic, &payload)
            };
            batch.extend(publish.bytes());
            if batch.len() > 60 * 1024 {
                wr.write_all(&batch).await.unwrap();
                batch.clear();
            }
        }
        wr.write_all(&batch).await.unwrap();
    };
    let receive = async {
        let mut total = 0;
        let mut finished = started;
        for r in receivers {
            let (got, last) = r.await.unwrap();
            total += got;
            finished = finished.max(last);
        }
        (total, finished)
    };
    let (_, (total, finished)) = tokio::join!(send, async {
        tokio::select! {
            received = receive => received,
            _ = drain => (0, Instant::now()),
        }
    });
    let due = count * subscribers as u64;
    FanOut {
        rate: total as f64 / (finished - started).as_secs_f64().max(1e-6),
        delivered: total as f64 / due as f64,
    }
}

/// Each of QoS 0 and 1 to one and to four subscribers, the same messages on lanyard (with a
/// token of the demo device) and then on `mosquitto`: a row each.
pub async fn measure(
    http: &reqwest::Client,
    l: &Lanyard,
    mosquitto: &Mosquitto,
    quick: bool,
) -> Vec<Row> {
    // 400,000 messages of 100 bytes, 40 MB: more than a topic's log keeps (16 MiB), so a broker
    // that drops what a slower subscriber has not read yet shows it in the share delivered.
    let count: u64 = if quick { 2_000 } else { 400_000 };
    let bench_token = client_token(http, l, &l.device_id, &l.device_secret).await;
    let mut rows = Vec::new();
    for (qos, subs) in [(0u8, 1usize), (0, 4), (1, 1), (1, 4)] {
        let tag = format!("q{qos}s{subs}");
        let ours = fan_out(
            l.mqtt,
            Some(&bench_token),
            qos,
            subs,
            count,
            &format!("l{tag}"),
        )
        .await;
        let theirs = fan_out(mosquitto.addr, None, qos, subs, count, &format!("m{tag}")).await;
        // Met when as fast as Mosquitto and losing no more of what it was given.
        rows.push(row(
            &format!("publish QoS {qos}, 100 B, 1 → {subs}"),
            format!(
                "{:.0} deliveries/s, {:.1}% delivered",
                ours.rate,
                ours.delivered * 100.0
            ),
            format!(
                "Mosquitto {:.0}/s, {:.1}% delivered",
                theirs.rate,
                theirs.delivered * 100.0
            ),
            Some(ours.rate / theirs.rate.max(1e-9)),
            "≥ 1.0×, as much delivered",
            Some(ours.rate >= theirs.rate && ours.delivered >= theirs.delivered),
        ));
    }
    rows
}
