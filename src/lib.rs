//! lanyard: a device-token authority for IoT fleets.
//!
//! The guided tour, outside in:
//! - [`app`]: the composition root: builds everything, binds the listeners, runs the jobs.
//! - [`config`]: the settings tree: defaults, `broker.toml`, `LANYARD_*` overrides.
//! - [`connections`]: the open-file budget and per-source caps every listener shares.
//! - [`http`]: the HTTP door: OAuth endpoints, people's sign-in, discovery, health, and the
//!   token-management endpoints of applications for several tenants.
//! - [`graphql`]: the GraphQL door: local API tokens and management.
//! - [`mqtt`]: the MQTT door: lanyard's listener, permissions and sessions over rumqttd's router.
//! - [`nats`]: the NATS door: lanyard as auth callout, retained-topic publisher and enforcer
//!   of a NATS cluster's MQTT listeners.
//! - [`mailer`]: the mail adapters (file, SMTP, log) behind the authority's mail port.
//! - [`metrics`]: the Prometheus families every room records into, served on `metrics.listen`.
//! - [`authority`]: the use-cases every door shares: tenants, keys, clients, tokens, people,
//!   local API tokens, and acting for others (shares, token exchange, applications).
//! - [`store`]: persistence on SQLite or PostgreSQL.
//! - [`crypto`]: RSA keys, JWS, sealing, secrets.
//! - [`domain`]: pure types and rules.

pub mod app;
pub mod authority;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod mailer;
pub mod metrics;
pub mod mqtt;
pub mod nats;
pub mod store;
