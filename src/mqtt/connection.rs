//! One client connection through the gate, from the CONNECT to the goodbye: the loop that waits
//! on the client, the router and lanyard at once, and what happens when the session ends (the
//! DISCONNECT with its reason on 5.0 §3.14, the router link released or discarded, the will
//! published, after its delay on 5.0, where MQTT says so). Its rooms:
//! - [`super::handshake`]: the CONNECT, answered with a CONNACK, refusals included;
//! - [`super::inbound`]: each packet from the client, checked against the permissions;
//! - [`super::outbound`]: what goes back to the client, bounded by `mqtt.max_queued_bytes`.
//!
//! Keep-alive (MQTT §3.1.2.10) counts whole packets from the client; a connection that waits
//! holds no read buffer, and its future stays small (see the test below): thousands of idle
//! devices are thousands of these.
//!
//! A clean session gets its router link when it first subscribes or publishes: a connection
//! that only authenticates, or idles, costs the router nothing. A session the router must resume
//! or keep (Clean Start 0, or a Session Expiry Interval) opens its link during the CONNECT,
//! under the client's own name. A session that does not outlive its connection (5.0 Session
//! Expiry 0), or whose permission was withdrawn, is discarded from the router when it closes.

use std::future::{Future, poll_fn};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::Notification;
use rumqttd::protocol::DisconnectReasonCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::Gate;
use super::codec::Version;
use super::handshake::{self, Exit, Link, Refusal, Session};
use super::outbound::OwnAnswers;
use super::sessions::EndReason;

/// The most read from the socket at once.
const READ_CHUNK: usize = 8 * 1024;
/// How a session ended, which decides the goodbye and the will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
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

pub(super) struct Connection<S> {
    pub(super) gate: Arc<Gate>,
    pub(super) stream: S,
    pub(super) buf: BytesMut,
    pub(super) out: BytesMut,
    pub(super) session: Session,
    /// Packet ids the gate answers for itself; allocated the first time there is one.
    pub(super) own: Option<Box<OwnAnswers>>,
    /// The router paused the link until it is told the link is ready again.
    pub(super) wake_link: bool,
    /// The client's QoS 1 and 2 publishes not yet acknowledged (5.0 flow control, §4.9).
    pub(super) unacknowledged: u16,
    /// The router holds this publisher back, since when: nothing is read from the client until
    /// it is released (a subscriber of what it publishes is catching up).
    pub(super) held: Option<Instant>,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The CONNECT handshake; the connection, if it was accepted. A refusal is answered here.
    async fn open(
        (gate, mut stream, peer, permit): (Arc<Gate>, S, SocketAddr, OwnedSemaphorePermit),
    ) -> Option<Self> {
        let mut buf = BytesMut::with_capacity(1024);
        let deadline = Instant::now() + gate.connect_timeout;
        let session = match handshake::handshake(&gate, &mut stream, &mut buf, deadline).await {
            Ok(session) => {
                gate.metrics.mqtt_connect("success");
                session
            }
            Err(Exit::Closed) => {
                gate.metrics.mqtt_connect("closed");
                return None;
            }
            Err(Exit::Refused {
                version,
                client_id,
                refusal,
            }) => {
                gate.metrics.mqtt_connect(refusal.outcome(version));
                if let Refusal::Unavailable(cause) = &refusal {
                    cause.log("mqtt");
                }
                tracing::info!(%peer, client = %client_id, "mqtt: CONNECT refused: {refusal}");
                handshake::answer(&mut stream, version, &refusal).await;
                return None;
            }
        };
        Some(Connection {
            gate,
            stream,
            buf,
            out: BytesMut::new(),
            session,
            own: None,
            wake_link: false,
            unacknowledged: 0,
            held: None,
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
            let held = self.held.is_some();
            let answer_router = tokio::select! {
                reason = &mut self.session.ended => {
                    return Outcome::Ended(reason.unwrap_or(EndReason::NotAuthorized));
                }
                read = poll_fn(|cx| poll_read_some(&mut self.stream, &mut self.buf, cx)), if !held => {
                    match read {
                        Ok(n) if n > 0 => false,
                        _ => return Outcome::Lost { keep_alive: false },
                    }
                }
                // A held client's packets wait unread: its keep-alive counts from its release.
                () = expiry(keep_alive.as_mut()), if !held => return Outcome::Lost { keep_alive: true },
                notification = next_notification(&mut self.session.link) => {
                    let Ok(first) = notification else { return Outcome::RouterGone };
                    if let Some(outcome) = self.forward_all(first) {
                        return outcome;
                    }
                    self.wake_link || self.own.as_ref().is_some_and(|o| !o.to_router.is_empty())
                }
            };
            if held
                && self.held.is_none()
                && let (Some(sleep), Some(k)) =
                    (keep_alive.as_mut().as_pin_mut(), self.session.keep_alive)
            {
                sleep.reset(Instant::now() + k);
            }
            if answer_router {
                Box::pin(self.answer_router_later()).await;
            }
        }
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
        gate.sessions.release(
            &session.key,
            session.seq,
            (session.lanyard_topics, session.filters),
            now,
        );
        if withdrawn {
            gate.sessions.forget_stored(&session.key);
        }
        if let (true, Some(will)) = (will, session.will) {
            let will = *will;
            if session.will_delay == 0 {
                gate.publish_with(will.publish, will.properties).await;
            } else {
                let delay = Duration::from_secs(session.will_delay as u64);
                let key = session.key.clone();
                let sender = gate.clone();
                let grant = session.grant.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    sender.publish_delayed_will(&grant, will).await;
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
pub(super) fn poll_read_some<S: AsyncRead + Unpin>(
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
