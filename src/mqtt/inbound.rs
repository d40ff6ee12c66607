//! The session's inbound half: each packet from the client, checked against the permissions
//! before anything reaches the router (SPEC §4). A refused publish reaches no one (5.0: PUBACK or
//! PUBREC `0x87`; 3.1.1 has no refusal, so it is acknowledged and dropped); a refused filter gets
//! its failure code in the SUBACK (merged with the router's answers on the way out); shared
//! subscriptions are renamed per tenant and filter; retained messages are sent as the
//! subscription's Retain Handling says (MQTT 5.0 §3.8.3.1), once per SUBSCRIBE packet: by the
//! router, but lanyard's own on a re-subscribe, which the gate writes into the output
//! `mqtt.max_queued_bytes` bounds; a 5.0 client's QoS 1 and 2 publishes are held to the
//! Receive Maximum the CONNACK advertised. An AUTH re-authenticates a 5.0 session that
//! authenticated with method `lanyard-jwt` (SPEC §10, [`Connection::reauthenticate`]).

use std::collections::BTreeSet;

use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRecReason, RetainForwardRule, SubAck, Subscribe, SubscribeReasonCode, UnsubAck,
    UnsubAckReason, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{self, FrameError, Version};
use super::connection::{Connection, Outcome};
use super::handshake::{Link, RECEIVE_MAXIMUM};
use super::router::LinkSession;
use crate::authority::TokenRejected;
use crate::domain::acl::Identity;
use crate::domain::topic::{TopicFilter, TopicName};

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Handles every complete frame in the read buffer.
    pub(super) async fn process_buffered(&mut self) -> Option<Outcome> {
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
            if frame.packet_type == codec::AUTH {
                let packet = self.buf.split_to(frame.len);
                if let Some(outcome) = Box::pin(self.reauthenticate(&packet[frame.body..])).await {
                    return Some(outcome);
                }
                continue;
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

    pub(super) fn identity(&self) -> Identity<'_> {
        self.session.grant.identity()
    }

    /// The name under which the router knows a shared subscription (`$share/{group}/{filter}`);
    /// None for any other filter. rumqttd keys a shared group by its name alone, across tenants
    /// and filters, so the router sees a group named after the tenant, the group and the filter:
    /// equal group names of two tenants are two groups (SPEC §7), and so are one tenant's equal
    /// group names on two filters (MQTT 5.0 §4.8.2: a shared subscription is its group and its
    /// filter). The client never sees the name: no packet to it carries a filter.
    pub(super) fn router_filter(&self, path: &str) -> Option<String> {
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
    pub(super) async fn link(&mut self) -> Option<u64> {
        if self.session.link.is_none() {
            let receive_maximum = self.session.receive_maximum;
            let opened = self
                .gate
                .router
                .open(LinkSession::Clean { receive_maximum })
                .await?;
            self.session.link = Some(Box::new(Link {
                key: opened.key,
                rx: opened.rx,
            }));
        }
        self.session.link.as_ref().map(|l| l.key)
    }

    /// Relays a packet that answers the router: without a link, there is nothing to answer.
    pub(super) async fn answer_router(&self, packet: Packet) {
        if let Some(link) = &self.session.link {
            self.gate.router.send(link.key, packet).await;
        }
    }

    /// One packet from the client.
    pub(super) async fn incoming(&mut self, packet: Packet, qos: u8, pkid: u16) -> Option<Outcome> {
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
                let allowed = self.gate.permissions.may_publish(&self.identity(), &topic);
                self.gate.metrics.mqtt_received(allowed);
                if allowed {
                    // Flow control (MQTT 5.0 §4.9): no more unacknowledged QoS 1 and 2
                    // publishes than the CONNACK's Receive Maximum.
                    if qos > 0 && v5 {
                        self.unacknowledged += 1;
                        if self.unacknowledged > RECEIVE_MAXIMUM {
                            return Some(Outcome::Violation(
                                DisconnectReasonCode::ReceiveMaximumExceeded,
                            ));
                        }
                    }
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
                        // A 5.0 PUBREC 0x87 ends the flow (§4.3.3), but clients such as paho
                        // send the PUBREL anyway: it is answered here, or the router, which
                        // never saw the message, would end the connection.
                        self.own().refused_qos2.insert(pkid);
                        self.write(Packet::PubRec(PubRec { pkid, reason }, None));
                    }
                    _ => {}
                }
            }
            Packet::Subscribe(subscribe, props) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut allowed = Vec::new();
                // lanyard's topics this packet subscribes to anew (the router replays those)
                // and again with Retain Handling 0 (the gate delivers those, into the output
                // `mqtt.max_queued_bytes` bounds): each once per packet, however often the
                // packet names it.
                let mut fresh = BTreeSet::new();
                let mut again = BTreeSet::new();
                for filter in subscribe.filters {
                    // No Local on a shared subscription is a protocol error ([MQTT-3.8.3-4]).
                    if filter.nolocal && filter.path.starts_with("$share/") {
                        return Some(Outcome::Violation(DisconnectReasonCode::ProtocolError));
                    }
                    let refusal = match TopicFilter::parse(&filter.path) {
                        Err(_) if v5 => Some(SubscribeReasonCode::TopicFilterInvalid),
                        Ok(f) if self.gate.permissions.may_subscribe(&self.identity(), &f) => None,
                        _ if v5 => Some(SubscribeReasonCode::NotAuthorized),
                        _ => Some(SubscribeReasonCode::Failure),
                    };
                    if refusal.is_none() {
                        if let Some(filters) = &mut self.session.filters {
                            filters.insert(filter.path.clone());
                        }
                        let mut filter = filter;
                        if self.gate.permissions.is_reserved(&filter.path)
                            && TopicName::parse(&filter.path).is_ok()
                        {
                            let new = self.session.lanyard_topics.insert(filter.path.clone());
                            if new {
                                fresh.insert(filter.path.clone());
                            }
                            if filter.retain_forward_rule == RetainForwardRule::OnEverySubscribe {
                                if !new && !fresh.contains(&filter.path) {
                                    again.insert(filter.path.clone());
                                }
                                filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                            }
                        }
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
                    if let Some(filters) = &mut self.session.filters {
                        filters.remove(filter);
                    }
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
                    // 3.1.1 completes the flow it acknowledged; 5.0 says the refused packet
                    // id is not in flight (§3.7.2.1).
                    let reason = if v5 {
                        PubCompReason::PacketIdentifierNotFound
                    } else {
                        PubCompReason::Success
                    };
                    let comp = PubComp {
                        pkid: rel.pkid,
                        reason,
                    };
                    self.write(Packet::PubComp(comp, None));
                } else if self.session.link.is_none() {
                    // Nothing was ever held for this session: no id is in flight (§4.3.3).
                    let comp = PubComp {
                        pkid: rel.pkid,
                        reason: PubCompReason::PacketIdentifierNotFound,
                    };
                    self.write(Packet::PubComp(comp, None));
                } else {
                    self.answer_router(Packet::PubRel(rel, None)).await;
                }
            }
            Packet::PingReq(_) => self.write(Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect, props) => {
                let will =
                    disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
                if let Some(expiry) = props.and_then(|p| p.session_expiry_interval) {
                    // A session that was to end with its connection cannot be kept now
                    // ([MQTT-3.14.2-2]); any other may be shortened, lengthened or ended.
                    if !self.session.asked_to_keep && expiry > 0 {
                        return Some(Outcome::Violation(DisconnectReasonCode::ProtocolError));
                    }
                    let expiry = expiry.min(self.gate.session_expiry);
                    self.session.kept = expiry > 0;
                    self.session.will_delay = self.session.will_delay.min(expiry);
                    self.gate
                        .sessions
                        .set_expiry(&self.session.key, self.session.seq, expiry);
                }
                return Some(Outcome::Disconnected { will });
            }
            _ => return Some(Outcome::Violation(DisconnectReasonCode::ProtocolError)),
        }
        None
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// An AUTH packet (MQTT 5.0 §4.12): with reason `0x19` and method `lanyard-jwt`, a new
    /// access token of the same principal (tenant, client, subject) replaces the session's, which
    /// then ends at the new token's `exp`, is revoked with it, and has the new token's
    /// permissions: subscriptions it no longer allows are taken back. Answered AUTH `0x00`; a
    /// token that is not good here, or another principal's, ends the session with DISCONNECT
    /// `0x87`. AUTH from a session that did not authenticate with the method is a protocol
    /// error (§4.12: the client must not send it).
    pub(super) async fn reauthenticate(&mut self, body: &[u8]) -> Option<Outcome> {
        if self.session.version != Version::V5 || self.session.filters.is_none() {
            return Some(Outcome::Violation(DisconnectReasonCode::ProtocolError));
        }
        let Some(auth) = codec::parse_auth(body) else {
            return Some(Outcome::Violation(DisconnectReasonCode::MalformedPacket));
        };
        if auth.reason != codec::AUTH_REAUTHENTICATE {
            return Some(Outcome::Violation(DisconnectReasonCode::ProtocolError));
        }
        let refused = |why: &str| {
            tracing::info!(client = %self.session.key, "mqtt: re-authentication refused: {why}");
            Some(Outcome::Violation(DisconnectReasonCode::NotAuthorized))
        };
        if auth.method.as_deref() != Some(codec::AUTH_METHOD) {
            return refused("another authentication method");
        }
        let Some(token) = auth
            .data
            .as_deref()
            .and_then(|data| std::str::from_utf8(data).ok())
            .filter(|t| !t.is_empty() && t.len() <= super::handshake::MAX_PASSWORD_LEN)
        else {
            return refused("no token, or one too long to be an access token");
        };
        let known = match self.gate.authority.verify_bearer(token).await {
            Ok(known) => known,
            Err(TokenRejected::Unavailable(cause)) => {
                cause.log("mqtt");
                return Some(Outcome::Violation(DisconnectReasonCode::ServerBusy));
            }
            Err(e) => return refused(&e.to_string()),
        };
        let (old, new) = (&self.session.grant, &known);
        let same_principal = old.tenant.id == new.tenant.id
            && old.verified.claims.client_id == new.verified.claims.client_id
            && old.verified.claims.sub == new.verified.claims.sub;
        if !same_principal {
            return refused("the token is another principal's");
        }
        let narrowed = old.verified.claims.scope != new.verified.claims.scope
            || old.verified.claims.system != new.verified.claims.system;
        self.gate
            .sessions
            .regrant(&self.session.key, self.session.seq, &known);
        self.session.grant = known;
        // Revoked while being taken on: the revocation may have looked for the old grant.
        if self.gate.authority.verify_bearer(token).await.is_err() {
            return refused("the token was revoked");
        }
        if narrowed {
            self.take_back_subscriptions().await;
        }
        self.out
            .extend_from_slice(&codec::auth_packet(codec::AUTH_SUCCESS, codec::AUTH_METHOD));
        tracing::debug!(client = %self.session.key, "mqtt: re-authenticated");
        None
    }

    /// Unsubscribes the router from the filters the session's permissions no longer allow, and
    /// drops a will they no longer allow.
    async fn take_back_subscriptions(&mut self) {
        let identity = self.identity();
        let permissions = &self.gate.permissions;
        let withdrawn: Vec<String> = self
            .session
            .filters
            .iter()
            .flat_map(|filters| filters.iter())
            .filter(|f| {
                TopicFilter::parse(f).map_or(true, |f| !permissions.may_subscribe(&identity, &f))
            })
            .cloned()
            .collect();
        let will_allowed = self.session.will.as_ref().is_none_or(|will| {
            std::str::from_utf8(&will.publish.topic)
                .ok()
                .and_then(|t| TopicName::parse(t).ok())
                .is_some_and(|t| permissions.may_publish(&identity, &t))
        });
        if !will_allowed {
            self.session.will = None;
        }
        if withdrawn.is_empty() {
            return;
        }
        let mut router_filters = Vec::with_capacity(withdrawn.len());
        for filter in withdrawn {
            self.session.lanyard_topics.remove(&filter);
            if let Some(filters) = &mut self.session.filters {
                filters.remove(&filter);
            }
            router_filters.push(self.router_filter(&filter).unwrap_or(filter));
        }
        // The router's UNSUBACK is not passed on (see `outbound`); the packet id is the
        // router's concern only.
        let unsubscribe = Unsubscribe {
            pkid: 1,
            filters: router_filters,
        };
        self.answer_router(Packet::Unsubscribe(unsubscribe, None))
            .await;
    }
}
