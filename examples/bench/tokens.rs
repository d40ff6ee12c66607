//! Signing: RSA-2048 signatures in lanyard's own library (aws-lc-rs) against `openssl speed
//! rsa2048` on one core, and the token endpoint's `client_credentials` tokens per second against
//! `openssl speed rsa2048 -multi <cores>`, a second of each in turn, with the server's own CPU
//! time per token from `/proc/<pid>/stat` against the CPU of one signature with every core
//! signing.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::load::{drive_http, http_request};
use crate::procs::{Lanyard, cpu_seconds, openssl_signs, own_pid};
use crate::report::{Row, at_least, row};

/// µs per RS256 signature with lanyard's own signing key, on one core: what the token endpoint
/// costs below HTTP.
fn lanyard_signature_micros(run: Duration) -> f64 {
    let key = lanyard::crypto::SigningKey::generate().expect("a key");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run {
        std::hint::black_box(key.sign(b"header.payload"));
        n += 1;
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// lanyard's signature for `run` against OpenSSL's on one core (`one_core` signatures per
/// second): the row, and the CPU seconds this process spent signing, which no load generator
/// took.
pub fn signature(run: Duration, one_core: f64) -> (Row, f64) {
    let cpu0 = cpu_seconds(own_pid());
    let ours = lanyard_signature_micros(run);
    let cpu = cpu_seconds(own_pid()) - cpu0;
    let theirs = 1e6 / one_core.max(1.0);
    let figure = row(
        "RSA-2048 signature, lanyard's library (aws-lc-rs), 1 core",
        format!("{ours:.0} µs"),
        format!("openssl {theirs:.0} µs"),
        Some(ours / theirs),
        "—",
        None,
    );
    (figure, cpu)
}

/// The demo device's `client_credentials` tokens per second over `run`, and the server's CPU
/// µs per token.
pub async fn token_endpoint(l: &Lanyard, run: Duration) -> (f64, f64) {
    let basic = STANDARD.encode(format!("{}:{}", l.device_id, l.device_secret));
    let request = http_request(
        l,
        "/t/demo/oauth2/token",
        &[
            ("authorization", &format!("Basic {basic}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    );
    let cpu0 = cpu_seconds(l.pid());
    let (per_s, n) = drive_http(l.http, 32, run, move |_| request.clone(), |_| true).await;
    (per_s, (cpu_seconds(l.pid()) - cpu0) / n.max(1) as f64 * 1e6)
}

/// The token endpoint's rows, and the OpenSSL signing rates measured around it.
pub struct Endpoint {
    pub rows: [Row; 2],
    /// Signatures per second on one core: the mean of the rate given to [`endpoint`] and one
    /// measured after it.
    pub one_core: f64,
    /// Signatures per second on every core, measured in turn with the endpoint.
    pub all_cores: f64,
}

/// The token endpoint for `secs` seconds, a second at a time, each between two seconds of
/// `openssl speed -multi <cores>`, so that the two meet the same neighbours; `one_core` is
/// OpenSSL's one-core rate measured before.
pub async fn endpoint(l: &Lanyard, secs: u64, cores: u32, one_core: f64) -> Endpoint {
    let run = Duration::from_secs(secs);
    let rounds = secs;
    let slice = run / rounds as u32;
    let (mut tokens, mut token_cpu) = (0.0, 0.0);
    let mut ceilings = vec![openssl_signs(Some(cores), 1)];
    for _ in 0..rounds {
        let (per_s, cpu_each) = token_endpoint(l, slice).await;
        tokens += per_s * slice.as_secs_f64();
        token_cpu += per_s * slice.as_secs_f64() * cpu_each;
        ceilings.push(openssl_signs(Some(cores), 1));
    }
    let tokens_per_s = tokens / run.as_secs_f64();
    let cpu_per_token = token_cpu / tokens.max(1.0);
    // The first and the last ceiling stand for half a round each.
    let last = ceilings.len() - 1;
    let all_cores = (ceilings[1..last].iter().sum::<f64>() + (ceilings[0] + ceilings[last]) / 2.0)
        / last as f64;
    let one_core = (one_core + openssl_signs(None, secs as u32)) / 2.0;
    // The server signs with every core busy, where a signature costs more CPU than on one
    // core alone (the cores share what is under them): a bare signature is measured alike.
    let bare_sign = cores as f64 * 1e6 / all_cores.max(1.0);
    let idle_sign = 1e6 / one_core.max(1.0);
    let rows = [
        at_least(
            "client_credentials tokens/s",
            format!("{tokens_per_s:.0}/s"),
            format!("openssl {cores} cores {all_cores:.0}/s"),
            tokens_per_s,
            all_cores,
            0.8,
        ),
        row(
            "CPU µs per token",
            format!("{cpu_per_token:.0} µs"),
            format!(
                "one signature with all {cores} cores signing {bare_sign:.0} µs (one core alone {idle_sign:.0} µs)"
            ),
            Some(cpu_per_token / bare_sign),
            "≤ 1.15×",
            Some(cpu_per_token <= 1.15 * bare_sign),
        ),
    ];
    Endpoint {
        rows,
        one_core,
        all_cores,
    }
}
