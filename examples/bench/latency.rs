//! Mint → device latency: from a GraphQL `createLocalApiToken` until a client subscribed to that
//! system's token list over MQTT, as a device is, sees the new token, round the systems; and
//! revoke → device: from a GraphQL `revokeLocalApiToken` until a client subscribed to the
//! system's status list receives the list signed again, one revocation on each of many systems.
//! No reference is measured: the targets are absolute.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mqtt_client::mqtt_connect;
use crate::mqtt_packets::subscribe;
use crate::procs::Lanyard;
use crate::report::{Row, row};
use crate::setup::{MINT, client_token, graphql};

/// Mints with the token `person` for one system of `system_ids` after the other, each watched
/// by a reader client that `admin` creates: the row, with the 50th and 99th percentiles.
pub async fn measure(
    http: &reqwest::Client,
    l: &Lanyard,
    admin: &str,
    person: &str,
    system_ids: &[String],
    quick: bool,
) -> Row {
    let reader = reader(http, l, admin).await;
    let samples = if quick { 10 } else { 200 };
    let mut latencies = Vec::new();
    for i in 0..samples {
        let system = &system_ids[i % system_ids.len()];
        let topic = format!("drivr/v1/demo/authorization/localApiTokens/{system}");
        let mut s = mqtt_connect(l.mqtt, &format!("lat-{i}"), Some(&reader))
            .await
            .expect("reader connects");
        s.write_all(&subscribe(4, 1, &[&topic], 0)).await.unwrap();
        // SUBACK and the current list.
        let mut sink = vec![0u8; 1 << 20];
        let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut sink)).await;
        let started = Instant::now();
        let minted = graphql(http, l, person, MINT, json!({ "s": system })).await;
        let uuid = minted["data"]["createLocalApiToken"]["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut seen = String::new();
        while !seen.contains(&uuid) {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&sink[..n])),
                _ => break,
            }
        }
        if seen.contains(&uuid) {
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (p50, p99) = percentiles(&mut latencies);
    row(
        &format!("mint → device latency, {} systems", system_ids.len()),
        format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms ({} samples)",
            latencies.len()
        ),
        "—".into(),
        None,
        "p99 < 50 ms",
        Some(p99 < 50.0),
    )
}

/// A client that may read every system's lists: its access token.
async fn reader(http: &reqwest::Client, l: &Lanyard, admin: &str) -> String {
    let reg = graphql(http, l, admin, "mutation { createClient(input: {name: \"reader\", scopes: [\"lanyard:local-tokens:read\"]}) { clientId clientSecret } }", json!({})).await;
    let reg = &reg["data"]["createClient"];
    client_token(
        http,
        l,
        reg["clientId"].as_str().unwrap(),
        reg["clientSecret"].as_str().unwrap(),
    )
    .await
}

/// The 50th and 99th percentiles of `samples` (sorted here), in their unit.
fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (pct(0.5), pct(0.99))
}

/// Reads from `s` until `topic` has been seen `times` times in all (each PUBLISH of it names
/// it once), or `wait` passes; whether it was.
async fn until_published(
    s: &mut tokio::net::TcpStream,
    topic: &str,
    seen: &mut Vec<u8>,
    times: usize,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let count = seen
            .windows(topic.len())
            .filter(|w| *w == topic.as_bytes())
            .count();
        if count >= times {
            return true;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
}

/// Revoke → device: on each of the first systems (one a sample), a token minted, a reader
/// subscribed to the system's status list (the retained list arrives), then the token revoked
/// through GraphQL, timed until the reader receives the new list.
pub async fn revocations(
    http: &reqwest::Client,
    l: &Lanyard,
    admin: &str,
    person: &str,
    system_ids: &[String],
    quick: bool,
) -> Row {
    let reader = reader(http, l, admin).await;
    let samples = system_ids.len().min(if quick { 10 } else { 1000 });
    let mut latencies = Vec::new();
    for (i, system) in system_ids[..samples].iter().enumerate() {
        let minted = graphql(http, l, person, MINT, json!({ "s": system })).await;
        let uuid = minted["data"]["createLocalApiToken"]["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let topic = format!("drivr/v1/demo/statuslists/{system}");
        let mut s = mqtt_connect(l.mqtt, &format!("rev-{i}"), Some(&reader))
            .await
            .expect("reader connects");
        s.write_all(&subscribe(4, 1, &[&topic], 0)).await.unwrap();
        let mut seen = Vec::new();
        if !until_published(&mut s, &topic, &mut seen, 1, Duration::from_secs(5)).await {
            continue;
        }
        let started = Instant::now();
        graphql(
            http,
            l,
            person,
            "mutation($u: UUID!) { revokeLocalApiToken(uuid: $u) { status } }",
            json!({ "u": uuid }),
        )
        .await;
        if until_published(&mut s, &topic, &mut seen, 2, Duration::from_secs(5)).await {
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (p50, p99) = percentiles(&mut latencies);
    row(
        &format!("revoke → device status list, {samples} systems"),
        format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms ({} revocations)",
            latencies.len()
        ),
        "—".into(),
        None,
        "p99 < 2 s",
        Some(latencies.len() == samples && p99 < 2000.0),
    )
}
