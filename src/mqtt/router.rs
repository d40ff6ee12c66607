//! rumqttd's router, and the links through which the gate hands it allowed traffic.
//!
//! The router runs on its own thread and keeps routing, QoS 1/2 state, persistent sessions and
//! retained messages. Opening a link (`LinkBuilder::build`) and sending on one (`LinkTx::send`)
//! block until the router's bounded queue takes the event, so neither may run on the async
//! reactor: one dedicated thread, the feeder, owns every `LinkTx` and performs these calls in
//! the order connections issue them. Connections talk to it through a bounded channel, so a
//! router that falls behind slows the publishers down instead of growing a queue.
//! The receiving half of each link (`LinkRx`) is async and stays with its connection.

use std::collections::HashMap;

use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};
use rumqttd::{Router, RouterConfig};
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the feeder; beyond this, connections wait.
const FEEDER_QUEUE: usize = 8192;

/// What a link to the router is opened with.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The router's session key: tenant-scoped client identifiers keep tenants apart.
    pub tenant_id: String,
    pub client_id: String,
    pub clean_session: bool,
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
        options: LinkOptions,
        reply: oneshot::Sender<Option<OpenLink>>,
    },
    Send {
        key: u64,
        packet: Packet,
    },
    /// Deregisters the link (a DISCONNECT is the only way rumqttd forgets one) and drops it.
    Close {
        key: u64,
    },
}

/// A handle on the router and its feeder; cheap to clone.
#[derive(Clone)]
pub struct RouterLinks {
    commands: mpsc::Sender<Command>,
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
        std::thread::Builder::new()
            .name("mqtt-feeder".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a current-thread runtime");
                runtime.block_on(async move {
                    let mut links: HashMap<u64, LinkTx> = HashMap::new();
                    let mut next_key = 0u64;
                    while let Some(command) = queue.recv().await {
                        match command {
                            Command::Open { options, reply } => {
                                let built = LinkBuilder::new(&options.client_id, router_tx.clone())
                                    .tenant_id(Some(options.tenant_id))
                                    .clean_session(options.clean_session)
                                    .build();
                                let opened = match built {
                                    Ok((tx, rx, ack)) => {
                                        next_key += 1;
                                        links.insert(next_key, tx);
                                        let session_present = matches!(
                                            Option::<Packet>::from(ack),
                                            Some(Packet::ConnAck(ack, _)) if ack.session_present
                                        );
                                        Some(OpenLink {
                                            key: next_key,
                                            rx,
                                            session_present,
                                        })
                                    }
                                    Err(LinkError::Send(_)) => {
                                        tracing::error!("the MQTT router stopped");
                                        return;
                                    }
                                    Err(e) => {
                                        tracing::warn!("the router refused a link: {e}");
                                        None
                                    }
                                };
                                if let Err(Some(link)) = reply.send(opened) {
                                    // The connection went away meanwhile.
                                    close(&mut links, link.key).await;
                                }
                            }
                            Command::Send { key, packet } => {
                                if let Some(tx) = links.get_mut(&key)
                                    && let Err(LinkError::Send(_)) = tx.send(packet).await
                                {
                                    tracing::error!("the MQTT router stopped");
                                    return;
                                }
                            }
                            Command::Close { key } => close(&mut links, key).await,
                        }
                    }
                });
            })
            .expect("spawning the feeder thread");
        RouterLinks { commands }
    }

    /// Opens a link; None if the router refused it (it is full, or the id is unusable).
    pub async fn open(&self, options: LinkOptions) -> Option<OpenLink> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Open { options, reply })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// False once the feeder stopped, which it does when the router is gone.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    pub async fn send(&self, key: u64, packet: Packet) {
        let _ = self.commands.send(Command::Send { key, packet }).await;
    }

    pub async fn close(&self, key: u64) {
        let _ = self.commands.send(Command::Close { key }).await;
    }
}

async fn close(links: &mut HashMap<u64, LinkTx>, key: u64) {
    if let Some(mut tx) = links.remove(&key) {
        let disconnect = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        let _ = tx.send(Packet::Disconnect(disconnect, None)).await;
    }
}
