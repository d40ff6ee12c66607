//! Each tenant's keys held parsed in memory: the signer, the verifiers and the JWKS document.
//!
//! A keyring is rebuilt from the database when this process changes the tenant's keys (an
//! [`Event::KeysChanged`](crate::authority::Event)) and at the latest [`MAX_AGE`] after it was loaded, which
//! is how changes made by another process (the `bootstrap` command, another node) are seen.
//! Private keys are unsealed and parsed once per `kid` and kept, so a refresh costs one query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::authority::{Authority, Result, Tenant};
use crate::crypto::{SigningKey, VerifyingKey};
use crate::domain::{KeyStatus, TenantId};
use crate::store::signing_keys::{self, KeyRow};

/// How long a keyring is trusted before it is reloaded.
pub const MAX_AGE: Duration = Duration::from_secs(3);

/// A signing key as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub status: KeyStatus,
    pub created_at: i64,
    /// When it starts (PENDING) or started (ACTIVE) signing.
    pub activates_at: Option<i64>,
    /// RETIRED: when the last access token it signed expires.
    pub publish_until: Option<i64>,
}

/// The signer of a tenant: the ACTIVE key.
pub struct Signer {
    pub kid: String,
    pub key: Arc<SigningKey>,
}

pub struct TenantKeys {
    loaded_at: Instant,
    pub signer: Option<Signer>,
    verifiers: HashMap<String, VerifyingKey>,
    /// `{"keys":[…]}` of the published keys, serialised once.
    pub jwks: Arc<String>,
    pub keys: Vec<KeyInfo>,
    /// The tenant's key-schedule sequence number as of this read (SPEC §10).
    pub schedule_seq: i64,
}

impl TenantKeys {
    /// The published key with this `kid`, if any: INVALIDATED and deleted keys verify nothing.
    pub fn verifier(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifiers.get(kid)
    }
}

#[derive(Default)]
pub struct KeyRings {
    tenants: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
    private: Mutex<HashMap<String, Arc<SigningKey>>>,
    /// Counts what was forgotten: a keyring read from the database before a change was
    /// announced is not kept after it (it may hold a key just invalidated or deleted).
    forgotten: AtomicU64,
}

impl KeyRings {
    pub(in crate::authority) fn forget(&self, tenant_id: &str) {
        let mut tenants = self.tenants.write().expect("keyring lock");
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        tenants.remove(tenant_id);
    }

    pub(in crate::authority) fn forget_all(&self) {
        let mut tenants = self.tenants.write().expect("keyring lock");
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        tenants.clear();
    }

    /// Keeps `keys`, read after `forgotten` was `seen`, unless something was forgotten since.
    fn keep(&self, tenant_id: &TenantId, keys: Arc<TenantKeys>, seen: u64) {
        let mut tenants = self.tenants.write().expect("keyring lock");
        if self.forgotten.load(Ordering::SeqCst) == seen {
            tenants.insert(tenant_id.clone(), keys);
        }
    }

    fn fresh(&self, tenant_id: &str) -> Option<Arc<TenantKeys>> {
        let map = self.tenants.read().expect("keyring lock");
        map.get(tenant_id)
            .filter(|k| k.loaded_at.elapsed() < MAX_AGE)
            .cloned()
    }
}

impl Authority {
    /// The tenant's keys, from memory when fresh.
    pub async fn keyring(&self, tenant: &Tenant) -> Result<Arc<TenantKeys>> {
        if let Some(keys) = self.keyrings.fresh(&tenant.id) {
            return Ok(keys);
        }
        let seen = self.keyrings.forgotten.load(Ordering::SeqCst);
        let rows = signing_keys::list_for_tenant(&self.db, &tenant.id).await?;
        let keys = Arc::new(self.build_keyring(rows)?);
        self.keyrings.keep(&tenant.id, keys.clone(), seen);
        Ok(keys)
    }

    fn build_keyring(&self, rows: Vec<KeyRow>) -> Result<TenantKeys> {
        let mut signer = None;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        let mut keys = Vec::new();
        let schedule_seq = rows.first().map_or(0, |row| row.schedule_seq);
        for row in rows {
            let status: KeyStatus = row.status.parse().map_err(anyhow::Error::from)?;
            keys.push(KeyInfo {
                kid: row.kid.clone(),
                status,
                created_at: row.created_at,
                activates_at: row.activates_at,
                publish_until: row.publish_until,
            });
            if !status.is_published() {
                continue;
            }
            let public = VerifyingKey::from_components(&row.kid, &row.public_n, &row.public_e)
                .with_context(|| format!("stored public key {}", row.kid))?;
            jwks.push(public.jwk());
            if status == KeyStatus::Active {
                signer = Some(Signer {
                    kid: row.kid.clone(),
                    key: self.unseal(&row)?,
                });
            }
            verifiers.insert(row.kid, public);
        }
        Ok(TenantKeys {
            loaded_at: Instant::now(),
            signer,
            verifiers,
            jwks: Arc::new(json!({ "keys": jwks }).to_string()),
            keys,
            schedule_seq,
        })
    }

    fn unseal(&self, row: &KeyRow) -> Result<Arc<SigningKey>> {
        let mut cache = self.keyrings.private.lock().expect("keyring lock");
        if let Some(key) = cache.get(&row.kid) {
            return Ok(key.clone());
        }
        let der = self
            .kek
            .open(&row.kid, &row.sealed_private_key)
            .with_context(|| format!("signing key {}", row.kid))?;
        let key = Arc::new(
            SigningKey::from_pkcs8(&der).with_context(|| format!("signing key {}", row.kid))?,
        );
        cache.insert(row.kid.clone(), key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Arc<TenantKeys> {
        Arc::new(TenantKeys {
            loaded_at: Instant::now(),
            signer: None,
            verifiers: HashMap::new(),
            jwks: Arc::new(r#"{"keys":[]}"#.into()),
            keys: Vec::new(),
            schedule_seq: 0,
        })
    }

    #[test]
    fn a_keyring_read_before_a_change_is_not_kept_after_it() {
        let rings = KeyRings::default();
        let tenant = TenantId::generate();
        // Read, then a change is announced before the read is kept: it is dropped.
        let seen = rings.forgotten.load(Ordering::SeqCst);
        rings.forget(&tenant);
        rings.keep(&tenant, empty(), seen);
        assert!(rings.fresh(&tenant).is_none());
        // A read after the change is kept.
        let seen = rings.forgotten.load(Ordering::SeqCst);
        rings.keep(&tenant, empty(), seen);
        assert!(rings.fresh(&tenant).is_some());
        // Every change counts, a resync too.
        let seen = rings.forgotten.load(Ordering::SeqCst);
        rings.forget_all();
        rings.keep(&tenant, empty(), seen);
        assert!(rings.fresh(&tenant).is_none());
    }
}
