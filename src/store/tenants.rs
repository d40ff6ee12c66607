//! Tenants. A tenant is created together with its first signing key, in one transaction.

use super::audit::AuditRow;
use super::signing_keys::{INSERT_KEY, NewKey};
use super::{Db, StoreError, StoreResult, in_transaction, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub created_at: i64,
}

const INSERT_TENANT: &str =
    "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)";

/// Creates the tenant and its first (ACTIVE) key. A taken slug is `StoreError::Conflict`.
pub async fn create(
    db: &Db,
    audit: &AuditRow,
    tenant: &TenantRow,
    first_key: &NewKey,
) -> StoreResult<()> {
    in_transaction!(db, tx => {
        sqlx::query(INSERT_TENANT)
            .bind(&tenant.id)
            .bind(&tenant.slug)
            .bind(&tenant.name)
            .bind(tenant.created_at)
            .execute(&mut *tx)
            .await?;
        let written = first_key.bind(sqlx::query(INSERT_KEY)).execute(&mut *tx).await?;
        if written.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::KeyEncryptionKeyReplaced);
        }
        audit.bind(sqlx::query(super::audit::INSERT)).execute(&mut *tx).await?;
    });
    Ok(())
}

const FIND_BY_SLUG: &str = "SELECT id, slug, name, created_at FROM tenants WHERE slug = $1";

pub async fn find_by_slug(db: &Db, slug: &str) -> StoreResult<Option<TenantRow>> {
    Ok(on_pool!(db, pool => sqlx::query_as(FIND_BY_SLUG).bind(slug).fetch_optional(pool).await?))
}

const LIST: &str = "SELECT id, slug, name, created_at FROM tenants ORDER BY slug";

pub async fn list(db: &Db) -> StoreResult<Vec<TenantRow>> {
    Ok(on_pool!(db, pool => sqlx::query_as(LIST).fetch_all(pool).await?))
}

const COUNT: &str = "SELECT COUNT(*) FROM tenants";

pub async fn count(db: &Db) -> StoreResult<i64> {
    Ok(on_pool!(db, pool => sqlx::query_scalar(COUNT).fetch_one(pool).await?))
}
