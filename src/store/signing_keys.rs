//! Signing keys and their lifecycle transitions (SPEC §5).
//!
//! Each transition is one conditional statement or one transaction, and two partial unique
//! indexes (one ACTIVE, one PENDING per tenant) make it impossible for concurrent nodes to end
//! with two signers, whatever order their steps interleave in.

use super::audit::AuditRow;
use super::{Db, StoreError, StoreResult, audited, in_transaction, on_pool, on_writer};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub kid: String,
    pub tenant_id: String,
    pub status: String,
    pub public_n: String,
    pub public_e: String,
    pub sealed_private_key: Vec<u8>,
    pub created_at: i64,
    pub activates_at: Option<i64>,
    pub publish_until: Option<i64>,
    pub updated_at: i64,
    /// The tenant's key-schedule sequence number as of this read (the same in every row).
    pub schedule_seq: i64,
}

/// Every write that changes a tenant's keys moves its key schedule on, in its transaction.
const NEXT_SCHEDULE: &str =
    "UPDATE tenants SET key_schedule_seq = key_schedule_seq + 1 WHERE id = $1";

/// A key about to be stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub kid: String,
    pub tenant_id: String,
    /// `ACTIVE` for a tenant's first key, `PENDING` for a rotation.
    pub status: &'static str,
    pub public_n: String,
    pub public_e: String,
    pub sealed_private_key: Vec<u8>,
    pub created_at: i64,
    pub activates_at: Option<i64>,
    /// The check value of the key-encryption key that sealed it: the key is stored only while
    /// the database records this one.
    pub kek_check: String,
}

/// Inserts nothing when the recorded check value is another key-encryption key's (the caller
/// sees no row written).
pub(super) const INSERT_KEY: &str = "INSERT INTO signing_keys
    (kid, tenant_id, status, public_n, public_e, sealed_private_key, created_at, activates_at, updated_at)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $7
    WHERE EXISTS (SELECT 1 FROM key_encryption WHERE id = 1 AND check_value = $9)";

impl NewKey {
    pub(super) fn bind<'q, DB: sqlx::Database>(
        &'q self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        query
            .bind(&self.kid)
            .bind(&self.tenant_id)
            .bind(self.status)
            .bind(&self.public_n)
            .bind(&self.public_e)
            .bind(&self.sealed_private_key)
            .bind(self.created_at)
            .bind(self.activates_at)
            .bind(&self.kek_check)
    }
}

/// Stores a PENDING key. If the tenant already has one, `StoreError::Conflict`; if the key was
/// sealed under a key-encryption key the database no longer records,
/// `StoreError::KeyEncryptionKeyReplaced`.
pub async fn insert(db: &Db, audit: &AuditRow, key: &NewKey) -> StoreResult<()> {
    let written = audited!(db, audit, tx => {
        let written = key.bind(sqlx::query(INSERT_KEY)).execute(&mut *tx).await?.rows_affected();
        if written > 0 {
            sqlx::query(NEXT_SCHEDULE).bind(&key.tenant_id).execute(&mut *tx).await?;
        }
        written
    });
    if written == 0 {
        return Err(StoreError::KeyEncryptionKeyReplaced);
    }
    Ok(())
}

const LIST_FOR_TENANT: &str = "SELECT kid, tenant_id, status, public_n, public_e, sealed_private_key, created_at, activates_at, publish_until, updated_at,
        (SELECT key_schedule_seq FROM tenants WHERE id = $1) AS schedule_seq
    FROM signing_keys WHERE tenant_id = $1 ORDER BY created_at, kid";

pub async fn list_for_tenant(db: &Db, tenant_id: &str) -> StoreResult<Vec<KeyRow>> {
    Ok(on_pool!(db, pool => sqlx::query_as(LIST_FOR_TENANT).bind(tenant_id).fetch_all(pool).await?))
}

const RETIRE_ACTIVE: &str =
    "UPDATE signing_keys SET status = 'RETIRED', publish_until = $2, updated_at = $3
    WHERE tenant_id = $1 AND status = 'ACTIVE'";
/// What the ACTIVE key's unrevoked local API tokens need of it: whether a permanent one exists,
/// and the latest expiry of the others.
const HELD_BY_LOCAL_TOKENS: &str =
    "SELECT MAX(CASE WHEN t.expires_at IS NULL THEN 1 ELSE 0 END), MAX(t.expires_at)
    FROM local_api_tokens t JOIN signing_keys k ON k.tenant_id = t.tenant_id AND k.kid = t.kid
    WHERE k.tenant_id = $1 AND k.status = 'ACTIVE' AND t.status = 'ACTIVATED'";
const ACTIVATE_PENDING: &str =
    "UPDATE signing_keys SET status = 'ACTIVE', activates_at = $3, updated_at = $3
    WHERE tenant_id = $1 AND kid = $2 AND status = 'PENDING'";

/// Makes the PENDING key `kid` the signer and retires the current one, published until its
/// access tokens have expired (`retired_publish_until`) and its local API tokens too: while a
/// permanent one it signed is unrevoked, until further notice (`publish_until` NULL). Returns
/// false (and changes nothing) if `kid` is no longer PENDING, for instance because another node
/// promoted it first.
pub async fn promote(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    kid: &str,
    now: i64,
    retired_publish_until: i64,
) -> StoreResult<bool> {
    let promoted = in_transaction!(db, tx => {
        let (permanent, latest): (Option<i32>, Option<i64>) = sqlx::query_as(HELD_BY_LOCAL_TOKENS)
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await?;
        let publish_until = match permanent {
            Some(1) => None,
            _ => Some(latest.map_or(retired_publish_until, |l| l.max(retired_publish_until))),
        };
        sqlx::query(RETIRE_ACTIVE)
            .bind(tenant_id)
            .bind(publish_until)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(ACTIVATE_PENDING)
            .bind(tenant_id)
            .bind(kid)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(NEXT_SCHEDULE).bind(tenant_id).execute(&mut *tx).await?;
        audit.bind(sqlx::query(super::audit::INSERT)).execute(&mut *tx).await?;
        true
    });
    Ok(promoted)
}

const INVALIDATE: &str = "UPDATE signing_keys SET status = 'INVALIDATED', updated_at = $3
    WHERE tenant_id = $1 AND kid = $2 AND status <> 'INVALIDATED'";

/// Revokes for good the local API tokens a key signed (SPEC §10: their status bits are never
/// cleared, even if the key is reactivated), as written by a node.
const REVOKE_SIGNED_BY: &str =
    "UPDATE local_api_tokens SET status = 'REVOKED', updated_at = $3, written_by = $4
    WHERE tenant_id = $1 AND kid = $2 AND status = 'ACTIVATED'";

/// Invalidates `kid` and revokes the local API tokens it signed; if it was the signer,
/// `replacement` becomes ACTIVE in the same transaction (the PENDING key if there is one, else a
/// new key inserted here), so the tenant is never without a signer. Returns false if `kid` was
/// not found or already invalidated.
pub async fn invalidate(
    db: &Db,
    audit: &AuditRow,
    (tenant_id, kid): (&str, &str),
    now: i64,
    node: &str,
    replacement: Replacement<'_>,
) -> StoreResult<bool> {
    let changed = in_transaction!(db, tx => {
        let done = sqlx::query(INVALIDATE)
            .bind(tenant_id)
            .bind(kid)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(REVOKE_SIGNED_BY)
            .bind(tenant_id)
            .bind(kid)
            .bind(now)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        match replacement {
            Replacement::None => {}
            Replacement::Pending(pending) => {
                sqlx::query(ACTIVATE_PENDING)
                    .bind(tenant_id)
                    .bind(pending)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            Replacement::New(key) => {
                let written = key.bind(sqlx::query(INSERT_KEY)).execute(&mut *tx).await?;
                if written.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::KeyEncryptionKeyReplaced);
                }
            }
        }
        sqlx::query(NEXT_SCHEDULE).bind(tenant_id).execute(&mut *tx).await?;
        audit.bind(sqlx::query(super::audit::INSERT)).execute(&mut *tx).await?;
        true
    });
    Ok(changed)
}

/// What takes over signing when the ACTIVE key is invalidated.
pub enum Replacement<'a> {
    /// The key was not the signer.
    None,
    /// Promote this PENDING key at once.
    Pending(&'a str),
    /// Insert this new ACTIVE key.
    New(&'a NewKey),
}

const REACTIVATE: &str =
    "UPDATE signing_keys SET status = 'RETIRED', publish_until = $3, updated_at = $4
    WHERE tenant_id = $1 AND kid = $2 AND status = 'INVALIDATED'";

/// Publishes an INVALIDATED key again as RETIRED: it verifies what it signed but does not sign.
pub async fn reactivate(
    db: &Db,
    audit: &AuditRow,
    (tenant_id, kid): (&str, &str),
    publish_until: i64,
    (now, node): (i64, &str),
) -> StoreResult<bool> {
    let done = audited!(db, audit, tx => {
        let done = sqlx::query(REACTIVATE)
            .bind(tenant_id)
            .bind(kid)
            .bind(publish_until)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done > 0 {
            // Its local API tokens stay revoked (SPEC §10), also one whose mint committed
            // after the invalidation.
            sqlx::query(REVOKE_SIGNED_BY).bind(tenant_id).bind(kid).bind(now).bind(node).execute(&mut *tx).await?;
            sqlx::query(NEXT_SCHEDULE).bind(tenant_id).execute(&mut *tx).await?;
        }
        done
    });
    Ok(done == 1)
}

const DELETE: &str =
    "DELETE FROM signing_keys WHERE tenant_id = $1 AND kid = $2 AND status <> 'ACTIVE'";

/// Deletes `kid` for good, unless it is the signer, and revokes the local API tokens it signed,
/// which nothing verifies any more. Returns false if nothing was deleted.
pub async fn delete(
    db: &Db,
    audit: &AuditRow,
    (tenant_id, kid): (&str, &str),
    now: i64,
    node: &str,
) -> StoreResult<bool> {
    let done = audited!(db, audit, tx => {
        let done = sqlx::query(DELETE).bind(tenant_id).bind(kid).execute(&mut *tx).await?.rows_affected();
        if done > 0 {
            sqlx::query(REVOKE_SIGNED_BY).bind(tenant_id).bind(kid).bind(now).bind(node).execute(&mut *tx).await?;
            sqlx::query(NEXT_SCHEDULE).bind(tenant_id).execute(&mut *tx).await?;
        }
        done
    });
    Ok(done == 1)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueKey {
    pub tenant_id: String,
    pub kid: String,
}

const DUE_FOR_PROMOTION: &str = "SELECT tenant_id, kid FROM signing_keys
    WHERE status = 'PENDING' AND activates_at <= $1";

/// PENDING keys whose publish-ahead has passed.
pub async fn due_for_promotion(db: &Db, now: i64) -> StoreResult<Vec<DueKey>> {
    Ok(on_pool!(db, pool => sqlx::query_as(DUE_FOR_PROMOTION).bind(now).fetch_all(pool).await?))
}

const DUE_FOR_ROTATION: &str = "SELECT a.tenant_id, a.kid FROM signing_keys a
    WHERE a.status = 'ACTIVE' AND a.activates_at <= $1
      AND NOT EXISTS (SELECT 1 FROM signing_keys p WHERE p.tenant_id = a.tenant_id AND p.status = 'PENDING')";

/// ACTIVE keys that have signed since `signing_since` or earlier and have no successor yet.
pub async fn due_for_rotation(db: &Db, signing_since: i64) -> StoreResult<Vec<DueKey>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(DUE_FOR_ROTATION).bind(signing_since).fetch_all(pool).await?),
    )
}

/// A key is kept while an unexpired, unrevoked local API token it signed exists, also one
/// inserted after its retirement counted its tokens (minted by a node whose keyring was a
/// moment behind).
const PRUNE_RETIRED: &str = "DELETE FROM signing_keys
    WHERE status = 'RETIRED' AND publish_until IS NOT NULL AND publish_until < $1
      AND NOT EXISTS (SELECT 1 FROM local_api_tokens t
          WHERE t.tenant_id = signing_keys.tenant_id AND t.kid = signing_keys.kid
            AND t.status = 'ACTIVATED' AND (t.expires_at IS NULL OR t.expires_at > $1))
    RETURNING tenant_id";

/// Deletes RETIRED keys whose tokens have all expired; returns the tenants that lost a key.
pub async fn prune_retired(db: &Db, now: i64) -> StoreResult<Vec<String>> {
    // Run every second: the common case, nothing to prune, is one statement.
    let mut tenants: Vec<String> =
        on_writer!(db, pool => sqlx::query_scalar(PRUNE_RETIRED).bind(now).fetch_all(pool).await?);
    tenants.sort();
    tenants.dedup();
    for tenant_id in &tenants {
        on_writer!(db, pool => sqlx::query(NEXT_SCHEDULE).bind(tenant_id).execute(pool).await?.rows_affected());
    }
    Ok(tenants)
}

const ANY_SEALED: &str = "SELECT kid, sealed_private_key FROM signing_keys LIMIT 1";

/// One stored key: whether the database holds any.
pub async fn any_sealed(db: &Db) -> StoreResult<Option<(String, Vec<u8>)>> {
    Ok(on_pool!(db, pool => sqlx::query_as(ANY_SEALED).fetch_optional(pool).await?))
}

const ALL_SEALED: &str = "SELECT kid, sealed_private_key FROM signing_keys ORDER BY kid";

/// Every stored key, sealed: to check that a key-encryption key opens them all.
pub async fn all_sealed(db: &Db) -> StoreResult<Vec<(String, Vec<u8>)>> {
    Ok(on_pool!(db, pool => sqlx::query_as(ALL_SEALED).fetch_all(pool).await?))
}
