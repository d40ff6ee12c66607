//! The revocation list of access tokens, by `jti`, kept until the token would have expired.

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, on_pool, on_writer};

const INSERT: &str = "INSERT INTO revoked_tokens (jti, tenant_id, expires_at, revoked_at)
    VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING";

/// Adds `jti` to the list; revoking twice is not an error. Returns true if it was newly added.
pub async fn revoke(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> StoreResult<bool> {
    let done = audited!(db, audit, tx => sqlx::query(INSERT)
        .bind(jti)
        .bind(tenant_id)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(done == 1)
}

const IS_REVOKED: &str = "SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1";

pub async fn is_revoked(db: &Db, jti: &str) -> StoreResult<bool> {
    let n: i64 =
        on_pool!(db, pool => sqlx::query_scalar(IS_REVOKED).bind(jti).fetch_one(pool).await?);
    Ok(n > 0)
}

const UNEXPIRED: &str = "SELECT jti FROM revoked_tokens WHERE expires_at >= $1 LIMIT $2";

/// The ids of revoked tokens that have not expired at `now`, at most `limit` of them.
pub async fn unexpired(db: &Db, now: i64, limit: i64) -> StoreResult<Vec<String>> {
    Ok(
        on_pool!(db, pool => sqlx::query_scalar(UNEXPIRED).bind(now).bind(limit).fetch_all(pool).await?),
    )
}

const PRUNE: &str = "DELETE FROM revoked_tokens WHERE expires_at < $1";

/// Forgets revocations of tokens that have expired anyway.
pub async fn prune(db: &Db, now: i64) -> StoreResult<u64> {
    let done =
        on_writer!(db, pool => sqlx::query(PRUNE).bind(now).execute(pool).await?.rows_affected());
    Ok(done)
}
