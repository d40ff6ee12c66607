//! Who holds which session, and ending sessions from outside their connection.
//!
//! Sessions are keyed by (tenant, client identifier): tenants never see each other's ids. An
//! entry remembers the principal (client and subject) that owns it, while it is connected and,
//! for a persistent session, afterwards too, so another principal can neither take it over nor
//! resume it. Ending a live session (token revoked or expired, client deleted, key invalidated)
//! sends its connection an [`EndReason`]; the connection says goodbye in its protocol's words.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// Why lanyard ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its token was revoked, its client deleted, or its signing key invalidated.
    NotAuthorized,
    /// Its token expired.
    Expired,
    /// The same principal connected again with the same client identifier.
    TakenOver,
    ShuttingDown,
}

/// The owner of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    pub sub: String,
}

/// What a live session was authorised with.
#[derive(Debug, Clone)]
pub struct Grant {
    pub tenant_id: String,
    pub slug: String,
    pub jti: String,
    pub kid: String,
    pub exp: i64,
    /// Scopes and system: a persistent session is resumed only under the same grant, so its
    /// subscriptions never outlive the permissions they were granted under.
    pub fingerprint: String,
}

struct Live {
    seq: u64,
    grant: Grant,
    end: Option<oneshot::Sender<EndReason>>,
}

struct Entry {
    owner: Principal,
    /// The grant the stored persistent session was last held under.
    fingerprint: String,
    persistent: bool,
    live: Option<Live>,
    pending_will: Option<AbortHandle>,
    /// lanyard's own exact topics the stored session subscribes to (see `LanyardTopics`).
    topics: HashSet<String>,
}

/// The session a connection now holds.
pub struct Claim {
    pub seq: u64,
    pub ended: oneshot::Receiver<EndReason>,
    /// The stored session may be resumed: same owner, same grant.
    pub may_resume: bool,
    /// With `may_resume`: lanyard's own exact topics the stored session subscribes to.
    pub topics: HashSet<String>,
    /// The id held a persistent session, connected or stored, which a clean session discards.
    pub held_persistent: bool,
}

#[derive(Default)]
pub struct Sessions {
    entries: Mutex<HashMap<(String, String), Entry>>,
    next_seq: AtomicU64,
}

type Key = (String, String);

impl Sessions {
    /// Claims the session `key` for `owner`; None if another principal holds it (connected,
    /// or as a stored persistent session). A live session of the same owner is ended.
    pub fn claim(
        &self,
        key: &Key,
        owner: &Principal,
        grant: Grant,
        persistent: bool,
    ) -> Option<Claim> {
        let mut entries = self.entries.lock().expect("sessions lock");
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (end, ended) = oneshot::channel();
        let live = Live {
            seq,
            end: Some(end),
            grant: grant.clone(),
        };
        let may_resume;
        let mut held_persistent = false;
        let mut topics = HashSet::new();
        match entries.get_mut(key) {
            Some(entry) if entry.owner != *owner => return None,
            Some(entry) => {
                if let Some(mut old) = entry.live.take()
                    && let Some(end) = old.end.take()
                {
                    let _ = end.send(EndReason::TakenOver);
                }
                if let Some(will) = entry.pending_will.take() {
                    will.abort();
                }
                held_persistent = entry.persistent;
                may_resume = entry.persistent && entry.fingerprint == grant.fingerprint;
                if may_resume {
                    topics = std::mem::take(&mut entry.topics);
                }
                entry.persistent = persistent;
                entry.fingerprint = grant.fingerprint;
                entry.live = Some(live);
            }
            None => {
                may_resume = false;
                entries.insert(
                    key.clone(),
                    Entry {
                        owner: owner.clone(),
                        fingerprint: grant.fingerprint,
                        persistent,
                        live: Some(live),
                        pending_will: None,
                        topics: HashSet::new(),
                    },
                );
            }
        }
        Some(Claim {
            seq,
            ended,
            may_resume,
            topics,
            held_persistent,
        })
    }

    /// The connection holding claim `seq` ended. A clean session is forgotten; a persistent
    /// one stays owned, with the lanyard topics it subscribes to.
    pub fn release(&self, key: &Key, seq: u64, topics: HashSet<String>) {
        let mut entries = self.entries.lock().expect("sessions lock");
        if let Some(entry) = entries.get_mut(key)
            && entry.live.as_ref().is_some_and(|l| l.seq == seq)
        {
            entry.live = None;
            entry.topics = topics;
            if !entry.persistent && entry.pending_will.is_none() {
                entries.remove(key);
            }
        }
    }

    /// A delayed will for `key`; connecting again with the same client identifier cancels it.
    pub fn set_pending_will(&self, key: &Key, will: AbortHandle) {
        let mut entries = self.entries.lock().expect("sessions lock");
        match entries.get_mut(key) {
            Some(entry) if entry.live.is_none() => entry.pending_will = Some(will),
            _ => will.abort(),
        }
    }

    /// The delayed will of `key` was sent.
    pub fn will_sent(&self, key: &Key) {
        let mut entries = self.entries.lock().expect("sessions lock");
        if let Some(entry) = entries.get_mut(key) {
            entry.pending_will = None;
            if entry.live.is_none() && !entry.persistent {
                entries.remove(key);
            }
        }
    }

    /// Ends every live session whose grant `pick` selects.
    pub fn end_where(&self, reason: EndReason, pick: impl Fn(&Principal, &Grant) -> bool) -> usize {
        let mut entries = self.entries.lock().expect("sessions lock");
        let mut ended = 0;
        for entry in entries.values_mut() {
            let owner = &entry.owner;
            if let Some(live) = entry.live.as_mut()
                && pick(owner, &live.grant)
                && let Some(end) = live.end.take()
            {
                let _ = end.send(reason);
                ended += 1;
            }
        }
        ended
    }

    /// Forgets the stored sessions of a deleted client, so its ids can be used again.
    pub fn forget_owner(&self, tenant_id: &str, client_id: &str) {
        let mut entries = self.entries.lock().expect("sessions lock");
        entries.retain(|(t, _), e| !(t == tenant_id && e.owner.client_id == client_id));
    }

    /// The grants of every live session, to re-check them when events may have been missed.
    pub fn live_grants(&self) -> Vec<(Principal, Grant)> {
        let entries = self.entries.lock().expect("sessions lock");
        entries
            .values()
            .filter_map(|e| e.live.as_ref().map(|l| (e.owner.clone(), l.grant.clone())))
            .collect()
    }
}
