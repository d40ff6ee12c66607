//! Back-pressure on publishers (a lanyard patch, see PATCHES.md).
//!
//! Each filter's log keeps its recent messages in a few segments; a subscriber that falls more
//! than the log behind loses the oldest (its cursor jumps). Rather than dropping messages for
//! subscribers that are reading, the router holds the publishers that write into a log one of
//! whose readers is at risk, until the reader is out of risk: a held publisher's link is told
//! (`Notification::Hold`) and stops reading from its client, whose TCP window then slows it down.
//!
//! A reader is a subscription of a client (its client id and its filter, so neither a reconnect
//! of a persistent session nor another subscription of the same client starts it afresh). A
//! reader that stays at risk longer than [`HOLD_MAX`] is not reading (it stopped, or reads far
//! slower than the topic is written): it holds no one until it has been out of risk again, and
//! the messages it misses are counted (`Notification::Dropped`). So one stalled subscriber
//! delays publishers at most that long, instead of stopping a topic for everyone. A client is
//! never held for its own subscriptions: it could not read the acknowledgements that would get
//! them out of risk.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FilterIdx;
use crate::ConnectionId;

/// How long a reader at risk may hold publishers.
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(2);
/// How often held publishers are looked at when nothing else happens.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Per client id, per subscription filter: since when the reader is at risk.
type Readers = HashMap<Arc<str>, HashMap<String, Instant>>;

#[derive(Default)]
pub(crate) struct Pressure {
    /// Per log: readers at risk of losing messages at the log's next rollover.
    at_risk: HashMap<FilterIdx, Readers>,
    /// Per log: publishers held until it is out of risk for them, and their client ids.
    holding: HashMap<FilterIdx, HashMap<ConnectionId, Arc<str>>>,
    /// Per held publisher: the logs it waits on.
    held: HashMap<ConnectionId, HashSet<FilterIdx>>,
}

/// Whether a reader `behind` segments behind the log's active one is at risk: with `segments`
/// segments kept, it is in the oldest two (or the oldest, for fewer than three).
pub(crate) fn at_risk(behind: u64, segments: usize) -> bool {
    let segments = segments as u64;
    behind + 2 >= segments.max(3)
}

impl Pressure {
    /// Whether log `filter_idx` has readers at risk (cheap: no clock read).
    pub(crate) fn has_readers_at_risk(&self, filter_idx: FilterIdx) -> bool {
        self.at_risk.contains_key(&filter_idx)
    }

    /// Whether a publisher (client id `publisher`) writing into log `filter_idx` is to be held:
    /// another client's reader has been at risk there for less than [`HOLD_MAX`].
    pub(crate) fn congested(&self, filter_idx: FilterIdx, publisher: &str, now: Instant) -> bool {
        self.at_risk.get(&filter_idx).is_some_and(|readers| {
            readers.iter().any(|(client, filters)| {
                &**client != publisher && filters.values().any(|since| now - *since < HOLD_MAX)
            })
        })
    }

    /// Whether the reader (`client`, `filter`) of log `filter_idx` is followed here.
    pub(crate) fn follows(&self, filter_idx: FilterIdx, client: &str, filter: &str) -> bool {
        self.at_risk
            .get(&filter_idx)
            .and_then(|readers| readers.get(client))
            .is_some_and(|filters| filters.contains_key(filter))
    }

    /// Records whether the reader (`client`, `filter`) of log `filter_idx` is at risk; returns
    /// the publishers released because the log is out of risk now.
    pub(crate) fn reader(
        &mut self,
        filter_idx: FilterIdx,
        (client, filter): (&Arc<str>, &str),
        risk: bool,
        now: Instant,
    ) -> Vec<ConnectionId> {
        if risk {
            let filters = self
                .at_risk
                .entry(filter_idx)
                .or_default()
                .entry(client.clone())
                .or_default();
            if !filters.contains_key(filter) {
                filters.insert(filter.to_owned(), now);
            }
            return Vec::new();
        }
        if let Some(readers) = self.at_risk.get_mut(&filter_idx) {
            if let Some(filters) = readers.get_mut(&**client) {
                filters.remove(filter);
                if filters.is_empty() {
                    readers.remove(&**client);
                }
            }
            if readers.is_empty() {
                self.at_risk.remove(&filter_idx);
            }
        }
        self.release_if_clear(filter_idx, now)
    }

    /// Holds `publisher` (client id `client`) until log `filter_idx` is out of risk for it; true
    /// if it was not held yet.
    pub(crate) fn hold(
        &mut self,
        (publisher, client): (ConnectionId, &Arc<str>),
        filter_idx: FilterIdx,
    ) -> bool {
        self.holding
            .entry(filter_idx)
            .or_default()
            .insert(publisher, client.clone());
        let logs = self.held.entry(publisher).or_default();
        let first = logs.is_empty();
        logs.insert(filter_idx);
        first
    }

    /// Whether any publisher is held.
    pub(crate) fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Connection `id` (client id `client`) went away: it is held no longer. A clean session's
    /// readers go with it; a stored session's stay, so that its reconnecting does not start its
    /// time at risk afresh. Returns the publishers released.
    pub(crate) fn forget(
        &mut self,
        id: ConnectionId,
        client: &str,
        clean: bool,
        now: Instant,
    ) -> Vec<ConnectionId> {
        if let Some(logs) = self.held.remove(&id) {
            for log in logs {
                if let Some(publishers) = self.holding.get_mut(&log) {
                    publishers.remove(&id);
                    if publishers.is_empty() {
                        self.holding.remove(&log);
                    }
                }
            }
        }
        if !clean {
            return Vec::new();
        }
        let logs: Vec<FilterIdx> = self
            .at_risk
            .iter()
            .filter(|(_, readers)| readers.contains_key(client))
            .map(|(log, _)| *log)
            .collect();
        let mut released = Vec::new();
        for log in logs {
            if let Some(readers) = self.at_risk.get_mut(&log) {
                readers.remove(client);
                if readers.is_empty() {
                    self.at_risk.remove(&log);
                }
            }
            released.extend(self.release_if_clear(log, now));
        }
        released
    }

    /// Releases the publishers of every log whose readers at risk all held longer than
    /// [`HOLD_MAX`].
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<ConnectionId> {
        let logs: Vec<FilterIdx> = self.holding.keys().copied().collect();
        logs.into_iter()
            .flat_map(|log| self.release_if_clear(log, now))
            .collect()
    }

    fn release_if_clear(&mut self, filter_idx: FilterIdx, now: Instant) -> Vec<ConnectionId> {
        let Some(publishers) = self.holding.get(&filter_idx) else {
            return Vec::new();
        };
        let clear: Vec<ConnectionId> = publishers
            .iter()
            .filter(|(_, client)| !self.congested(filter_idx, client, now))
            .map(|(id, _)| *id)
            .collect();
        let mut released = Vec::new();
        for publisher in clear {
            if let Some(publishers) = self.holding.get_mut(&filter_idx) {
                publishers.remove(&publisher);
                if publishers.is_empty() {
                    self.holding.remove(&filter_idx);
                }
            }
            if let Some(logs) = self.held.get_mut(&publisher) {
                logs.remove(&filter_idx);
                if logs.is_empty() {
                    self.held.remove(&publisher);
                    released.push(publisher);
                }
            }
        }
        released
    }
}
