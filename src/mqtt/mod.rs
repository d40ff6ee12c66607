//! The MQTT door: lanyard's own listener in front of rumqttd's router (SPEC §4).
//!
//! rumqttd routes messages and keeps QoS state, persistent sessions and retained messages, but
//! has no permission hook, closes refused connections without a CONNACK and cannot end a
//! session later. So the gate owns the socket: [`connection`] reads frames with
//! `rumqttd::protocol` ([`codec`]), authenticates the CONNECT with a lanyard access token,
//! checks every SUBSCRIBE and PUBLISH against the [`Permissions`], and relays what is allowed
//! into the router through links ([`router`]). [`sessions`] knows who holds which client
//! identifier, so sessions can be ended when their token expires or the authority announces a
//! revocation, a deleted client or an invalidated key.
//!
//! This module talks to the authority only through its public use-cases and its event channel;
//! it never touches the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttd::protocol::{Packet, Publish};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

use crate::authority::{Authority, Event};
use crate::domain::acl::Permissions;

pub mod codec;
pub mod connection;
pub mod router;
pub mod sessions;

use router::{LinkOptions, RouterLinks};
use sessions::{EndReason, Sessions};

/// How often sessions are checked for expired tokens (SPEC §4: ended within 2 s of `exp`).
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// What every connection shares.
pub struct Gate {
    pub(crate) authority: Arc<Authority>,
    pub(crate) permissions: Permissions,
    pub(crate) router: RouterLinks,
    pub(crate) sessions: Sessions,
    /// lanyard's own link into the router, for wills and its own messages.
    internal_link: u64,
    pub(crate) max_packet_size: usize,
    pub(crate) connect_timeout: Duration,
}

impl Gate {
    /// Publishes a message as lanyard itself.
    pub(crate) async fn publish(&self, publish: Publish) {
        self.router
            .send(self.internal_link, Packet::Publish(publish, None))
            .await;
    }

    /// Ends every session whose token's `exp` has passed. The one step of the expiry sweep.
    pub fn end_expired_sessions_once(&self) -> usize {
        let now = self.authority.now();
        self.sessions
            .end_where(EndReason::Expired, |_, grant| grant.exp <= now)
    }

    async fn on_event(&self, event: Event) {
        match event {
            Event::AccessTokenRevoked { tenant_id, jti } => {
                self.sessions.end_where(EndReason::NotAuthorized, |_, g| {
                    g.tenant_id == tenant_id && g.jti == jti
                });
            }
            Event::ClientDeleted {
                tenant_id,
                client_id,
            } => {
                self.sessions
                    .end_where(EndReason::NotAuthorized, |owner, g| {
                        g.tenant_id == tenant_id && owner.client_id == client_id
                    });
                self.sessions.forget_owner(&tenant_id, &client_id);
            }
            Event::KeysChanged { tenant_id, slug } => {
                self.recheck(Some(&tenant_id), false).await;
                self.publish_jwks(&slug).await;
            }
        }
    }

    /// Publishes a tenant's JWKS, exactly the HTTP document, as the retained message of
    /// `{topic_prefix}/{slug}/jwks`.
    async fn publish_jwks(&self, slug: &str) {
        let keys = match self.authority.tenant(slug).await {
            Ok(Some(tenant)) => self.authority.keyring(&tenant).await,
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match keys {
            Ok(keys) => {
                let topic = self.permissions.jwks_topic(slug);
                let payload = bytes::Bytes::from(keys.jwks.as_bytes().to_vec());
                self.publish(Publish::new(topic.into(), payload, true))
                    .await;
            }
            Err(e) => tracing::warn!("mqtt: cannot publish the JWKS of {slug}: {e:#}"),
        }
    }

    /// Ends the sessions (of one tenant, or all) whose signing key is no longer published, and
    /// with `tokens` also those whose token was revoked or whose client is gone: used when
    /// events may have been missed.
    async fn recheck(&self, tenant_id: Option<&str>, tokens: bool) {
        for (owner, grant) in self.sessions.live_grants() {
            if tenant_id.is_some_and(|t| t != grant.tenant_id) {
                continue;
            }
            let valid = self
                .authority
                .grant_still_valid(
                    &grant.slug,
                    &grant.kid,
                    &owner.client_id,
                    &grant.jti,
                    tokens,
                )
                .await;
            // An answer the database cannot give now keeps the session: the next check decides.
            if matches!(valid, Ok(false)) {
                self.sessions.end_where(EndReason::NotAuthorized, |o, g| {
                    g.jti == grant.jti && o.client_id == owner.client_id
                });
            }
        }
    }
}

/// The running MQTT listener.
pub struct Broker {
    addr: SocketAddr,
    gate: Arc<Gate>,
}

impl Broker {
    /// Starts the router, binds `mqtt.listen` and serves until `stopped` turns true.
    pub async fn start(
        authority: Arc<Authority>,
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
        let max_connections = settings.max_connections as usize;
        let router = RouterLinks::start(max_connections + 16);
        let internal = router
            .open(LinkOptions {
                tenant_id: "lanyard-internal".into(),
                client_id: uuid::Uuid::new_v4().simple().to_string(),
                clean_session: true,
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
            connect_timeout: Duration::from_secs(settings.connect_timeout.as_secs()),
            authority: authority.clone(),
        });
        // Retained state is in place before the first client can subscribe.
        for tenant in authority.tenants().await? {
            gate.publish_jwks(tenant.slug.as_str()).await;
        }
        tracing::info!("mqtt listening on {addr}");

        let limit = Arc::new(Semaphore::new(max_connections));
        tasks.push(tokio::spawn(accept_loop(
            listener,
            gate.clone(),
            limit,
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(follow_authority(
            gate.clone(),
            authority.subscribe(),
            stopped,
        )));
        Ok(Broker { addr, gate })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }
}

async fn accept_loop(
    listener: TcpListener,
    gate: Arc<Gate>,
    limit: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
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
        // Connections that have not finished their CONNECT count too, and time out.
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "mqtt: connection limit reached, closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection::serve(gate.clone(), stream, peer, permit));
    }
    gate.sessions
        .end_where(EndReason::ShuttingDown, |_, _| true);
}

/// Ends sessions as the authority announces changes, and as their tokens expire.
async fn follow_authority(
    gate: Arc<Gate>,
    mut events: broadcast::Receiver<Event>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = sweep.tick() => {
                gate.end_expired_sessions_once();
            }
            event = events.recv() => match event {
                Ok(event) => gate.on_event(event).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("mqtt: missed {missed} authority events; re-checking every session");
                    gate.recheck(None, true).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
