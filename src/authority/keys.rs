//! The signing-key lifecycle (SPEC §5): rotate with publish-ahead, automatic rotation,
//! retirement while signed tokens live, invalidate / reactivate / delete.
//!
//! [`Authority::maintain_keys_once`] is the one step of the background job: promote PENDING keys
//! whose publish-ahead has passed, start a rotation for keys older than the rotation interval,
//! and drop RETIRED keys nothing can verify with any more. Every step is a conditional write, so
//! several nodes running it at once do each thing once and never leave two ACTIVE keys.

use anyhow::Context;

use super::audit::LANYARD;
use super::cache::keyring::KeyInfo;
use super::caller::{KEYS_READ, KEYS_WRITE};
use super::{Actor, Authority, Error, Event, Result, Tenant};
use crate::crypto::{KeyEncryptionKey, SigningKey};
use crate::domain::KeyStatus;
use crate::store::key_encryption::{self, ResealRefused};
use crate::store::signing_keys::{self, NewKey, Replacement};
use crate::store::{StoreError, jobs, tenants};

/// How long past the access-token lifetime a retired key stays published: covers another node
/// that still signs with a keyring loaded just before the rotation, and small clock skew.
const RETIREMENT_MARGIN_SECS: i64 = 60;
/// The advisory lock of the key job (any number, the same on every node).
pub const KEY_JOB_LOCK: i64 = 0x6c61_6e79_6172_6401;

impl Authority {
    /// Generates and seals a key. RSA generation takes tens of milliseconds, so it runs on the
    /// blocking pool.
    pub(crate) async fn generate_key(
        &self,
        tenant_id: &str,
        status: &'static str,
        now: i64,
        activates_at: Option<i64>,
    ) -> Result<NewKey> {
        let key = tokio::task::spawn_blocking(SigningKey::generate)
            .await
            .context("key generation task")?
            .context("key generation")?;
        let kid = uuid::Uuid::new_v4().to_string();
        let (public_n, public_e) = key.public_components();
        Ok(NewKey {
            sealed_private_key: self.kek.seal(&kid, &key.to_pkcs8()),
            kid,
            tenant_id: tenant_id.to_owned(),
            status,
            public_n,
            public_e,
            created_at: now,
            activates_at,
            kek_check: self.kek.check_value().to_owned(),
        })
    }

    /// The tenant's keys, oldest first, in every state.
    pub async fn signing_keys(&self, by: impl Into<Actor<'_>>) -> Result<Vec<KeyInfo>> {
        let by = by.into();
        by.require(KEYS_READ)?;
        self.keys_of(by.tenant()).await
    }

    async fn keys_of(&self, tenant: &Tenant) -> Result<Vec<KeyInfo>> {
        Ok(self.keyring(tenant).await?.keys.clone())
    }

    fn key_changed(&self, tenant: &Tenant) {
        self.emit(Event::KeysChanged {
            tenant_id: tenant.id.to_string(),
            slug: tenant.slug.to_string(),
        });
    }

    async fn key_info(&self, tenant: &Tenant, kid: &str) -> Result<KeyInfo> {
        self.keys_of(tenant)
            .await?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| Error::NotFound(format!("no signing key {kid}")))
    }

    /// Adds a PENDING key that starts signing after `tokens.key_publish_ahead`; the current key
    /// is retired then.
    pub async fn rotate_signing_key(&self, by: impl Into<Actor<'_>>) -> Result<KeyInfo> {
        let by = by.into();
        by.require(KEYS_WRITE)?;
        let tenant = by.tenant();
        let now = self.now();
        let activates_at = now + self.settings.tokens.key_publish_ahead.as_secs_i64();
        let key = self
            .generate_key(&tenant.id, "PENDING", now, Some(activates_at))
            .await?;
        let event = self.event(&by, "key.created", format!("key:{}", key.kid));
        match signing_keys::insert(&self.db, &event, &key).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                return Err(Error::Conflict(
                    "a new key is already pending; it starts signing when its publish-ahead time has passed".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(tenant = %tenant.slug, kid = %key.kid, activates_at, "signing key rotation started");
        self.key_changed(tenant);
        self.key_info(tenant, &key.kid).await
    }

    /// Removes the key from the JWKS at once; everything it signed stops verifying. If it was the
    /// signer, the pending key takes over at once, or a new key is created to.
    pub async fn invalidate_signing_key(
        &self,
        by: impl Into<Actor<'_>>,
        kid: &str,
    ) -> Result<KeyInfo> {
        let by = by.into();
        by.require(KEYS_WRITE)?;
        let tenant = by.tenant();
        let current = self.key_info(tenant, kid).await?;
        if current.status == KeyStatus::Invalidated {
            return Ok(current);
        }
        let now = self.now();
        let keys = self.keys_of(tenant).await?;
        let pending = keys.iter().find(|k| k.status == KeyStatus::Pending);
        let new_key;
        let replacement = match (current.status, pending) {
            (KeyStatus::Active, Some(p)) => Replacement::Pending(&p.kid),
            (KeyStatus::Active, None) => {
                new_key = self
                    .generate_key(&tenant.id, "ACTIVE", now, Some(now))
                    .await?;
                Replacement::New(&new_key)
            }
            _ => Replacement::None,
        };
        // The key that takes over signing, if any, is named in the same event.
        let target = match &replacement {
            Replacement::Pending(p) => format!("key:{kid}, signing handed to key:{p}"),
            Replacement::New(k) => format!("key:{kid}, signing handed to new key:{}", k.kid),
            Replacement::None => format!("key:{kid}"),
        };
        let event = self.event(&by, "key.invalidated", target);
        if !signing_keys::invalidate(
            &self.db,
            &event,
            (&tenant.id, kid),
            now,
            &self.node_id,
            replacement,
        )
        .await?
        {
            return Err(Error::Conflict(format!(
                "signing key {kid} changed meanwhile; try again"
            )));
        }
        tracing::warn!(tenant = %tenant.slug, kid, "signing key invalidated");
        self.key_changed(tenant);
        self.key_info(tenant, kid).await
    }

    /// Publishes an invalidated key again. It comes back RETIRED: it verifies what it signed, but
    /// another key has taken over signing.
    pub async fn reactivate_signing_key(
        &self,
        by: impl Into<Actor<'_>>,
        kid: &str,
    ) -> Result<KeyInfo> {
        let by = by.into();
        by.require(KEYS_WRITE)?;
        let tenant = by.tenant();
        let current = self.key_info(tenant, kid).await?;
        if current.status != KeyStatus::Invalidated {
            return Err(Error::Conflict(format!(
                "signing key {kid} is {}, not INVALIDATED",
                current.status
            )));
        }
        let now = self.now();
        let until = self.retired_publish_until(now);
        let event = self.event(&by, "key.reactivated", format!("key:{kid}"));
        if !signing_keys::reactivate(
            &self.db,
            &event,
            (&tenant.id, kid),
            until,
            (now, &self.node_id),
        )
        .await?
        {
            return Err(Error::Conflict(format!(
                "signing key {kid} changed meanwhile; try again"
            )));
        }
        tracing::info!(tenant = %tenant.slug, kid, "signing key reactivated");
        self.key_changed(tenant);
        self.key_info(tenant, kid).await
    }

    /// Deletes a key for good. The signing key cannot be deleted: rotate or invalidate it first.
    pub async fn delete_signing_key(&self, by: impl Into<Actor<'_>>, kid: &str) -> Result<()> {
        let by = by.into();
        by.require(KEYS_WRITE)?;
        let tenant = by.tenant();
        let current = self.key_info(tenant, kid).await?;
        if current.status == KeyStatus::Active {
            return Err(Error::Conflict(format!(
                "signing key {kid} is ACTIVE; rotate or invalidate it before deleting it"
            )));
        }
        let event = self.event(&by, "key.deleted", format!("key:{kid}"));
        let (now, node) = (self.now(), &self.node_id);
        if !signing_keys::delete(&self.db, &event, (&tenant.id, kid), now, node).await? {
            return Err(Error::NotFound(format!("no signing key {kid}")));
        }
        tracing::warn!(tenant = %tenant.slug, kid, "signing key deleted");
        self.key_changed(tenant);
        Ok(())
    }

    fn retired_publish_until(&self, now: i64) -> i64 {
        now + self.settings.tokens.access_token_ttl.as_secs_i64() + RETIREMENT_MARGIN_SECS
    }

    /// One step of the key job at the current time; returns how many keys changed.
    /// [`Authority::maintain_keys_once`] on one node at a time: on PostgreSQL, a node that finds
    /// another node running it skips this round (`Ok(None)`).
    pub async fn maintain_keys_exclusively(&self) -> Result<Option<usize>> {
        let Some(lock) = jobs::try_lock(&self.db, KEY_JOB_LOCK).await? else {
            return Ok(None);
        };
        let done = self.maintain_keys_once().await;
        lock.release().await?;
        done.map(Some)
    }

    pub async fn maintain_keys_once(&self) -> Result<usize> {
        let now = self.now();
        let mut changed_tenants = Vec::new();

        for due in signing_keys::due_for_promotion(&self.db, now).await? {
            let until = self.retired_publish_until(now);
            let event = self.event_in(
                &due.tenant_id,
                LANYARD.into(),
                "key.activated",
                format!("key:{}", due.kid),
            );
            if signing_keys::promote(&self.db, &event, &due.tenant_id, &due.kid, now, until).await?
            {
                tracing::info!(kid = %due.kid, "signing key now ACTIVE");
                changed_tenants.push(due.tenant_id);
            }
        }

        let interval = self.settings.tokens.key_rotation_interval.as_secs_i64();
        let ahead = self.settings.tokens.key_publish_ahead.as_secs_i64();
        // Start the rotation publish-ahead early, so the new key signs when the interval ends.
        for due in signing_keys::due_for_rotation(&self.db, now - interval + ahead).await? {
            let key = self
                .generate_key(&due.tenant_id, "PENDING", now, Some(now + ahead))
                .await?;
            let event = self.event_in(
                &due.tenant_id,
                LANYARD.into(),
                "key.created",
                format!("key:{}", key.kid),
            );
            match signing_keys::insert(&self.db, &event, &key).await {
                Ok(()) => {
                    tracing::info!(kid = %key.kid, "scheduled signing key rotation started");
                    changed_tenants.push(due.tenant_id);
                }
                Err(StoreError::Conflict) => {} // another node started it
                Err(e) => return Err(e.into()),
            }
        }

        changed_tenants.extend(signing_keys::prune_retired(&self.db, now).await?);

        let count = changed_tenants.len();
        changed_tenants.sort();
        changed_tenants.dedup();
        if !changed_tenants.is_empty() {
            for row in tenants::list(&self.db).await? {
                if changed_tenants.contains(&row.id) {
                    self.emit(Event::KeysChanged {
                        tenant_id: row.id,
                        slug: row.slug,
                    });
                }
            }
        }
        Ok(count)
    }

    /// At start: this node's key-encryption key must be the one the database records (SPEC
    /// §14). A database that records none yet (new, or opened before the check existed) records
    /// this one, once it opens the keys already stored; of nodes starting together on an empty
    /// database the first to record wins and the others, with another key, refuse to start.
    pub async fn check_key_encryption_key(&self) -> Result<()> {
        let mine = self.kek.check_value();
        if key_encryption::recorded(&self.db).await?.is_none() {
            // Every key, not one: a database sealed under two keys must not record either.
            let unopened: Vec<String> = signing_keys::all_sealed(&self.db)
                .await?
                .into_iter()
                .filter(|(kid, sealed)| self.kek.open(kid, sealed).is_err())
                .map(|(kid, _)| kid)
                .collect();
            if !unopened.is_empty() {
                return Err(Error::Invalid(format!(
                    "the key-encryption key does not open stored signing key(s) {}: set keys.encryption_key or keys.encryption_key_file to the key this database was created with",
                    unopened.join(", ")
                )));
            }
            key_encryption::record_if_none(&self.db, mine, self.now()).await?;
        }
        match key_encryption::recorded(&self.db).await? {
            Some(recorded) if recorded == mine => Ok(()),
            _ => Err(Error::Invalid(
                "this node's key-encryption key is not the one the database records (its check value differs): every node must use the key the signing keys are sealed with; set keys.encryption_key (or keys.encryption_key_file) to it, or move the database to a new key with `lanyard rekey`".into(),
            )),
        }
    }

    /// Reseals every signing key under `new` in one transaction and records `new`'s check value:
    /// nodes then start only with `new`. Returns how many keys were resealed. Every node should
    /// be stopped first: one still running with the old key cannot store keys any more.
    pub async fn rekey(&self, new: &KeyEncryptionKey) -> Result<usize> {
        if new.check_value() == self.kek.check_value() {
            return Err(Error::Invalid(
                "the new key-encryption key is the one in use".into(),
            ));
        }
        let outcome = key_encryption::reseal_all(
            &self.db,
            self.kek.check_value(),
            new.check_value(),
            self.now(),
            |kid, sealed| {
                let private = self.kek.open(kid, sealed).ok()?;
                Some(new.seal(kid, &private))
            },
        )
        .await?;
        match outcome {
            Ok(count) => {
                tracing::warn!(keys = count, "signing keys resealed under a new key-encryption key");
                Ok(count)
            }
            Err(ResealRefused::NotTheRecordedKey) => Err(Error::Conflict(
                "the database records another key-encryption key than this node's: nothing was changed".into(),
            )),
            Err(ResealRefused::Unopened(kid)) => Err(Error::Invalid(format!(
                "signing key {kid} does not open with the current key-encryption key: nothing was changed"
            ))),
        }
    }
}
