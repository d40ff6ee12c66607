//! Systems: the gateways, locks and controllers that local API tokens are addressed to.

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SystemRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: i64,
}

const INSERT: &str =
    "INSERT INTO systems (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)";

pub async fn insert(db: &Db, audit: &AuditRow, s: &SystemRow) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(INSERT)
        .bind(&s.id)
        .bind(&s.tenant_id)
        .bind(&s.name)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(())
}

const FIND: &str =
    "SELECT id, tenant_id, name, created_at FROM systems WHERE tenant_id = $1 AND id = $2";

pub async fn find(db: &Db, tenant_id: &str, id: &str) -> StoreResult<Option<SystemRow>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(FIND).bind(tenant_id).bind(id).fetch_optional(pool).await?),
    )
}

const LIST: &str = "SELECT id, tenant_id, name, created_at FROM systems WHERE tenant_id = $1 ORDER BY created_at, id";

pub async fn list(db: &Db, tenant_id: &str) -> StoreResult<Vec<SystemRow>> {
    Ok(on_pool!(db, pool => sqlx::query_as(LIST).bind(tenant_id).fetch_all(pool).await?))
}
