//! The MQTT door: lanyard's own listener in front of rumqttd's router (SPEC §4).
//!
//! rumqttd routes messages and keeps QoS state, persistent sessions and retained messages, but
//! has no permission hook, closes refused connections without a CONNACK and cannot end a
//! session later. So the gate owns the socket. Its rooms, in the order a connection meets them:
//! - [`listener`]: accepting (plain and TLS) within `limits.connections_per_ip` per source and
//!   the MQTT share of the open-file budget ([`crate::connections`]);
//! - [`handshake`]: the CONNECT authenticated with a lanyard access token, every refusal a
//!   [`handshake::Refusal`] answered with its CONNACK code in one place;
//! - [`connection`]: the session's loop and its end (goodbye, will);
//! - [`inbound`]: every SUBSCRIBE and PUBLISH checked against the [`Permissions`] and relayed
//!   into the router through links ([`router`]); shared subscriptions renamed per tenant and
//!   filter, since rumqttd keys their groups by name alone;
//! - [`outbound`]: the router's deliveries passed on, SUBACKs merged, the output bounded;
//! - [`sessions`]: who holds which client identifier, stored sessions and pending wills;
//! - [`follow`]: the authority's events and the timers: sessions ended when their token expires
//!   or is revoked, their client or person deleted or their key invalidated (pending wills
//!   dropped too), stored sessions expired ([`Gate::expire_sessions_once`]), topics
//!   republished.
//!
//! The gate also publishes lanyard's own retained messages ([`retained`]: each tenant's JWKS and
//! each system's token list) through its own link.
//!
//! This module talks to the authority only through its public use-cases and its event channel;
//! it never touches the store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttd::protocol::{Packet, Publish};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authority::Authority;
use crate::connections::{PerSource, Permits};
use crate::domain::acl::Permissions;
use crate::metrics::Metrics;

pub mod codec;
pub mod connection;
mod follow;
mod handshake;
mod inbound;
mod listener;
mod outbound;
pub mod retained;
pub mod router;
pub mod sessions;
mod token_list;

use router::{LinkSession, RouterLinks};
use sessions::{EndReason, Sessions};

/// What every connection shares.
pub struct Gate {
    pub(crate) authority: Arc<Authority>,
    /// Connections, CONNECT outcomes, messages and retained publishes are counted here.
    pub(crate) metrics: Arc<Metrics>,
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
    /// Where every change of lanyard's retained topics also goes (the NATS publisher).
    mirror: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<(String, bytes::Bytes)>>,
    /// Whether a change made here may not have been published (its announcement was missed, or
    /// publishing it failed): the next reconciliation then republishes everything.
    behind: AtomicBool,
}

impl Gate {
    /// Publishes a message as lanyard itself.
    pub(crate) async fn publish(&self, publish: Publish) {
        self.publish_with(publish, None).await;
    }

    /// Publishes a message with its properties as lanyard itself, at the QoS it carries (a
    /// will keeps its own).
    pub(crate) async fn publish_with(
        &self,
        publish: Publish,
        properties: Option<rumqttd::protocol::PublishProperties>,
    ) {
        self.router
            .send(self.internal_link, Packet::Publish(publish, properties))
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
}

/// The running MQTT listeners.
pub struct Broker {
    addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    gate: Arc<Gate>,
}

impl Broker {
    /// Starts the router, binds `mqtt.listen` (unless it is empty: the router then holds only
    /// lanyard's retained topics, for a NATS cluster to be fed from) and serves until `stopped` turns true, holding
    /// at most `max_connections` (`mqtt.max_connections` within the open-file budget, see
    /// [`crate::connections`]) on its listeners together.
    pub async fn start(
        authority: Arc<Authority>,
        metrics: Arc<Metrics>,
        max_connections: usize,
        stopped: watch::Receiver<bool>,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> anyhow::Result<Broker> {
        let settings = authority.settings().mqtt.clone();
        let listener = match settings.listen {
            Some(listen) => Some(TcpListener::bind(listen).await.with_context(|| {
                format!(
                    "mqtt.listen: cannot listen on {listen}; choose a free address or port 0, or leave it empty for none"
                )
            })?),
            None => None,
        };
        let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let tls = match settings.tls_listen {
            Some(tls_addr) => {
                let acceptor =
                    listener::tls_acceptor(&settings.tls_cert_file, &settings.tls_key_file)?;
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
            .open(LinkSession::Server {
                client_id: uuid::Uuid::new_v4().simple().to_string(),
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
            mirror: std::sync::OnceLock::new(),
            authority: authority.clone(),
            metrics: metrics.clone(),
        });
        // Retained state is in place before the first client can subscribe.
        gate.publish_everything().await?;
        match addr {
            Some(addr) => tracing::info!("mqtt listening on {addr}"),
            None if authority.settings().nats.enabled() => {
                tracing::info!("mqtt: no listener of lanyard's own; devices connect through NATS")
            }
            None => tracing::warn!(
                "mqtt: no listener (mqtt.listen is empty) and no NATS cluster ([nats]): devices have no broker"
            ),
        }

        let limit = Permits::new(max_connections);
        let counted = limit.clone();
        metrics
            .sample_on_scrape(move |m| m.set_mqtt_connections(counted.in_use(), counted.limit()));
        let per_source = authority.settings().limits.connections_per_ip;
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(listener::accept_loop(
                listener,
                None,
                gate.clone(),
                (limit.clone(), PerSource::new(per_source)),
                stopped.clone(),
            )));
        }
        let mut tls_addr = None;
        if let Some((listener, acceptor)) = tls {
            let local = listener.local_addr()?;
            tls_addr = Some(local);
            tracing::info!("mqtts listening on {local}");
            tasks.push(tokio::spawn(listener::accept_loop(
                listener,
                Some(acceptor),
                gate.clone(),
                (limit, PerSource::new(per_source)),
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(follow::follow_authority(
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

    /// The listener's address; None when `mqtt.listen` is empty.
    pub fn local_addr(&self) -> Option<SocketAddr> {
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
