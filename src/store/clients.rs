//! OAuth clients.

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub client_id: String,
    pub tenant_id: String,
    pub name: String,
    pub is_public: bool,
    pub secret_hash: Option<Vec<u8>>,
    /// Space-separated.
    pub scopes: String,
    /// Space-separated grant type names.
    pub grant_types: String,
    pub system_id: Option<String>,
    /// A JSON object.
    pub metadata: String,
    pub created_at: i64,
    pub secret_rotated_at: i64,
    /// JSON arrays of exact strings (SPEC §9).
    pub redirect_uris: String,
    pub post_logout_redirect_uris: String,
    /// The client that may exchange this client's tokens without an actor token (SPEC §11).
    pub may_act: Option<String>,
    /// The application version this confidential client's credentials belong to (SPEC §11).
    pub app_name: Option<String>,
    pub app_version: Option<String>,
}

const INSERT: &str = "INSERT INTO clients
    (client_id, tenant_id, name, is_public, secret_hash, scopes, grant_types, system_id, metadata, created_at, secret_rotated_at, redirect_uris, post_logout_redirect_uris, may_act, app_name, app_version)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

pub async fn insert(db: &Db, audit: &AuditRow, c: &ClientRow) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(INSERT)
        .bind(&c.client_id)
        .bind(&c.tenant_id)
        .bind(&c.name)
        .bind(c.is_public)
        .bind(&c.secret_hash)
        .bind(&c.scopes)
        .bind(&c.grant_types)
        .bind(&c.system_id)
        .bind(&c.metadata)
        .bind(c.created_at)
        .bind(c.secret_rotated_at)
        .bind(&c.redirect_uris)
        .bind(&c.post_logout_redirect_uris)
        .bind(&c.may_act)
        .bind(&c.app_name)
        .bind(&c.app_version)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(())
}

const FIND: &str = "SELECT client_id, tenant_id, name, is_public, secret_hash, scopes, grant_types, system_id, metadata, created_at, secret_rotated_at, redirect_uris, post_logout_redirect_uris, may_act, app_name, app_version
    FROM clients WHERE tenant_id = $1 AND client_id = $2";

pub async fn find(db: &Db, tenant_id: &str, client_id: &str) -> StoreResult<Option<ClientRow>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(FIND).bind(tenant_id).bind(client_id).fetch_optional(pool).await?),
    )
}

const FIND_APPLICATION: &str = "SELECT client_id, tenant_id, name, is_public, secret_hash, scopes, grant_types, system_id, metadata, created_at, secret_rotated_at, redirect_uris, post_logout_redirect_uris, may_act, app_name, app_version
    FROM clients WHERE tenant_id = $1 AND app_name = $2 AND app_version = $3";

/// The client an application version's credentials belong to.
pub async fn find_application(
    db: &Db,
    tenant_id: &str,
    app_name: &str,
    app_version: &str,
) -> StoreResult<Option<ClientRow>> {
    Ok(on_pool!(db, pool => sqlx::query_as(FIND_APPLICATION)
        .bind(tenant_id)
        .bind(app_name)
        .bind(app_version)
        .fetch_optional(pool)
        .await?))
}

const APPLICATION_TENANTS: &str = "SELECT tenant_id FROM clients WHERE client_id = $1 AND app_name IS NOT NULL ORDER BY tenant_id";

/// The tenants holding an application client with this id.
pub async fn application_tenants(db: &Db, client_id: &str) -> StoreResult<Vec<String>> {
    Ok(
        on_pool!(db, pool => sqlx::query_scalar(APPLICATION_TENANTS).bind(client_id).fetch_all(pool).await?),
    )
}

const EXISTS: &str = "SELECT COUNT(*) FROM clients WHERE tenant_id = $1 AND client_id = $2";

pub async fn exists(db: &Db, tenant_id: &str, client_id: &str) -> StoreResult<bool> {
    let n: i64 = on_pool!(db, pool => sqlx::query_scalar(EXISTS).bind(tenant_id).bind(client_id).fetch_one(pool).await?);
    Ok(n > 0)
}

const SET_SECRET: &str = "UPDATE clients SET secret_hash = $3, secret_rotated_at = $4
    WHERE tenant_id = $1 AND client_id = $2 AND is_public = false";

/// Replaces a confidential client's secret hash. Returns false if there is no such client.
pub async fn set_secret(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    client_id: &str,
    hash: &[u8],
    now: i64,
) -> StoreResult<bool> {
    let done = audited!(db, audit, tx => sqlx::query(SET_SECRET)
        .bind(tenant_id)
        .bind(client_id)
        .bind(hash)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(done == 1)
}

const DELETE: &str = "DELETE FROM clients WHERE tenant_id = $1 AND client_id = $2";

pub async fn delete(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    client_id: &str,
) -> StoreResult<bool> {
    let done = audited!(db, audit, tx => sqlx::query(DELETE).bind(tenant_id).bind(client_id).execute(&mut *tx).await?.rows_affected());
    Ok(done == 1)
}
