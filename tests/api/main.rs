//! Black-box tests: each starts lanyard on port 0 with a fresh database and talks to it through
//! its real doors. Tests written with `on_both_databases!` run on SQLite, and on PostgreSQL too
//! when `TEST_POSTGRES_URL` is set (each test gets its own database there).

#[macro_use]
mod helpers;

mod applications;
mod audit;
mod authority;
mod browser;
mod caddy;
mod cli;
mod connections;
mod discovery;
mod exchange;
mod forward_auth;
mod graphql;
mod introspection;
mod kek;
mod keys;
mod lists;
mod mail;
mod metadata;
mod metrics;
mod mqtt;
mod mqtt_bytes;
mod mqtt_conformance;
#[path = "../support/mqtt_packets.rs"]
mod mqtt_packets;
mod nats;
#[path = "../support/nats_cluster.rs"]
mod nats_cluster;
mod nginx;
mod nodes;
mod offline_trust;
#[path = "../support/outbox.rs"]
mod outbox;
mod reauth;
mod revocation;
mod sharing;
mod signin;
mod token;
mod web;
