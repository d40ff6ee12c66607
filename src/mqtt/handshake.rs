//! The CONNECT handshake (MQTT 3.1.1 §3.1, 5.0 §3.1): the first packet read, the client
//! identifier checked, the password (or, on 5.0, the Authentication Data of method
//! `lanyard-jwt`, SPEC §10) verified as a lanyard access token (SPEC §4), the will's
//! topic checked, the session claimed (a client id is scoped to its tenant and held by one
//! principal) and the router link opened for a session to resume or keep; then the CONNACK.
//!
//! Every way a CONNECT is refused is a [`Refusal`], answered in one place ([`answer`]) with the
//! code of the table in `docs/mqtt.md`, before the socket closes: never a silent close, except
//! for bytes that are not a CONNECT at all.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, LastWill, LastWillProperties, Packet, Publish,
    PublishProperties,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use super::Gate;
use super::codec::{self, FrameError, Version};
use super::router::{LinkSession, RECEIVE_MAXIMUM_DEFAULT};
use super::sessions::{EndReason, Grant, Key};
use crate::authority::TokenRejected;
use crate::domain::Internal;
use crate::domain::topic::TopicName;

/// A CONNECT larger than this is refused: it carries a token, a client id and perhaps a will.
const MAX_CONNECT_SIZE: usize = 64 * 1024;
/// Passwords are access tokens; longer ones are refused before any parsing.
pub(super) use crate::authority::tokens::MAX_BEARER_LEN as MAX_PASSWORD_LEN;
/// Client identifiers longer than this are refused.
const MAX_CLIENT_ID_LEN: usize = 128;
/// The most QoS 1 and 2 publishes a 5.0 client may have unacknowledged at once (the
/// CONNACK's Receive Maximum); one more ends the connection with DISCONNECT `0x93`.
pub(super) const RECEIVE_MAXIMUM: u16 = 100;

/// A will (MQTT 5.0 §3.1.3.2): published as the client gave it, with its QoS, RETAIN flag and
/// properties (but its delay, which is the gate's to keep).
pub(super) struct Will {
    pub(super) publish: Publish,
    pub(super) properties: Option<PublishProperties>,
}

impl Will {
    fn new(will: LastWill, props: Option<LastWillProperties>) -> Will {
        let publish = Publish::new(will.topic, will.message, will.retain).with_qos(will.qos);
        let properties = props.map(|p| PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..PublishProperties::default()
        });
        Will {
            publish,
            properties,
        }
    }
}
/// Why a CONNECT is refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    /// The protocol level is neither 4 (3.1.1) nor 5.
    #[error("unsupported protocol level")]
    ProtocolLevel,
    #[error("CONNECT larger than {MAX_CONNECT_SIZE} bytes")]
    TooLarge,
    #[error("malformed CONNECT")]
    Malformed,
    /// A 5.0 CONNECT the protocol forbids although it parses (MQTT 5.0 §3.1.2.11).
    #[error("{0}")]
    Protocol(&'static str),
    #[error("{0}")]
    ClientId(&'static str),
    /// No password, or one too long to be an access token.
    #[error("no usable password")]
    NoPassword,
    /// An Authentication Method other than `lanyard-jwt`.
    #[error("unsupported authentication method")]
    AuthMethod,
    /// The password is not an access token good here.
    #[error("{0}")]
    Token(String),
    #[error("will topic not allowed")]
    WillTopic,
    #[error("client id held by another principal")]
    ClientIdHeld,
    /// lanyard cannot serve the CONNECT now: the client may try again. The cause is logged
    /// once, where the refusal is answered.
    #[error("the server cannot serve it now")]
    Unavailable(Internal),
}

impl Refusal {
    /// The CONNACK code that answers the refusal (3.1.1 return code, 5.0 reason code), as the
    /// table in `docs/mqtt.md` lists them; `None` where the version has none (a 3.1.1 CONNECT
    /// too large or malformed is closed) or the answer is written raw.
    fn code(&self, version: Version) -> Option<ConnectReturnCode> {
        use ConnectReturnCode as C;
        let v5 = version == Version::V5;
        Some(match self {
            Refusal::ProtocolLevel => return None,
            Refusal::TooLarge if v5 => C::PacketTooLarge,
            Refusal::Malformed if v5 => C::MalformedPacket,
            Refusal::Protocol(_) => C::ProtocolError,
            Refusal::TooLarge | Refusal::Malformed => return None,
            Refusal::ClientId(_) => C::ClientIdentifierNotValid,
            Refusal::NoPassword => C::BadUserNamePassword,
            Refusal::AuthMethod => C::BadAuthenticationMethod,
            Refusal::Token(_) | Refusal::WillTopic | Refusal::ClientIdHeld => C::NotAuthorized,
            Refusal::Unavailable(_) if v5 => C::ServerUnavailable,
            Refusal::Unavailable(_) => C::ServiceUnavailable,
        })
    }
}

impl Refusal {
    /// How the CONNECT ended, as `lanyard_mqtt_connects_total` labels it: the name of the
    /// CONNACK code [`Refusal::code`] answers, or `closed` where none is sent.
    pub(super) fn outcome(&self, version: Version) -> &'static str {
        match self {
            Refusal::ProtocolLevel => "unacceptable_protocol_version",
            other => other.code(version).map_or("closed", code_name),
        }
    }
}

/// A CONNACK code by its name in the MQTT specifications, one of
/// [`crate::metrics::CONNECT_CODES`] for the codes lanyard answers (3.1.1's "server
/// unavailable" and 5.0's share a name, as do the other pairs).
pub(super) fn code_name(code: ConnectReturnCode) -> &'static str {
    use ConnectReturnCode as C;
    match code {
        C::Success => "success",
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => {
            "unacceptable_protocol_version"
        }
        C::ClientIdentifierNotValid => "client_identifier_not_valid",
        C::ServiceUnavailable | C::ServerUnavailable => "server_unavailable",
        C::BadUserNamePassword => "bad_user_name_or_password",
        C::NotAuthorized => "not_authorized",
        C::MalformedPacket => "malformed_packet",
        C::ProtocolError => "protocol_error",
        C::PacketTooLarge => "packet_too_large",
        C::BadAuthenticationMethod => "bad_authentication_method",
        // Codes lanyard never answers a CONNECT with.
        _ => "closed",
    }
}

/// How a handshake ends without a session.
pub(super) enum Exit {
    /// Closed without an answer: not a CONNECT, nothing in time, or the client went away.
    Closed,
    /// Refused: answered with a CONNACK (see [`answer`]).
    Refused {
        version: Version,
        client_id: String,
        refusal: Refusal,
    },
}

impl Exit {
    fn refused(version: Version, client_id: &str, refusal: Refusal) -> Exit {
        Exit::Refused {
            version,
            client_id: client_id.to_owned(),
            refusal,
        }
    }
}

/// Answers a refused CONNECT with its CONNACK.
pub(super) async fn answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    version: Version,
    refusal: &Refusal,
) {
    if let Refusal::ProtocolLevel = refusal {
        // MQTT 3.1.1 §3.1.2.2: "unacceptable protocol level" (0x01) in a 3.1.1 CONNACK, whatever
        // level the client spoke.
        let _ = stream.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
        return;
    }
    let Some(code) = refusal.code(version) else {
        return;
    };
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

/// A link into the router: its key at the feeder, and its receiving half.
pub(super) struct Link {
    pub(super) key: u64,
    pub(super) rx: LinkRx,
}

/// What a successful CONNECT established.
pub(super) struct Session {
    pub(super) version: Version,
    pub(super) key: Key,
    pub(super) seq: u64,
    /// The router link, once opened.
    pub(super) link: Option<Box<Link>>,
    /// The router holds the session under the client's own name (see `router`).
    pub(super) named_link: bool,
    /// The session outlives the connection (its expiry is not 0).
    pub(super) kept: bool,
    /// 5.0: the CONNECT asked for a Session Expiry Interval other than 0 (a DISCONNECT may then
    /// change it, [MQTT-3.14.2-2]).
    pub(super) asked_to_keep: bool,
    pub(super) ended: oneshot::Receiver<EndReason>,
    /// The token the session was granted under: tenant, client, subject, system, scopes.
    pub(super) grant: Grant,
    pub(super) keep_alive: Option<Duration>,
    pub(super) will: Option<Box<Will>>,
    pub(super) will_delay: u32,
    /// 5.0: the most QoS 1 and 2 messages the client takes unacknowledged (its Receive
    /// Maximum), which the router's link keeps to.
    pub(super) receive_maximum: u16,
    /// 5.0: the largest packet the client accepts.
    pub(super) client_max_packet: Option<u32>,
    /// lanyard's own exact topics this session subscribes to. rumqttd replays a retained
    /// message only for a filter new to the session, so the gate delivers lanyard's current
    /// message itself on a re-subscribe and on a resumed session: exactly once per subscribe.
    pub(super) lanyard_topics: BTreeSet<String>,
    /// A stored session was resumed: its lanyard topics get their current messages at once.
    pub(super) resumed: bool,
    /// A 5.0 session that authenticated with method `lanyard-jwt`, and so may re-authenticate
    /// (SPEC §10): every filter it subscribes to, so that those a new token no longer allows
    /// are taken back. `None` for every other session, which follows nothing.
    // Boxed: a pointer is all that a session that does not re-authenticate carries.
    #[allow(clippy::box_collection)]
    pub(super) filters: Option<Box<BTreeSet<String>>>,
}

/// Reads the CONNECT, authenticates it, claims the session and opens the router link, and
/// answers the CONNACK; or says why not ([`Exit`]), for the caller to answer.
pub(super) async fn handshake<S>(
    gate: &Arc<Gate>,
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Session, Exit>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = loop {
        // The first packet must be a CONNECT (MQTT §3.1): anything else is closed at once.
        if buf.first().is_some_and(|b| *b != 0x10) {
            return Err(Exit::Closed);
        }
        match codec::frame(buf, MAX_CONNECT_SIZE) {
            Ok(frame) => break frame,
            Err(FrameError::Incomplete) => match timeout_at(deadline, stream.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => return Err(Exit::Closed),
            },
            Err(FrameError::Malformed) => return Err(Exit::Closed),
            Err(FrameError::TooLarge { body, .. }) => {
                let version = codec::connect_version(buf, body).unwrap_or(Version::V4);
                return Err(Exit::refused(version, "", Refusal::TooLarge));
            }
        }
    };
    let Some(version) = codec::connect_version(buf, frame.body) else {
        return Err(Exit::refused(Version::V4, "", Refusal::ProtocolLevel));
    };
    let Some(Packet::Connect(connect, props, will, will_props, login)) =
        codec::decode(version, buf, &frame)
    else {
        return Err(Exit::refused(version, "", Refusal::Malformed));
    };
    let refused = |refusal| Exit::refused(version, &connect.client_id, refusal);
    // MQTT 5.0 §3.1.2.11.4: a Maximum Packet Size of 0 is a protocol error.
    if props.as_ref().and_then(|p| p.max_packet_size) == Some(0) {
        return Err(refused(Refusal::Protocol("Maximum Packet Size 0")));
    }
    // MQTT 5.0 §3.1.2.11.3: absent means 65,535; 0 is a protocol error.
    let receive_maximum = match props.as_ref().and_then(|p| p.receive_maximum) {
        Some(0) => return Err(refused(Refusal::Protocol("Receive Maximum 0"))),
        Some(max) => max,
        None => RECEIVE_MAXIMUM_DEFAULT,
    };

    // Client identifier (MQTT 3.1.1 §3.1.3.1, 5.0 §3.1.3.1).
    let mut assigned = None;
    let client_id = if connect.client_id.is_empty() {
        if version == Version::V4 && !connect.clean_session {
            return Err(refused(Refusal::ClientId(
                "empty client id for a persistent session",
            )));
        }
        let id = format!("lanyard-{}", uuid::Uuid::new_v4().simple());
        assigned = Some(id.clone());
        id
    } else if connect.client_id.len() > MAX_CLIENT_ID_LEN
        || connect.client_id.contains(['+', '#', '/', '$', '\0'])
    {
        return Err(refused(Refusal::ClientId("unusable client id")));
    } else {
        connect.client_id.clone()
    };

    // The password is a lanyard access token (SPEC §4); on 5.0 it may come as the
    // Authentication Data of method `lanyard-jwt` instead, which allows re-authentication.
    let props = props.as_ref();
    let method = props.and_then(|p| p.authentication_method.as_deref());
    let password = match method {
        None => login.as_ref().map(|l| l.password.as_str()).unwrap_or(""),
        Some(codec::AUTH_METHOD) => props
            .and_then(|p| p.authentication_data.as_deref())
            .and_then(|data| std::str::from_utf8(data).ok())
            .unwrap_or(""),
        Some(_) => return Err(refused(Refusal::AuthMethod)),
    };
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(refused(Refusal::NoPassword));
    }
    let known: Grant = match gate.authority.verify_bearer(password).await {
        Ok(known) => known,
        Err(TokenRejected::Unavailable(cause)) => return Err(refused(Refusal::Unavailable(cause))),
        Err(e) => return Err(refused(Refusal::Token(e.to_string()))),
    };
    let identity = known.identity();

    // A will is a publish like any other, checked now (SPEC §4: never under the prefix).
    if let Some(will) = &will {
        let allowed = std::str::from_utf8(&will.topic)
            .ok()
            .and_then(|t| TopicName::parse(t).ok())
            .is_some_and(|t| gate.permissions.may_publish(&identity, &t));
        if !allowed {
            return Err(refused(Refusal::WillTopic));
        }
    }

    let key = Key::new(&known.tenant.id, &client_id);
    // Clean Start 0 (3.1.1: Clean Session 0) resumes a stored session. How long the session
    // outlives its connection: 3.1.1 persistent sessions `mqtt.session_expiry`; 5.0 what the
    // client asks (MQTT 5.0 §3.1.2.11.2, absent = 0), at most that long.
    let resume = !connect.clean_session;
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
        return Err(refused(Refusal::ClientIdHeld));
    };
    let named = |clean| LinkSession::Named {
        tenant_id: known.tenant.id.to_string(),
        client_id: client_id.clone(),
        clean,
        receive_maximum,
    };
    // A session that may re-authenticate must know every filter it holds, to take back those a
    // new token does not allow: one stored by a connection that did not follow them (it used
    // a password) starts clean instead.
    let resumed = resume && claim.may_resume && (method.is_none() || claim.filters.is_some());
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
                .release(&key, claim.seq, Default::default(), gate.authority.now());
            return Err(refused(Refusal::Unavailable(Internal::msg(
                "linking a session",
                "the router refused the link",
            ))));
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
        // How many QoS 1 and 2 publishes the client may have unacknowledged (§3.3.4).
        receive_max: Some(RECEIVE_MAXIMUM),
        // A shorter expiry than asked is announced (MQTT 5.0 §3.2.2.3.2).
        session_expiry_interval: asked_expiry
            .filter(|asked| *asked != expiry)
            .map(|_| expiry),
        authentication_method: method.map(str::to_owned),
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
            .release(&key, claim.seq, Default::default(), gate.authority.now());
        return Err(Exit::Closed);
    }
    tracing::debug!(client = %client_id, tenant = %known.tenant.slug, "mqtt: connected");

    let will_delay = will_props
        .as_ref()
        .and_then(|p| p.delay_interval)
        .unwrap_or(0)
        .min(expiry);
    Ok(Session {
        version,
        key,
        seq: claim.seq,
        link,
        named_link,
        kept: expiry > 0,
        asked_to_keep: asked_expiry.is_some_and(|asked| asked > 0),
        ended: claim.ended,
        grant: known.clone(),
        // MQTT §3.1.2.10: one and a half times the keep-alive without a packet ends it.
        keep_alive: (connect.keep_alive > 0)
            .then(|| Duration::from_millis(connect.keep_alive as u64 * 1500)),
        will: will.map(|will| Box::new(Will::new(will, will_props))),
        will_delay,
        receive_maximum,
        client_max_packet: props.and_then(|p| p.max_packet_size),
        resumed: session_present,
        filters: method.map(|_| match claim.filters {
            Some(filters) if session_present => filters,
            _ => Box::default(),
        }),
        lanyard_topics: if session_present {
            claim.topics
        } else {
            BTreeSet::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_one_the_metrics_know() {
        let refusals = [
            Refusal::ProtocolLevel,
            Refusal::TooLarge,
            Refusal::Malformed,
            Refusal::Protocol("x"),
            Refusal::ClientId("x"),
            Refusal::NoPassword,
            Refusal::AuthMethod,
            Refusal::Token("x".into()),
            Refusal::WillTopic,
            Refusal::ClientIdHeld,
            Refusal::Unavailable(Internal::msg("test", "down")),
        ];
        let mut seen = vec![code_name(ConnectReturnCode::Success)];
        for version in [Version::V4, Version::V5] {
            for refusal in &refusals {
                seen.push(refusal.outcome(version));
            }
        }
        seen.sort();
        seen.dedup();
        let mut known = crate::metrics::CONNECT_CODES.to_vec();
        known.sort();
        assert_eq!(seen, known);
    }
}
