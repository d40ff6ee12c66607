//! How many live local API tokens each person holds on each system, remembered, so the cap of
//! `tokens.max_local_tokens_per_system` (SPEC §7) costs a mint a lookup, not a query.
//!
//! The first mint of a person on a system not seen lately reads the expiry of each of their
//! live tokens there (unexpired, unrevoked, signed by a published key) in one query; each mint
//! then adds its own expiry, and expired ones stop counting by themselves. A revocation forgets
//! the count, so the next mint reads it again; and a count is read again once [`MAX_AGE`] old,
//! so mints and revocations made on another node count soon. Two nodes, or two mints racing the
//! first read of a count, may each let one token through past the cap before they see the
//! other's: the cap bounds what a person can pile up, it is not a quota to the token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many counts are remembered; when full, all are forgotten.
const CAPACITY: usize = 200_000;
/// How long a count is trusted without reading it again.
pub const MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Tally {
    counts: Mutex<HashMap<String, Count>>,
}

struct Count {
    read_at: Instant,
    /// The expiry of each live token (`None`: permanent).
    expiries: Vec<Option<i64>>,
}

/// What [`Tally::reserve`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserved {
    /// The token counts now; mint it.
    Yes,
    /// The person already holds the cap.
    Full,
    /// Nothing is known lately: read the count and [`Tally::reserve_read`].
    Unknown,
}

/// Ids are UUIDs, so `/` cannot occur in them.
fn key(tenant_id: &str, user_id: &str, system_id: &str) -> String {
    format!("{tenant_id}/{user_id}/{system_id}")
}

impl Tally {
    /// Counts a token expiring at `exp` against the person's cap on the system, if the count is
    /// known and below `cap` at `now`.
    pub fn reserve(
        &self,
        (tenant_id, user_id, system_id): (&str, &str, &str),
        exp: Option<i64>,
        cap: usize,
        now: i64,
    ) -> Reserved {
        let mut counts = self.counts.lock().expect("tally lock");
        let Some(count) = counts.get_mut(&key(tenant_id, user_id, system_id)) else {
            return Reserved::Unknown;
        };
        if count.read_at.elapsed() > MAX_AGE {
            return Reserved::Unknown;
        }
        count.expiries.retain(|e| e.is_none_or(|e| e > now));
        if count.expiries.len() >= cap {
            return Reserved::Full;
        }
        count.expiries.push(exp);
        Reserved::Yes
    }

    /// As [`Tally::reserve`], with the count just read (`live`: the expiries of the person's
    /// live tokens on the system). When another mint read the count meanwhile and counted its
    /// own token in it, that count is kept and this token counted in it: two mints that read
    /// at once cannot both find room for the last token.
    pub fn reserve_read(
        &self,
        who: (&str, &str, &str),
        mut live: Vec<Option<i64>>,
        exp: Option<i64>,
        cap: usize,
        now: i64,
    ) -> Reserved {
        let (tenant_id, user_id, system_id) = who;
        {
            let mut counts = self.counts.lock().expect("tally lock");
            let fresh = counts
                .get(&key(tenant_id, user_id, system_id))
                .is_some_and(|c| c.read_at.elapsed() <= MAX_AGE);
            if !fresh {
                let full = live.len() >= cap;
                if !full {
                    live.push(exp);
                }
                if counts.len() >= CAPACITY {
                    counts.clear();
                }
                counts.insert(
                    key(tenant_id, user_id, system_id),
                    Count {
                        read_at: Instant::now(),
                        expiries: live,
                    },
                );
                return if full { Reserved::Full } else { Reserved::Yes };
            }
        }
        self.reserve(who, exp, cap, now)
    }

    /// Forgets a count: a token of it was revoked, or a mint counted in it failed.
    pub fn forget(&self, tenant_id: &str, user_id: &str, system_id: &str) {
        self.counts
            .lock()
            .expect("tally lock")
            .remove(&key(tenant_id, user_id, system_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHO: (&str, &str, &str) = ("t", "u", "s");

    #[test]
    fn a_count_is_read_once_then_kept_in_memory_up_to_the_cap() {
        let tally = Tally::default();
        assert_eq!(tally.reserve(WHO, Some(100), 3, 0), Reserved::Unknown);
        assert_eq!(
            tally.reserve_read(WHO, vec![None], Some(100), 3, 0),
            Reserved::Yes
        );
        assert_eq!(tally.reserve(WHO, Some(50), 3, 0), Reserved::Yes);
        assert_eq!(tally.reserve(WHO, None, 3, 0), Reserved::Full);
        // The token expiring at 50 no longer counts at 50.
        assert_eq!(tally.reserve(WHO, None, 3, 50), Reserved::Yes);
        assert_eq!(tally.reserve(WHO, None, 3, 50), Reserved::Full);
        tally.forget("t", "u", "s");
        assert_eq!(tally.reserve(WHO, None, 3, 50), Reserved::Unknown);
        assert_eq!(
            tally.reserve_read(WHO, vec![None, None, None], None, 3, 50),
            Reserved::Full
        );
    }

    #[test]
    fn two_mints_that_read_the_count_at_once_do_not_both_take_the_last_place() {
        let tally = Tally::default();
        // Both read two live tokens of a cap of three before either counted its own.
        assert_eq!(
            tally.reserve_read(WHO, vec![None, None], None, 3, 0),
            Reserved::Yes
        );
        assert_eq!(
            tally.reserve_read(WHO, vec![None, None], None, 3, 0),
            Reserved::Full
        );
    }
}
