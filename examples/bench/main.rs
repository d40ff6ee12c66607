//! lanyard's benchmarks, side by side with a reference measured in the same run (targets in
//! docs/performance.md). Run through `bench/run`, which builds the release binary
//! first; `--quick` runs each figure for about a second and only checks that it was produced.
//!
//! Every figure is a ratio against its reference, because the machines are shared and noisy;
//! where it can, the reference is measured around the figure (just before and just after, or in
//! turn with it):
//! - RSA signatures in lanyard's own library (aws-lc-rs) against `openssl speed rsa2048`;
//! - the token endpoint against `openssl speed rsa2048` (`-multi <cores>` a second at a time in turn
//!   with it, one core before and after), with the server's own CPU time per token from
//!   `/proc/<pid>/stat`;
//! - the token endpoint auditing every token against a lanyard that does not, a second of each
//!   in turn;
//! - GraphQL `createLocalApiToken` against the token endpoint, a second of each in turn, round
//!   10,000 systems, and its CPU (with the status-list index) in tokens' CPU against the same
//!   quotient of a lanyard from before status lists (`--before PATH`, measured right after) or,
//!   without one, as recorded;
//! - MQTT CONNECT with a real RS256 token, and a reconnect storm, against Mosquitto's anonymous
//!   CONNECT, a second of each in turn;
//! - publish throughput (QoS 0 and 1, 100-byte payloads, one and four subscribers) against
//!   Mosquitto;
//! - mint → device latency across those systems, and revoke → device (the new status list) on
//!   1,000 of them; restart time with each holding 10 tokens;
//! - RSS with many idle authenticated connections against Mosquitto's;
//! - tokens/s and CONNECT/s with the metrics listener on against a lanyard with it off, a
//!   second of each in turn;
//! - CONNECTs through a three-node NATS cluster with lanyard as its auth callout against the
//!   same cluster admitting a config user, and the callout's CPU per CONNECT against lanyard's
//!   own broker's.
//!
//! The load generators run in this process; the CPU they took is printed too. HTTP load goes
//! over plain keep-alive connections with requests written out once, so that it takes little.
//! `--only tokens,graphql,…` measures just the named figures and their references.
//!
//! This file runs the figures in order and prints the table. Each figure has a module of its own
//! in `examples/bench/` (`tokens`, `audit`, `graphql`, `connect`, `publish`, `latency`, `idle`,
//! `restart`, `metrics`, `nats`); `procs` starts the servers and the references and reads their CPU time and
//! memory, `setup` gets tokens and systems from lanyard, `load` and `mqtt_client` generate the
//! load, and `report` holds the table. The MQTT packets are written by
//! `tests/support/mqtt_packets.rs`, which the API tests use as well.

mod acting;
mod audit;
mod connect;
mod graphql;
mod idle;
mod latency;
mod load;
mod metrics;
mod mqtt_client;
#[path = "../../tests/support/mqtt_packets.rs"]
mod mqtt_packets;
mod nats;
#[path = "../../tests/support/nats_cluster.rs"]
mod nats_cluster;
#[path = "../../tests/support/outbox.rs"]
mod outbox;
mod procs;
mod publish;
mod report;
mod restart;
mod setup;
mod tokens;
mod web;

use std::path::PathBuf;
use std::time::Duration;

use procs::{
    cpu_seconds, openssl_signs, own_pid, start_lanyard, start_lanyard_with, start_mosquitto,
};
use setup::person_token;

struct Args {
    lanyard: PathBuf,
    /// `--before PATH`: a lanyard built before status lists, whose minting CPU the graphql
    /// figure is held against in the same run.
    before: Option<PathBuf>,
    quick: bool,
    /// `--only a,b`: just these figures (and what they are measured against), for profiling.
    only: Vec<String>,
}

/// The figures `--only` knows.
const FIGURES: [&str; 12] = [
    "tokens", "audit", "web", "acting", "graphql", "connect", "publish", "latency", "idle",
    "restart", "metrics", "nats",
];

impl Args {
    fn wants(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == figure)
    }
}

fn args() -> Args {
    let mut lanyard = PathBuf::from("target/release/lanyard");
    let mut before = None;
    let mut quick = false;
    let mut only = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--lanyard" => lanyard = it.next().expect("--lanyard PATH").into(),
            "--before" => before = Some(it.next().expect("--before PATH").into()),
            "--only" => {
                let list = it.next().expect("--only FIGURE,…");
                only = list.split(',').map(str::to_owned).collect();
                if let Some(f) = only.iter().find(|f| !FIGURES.contains(&f.as_str())) {
                    panic!("unknown figure {f}; known: {}", FIGURES.join(", "));
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        lanyard,
        before,
        quick,
        only,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = args();
    let secs = if args.quick { 1 } else { 5 };
    let run = Duration::from_secs(secs);
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut loadgen_before = cpu_seconds(own_pid());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // The RSA ceiling on one core, measured again after the token endpoint: the figures use
    // the mean of the two, so a neighbour's load that comes or goes skews it less. The ceiling
    // on all cores (OpenSSL signing on every core the machine has, as the server may) is
    // measured in turn with the token endpoint itself (on its own without it).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let mut one_core = openssl_signs(None, secs as u32);
    eprintln!("openssl rsa2048: {one_core:.0} signs/s on 1 core");
    if args.wants("tokens") {
        // Not a load generator: its CPU is left out of theirs.
        let (signature, signing_cpu) = tokens::signature(run, one_core);
        loadgen_before += signing_cpu;
        rows.push(signature);
    }

    let l = start_lanyard(&args.lanyard, &work.path().join("lanyard"));

    // 1. client_credentials tokens/s.
    let all_cores = if args.wants("tokens") {
        eprintln!("- token endpoint");
        let endpoint = tokens::endpoint(&l, secs, cores, one_core).await;
        rows.extend(endpoint.rows);
        one_core = endpoint.one_core;
        endpoint.all_cores
    } else {
        openssl_signs(Some(cores), secs as u32)
    };

    // 2. The same with every token audited against a lanyard that does not audit them.
    if args.wants("audit") {
        eprintln!("- token endpoint, auditing on and off");
        let off = start_lanyard_with(
            &args.lanyard,
            &work.path().join("lanyard-unaudited"),
            "[audit]\ntoken_issuance = false\n",
        );
        rows.push(audit::issuance(&l, &off, secs).await);
    }

    // 2b. Sign-in on the web: code redemptions in turn with client_credentials, and forward auth.
    if args.wants("web") {
        eprintln!("- authorization_code redemptions in turn with client_credentials; forward auth");
        rows.extend(web::measure(&http, &l, secs).await);
    }

    let person = person_token(&http, &l).await;

    // 2c. Acting for others: token exchange and a token-management request for five tenants,
    // in turn with client_credentials.
    if args.wants("acting") {
        eprintln!("- token exchange and token management, in turn with client_credentials");
        rows.extend(acting::measure(&http, &l, &args.lanyard, &person, secs).await);
    }
    // The systems the person holds a role on: GraphQL mints go round them, the latency figure
    // listens on them, and the restart figure fills each with tokens.
    let mut system_ids: Vec<String> = Vec::new();
    let mut admin = None;
    // Tokens minted so far, round the systems from the first.
    let mut minted = 0u64;
    if args.wants("graphql") || args.wants("latency") || args.wants("restart") {
        let count = if args.quick { 20 } else { 10_000 };
        eprintln!("- {count} systems");
        let systems = setup::systems(&http, &l, &args.lanyard, &person, count).await;
        system_ids = systems.ids;
        admin = Some(systems.admin);
    }

    // 2. GraphQL createLocalApiToken per second, round the systems, against the token endpoint
    // measured in turn with it.
    if args.wants("graphql") {
        eprintln!("- GraphQL mints, in turn with the token endpoint");
        let now = graphql::measure(&l, &person, &system_ids, run).await;
        minted = now.mints;
        // The same on a lanyard from before status lists, set up alike, right after.
        let before = match &args.before {
            Some(bin) => {
                eprintln!("- the same on {}", bin.display());
                let b = start_lanyard(bin, &work.path().join("lanyard-before"));
                let person = person_token(&http, &b).await;
                let count = system_ids.len();
                let systems = setup::systems(&http, &b, bin, &person, count).await;
                Some(graphql::measure(&b, &person, &systems.ids, run).await)
            }
            None => None,
        };
        rows.extend(graphql::rows(&now, before.as_ref()));
    }

    // 3. MQTT CONNECT/s: fresh tokens (each verified once), then a reconnect storm, each in turn
    // with Mosquitto.
    let mut mosq = None;
    if args.wants("connect") {
        eprintln!("- MQTT CONNECT, in turn with Mosquitto");
        let m = mosq.get_or_insert_with(|| start_mosquitto(work.path()));
        rows.extend(connect::measure(&http, &l, m, args.quick, run).await);
    }

    // 4. Publish throughput.
    if args.wants("publish") {
        eprintln!("- publish throughput");
        let m = mosq.get_or_insert_with(|| start_mosquitto(work.path()));
        rows.extend(publish::measure(&http, &l, m, args.quick).await);
    }
    drop(mosq);

    // 5. Mint → device latency, across the systems.
    if args.wants("latency") {
        let admin = admin.as_ref().expect("systems were created");
        eprintln!("- mint → device latency");
        rows.push(latency::measure(&http, &l, admin, &person, &system_ids, args.quick).await);
        eprintln!("- revoke → device latency");
        rows.push(latency::revocations(&http, &l, admin, &person, &system_ids, args.quick).await);
    }

    // 6. Idle authenticated connections: RSS against Mosquitto, both in fresh processes.
    if args.wants("idle") {
        eprintln!("- idle connections");
        rows.push(idle::measure(&http, &args.lanyard, work.path(), args.quick).await);
    }

    // 7. Restart with many systems × 10 tokens: time until the listener accepts.
    if args.wants("restart") {
        eprintln!("- restart");
        rows.push(restart::measure(&http, l, &args.lanyard, &person, &system_ids, minted).await);
    }

    // 8. What recording metrics costs: two more lanyards, with the metrics listener and without.
    if args.wants("metrics") {
        eprintln!("- metrics on against metrics off, in turn");
        rows.extend(metrics::measure(&http, &args.lanyard, work.path(), args.quick, run).await);
    }

    // 9. A NATS cluster with lanyard as its auth callout, against the same cluster with a config
    // user, and the callout's CPU against lanyard's own broker's.
    if args.wants("nats") {
        eprintln!("- NATS cluster CONNECTs through the callout, in turn with a config user");
        rows.extend(nats::measure(&http, &args.lanyard, work.path(), args.quick, run).await);
    }

    let loadgen = cpu_seconds(own_pid()) - loadgen_before;
    report::print_table(&rows);
    println!(
        "\nload generators: {loadgen:.1} s of CPU in this process; openssl rsa2048: {one_core:.0}/s on 1 core, {all_cores:.0}/s on {cores}{}",
        if args.quick {
            " (quick run: figures are not meaningful)"
        } else {
            ""
        }
    );
    let missing = report::missing(&rows);
    if missing > 0 {
        // Returned, not exited: what the run started is stopped and removed on the way out.
        eprintln!("{missing} figure(s) were not produced");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
