//! Access tokens already known good, so a device reconnecting with the same token costs no
//! signature check and no database round trip.
//!
//! Keyed by the SHA-256 of the token; an entry is valid until the token's `exp` and is dropped
//! the moment this process hears of a revocation, a deleted client or a key change of its
//! tenant (see `Authority::emit`). A verification that started before such a change may not
//! insert its result afterwards: every change bumps a generation, and an insert carries the
//! generation its checks started in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use crate::authority::{Tenant, VerifiedAccessToken};
use crate::domain::ScopeSet;

/// At most this many tokens are remembered; beyond it, new ones are verified every time.
const CAPACITY: usize = 200_000;

/// A token's place in the cache: its SHA-256, computed once per check.
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub fn of(token: &str) -> CacheKey {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        CacheKey(d.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }
}

#[derive(Debug, Clone)]
pub struct KnownToken {
    pub tenant: Tenant,
    pub verified: VerifiedAccessToken,
    /// The token's `scope`, parsed once.
    pub scopes: ScopeSet,
}

impl KnownToken {
    /// Who the token speaks for, as the topic permissions see it (SPEC §4).
    pub fn identity(&self) -> crate::domain::acl::Identity<'_> {
        let claims = &self.verified.claims;
        crate::domain::acl::Identity {
            slug: self.tenant.slug.as_str(),
            client_id: &claims.client_id,
            sub: &claims.sub,
            system: claims.system.as_deref(),
            scopes: &self.scopes,
        }
    }
}

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Arc<KnownToken>>>,
    generation: AtomicU64,
}

impl TokenCache {
    /// The generation to pass to [`TokenCache::insert`] once the checks are done.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn get(&self, key: &CacheKey, now: i64) -> Option<Arc<KnownToken>> {
        let entries = self.entries.lock().expect("token cache lock");
        entries
            .get(&key.0)
            .filter(|known| now < known.verified.claims.exp)
            .cloned()
    }

    pub fn insert(&self, key: CacheKey, known: Arc<KnownToken>, checked_in: u64, now: i64) {
        let mut entries = self.entries.lock().expect("token cache lock");
        if self.generation.load(Ordering::SeqCst) != checked_in {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.retain(|_, k| now < k.verified.claims.exp);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(key.0, known);
    }

    /// Forgets every token the predicate picks, and fails inserts of checks already running.
    pub fn forget(&self, pick: impl Fn(&KnownToken) -> bool) {
        let mut entries = self.entries.lock().expect("token cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, k| !pick(k));
    }
}
