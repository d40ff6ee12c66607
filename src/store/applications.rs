//! Applications for several tenants (SPEC §11): the grants user tenants give an application
//! version of a host tenant.

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    /// The user tenant that granted access.
    pub tenant_id: String,
    pub host_tenant_id: String,
    pub app_name: String,
    pub app_version: String,
    /// Space-separated.
    pub scopes: String,
    /// New at every grant; technical tokens name it.
    pub grant_id: String,
    pub granted_at: i64,
}

const UPSERT: &str = "INSERT INTO application_grants
    (tenant_id, host_tenant_id, app_name, app_version, scopes, grant_id, granted_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (tenant_id, host_tenant_id, app_name, app_version)
    DO UPDATE SET scopes = excluded.scopes, grant_id = excluded.grant_id,
        granted_at = excluded.granted_at";

/// Grants access, or replaces the scopes of the grant there is.
pub async fn grant(db: &Db, audit: &AuditRow, g: &GrantRow) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(UPSERT)
        .bind(&g.tenant_id)
        .bind(&g.host_tenant_id)
        .bind(&g.app_name)
        .bind(&g.app_version)
        .bind(&g.scopes)
        .bind(&g.grant_id)
        .bind(g.granted_at)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(())
}

const REVOKE: &str = "DELETE FROM application_grants
    WHERE tenant_id = $1 AND host_tenant_id = $2 AND app_name = $3 AND app_version = $4";

/// `false`: there was no such grant.
pub async fn revoke(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    host_tenant_id: &str,
    app_name: &str,
    app_version: &str,
) -> StoreResult<bool> {
    let done = audited!(db, audit, tx => sqlx::query(REVOKE)
        .bind(tenant_id)
        .bind(host_tenant_id)
        .bind(app_name)
        .bind(app_version)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(done > 0)
}

const FIND: &str =
    "SELECT tenant_id, host_tenant_id, app_name, app_version, scopes, grant_id, granted_at
    FROM application_grants
    WHERE tenant_id = $1 AND host_tenant_id = $2 AND app_name = $3 AND app_version = $4";

pub async fn find(
    db: &Db,
    tenant_id: &str,
    host_tenant_id: &str,
    app_name: &str,
    app_version: &str,
) -> StoreResult<Option<GrantRow>> {
    Ok(on_pool!(db, pool => sqlx::query_as(FIND)
        .bind(tenant_id)
        .bind(host_tenant_id)
        .bind(app_name)
        .bind(app_version)
        .fetch_optional(pool)
        .await?))
}

/// A page of the tenants that granted an application version access, by slug, with the
/// total count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantingTenant {
    pub slug: String,
    pub scopes: String,
    pub granted_at: i64,
}

const PAGE: &str = "SELECT t.slug, g.scopes, g.granted_at
    FROM application_grants g JOIN tenants t ON t.id = g.tenant_id
    WHERE g.host_tenant_id = $1 AND g.app_name = $2 AND g.app_version = $3
    ORDER BY t.slug LIMIT $4 OFFSET $5";

const COUNT: &str = "SELECT COUNT(*) FROM application_grants
    WHERE host_tenant_id = $1 AND app_name = $2 AND app_version = $3";

pub async fn granting_tenants(
    db: &Db,
    (host_tenant_id, app_name, app_version): (&str, &str, &str),
    limit: i64,
    offset: i64,
) -> StoreResult<(Vec<GrantingTenant>, i64)> {
    let total: i64 = on_pool!(db, pool => sqlx::query_scalar(COUNT)
        .bind(host_tenant_id)
        .bind(app_name)
        .bind(app_version)
        .fetch_one(pool)
        .await?);
    let rows = on_pool!(db, pool => sqlx::query_as(PAGE)
        .bind(host_tenant_id)
        .bind(app_name)
        .bind(app_version)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?);
    Ok((rows, total))
}

/// A grant of a user tenant, with its host tenant's slug.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantGrant {
    pub host_slug: String,
    pub app_name: String,
    pub app_version: String,
    pub scopes: String,
    pub granted_at: i64,
}

const OF_TENANT: &str =
    "SELECT t.slug AS host_slug, g.app_name, g.app_version, g.scopes, g.granted_at
    FROM application_grants g JOIN tenants t ON t.id = g.host_tenant_id
    WHERE g.tenant_id = $1 ORDER BY t.slug, g.app_name, g.app_version";

/// Every grant a user tenant gave.
pub async fn of_tenant(db: &Db, tenant_id: &str) -> StoreResult<Vec<TenantGrant>> {
    Ok(on_pool!(db, pool => sqlx::query_as(OF_TENANT).bind(tenant_id).fetch_all(pool).await?))
}
