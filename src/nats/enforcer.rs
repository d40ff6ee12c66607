//! The enforcer (SPEC §13): when a token is revoked, a client or person deleted or a key
//! invalidated, the connections it admitted end on every NATS node, within 2 s.
//!
//! It asks every server for its connections (`$SYS.REQ.SERVER.PING.CONNZ`, as a system-account
//! user), reads who holds each from its `authorized_user` (the callout's [`Holder`]) and ends
//! the affected ones (`$SYS.REQ.SERVER.<id>.KICK`). Every lanyard node hears every change
//! (PostgreSQL `NOTIFY`) and acts on it, so a connection admitted by a node that has since
//! stopped still ends. When announcements may have been missed, and after a key change, every
//! connection of the tenants concerned is checked against the database. A token's expiry needs
//! nothing: the user JWT carries its `exp`, and the server ends the connection.
//!
//! The changes that arrive while a round runs are handled together in the next round, in one
//! CONNZ: a client revoking its own tokens as fast as it can delays nobody else's revocation by
//! more than a round. A round waits for every server it has heard from in the last
//! [`SERVER_MEMORY`]; one that does not answer, or a kick that fails, makes the round end what it
//! found and then fail, and a failed round is run again every [`RETRY`] until it succeeds. Each
//! round is also run again once the server's callout timeout has passed, for a CONNECT that was
//! admitted just before the change and registered just after the first look.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::holders::Holder;
use crate::authority::{Authority, Event, Tenant};
use crate::metrics::Metrics;

/// How long the answers to a CONNZ request are awaited after the last one, while no server is
/// known yet.
const QUIET: Duration = Duration::from_millis(150);
/// The longest one CONNZ request, or one KICK, may take.
const ROUND: Duration = Duration::from_secs(1);
/// A server is awaited in every round for this long after it last answered.
const SERVER_MEMORY: Duration = Duration::from_secs(90);
/// Connections asked for at once, per server.
const PAGE: usize = 1024;
/// When a round is run again: past the server's callout timeout (`authorization.timeout`, 2 s by
/// default), after which a CONNECT admitted before the change is registered or has failed.
const SECOND_LOOK: Duration = Duration::from_millis(2_500);
/// When a failed round is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// What the events of one round withdrew.
#[derive(Debug, Default, Clone)]
struct Withdrawn {
    /// Announcements may have been missed: every connection is checked.
    everything: bool,
    /// By tenant id.
    tenants: HashMap<String, TenantWithdrawn>,
}

#[derive(Debug, Default, Clone)]
struct TenantWithdrawn {
    jtis: HashSet<String>,
    clients: HashSet<String>,
    people: HashSet<String>,
    /// The tenant's keys changed: each connection's key is checked.
    keys: bool,
}

impl Withdrawn {
    fn add(&mut self, event: Event) {
        match event {
            Event::AccessTokenRevoked { tenant_id, jti } => {
                self.tenants.entry(tenant_id).or_default().jtis.insert(jti);
            }
            Event::ClientDeleted {
                tenant_id,
                client_id,
            } => {
                self.tenants
                    .entry(tenant_id)
                    .or_default()
                    .clients
                    .insert(client_id);
            }
            Event::UserDeleted { tenant_id, user_id } => {
                self.tenants
                    .entry(tenant_id)
                    .or_default()
                    .people
                    .insert(user_id);
            }
            Event::KeysChanged { tenant_id, .. } => {
                self.tenants.entry(tenant_id).or_default().keys = true;
            }
            Event::Resync => self.everything = true,
            // The callout admits neither a delegation's token nor a technical token.
            Event::ShareRevoked { .. }
            | Event::ApplicationAccessChanged { .. }
            | Event::ClientSecretRotated { .. }
            | Event::RoleAssigned { .. }
            | Event::LocalTokensChanged { .. } => {}
        }
    }

    fn merge(&mut self, other: Withdrawn) {
        self.everything |= other.everything;
        for (tenant_id, w) in other.tenants {
            let mine = self.tenants.entry(tenant_id).or_default();
            mine.jtis.extend(w.jtis);
            mine.clients.extend(w.clients);
            mine.people.extend(w.people);
            mine.keys |= w.keys;
        }
    }

    fn is_empty(&self) -> bool {
        !self.everything && self.tenants.is_empty()
    }
}

/// One connection in the cluster that lanyard admitted.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server_id: String,
    pub cid: u64,
    pub account: String,
    pub holder: Holder,
    /// Its MQTT client id.
    pub mqtt_client: String,
}

/// What one CONNZ round found.
pub struct Found {
    pub connections: Vec<Connection>,
    /// The servers that answered.
    pub answered: HashSet<String>,
    /// Whether every server heard from lately answered.
    pub complete: bool,
}

#[derive(Deserialize)]
struct ServerReply {
    server: ServerInfo,
    #[serde(default)]
    data: Option<Connz>,
}

#[derive(Deserialize)]
struct ServerInfo {
    id: String,
}

#[derive(Deserialize)]
struct Connz {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    connections: Vec<ConnInfo>,
}

#[derive(Deserialize)]
struct ConnInfo {
    cid: u64,
    #[serde(default)]
    account: String,
    #[serde(default)]
    authorized_user: String,
    #[serde(default)]
    mqtt_client: String,
}

pub(super) struct Enforcer {
    pub authority: Arc<Authority>,
    pub metrics: Arc<Metrics>,
    /// A system-account connection.
    pub client: async_nats::Client,
    /// Tenant slug → NATS account.
    pub accounts: BTreeMap<String, String>,
    /// The servers that answered, and when they last did.
    pub servers: Mutex<HashMap<String, Instant>>,
}

/// A KICK's answer.
#[derive(Deserialize)]
struct KickReply {
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl Enforcer {
    /// Every connection lanyard admitted, in `account` or in every account, on every server.
    pub async fn connections(&self, account: Option<&str>) -> anyhow::Result<Found> {
        let known: HashSet<String> = {
            let mut servers = self.servers.lock().expect("servers lock");
            servers.retain(|_, seen| seen.elapsed() < SERVER_MEMORY);
            servers.keys().cloned().collect()
        };
        let replies = self
            .ask("$SYS.REQ.SERVER.PING.CONNZ".into(), account, 0, &known)
            .await?;
        let mut found = Found {
            connections: Vec::new(),
            answered: HashSet::new(),
            complete: true,
        };
        for reply in replies {
            let server_id = reply.server.id.clone();
            found.answered.insert(server_id.clone());
            let mut page = reply.data;
            while let Some(connz) = page.take() {
                let next = connz.offset + connz.connections.len();
                let more = !connz.connections.is_empty() && next < connz.total;
                found
                    .connections
                    .extend(connz.connections.into_iter().filter_map(|c| {
                        Some(Connection {
                            server_id: server_id.clone(),
                            cid: c.cid,
                            holder: Holder::of(&c.authorized_user)?,
                            account: c.account,
                            mqtt_client: c.mqtt_client,
                        })
                    }));
                if more {
                    let subject = format!("$SYS.REQ.SERVER.{server_id}.CONNZ");
                    let one = HashSet::from([server_id.clone()]);
                    page = self
                        .ask(subject, account, next, &one)
                        .await?
                        .into_iter()
                        .next()
                        .and_then(|r| r.data);
                    found.complete &= page.is_some();
                }
            }
        }
        found.complete &= known.is_subset(&found.answered);
        let now = Instant::now();
        let mut servers = self.servers.lock().expect("servers lock");
        for id in &found.answered {
            servers.insert(id.clone(), now);
        }
        Ok(found)
    }

    /// Sends a CONNZ request and gathers the answers: until every server of `expected` has
    /// answered (at most [`ROUND`]), or, with none expected, until they fall quiet.
    async fn ask(
        &self,
        subject: String,
        account: Option<&str>,
        offset: usize,
        expected: &HashSet<String>,
    ) -> anyhow::Result<Vec<ServerReply>> {
        let end = Instant::now() + ROUND;
        let mut request = serde_json::json!({ "auth": true, "offset": offset, "limit": PAGE });
        if let Some(account) = account {
            request["acc"] = account.into();
        }
        let inbox = self.client.new_inbox();
        let mut answers = tokio::time::timeout(ROUND, async {
            let answers = self.client.subscribe(inbox.clone()).await?;
            self.client
                .publish_with_reply(subject, inbox, request.to_string().into())
                .await?;
            self.client.flush().await?;
            anyhow::Ok(answers)
        })
        .await
        .map_err(|_| anyhow::anyhow!("the cluster did not take a CONNZ request in time"))??;
        let mut replies: Vec<ServerReply> = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let wait = if expected.is_empty() && !replies.is_empty() {
                QUIET.min(left)
            } else {
                left
            };
            let Ok(Some(message)) = tokio::time::timeout(wait, answers.next()).await else {
                break;
            };
            match serde_json::from_slice::<ServerReply>(&message.payload) {
                Ok(reply) => replies.push(reply),
                Err(e) => tracing::warn!("nats: a CONNZ answer was not read: {e}"),
            }
            if !expected.is_empty()
                && expected
                    .iter()
                    .all(|id| replies.iter().any(|r| &r.server.id == id))
            {
                break;
            }
        }
        Ok(replies)
    }

    /// Ends one connection.
    async fn kick(&self, connection: &Connection) -> anyhow::Result<()> {
        let subject = format!("$SYS.REQ.SERVER.{}.KICK", connection.server_id);
        let request = serde_json::json!({ "cid": connection.cid });
        let reply = tokio::time::timeout(
            ROUND,
            self.client.request(subject, request.to_string().into()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer in time"))??;
        if let Ok(KickReply { error: Some(error) }) = serde_json::from_slice(&reply.payload) {
            bail!("{error}");
        }
        self.metrics.nats_kicked();
        Ok(())
    }

    /// Ends the connections `withdrawn` names, or (`everything`) every connection the database
    /// no longer allows, in one CONNZ round however many tenants, tokens, clients and people
    /// it names. What it found is ended even when the round then fails: a server that did not
    /// answer, or a kick that failed.
    async fn enforce(&self, withdrawn: &Withdrawn) -> anyhow::Result<usize> {
        // account → its tenant, and what was withdrawn there (None: check everything).
        let mut concerned: HashMap<&str, (Tenant, Option<&TenantWithdrawn>)> = HashMap::new();
        if withdrawn.everything {
            for tenant in self.authority.tenants().await? {
                if let Some(account) = self.accounts.get(tenant.slug.as_str()) {
                    concerned.insert(account, (tenant, None));
                }
            }
        } else {
            for (tenant_id, w) in &withdrawn.tenants {
                let Some(tenant) = self.authority.tenant_by_id(tenant_id).await? else {
                    continue;
                };
                if let Some(account) = self.accounts.get(tenant.slug.as_str()) {
                    concerned.insert(account, (tenant, Some(w)));
                }
            }
        }
        if concerned.is_empty() {
            return Ok(0);
        }
        let only = (concerned.len() == 1).then(|| *concerned.keys().next().expect("one"));
        let found = self.connections(only).await?;
        let (mut ended, mut failed) = (0, 0);
        for connection in &found.connections {
            let Some((tenant, w)) = concerned.get(connection.account.as_str()) else {
                continue;
            };
            let h = &connection.holder;
            let named = w.is_some_and(|w| {
                w.jtis.contains(&h.jti)
                    || w.clients.contains(&h.client_id)
                    || w.people.contains(&h.sub)
            });
            // Everything: the token, its client and person, and its key; after a key change:
            // the key.
            let check = match w {
                None => Some(true),
                Some(w) if !named && w.keys => Some(false),
                Some(_) => None,
            };
            let withdrawn = named
                || match check {
                    Some(tokens) => {
                        !self
                            .authority
                            .grant_still_valid(
                                tenant.slug.as_str(),
                                &h.kid,
                                &h.claims(tenant.slug.as_str()),
                                tokens,
                            )
                            .await?
                    }
                    None => false,
                };
            if withdrawn {
                match self.kick(connection).await {
                    Ok(()) => ended += 1,
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(
                            "nats: ending connection {} on {}: {e:#}",
                            connection.cid,
                            connection.server_id
                        );
                    }
                }
            }
        }
        if ended > 0 {
            tracing::info!("nats: ended {ended} connection(s) no longer allowed");
        }
        if failed > 0 {
            bail!("{failed} connection(s) could not be ended");
        }
        if !found.complete {
            bail!("not every NATS server answered");
        }
        Ok(ended)
    }

    /// Follows the authority's events until `stopped`. Events that arrive while a round runs
    /// are taken together in the next, so a flood of revocations costs a round, not a round
    /// each. Every round is run once more after [`SECOND_LOOK`]: a CONNECT the callout admitted
    /// just before a revocation may not be registered yet when the first round looks. A round
    /// that failed is run again after [`RETRY`], until it succeeds.
    pub async fn follow(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Event>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let (later_tx, mut later_rx) = mpsc::unbounded_channel::<(Instant, Withdrawn)>();
        let enforcer = self.clone();
        let (retry_tx, mut later_stop) = (later_tx.clone(), stopped.clone());
        let later = tokio::spawn(async move {
            loop {
                let (due, mut withdrawn) = tokio::select! {
                    _ = later_stop.changed() => return,
                    next = later_rx.recv() => match next {
                        Some(next) => next,
                        None => return,
                    },
                };
                tokio::select! {
                    _ = later_stop.changed() => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
                while let Ok((_, more)) = later_rx.try_recv() {
                    withdrawn.merge(more);
                }
                if let Err(e) = enforcer.enforce(&withdrawn).await {
                    tracing::warn!("nats: ending connections: {e:#}; trying again");
                    let _ = retry_tx.send((Instant::now() + RETRY, withdrawn));
                }
            }
        });
        loop {
            let mut withdrawn = Withdrawn::default();
            tokio::select! {
                _ = stopped.changed() => break,
                event = events.recv() => match event {
                    Ok(event) => withdrawn.add(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => withdrawn.everything = true,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
            loop {
                match events.try_recv() {
                    Ok(event) => withdrawn.add(event),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => withdrawn.everything = true,
                    Err(_) => break,
                }
            }
            if withdrawn.is_empty() {
                continue;
            }
            let done = tokio::select! {
                _ = stopped.changed() => break,
                done = self.enforce(&withdrawn) => done,
            };
            let due = match done {
                Ok(_) => Instant::now() + SECOND_LOOK,
                Err(e) => {
                    tracing::warn!("nats: ending connections: {e:#}; trying again");
                    Instant::now() + RETRY
                }
            };
            let _ = later_tx.send((due, withdrawn));
        }
        later.abort();
    }
}
