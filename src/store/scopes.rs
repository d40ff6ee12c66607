//! A tenant's own scopes (the `lanyard:` catalogue is fixed in code, not stored).

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScopeRow {
    pub name: String,
    pub description: Option<String>,
}

const INSERT: &str =
    "INSERT INTO scopes (tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4)";

/// A scope already defined is `StoreError::Conflict`.
pub async fn insert(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    name: &str,
    description: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(INSERT)
        .bind(tenant_id)
        .bind(name)
        .bind(description)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(())
}

const LIST: &str = "SELECT name, description FROM scopes WHERE tenant_id = $1 ORDER BY name";

pub async fn list(db: &Db, tenant_id: &str) -> StoreResult<Vec<ScopeRow>> {
    Ok(on_pool!(db, pool => sqlx::query_as(LIST).bind(tenant_id).fetch_all(pool).await?))
}
