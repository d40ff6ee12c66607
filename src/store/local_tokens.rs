//! Local API tokens.

use super::{Db, StoreResult, on_pool, on_writer};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LocalTokenRow {
    pub id: String,
    pub tenant_id: String,
    pub system_id: String,
    pub user_id: String,
    pub user_name: String,
    /// JSON array of `{"uuid","name"}`.
    pub roles: String,
    pub name: Option<String>,
    pub requested_device: Option<String>,
    pub kid: String,
    pub token: String,
    /// `ACTIVATED` or `REVOKED`.
    pub status: String,
    pub not_before: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, system_id, user_id, user_name, roles, name, requested_device, kid, token, status, not_before, expires_at, created_at, updated_at";

pub async fn insert(db: &Db, t: &LocalTokenRow) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO local_api_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    );
    on_writer!(db, pool => sqlx::query(&sql)
        .bind(&t.id)
        .bind(&t.tenant_id)
        .bind(&t.system_id)
        .bind(&t.user_id)
        .bind(&t.user_name)
        .bind(&t.roles)
        .bind(&t.name)
        .bind(&t.requested_device)
        .bind(&t.kid)
        .bind(&t.token)
        .bind(&t.status)
        .bind(t.not_before)
        .bind(t.expires_at)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn find(db: &Db, tenant_id: &str, id: &str) -> StoreResult<Option<LocalTokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM local_api_tokens WHERE tenant_id = $1 AND id = $2");
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(id).fetch_optional(pool).await?),
    )
}

/// The system's tokens that have not expired at `now` (permanent ones always), oldest first.
pub async fn for_system(
    db: &Db,
    tenant_id: &str,
    system_id: &str,
    now: i64,
) -> StoreResult<Vec<LocalTokenRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM local_api_tokens
         WHERE tenant_id = $1 AND system_id = $2 AND (expires_at IS NULL OR expires_at > $3)
         ORDER BY created_at, id"
    );
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(system_id).bind(now).fetch_all(pool).await?),
    )
}

const REVOKE: &str = "UPDATE local_api_tokens SET status = 'REVOKED', updated_at = $3
    WHERE tenant_id = $1 AND id = $2 AND status = 'ACTIVATED'";

pub async fn revoke(db: &Db, tenant_id: &str, id: &str, now: i64) -> StoreResult<()> {
    on_writer!(db, pool => sqlx::query(REVOKE).bind(tenant_id).bind(id).bind(now).execute(pool).await?.rows_affected());
    Ok(())
}

const REVOKE_FOR_USER: &str = "UPDATE local_api_tokens SET status = 'REVOKED', updated_at = $3
    WHERE tenant_id = $1 AND user_id = $2 AND status = 'ACTIVATED' RETURNING system_id";

/// Revokes every token of a user; returns the systems whose lists changed.
pub async fn revoke_for_user(
    db: &Db,
    tenant_id: &str,
    user_id: &str,
    now: i64,
) -> StoreResult<Vec<String>> {
    Ok(
        on_writer!(db, pool => sqlx::query_scalar(REVOKE_FOR_USER).bind(tenant_id).bind(user_id).bind(now).fetch_all(pool).await?),
    )
}

const CHANGED_SINCE: &str =
    "SELECT DISTINCT tenant_id, system_id FROM local_api_tokens WHERE updated_at >= $1
    UNION SELECT tenant_id, id FROM systems WHERE created_at >= $1";

/// Systems whose list may have changed at or after `since`: tokens minted or revoked, systems
/// created. How a node learns of changes made by another.
pub async fn systems_changed_since(db: &Db, since: i64) -> StoreResult<Vec<(String, String)>> {
    Ok(on_pool!(db, pool => sqlx::query_as(CHANGED_SINCE).bind(since).fetch_all(pool).await?))
}
