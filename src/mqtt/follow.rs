//! Following the authority: its events end sessions and drop pending wills (a token revoked, a
//! client or person deleted, a key invalidated) and republish retained topics (a mint, a
//! revocation, a key change); timers end sessions whose token expired, expire stored sessions and
//! token lists, clear orphaned topics and reconcile with changes other processes made. When
//! events may have been missed, every live session is checked against the database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::Gate;
use super::handshake::Will;
use super::retained::Lists;
use super::sessions::{self, EndReason};
use crate::authority::Event;

/// How often sessions are checked for expired tokens (SPEC §4: ended within 2 s of `exp`).
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How often the retained JWKS topics are compared with the database, which is how changes made
/// by another process (the `bootstrap` command, another node) reach the devices: within this
/// plus the keyring's reload age (SPEC §1: 5 s).
const RECONCILE_PERIOD: Duration = Duration::from_secs(2);
/// How often stored sessions are checked for their expiry.
const SESSION_SWEEP: Duration = Duration::from_secs(5);
/// How often retained topics of tenants and systems removed from the database are cleared.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);
/// How often status lists are looked at for having lived half their lifetime (at least 1
/// minute, `tokens.status_list_ttl` being at least 2).
const STATUS_LIST_SWEEP: Duration = Duration::from_secs(30);

impl Gate {
    /// The permission of the grants `pick` selects was withdrawn: their live sessions end and
    /// their pending wills are dropped.
    fn withdraw(&self, pick: impl Fn(&crate::authority::KnownToken) -> bool) {
        self.sessions.end_where(EndReason::NotAuthorized, &pick);
        self.sessions.drop_wills_where(&pick);
    }

    /// Whether a grant is still good as far as its signing key goes and, with `tokens`, its
    /// revocation, its client and its person: asked of the database.
    async fn grant_still_valid(
        &self,
        grant: &sessions::Grant,
        tokens: bool,
    ) -> crate::authority::Result<bool> {
        self.authority
            .grant_still_valid(
                grant.tenant.slug.as_str(),
                &grant.verified.kid,
                &grant.verified.claims,
                tokens,
            )
            .await
    }

    /// Publishes a will whose delay has passed, unless its grant was withdrawn meanwhile (an
    /// announcement this node missed, or one that came while the will was being set).
    pub(super) async fn publish_delayed_will(&self, grant: &sessions::Grant, will: Will) {
        let valid = self.grant_still_valid(grant, true).await;
        // An answer the database cannot give now keeps the will, as it keeps sessions.
        if !matches!(valid, Ok(false)) {
            self.publish_with(will.publish, will.properties).await;
        }
    }

    async fn on_event(&self, event: Event) {
        match event {
            Event::AccessTokenRevoked { tenant_id, jti } => {
                self.withdraw(|g| g.tenant.id == tenant_id && g.verified.claims.jti == jti);
            }
            Event::ClientDeleted {
                tenant_id,
                client_id,
            } => {
                // Its sessions, those of tokens it acted through, and those of the technical
                // tokens other tenants issued it (an application's client).
                self.withdraw(|g| {
                    let claims = &g.verified.claims;
                    (g.tenant.id == tenant_id
                        && (claims.client_id == client_id
                            || claims.act.as_ref().is_some_and(|a| a.names(&client_id))))
                        || (claims.app.is_some() && claims.client_id == client_id)
                });
                for key in self.sessions.forget_owner(&tenant_id, &client_id) {
                    self.router.discard(key.tenant_id(), key.client_id()).await;
                }
            }
            Event::UserDeleted { tenant_id, user_id } => {
                // Their sessions, and those of tokens they acted through (token exchange).
                self.withdraw(|g| {
                    let claims = &g.verified.claims;
                    g.tenant.id == tenant_id
                        && (claims.sub == user_id
                            || claims.act.as_ref().is_some_and(|a| a.names(&user_id)))
                });
            }
            // A technical token holds while its grant does: its sessions end, and reconnect if
            // access was only changed.
            ref changed @ Event::ApplicationAccessChanged { ref tenant_id, .. } => {
                self.withdraw(|g| {
                    &g.tenant.id == tenant_id
                        && changed.concerns_app(g.verified.claims.app.as_ref())
                });
            }
            // A delegation's token opens no session.
            Event::ShareRevoked { .. } => {}
            Event::Resync => {
                // Announcements of other nodes may be lost: every topic is republished at the
                // next reconciliation, read anew.
                self.behind.store(true, Ordering::SeqCst);
                self.recheck(None, true).await;
            }
            // Tokens issued before a secret rotation stay valid until they expire; a new role
            // changes no session's permissions.
            Event::ClientSecretRotated { .. } | Event::RoleAssigned { .. } => {}
            Event::LocalTokensChanged {
                tenant_id,
                system_id,
                ..
            } => {
                let lists = Lists::from([(tenant_id, BTreeSet::from([system_id]))]);
                self.republish_lists(lists).await;
            }
            Event::KeysChanged { tenant_id, slug } => {
                self.recheck(Some(&tenant_id), false).await;
                if let Err(e) = self.republish_tenant(&slug).await {
                    self.fell_behind(&format!("publishing the keys of {slug}"), &e);
                }
            }
        }
    }

    /// Handles `first` and every event already waiting behind it. The other events keep their
    /// order; then the lists they changed are published. A token minted here is added to its
    /// list as it is; the other lists are read, all in one query, each once (a list is read when
    /// it is published, so it holds every change committed before, tokens just minted too).
    async fn on_events(&self, first: Event, events: &mut broadcast::Receiver<Event>) {
        let mut read = Lists::new();
        let mut minted = Vec::new();
        let mut others = Vec::new();
        let mut missed = 0;
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                Event::LocalTokensChanged {
                    tenant_id,
                    system_id,
                    minted: Some(token),
                } => minted.push((tenant_id, system_id, token)),
                Event::LocalTokensChanged {
                    tenant_id,
                    system_id,
                    minted: None,
                } => {
                    read.entry(tenant_id).or_default().insert(system_id);
                }
                other if !others.contains(&other) => others.push(other),
                _ => {}
            }
            next = loop {
                match events.try_recv() {
                    Ok(event) => break Some(event),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => missed += n,
                    Err(_) => break None,
                }
            };
        }
        for event in others {
            self.on_event(event).await;
        }
        minted.retain(|(tenant_id, system_id, _)| {
            !read.get(tenant_id).is_some_and(|s| s.contains(system_id))
        });
        match self.add_minted(minted).await {
            Ok(unread) => {
                for (tenant_id, systems) in unread {
                    read.entry(tenant_id).or_default().extend(systems);
                }
            }
            Err(e) => self.fell_behind("publishing token lists", &e),
        }
        self.republish_lists(read).await;
        if missed > 0 {
            self.events_missed(missed).await;
        }
    }

    /// Events were lost (the channel overflowed): every session is checked again, and the next
    /// reconciliation republishes every key set and list. The one step taken then.
    pub async fn events_missed(&self, missed: u64) {
        tracing::warn!("mqtt: missed {missed} authority events; re-checking every session");
        self.behind.store(true, Ordering::SeqCst);
        self.recheck(None, true).await;
    }

    /// A change made here may not have reached the devices: the next reconciliation, which
    /// otherwise reads only changes made elsewhere, republishes everything.
    fn fell_behind(&self, what: &str, e: &anyhow::Error) {
        tracing::warn!("mqtt: {what}: {e:#}; everything is republished at the next reconciliation");
        self.behind.store(true, Ordering::SeqCst);
    }

    async fn republish_lists(&self, lists: Lists) {
        if let Err(e) = self.publish_lists(lists).await {
            self.fell_behind("publishing token lists", &e);
        }
    }

    /// A key change: the JWKS, and the lists (tokens of an invalidated key show REVOKED).
    async fn republish_tenant(&self, slug: &str) -> anyhow::Result<()> {
        if let Some(tenant) = self.authority.tenant(slug).await? {
            self.publish_jwks(&tenant).await?;
            self.publish_tenant_lists(&tenant).await?;
        }
        Ok(())
    }

    /// Ends the sessions (of one tenant, or all) whose signing key is no longer published, and
    /// with `tokens` also those whose token was revoked or whose client is gone: used when
    /// events may have been missed. Their pending wills are dropped too.
    pub(super) async fn recheck(&self, tenant_id: Option<&str>, tokens: bool) {
        for grant in self.sessions.grants_in_force() {
            if tenant_id.is_some_and(|t| grant.tenant.id != t) {
                continue;
            }
            let claims = &grant.verified.claims;
            let valid = self.grant_still_valid(&grant, tokens).await;
            // An answer the database cannot give now keeps the session: the next check decides.
            if matches!(valid, Ok(false)) {
                self.withdraw(|g| {
                    let c = &g.verified.claims;
                    c.jti == claims.jti && c.client_id == claims.client_id
                });
            }
        }
    }
}

/// Ends sessions as the authority announces changes, as their tokens expire, and as stored
/// sessions expire.
pub(super) async fn follow_authority(
    gate: Arc<Gate>,
    mut events: broadcast::Receiver<Event>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    let mut reconcile = tokio::time::interval(RECONCILE_PERIOD);
    let mut orphans = tokio::time::interval(ORPHAN_SWEEP);
    let mut stored = tokio::time::interval(SESSION_SWEEP);
    let mut status_lists = tokio::time::interval(STATUS_LIST_SWEEP);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = status_lists.tick() => {
                if let Err(e) = gate.refresh_status_lists_once().await {
                    gate.fell_behind("signing status lists again", &e);
                }
            }
            _ = stored.tick() => {
                gate.expire_sessions_once().await;
            }
            _ = orphans.tick() => {
                if let Err(e) = gate.clear_orphans_once().await {
                    tracing::warn!("mqtt: clearing retained topics of removed systems: {e:#}");
                }
            }
            _ = sweep.tick() => {
                gate.end_expired_sessions_once();
                if let Err(e) = gate.expire_lists_once().await {
                    gate.fell_behind("republishing expired token lists", &e);
                }
            }
            _ = reconcile.tick() => {
                if let Err(e) = gate.reconcile_once().await {
                    tracing::warn!("mqtt: reconciling retained topics: {e:#}");
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    // Tokens committed together are answered together: letting their tasks
                    // run first publishes them together, each list once and in one hand-over
                    // to the router.
                    tokio::task::yield_now().await;
                    gate.on_events(event, &mut events).await
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => gate.events_missed(missed).await,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
