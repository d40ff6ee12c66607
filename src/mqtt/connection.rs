//! One client connection through the gate: the CONNECT handshake, then every packet checked
//! and relayed to the router, and everything the router sends back passed on — until the
//! client leaves, breaks a rule, or lanyard ends the session.
//!
//! The gate owns what rumqttd's router cannot do for us: authentication, topic permissions with
//! their reason codes (MQTT 5.0 §3.4.2.1, §3.9.3), keep-alive (§3.1.2.10), the last will
//! (§3.1.2.5, with its delay on 5.0), the client's Maximum Packet Size (5.0 §3.1.2.11.4), and
//! ending a session with a DISCONNECT and reason (5.0 §3.14).
//!
//! What a client asks for costs it, not others: lanyard's own retained message goes out once per
//! SUBSCRIBE packet however often the packet names the topic, and a connection whose unsent
//! output passes `mqtt.max_queued_bytes` (a client that asks and never reads) is ended, on 5.0
//! with DISCONNECT 0x97 (Quota exceeded), and what it did not read is dropped. Deliveries from
//! the router stop at half that limit until the client has read them, so a slow reader is slowed,
//! not ended. While the output waits for a client that does not read, lanyard can still end the
//! session (revocation, expiry); the goodbye then gets `GOODBYE_TIMEOUT` to be written.
//!
//! A clean session gets its router link when it first subscribes or publishes: a connection
//! that only authenticates, or idles, costs the router nothing. A session the router must resume
//! or keep (Clean Start 0, or a Session Expiry Interval) opens its link during the CONNECT,
//! under the client's own name. A session that does not outlive its connection (5.0 Session
//! Expiry 0), or whose permission was withdrawn, is discarded from the router when it closes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::{Future, poll_fn};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, DisconnectReasonCode, LastWill, Packet,
    PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish, SubAck,
    Subscribe, SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::{Instant, timeout_at};

use super::Gate;
use super::codec::{self, FrameError, Version};
use super::router::LinkSession;
use super::sessions::{EndReason, Grant, Key};
use crate::authority::TokenRejected;
use crate::domain::acl::Identity;
use crate::domain::topic::{TopicFilter, TopicName};

/// A CONNECT larger than this is refused: it carries a token, a client id and perhaps a will.
const MAX_CONNECT_SIZE: usize = 64 * 1024;
/// Passwords are access tokens; longer ones are refused before any parsing.
const MAX_PASSWORD_LEN: usize = 8 * 1024;
/// Client identifiers longer than this are refused.
const MAX_CLIENT_ID_LEN: usize = 128;
/// Router notifications written per flush.
const WRITE_BATCH: usize = 256;
/// The most read from the socket at once.
const READ_CHUNK: usize = 8 * 1024;
/// A write buffer grown beyond this by one large message is let go once it is empty again: a
/// device that received a long token list once should not hold its size while it idles.
const KEEP_BUFFER: usize = 16 * 1024;
/// How long the goodbye (5.0 DISCONNECT with its reason) may take to write: a client that does
/// not read is closed without it.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a session ended, which decides the goodbye and the will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The client sent DISCONNECT; `will` says whether it asked for its will (5.0 0x04).
    Disconnected { will: bool },
    /// The network went away or keep-alive ran out.
    Lost { keep_alive: bool },
    /// The client broke the protocol.
    Violation(DisconnectReasonCode),
    /// lanyard ended it.
    Ended(EndReason),
    /// The router dropped the link.
    RouterGone,
    /// The output waiting for the client passed `mqtt.max_queued_bytes`: it does not read what
    /// it asks for (SPEC §7).
    Overflow,
}

/// Serves one accepted connection until it closes. `permit` counts it against the limit.
pub fn serve<S>(
    gate: Arc<Gate>,
    stream: S,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A future keeps what it was given for as long as it runs, even once moved elsewhere:
    // boxed, that costs a waiting connection one pointer.
    let accepted = Box::new((gate, stream, peer, permit));
    async move {
        // The CONNECT and the goodbye are boxed too: their futures are large, and an idle
        // connection should not carry them while it waits.
        let Some(mut connection) = Box::pin(Connection::open(*accepted)).await else {
            return;
        };
        let outcome = connection.run().await;
        Box::pin(connection.finish(outcome)).await;
    }
}

/// A link into the router: its key at the feeder, and its receiving half.
struct Link {
    key: u64,
    rx: LinkRx,
}

/// What a successful CONNECT established.
struct Session {
    version: Version,
    key: Key,
    seq: u64,
    /// The router link, once opened.
    link: Option<Box<Link>>,
    /// The router holds the session under the client's own name (see `router`).
    named_link: bool,
    /// The session outlives the connection (its expiry is not 0).
    kept: bool,
    ended: oneshot::Receiver<EndReason>,
    /// The token the session was granted under: tenant, client, subject, system, scopes.
    grant: Grant,
    keep_alive: Option<Duration>,
    will: Option<Box<LastWill>>,
    will_delay: u32,
    /// 5.0: the largest packet the client accepts.
    client_max_packet: Option<u32>,
    /// lanyard's own exact topics this session subscribes to. rumqttd replays a retained
    /// message only for a filter new to the session, so the gate delivers lanyard's current
    /// message itself on a re-subscribe and on a resumed session: exactly once per subscribe.
    lanyard_topics: BTreeSet<String>,
    /// A stored session was resumed: its lanyard topics get their current messages at once.
    resumed: bool,
}

struct Connection<S> {
    gate: Arc<Gate>,
    stream: S,
    buf: BytesMut,
    out: BytesMut,
    session: Session,
    /// Packet ids the gate answers for itself; allocated the first time there is one.
    own: Option<Box<OwnAnswers>>,
    /// The router paused the link until it is told the link is ready again.
    wake_link: bool,
    _permit: OwnedSemaphorePermit,
}

/// Packet ids in flight whose answers the gate gives or completes itself.
#[derive(Default)]
struct OwnAnswers {
    /// SUBSCRIBE packet ids relayed with some filters refused: each position's refusal, or None
    /// where the router's answer goes.
    subscriptions: HashMap<u16, Vec<Option<SubscribeReasonCode>>>,
    /// 3.1.1 QoS 2 publishes refused after PUBREC: their PUBREL is answered here.
    refused_qos2: HashSet<u16>,
    /// QoS 2 messages too large for the client, acknowledged to the router on its behalf.
    dropped_qos2: HashSet<u16>,
    /// Answers to the router decided while forwarding its notifications, sent after them.
    to_router: Vec<Packet>,
}

/// Reads the CONNECT, authenticates it, claims the session and opens the router link. Every
/// refusal is answered with a CONNACK carrying its reason before the socket closes.
async fn handshake<S>(
    gate: &Arc<Gate>,
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
    peer: SocketAddr,
) -> Option<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = loop {
        // The first packet must be a CONNECT (MQTT §3.1): anything else is closed at once.
        if buf.first().is_some_and(|b| *b != 0x10) {
            return None;
        }
        match codec::frame(buf, MAX_CONNECT_SIZE) {
            Ok(frame) => break frame,
            Err(FrameError::Incomplete) => match timeout_at(deadline, stream.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => return None,
            },
            Err(FrameError::Malformed) => return None,
            Err(FrameError::TooLarge { body, .. }) => {
                if codec::connect_version(buf, body) == Some(Version::V5) {
                    refuse(stream, Version::V5, ConnectReturnCode::PacketTooLarge).await;
                }
                tracing::debug!(%peer, "mqtt: CONNECT too large");
                return None;
            }
        }
    };
    let Some(version) = codec::connect_version(buf, frame.body) else {
        // MQTT 3.1.1 §3.1.2.2: "unacceptable protocol level", then close.
        let _ = stream.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
        return None;
    };
    let Some(Packet::Connect(connect, props, will, will_props, login)) =
        codec::decode(version, buf, &frame)
    else {
        if version == Version::V5 {
            refuse(stream, version, ConnectReturnCode::MalformedPacket).await;
        }
        return None;
    };
    let refused = |code: ConnectReturnCode, why: &str| {
        tracing::info!(%peer, client = %connect.client_id, "mqtt: CONNECT refused: {why}");
        code
    };

    // Client identifier (MQTT 3.1.1 §3.1.3.1, 5.0 §3.1.3.1).
    let mut assigned = None;
    let client_id = if connect.client_id.is_empty() {
        if version == Version::V4 && !connect.clean_session {
            let code = refused(
                ConnectReturnCode::ClientIdentifierNotValid,
                "empty client id for a persistent session",
            );
            refuse(stream, version, code).await;
            return None;
        }
        let id = format!("lanyard-{}", uuid::Uuid::new_v4().simple());
        assigned = Some(id.clone());
        id
    } else if connect.client_id.len() > MAX_CLIENT_ID_LEN
        || connect.client_id.contains(['+', '#', '/', '$', '\0'])
    {
        let code = refused(
            ConnectReturnCode::ClientIdentifierNotValid,
            "unusable client id",
        );
        refuse(stream, version, code).await;
        return None;
    } else {
        connect.client_id.clone()
    };

    // The password is a lanyard access token (SPEC §4).
    let password = login.as_ref().map(|l| l.password.as_str()).unwrap_or("");
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        let code = refused(ConnectReturnCode::BadUserNamePassword, "no usable password");
        refuse(stream, version, code).await;
        return None;
    }
    let known: Grant = match gate.authority.verify_bearer(password).await {
        Ok(known) => known,
        Err(TokenRejected::Unavailable) => {
            let code = unavailable(version);
            refuse(
                stream,
                version,
                refused(code, "token cannot be checked now"),
            )
            .await;
            return None;
        }
        Err(e) => {
            let code = refused(ConnectReturnCode::NotAuthorized, &e.to_string());
            refuse(stream, version, code).await;
            return None;
        }
    };
    let claims = &known.verified.claims;
    let identity = Identity {
        slug: known.tenant.slug.as_str(),
        client_id: &claims.client_id,
        sub: &claims.sub,
        system: claims.system.as_deref(),
        scopes: &known.scopes,
    };

    // A will is a publish like any other, checked now (SPEC §4: never under the prefix).
    if let Some(will) = &will {
        let allowed = std::str::from_utf8(&will.topic)
            .ok()
            .and_then(|t| TopicName::parse(t).ok())
            .is_some_and(|t| gate.permissions.may_publish(&identity, &t));
        if !allowed {
            let code = refused(ConnectReturnCode::NotAuthorized, "will topic not allowed");
            refuse(stream, version, code).await;
            return None;
        }
    }

    let key = Key::new(&known.tenant.id, &client_id);
    // Clean Start 0 (3.1.1: Clean Session 0) resumes a stored session. How long the session
    // outlives its connection: 3.1.1 persistent sessions `mqtt.session_expiry`; 5.0 what the
    // client asks (MQTT 5.0 §3.1.2.11.2, absent = 0), at most that long.
    let resume = !connect.clean_session;
    let props = props.as_ref();
    let asked_expiry = props.and_then(|p| p.session_expiry_interval);
    let expiry = match version {
        Version::V4 if resume => gate.session_expiry,
        Version::V4 => 0,
        Version::V5 => asked_expiry.unwrap_or(0).min(gate.session_expiry),
    };
    // The router holds the session under the client's name when it may resume one or must
    // keep it.
    let named_link = resume || expiry > 0;
    let Some(claim) = gate.sessions.claim(&key, &known, expiry) else {
        let code = refused(
            ConnectReturnCode::NotAuthorized,
            "client id held by another principal",
        );
        refuse(stream, version, code).await;
        return None;
    };
    let named = |clean| LinkSession::Named {
        tenant_id: known.tenant.id.clone(),
        client_id: client_id.clone(),
        clean,
    };
    let resumed = resume && claim.may_resume;
    // A stored session is discarded when the new one starts clean, and when it was granted
    // under other permissions (or belonged to a deleted client that used the same id).
    if ((named_link && !resumed) || (!named_link && claim.held_persistent))
        && let Some(link) = gate.router.open(named(true)).await
    {
        gate.router.close(link.key).await;
    }
    let mut link = None;
    let mut session_present = false;
    if named_link {
        let Some(opened) = gate.router.open(named(false)).await else {
            gate.sessions
                .release(&key, claim.seq, BTreeSet::new(), gate.authority.now());
            let code = unavailable(version);
            refuse(
                stream,
                version,
                refused(code, "the router refused the link"),
            )
            .await;
            return None;
        };
        session_present = opened.session_present && resumed;
        link = Some(Box::new(Link {
            key: opened.key,
            rx: opened.rx,
        }));
    }

    let ack = ConnAck {
        session_present,
        code: ConnectReturnCode::Success,
    };
    let ack_props = (version == Version::V5).then(|| ConnAckProperties {
        max_packet_size: Some(gate.max_packet_size as u32),
        assigned_client_identifier: assigned,
        // No topic-alias maximum is advertised: rumqttd keys aliases by filter, not topic.
        topic_alias_max: None,
        // A shorter expiry than asked is announced (MQTT 5.0 §3.2.2.3.2).
        session_expiry_interval: asked_expiry
            .filter(|asked| *asked != expiry)
            .map(|_| expiry),
        ..ConnAckProperties::default()
    });
    let mut out = BytesMut::new();
    codec::encode(version, Packet::ConnAck(ack, ack_props), &mut out);
    if stream.write_all(&out).await.is_err() {
        if let Some(link) = link {
            gate.router.close(link.key).await;
            if expiry == 0 {
                gate.router.discard(&known.tenant.id, &client_id).await;
            }
        }
        gate.sessions
            .release(&key, claim.seq, BTreeSet::new(), gate.authority.now());
        return None;
    }
    tracing::debug!(%peer, client = %client_id, tenant = %known.tenant.slug, "mqtt: connected");

    let will_delay = will_props
        .as_ref()
        .and_then(|p| p.delay_interval)
        .unwrap_or(0)
        .min(expiry);
    Some(Session {
        version,
        key,
        seq: claim.seq,
        link,
        named_link,
        kept: expiry > 0,
        ended: claim.ended,
        grant: known.clone(),
        // MQTT §3.1.2.10: one and a half times the keep-alive without a packet ends it.
        keep_alive: (connect.keep_alive > 0)
            .then(|| Duration::from_millis(connect.keep_alive as u64 * 1500)),
        will: will.map(Box::new),
        will_delay,
        client_max_packet: props.and_then(|p| p.max_packet_size),
        resumed: session_present,
        lanyard_topics: if session_present {
            claim.topics
        } else {
            BTreeSet::new()
        },
    })
}

/// The refusal for a CONNECT lanyard cannot serve right now.
fn unavailable(version: Version) -> ConnectReturnCode {
    match version {
        Version::V4 => ConnectReturnCode::ServiceUnavailable,
        Version::V5 => ConnectReturnCode::ServerUnavailable,
    }
}

/// Answers a CONNECT with a refusal.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, version: Version, code: ConnectReturnCode) {
    let ack = ConnAck {
        session_present: false,
        code,
    };
    let mut out = BytesMut::new();
    if codec::encode(version, Packet::ConnAck(ack, None), &mut out).is_some() {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The CONNECT handshake; the connection, if it was accepted.
    async fn open(
        (gate, mut stream, peer, permit): (Arc<Gate>, S, SocketAddr, OwnedSemaphorePermit),
    ) -> Option<Self> {
        let mut buf = BytesMut::with_capacity(1024);
        let deadline = Instant::now() + gate.connect_timeout;
        let session = handshake(&gate, &mut stream, &mut buf, deadline, peer).await?;
        Some(Connection {
            gate,
            stream,
            buf,
            out: BytesMut::new(),
            session,
            own: None,
            wake_link: false,
            _permit: permit,
        })
    }

    async fn run(&mut self) -> Outcome {
        // Keep-alive counts packets from the client only; traffic to it does not keep it alive.
        let mut keep_alive = pin!(self.session.keep_alive.map(tokio::time::sleep));
        if self.session.resumed {
            let topics: Vec<String> = self.session.lanyard_topics.iter().cloned().collect();
            for topic in topics {
                self.deliver_current(&topic);
                if self.overflowing() {
                    return Outcome::Overflow;
                }
            }
        }
        loop {
            // Frames already buffered (pipelined after the CONNECT, or read together). Boxed,
            // like every large step, so that a waiting connection's future stays small.
            if !self.buf.is_empty() {
                let unread = self.buf.len();
                if let Some(outcome) = Box::pin(self.process_buffered()).await {
                    return outcome;
                }
                // Keep-alive counts whole control packets (MQTT §3.1.2.10), not bytes: a
                // packet trickled in a byte at a time does not hold the connection open.
                if self.buf.len() < unread
                    && let (Some(sleep), Some(k)) =
                        (keep_alive.as_mut().as_pin_mut(), self.session.keep_alive)
                {
                    sleep.reset(Instant::now() + k);
                }
            }
            if let Err(outcome) = self.flush().await {
                return outcome;
            }
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                // A waiting connection holds no read buffer (see `poll_read_some`).
                self.buf = BytesMut::new();
            }
            // Nothing here may outlive the wait but what it waits on: this is the state an
            // idle connection keeps.
            let answer_router = tokio::select! {
                reason = &mut self.session.ended => {
                    return Outcome::Ended(reason.unwrap_or(EndReason::NotAuthorized));
                }
                read = poll_fn(|cx| poll_read_some(&mut self.stream, &mut self.buf, cx)) => {
                    match read {
                        Ok(n) if n > 0 => false,
                        _ => return Outcome::Lost { keep_alive: false },
                    }
                }
                () = expiry(keep_alive.as_mut()) => return Outcome::Lost { keep_alive: true },
                notification = next_notification(&mut self.session.link) => {
                    let Ok(first) = notification else { return Outcome::RouterGone };
                    if let Some(outcome) = self.forward_all(first) {
                        return outcome;
                    }
                    self.wake_link || self.own.as_ref().is_some_and(|o| !o.to_router.is_empty())
                }
            };
            if answer_router {
                Box::pin(self.answer_router_later()).await;
            }
        }
    }

    /// Passes on a notification and whatever else the router already delivered, without
    /// waiting, up to half of `mqtt.max_queued_bytes` of output.
    fn forward_all(&mut self, first: Option<Notification>) -> Option<Outcome> {
        if let Some(outcome) = self.forward(first) {
            return Some(outcome);
        }
        for _ in 0..WRITE_BATCH {
            // The rest waits in the router until this is written: a slow reader slows its own
            // deliveries down rather than piling them up here.
            if self.out.len() >= self.gate.max_queued_bytes / 2 {
                break;
            }
            let link = self.session.link.as_mut()?;
            match now_or_never(link.rx.next()) {
                Some(Ok(more)) => {
                    if let Some(outcome) = self.forward(more) {
                        return Some(outcome);
                    }
                }
                Some(Err(_)) => return Some(Outcome::RouterGone),
                None => break,
            }
        }
        self.overflowing().then_some(Outcome::Overflow)
    }

    /// Whether the output waiting for the client passed `mqtt.max_queued_bytes`. Checked after
    /// every packet that may add to it, so one read of pipelined requests cannot pile up more
    /// than one answer beyond the limit.
    fn overflowing(&self) -> bool {
        self.out.len() > self.gate.max_queued_bytes
    }

    /// Handles every complete frame in the read buffer.
    async fn process_buffered(&mut self) -> Option<Outcome> {
        loop {
            let frame = match codec::frame(&self.buf, self.gate.max_packet_size) {
                Ok(frame) => frame,
                Err(FrameError::Incomplete) => return None,
                Err(FrameError::Malformed) => {
                    return Some(Outcome::Violation(DisconnectReasonCode::MalformedPacket));
                }
                Err(FrameError::TooLarge { .. }) => {
                    return Some(Outcome::Violation(DisconnectReasonCode::PacketTooLarge));
                }
            };
            if !codec::client_may_send(&frame) || frame.packet_type == codec::CONNECT {
                return Some(Outcome::Violation(DisconnectReasonCode::ProtocolError));
            }
            let (qos, pkid) = if frame.packet_type == codec::PUBLISH {
                codec::publish_qos_pkid(&self.buf, &frame)
            } else {
                (0, 0)
            };
            let Some(packet) = codec::decode(self.session.version, &mut self.buf, &frame) else {
                return Some(Outcome::Violation(DisconnectReasonCode::MalformedPacket));
            };
            if let Some(outcome) = self.incoming(packet, qos, pkid).await {
                return Some(outcome);
            }
            if self.overflowing() {
                return Some(Outcome::Overflow);
            }
        }
    }

    fn own(&mut self) -> &mut OwnAnswers {
        self.own.get_or_insert_default()
    }

    fn identity(&self) -> Identity<'_> {
        let s = &self.session;
        let claims = &s.grant.verified.claims;
        Identity {
            slug: s.grant.tenant.slug.as_str(),
            client_id: &claims.client_id,
            sub: &claims.sub,
            system: claims.system.as_deref(),
            scopes: &s.grant.scopes,
        }
    }

    /// The name under which the router knows a shared subscription (`$share/{group}/{filter}`);
    /// None for any other filter. rumqttd keys a shared group by its name alone, across tenants
    /// and filters, so the router sees a group named after the tenant, the group and the filter:
    /// equal group names of two tenants are two groups (SPEC §7), and so are one tenant's equal
    /// group names on two filters (MQTT 5.0 §4.8.2: a shared subscription is its group and its
    /// filter). The client never sees the name: no packet to it carries a filter.
    fn router_filter(&self, path: &str) -> Option<String> {
        let filter = TopicFilter::parse(path).ok()?;
        let group = filter.share_group()?;
        let mut named = Vec::with_capacity(group.len() + filter.filter().len() + 1);
        named.extend_from_slice(group.as_bytes());
        named.push(0);
        named.extend_from_slice(filter.filter().as_bytes());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &named);
        let hash: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tenant = &self.session.grant.tenant.id;
        Some(format!("$share/{tenant}:{hash}/{}", filter.filter()))
    }

    /// The router link's key, opening the link first if the session has none yet.
    async fn link(&mut self) -> Option<u64> {
        if self.session.link.is_none() {
            let opened = self.gate.router.open(LinkSession::Clean).await?;
            self.session.link = Some(Box::new(Link {
                key: opened.key,
                rx: opened.rx,
            }));
        }
        self.session.link.as_ref().map(|l| l.key)
    }

    /// Relays a packet that answers the router: without a link, there is nothing to answer.
    async fn answer_router(&self, packet: Packet) {
        if let Some(link) = &self.session.link {
            self.gate.router.send(link.key, packet).await;
        }
    }

    /// One packet from the client.
    async fn incoming(&mut self, packet: Packet, qos: u8, pkid: u16) -> Option<Outcome> {
        let v5 = self.session.version == Version::V5;
        match packet {
            Packet::Publish(publish, props) => {
                if props.as_ref().is_some_and(|p| p.topic_alias.is_some()) {
                    // No alias maximum was advertised, so a client may not use aliases.
                    return Some(Outcome::Violation(DisconnectReasonCode::TopicAliasInvalid));
                }
                let Some(topic) = std::str::from_utf8(&publish.topic)
                    .ok()
                    .and_then(|t| TopicName::parse(t).ok())
                else {
                    return Some(Outcome::Violation(DisconnectReasonCode::TopicNameInvalid));
                };
                if self.gate.permissions.may_publish(&self.identity(), &topic) {
                    let Some(link) = self.link().await else {
                        return Some(Outcome::RouterGone);
                    };
                    self.gate
                        .router
                        .send(link, Packet::Publish(publish, props))
                        .await;
                    return None;
                }
                tracing::debug!(client = %self.session.key, %topic, "mqtt: publish refused");
                match qos {
                    // 3.1.1 has no refusal for a publish: it is acknowledged and dropped.
                    1 => {
                        let reason = if v5 {
                            PubAckReason::NotAuthorized
                        } else {
                            PubAckReason::Success
                        };
                        self.write(Packet::PubAck(PubAck { pkid, reason }, None));
                    }
                    2 => {
                        let reason = if v5 {
                            PubRecReason::NotAuthorized
                        } else {
                            PubRecReason::Success
                        };
                        if !v5 {
                            self.own().refused_qos2.insert(pkid);
                        }
                        self.write(Packet::PubRec(PubRec { pkid, reason }, None));
                    }
                    _ => {}
                }
            }
            Packet::Subscribe(subscribe, props) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut allowed = Vec::new();
                // lanyard's topics this packet subscribes to anew (the router replays those)
                // and again (the gate delivers those): each once per packet, however often the
                // packet names it.
                let mut fresh = BTreeSet::new();
                let mut again = BTreeSet::new();
                for filter in subscribe.filters {
                    let refusal = match TopicFilter::parse(&filter.path) {
                        Err(_) if v5 => Some(SubscribeReasonCode::TopicFilterInvalid),
                        Ok(f) if self.gate.permissions.may_subscribe(&self.identity(), &f) => None,
                        _ if v5 => Some(SubscribeReasonCode::NotAuthorized),
                        _ => Some(SubscribeReasonCode::Failure),
                    };
                    if refusal.is_none() {
                        if self.gate.permissions.is_reserved(&filter.path)
                            && TopicName::parse(&filter.path).is_ok()
                        {
                            if self.session.lanyard_topics.insert(filter.path.clone()) {
                                fresh.insert(filter.path.clone());
                            } else if !fresh.contains(&filter.path) {
                                // Subscribed already: the router will not replay it (MQTT
                                // §3.3.1.3 asks for the retained message on every subscribe).
                                again.insert(filter.path.clone());
                            }
                        }
                        let mut filter = filter;
                        if let Some(path) = self.router_filter(&filter.path) {
                            filter.path = path;
                        }
                        allowed.push(filter);
                    } else {
                        tracing::debug!(client = %self.session.key, filter = %filter.path, "mqtt: subscription refused");
                    }
                    codes.push(refusal);
                }
                for topic in &again {
                    self.deliver_current(topic);
                    if self.overflowing() {
                        return Some(Outcome::Overflow);
                    }
                }
                let pkid = subscribe.pkid;
                if allowed.is_empty() {
                    let return_codes = codes.into_iter().flatten().collect();
                    self.write(Packet::SubAck(SubAck { pkid, return_codes }, None));
                } else {
                    if codes.iter().any(Option::is_some) {
                        self.own().subscriptions.insert(pkid, codes);
                    }
                    let subscribe = Subscribe {
                        pkid,
                        filters: allowed,
                    };
                    let Some(link) = self.link().await else {
                        return Some(Outcome::RouterGone);
                    };
                    self.gate
                        .router
                        .send(link, Packet::Subscribe(subscribe, props))
                        .await;
                }
            }
            Packet::Unsubscribe(mut unsubscribe, props) => {
                // The router acknowledges only filters it held, once per filter: the gate
                // answers for the whole packet instead.
                let pkid = unsubscribe.pkid;
                let reasons = vec![UnsubAckReason::Success; unsubscribe.filters.len()];
                for filter in &mut unsubscribe.filters {
                    self.session.lanyard_topics.remove(filter);
                    if let Some(path) = self.router_filter(filter) {
                        *filter = path;
                    }
                }
                self.answer_router(Packet::Unsubscribe(unsubscribe, props))
                    .await;
                self.write(Packet::UnsubAck(UnsubAck { pkid, reasons }, None));
            }
            Packet::PubAck(ack, _) => self.answer_router(Packet::PubAck(ack, None)).await,
            Packet::PubRec(rec, _) => self.answer_router(Packet::PubRec(rec, None)).await,
            Packet::PubComp(comp, _) => self.answer_router(Packet::PubComp(comp, None)).await,
            Packet::PubRel(rel, _) => {
                if self
                    .own
                    .as_mut()
                    .is_some_and(|o| o.refused_qos2.remove(&rel.pkid))
                {
                    let comp = PubComp {
                        pkid: rel.pkid,
                        reason: PubCompReason::Success,
                    };
                    self.write(Packet::PubComp(comp, None));
                } else {
                    self.answer_router(Packet::PubRel(rel, None)).await;
                }
            }
            Packet::PingReq(_) => self.write(Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect, _) => {
                let will =
                    disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
                return Some(Outcome::Disconnected { will });
            }
            _ => return Some(Outcome::Violation(DisconnectReasonCode::ProtocolError)),
        }
        None
    }

    /// Sends the answers to the router that forwarding decided on.
    async fn answer_router_later(&mut self) {
        let to_router = self.own.as_mut().map(|o| std::mem::take(&mut o.to_router));
        for packet in to_router.unwrap_or_default() {
            self.answer_router(packet).await;
        }
        if std::mem::take(&mut self.wake_link)
            && let Some(link) = self.session.link.as_mut()
        {
            let _ = link.rx.wake().await;
        }
    }

    /// One notification from the router, passed on to the client.
    fn forward(&mut self, notification: Option<Notification>) -> Option<Outcome> {
        let packet = match notification? {
            Notification::Unschedule => {
                self.wake_link = true;
                return None;
            }
            other => Option::<Packet>::from(other)?,
        };
        match packet {
            Packet::SubAck(mut ack, props) => {
                if let Some(codes) = self
                    .own
                    .as_mut()
                    .and_then(|o| o.subscriptions.remove(&ack.pkid))
                {
                    let mut routed = ack.return_codes.into_iter();
                    ack.return_codes = codes
                        .into_iter()
                        .map(|c| {
                            c.or_else(|| routed.next())
                                .unwrap_or(SubscribeReasonCode::Unspecified)
                        })
                        .collect();
                }
                self.write(Packet::SubAck(ack, props));
            }
            // Answered by the gate itself.
            Packet::UnsubAck(..) | Packet::PingResp(_) | Packet::ConnAck(..) => {}
            Packet::PubRel(rel, props) => {
                if self
                    .own
                    .as_mut()
                    .is_some_and(|o| o.dropped_qos2.remove(&rel.pkid))
                {
                    let comp = PubComp {
                        pkid: rel.pkid,
                        reason: PubCompReason::Success,
                    };
                    self.own().to_router.push(Packet::PubComp(comp, None));
                } else {
                    self.write(Packet::PubRel(rel, props));
                }
            }
            Packet::Publish(publish, props) => self.forward_publish(publish, props),
            Packet::Disconnect(..) => return Some(Outcome::RouterGone),
            other => self.write(other),
        }
        None
    }

    /// A message for the client. One larger than the client's Maximum Packet Size is dropped
    /// and acknowledged to the router as if delivered (MQTT 5.0 §3.1.2.11.4).
    fn forward_publish(
        &mut self,
        publish: Publish,
        props: Option<rumqttd::protocol::PublishProperties>,
    ) {
        let start = self.out.len();
        if codec::encode(
            self.session.version,
            Packet::Publish(publish, props),
            &mut self.out,
        )
        .is_none()
        {
            self.out.truncate(start);
            return;
        }
        let Some(max) = self.session.client_max_packet else {
            return;
        };
        let max = max as usize;
        if self.out.len() - start <= max {
            return;
        }
        let encoded = self.out.split_off(start);
        tracing::warn!(client = %self.session.key, size = encoded.len(), max, "mqtt: a message larger than the client's Maximum Packet Size was not sent");
        let Ok(frame) = codec::frame(&encoded, usize::MAX) else {
            return;
        };
        let (qos, pkid) = codec::publish_qos_pkid(&encoded, &frame);
        match qos {
            1 => {
                let ack = PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                };
                self.own().to_router.push(Packet::PubAck(ack, None));
            }
            2 => {
                self.own().dropped_qos2.insert(pkid);
                let rec = PubRec {
                    pkid,
                    reason: PubRecReason::Success,
                };
                self.own().to_router.push(Packet::PubRec(rec, None));
            }
            _ => {}
        }
    }

    /// Sends lanyard's current retained message of `topic`, if it has one, as a retained
    /// QoS 0 message.
    fn deliver_current(&mut self, topic: &str) {
        if let Some(payload) = self.gate.current_retained(topic) {
            let publish = Publish::new(Bytes::copy_from_slice(topic.as_bytes()), payload, true);
            let start = self.out.len();
            self.write(Packet::Publish(publish, None));
            if self
                .session
                .client_max_packet
                .is_some_and(|max| self.out.len() - start > max as usize)
            {
                self.out.truncate(start);
            }
        }
    }

    fn write(&mut self, packet: Packet) {
        codec::encode(self.session.version, packet, &mut self.out);
    }

    /// 5.0 DISCONNECT with a reason code and empty properties (§3.14). rumqttd's encoder
    /// writes a remaining length that does not match what it writes, so it is not used here.
    fn write_disconnect(&mut self, reason: DisconnectReasonCode) {
        self.out
            .extend_from_slice(&[0xe0, 0x02, codec::disconnect_reason(reason), 0x00]);
    }

    /// Writes the output waiting for the client. A client that does not read keeps this
    /// waiting, so lanyard's ending the session (revocation, expiry) is heard here too.
    async fn flush(&mut self) -> Result<(), Outcome> {
        while !self.out.is_empty() {
            tokio::select! {
                written = self.stream.write(&self.out) => match written {
                    Ok(n) if n > 0 => self.out.advance(n),
                    _ => return Err(Outcome::Lost { keep_alive: false }),
                },
                reason = &mut self.session.ended => {
                    return Err(Outcome::Ended(reason.unwrap_or(EndReason::NotAuthorized)));
                }
            }
        }
        if self.out.capacity() > KEEP_BUFFER {
            self.out = BytesMut::new();
        }
        tokio::select! {
            flushed = self.stream.flush() => flushed.map_err(|_| Outcome::Lost { keep_alive: false }),
            reason = &mut self.session.ended => {
                Err(Outcome::Ended(reason.unwrap_or(EndReason::NotAuthorized)))
            }
        }
    }

    /// The last write: what is waiting, the goodbye, and the close, within `GOODBYE_TIMEOUT`.
    async fn write_goodbye(&mut self) {
        let goodbye = async {
            self.stream.write_all(&self.out).await?;
            self.stream.shutdown().await
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
    }

    /// Says goodbye (5.0: DISCONNECT with a reason), releases the router link and the session,
    /// and publishes the will where MQTT says so.
    async fn finish(mut self, outcome: Outcome) {
        let reason = match outcome {
            Outcome::Violation(code) => Some(code),
            Outcome::Lost { keep_alive: true } => Some(DisconnectReasonCode::KeepAliveTimeout),
            Outcome::Ended(EndReason::NotAuthorized) => Some(DisconnectReasonCode::NotAuthorized),
            Outcome::Ended(EndReason::Expired) => Some(DisconnectReasonCode::MaximumConnectTime),
            Outcome::Ended(EndReason::TakenOver) => Some(DisconnectReasonCode::SessionTakenOver),
            Outcome::Ended(EndReason::ShuttingDown) => {
                Some(DisconnectReasonCode::ServerShuttingDown)
            }
            Outcome::RouterGone => Some(DisconnectReasonCode::UnspecifiedError),
            Outcome::Overflow => Some(DisconnectReasonCode::QuotaExceeded),
            Outcome::Disconnected { .. } | Outcome::Lost { keep_alive: false } => None,
        };
        if outcome == Outcome::Overflow {
            // What did not fit is not sent: whole packets only, since the output was written
            // out completely before the last packet was handled.
            self.out = BytesMut::new();
        }
        if let (Version::V5, Some(reason)) = (self.session.version, reason) {
            self.write_disconnect(reason);
        }
        self.write_goodbye().await;
        let taken_over = outcome == Outcome::Ended(EndReason::TakenOver);
        // A session whose permission was withdrawn is not kept: what it held is freed.
        let withdrawn = outcome == Outcome::Ended(EndReason::NotAuthorized);
        if let Some(link) = &self.session.link {
            let key = &self.session.key;
            if taken_over && self.session.named_link {
                // The new connection's link, under the same name, replaced this one, or will;
                // a DISCONNECT would reach it.
                self.gate.router.forget(link.key).await;
                if !self.session.kept {
                    // Unless it did take the name (the feeder knows), the router still holds
                    // this session, which does not outlive its connection.
                    self.gate
                        .router
                        .discard(key.tenant_id(), key.client_id())
                        .await;
                }
            } else {
                self.gate.router.close(link.key).await;
                if self.session.named_link && (!self.session.kept || withdrawn) {
                    self.gate
                        .router
                        .discard(key.tenant_id(), key.client_id())
                        .await;
                }
            }
        }
        let gate = self.gate.clone();
        let session = self.session;
        // A session whose permission was withdrawn leaves no will behind.
        let will = match outcome {
            Outcome::Disconnected { will } => will,
            Outcome::Ended(EndReason::NotAuthorized) => false,
            _ => true,
        };
        let now = gate.authority.now();
        gate.sessions
            .release(&session.key, session.seq, session.lanyard_topics, now);
        if withdrawn {
            gate.sessions.forget_stored(&session.key);
        }
        if let (true, Some(will)) = (will, session.will) {
            let publish = Publish::new(will.topic, will.message, will.retain);
            if session.will_delay == 0 {
                gate.publish(publish).await;
            } else {
                let delay = Duration::from_secs(session.will_delay as u64);
                let key = session.key.clone();
                let sender = gate.clone();
                let grant = session.grant.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    sender.publish_delayed_will(&grant, publish).await;
                    sender.sessions.will_sent(&key);
                });
                gate.sessions
                    .set_pending_will(&session.key, task.abort_handle());
            }
        }
    }
}

/// Reads what the client sent into `buf`; `Ok(0)` when the client closed. The bytes land on
/// the stack first and are copied into `buf`, so that a waiting connection needs no buffer of
/// its own: `buf` is empty, and unallocated, between packets.
fn poll_read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read = ReadBuf::uninit(&mut scratch);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

/// Completes when the keep-alive runs out; never without a keep-alive.
async fn expiry(sleep: Pin<&mut Option<tokio::time::Sleep>>) {
    match sleep.as_pin_mut() {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// The router dropped the link.
struct RouterGone;

/// The next notification on the session's link; without a link, none ever comes.
async fn next_notification(
    link: &mut Option<Box<Link>>,
) -> Result<Option<Notification>, RouterGone> {
    match link {
        // Boxed, and the error dropped here: both are large, and a waiting connection's future
        // would carry their size.
        Some(link) => Box::pin(link.rx.next()).await.map_err(|_| RouterGone),
        None => std::future::pending().await,
    }
}

/// Polls a future once: its value if it is ready now.
fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns.
    fn future_size<A, B, C, D, R, F: FnOnce(A, B, C, D) -> R>(_: F) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every idle connection is one `serve` future: what it keeps while waiting is what
    /// thousands of idle devices cost (tokio adds about 100 bytes and rounds up to 128). The
    /// CONNECT, the packet handling and the goodbye are boxed and must stay so.
    #[test]
    fn a_waiting_connection_stays_small() {
        let size = future_size(serve::<tokio::net::TcpStream>);
        assert!(size <= 640, "a connection's future is {size} bytes");
    }
}
