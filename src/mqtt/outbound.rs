//! The session's outbound half: what the router delivers, passed on to the client — SUBACKs
//! merged with the gate's own refusals, messages larger than the client's Maximum Packet Size
//! dropped and acknowledged for it (MQTT 5.0 §3.1.2.11.4), lanyard's current retained messages —
//! and the output bounded by `mqtt.max_queued_bytes` (SPEC §7): deliveries wait at half of it
//! until the client reads, and a client whose output passes it is ended.

use std::collections::{HashMap, HashSet};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttd::Notification;
use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRecReason, Publish, SubscribeReasonCode,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::codec;
use super::connection::{Connection, Outcome};
use super::sessions::EndReason;

/// Router notifications written per flush.
const WRITE_BATCH: usize = 256;
/// A write buffer grown beyond this by one large message is let go once it is empty again: a
/// device that received a long token list once should not hold its size while it idles.
const KEEP_BUFFER: usize = 16 * 1024;
/// How long the goodbye (5.0 DISCONNECT with its reason) may take to write: a client that does
/// not read is closed without it.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of a client's input is read ahead, beyond one packet of `mqtt.max_packet_size`,
/// while its output waits to be written.
const READ_AHEAD: usize = 64 * 1024;
/// The longest the gate keeps a held publisher unread while it writes to it: the router holds
/// a publisher for at most 2 s per subscriber at risk.
const HOLD_LIMIT: Duration = Duration::from_secs(3);

/// What a flush made progress with.
enum Progress {
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
}

/// Packet ids in flight whose answers the gate gives or completes itself.
#[derive(Default)]
pub(super) struct OwnAnswers {
    /// SUBSCRIBE packet ids relayed with some filters refused: each position's refusal, or None
    /// where the router's answer goes.
    pub(super) subscriptions: HashMap<u16, Vec<Option<SubscribeReasonCode>>>,
    /// QoS 2 publishes refused at PUBREC: their PUBREL is answered here.
    pub(super) refused_qos2: HashSet<u16>,
    /// QoS 2 messages too large for the client, acknowledged to the router on its behalf.
    pub(super) dropped_qos2: HashSet<u16>,
    /// Answers to the router decided while forwarding its notifications, sent after them.
    pub(super) to_router: Vec<Packet>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Passes on a notification and whatever else the router already delivered, without
    /// waiting, up to half of `mqtt.max_queued_bytes` of output.
    /// The messages among them are counted once for all (`lanyard_mqtt_messages_delivered_total`).
    pub(super) fn forward_all(&mut self, first: Option<Notification>) -> Option<Outcome> {
        let mut delivered = 0;
        let outcome = self.forward_batch(first, &mut delivered);
        self.gate.metrics.mqtt_delivered(delivered);
        outcome
    }

    fn forward_batch(
        &mut self,
        first: Option<Notification>,
        delivered: &mut u64,
    ) -> Option<Outcome> {
        if let Some(outcome) = self.forward(first, delivered) {
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
                    if let Some(outcome) = self.forward(more, delivered) {
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
    pub(super) fn overflowing(&self) -> bool {
        self.out.len() > self.gate.max_queued_bytes
    }

    pub(super) fn own(&mut self) -> &mut OwnAnswers {
        self.own.get_or_insert_default()
    }

    /// Sends the answers to the router that forwarding decided on.
    pub(super) async fn answer_router_later(&mut self) {
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

    /// One notification from the router, passed on to the client; a message sent adds one to
    /// `delivered`.
    pub(super) fn forward(
        &mut self,
        notification: Option<Notification>,
        delivered: &mut u64,
    ) -> Option<Outcome> {
        let packet = match notification? {
            Notification::Unschedule => {
                self.wake_link = true;
                return None;
            }
            // A subscriber of this client's messages is about to lose some: the client is
            // not read from until it catches up (TCP back-pressure).
            Notification::Hold => {
                self.held.get_or_insert_with(Instant::now);
                return None;
            }
            Notification::Release => {
                self.held = None;
                return None;
            }
            Notification::Dropped(count) => {
                self.gate.metrics.mqtt_dropped(count);
                tracing::warn!(client = %self.session.key, count, "mqtt: messages for a client that read too slowly were dropped");
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
            Packet::Publish(publish, props) => {
                if self.forward_publish(publish, props) {
                    *delivered += 1;
                }
            }
            // The router ends a link for what it finds wrong (a client's QoS 2 publishes
            // unreleased past the Receive Maximum, a malformed property): the client hears why.
            Packet::Disconnect(disconnect, _) => {
                return Some(Outcome::Violation(disconnect.reason_code));
            }
            // The end of a QoS 1 or 2 flow the client began: its quota is restored (§4.9).
            ack @ (Packet::PubAck(..) | Packet::PubComp(..)) => {
                self.unacknowledged = self.unacknowledged.saturating_sub(1);
                self.write(ack);
            }
            other => self.write(other),
        }
        None
    }

    /// A message for the client; whether it is sent. One larger than the client's Maximum
    /// Packet Size is dropped and acknowledged to the router as if delivered (MQTT 5.0
    /// §3.1.2.11.4).
    pub(super) fn forward_publish(
        &mut self,
        publish: Publish,
        props: Option<rumqttd::protocol::PublishProperties>,
    ) -> bool {
        let start = self.out.len();
        if codec::encode(
            self.session.version,
            Packet::Publish(publish, props),
            &mut self.out,
        )
        .is_none()
        {
            self.out.truncate(start);
            return false;
        }
        let Some(max) = self.session.client_max_packet else {
            return true;
        };
        let max = max as usize;
        if self.out.len() - start <= max {
            return true;
        }
        let encoded = self.out.split_off(start);
        tracing::warn!(client = %self.session.key, size = encoded.len(), max, "mqtt: a message larger than the client's Maximum Packet Size was not sent");
        let Ok(frame) = codec::frame(&encoded, usize::MAX) else {
            return false;
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
        false
    }

    /// Sends lanyard's current retained message of `topic`, if it has one, as a retained
    /// QoS 0 message.
    pub(super) fn deliver_current(&mut self, topic: &str) {
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
            } else {
                self.gate.metrics.mqtt_delivered(1);
            }
        }
    }

    pub(super) fn write(&mut self, packet: Packet) {
        codec::encode(self.session.version, packet, &mut self.out);
    }

    /// 5.0 DISCONNECT with a reason code and empty properties (§3.14). rumqttd's encoder
    /// writes a remaining length that does not match what it writes, so it is not used here.
    pub(super) fn write_disconnect(&mut self, reason: DisconnectReasonCode) {
        self.out
            .extend_from_slice(&[0xe0, 0x02, codec::disconnect_reason(reason), 0x00]);
    }

    /// Writes the output waiting for the client. A client that does not read keeps this
    /// waiting, so lanyard's ending the session (revocation, expiry) is heard here too. Meanwhile
    /// the client's packets are read ahead (up to a packet and [`READ_AHEAD`], handled
    /// afterwards): a client that reads only once its own write went through would otherwise
    /// wait on lanyard while lanyard waits on it. A held publisher is not read from, for at most [`HOLD_LIMIT`] here,
    /// where its release cannot be heard.
    pub(super) async fn flush(&mut self) -> Result<(), Outcome> {
        // Boxed, and only while held: a waiting connection carries no timer.
        let mut hold_ends = self
            .held
            .map(|since| Box::pin(tokio::time::sleep_until(since + HOLD_LIMIT)));
        while !self.out.is_empty() {
            let read_ahead =
                hold_ends.is_none() && self.buf.len() < self.gate.max_packet_size + READ_AHEAD;
            let (stream, out, buf) = (&mut self.stream, &self.out, &mut self.buf);
            let progress = poll_fn(|cx| {
                if let Poll::Ready(written) = Pin::new(&mut *stream).poll_write(cx, out) {
                    return Poll::Ready(Progress::Wrote(written));
                }
                if read_ahead
                    && let Poll::Ready(read) = super::connection::poll_read_some(stream, buf, cx)
                {
                    return Poll::Ready(Progress::Read(read));
                }
                Poll::Pending
            });
            tokio::select! {
                progress = progress => match progress {
                    Progress::Wrote(Ok(n)) if n > 0 => self.out.advance(n),
                    Progress::Read(Ok(n)) if n > 0 => {}
                    _ => return Err(Outcome::Lost { keep_alive: false }),
                },
                reason = &mut self.session.ended => {
                    return Err(Outcome::Ended(reason.unwrap_or(EndReason::NotAuthorized)));
                }
                () = async { hold_ends.as_mut().expect("held").await }, if hold_ends.is_some() => {
                    // The router releases within its own limit; reading resumes regardless.
                    self.held = None;
                    hold_ends = None;
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
    pub(super) async fn write_goodbye(&mut self) {
        let goodbye = async {
            self.stream.write_all(&self.out).await?;
            self.stream.shutdown().await
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
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
