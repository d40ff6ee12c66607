//! Memory with many idle authenticated connections: lanyard's resident set size, each
//! connection with a token, against Mosquitto's with as many anonymous ones. Both servers are
//! fresh processes, so that neither carries what the other figures left behind.

use std::path::Path;
use std::time::Duration;

use crate::mqtt_client::mqtt_connect;
use crate::procs::{rss_kib, start_lanyard, start_mosquitto};
use crate::report::{Row, row};
use crate::setup::client_token;

/// The idle-connection figure's count: 20,000, or fewer where this process may not hold that
/// many sockets open (`bench/run` raises the limit where it can).
fn idle_connections() -> usize {
    const WANTED: usize = 20_000;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok())
        .unwrap_or(WANTED);
    WANTED.min(open_files.saturating_sub(256))
}

/// Holds the connections open on a lanyard started from `bin` and a Mosquitto, both with their
/// data in `work`, one server at a time: the row.
pub async fn measure(http: &reqwest::Client, bin: &Path, work: &Path, quick: bool) -> Row {
    let mosq = start_mosquitto(work);
    let idle_server = start_lanyard(bin, &work.join("idle"));
    let bench_token = client_token(
        http,
        &idle_server,
        &idle_server.device_id,
        &idle_server.device_secret,
    )
    .await;
    let idle = if quick {
        500
    } else {
        idle_connections().min(idle_server.mqtt_budget())
    };
    let base_ours = rss_kib(idle_server.pid());
    let base_theirs = rss_kib(mosq.pid());
    // One server's connections at a time, so this process needs descriptors for one side.
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        if let Some(s) =
            mqtt_connect(idle_server.mqtt, &format!("idle-{i}"), Some(&bench_token)).await
        {
            held.push(s);
        }
    }
    let ours_conns = held.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ours = rss_kib(idle_server.pid());
    held.clear();
    for i in 0..idle {
        if let Some(s) = mqtt_connect(mosq.addr, &format!("idle-{i}"), None).await {
            held.push(s);
        }
    }
    let theirs_conns = held.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let theirs = rss_kib(mosq.pid());
    let per_connection =
        |rss: u64, base: u64, n: usize| rss.saturating_sub(base) as f64 / n.max(1) as f64;
    let figure = row(
        &format!("RSS with {ours_conns} idle authenticated connections"),
        format!(
            "{} MiB (+{:.1} KiB per connection)",
            ours / 1024,
            per_connection(ours, base_ours, ours_conns)
        ),
        format!(
            "Mosquitto, {theirs_conns} connections: {} MiB (+{:.1} KiB per connection)",
            theirs / 1024,
            per_connection(theirs, base_theirs, theirs_conns)
        ),
        Some(ours as f64 / theirs.max(1) as f64),
        "≤ 2×",
        Some(ours_conns == idle && theirs_conns == idle && ours as f64 <= 2.0 * theirs as f64),
    );
    drop(held);
    drop(mosq);
    drop(idle_server);
    figure
}
