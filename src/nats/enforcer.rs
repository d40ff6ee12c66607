//! The enforcer (SPEC §13): when a token is revoked, a client or person deleted or a key
//! invalidated, the connections it admitted end on every NATS node, within 2 s.
//!
//! It asks every server for the tenant account's connections (`$SYS.REQ.SERVER.PING.CONNZ`,
//! as a system-account user), reads who holds each from its `authorized_user` (the callout's
//! [`Holder`]) and ends the affected ones (`$SYS.REQ.SERVER.<id>.KICK`). Every lanyard node
//! hears every change (PostgreSQL `NOTIFY`) and acts on it, so a connection admitted by a node
//! that has since stopped still ends. When announcements may have been missed, and after a key
//! change, every connection of the tenants concerned is checked against the database. A token's
//! expiry needs nothing: the user JWT carries its `exp`, and the server ends the connection.
//!
//! The changes that arrive while a round runs are handled together in the next round, one CONNZ
//! per tenant concerned: a client revoking its own tokens as fast as it can delays nobody else's
//! revocation by more than a round. Each round is run again once the server's callout timeout
//! has passed, for a CONNECT that was admitted just before the change and registered just after
//! the first look.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::callout::Holder;
use crate::authority::{Authority, Event, Tenant};
use crate::metrics::Metrics;

/// How long the answers of every server to one CONNZ request are awaited after the last one.
const QUIET: Duration = Duration::from_millis(150);
/// The longest one CONNZ round may take.
const ROUND: Duration = Duration::from_secs(1);
/// Connections asked for at once, per server.
const PAGE: usize = 1024;
/// When a round is run again: past the server's callout timeout (2 s by default), after which a
/// CONNECT admitted before the change is registered or has failed.
const SECOND_LOOK: Duration = Duration::from_millis(2_500);

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
            Event::ClientSecretRotated { .. }
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

/// One connection in the cluster.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server_id: String,
    pub cid: u64,
    pub holder: Holder,
    /// Its MQTT client id.
    pub mqtt_client: String,
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
}

impl Enforcer {
    /// Every connection lanyard admitted into `account`, on every server that answers.
    pub async fn connections(&self, account: &str) -> anyhow::Result<Vec<Connection>> {
        let mut found = Vec::new();
        let first = self
            .ask("$SYS.REQ.SERVER.PING.CONNZ".into(), account, 0)
            .await?;
        for reply in first {
            let server_id = reply.server.id.clone();
            let mut page = reply.data;
            while let Some(connz) = page.take() {
                let next = connz.offset + connz.connections.len();
                let more = !connz.connections.is_empty() && next < connz.total;
                found.extend(connz.connections.into_iter().filter_map(|c| {
                    Some(Connection {
                        server_id: server_id.clone(),
                        cid: c.cid,
                        holder: Holder::of(&c.authorized_user)?,
                        mqtt_client: c.mqtt_client,
                    })
                }));
                if more {
                    let subject = format!("$SYS.REQ.SERVER.{server_id}.CONNZ");
                    page = self
                        .ask(subject, account, next)
                        .await?
                        .into_iter()
                        .next()
                        .and_then(|r| r.data);
                }
            }
        }
        Ok(found)
    }

    /// Sends a CONNZ request and gathers the answers until the servers fall quiet.
    async fn ask(
        &self,
        subject: String,
        account: &str,
        offset: usize,
    ) -> anyhow::Result<Vec<ServerReply>> {
        let inbox = self.client.new_inbox();
        let mut answers = self.client.subscribe(inbox.clone()).await?;
        let request = serde_json::json!({
            "acc": account, "auth": true, "offset": offset, "limit": PAGE,
        });
        self.client
            .publish_with_reply(subject, inbox, request.to_string().into())
            .await?;
        self.client.flush().await?;
        let end = Instant::now() + ROUND;
        let mut replies = Vec::new();
        let mut wait = ROUND;
        while let Ok(Some(message)) = tokio::time::timeout(wait, answers.next()).await {
            match serde_json::from_slice::<ServerReply>(&message.payload) {
                Ok(reply) => replies.push(reply),
                Err(e) => tracing::warn!("nats: a CONNZ answer was not read: {e}"),
            }
            wait = QUIET.min(end.saturating_duration_since(Instant::now()));
        }
        Ok(replies)
    }

    /// Ends one connection.
    pub async fn kick(&self, connection: &Connection) -> anyhow::Result<()> {
        let subject = format!("$SYS.REQ.SERVER.{}.KICK", connection.server_id);
        let request = serde_json::json!({ "cid": connection.cid });
        tokio::time::timeout(
            ROUND,
            self.client.request(subject, request.to_string().into()),
        )
        .await??;
        self.metrics.nats_kicked();
        Ok(())
    }

    /// Ends the connections of `tenant` (every tenant: None) the database no longer allows:
    /// their key withdrawn and, with `tokens`, their token revoked or client or person gone.
    pub async fn recheck(&self, tenant: Option<&Tenant>, tokens: bool) -> anyhow::Result<usize> {
        let tenants = match tenant {
            Some(tenant) => vec![tenant.clone()],
            None => self.authority.tenants().await?,
        };
        let mut ended = 0;
        for tenant in tenants {
            let Some(account) = self.accounts.get(tenant.slug.as_str()) else {
                continue;
            };
            for connection in self.connections(account).await? {
                let h = &connection.holder;
                let valid = self
                    .authority
                    .grant_still_valid(
                        tenant.slug.as_str(),
                        &h.kid,
                        &h.client_id,
                        &h.sub,
                        &h.jti,
                        tokens,
                    )
                    .await?;
                if !valid {
                    self.kick(&connection).await?;
                    ended += 1;
                }
            }
        }
        Ok(ended)
    }

    /// Ends the connections `withdrawn` names: one CONNZ round per tenant concerned, however
    /// many tokens, clients and people it names.
    async fn enforce(&self, withdrawn: &Withdrawn) -> anyhow::Result<usize> {
        if withdrawn.everything {
            return self.recheck(None, true).await;
        }
        let mut ended = 0;
        for (tenant_id, w) in &withdrawn.tenants {
            let Some(tenant) = self.authority.tenant_by_id(tenant_id).await? else {
                continue;
            };
            let Some(account) = self.accounts.get(tenant.slug.as_str()) else {
                continue;
            };
            for connection in self.connections(account).await? {
                let h = &connection.holder;
                let named = w.jtis.contains(&h.jti)
                    || w.clients.contains(&h.client_id)
                    || w.people.contains(&h.sub);
                let withdrawn = named
                    || (w.keys
                        && !self
                            .authority
                            .grant_still_valid(
                                tenant.slug.as_str(),
                                &h.kid,
                                &h.client_id,
                                &h.sub,
                                &h.jti,
                                false,
                            )
                            .await?);
                if withdrawn {
                    self.kick(&connection).await?;
                    ended += 1;
                }
            }
        }
        Ok(ended)
    }

    /// [`Enforcer::enforce`], logged; a failure (the cluster or the database away) checks
    /// everything again until it succeeds.
    async fn enforce_or_retry(self: &Arc<Self>, withdrawn: &Withdrawn) {
        match self.enforce(withdrawn).await {
            Ok(0) => {}
            Ok(ended) => tracing::info!("nats: ended {ended} connection(s) no longer allowed"),
            Err(e) => {
                tracing::warn!("nats: ending connections failed: {e:#}; checking all again");
                let enforcer = self.clone();
                tokio::spawn(async move {
                    for _ in 0..30 {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        if enforcer.recheck(None, true).await.is_ok() {
                            return;
                        }
                    }
                });
            }
        }
    }

    /// Follows the authority's events until `stopped`. Events that arrive while a round runs
    /// are taken together in the next, so a flood of revocations costs a round, not a round
    /// each. Every round is run once more after [`SECOND_LOOK`]: a CONNECT the callout admitted
    /// just before a revocation may not be registered yet when the first round looks.
    pub async fn follow(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Event>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let (later_tx, mut later_rx) = mpsc::unbounded_channel::<(Instant, Withdrawn)>();
        let enforcer = self.clone();
        let mut later_stop = stopped.clone();
        tokio::spawn(async move {
            loop {
                let (due, mut withdrawn) = tokio::select! {
                    _ = later_stop.changed() => return,
                    next = later_rx.recv() => match next {
                        Some(next) => next,
                        None => return,
                    },
                };
                tokio::time::sleep_until(due).await;
                while let Ok((_, more)) = later_rx.try_recv() {
                    withdrawn.merge(more);
                }
                enforcer.enforce_or_retry(&withdrawn).await;
            }
        });
        loop {
            let mut withdrawn = Withdrawn::default();
            tokio::select! {
                _ = stopped.changed() => return,
                event = events.recv() => match event {
                    Ok(event) => withdrawn.add(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => withdrawn.everything = true,
                    Err(broadcast::error::RecvError::Closed) => return,
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
            self.enforce_or_retry(&withdrawn).await;
            let _ = later_tx.send((Instant::now() + SECOND_LOOK, withdrawn));
        }
    }
}
