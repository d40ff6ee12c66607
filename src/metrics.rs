//! Prometheus metrics (SPEC §14): the families every room records into, and what `GET /metrics`
//! on `metrics.listen` answers (the text exposition format, `text/plain; version=0.0.4`).
//!
//! One [`Metrics`] is made per process (per `App`: tests start many in one process, and each has
//! its own registry) and handed to the authority and the doors. Every label value comes from a
//! small fixed set, listed here ([`TOKEN_REJECTIONS`], [`CONNECT_CODES`], …) or taken from a
//! domain enum: no label carries a tenant, a client, a topic or a raw path, so the number of
//! series stays the same however many tenants and devices there are. The handles of a fixed
//! label set are resolved once, when the families are made, so recording on the token endpoint
//! and the CONNECT path is an atomic add or a histogram observation, without hashing labels.
//! HTTP durations are the one family labelled per request (the route template and the status).
//!
//! With `metrics.listen` empty, [`Metrics::off`] records nothing: every call is one branch.
//! Gauges that reflect state held elsewhere (open MQTT connections, the database pool) are
//! read when scraped ([`Metrics::sample_on_scrape`]), so keeping them costs the hot paths
//! nothing. This module imports no other room of lanyard but `domain`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Histogram, HistogramOpts, HistogramTimer, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::{GrantType, OAuthErrorCode};

/// Why an access token was refused when verified (`TokenRejected`), as labelled.
pub const TOKEN_REJECTIONS: &[&str] = &[
    "malformed",
    "too_long",
    "algorithm",
    "forbidden_header",
    "unknown_key",
    "signature",
    "not_an_access_token",
    "malformed_claims",
    "wrong_issuer",
    "wrong_audience",
    "expired",
    "not_yet_valid",
    "revoked",
    "client_gone",
    "user_gone",
    "delegation_only",
    "unavailable",
];

/// How a CONNECT ended: the CONNACK's code by its name in the MQTT specifications, or
/// `closed` when no CONNACK was sent (no CONNECT in time, not a CONNECT, a 3.1.1 CONNECT too
/// large or malformed, the client gone before its answer).
pub const CONNECT_CODES: &[&str] = &[
    "success",
    "unacceptable_protocol_version",
    "client_identifier_not_valid",
    "server_unavailable",
    "bad_user_name_or_password",
    "not_authorized",
    "malformed_packet",
    "protocol_error",
    "packet_too_large",
    "bad_authentication_method",
    "closed",
];

/// How a callout request ended, as counted by `lanyard_nats_callouts_total`.
pub const NATS_CALLOUT_OUTCOMES: &[&str] = &[
    "admitted",
    "not_mqtt",
    "bad_token",
    "no_account",
    "unavailable",
    "client_id_held",
    "unreadable",
    "late",
];

/// How a GraphQL request ended, as labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphqlOutcome {
    /// Answered 200 without an error.
    Ok,
    /// Answered 200 with at least one error (refused, not found, invalid input, …).
    Errors,
    /// No valid access token (401).
    Unauthenticated,
    /// The request could not be run: not JSON, too large, too costly (400, 413).
    BadRequest,
    /// The token could not be checked, or the request ran past its time (503).
    Unavailable,
}

impl GraphqlOutcome {
    const ALL: [GraphqlOutcome; 5] = [
        GraphqlOutcome::Ok,
        GraphqlOutcome::Errors,
        GraphqlOutcome::Unauthenticated,
        GraphqlOutcome::BadRequest,
        GraphqlOutcome::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            GraphqlOutcome::Ok => "ok",
            GraphqlOutcome::Errors => "errors",
            GraphqlOutcome::Unauthenticated => "unauthenticated",
            GraphqlOutcome::BadRequest => "bad_request",
            GraphqlOutcome::Unavailable => "unavailable",
        }
    }
}

/// What a signature made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// An access token, at the token endpoint.
    AccessToken,
    /// A local API token, minted through GraphQL.
    LocalToken,
    /// A token status list or a key schedule (SPEC §10).
    TrustMessage,
}

/// Which of lanyard's retained topics a publish went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedTopic {
    Jwks,
    TokenList,
    /// A Token Status List.
    StatusList,
    /// The signed key schedule.
    KeySchedule,
}

/// What a database connection was waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// A read (`on_pool!`): on SQLite one of the read-only connections.
    Read,
    /// A statement that writes (`on_writer!`): on SQLite the one writer.
    Write,
    /// A transaction (`in_transaction!`): on SQLite the writer, its lock taken up front.
    Transaction,
}

/// Buckets of request durations: half a millisecond to ten seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of an RSA-2048 signature: a quarter of a millisecond to a tenth of a second.
const SIGNING_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
];
/// Buckets of a wait for a database connection: ten microseconds (a free one) to the
/// ten-second timeout.
const DB_WAIT_BUCKETS: &[f64] = &[
    0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A gauge refreshed when `/metrics` is scraped.
type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The metrics of one lanyard process.
pub struct Metrics {
    registry: Registry,
    /// `None` when `metrics.listen` is off: nothing is recorded.
    families: Option<Families>,
    samplers: Mutex<Vec<Sampler>>,
}

/// Counters by one label, resolved once, found by their label value.
struct Fixed<T> {
    values: &'static [&'static str],
    handles: Vec<T>,
}

impl<T> Fixed<T> {
    fn get(&self, value: &str) -> Option<&T> {
        let at = self.values.iter().position(|v| *v == value);
        debug_assert!(at.is_some(), "{value:?} is not one of {:?}", self.values);
        at.map(|i| &self.handles[i])
    }
}

struct Families {
    /// client_credentials, otp, refresh_token.
    tokens_issued: [IntCounter; 5],
    /// Expiring, permanent.
    local_tokens_minted: [IntCounter; 2],
    token_refusals: Vec<(OAuthErrorCode, IntCounter)>,
    token_rejections: Fixed<IntCounter>,
    http_requests: HistogramVec,
    graphql_requests: [Histogram; 5],
    mqtt_connections_open: IntGauge,
    mqtt_connections_limit: IntGauge,
    mqtt_connects: Fixed<IntCounter>,
    nats_callouts: Fixed<IntCounter>,
    nats_kicks: IntCounter,
    /// Routed, refused.
    mqtt_received: [IntCounter; 2],
    mqtt_delivered: IntCounter,
    mqtt_dropped: IntCounter,
    /// JWKS, token lists.
    retained: [IntCounter; 4],
    /// Access tokens, local tokens.
    signing: [Histogram; 3],
    db_waits: DbWaits,
    db_pool_size: IntGaugeVec,
    db_pool_idle: IntGaugeVec,
}

/// Histograms of how long a database connection was waited for, by [`DbKind`]; the store
/// keeps them (`Db`), empty when nothing is recorded.
#[derive(Clone, Default)]
pub struct DbWaits(Option<Arc<[Histogram; 3]>>);

impl DbWaits {
    /// Times a wait until the returned timer is dropped.
    pub fn start(&self, kind: DbKind) -> Option<HistogramTimer> {
        let histograms = self.0.as_ref()?;
        Some(histograms[kind as usize].start_timer())
    }
}

impl std::fmt::Debug for DbWaits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "DbWaits(recorded)"
        } else {
            "DbWaits(off)"
        })
    }
}

/// Builds and registers the families of one registry.
struct Builder<'a>(&'a Registry);

impl Builder<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("every family is registered once, with a valid name");
        c
    }

    fn counters(&self, name: &str, help: &str, label: &str) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid family"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("a valid counter"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("a valid gauge"))
    }

    fn gauges(&self, name: &str, help: &str, label: &str) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), &[label]).expect("a valid family"))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("a valid family"))
    }
}

fn fixed<T>(values: &'static [&'static str], resolve: impl Fn(&str) -> T) -> Fixed<T> {
    Fixed {
        values,
        handles: values.iter().map(|v| resolve(v)).collect(),
    }
}

impl Families {
    fn register(registry: &Registry) -> Families {
        let b = Builder(registry);
        let build_info = b.register(
            IntGaugeVec::new(
                Opts::new(
                    "lanyard_build_info",
                    "Always 1; the version label says which lanyard runs.",
                ),
                &["version"],
            )
            .expect("a valid family"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let issued = b.counters(
            "lanyard_tokens_issued_total",
            "Access tokens issued by the token endpoint, by grant type.",
            "grant",
        );
        let minted = b.counters(
            "lanyard_local_tokens_minted_total",
            "Local API tokens minted through GraphQL, expiring or permanent.",
            "lifetime",
        );
        let refusals = b.counters(
            "lanyard_token_refusals_total",
            "Token requests refused by the token endpoint, by OAuth error code.",
            "reason",
        );
        let rejections = b.counters(
            "lanyard_token_rejections_total",
            "Access tokens refused when verified (MQTT CONNECT, GraphQL, introspection, userinfo), by reason.",
            "reason",
        );
        let graphql = b.histograms(
            "lanyard_graphql_request_duration_seconds",
            "Time to answer a GraphQL request, by outcome.",
            REQUEST_BUCKETS,
            &["outcome"],
        );
        let connects = b.counters(
            "lanyard_mqtt_connects_total",
            "MQTT CONNECTs by outcome: the CONNACK code's name, or closed when none was sent.",
            "code",
        );
        let callouts = b.counters(
            "lanyard_nats_callouts_total",
            "NATS auth callout requests by outcome (SPEC §13).",
            "outcome",
        );
        let received = b.counters(
            "lanyard_mqtt_messages_received_total",
            "PUBLISH packets from MQTT clients: routed to subscribers, or refused by the topic permissions.",
            "outcome",
        );
        let retained = b.counters(
            "lanyard_mqtt_retained_published_total",
            "Retained messages lanyard published on its own topics (a tenant's JWKS and key schedule, a system's token list and status list).",
            "topic",
        );
        let signing = b.histograms(
            "lanyard_signing_duration_seconds",
            "Time to sign a token (RSA-2048, RS256), by kind of token.",
            SIGNING_BUCKETS,
            &["token"],
        );
        let db_waits = b.histograms(
            "lanyard_db_wait_seconds",
            "Time a database statement or transaction waited for a connection, by kind.",
            DB_WAIT_BUCKETS,
            &["kind"],
        );
        Families {
            tokens_issued: [
                "client_credentials",
                "otp",
                "refresh_token",
                "authorization_code",
                "token_exchange",
            ]
                .map(|g| issued.with_label_values(&[g])),
            local_tokens_minted: ["expiring", "permanent"].map(|l| minted.with_label_values(&[l])),
            token_refusals: OAuthErrorCode::ALL
                .iter()
                .map(|c| (*c, refusals.with_label_values(&[c.as_str()])))
                .collect(),
            token_rejections: fixed(TOKEN_REJECTIONS, |r| rejections.with_label_values(&[r])),
            http_requests: b.histograms(
                "lanyard_http_request_duration_seconds",
                "Time to answer an HTTP request (until the response head), by route template and status.",
                REQUEST_BUCKETS,
                &["route", "status"],
            ),
            graphql_requests: GraphqlOutcome::ALL.map(|o| graphql.with_label_values(&[o.as_str()])),
            mqtt_connections_open: b.gauge(
                "lanyard_mqtt_connections_open",
                "MQTT connections open on every listener, those still in their CONNECT included.",
            ),
            mqtt_connections_limit: b.gauge(
                "lanyard_mqtt_connections_limit",
                "The most MQTT connections lanyard holds: mqtt.max_connections within the open-file budget.",
            ),
            mqtt_connects: fixed(CONNECT_CODES, |c| connects.with_label_values(&[c])),
            nats_callouts: fixed(NATS_CALLOUT_OUTCOMES, |o| {
                callouts.with_label_values(&[o])
            }),
            nats_kicks: b.counter(
                "lanyard_nats_connections_ended_total",
                "NATS connections lanyard ended because their token, client, person or key was withdrawn.",
            ),
            mqtt_received: ["routed", "refused"].map(|o| received.with_label_values(&[o])),
            mqtt_delivered: b.register(
                IntCounter::new(
                    "lanyard_mqtt_messages_delivered_total",
                    "PUBLISH packets sent to MQTT clients.",
                )
                .expect("a valid counter"),
            ),
            mqtt_dropped: b.register(
                IntCounter::new(
                    "lanyard_mqtt_messages_dropped_total",
                    "Messages a subscriber lost because it read too slowly: publishers were held for it no longer than its reading allowed, and the topic's log moved on.",
                )
                .expect("a valid counter"),
            ),
            retained: ["jwks", "tokens", "status_list", "key_schedule"].map(|t| retained.with_label_values(&[t])),
            signing: ["access", "local", "trust"].map(|t| signing.with_label_values(&[t])),
            db_waits: DbWaits(Some(Arc::new(
                ["read", "write", "transaction"].map(|k| db_waits.with_label_values(&[k])),
            ))),
            db_pool_size: b.gauges(
                "lanyard_db_pool_connections",
                "Database connections open, by pool (SQLite: read and write; PostgreSQL: postgres).",
                "pool",
            ),
            db_pool_idle: b.gauges(
                "lanyard_db_pool_idle_connections",
                "Database connections open and not lent out, by pool.",
                "pool",
            ),
        }
    }
}

impl Metrics {
    /// Metrics that are recorded, in a registry of their own.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let families = Families::register(&registry);
        Arc::new(Metrics {
            registry,
            families: Some(families),
            samplers: Mutex::default(),
        })
    }

    /// Metrics that record nothing (`metrics.listen` is empty, or a one-shot command).
    pub fn off() -> Arc<Metrics> {
        Arc::new(Metrics {
            registry: Registry::new(),
            families: None,
            samplers: Mutex::default(),
        })
    }

    pub fn is_on(&self) -> bool {
        self.families.is_some()
    }

    /// An access token issued by the token endpoint.
    pub fn token_issued(&self, grant: GrantType) {
        if let Some(f) = &self.families {
            let at = match grant {
                GrantType::ClientCredentials => 0,
                GrantType::Otp => 1,
                GrantType::RefreshToken => 2,
                GrantType::AuthorizationCode => 3,
                GrantType::TokenExchange => 4,
            };
            f.tokens_issued[at].inc();
        }
    }

    /// A token request the token endpoint refused.
    pub fn token_refused(&self, code: OAuthErrorCode) {
        if let Some(f) = &self.families
            && let Some((_, counter)) = f.token_refusals.iter().find(|(c, _)| *c == code)
        {
            counter.inc();
        }
    }

    /// An access token refused when verified; `reason` is one of [`TOKEN_REJECTIONS`].
    pub fn token_rejected(&self, reason: &str) {
        if let Some(counter) = self
            .families
            .as_ref()
            .and_then(|f| f.token_rejections.get(reason))
        {
            counter.inc();
        }
    }

    /// A local API token minted.
    pub fn local_token_minted(&self, permanent: bool) {
        if let Some(f) = &self.families {
            f.local_tokens_minted[usize::from(permanent)].inc();
        }
    }

    /// Times a signature until the returned timer is dropped.
    pub fn signing(&self, what: Signed) -> Option<HistogramTimer> {
        let f = self.families.as_ref()?;
        Some(f.signing[what as usize].start_timer())
    }

    /// An HTTP request answered; `route` is the matched route's template.
    pub fn http_request(&self, route: &str, status: StatusCode, took: Duration) {
        if let Some(f) = &self.families {
            f.http_requests
                .with_label_values(&[route, status.as_str()])
                .observe(took.as_secs_f64());
        }
    }

    /// A GraphQL request answered.
    pub fn graphql_request(&self, outcome: GraphqlOutcome, took: Duration) {
        if let Some(f) = &self.families {
            f.graphql_requests[outcome as usize].observe(took.as_secs_f64());
        }
    }

    /// A CONNECT's outcome, one of [`CONNECT_CODES`].
    pub fn mqtt_connect(&self, code: &str) {
        if let Some(counter) = self
            .families
            .as_ref()
            .and_then(|f| f.mqtt_connects.get(code))
        {
            counter.inc();
        }
    }

    /// A NATS auth callout request's outcome, one of [`NATS_CALLOUT_OUTCOMES`].
    pub fn nats_callout(&self, outcome: &str) {
        if let Some(counter) = self
            .families
            .as_ref()
            .and_then(|f| f.nats_callouts.get(outcome))
        {
            counter.inc();
        }
    }

    /// A NATS connection ended by lanyard.
    pub fn nats_kicked(&self) {
        if let Some(f) = &self.families {
            f.nats_kicks.inc();
        }
    }

    /// A PUBLISH from a client, routed or refused.
    pub fn mqtt_received(&self, routed: bool) {
        if let Some(f) = &self.families {
            f.mqtt_received[usize::from(!routed)].inc();
        }
    }

    /// `count` PUBLISH packets sent to a client.
    pub fn mqtt_delivered(&self, count: u64) {
        if let Some(f) = &self.families
            && count > 0
        {
            f.mqtt_delivered.inc_by(count);
        }
    }

    /// Messages an MQTT subscriber lost because it read too slowly.
    pub fn mqtt_dropped(&self, count: u64) {
        if let Some(f) = &self.families {
            f.mqtt_dropped.inc_by(count);
        }
    }

    /// A retained message lanyard published on one of its topics.
    pub fn retained_published(&self, topic: RetainedTopic) {
        if let Some(f) = &self.families {
            f.retained[topic as usize].inc();
        }
    }

    /// The MQTT connections open now, and the most there may be.
    pub fn set_mqtt_connections(&self, open: usize, limit: usize) {
        if let Some(f) = &self.families {
            f.mqtt_connections_open.set(open as i64);
            f.mqtt_connections_limit.set(limit as i64);
        }
    }

    /// A database pool's connections: open, and not lent out.
    pub fn set_db_pool(&self, pool: &str, size: u32, idle: u32) {
        if let Some(f) = &self.families {
            f.db_pool_size.with_label_values(&[pool]).set(size.into());
            f.db_pool_idle.with_label_values(&[pool]).set(idle.into());
        }
    }

    /// The histograms the store times its connection waits with.
    pub fn db_waits(&self) -> DbWaits {
        self.families
            .as_ref()
            .map(|f| f.db_waits.clone())
            .unwrap_or_default()
    }

    /// Runs `sample` before every scrape, to set gauges from state held elsewhere.
    pub fn sample_on_scrape(&self, sample: impl Fn(&Metrics) + Send + Sync + 'static) {
        if self.is_on() {
            self.samplers
                .lock()
                .expect("samplers lock")
                .push(Box::new(sample));
        }
    }

    /// Every family in the text exposition format, gauges sampled first.
    pub fn render(&self) -> String {
        for sample in self.samplers.lock().expect("samplers lock").iter() {
            sample(self);
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("the text format encodes every family")
    }
}

/// The router of the metrics listener: `GET /metrics`, anything else 404.
pub fn router(metrics: Arc<Metrics>) -> Router {
    let not_found = || async { StatusCode::NOT_FOUND };
    Router::new()
        .route("/metrics", get(scrape).fallback(not_found))
        .fallback(not_found)
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    // Sampling reads a few locks and counters; encoding is a few hundred lines of text.
    let text = metrics.render();
    (
        [
            (header::CONTENT_TYPE, prometheus::TEXT_FORMAT),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// Axum middleware timing each request of the main HTTP listener, labelled with the matched
/// route's template (`/t/{slug}/oauth2/token`, never the path itself) or `unmatched`.
pub async fn time_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics.http_request(route, response.status(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_lanyards_prefix() {
        let metrics = Metrics::new();
        let text = metrics.render();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert!(families.len() >= 12, "{text}");
        for family in families {
            let name = family.split(' ').next().unwrap();
            assert!(name.starts_with("lanyard_"), "{name}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
        }
    }

    #[test]
    fn metrics_that_are_off_record_nothing() {
        let metrics = Metrics::off();
        metrics.token_issued(GrantType::ClientCredentials);
        metrics.mqtt_connect("success");
        assert!(metrics.signing(Signed::AccessToken).is_none());
        assert!(metrics.db_waits().start(DbKind::Read).is_none());
        assert_eq!(metrics.render(), "");
    }

    #[test]
    fn two_apps_in_one_process_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.token_issued(GrantType::Otp);
        a.token_issued(GrantType::Otp);
        b.token_issued(GrantType::Otp);
        assert!(
            a.render()
                .contains("lanyard_tokens_issued_total{grant=\"otp\"} 2")
        );
        assert!(
            b.render()
                .contains("lanyard_tokens_issued_total{grant=\"otp\"} 1")
        );
    }
}
