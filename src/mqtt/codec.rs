//! Framing and decoding of MQTT packets on top of `rumqttd::protocol`.
//!
//! Each frame is cut here first (fixed header, remaining length, size limit) and its packet
//! type checked against what a client may send, before rumqttd's codec sees it: the V5 codec
//! panics on some server-only packets (CONNACK, UNSUBACK). The codec call is also guarded
//! against panics, so a packet it cannot handle costs only its own connection. rumqttd knows no
//! AUTH packet (5.0 §3.15): lanyard reads and writes it here ([`Auth`]).

/// The authentication method of lanyard's access tokens (SPEC §10): the token is the
/// Authentication Data, at CONNECT and in AUTH.
pub const AUTH_METHOD: &str = "lanyard-jwt";

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::BytesMut;
use rumqttd::protocol::{DisconnectReasonCode, Packet, Protocol, v4::V4, v5::V5};

/// MQTT 3.1.1 or 5.0, chosen by the protocol level of the CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// Packet types (MQTT §2.2.1).
pub const CONNECT: u8 = 1;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const UNSUBSCRIBE: u8 = 10;
pub const PINGREQ: u8 = 12;
pub const DISCONNECT: u8 = 14;
pub const AUTH: u8 = 15;

/// AUTH reason codes (MQTT 5.0 §3.15.2.1).
pub const AUTH_SUCCESS: u8 = 0x00;
pub const AUTH_REAUTHENTICATE: u8 = 0x19;

/// An AUTH packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason: u8,
    pub method: Option<String>,
    pub data: Option<Vec<u8>>,
}

/// Reads the body of an AUTH frame (after the fixed header); `None` when malformed.
pub fn parse_auth(body: &[u8]) -> Option<Auth> {
    // No body: success, without properties (§3.15.2.1).
    let Some((&reason, rest)) = body.split_first() else {
        return Some(Auth {
            reason: AUTH_SUCCESS,
            method: None,
            data: None,
        });
    };
    let mut auth = Auth {
        reason,
        method: None,
        data: None,
    };
    if rest.is_empty() {
        return Some(auth);
    }
    let (len, used) = variable_int(rest)?;
    let mut props = rest.get(used..used.checked_add(len)?)?;
    if used + len != rest.len() {
        return None;
    }
    let take = |props: &mut &[u8]| -> Option<Vec<u8>> {
        let n = u16::from_be_bytes([*props.first()?, *props.get(1)?]) as usize;
        let value = props.get(2..2 + n)?.to_vec();
        *props = &props[2 + n..];
        Some(value)
    };
    while let Some((&id, rest)) = props.split_first() {
        props = rest;
        match id {
            // Authentication Method, once.
            0x15 if auth.method.is_none() => {
                auth.method = Some(String::from_utf8(take(&mut props)?).ok()?);
            }
            // Authentication Data, once.
            0x16 if auth.data.is_none() => auth.data = Some(take(&mut props)?),
            // Reason String.
            0x1F => {
                take(&mut props)?;
            }
            // User Property: a pair of strings.
            0x26 => {
                take(&mut props)?;
                take(&mut props)?;
            }
            _ => return None,
        }
    }
    Some(auth)
}

/// A variable byte integer (§1.5.5) and the bytes it took.
fn variable_int(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().take(4).enumerate() {
        value |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// An AUTH packet from the server: `reason` and the Authentication Method.
pub fn auth_packet(reason: u8, method: &str) -> Vec<u8> {
    let mut props = vec![0x15];
    props.extend_from_slice(&(method.len() as u16).to_be_bytes());
    props.extend_from_slice(method.as_bytes());
    // reason, property length (< 128), properties
    let mut out = vec![
        AUTH << 4,
        (2 + props.len()) as u8,
        reason,
        props.len() as u8,
    ];
    out.extend_from_slice(&props);
    out
}

/// A whole frame is in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub packet_type: u8,
    pub flags: u8,
    /// Fixed header plus remaining length.
    pub len: usize,
    /// Offset of the variable header.
    pub body: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More bytes are needed.
    Incomplete,
    /// The remaining length is encoded in more than four bytes.
    Malformed,
    /// The frame is larger than allowed; it is not read. `body` is where its variable header
    /// starts.
    TooLarge { len: usize, body: usize },
}

/// Cuts the next frame from `buf` without consuming it.
pub fn frame(buf: &[u8], max_len: usize) -> Result<Frame, FrameError> {
    if buf.len() < 2 {
        return Err(FrameError::Incomplete);
    }
    let mut remaining = 0usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return Err(FrameError::Malformed);
        }
        let Some(&byte) = buf.get(i) else {
            return Err(FrameError::Incomplete);
        };
        remaining |= ((byte & 0x7f) as usize) << (7 * (i - 1));
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let len = i + remaining;
    if len > max_len {
        return Err(FrameError::TooLarge { len, body: i });
    }
    if buf.len() < len {
        return Err(FrameError::Incomplete);
    }
    Ok(Frame {
        packet_type: buf[0] >> 4,
        flags: buf[0] & 0x0f,
        len,
        body: i,
    })
}

/// Whether a client may send this packet type with these fixed-header flags (MQTT §2.2.2).
/// Server-only packets (CONNACK, SUBACK, UNSUBACK, PINGRESP) are not; AUTH is 5.0 only, which
/// the session checks.
pub fn client_may_send(frame: &Frame) -> bool {
    match frame.packet_type {
        PUBLISH => (frame.flags >> 1) & 0b11 != 0b11,
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => frame.flags == 0b0010,
        CONNECT | PUBACK | PUBREC | PUBCOMP | PINGREQ | DISCONNECT | AUTH => frame.flags == 0,
        _ => false,
    }
}

/// The protocol of a CONNECT frame from its protocol name and level (MQTT §3.1.2.1–2).
/// None: not a protocol this server speaks (MQTT 3.1 `MQIsdp`, unknown levels).
/// `body` is where the variable header starts; the frame need not be complete.
pub fn connect_version(buf: &[u8], body: usize) -> Option<Version> {
    let v = buf.get(body..)?;
    if v.len() < 7 || v[..6] != [0, 4, b'M', b'Q', b'T', b'T'] {
        return None;
    }
    match v[6] {
        4 => Some(Version::V4),
        5 => Some(Version::V5),
        _ => None,
    }
}

/// QoS and packet identifier of a PUBLISH frame; rumqttd's `Publish` does not expose them.
pub fn publish_qos_pkid(buf: &[u8], frame: &Frame) -> (u8, u16) {
    let qos = (frame.flags >> 1) & 0b11;
    if qos == 0 {
        return (0, 0);
    }
    let body = &buf[frame.body..frame.len];
    let topic_len = body
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
    let pkid = body
        .get(2 + topic_len..4 + topic_len)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    (qos, pkid)
}

/// Decodes one frame (taken from the front of `buf`). Any failure, even a panic inside the
/// codec, is a malformed packet.
pub fn decode(version: Version, buf: &mut BytesMut, frame: &Frame) -> Option<Packet> {
    let mut bytes = buf.split_to(frame.len);
    let max = frame.len;
    catch_unwind(AssertUnwindSafe(move || match version {
        Version::V4 => V4.read_mut(&mut bytes, max),
        Version::V5 => V5.read_mut(&mut bytes, max),
    }))
    .ok()?
    .ok()
}

/// Encodes a packet onto `out`, returning its length.
pub fn encode(version: Version, packet: Packet, out: &mut BytesMut) -> Option<usize> {
    catch_unwind(AssertUnwindSafe(|| match version {
        Version::V4 => V4.write(packet, out),
        Version::V5 => V5.write(packet, out),
    }))
    .ok()?
    .ok()
}

/// The byte of a 5.0 DISCONNECT reason (MQTT 5.0 §3.14.2.1).
pub fn disconnect_reason(reason: DisconnectReasonCode) -> u8 {
    use DisconnectReasonCode as R;
    match reason {
        R::NormalDisconnection => 0x00,
        R::DisconnectWithWillMessage => 0x04,
        R::UnspecifiedError => 0x80,
        R::MalformedPacket => 0x81,
        R::ProtocolError => 0x82,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::ServerBusy => 0x89,
        R::ServerShuttingDown => 0x8B,
        R::KeepAliveTimeout => 0x8D,
        R::SessionTakenOver => 0x8E,
        R::TopicFilterInvalid => 0x8F,
        R::TopicNameInvalid => 0x90,
        R::ReceiveMaximumExceeded => 0x93,
        R::TopicAliasInvalid => 0x94,
        R::PacketTooLarge => 0x95,
        R::MessageRateTooHigh => 0x96,
        R::QuotaExceeded => 0x97,
        R::AdministrativeAction => 0x98,
        R::PayloadFormatInvalid => 0x99,
        R::RetainNotSupported => 0x9A,
        R::QoSNotSupported => 0x9B,
        R::UseAnotherServer => 0x9C,
        R::ServerMoved => 0x9D,
        R::SharedSubscriptionNotSupported => 0x9E,
        R::ConnectionRateExceeded => 0x9F,
        R::MaximumConnectTime => 0xA0,
        R::SubscriptionIdentifiersNotSupported => 0xA1,
        R::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_by_their_remaining_length() {
        assert_eq!(frame(&[0xc0], 100), Err(FrameError::Incomplete));
        let f = frame(&[0xc0, 0x00, 0xff], 100).unwrap();
        assert_eq!((f.packet_type, f.len, f.body), (12, 2, 2));
        assert_eq!(frame(&[0x30, 0x80], 100), Err(FrameError::Incomplete));
        assert_eq!(frame(&[0x30, 0x05, 1, 2], 100), Err(FrameError::Incomplete));
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 100),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0x7f], 1 << 20),
            Err(FrameError::TooLarge {
                len: 268_435_460,
                body: 5
            })
        );
    }

    #[test]
    fn server_only_packets_and_bad_flags_are_not_for_clients() {
        let f = |b0: u8| frame(&[b0, 0], 10).unwrap();
        assert!(client_may_send(&f(0x82)));
        assert!(!client_may_send(&f(0x80)));
        assert!(client_may_send(&f(0xf0)), "AUTH");
        for server_only in [0x20, 0x90, 0xb0, 0xd0, 0xf1] {
            assert!(!client_may_send(&f(server_only)));
        }
        assert!(!client_may_send(&f(0x36)), "QoS 3");
    }

    #[test]
    fn auth_packets_are_read_and_written() {
        let packet = auth_packet(AUTH_REAUTHENTICATE, AUTH_METHOD);
        let f = frame(&packet, 100).unwrap();
        assert_eq!((f.packet_type, f.len), (AUTH, packet.len()));
        let auth = parse_auth(&packet[f.body..]).unwrap();
        assert_eq!(auth.reason, AUTH_REAUTHENTICATE);
        assert_eq!(auth.method.as_deref(), Some(AUTH_METHOD));
        assert_eq!(auth.data, None);
        // With data, a reason string and a user property.
        let mut props = vec![
            0x15, 0, 1, b'm', 0x16, 0, 2, 1, 2, 0x1f, 0, 0, 0x26, 0, 1, b'k', 0, 0,
        ];
        let mut body = vec![0x19, props.len() as u8];
        body.append(&mut props);
        let auth = parse_auth(&body).unwrap();
        assert_eq!(
            (auth.method.as_deref(), auth.data),
            (Some("m"), Some(vec![1, 2]))
        );
        assert_eq!(parse_auth(&[]).unwrap().reason, AUTH_SUCCESS);
        // Truncated, trailing bytes, a repeated or unknown property.
        assert!(parse_auth(&[0x19, 4, 0x15, 0, 5, b'm']).is_none());
        assert!(parse_auth(&[0x19, 0, 9]).is_none());
        assert!(parse_auth(&[0x19, 8, 0x15, 0, 1, b'm', 0x15, 0, 1, b'n']).is_none());
        assert!(parse_auth(&[0x19, 2, 0x01, 0]).is_none());
    }
}
