//! What recording metrics costs: `client_credentials` tokens per second and MQTT CONNECTs per
//! second (the reconnect storm: a token seen before, so the CONNECT is at its cheapest and what
//! is recorded on it weighs the most) of a lanyard with its metrics listener on, scraped after
//! each of its seconds, against one with `metrics.listen = ""`. Both run side by side from fresh
//! data folders and take turns a second at a time (on, off, off, on, …), so that a neighbour's
//! load falls on both alike.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::load::drive;
use crate::mqtt_client::connect_cycle;
use crate::procs::{Lanyard, start_lanyard_with};
use crate::report::{Row, at_least};
use crate::setup::client_token;
use crate::tokens::token_endpoint;

/// Turns of each side, a second each, per figure (one in a quick run).
const ROUNDS: usize = 10;

/// The reconnect storm on `l` for `run`: CONNECTs per second.
async fn storm(l: &Lanyard, token: &str, run: Duration) -> f64 {
    let (mqtt, token) = (l.mqtt, token.to_owned());
    let started = Instant::now();
    let (_, n) = drive(16, run, move |w| {
        let token = token.clone();
        async move { connect_cycle(mqtt, &format!("storm-{w}"), Some(&token)).await }
    })
    .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// The metrics served by `l`, as Prometheus would scrape them.
async fn scrape(http: &reqwest::Client, l: &Lanyard) -> String {
    let addr = l.metrics.expect("the metrics listener is on");
    let res = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    res.text().await.unwrap_or_default()
}

/// The value of the sample that starts with `series` in a scrape.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs the two lanyards in `work` and measures both figures: their rows.
pub async fn measure(
    http: &reqwest::Client,
    bin: &Path,
    work: &Path,
    quick: bool,
    run: Duration,
) -> [Row; 2] {
    let on = start_lanyard_with(bin, &work.join("metrics-on"), "");
    let off = start_lanyard_with(bin, &work.join("metrics-off"), "[metrics]\nlisten = \"\"\n");
    let rounds = if quick { 1 } else { ROUNDS };
    let slice = if quick { run } else { Duration::from_secs(1) };
    // Token rate: a second of each side per round, the order turned every round.
    let (mut tokens_on, mut tokens_off) = (0.0, 0.0);
    for round in 0..rounds {
        let sides = if round % 2 == 0 {
            [&on, &off]
        } else {
            [&off, &on]
        };
        for l in sides {
            let (per_s, _) = token_endpoint(l, slice).await;
            if l.metrics.is_some() {
                tokens_on += per_s;
                scrape(http, l).await;
            } else {
                tokens_off += per_s;
            }
        }
    }
    let token_on = client_token(http, &on, &on.device_id, &on.device_secret).await;
    let token_off = client_token(http, &off, &off.device_id, &off.device_secret).await;
    let (mut connects_on, mut connects_off) = (0.0, 0.0);
    for round in 0..rounds {
        let sides = if round % 2 == 0 {
            [(&on, &token_on), (&off, &token_off)]
        } else {
            [(&off, &token_off), (&on, &token_on)]
        };
        for (l, token) in sides {
            let per_s = storm(l, token, slice).await;
            if l.metrics.is_some() {
                connects_on += per_s;
                scrape(http, l).await;
            } else {
                connects_off += per_s;
            }
        }
    }
    // What was measured was recorded: a figure without it would measure nothing.
    let text = scrape(http, &on).await;
    let issued = sample(
        &text,
        "lanyard_tokens_issued_total{grant=\"client_credentials\"}",
    );
    let connected = sample(&text, "lanyard_mqtt_connects_total{code=\"success\"}");
    let recorded = issued > 0.0 && connected > 0.0;
    let rounds = rounds as f64;
    let (tokens_on, tokens_off) = (tokens_on / rounds, tokens_off / rounds);
    let (connects_on, connects_off) = (connects_on / rounds, connects_off / rounds);
    let shown = |per_s: f64| {
        if recorded {
            format!("{per_s:.0}/s")
        } else {
            "NaN (the scrape did not count them)".into()
        }
    };
    [
        at_least(
            "client_credentials tokens/s, metrics on (scraped every second)",
            shown(tokens_on),
            format!("metrics off {tokens_off:.0}/s"),
            tokens_on,
            tokens_off,
            0.98,
        ),
        at_least(
            "MQTT CONNECT/s, reconnect storm, metrics on (scraped every second)",
            shown(connects_on),
            format!("metrics off {connects_off:.0}/s"),
            connects_on,
            connects_off,
            0.98,
        ),
    ]
}
