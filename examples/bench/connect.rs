//! MQTT CONNECTs per second against Mosquitto's anonymous CONNECTs: with fresh RS256 tokens,
//! each used once so that every CONNECT verifies a signature, and in a reconnect storm that
//! reuses one token. Each takes turns with Mosquitto a second at a time, from a Mosquitto second
//! to a Mosquitto second, so that the two meet the same neighbours; the CPU per CONNECT of both
//! servers comes from `/proc/<pid>/stat`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::load::drive;
use crate::mqtt_client::connect_cycle;
use crate::procs::{Lanyard, Mosquitto, cpu_seconds};
use crate::report::{Row, at_least};
use crate::setup::client_token;

/// How long fresh RS256 CONNECTs, and the reconnect storm, are measured for (a second at a time).
const FRESH_RUN: Duration = Duration::from_secs(3);

/// CONNECT cycles by 16 clients, each with a token of `tokens` used once, for `duration` or
/// until the tokens run out: seconds taken and successful CONNECTs.
pub async fn fresh_connects(
    addr: SocketAddr,
    tokens: Vec<String>,
    duration: Duration,
) -> (f64, u64) {
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (tokens, next) = (tokens.clone(), next.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(t) = tokens.get(i) else { break };
                    if connect_cycle(addr, &format!("c{w}-{i}"), Some(t)).await {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for w in workers {
        ok += w.await.unwrap();
    }
    (started.elapsed().as_secs_f64(), ok)
}

/// Fresh-token CONNECTs and the reconnect storm against `mosquitto`, for [`FRESH_RUN`] each
/// (`run` each, in one turn, in a quick run): their two rows.
pub async fn measure(
    http: &reqwest::Client,
    l: &Lanyard,
    mosquitto: &Mosquitto,
    quick: bool,
    run: Duration,
) -> [Row; 2] {
    let mqtt = l.mqtt;
    let (maddr, mpid) = (mosquitto.addr, mosquitto.pid());
    let rounds = if quick {
        1
    } else {
        FRESH_RUN.as_secs() as usize
    };
    let slice = if quick { run } else { Duration::from_secs(1) };
    let mosquitto_second = async || {
        let cpu0 = cpu_seconds(mpid);
        let (per_s, n) = drive(16, slice, move |w| async move {
            connect_cycle(maddr, &format!("m{w}"), None).await
        })
        .await;
        (per_s, n, cpu_seconds(mpid) - cpu0)
    };
    let mut mosq_seconds = vec![mosquitto_second().await];
    let (mut fresh_n, mut fresh_secs, mut fresh_cpu) = (0u64, 0.0, 0.0);
    let (mut storm_n, mut storm_secs) = (0u64, 0.0);
    let mut storm_token = None;
    for _ in 0..rounds {
        // Each token is used once, so every CONNECT verifies a signature: a third more of
        // them than Mosquitto's last second would use (a few hundred in a quick run),
        // fetched eight at a time.
        let want = if quick {
            500
        } else {
            (mosq_seconds.last().unwrap().0 * slice.as_secs_f64() * 4.0 / 3.0) as usize
        };
        let fresh: Vec<String> = futures::stream::iter(0..want)
            .map(|_| client_token(http, l, &l.device_id, &l.device_secret))
            .buffer_unordered(8)
            .collect()
            .await;
        storm_token.get_or_insert_with(|| fresh[0].clone());
        let cpu0 = cpu_seconds(l.pid());
        let (secs, n) = fresh_connects(mqtt, fresh, slice).await;
        fresh_cpu += cpu_seconds(l.pid()) - cpu0;
        (fresh_secs, fresh_n) = (fresh_secs + secs, fresh_n + n);
        mosq_seconds.push(mosquitto_second().await);
        let t = storm_token.clone().unwrap();
        let started = Instant::now();
        let (_, n) = drive(16, slice, move |w| {
            let t = t.clone();
            async move { connect_cycle(mqtt, &format!("storm-{w}"), Some(&t)).await }
        })
        .await;
        (storm_secs, storm_n) = (storm_secs + started.elapsed().as_secs_f64(), storm_n + n);
        mosq_seconds.push(mosquitto_second().await);
    }
    let connects_fresh = fresh_n as f64 / fresh_secs;
    let cpu_per_connect = fresh_cpu / fresh_n.max(1) as f64 * 1e6;
    let connects_storm = storm_n as f64 / storm_secs;
    // The first and the last Mosquitto second stand for half a round each.
    let rates: Vec<f64> = mosq_seconds.iter().map(|m| m.0).collect();
    let last = rates.len() - 1;
    let connects_mosq =
        (rates[1..last].iter().sum::<f64>() + (rates[0] + rates[last]) / 2.0) / last as f64;
    let mosq_n: u64 = mosq_seconds.iter().map(|m| m.1).sum();
    let mosq_cpu = mosq_seconds.iter().map(|m| m.2).sum::<f64>() / mosq_n.max(1) as f64 * 1e6;
    [
        at_least(
            "MQTT CONNECT/s, fresh RS256 tokens",
            format!("{connects_fresh:.0}/s ({cpu_per_connect:.0} µs CPU each)"),
            format!("Mosquitto anonymous {connects_mosq:.0}/s ({mosq_cpu:.0} µs CPU each)"),
            connects_fresh,
            connects_mosq,
            0.8,
        ),
        at_least(
            "MQTT CONNECT/s, reconnect storm",
            format!("{connects_storm:.0}/s"),
            format!("Mosquitto anonymous {connects_mosq:.0}/s"),
            connects_storm,
            connects_mosq,
            1.0,
        ),
    ]
}
