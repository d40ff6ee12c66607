//! Offline trust (SPEC §10): what a device needs to decide alone, from signed messages, whether
//! a local API token still holds and which keys are the tenant's.
//!
//! - **Token status lists** (draft-ietf-oauth-status-list, JWT form): one per system, one bit per
//!   local API token at the index its `status` claim carries; set when the token is revoked,
//!   never cleared. Indices come from [`Authority::next_status_index`], a block at a time per
//!   node ([`RESERVE_AT_ONCE`]): the first mint in a tenant reserves one for each of its systems
//!   (up to [`PRIMED_AT_ONCE`]) in one statement, so that a mint seldom waits for a write of its
//!   own; a list covers every index reserved, rounded up to a multiple of [`LIST_GRANULE`], so a
//!   token minted on any node is inside the list the next read gives, and a mint seldom
//!   lengthens the published list (which would mean signing it again). A signed list is kept
//!   and handed out again while its bits and signer are the same and less than half of
//!   `tokens.status_list_ttl` has passed; the database is read again at most once a second per
//!   list (at once after a change announced here or by another node). Requests for one list that find it stale wait for one
//!   of them to read and sign it ([`SIGNING_LOCKS`] locks, by list), and a list read before a
//!   change was announced is not kept after it.
//! - **The signed key schedule** (`jwk-set+jwt`): the published keys with their status and
//!   times, numbered by the tenant's `key_schedule_seq` (read with the keys, moved on by every
//!   key change in its transaction) and signed by the ACTIVE key; signed once per number.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::{Authority, Error, Result, Tenant};
use crate::crypto::jws;
use crate::domain::KeyStatus;
use crate::metrics::Signed;
use crate::store::status_lists;

/// Indices a node reserves in the database at once, per system: a mint in a reserved block
/// asks nothing of the database for its index.
pub const RESERVE_AT_ONCE: i64 = 32;
/// Systems whose blocks the first mint in a tenant reserves together.
pub const PRIMED_AT_ONCE: usize = 16_384;
/// A list's length is a multiple of this many indices (128 bytes before compression, a few
/// after): a system with 100,000 tokens has a list of at most 12.5 KiB.
pub const LIST_GRANULE: usize = 1024;
/// How long a list read from the database is handed out without reading it again, unless a
/// change is announced.
const REREAD_AFTER: Duration = Duration::from_secs(1);
/// Lists and blocks kept in memory; past this many the memory starts over.
const MAX_KEPT: usize = 65_536;
/// Locks that lists are read and signed under, a list's by its hash: a flood of requests for
/// a list that changed signs it once, and requests for other lists (unknown ones included)
/// mostly wait on other locks.
const SIGNING_LOCKS: usize = 64;
/// The `typ` of a Status List Token.
pub const STATUS_LIST_TYP: &str = "statuslist+jwt";
/// The `typ` of a signed key schedule.
pub const KEY_SCHEDULE_TYP: &str = "jwk-set+jwt";

/// A signed Status List Token, as served and published.
#[derive(Debug)]
pub struct StatusListToken {
    pub jwt: String,
    pub iat: i64,
    /// Indices the list covers (a multiple of [`LIST_GRANULE`]).
    pub len: i64,
    kid: String,
    bits: Vec<u8>,
    read_at: Instant,
}

/// A signed key schedule.
#[derive(Debug)]
pub struct KeySchedule {
    pub jwt: String,
    pub seq: i64,
    kid: String,
}

/// Indices reserved for one system and not given out yet; held while a block is reserved.
type Block = tokio::sync::Mutex<std::ops::Range<i64>>;

/// What offline trust keeps in memory.
pub struct OfflineTrust {
    /// Signed lists by (tenant id, system id).
    lists: Mutex<HashMap<(String, String), Arc<StatusListToken>>>,
    /// Counts what was forgotten: a list read before a change was announced is not kept.
    forgotten: std::sync::atomic::AtomicU64,
    /// Reserves blocks of indices, several together; started at the first (it needs the
    /// runtime).
    reservations: std::sync::OnceLock<status_lists::Reservations>,
    /// Tenants whose systems got a block each from this node.
    primed: tokio::sync::Mutex<std::collections::HashSet<String>>,
    /// Held while a stale list is read and signed, a list's by its hash.
    signing: [tokio::sync::Mutex<()>; SIGNING_LOCKS],
    /// The indices this node reserved and has not given out yet, by (tenant id, system id).
    blocks: Mutex<HashMap<(String, String), Arc<Block>>>,
    /// The last schedule signed, by tenant id.
    schedules: Mutex<HashMap<String, Arc<KeySchedule>>>,
}

impl Default for OfflineTrust {
    fn default() -> Self {
        OfflineTrust {
            lists: Mutex::default(),
            forgotten: Default::default(),
            reservations: Default::default(),
            primed: Default::default(),
            signing: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            blocks: Mutex::default(),
            schedules: Mutex::default(),
        }
    }
}

impl OfflineTrust {
    /// Forgets the signed lists of a tenant (all of them with `None` for the system, all tenants
    /// with `None` for both): they are read again when next asked for.
    pub(super) fn forget_lists(&self, tenant_id: Option<&str>, system_id: Option<&str>) {
        let mut lists = self.lists.lock().expect("status lists lock");
        self.forgotten
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match (tenant_id, system_id) {
            (Some(t), Some(s)) => {
                lists.remove(&(t.to_owned(), s.to_owned()));
            }
            (Some(t), None) => lists.retain(|(tenant, _), _| tenant != t),
            _ => lists.clear(),
        }
    }
}

/// The `status` claim of a local API token.
#[derive(Serialize)]
pub(super) struct StatusClaim<'a> {
    pub status_list: StatusReference<'a>,
}

#[derive(Serialize)]
pub(super) struct StatusReference<'a> {
    pub idx: i64,
    pub uri: &'a str,
}

#[derive(Serialize)]
struct StatusListClaims<'a> {
    exp: i64,
    iat: i64,
    iss: &'a str,
    status_list: EncodedList,
    sub: &'a str,
    ttl: u64,
}

#[derive(Serialize)]
struct EncodedList {
    bits: u8,
    lst: String,
}

#[derive(Serialize)]
struct ScheduleClaims<'a> {
    iat: i64,
    iss: &'a str,
    keys: Vec<serde_json::Value>,
    seq: i64,
}

/// Where a system's status list is: `{issuer}/statuslists/{systemUuid}`.
pub fn status_list_uri(tenant: &Tenant, system_id: &str) -> String {
    format!("{}/statuslists/{system_id}", tenant.issuer)
}

/// How many indices a list covers when `reserved` have been reserved: a multiple of
/// [`LIST_GRANULE`], at least one.
fn list_len(reserved: i64) -> usize {
    usize::try_from(reserved.max(1))
        .unwrap_or(1)
        .next_multiple_of(LIST_GRANULE)
}

/// The bit array of a list covering at least `len` indices (a multiple of [`LIST_GRANULE`]) with
/// `revoked` set: index 0 is the least significant bit of byte 0.
pub fn bit_array(len: i64, revoked: &[i64]) -> Vec<u8> {
    let bytes = list_len(len) / 8;
    let mut bits = vec![0u8; bytes];
    for &idx in revoked {
        if let Ok(i) = usize::try_from(idx)
            && let Some(byte) = bits.get_mut(i / 8)
        {
            *byte |= 1 << (i % 8);
        }
    }
    bits
}

/// `lst`: the ZLIB (RFC 1950) compressed bit array, base64url without padding.
pub fn encode_lst(bits: &[u8]) -> String {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bits).expect("writing to memory");
    URL_SAFE_NO_PAD.encode(z.finish().expect("writing to memory"))
}

impl Authority {
    /// The next index of a system's status list for a token minted here. `NotFound` when the
    /// system does not exist.
    pub(super) async fn next_status_index(&self, tenant_id: &str, system_id: &str) -> Result<i64> {
        let key = (tenant_id.to_owned(), system_id.to_owned());
        let block = {
            let mut blocks = self.offline.blocks.lock().expect("status blocks lock");
            if blocks.len() >= MAX_KEPT && !blocks.contains_key(&key) {
                // Only blocks no mint holds: one being reserved must stay the only one of its
                // system, or two reservations could be asked for it together.
                blocks.retain(|_, block| Arc::strong_count(block) > 1);
            }
            blocks.entry(key).or_default().clone()
        };
        let mut range = block.lock().await;
        let mut grew = false;
        if range.is_empty()
            && let Some(primed) = self.prime_status_indices(tenant_id, system_id).await
        {
            *range = primed;
            grew = true;
        }
        if range.is_empty() {
            let reservations = self.offline.reservations.get_or_init(|| {
                status_lists::Reservations::start(self.db.clone(), RESERVE_AT_ONCE)
            });
            let coming = reservations.expect();
            let first = reservations
                .reserve((tenant_id, system_id), coming)
                .await?
                .ok_or_else(|| Error::NotFound(format!("no system {system_id}")))?;
            *range = first..first + RESERVE_AT_ONCE;
            grew = true;
        }
        let idx = range.start;
        range.start += 1;
        if grew && list_len(range.end - RESERVE_AT_ONCE) != list_len(range.end) {
            // The list the system's devices need is longer now.
            self.offline.forget_lists(Some(tenant_id), Some(system_id));
        }
        Ok(idx)
    }

    /// Forgets the signed status list of a system, which changed elsewhere: the next asking
    /// reads it anew.
    pub fn forget_status_list(&self, tenant_id: &str, system_id: &str) {
        self.offline.forget_lists(Some(tenant_id), Some(system_id));
    }

    /// At the first mint in a tenant on this node: reserves a block for each of its systems in
    /// one statement, keeps the others' blocks and returns `system_id`'s (`None` when the tenant
    /// was primed before, or priming failed: the system then reserves on its own).
    async fn prime_status_indices(
        &self,
        tenant_id: &str,
        system_id: &str,
    ) -> Option<std::ops::Range<i64>> {
        let mut primed = self.offline.primed.lock().await;
        if primed.contains(tenant_id) {
            return None;
        }
        let ends = match status_lists::reserve_for_tenant(
            &self.db,
            tenant_id,
            RESERVE_AT_ONCE,
            PRIMED_AT_ONCE,
        )
        .await
        {
            Ok(ends) => ends,
            Err(e) => {
                tracing::warn!("reserving status-list indices for a tenant's systems: {e}");
                return None;
            }
        };
        primed.insert(tenant_id.to_owned());
        let mut mine = None;
        let mut blocks = self.offline.blocks.lock().expect("status blocks lock");
        for (system, end) in ends {
            let range = end - RESERVE_AT_ONCE..end;
            if system == system_id {
                mine = Some(range);
            } else if blocks.len() < MAX_KEPT {
                // A system whose block is in use (being reserved alone) keeps it; the one
                // reserved here is left unused.
                blocks
                    .entry((tenant_id.to_owned(), system))
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(range)));
            }
        }
        mine
    }

    /// The system's signed status list, or `None` when the tenant has no such system.
    pub async fn status_list(
        &self,
        tenant: &Tenant,
        system_id: &str,
    ) -> Result<Option<Arc<StatusListToken>>> {
        let key = (tenant.id.to_string(), system_id.to_owned());
        let now = self.now();
        let ttl = self.settings.tokens.status_list_ttl.as_secs();
        let half = (ttl / 2) as i64;
        let fresh = || {
            self.offline
                .lists
                .lock()
                .expect("status lists lock")
                .get(&key)
                .filter(|kept| kept.read_at.elapsed() < REREAD_AFTER && now < kept.iat + half)
                .cloned()
        };
        if let Some(kept) = fresh() {
            return Ok(Some(kept));
        }
        let lock = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(&key);
            &self.offline.signing[hash as usize % SIGNING_LOCKS]
        };
        let _signing = lock.lock().await;
        // Another request may have read it meanwhile.
        if let Some(kept) = fresh() {
            return Ok(Some(kept));
        }
        let kept = self
            .offline
            .lists
            .lock()
            .expect("status lists lock")
            .get(&key)
            .cloned();
        let seen = self
            .offline
            .forgotten
            .load(std::sync::atomic::Ordering::SeqCst);
        let Some(stored) = status_lists::read(&self.db, &tenant.id, system_id).await? else {
            return Ok(None);
        };
        let bits = bit_array(stored.len, &stored.revoked);
        let keys = self.keyring(tenant).await?;
        let signer = keys
            .signer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("tenant {} has no ACTIVE signing key", tenant.slug))?;
        let token = match kept {
            // The same list, signed by the same key, and fresh enough: only read again.
            Some(kept) if kept.bits == bits && kept.kid == signer.kid && now < kept.iat + half => {
                StatusListToken {
                    jwt: kept.jwt.clone(),
                    iat: kept.iat,
                    len: kept.len,
                    kid: kept.kid.clone(),
                    bits,
                    read_at: Instant::now(),
                }
            }
            _ => {
                let uri = status_list_uri(tenant, system_id);
                let _signing = self.metrics.signing(Signed::TrustMessage);
                let claims = StatusListClaims {
                    exp: now + ttl as i64,
                    iat: now,
                    iss: &tenant.issuer,
                    status_list: EncodedList {
                        bits: 1,
                        lst: encode_lst(&bits),
                    },
                    sub: &uri,
                    ttl,
                };
                StatusListToken {
                    jwt: jws::sign(&signer.key, &signer.kid, STATUS_LIST_TYP, &claims),
                    iat: now,
                    len: bits.len() as i64 * 8,
                    kid: signer.kid.clone(),
                    bits,
                    read_at: Instant::now(),
                }
            }
        };
        let token = Arc::new(token);
        let mut lists = self.offline.lists.lock().expect("status lists lock");
        // Read before a change was announced: good for this answer, not to keep.
        if self
            .offline
            .forgotten
            .load(std::sync::atomic::Ordering::SeqCst)
            == seen
        {
            if lists.len() >= MAX_KEPT && !lists.contains_key(&key) {
                lists.clear();
            }
            lists.insert(key, token.clone());
        }
        Ok(Some(token))
    }

    /// The tenant's signed key schedule: its published keys, each with its status, `nbf` (when
    /// it signs from) and `exp` (when it leaves the JWKS, where known), numbered `seq` and signed
    /// by the ACTIVE key.
    pub async fn key_schedule(&self, tenant: &Tenant) -> Result<Arc<KeySchedule>> {
        let keys = self.keyring(tenant).await?;
        let signer = keys
            .signer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("tenant {} has no ACTIVE signing key", tenant.slug))?;
        if let Some(kept) = self
            .offline
            .schedules
            .lock()
            .expect("schedules lock")
            .get(tenant.id.as_str())
            && kept.seq == keys.schedule_seq
            && kept.kid == signer.kid
        {
            return Ok(kept.clone());
        }
        let mut listed = Vec::new();
        for key in &keys.keys {
            let Some(verifier) = keys.verifier(&key.kid) else {
                continue;
            };
            let mut jwk = verifier.jwk();
            let status = match key.status {
                KeyStatus::Pending => "PENDING",
                KeyStatus::Active => "ACTIVE",
                _ => "RETIRED",
            };
            jwk["status"] = status.into();
            jwk["nbf"] = key.activates_at.unwrap_or(key.created_at).into();
            if key.status == KeyStatus::Retired
                && let Some(exp) = key.publish_until
            {
                jwk["exp"] = exp.into();
            }
            listed.push(jwk);
        }
        let _signing = self.metrics.signing(Signed::TrustMessage);
        let claims = ScheduleClaims {
            iat: self.now(),
            iss: &tenant.issuer,
            keys: listed,
            seq: keys.schedule_seq,
        };
        let schedule = Arc::new(KeySchedule {
            jwt: jws::sign(&signer.key, &signer.kid, KEY_SCHEDULE_TYP, &claims),
            seq: keys.schedule_seq,
            kid: signer.kid.clone(),
        });
        self.offline
            .schedules
            .lock()
            .expect("schedules lock")
            .insert(tenant.id.to_string(), schedule.clone());
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_zero_is_the_lowest_bit_of_the_first_byte() {
        let bits = bit_array(16, &[0, 9]);
        assert_eq!(bits.len(), 128);
        assert_eq!(bits[..3], [0x01, 0x02, 0x00]);
        assert_eq!(bit_array(0, &[]), vec![0; 128]);
        assert_eq!(bit_array(1025, &[1024])[128], 1);
        // An index outside the list (never stored) changes nothing.
        assert_eq!(bit_array(1024, &[1024, -1]), vec![0; 128]);
    }

    #[test]
    fn a_list_of_100000_tokens_is_at_most_12_5_kib_and_far_less_compressed() {
        // Every index reserved, a few left unused by restarts, one token in a hundred revoked.
        let len = 100_000 + 3 * RESERVE_AT_ONCE;
        let revoked: Vec<i64> = (0..len).step_by(100).collect();
        let bits = bit_array(len, &revoked);
        assert!(bits.len() <= 12_800, "{} bytes", bits.len());
        let lst = encode_lst(&bits);
        assert!(lst.len() < 2_000, "{} bytes in base64url", lst.len());
    }

    #[test]
    fn lst_is_zlib_in_base64url() {
        use std::io::Read;
        let lst = encode_lst(&[0xb9, 0xa3]);
        let raw = URL_SAFE_NO_PAD.decode(lst).unwrap();
        assert_eq!(raw[0] & 0x0f, 8, "deflate in a ZLIB header (RFC 1950)");
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, vec![0xb9, 0xa3]);
    }
}
