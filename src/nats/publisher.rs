//! The publisher (SPEC §13): lanyard's retained topics (each tenant's JWKS and signed key
//! schedule, each system's token list and status list) kept in the cluster.
//!
//! The topics come from lanyard's own retained projection (the gate's, [`Gate::mirror_retained`]):
//! everything at start, then every change as it is made. They go into the cluster over MQTT,
//! since a plain NATS publish does not become an MQTT retained message, as the tenant account's
//! config user (`nats.publisher_user`), since a NATS config reload deletes retained messages
//! whose publisher is not one. One connection per account, to the first MQTT listener that
//! answers; after every (re)connection every topic is published again, so whatever was missed
//! while the cluster was away is made good. Only the latest message of a topic is kept for
//! sending: within this node, a newer one is never overtaken by an older. Every lanyard node
//! publishes every topic, each its own signing of a status list or key schedule: the last
//! written stands, and the nodes converge within their reconciliation period (devices refuse a
//! list older than the one they hold). Keys and status lists go before token lists, and a
//! message larger than `nats.max_payload` is left out and logged (NATS would end the
//! connection), so one long token list cannot hold up the rest. The link is plain MQTT: keep
//! it on a private network.
//!
//! After each (re)connection the publisher also reads the retained messages the account holds
//! under the topic prefix, and clears those of tenants and systems the database no longer has:
//! the cluster keeps retained messages across restarts, and a system deleted while no lanyard
//! ran would otherwise keep its token list there for good.
//!
//! [`Gate::mirror_retained`]: crate::mqtt::Gate

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::mqtt::Gate;

/// How long to wait before trying the next MQTT listener, at first; doubled after each
/// failure, up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Requests queued between the publisher and its connection.
const QUEUE: usize = 256;
/// The largest message: a long token list.
const MAX_PACKET: usize = 16 * 1024 * 1024;
/// How long the retained messages the account holds are read after connecting.
const SWEEP: Duration = Duration::from_secs(2);

/// Where one account's publisher connects, and as whom.
#[derive(Clone)]
pub(super) struct Target {
    pub account: String,
    pub user: String,
    pub password: String,
    pub addresses: Vec<(String, u16)>,
    /// Distinct per lanyard node: two nodes' publishers must not take over each other's
    /// session.
    pub client_id: String,
    /// The largest message the cluster takes.
    pub max_payload: usize,
    /// `{topic_prefix}/#`: where the topics it sweeps are.
    pub prefix_filter: String,
}

/// The order topics are sent in: keys and status lists (small, and what a device checks
/// tokens with) before token lists.
fn rank(topic: &str) -> u8 {
    u8::from(topic.contains("/authorization/localApiTokens/"))
}

/// The topics of one account: the latest message of each, and those to send (by rank).
#[derive(Default)]
struct Topics {
    current: BTreeMap<String, Bytes>,
    /// Topics whose retained message was removed (an empty message clears it).
    cleared: BTreeSet<String>,
    pending: BTreeSet<(u8, String)>,
}

impl Topics {
    fn set(&mut self, topic: String, payload: Bytes) {
        if payload.is_empty() {
            self.current.remove(&topic);
            self.cleared.insert(topic.clone());
        } else {
            self.cleared.remove(&topic);
            self.current.insert(topic.clone(), payload);
        }
        self.pending.insert((rank(&topic), topic));
    }

    /// Everything is to be sent again (a new connection).
    fn all_pending(&mut self) {
        self.pending = self
            .current
            .keys()
            .chain(self.cleared.iter())
            .map(|t| (rank(t), t.clone()))
            .collect();
    }

    fn message(&self, topic: &str) -> Bytes {
        self.current.get(topic).cloned().unwrap_or_default()
    }
}

/// Publishes one account's topics until `stopped`: `start` first, then what `changes` brings.
pub(super) async fn run(
    target: Target,
    gate: Arc<Gate>,
    start: Vec<(String, Bytes)>,
    mut changes: mpsc::UnboundedReceiver<(String, Bytes)>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut topics = Topics::default();
    for (topic, payload) in start {
        topics.set(topic, payload);
    }
    let mut next = 0;
    let mut retry = RETRY;
    loop {
        let (host, port) = target.addresses[next % target.addresses.len()].clone();
        next += 1;
        let mut options = MqttOptions::new(target.client_id.clone(), host.clone(), port);
        options
            .set_credentials(target.user.clone(), target.password.clone())
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut connection) = AsyncClient::new(options, QUEUE);
        let mut connected = false;
        // While set: the retained topics seen so far, and until when they are read.
        let mut sweep: Option<(Instant, HashSet<String>)> = None;
        loop {
            if connected {
                send_pending(&client, &mut topics, target.max_payload);
            }
            let sweep_end = sweep.as_ref().map(|(end, _)| *end);
            tokio::select! {
                _ = stopped.changed() => {
                    let _ = client.try_disconnect();
                    return;
                }
                _ = tokio::time::sleep_until(sweep_end.unwrap_or_else(Instant::now)), if sweep_end.is_some() => {
                    let (_, seen) = sweep.take().expect("sweeping");
                    let _ = client.try_unsubscribe(target.prefix_filter.clone());
                    clear_orphans(&gate, &mut topics, seen).await;
                }
                change = changes.recv() => match change {
                    Some((topic, payload)) => topics.set(topic, payload),
                    None => return,
                },
                event = connection.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code == ConnectReturnCode::Success {
                            tracing::info!(
                                "nats: publishing {}'s retained topics through {host}:{port}",
                                target.account
                            );
                            connected = true;
                            retry = RETRY;
                            topics.all_pending();
                            if client
                                .try_subscribe(target.prefix_filter.clone(), QoS::AtMostOnce)
                                .is_ok()
                            {
                                sweep = Some((Instant::now() + SWEEP, HashSet::new()));
                            }
                        } else {
                            tracing::warn!(
                                "nats: the MQTT listener {host}:{port} refused {} ({:?}); check nats.publisher_user and its password",
                                target.user, ack.code
                            );
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if let Some((_, seen)) = sweep.as_mut()
                            && publish.retain
                            && !publish.payload.is_empty()
                        {
                            seen.insert(publish.topic);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(
                            "nats: publishing {}'s retained topics through {host}:{port}: {e}",
                            target.account
                        );
                        break;
                    }
                },
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Clears the retained topics the account holds (`seen`) that lanyard does not publish and the
/// database has no tenant or system for. A topic this node does not know but the database has
/// (another node's newer system) is left to its node.
async fn clear_orphans(gate: &Gate, topics: &mut Topics, seen: HashSet<String>) {
    let unknown: Vec<String> = seen
        .into_iter()
        .filter(|t| !topics.current.contains_key(t))
        .collect();
    if unknown.is_empty() {
        return;
    }
    let live = match gate.live_topics().await {
        Ok(live) => live,
        Err(e) => {
            tracing::warn!("nats: reading which retained topics should exist: {e:#}");
            return;
        }
    };
    for topic in unknown.into_iter().filter(|t| !live.contains(t)) {
        tracing::info!("nats: clearing {topic}: its tenant or system no longer exists");
        topics.set(topic, Bytes::new());
    }
}

/// Hands pending topics to the connection while its queue takes them.
fn send_pending(client: &AsyncClient, topics: &mut Topics, max_payload: usize) {
    while let Some((rank, topic)) = topics.pending.first().cloned() {
        let payload = topics.message(&topic);
        if payload.len() > max_payload {
            tracing::warn!(
                "nats: {topic} is not published: {} bytes, over nats.max_payload ({max_payload}); raise max_payload in the cluster and in lanyard",
                payload.len()
            );
        } else if client
            .try_publish(topic.clone(), QoS::AtLeastOnce, true, payload)
            .is_err()
        {
            return;
        }
        topics.pending.remove(&(rank, topic));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_message_of_a_topic_is_sent_and_a_reconnection_sends_everything() {
        let mut topics = Topics::default();
        topics.set("a".into(), Bytes::from_static(b"1"));
        topics.set("a".into(), Bytes::from_static(b"2"));
        topics.set("b".into(), Bytes::from_static(b"x"));
        assert_eq!(topics.pending.len(), 2);
        assert_eq!(topics.message("a"), Bytes::from_static(b"2"));
        // Keys before token lists.
        topics.set(
            "p/acme/authorization/localApiTokens/s1".into(),
            Bytes::from_static(b"[]"),
        );
        topics.set("p/acme/jwks".into(), Bytes::from_static(b"{}"));
        let order: Vec<&str> = topics.pending.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            order,
            [
                "a",
                "b",
                "p/acme/jwks",
                "p/acme/authorization/localApiTokens/s1"
            ]
        );
        topics.pending.clear();
        topics.set("b".into(), Bytes::new());
        assert_eq!(topics.message("b"), Bytes::new());
        topics.pending.clear();
        topics.all_pending();
        // A cleared topic is cleared again on every new connection.
        let again: Vec<&str> = topics.pending.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            again,
            [
                "a",
                "b",
                "p/acme/jwks",
                "p/acme/authorization/localApiTokens/s1"
            ]
        );
    }
}
