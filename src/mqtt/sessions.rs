//! Who holds which session, and ending sessions from outside their connection.
//!
//! Sessions are keyed by (tenant, client identifier): tenants never see each other's ids. An
//! entry remembers the principal (client and subject) that owns it, while it is connected and,
//! for a persistent session, afterwards too, so another principal can neither take it over nor
//! resume it. Ending a live session (token revoked or expired, client deleted, key invalidated)
//! sends its connection an [`EndReason`]; the connection says goodbye in its protocol's words.
//! A stored session ends `expiry` seconds after its connection closed (MQTT 5.0 §3.1.2.11.2;
//! 3.1.1 persistent sessions get `mqtt.session_expiry`): [`Sessions::expire`] forgets it, and the
//! gate discards what the router held for it. A delayed will waits here too, and is dropped when its grant is withdrawn (token revoked,
//! client or person deleted, key invalidated), as the session would have been ended.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::authority::KnownToken;

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

/// The token a session was granted under. It names the session's owner, its client and
/// subject; it is shared with the connection and the token cache, not copied.
pub type Grant = Arc<KnownToken>;

/// Who owns a session granted under `grant`: its client and subject.
fn owner(grant: &KnownToken) -> (&str, &str) {
    let claims = &grant.verified.claims;
    (&claims.client_id, &claims.sub)
}

/// Whether a stored session may be resumed under `new`: the same scopes and system, so that
/// its subscriptions never outlive the permissions they were granted under.
fn same_permissions(old: &KnownToken, new: &KnownToken) -> bool {
    let (old, new) = (&old.verified.claims, &new.verified.claims);
    old.scope == new.scope && old.system == new.system
}

struct Live {
    seq: u64,
    end: Option<oneshot::Sender<EndReason>>,
}

struct Entry {
    /// The grant the session is, or was last, held under.
    grant: Grant,
    /// The session is kept after its connection closes, for `expiry` seconds.
    persistent: bool,
    expiry: u32,
    /// When a stored session ends: `expiry` after its connection closed.
    expires_at: Option<i64>,
    live: Option<Live>,
    pending_will: Option<AbortHandle>,
    /// lanyard's own exact topics the stored session subscribes to (see `LanyardTopics`).
    topics: BTreeSet<String>,
    /// Every filter the stored session subscribes to, where they are followed (sessions that
    /// may re-authenticate, see `handshake::Session::filters`).
    // Boxed: a pointer is all that a session that does not re-authenticate carries.
    #[allow(clippy::box_collection)]
    filters: Option<Box<BTreeSet<String>>>,
}

/// The session a connection now holds.
pub struct Claim {
    pub seq: u64,
    pub ended: oneshot::Receiver<EndReason>,
    /// The stored session may be resumed: same owner, same grant.
    pub may_resume: bool,
    /// With `may_resume`: lanyard's own exact topics the stored session subscribes to.
    pub topics: BTreeSet<String>,
    /// With `may_resume`: the filters the stored session subscribes to, where followed.
    pub filters: Option<Box<BTreeSet<String>>>,
    /// The id held a persistent session, connected or stored, which a clean session discards.
    pub held_persistent: bool,
}

#[derive(Default)]
pub struct Sessions {
    entries: Mutex<HashMap<Key, Entry>>,
    next_seq: AtomicU64,
}

/// A session's key: its tenant and client identifier, which has no `/` (see the CONNECT
/// checks). Shared by the connection and the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(Arc<str>);

impl Key {
    pub fn new(tenant_id: &str, client_id: &str) -> Key {
        Key(format!("{tenant_id}/{client_id}").into())
    }

    pub fn client_id(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, client)| client)
    }

    pub fn tenant_id(&self) -> &str {
        self.0.split_once('/').map_or("", |(tenant, _)| tenant)
    }
}

/// The client identifier: what logs name a session by.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.client_id())
    }
}

impl Sessions {
    /// Claims the session `key` for the owner of `grant`; None if another principal holds it
    /// (connected, or as a stored persistent session). A live session of the same owner is
    /// ended. The session is kept for `expiry` seconds after its connection closes (0: it ends
    /// with the connection).
    pub fn claim(&self, key: &Key, grant: &Grant, expiry: u32) -> Option<Claim> {
        let persistent = expiry > 0;
        let mut entries = self.entries.lock().expect("sessions lock");
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (end, ended) = oneshot::channel();
        let live = Live {
            seq,
            end: Some(end),
        };
        let may_resume;
        let mut held_persistent = false;
        let mut topics = BTreeSet::new();
        let mut filters = None;
        match entries.get_mut(key) {
            Some(entry) if owner(&entry.grant) != owner(grant) => return None,
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
                may_resume = entry.persistent && same_permissions(&entry.grant, grant);
                if may_resume {
                    topics = std::mem::take(&mut entry.topics);
                    filters = entry.filters.take();
                }
                entry.persistent = persistent;
                entry.expiry = expiry;
                entry.expires_at = None;
                entry.grant = grant.clone();
                entry.live = Some(live);
            }
            None => {
                may_resume = false;
                entries.insert(
                    key.clone(),
                    Entry {
                        grant: grant.clone(),
                        persistent,
                        expiry,
                        expires_at: None,
                        live: Some(live),
                        pending_will: None,
                        topics: BTreeSet::new(),
                        filters: None,
                    },
                );
            }
        }
        Some(Claim {
            seq,
            ended,
            may_resume,
            topics,
            filters,
            held_persistent,
        })
    }

    /// The connection holding claim `seq` re-authenticated (MQTT 5.0 §4.12): the session is
    /// held under `grant` from now on, its expiry and revocation included.
    pub fn regrant(&self, key: &Key, seq: u64, grant: &Grant) {
        let mut entries = self.entries.lock().expect("sessions lock");
        if let Some(entry) = entries.get_mut(key)
            && entry.live.as_ref().is_some_and(|l| l.seq == seq)
        {
            entry.grant = grant.clone();
        }
    }

    /// The connection holding claim `seq` ended at `now`. A clean session is forgotten; a
    /// persistent one stays owned, with the lanyard topics (and, where followed, the filters)
    /// it subscribes to, until it expires.
    pub fn release(
        &self,
        key: &Key,
        seq: u64,
        (topics, filters): (BTreeSet<String>, Option<Box<BTreeSet<String>>>),
        now: i64,
    ) {
        let mut entries = self.entries.lock().expect("sessions lock");
        if let Some(entry) = entries.get_mut(key)
            && entry.live.as_ref().is_some_and(|l| l.seq == seq)
        {
            entry.live = None;
            entry.topics = topics;
            entry.filters = filters;
            entry.expires_at = Some(now.saturating_add(i64::from(entry.expiry)));
            if !entry.persistent && entry.pending_will.is_none() {
                entries.remove(key);
            }
        }
    }

    /// The connection holding claim `seq` changed its session's expiry as it disconnected
    /// (MQTT 5.0 §3.14.2.2.2): 0 ends the session with the connection.
    pub fn set_expiry(&self, key: &Key, seq: u64, expiry: u32) {
        let mut entries = self.entries.lock().expect("sessions lock");
        if let Some(entry) = entries.get_mut(key)
            && entry.live.as_ref().is_some_and(|l| l.seq == seq)
        {
            entry.expiry = expiry;
            entry.persistent = expiry > 0;
        }
    }

    /// Forgets the stored sessions whose expiry has come by `now` (MQTT 5.0 §3.1.2.11.2); a
    /// pending will is sent first. Returns their keys: the router still holds their state.
    pub fn expire(&self, now: i64) -> Vec<Key> {
        let mut entries = self.entries.lock().expect("sessions lock");
        let mut expired = Vec::new();
        entries.retain(|key, entry| {
            let due = entry.live.is_none()
                && entry.pending_will.is_none()
                && entry.expires_at.is_some_and(|at| at <= now);
            if due {
                expired.push(key.clone());
            }
            !due
        });
        expired
    }

    /// Forgets the stored session `key` (not a live one): its permission was withdrawn.
    pub fn forget_stored(&self, key: &Key) {
        let mut entries = self.entries.lock().expect("sessions lock");
        if entries
            .get(key)
            .is_some_and(|e| e.live.is_none() && e.pending_will.is_none())
        {
            entries.remove(key);
        }
    }

    /// Sessions stored without a connection (persistent ones, and those with a pending will).
    pub fn stored(&self) -> usize {
        let entries = self.entries.lock().expect("sessions lock");
        entries.values().filter(|e| e.live.is_none()).count()
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
    pub fn end_where(&self, reason: EndReason, pick: impl Fn(&KnownToken) -> bool) -> usize {
        let mut entries = self.entries.lock().expect("sessions lock");
        let mut ended = 0;
        for entry in entries.values_mut() {
            if let Some(live) = entry.live.as_mut()
                && pick(&entry.grant)
                && let Some(end) = live.end.take()
            {
                let _ = end.send(reason);
                ended += 1;
            }
        }
        ended
    }

    /// Drops the pending wills of sessions whose grant `pick` selects: their token, client or
    /// person was revoked or deleted (SPEC §7). Returns how many.
    pub fn drop_wills_where(&self, pick: impl Fn(&KnownToken) -> bool) -> usize {
        let mut entries = self.entries.lock().expect("sessions lock");
        let mut dropped = 0;
        entries.retain(|_, entry| {
            if entry.live.is_none()
                && pick(&entry.grant)
                && let Some(will) = entry.pending_will.take()
            {
                will.abort();
                dropped += 1;
                return entry.persistent;
            }
            true
        });
        dropped
    }

    /// Forgets the sessions of a deleted client, so its ids can be used again; their pending
    /// wills are dropped. Returns the keys of those stored: the router still holds their state.
    pub fn forget_owner(&self, tenant_id: &str, client_id: &str) -> Vec<Key> {
        let mut entries = self.entries.lock().expect("sessions lock");
        let mut stored = Vec::new();
        entries.retain(|key, e| {
            let forget = e.grant.tenant.id == tenant_id && owner(&e.grant).0 == client_id;
            if forget {
                if let Some(will) = e.pending_will.take() {
                    will.abort();
                }
                if e.live.is_none() {
                    stored.push(key.clone());
                }
            }
            !forget
        });
        stored
    }

    /// The grants of every live session and every pending will, to re-check them when events
    /// may have been missed or a key changed.
    pub fn grants_in_force(&self) -> Vec<Grant> {
        let entries = self.entries.lock().expect("sessions lock");
        entries
            .values()
            .filter(|e| e.live.is_some() || e.pending_will.is_some())
            .map(|e| e.grant.clone())
            .collect()
    }
}
