//! MQTT control packets written out byte by byte, for clients that talk to a broker over a bare
//! TCP stream: the API tests (`tests/api`), which also send what no library would, and the
//! benchmark (`examples/bench`), whose load generators leave the cores to the server.
//!
//! The writers of packets whose form differs between versions take the protocol level first: 4
//! for MQTT 3.1.1, 5 for MQTT 5.0. Where 5.0 adds properties, level 5 writes them (an empty list
//! unless a field says otherwise); any other level is written as 3.1.1 would be, so that a test
//! can offer a level the server refuses.
//!
//! A packet is its fixed header (the packet type and flags in one byte, then the length of the
//! rest as a variable byte integer) and its body: [`packet`] puts the two together, and
//! [`frame_len`] reads them apart.

// Each crate that includes this file uses some of the writers: the rest would warn there.
#![allow(dead_code)]

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xc0, 0x00];

/// DISCONNECT: in 3.1.1 the only form, in 5.0 reason 0x00 (normal disconnection), which may be
/// left out.
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// Appends `len` as an MQTT variable byte integer: seven bits a byte, least significant first,
/// the top bit set on every byte but the last. A packet's remaining length and a 5.0 property
/// length are written this way.
pub fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

/// Appends `s` with its length before it in two bytes, big-endian: an MQTT UTF-8 string or
/// binary data field.
pub fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A fixed header alone: the first byte, then a remaining length of `remaining`. Sent without
/// a body, it announces a packet that never comes.
pub fn fixed_header(first: u8, remaining: usize) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(remaining, &mut out);
    out
}

/// A whole packet: the fixed header with `first` (packet type and flags) and the length of
/// `body`, then `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = fixed_header(first, body.len());
    out.extend_from_slice(body);
    out
}

/// The total length and the fixed header's length of the packet at the start of `b`; `None`
/// while its remaining length is not all there (or runs past the four bytes it may take).
pub fn frame_len(b: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for i in 1..5 {
        let byte = *b.get(i)?;
        len |= ((byte & 0x7f) as usize) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((i + 1 + len, i + 1));
        }
    }
    None
}

/// A CONNECT, always with a clean session (3.1.1) or clean start (5.0). [`Connect::new`] gives
/// the plainest one; set the other fields with struct update syntax:
/// `Connect { login: Some(("device", token)), ..Connect::new(4, "client") }.bytes()`.
#[derive(Clone, Copy, Debug)]
pub struct Connect<'a> {
    /// The protocol level byte: 4 for 3.1.1, 5 for 5.0.
    pub level: u8,
    pub client_id: &'a str,
    /// Seconds; 60 from [`Connect::new`].
    pub keep_alive: u16,
    /// The user name and the password; the flags announce both when present.
    pub login: Option<(&'a str, &'a str)>,
    /// The will's topic and message, at QoS 0 and not retained (in 5.0 without will
    /// properties).
    pub will: Option<(&'a str, &'a [u8])>,
    /// 5.0 only: the CONNECT properties, already encoded; their length is written before them.
    pub properties: &'a [u8],
}

impl<'a> Connect<'a> {
    /// A CONNECT at `level` with keep-alive 60, no login, no will and no properties.
    pub fn new(level: u8, client_id: &'a str) -> Self {
        Connect {
            level,
            client_id,
            keep_alive: 60,
            login: None,
            will: None,
            properties: &[],
        }
    }

    /// The packet: variable header (protocol name, level, flags, keep-alive, 5.0 properties),
    /// then client id, will, user name and password, in that order.
    pub fn bytes(&self) -> Vec<u8> {
        let v5 = self.level == 5;
        let mut flags = 0x02; // clean session
        if self.will.is_some() {
            flags |= 0x04; // will, at QoS 0, not retained
        }
        if self.login.is_some() {
            flags |= 0x80 | 0x40; // user name and password
        }
        let mut body = Vec::new();
        string(b"MQTT", &mut body);
        body.push(self.level);
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        if v5 {
            remaining_length(self.properties.len(), &mut body);
            body.extend_from_slice(self.properties);
        }
        string(self.client_id.as_bytes(), &mut body);
        if let Some((topic, message)) = self.will {
            if v5 {
                body.push(0); // no will properties
            }
            string(topic.as_bytes(), &mut body);
            string(message, &mut body);
        }
        if let Some((user, password)) = self.login {
            string(user.as_bytes(), &mut body);
            string(password.as_bytes(), &mut body);
        }
        packet(0x10, &body)
    }
}

/// A PUBLISH. [`Publish::new`] gives one at QoS 0, not retained; set the other fields with
/// struct update syntax: `Publish { qos: 1, packet_id: 7, ..Publish::new(4, topic, payload) }`.
#[derive(Clone, Copy, Debug)]
pub struct Publish<'a> {
    /// The protocol level: 5 writes an empty property list.
    pub level: u8,
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// 0, 1 or 2.
    pub qos: u8,
    /// Written only when `qos` is above 0.
    pub packet_id: u16,
    pub retain: bool,
}

impl<'a> Publish<'a> {
    /// A PUBLISH of `payload` to `topic` at QoS 0, not retained.
    pub fn new(level: u8, topic: &'a str, payload: &'a [u8]) -> Self {
        Publish {
            level,
            topic,
            payload,
            qos: 0,
            packet_id: 0,
            retain: false,
        }
    }

    /// The packet: QoS and retain in the first byte; topic, packet id (QoS 1 and 2), 5.0
    /// properties, then the payload.
    pub fn bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        string(self.topic.as_bytes(), &mut body);
        if self.qos > 0 {
            body.extend_from_slice(&self.packet_id.to_be_bytes());
        }
        if self.level == 5 {
            body.push(0); // no properties
        }
        body.extend_from_slice(self.payload);
        packet(0x30 | (self.qos << 1) | u8::from(self.retain), &body)
    }
}

/// A SUBSCRIBE with `packet_id` for each of `filters` (in that order, repeats included), all at
/// the maximum QoS `qos`; level 5 writes an empty property list and subscription options with
/// only the QoS set.
pub fn subscribe(level: u8, packet_id: u16, filters: &[&str], qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0); // no properties
    }
    for filter in filters {
        string(filter.as_bytes(), &mut body);
        body.push(qos);
    }
    packet(0x82, &body)
}

/// PUBACK for a QoS 1 publish: the 3.1.1 form, which 5.0 reads as reason 0x00 (success).
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [high, low] = packet_id.to_be_bytes();
    [0x40, 0x02, high, low]
}

/// PUBREL for a QoS 2 publish: the 3.1.1 form, which 5.0 reads as reason 0x00 (success).
pub fn pubrel(packet_id: u16) -> [u8; 4] {
    let [high, low] = packet_id.to_be_bytes();
    [0x62, 0x02, high, low]
}

/// A 5.0 AUTH (§3.15) with `reason` (0x19: re-authenticate), an Authentication Method and,
/// when given, Authentication Data.
pub fn auth(reason: u8, method: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut props = vec![0x15];
    string(method.as_bytes(), &mut props);
    if let Some(data) = data {
        props.push(0x16);
        string(data, &mut props);
    }
    let mut body = vec![reason];
    remaining_length(props.len(), &mut body);
    body.extend_from_slice(&props);
    packet(0xf0, &body)
}
