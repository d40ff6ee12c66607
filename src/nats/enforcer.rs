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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
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

/// One connection in the cluster.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server_id: String,
    pub cid: u64,
    pub holder: Holder,
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

    /// Ends the connections of `tenant` whose holder `pick` selects; returns how many.
    pub async fn end_where(
        &self,
        tenant: &Tenant,
        pick: impl Fn(&Holder) -> bool,
    ) -> anyhow::Result<usize> {
        let Some(account) = self.accounts.get(tenant.slug.as_str()) else {
            return Ok(0);
        };
        let mut ended = 0;
        for connection in self.connections(account).await? {
            if pick(&connection.holder) {
                self.kick(&connection).await?;
                ended += 1;
            }
        }
        Ok(ended)
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

    async fn on_event(&self, event: Event) -> anyhow::Result<()> {
        let tenant = |id: String| async move { self.authority.tenant_by_id(&id).await };
        let ended = match event {
            Event::AccessTokenRevoked { tenant_id, jti } => match tenant(tenant_id).await? {
                Some(t) => self.end_where(&t, |h| h.jti == jti).await?,
                None => 0,
            },
            Event::ClientDeleted {
                tenant_id,
                client_id,
            } => match tenant(tenant_id).await? {
                Some(t) => self.end_where(&t, |h| h.client_id == client_id).await?,
                None => 0,
            },
            Event::UserDeleted { tenant_id, user_id } => match tenant(tenant_id).await? {
                Some(t) => self.end_where(&t, |h| h.sub == user_id).await?,
                None => 0,
            },
            Event::KeysChanged { tenant_id, .. } => match tenant(tenant_id).await? {
                Some(t) => self.recheck(Some(&t), false).await?,
                None => 0,
            },
            Event::Resync => self.recheck(None, true).await?,
            Event::ClientSecretRotated { .. }
            | Event::RoleAssigned { .. }
            | Event::LocalTokensChanged { .. } => 0,
        };
        if ended > 0 {
            tracing::info!("nats: ended {ended} connection(s) no longer allowed");
        }
        Ok(())
    }

    /// Follows the authority's events until `stopped`.
    pub async fn follow(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Event>,
        mut stopped: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                _ = stopped.changed() => return,
                event = events.recv() => match event {
                    Ok(event) => event,
                    // Events were missed: check everything.
                    Err(broadcast::error::RecvError::Lagged(_)) => Event::Resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if matches!(event, Event::LocalTokensChanged { .. }) {
                continue;
            }
            if let Err(e) = self.on_event(event).await {
                // The cluster or the database is away: whatever this missed is checked again
                // once they answer.
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
}
