//! Refresh tokens: stored as hashes, rotated on use, revoked by family.

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, on_pool, on_writer};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub token_hash: Vec<u8>,
    pub family_id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub used: bool,
    pub revoked: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

const INSERT: &str = "INSERT INTO refresh_tokens
    (token_hash, family_id, tenant_id, user_id, client_id, scope, created_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub async fn insert(db: &Db, r: &RefreshRow) -> StoreResult<()> {
    on_writer!(db, pool => sqlx::query(INSERT)
        .bind(&r.token_hash)
        .bind(&r.family_id)
        .bind(&r.tenant_id)
        .bind(&r.user_id)
        .bind(&r.client_id)
        .bind(&r.scope)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

const COLUMNS: &str = "token_hash, family_id, tenant_id, user_id, client_id, scope, used, revoked, created_at, expires_at";

pub async fn find(db: &Db, tenant_id: &str, hash: &[u8]) -> StoreResult<Option<RefreshRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM refresh_tokens WHERE tenant_id = $1 AND token_hash = $2");
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(hash).fetch_optional(pool).await?),
    )
}

/// Marks the token used if it is still good: exactly one of concurrent callers gets the row.
pub async fn take(
    db: &Db,
    tenant_id: &str,
    hash: &[u8],
    now: i64,
) -> StoreResult<Option<RefreshRow>> {
    let sql = format!(
        "UPDATE refresh_tokens SET used = TRUE
         WHERE tenant_id = $1 AND token_hash = $2 AND used = FALSE AND revoked = FALSE AND expires_at > $3
         RETURNING {COLUMNS}"
    );
    Ok(
        on_writer!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(hash).bind(now).fetch_optional(pool).await?),
    )
}

const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked = TRUE WHERE family_id = $1";

pub async fn revoke_family(db: &Db, audit: &AuditRow, family_id: &str) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(REVOKE_FAMILY).bind(family_id).execute(&mut *tx).await?.rows_affected());
    Ok(())
}
