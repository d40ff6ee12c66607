//! The MQTT door: lanyard's own listener in front of rumqttd's router (SPEC §4).
//!
//! rumqttd routes messages and keeps QoS state, persistent sessions and retained messages, but
//! has no permission hook, closes refused connections without a CONNACK and cannot end a
//! session later. So the gate owns the socket: [`connection`] reads frames with
//! `rumqttd::protocol` ([`codec`]), authenticates the CONNECT with a lanyard access token,
//! checks every SUBSCRIBE and PUBLISH against the [`Permissions`], and relays what is allowed
//! into the router through links ([`router`]). [`sessions`] knows who holds which client
//! identifier, so sessions can be ended when their token expires or the authority announces a
//! revocation, a deleted client or an invalidated key (which also drops the pending wills they
//! left), and stored sessions end when their expiry has passed
//! ([`Gate::expire_sessions_once`]). An optional second listener speaks the same over TLS
//! (rustls). Each listener closes at once a connection beyond `limits.connections_per_ip` from
//! one source, and both together beyond the MQTT share of the open-file budget
//! ([`crate::connections`]).
//!
//! Shared subscriptions (`$share/{group}/…`) are renamed at the gate per tenant and filter
//! (`connection`), since rumqttd's router keys their groups by name alone.
//!
//! The gate also publishes lanyard's own retained messages ([`retained`]: each tenant's JWKS and
//! each system's token list) through its own link.
//!
//! This module talks to the authority only through its public use-cases and its event channel;
//! it never touches the store.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttd::protocol::{Packet, Publish};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::authority::{Authority, Event};
use crate::connections::{PerSource, Permits, WarnOnce};
use crate::domain::acl::Permissions;

pub mod codec;
pub mod connection;
pub mod retained;
pub mod router;
pub mod sessions;
mod token_list;

use retained::Lists;
use router::{LinkSession, RouterLinks};
use sessions::{EndReason, Sessions};

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

/// What every connection shares.
pub struct Gate {
    pub(crate) authority: Arc<Authority>,
    pub(crate) permissions: Permissions,
    pub(crate) router: RouterLinks,
    pub(crate) sessions: Sessions,
    /// lanyard's own link into the router, for wills and its own messages.
    internal_link: u64,
    pub(crate) max_packet_size: usize,
    /// A connection whose unsent output passes this is ended (SPEC §7).
    pub(crate) max_queued_bytes: usize,
    /// The longest a stored session is kept (`mqtt.session_expiry`), in seconds.
    pub(crate) session_expiry: u32,
    pub(crate) connect_timeout: Duration,
    /// What lanyard last published on each of its retained topics.
    retained: Mutex<HashMap<String, retained::Retained>>,
    /// When listed tokens expire, so their lists are republished then.
    expiries: Mutex<retained::Expiries>,
    /// When the reconciliation last looked at the database.
    reconciled_at: Mutex<i64>,
    /// Whether a change made here may not have been published (its announcement was missed, or
    /// publishing it failed): the next reconciliation then republishes everything.
    behind: AtomicBool,
}

impl Gate {
    /// Publishes a message as lanyard itself.
    pub(crate) async fn publish(&self, publish: Publish) {
        self.router
            .send(self.internal_link, Packet::Publish(publish, None))
            .await;
    }

    /// Publishes messages as lanyard itself, in order, in one hand-over to the router: the
    /// feeder's and the router's threads are woken once for all of them.
    pub(crate) async fn publish_all(&self, publishes: Vec<Publish>) {
        if publishes.is_empty() {
            return;
        }
        let packets = publishes
            .into_iter()
            .map(|publish| Packet::Publish(publish, None))
            .collect();
        self.router.send_all(self.internal_link, packets).await;
    }

    /// Whether the router and its feeder still run.
    pub fn is_ready(&self) -> bool {
        self.router.is_running()
    }

    /// Links open in the router: lanyard's own, persistent sessions, and clean sessions that
    /// subscribed or published.
    pub fn router_links(&self) -> usize {
        self.router.open_links()
    }

    /// Ends the stored sessions whose Session Expiry Interval (5.0) or `mqtt.session_expiry`
    /// (3.1.1) has passed since their connection closed, and frees what the router held for
    /// them (subscriptions, queued messages). The one step of the session sweep; returns how
    /// many ended.
    pub async fn expire_sessions_once(&self) -> usize {
        let expired = self.sessions.expire(self.authority.now());
        for key in &expired {
            self.router.discard(key.tenant_id(), key.client_id()).await;
        }
        expired.len()
    }

    /// Sessions stored without a connection: persistent ones until they expire, and those
    /// whose delayed will waits.
    pub fn stored_sessions(&self) -> usize {
        self.sessions.stored()
    }

    /// Ends every session whose token's `exp` has passed. The one step of the expiry sweep.
    pub fn end_expired_sessions_once(&self) -> usize {
        let now = self.authority.now();
        self.sessions
            .end_where(EndReason::Expired, |g| g.verified.claims.exp <= now)
    }

    /// The permission of the grants `pick` selects was withdrawn: their live sessions end and
    /// their pending wills are dropped.
    fn withdraw(&self, pick: impl Fn(&crate::authority::KnownToken) -> bool) {
        self.sessions.end_where(EndReason::NotAuthorized, &pick);
        self.sessions.drop_wills_where(&pick);
    }

    /// Publishes a will whose delay has passed, unless its grant was withdrawn meanwhile (an
    /// announcement this node missed, or one that came while the will was being set).
    pub(crate) async fn publish_delayed_will(&self, grant: &sessions::Grant, will: Publish) {
        let claims = &grant.verified.claims;
        let valid = self
            .authority
            .grant_still_valid(
                grant.tenant.slug.as_str(),
                &grant.verified.kid,
                &claims.client_id,
                &claims.sub,
                &claims.jti,
                true,
            )
            .await;
        // An answer the database cannot give now keeps the will, as it keeps sessions.
        if !matches!(valid, Ok(false)) {
            self.publish(will).await;
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
                self.withdraw(|g| {
                    g.tenant.id == tenant_id && g.verified.claims.client_id == client_id
                });
                for key in self.sessions.forget_owner(&tenant_id, &client_id) {
                    self.router.discard(key.tenant_id(), key.client_id()).await;
                }
            }
            Event::UserDeleted { tenant_id, user_id } => {
                self.withdraw(|g| g.tenant.id == tenant_id && g.verified.claims.sub == user_id);
            }
            Event::Resync => self.recheck(None, true).await,
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
    async fn recheck(&self, tenant_id: Option<&str>, tokens: bool) {
        for grant in self.sessions.grants_in_force() {
            if tenant_id.is_some_and(|t| t != grant.tenant.id) {
                continue;
            }
            let claims = &grant.verified.claims;
            let valid = self
                .authority
                .grant_still_valid(
                    grant.tenant.slug.as_str(),
                    &grant.verified.kid,
                    &claims.client_id,
                    &claims.sub,
                    &claims.jti,
                    tokens,
                )
                .await;
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

/// The running MQTT listeners.
pub struct Broker {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    gate: Arc<Gate>,
}

impl Broker {
    /// Starts the router, binds `mqtt.listen` and serves until `stopped` turns true, holding
    /// at most `max_connections` (`mqtt.max_connections` within the open-file budget, see
    /// [`crate::connections`]) on its listeners together.
    pub async fn start(
        authority: Arc<Authority>,
        max_connections: usize,
        stopped: watch::Receiver<bool>,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> anyhow::Result<Broker> {
        let settings = authority.settings().mqtt.clone();
        let listener = TcpListener::bind(settings.listen).await.with_context(|| {
            format!(
                "mqtt.listen: cannot listen on {}; choose a free address or port 0",
                settings.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let tls = match settings.tls_addr() {
            Some(tls_addr) => {
                let acceptor = tls_acceptor(&settings.tls_cert_file, &settings.tls_key_file)?;
                let listener = TcpListener::bind(tls_addr).await.with_context(|| {
                    format!(
                        "mqtt.tls_listen: cannot listen on {tls_addr}; choose a free address or port 0"
                    )
                })?;
                Some((listener, acceptor))
            }
            None => None,
        };
        let router = RouterLinks::start(max_connections + 16);
        let internal = router
            .open(LinkSession::Named {
                tenant_id: "lanyard-internal".into(),
                client_id: uuid::Uuid::new_v4().simple().to_string(),
                clean: true,
            })
            .await
            .context("opening lanyard's own link into the MQTT router")?;
        let mut internal_rx = internal.rx;
        let mut drain_stop = stopped.clone();
        tasks.push(tokio::spawn(async move {
            // Nothing is subscribed on this link; acknowledgements are read and dropped.
            loop {
                tokio::select! {
                    _ = drain_stop.changed() => return,
                    notification = internal_rx.next() => match notification {
                        Ok(Some(rumqttd::Notification::Unschedule)) => {
                            let _ = internal_rx.wake().await;
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                }
            }
        }));
        let gate = Arc::new(Gate {
            permissions: settings.permissions(),
            router,
            sessions: Sessions::default(),
            internal_link: internal.key,
            max_packet_size: settings.max_packet_size as usize,
            max_queued_bytes: usize::try_from(settings.max_queued_bytes).unwrap_or(usize::MAX),
            session_expiry: u32::try_from(settings.session_expiry.as_secs()).unwrap_or(u32::MAX),
            connect_timeout: Duration::from_secs(settings.connect_timeout.as_secs()),
            retained: Mutex::default(),
            expiries: Mutex::default(),
            reconciled_at: Mutex::new(authority.now()),
            behind: AtomicBool::new(false),
            authority: authority.clone(),
        });
        // Retained state is in place before the first client can subscribe.
        gate.publish_everything().await?;
        tracing::info!("mqtt listening on {addr}");

        let limit = Permits::new(max_connections);
        let per_source = authority.settings().limits.connections_per_ip;
        tasks.push(tokio::spawn(accept_loop(
            listener,
            None,
            gate.clone(),
            (limit.clone(), PerSource::new(per_source)),
            stopped.clone(),
        )));
        let mut tls_addr = None;
        if let Some((listener, acceptor)) = tls {
            let local = listener.local_addr()?;
            tls_addr = Some(local);
            tracing::info!("mqtts listening on {local}");
            tasks.push(tokio::spawn(accept_loop(
                listener,
                Some(acceptor),
                gate.clone(),
                (limit, PerSource::new(per_source)),
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(follow_authority(
            gate.clone(),
            authority.subscribe(),
            stopped,
        )));
        Ok(Broker {
            addr,
            tls_addr,
            gate,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener's address, when one is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

/// The rustls acceptor of the TLS listener, from PEM files named by the config.
fn tls_acceptor(cert_file: &str, key_file: &str) -> anyhow::Result<TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!("mqtt.tls_cert_file: cannot read PEM certificates from {cert_file}")
        })?;
    if certs.is_empty() {
        anyhow::bail!("mqtt.tls_cert_file: {cert_file} holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!("mqtt.tls_key_file: cannot read a PEM private key from {key_file}")
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("mqtt.tls_cert_file and mqtt.tls_key_file do not make a usable certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    (limit, per_source): (Permits, Arc<PerSource>),
    mut stopped: watch::Receiver<bool>,
) {
    let full = WarnOnce::default();
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!("mqtt accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Connections that have not finished their CONNECT count too, and time out. Both
        // limits close the excess at once, before anything is read from it (SPEC §7).
        let Some(slot) = per_source.admit(peer.ip()) else {
            tracing::debug!(%peer, "mqtt: too many connections from this source; closed");
            continue;
        };
        let Some(permit) = limit.try_take() else {
            if full.ready() {
                tracing::warn!(%peer, "mqtt: connection limit reached, closing new connections");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gate = gate.clone();
        match &tls {
            None => {
                tokio::spawn(async move {
                    connection::serve(gate, stream, peer, permit).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                tokio::spawn(async move {
                    let _slot = slot;
                    // The handshake gets the CONNECT timeout too, so a stalled one is let go.
                    match tokio::time::timeout(gate.connect_timeout, handshake).await {
                        Ok(Ok(stream)) => connection::serve(gate, stream, peer, permit).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "mqtt: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "mqtt: TLS handshake timed out"),
                    }
                });
            }
        }
    }
    gate.sessions.end_where(EndReason::ShuttingDown, |_| true);
}

/// Ends sessions as the authority announces changes, as their tokens expire, and as stored
/// sessions expire.
async fn follow_authority(
    gate: Arc<Gate>,
    mut events: broadcast::Receiver<Event>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    let mut reconcile = tokio::time::interval(RECONCILE_PERIOD);
    let mut orphans = tokio::time::interval(ORPHAN_SWEEP);
    let mut stored = tokio::time::interval(SESSION_SWEEP);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
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
