//! rumqttd's router, and the links through which the gate hands it allowed traffic.
//!
//! The router runs on its own thread and keeps routing, QoS 1/2 state, persistent sessions and
//! retained messages. Opening a link (`LinkBuilder::build`) and sending on one (`LinkTx::send`)
//! block until the router's bounded queue takes the event, so neither may run on the async
//! reactor: one dedicated thread, the feeder, owns every `LinkTx` and performs these calls in
//! the order connections issue them. Connections talk to it through a bounded channel, so a
//! router that falls behind slows the publishers down instead of growing a queue.
//! The receiving half of each link (`LinkRx`) is async and stays with its connection.
//!
//! The router remembers every client identifier it has seen (a clean session leaves a record
//! behind), and a clean session needs no name there: the gate keeps sessions apart itself. So a
//! clean session's link borrows one of the feeder's pooled identifiers and returns it on close,
//! and only sessions the router must keep or resume are opened under their client's own
//! identifier. rumqttd never expires a stored session; the gate discards it ([`RouterLinks::discard`])
//! when it expires, and the feeder, which sees every open and close in order, skips the discard
//! if a connection has taken the name up again meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};
use rumqttd::{Notification, Router, RouterConfig};
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the feeder; beyond this, connections wait.
const FEEDER_QUEUE: usize = 8192;

/// The router session a link opens.
#[derive(Debug, Clone)]
pub enum LinkSession {
    /// A clean session, under a pooled identifier.
    Clean { receive_maximum: u16 },
    /// The session stored under the client's own identifier (tenant-scoped, so tenants stay
    /// apart): resumed, or discarded when `clean`.
    Named {
        tenant_id: String,
        client_id: String,
        clean: bool,
        receive_maximum: u16,
    },
    /// lanyard's own link: what it publishes (its retained topics, wills) keeps its QoS and
    /// is not acknowledged.
    Server { client_id: String },
}

impl LinkSession {
    /// A named session opened only to be discarded, or checked for.
    pub fn named(tenant_id: &str, client_id: &str, clean: bool) -> LinkSession {
        LinkSession::Named {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            clean,
            receive_maximum: RECEIVE_MAXIMUM_DEFAULT,
        }
    }
}

/// MQTT 5.0 §3.1.2.11.3: a client that says nothing takes 65,535 messages unacknowledged;
/// the router sends at most 100 (its inflight window).
pub const RECEIVE_MAXIMUM_DEFAULT: u16 = u16::MAX;

/// The tenants under which the router sees pooled identifiers and lanyard's own link; tenant
/// ids are UUIDs.
const POOL_TENANT: &str = "lanyard-pool";
const SERVER_TENANT: &str = "lanyard-internal";

/// How a link is opened in the router.
struct Opened {
    clean: bool,
    receive_maximum: u16,
    server: bool,
}

/// An open link: the key to send on it through the feeder, and its receiving half.
pub struct OpenLink {
    pub key: u64,
    pub rx: LinkRx,
    pub session_present: bool,
}

// Packets dominate the traffic; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Command {
    Open {
        session: LinkSession,
        reply: oneshot::Sender<Option<OpenLink>>,
    },
    Send {
        key: u64,
        packet: Packet,
    },
    /// Packets for one link, handed to the router together: it is woken once for all.
    SendAll {
        key: u64,
        packets: Vec<Packet>,
    },
    /// Deregisters the link (a DISCONNECT is the only way rumqttd forgets one) and drops it.
    Close {
        key: u64,
    },
    /// Drops a named link another link of the same name has replaced in the router, without
    /// a DISCONNECT, which would reach the replacement.
    Forget {
        key: u64,
    },
    /// Discards the session stored under a name, unless a link of that name is open by the
    /// time the feeder gets to it (a new connection resumed or replaced it meanwhile).
    Discard {
        tenant_id: String,
        client_id: String,
    },
}

/// A link the feeder holds: its sending half, and the pooled identifier or the name it uses.
struct Held {
    tx: LinkTx,
    pooled: Option<u64>,
    name: Option<(String, String)>,
}

/// The feeder's links, the names of the named ones, and the pooled identifiers not in use.
#[derive(Default)]
struct Links {
    open: HashMap<u64, Held>,
    names: HashMap<(String, String), u64>,
    next_key: u64,
    free_ids: Vec<u64>,
    next_id: u64,
}

/// A handle on the router and its feeder; cheap to clone.
#[derive(Clone)]
pub struct RouterLinks {
    commands: mpsc::Sender<Command>,
    /// Links open in the router, as of the feeder's last command.
    open: Arc<AtomicUsize>,
}

impl RouterLinks {
    /// Starts the router thread and the feeder thread. Both end when every handle is dropped.
    pub fn start(max_connections: usize) -> RouterLinks {
        let config = RouterConfig {
            max_connections,
            max_outgoing_packet_count: 200,
            // Each topic's recent messages are kept in segments, up to 16 MiB per topic: a
            // subscriber that falls further behind than that loses the oldest ones.
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        let router_tx = Router::new(0, config).spawn();
        let (commands, mut queue) = mpsc::channel::<Command>(FEEDER_QUEUE);
        let open = Arc::new(AtomicUsize::new(0));
        let open_count = open.clone();
        std::thread::Builder::new()
            .name("mqtt-feeder".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a current-thread runtime");
                runtime.block_on(async move {
                    let mut links = Links::default();
                    let build = |client_id: &str, tenant_id: String, opened: Opened| {
                        LinkBuilder::new(client_id, router_tx.clone())
                            .tenant_id(Some(tenant_id))
                            .clean_session(opened.clean)
                            .max_inflight(opened.receive_maximum)
                            .server(opened.server)
                            .build()
                            .map_err(|e| match e {
                                LinkError::Send(_) => None,
                                refused => Some(refused.to_string()),
                            })
                    };
                    while let Some(command) = queue.recv().await {
                        match command {
                            Command::Open { session, reply } => {
                                let Some(opened) = links.open(session, build) else {
                                    tracing::error!("the MQTT router stopped");
                                    return;
                                };
                                if let Err(Some(link)) = reply.send(opened) {
                                    // The connection went away meanwhile.
                                    links.close(link.key).await;
                                }
                            }
                            Command::Send { key, packet } => {
                                if let Some(Held { tx, .. }) = links.open.get_mut(&key)
                                    && let Err(LinkError::Send(_)) = tx.send(packet).await
                                {
                                    tracing::error!("the MQTT router stopped");
                                    return;
                                }
                            }
                            Command::SendAll { key, mut packets } => {
                                let Some(Held { tx, .. }) = links.open.get_mut(&key) else {
                                    continue;
                                };
                                // The router takes everything waiting on the link when it
                                // is told of the last packet.
                                let Some(last) = packets.pop() else { continue };
                                tx.buffer().extend(packets);
                                if let Err(LinkError::Send(_)) = tx.send(last).await {
                                    tracing::error!("the MQTT router stopped");
                                    return;
                                }
                            }
                            Command::Close { key } => links.close(key).await,
                            Command::Forget { key } => {
                                links.remove(key);
                            }
                            Command::Discard {
                                tenant_id,
                                client_id,
                            } => {
                                let name = (tenant_id, client_id);
                                if links.names.contains_key(&name) {
                                    continue;
                                }
                                let session = LinkSession::named(&name.0, &name.1, true);
                                match links.open(session, build) {
                                    None => {
                                        tracing::error!("the MQTT router stopped");
                                        return;
                                    }
                                    Some(Some(link)) => links.close(link.key).await,
                                    Some(None) => {}
                                }
                            }
                        }
                        open_count.store(links.open.len(), Ordering::Relaxed);
                    }
                });
            })
            .expect("spawning the feeder thread");
        RouterLinks { commands, open }
    }

    /// Opens a link; None if the router refused it (it is full, or the id is unusable).
    pub async fn open(&self, session: LinkSession) -> Option<OpenLink> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Open { session, reply })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// How many links are open in the router.
    pub fn open_links(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// False once the feeder stopped, which it does when the router is gone.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    pub async fn send(&self, key: u64, packet: Packet) {
        let _ = self.commands.send(Command::Send { key, packet }).await;
    }

    /// Sends `packets` on the link `key`, in order, in one hand-over to the router.
    pub async fn send_all(&self, key: u64, packets: Vec<Packet>) {
        let _ = self.commands.send(Command::SendAll { key, packets }).await;
    }

    pub async fn close(&self, key: u64) {
        let _ = self.commands.send(Command::Close { key }).await;
    }

    /// Drops a named link another link of the same name has replaced in the router, without a
    /// DISCONNECT, which would reach the replacement.
    pub async fn forget(&self, key: u64) {
        let _ = self.commands.send(Command::Forget { key }).await;
    }

    /// Discards the session the router stores under a name, and what it holds (subscriptions,
    /// queued messages), unless a link of that name is open when the feeder gets to it.
    pub async fn discard(&self, tenant_id: &str, client_id: &str) {
        let command = Command::Discard {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
        };
        let _ = self.commands.send(command).await;
    }
}

impl Links {
    /// Opens a link in the router (blocking until it answers); the outer None if the router
    /// stopped, the inner if it refused the link.
    fn open(
        &mut self,
        session: LinkSession,
        // Fails with None when the router stopped, else with why it refused the link.
        build: impl FnOnce(
            &str,
            String,
            Opened,
        ) -> Result<(LinkTx, LinkRx, Notification), Option<String>>,
    ) -> Option<Option<OpenLink>> {
        let opened = |clean, receive_maximum, server| Opened {
            clean,
            receive_maximum,
            server,
        };
        let (tenant_id, client_id, how, pooled) = match session {
            LinkSession::Clean { receive_maximum } => {
                let id = self.free_ids.pop().unwrap_or_else(|| {
                    self.next_id += 1;
                    self.next_id
                });
                let how = opened(true, receive_maximum, false);
                (POOL_TENANT.to_owned(), id.to_string(), how, Some(id))
            }
            LinkSession::Named {
                tenant_id,
                client_id,
                clean,
                receive_maximum,
            } => (
                tenant_id,
                client_id,
                opened(clean, receive_maximum, false),
                None,
            ),
            LinkSession::Server { client_id } => {
                let how = opened(true, RECEIVE_MAXIMUM_DEFAULT, true);
                (SERVER_TENANT.to_owned(), client_id, how, None)
            }
        };
        let name = pooled
            .is_none()
            .then(|| (tenant_id.clone(), client_id.clone()));
        match build(&client_id, tenant_id, how) {
            Ok((tx, rx, ack)) => {
                self.next_key += 1;
                if let Some(name) = &name {
                    self.names.insert(name.clone(), self.next_key);
                }
                self.open.insert(self.next_key, Held { tx, pooled, name });
                let session_present = matches!(
                    Option::<Packet>::from(ack),
                    Some(Packet::ConnAck(ack, _)) if ack.session_present
                );
                Some(Some(OpenLink {
                    key: self.next_key,
                    rx,
                    session_present,
                }))
            }
            Err(None) => None,
            Err(Some(e)) => {
                tracing::warn!("the router refused a link: {e}");
                self.free_ids.extend(pooled);
                Some(None)
            }
        }
    }

    /// Deregisters a link; its pooled identifier is free again once the router has seen the
    /// DISCONNECT, which it handles before any later CONNECT from this thread.
    async fn close(&mut self, key: u64) {
        if let Some(mut held) = self.remove(key) {
            let disconnect = Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
            };
            let _ = held.tx.send(Packet::Disconnect(disconnect, None)).await;
            self.free_ids.extend(held.pooled);
        }
    }

    /// Drops a link from the feeder's books (its name too, while it is the one holding it).
    fn remove(&mut self, key: u64) -> Option<Held> {
        let held = self.open.remove(&key)?;
        if let Some(name) = &held.name
            && self.names.get(name) == Some(&key)
        {
            self.names.remove(name);
        }
        Some(held)
    }
}
