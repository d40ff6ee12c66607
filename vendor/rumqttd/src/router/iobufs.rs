use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use flume::{Receiver, Sender};
use parking_lot::Mutex;
use tracing::warn;

use crate::{
    protocol::{Packet, QoS},
    router::{FilterIdx, MAX_CHANNEL_CAPACITY},
    Cursor, Notification,
};

use super::{Forward, IncomingMeter, OutgoingMeter};

const MAX_INFLIGHT: usize = 100;
/// Packet ids are given in turn over the whole space MQTT allows, skipping those in use.
const MAX_PKID: u16 = u16::MAX;

#[derive(Debug)]
pub struct Incoming {
    /// Identifier associated with connected client
    pub(crate) client_id: String,
    /// Recv buffer
    pub(crate) buffer: Arc<Mutex<VecDeque<Packet>>>,
    /// incoming metrics
    pub(crate) meter: IncomingMeter,
}

impl Incoming {
    #[inline]
    pub(crate) fn new(client_id: String) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(VecDeque::with_capacity(MAX_CHANNEL_CAPACITY))),
            meter: Default::default(),
            client_id,
        }
    }

    #[inline]
    pub(crate) fn buffer(&self) -> Arc<Mutex<VecDeque<Packet>>> {
        self.buffer.clone()
    }

    #[inline]
    pub(crate) fn exchange(&mut self, mut v: VecDeque<Packet>) -> VecDeque<Packet> {
        std::mem::swap(&mut v, &mut self.buffer.lock());
        v
    }
}

#[derive(Debug)]
pub struct Outgoing {
    /// Identifier associated with connected client
    pub(crate) client_id: String,
    /// Send buffer
    pub(crate) data_buffer: Arc<Mutex<VecDeque<Notification>>>,
    /// Handle which is given to router to allow router to communicate with this connection
    pub(crate) handle: Sender<()>,
    /// The buffer to keep track of inflight packets.
    inflight_buffer: VecDeque<(u16, FilterIdx, Option<Cursor>)>,
    /// PubRels waiting for PubComp
    pub(crate) unacked_pubrels: VecDeque<u16>,
    /// Last packet id
    last_pkid: u16,
    /// The most messages inflight at once (see `set_max_inflight`).
    max_inflight: usize,
    /// Packet ids of messages a resumed session is to be sent again with: no other takes them.
    reserved: Vec<u16>,
    /// Metrics of outgoing messages of this connection
    pub(crate) meter: OutgoingMeter,
}

impl Outgoing {
    #[inline]
    pub(crate) fn new(client_id: String) -> (Self, Receiver<()>) {
        let (handle, rx) = flume::bounded(MAX_CHANNEL_CAPACITY);
        let data_buffer = VecDeque::with_capacity(MAX_CHANNEL_CAPACITY);
        let inflight_buffer = VecDeque::with_capacity(MAX_INFLIGHT);
        let unacked_pubrels = VecDeque::with_capacity(MAX_INFLIGHT);

        // Ensure that there won't be any new allocations
        assert!(MAX_INFLIGHT <= inflight_buffer.capacity());
        assert!(MAX_CHANNEL_CAPACITY <= data_buffer.capacity());

        let outgoing = Self {
            client_id,
            data_buffer: Arc::new(Mutex::new(data_buffer)),
            inflight_buffer,
            unacked_pubrels,
            handle,
            last_pkid: 0,
            max_inflight: MAX_INFLIGHT,
            reserved: Vec::new(),
            meter: Default::default(),
        };

        (outgoing, rx)
    }

    #[inline]
    pub(crate) fn buffer(&self) -> Arc<Mutex<VecDeque<Notification>>> {
        self.data_buffer.clone()
    }

    /// Inflight slots left: the client's Receive Maximum (MQTT 5.0 §3.3.4, [MQTT-3.3.4-9]) or
    /// `MAX_INFLIGHT`, whichever is smaller, less the messages awaiting their acknowledgement.
    pub fn free_slots(&self) -> usize {
        // A QoS 2 message counts until its PUBCOMP ([MQTT-4.9.0-2]).
        let unacknowledged = self.inflight_buffer.len() + self.unacked_pubrels.len();
        self.max_inflight.saturating_sub(unacknowledged)
    }

    /// Sets the most QoS 1 and 2 messages sent unacknowledged at once (the client's Receive
    /// Maximum), at most `MAX_INFLIGHT`.
    pub fn set_max_inflight(&mut self, max: u16) {
        self.max_inflight = usize::from(max).clamp(1, MAX_INFLIGHT);
    }

    pub fn push_notification(&mut self, notification: Notification) -> usize {
        let mut buffer = self.data_buffer.lock();
        buffer.push_back(notification);
        buffer.len()
    }

    /// Push packets to the outgoing buffer. Each message goes at its own QoS: those at QoS 1
    /// and 2 get a packet id and an inflight slot, those at QoS 0 neither.
    pub fn push_forwards(
        &mut self,
        publishes: impl Iterator<Item = Forward>,
        filter_idx: usize,
    ) -> (usize, usize) {
        let data_buffer = self.data_buffer.clone();
        let mut buffer = data_buffer.lock();

        for mut p in publishes {
            if p.publish.qos == QoS::AtMostOnce {
                self.meter.publish_count += 1;
                buffer.push_back(Notification::Forward(p));
                continue;
            }

            // A message sent again keeps its packet id (reserved for it).
            let again = p.publish.pkid;
            p.publish.pkid = match self.reserved.iter().position(|id| *id == again) {
                Some(at) if again != 0 => {
                    self.reserved.swap_remove(at);
                    again
                }
                _ => self.next_pkid(),
            };
            self.inflight_buffer
                .push_back((p.publish.pkid, filter_idx, p.cursor));

            self.meter.publish_count += 1;
            self.meter.total_size += p.publish.topic.len() + p.publish.payload.len();
            buffer.push_back(Notification::Forward(p));
        }

        let buffer_count = buffer.len();
        let inflight_count = self.inflight_buffer.len();

        if inflight_count > self.max_inflight {
            warn!(
                "More inflight publishes than max allowed, inflight count = {}, max allowed = {}",
                inflight_count, self.max_inflight
            );
        }

        (buffer_count, inflight_count)
    }

    /// The next packet id, 1 to `MAX_PKID` in turn, skipping those still awaiting an
    /// acknowledgement: acknowledgements come in any order, so an old one may still be out. A
    /// free slot (checked by the caller) means a free id.
    fn next_pkid(&mut self) -> u16 {
        for _ in 0..MAX_PKID {
            self.last_pkid = self.last_pkid % MAX_PKID + 1;
            let pkid = self.last_pkid;
            if !self.is_outstanding(pkid) {
                return pkid;
            }
        }
        self.last_pkid
    }

    /// Whether `pkid` awaits an acknowledgement (PUBACK, PUBREC or PUBCOMP), or is reserved
    /// for a message to be sent again.
    fn is_outstanding(&self, pkid: u16) -> bool {
        self.inflight_buffer.iter().any(|(id, ..)| *id == pkid)
            || self.unacked_pubrels.contains(&pkid)
            || self.reserved.contains(&pkid)
    }

    /// Keeps `ids` for the messages a resumed session is to be sent again.
    pub fn reserve(&mut self, ids: impl Iterator<Item = u16>) {
        self.reserved.extend(ids);
    }

    /// Frees reserved ids whose messages will not be sent again.
    pub fn unreserve(&mut self, ids: impl Iterator<Item = u16>) {
        for id in ids {
            if let Some(at) = self.reserved.iter().position(|r| *r == id) {
                self.reserved.swap_remove(at);
            }
        }
    }

    /// Registers the PUBACK or PUBREC of an inflight message; None if none is inflight under
    /// `pkid` (an unsolicited acknowledgement). A client acknowledges QoS 1 and QoS 2 messages
    /// each in their order ([MQTT-4.6.0-2], [MQTT-4.6.0-3]), which interleave as they please:
    /// an acknowledgement may answer any inflight message.
    pub fn register_ack(&mut self, pkid: u16) -> Option<()> {
        let at = self.inflight_buffer.iter().position(|(id, ..)| *id == pkid)?;
        self.inflight_buffer.remove(at);
        Some(())
    }

    pub fn register_pubrec(&mut self, pkid: u16) {
        // NOTE: we can return true of false
        // to indicate whether this is duplicate or not
        self.unacked_pubrels.push_back(pkid);
    }

    /// Registers the PUBCOMP of a PUBREL sent; None if no PUBREL went out under `pkid`.
    pub fn register_pubcomp(&mut self, pkid: u16) -> Option<()> {
        let at = self.unacked_pubrels.iter().position(|id| *id == pkid)?;
        self.unacked_pubrels.remove(at);
        Some(())
    }

    // Here we are assuming that the first unique filter_idx we find while iterating will have the
    // least corresponding cursor because of the way we insert into the inflight_buffer
    pub fn retransmission_map(&self) -> HashMap<FilterIdx, Cursor> {
        let mut o = HashMap::new();
        for (_, filter_idx, cursor) in self.inflight_buffer.iter() {
            // if cursor in None, it means it was a retained publish
            if !o.contains_key(filter_idx) && cursor.is_some() {
                o.insert(*filter_idx, cursor.unwrap());
            }
        }

        o
    }

    /// The packet ids of the messages of log `filter_idx` awaiting their acknowledgement, by
    /// where they are in the log: sent again with the same ids ([MQTT-4.4.0-1]).
    pub fn inflight_ids(&self, filter_idx: FilterIdx) -> Vec<(Cursor, u16)> {
        self.inflight_buffer
            .iter()
            .filter(|(_, idx, _)| *idx == filter_idx)
            .filter_map(|(pkid, _, cursor)| cursor.map(|c| (c, *pkid)))
            .collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn retransmission_map_is_calculated_accurately() {
        let (mut outgoing, _) = Outgoing::new("retransmission-test".to_string());
        let mut result = HashMap::new();

        result.insert(0, (0, 8));
        result.insert(1, (0, 1));
        result.insert(2, (1, 1));
        result.insert(3, (1, 0));

        let buf = vec![
            (1, 0, Some((0, 8))),
            (1, 0, Some((0, 10))),
            (1, 1, Some((0, 1))),
            (3, 1, Some((0, 4))),
            (2, 2, Some((1, 1))),
            (1, 2, Some((2, 6))),
            (1, 2, Some((2, 1))),
            (1, 3, Some((1, 0))),
            (1, 3, Some((1, 1))),
            (1, 3, Some((1, 3))),
            (1, 3, Some((1, 3))),
        ];

        outgoing.inflight_buffer.extend(buf);
        assert_eq!(outgoing.retransmission_map(), result);
    }

    // use super::{Outgoing, MAX_INFLIGHT};
    // use crate::protocol::{Publish, QoS};
    // use crate::router::Forward;
    // use crate::Notification;
    //
    // fn publishes(count: usize) -> impl Iterator<Item = Forward> {
    //     (1..=count).map(|v| {
    //         let publish = Publish {
    //             dup: false,
    //             retain: false,
    //             pkid: 0,
    //             qos: QoS::AtLeastOnce,
    //             topic: "hello/world".into(),
    //             payload: vec![1, 2, 3].into(),
    //         };
    //
    //         Forward {
    //             cursor: (0, v as u64),
    //             publish,
    //             size: 0,
    //         }
    //     })
    // }
    //
    // #[test]
    // fn inflight_ring_buffer_pushes_correctly() {
    //     let count = MAX_INFLIGHT as usize;
    //     let (mut outgoing, _rx) = Outgoing::new("hello".to_owned());
    //     outgoing.push_forwards(publishes(count), 1, 3);
    //
    //     // Index 1 = (0, 1), Index 99 = (0, 99), Index 0 = (0, 100)
    //     assert_eq!(outgoing.inflight_buffer[0].unwrap().1, (0, count as u64));
    //     for i in 1..count {
    //         assert_eq!(outgoing.inflight_buffer[i].unwrap().1, (0, i as u64));
    //     }
    //
    //     // Outgoing publish pkids are as expected
    //     for (i, o) in outgoing.data_buffer.lock().iter().enumerate() {
    //         let pkid = match &o {
    //             Notification::Forward(f) => f.publish.pkid,
    //             _ => unreachable!(),
    //         };
    //
    //         assert_eq!(pkid, i as u16 + 1);
    //     }
    // }
    //
    // #[test]
    // fn inflight_ring_buffer_pops_correctly() {
    //     let (mut outgoing, _rx) = Outgoing::new("hello".to_owned());
    //     outgoing.push_forwards(publishes(MAX_INFLIGHT as usize), 1, 3);
    //
    //     for pkid in 1..=MAX_INFLIGHT {
    //         let (unsolicited, outoforder) = outgoing.register_ack(pkid);
    //         assert_eq!(unsolicited, false);
    //         assert_eq!(outoforder, false);
    //     }
    // }
}
