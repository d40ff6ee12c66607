//! Restart time: with each of the systems holding 10 local tokens, from starting lanyard again
//! on the same data until it logs that HTTP and MQTT listen. No reference is measured: the target
//! is absolute.

use std::path::Path;
use std::time::Instant;

use futures::StreamExt;
use serde_json::json;

use crate::procs::{Lanyard, start_lanyard};
use crate::report::{Row, row};
use crate::setup::{MINT, graphql};

/// Tops every system of `system_ids` up to 10 tokens with the token `person` (`minted` were
/// minted before, round the systems from the first), stops `l` and starts `bin` again on its
/// data: the row.
pub async fn measure(
    http: &reqwest::Client,
    l: Lanyard,
    bin: &Path,
    person: &str,
    system_ids: &[String],
    minted: u64,
) -> Row {
    // Round robin from the first system: the first `minted % n` systems got one more.
    let n = system_ids.len() as u64;
    let server = &l;
    futures::stream::iter(system_ids.iter().enumerate())
        .flat_map(|(i, system)| {
            let have = minted / n + u64::from((i as u64) < minted % n);
            futures::stream::iter((have..10).map(move |_| system))
        })
        .map(|system| async move { graphql(http, server, person, MINT, json!({ "s": system })).await })
        .buffer_unordered(16)
        .for_each(|_| async {})
        .await;
    let dir = l.dir.clone();
    drop(l);
    let started = Instant::now();
    let l = start_lanyard(bin, &dir);
    let restart = started.elapsed().as_secs_f64();
    let figure = row(
        &format!(
            "restart with {} systems × 10 tokens: until MQTT accepts",
            system_ids.len() + 1
        ),
        format!("{restart:.2} s"),
        "—".into(),
        None,
        "< 5 s",
        Some(restart < 5.0),
    );
    drop(l);
    figure
}
