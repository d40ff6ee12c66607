//! GraphQL `createLocalApiToken` per second, the demo person minting round the systems, against
//! the token endpoint measured in turn with it: a fifth of the time of each at once, and the
//! token endpoint once more at the end, so that a neighbour's load that comes or goes weighs on
//! both alike. The server's CPU per mint and per token comes from `/proc/<pid>/stat`.
//!
//! A mint carries a status-list index (SPEC §10); its CPU, in
//! units of the token endpoint's CPU per token measured in the same run (which the change did
//! not touch), is held against [`CPU_RATIO_BEFORE_STATUS_LISTS`], the same quotient measured
//! before: at most 1.1 times that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::{drive_http, http_request};
use crate::procs::{Lanyard, cpu_seconds};
use crate::report::{Row, at_least, row};

/// CPU per GraphQL mint ÷ CPU per token-endpoint token, before mints carried a status-list index
/// (301 µs ÷ 245 µs, docs/performance.md, the run of 2026-12-04 on this machine).
const CPU_RATIO_BEFORE_STATUS_LISTS: f64 = 301.0 / 245.0;
use crate::setup::MINT;
use crate::tokens::token_endpoint;

/// Mints for `run` in all with the token `person`, one system of `system_ids` after the other:
/// the rows (mints per second, CPU per mint), and the tokens minted.
pub async fn measure(
    l: &Lanyard,
    person: &str,
    system_ids: &[String],
    run: Duration,
) -> (Vec<Row>, u64) {
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
    let mints_per_s = mints as f64 / mint_secs;
    let cpu_per_mint = mint_cpu / mints.max(1) as f64;
    let tokens_per_s = tokens / token_secs;
    let cpu_per_token = token_cpu / tokens.max(1.0);
    let rate = at_least(
        "GraphQL createLocalApiToken/s",
        format!("{mints_per_s:.0}/s ({cpu_per_mint:.0} µs CPU each)"),
        format!("token endpoint {tokens_per_s:.0}/s ({cpu_per_token:.0} µs CPU each)"),
        mints_per_s,
        tokens_per_s,
        0.8,
    );
    let quotient = cpu_per_mint / cpu_per_token.max(1e-9);
    let cpu = row(
        "CPU per mint with its status index, in tokens' CPU",
        format!("{quotient:.2} tokens"),
        format!("{CPU_RATIO_BEFORE_STATUS_LISTS:.2} tokens before status lists"),
        Some(quotient / CPU_RATIO_BEFORE_STATUS_LISTS),
        "≤ 1.1×",
        Some(quotient <= 1.1 * CPU_RATIO_BEFORE_STATUS_LISTS),
    );
    (vec![rate, cpu], mints)
}
