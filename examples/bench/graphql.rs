//! GraphQL `createLocalApiToken` per second, the demo person minting round the systems, against
//! the token endpoint measured in turn with it: a fifth of the time of each at once, and the
//! token endpoint once more at the end, so that a neighbour's load that comes or goes weighs on
//! both alike. The server's CPU per mint and per token comes from `/proc/<pid>/stat`.
//!
//! A mint carries a status-list index (SPEC §10). Its cost is the CPU per mint in units of the
//! token endpoint's CPU per token (which status lists did not touch), measured in turn on this
//! lanyard and, with `--before PATH`, on a lanyard built from a revision before status lists,
//! each against its own token endpoint: at most 1.1 times that one's. Without `--before`, the
//! quotient is held against [`CPU_RATIO_BEFORE_STATUS_LISTS`], the one recorded before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::{drive_http, http_request};
use crate::procs::{Lanyard, cpu_seconds};
use crate::report::{Row, at_least, row};
use crate::setup::MINT;
use crate::tokens::token_endpoint;

/// CPU per GraphQL mint ÷ CPU per token-endpoint token, before mints carried a status-list index
/// (301 µs ÷ 245 µs, docs/performance.md, the run of 2026-12-04 on this machine).
const CPU_RATIO_BEFORE_STATUS_LISTS: f64 = 301.0 / 245.0;

/// What one lanyard did: mints and tokens per second, and the CPU of each, in µs.
pub struct Minting {
    pub mints_per_s: f64,
    pub cpu_per_mint: f64,
    pub tokens_per_s: f64,
    pub cpu_per_token: f64,
    pub mints: u64,
}

impl Minting {
    /// CPU per mint in tokens' CPU.
    fn quotient(&self) -> f64 {
        self.cpu_per_mint / self.cpu_per_token.max(1e-9)
    }
}

/// The rows of `now` (this lanyard), with its cost against `before` (measured in the same run)
/// or the quotient recorded before status lists.
pub fn rows(now: &Minting, before: Option<&Minting>) -> Vec<Row> {
    let rate = at_least(
        "GraphQL createLocalApiToken/s",
        format!(
            "{:.0}/s ({:.0} µs CPU each)",
            now.mints_per_s, now.cpu_per_mint
        ),
        format!(
            "token endpoint {:.0}/s ({:.0} µs CPU each)",
            now.tokens_per_s, now.cpu_per_token
        ),
        now.mints_per_s,
        now.tokens_per_s,
        0.8,
    );
    let (reference, baseline) = match before {
        Some(b) => (
            format!(
                "{:.2} tokens, the lanyard before status lists ({:.0} µs ÷ {:.0} µs)",
                b.quotient(),
                b.cpu_per_mint,
                b.cpu_per_token
            ),
            b.quotient(),
        ),
        None => (
            format!("{CPU_RATIO_BEFORE_STATUS_LISTS:.2} tokens before status lists (recorded)"),
            CPU_RATIO_BEFORE_STATUS_LISTS,
        ),
    };
    let cpu = row(
        "CPU per mint with its status index, in tokens' CPU",
        format!("{:.2} tokens", now.quotient()),
        reference,
        Some(now.quotient() / baseline),
        "≤ 1.1×",
        Some(now.quotient() <= 1.1 * baseline),
    );
    vec![rate, cpu]
}

/// Mints for `run` in all with the token `person`, one system of `system_ids` after the other,
/// in turn with the token endpoint.
pub async fn measure(l: &Lanyard, person: &str, system_ids: &[String], run: Duration) -> Minting {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        system_ids
            .iter()
            .map(|system| {
                let body = json!({
                    "query": MINT,
                    "variables": { "s": system },
                });
                http_request(
                    l,
                    "/graphql",
                    &[
                        ("authorization", &format!("Bearer {person}")),
                        ("content-type", "application/json"),
                    ],
                    &body.to_string(),
                )
            })
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let slice = run / 5;
    let (mut tokens, mut token_cpu, mut token_secs) = (0.0, 0.0, 0.0);
    let (mut mints, mut mint_cpu, mut mint_secs) = (0u64, 0.0, 0.0);
    for round in 0..=5 {
        let (per_s, cpu_each) = token_endpoint(l, slice).await;
        tokens += per_s * slice.as_secs_f64();
        token_cpu += per_s * slice.as_secs_f64() * cpu_each;
        token_secs += slice.as_secs_f64();
        if round == 5 {
            break;
        }
        let (requests, next) = (requests.clone(), next.clone());
        let cpu0 = cpu_seconds(l.pid());
        let started = Instant::now();
        let (_, n) = drive_http(
            l.http,
            32,
            slice,
            move |_| {
                requests[next.fetch_add(1, Ordering::Relaxed) as usize % requests.len()].clone()
            },
            |body| serde_json::from_slice::<Value>(body).is_ok_and(|v| v["errors"].is_null()),
        )
        .await;
        mint_secs += started.elapsed().as_secs_f64();
        mint_cpu += (cpu_seconds(l.pid()) - cpu0) * 1e6;
        mints += n;
    }
    Minting {
        mints_per_s: mints as f64 / mint_secs,
        cpu_per_mint: mint_cpu / mints.max(1) as f64,
        tokens_per_s: tokens / token_secs,
        cpu_per_token: token_cpu / tokens.max(1.0),
        mints,
    }
}
