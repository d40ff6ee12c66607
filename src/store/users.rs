//! Users, roles, and the roles users hold on systems.

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, in_transaction, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    /// Space-separated.
    pub scopes: String,
    /// A JSON object.
    pub metadata: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoleRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: i64,
}

const INSERT_USER: &str =
    "INSERT INTO users (id, tenant_id, email, name, scopes, metadata, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub async fn insert(db: &Db, audit: &AuditRow, u: &UserRow) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(INSERT_USER)
        .bind(&u.id)
        .bind(&u.tenant_id)
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.scopes)
        .bind(&u.metadata)
        .bind(u.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(())
}

const USER_COLUMNS: &str = "id, tenant_id, email, name, scopes, metadata, created_at";

pub async fn find(db: &Db, tenant_id: &str, id: &str) -> StoreResult<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2");
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(id).fetch_optional(pool).await?),
    )
}

pub async fn find_by_email(db: &Db, tenant_id: &str, email: &str) -> StoreResult<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND email = $2");
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(email).fetch_optional(pool).await?),
    )
}

const DELETE_USER: &str = "DELETE FROM users WHERE tenant_id = $1 AND id = $2";

/// The live shares a person gives or receives, which end with them.
const LIVE_SHARES_OF: &str = "SELECT id FROM shares
    WHERE tenant_id = $1 AND (owner_id = $2 OR recipient_id = $2) AND revoked_at IS NULL";

/// Deletes the user, in one transaction with its event: its role assignments, refresh tokens
/// and shares go with it, and its local API tokens (those it minted under a share too) are
/// revoked (as `node`, at `now`), each share and token with an event of its own. Returns the
/// systems whose token lists changed, or `None` when there is no such user (nothing changes).
pub async fn delete(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    id: &str,
    now: i64,
    node: &str,
) -> StoreResult<Option<Vec<String>>> {
    let systems = in_transaction!(db, tx => {
        let revoked: Vec<(String, String)> = sqlx::query_as(super::local_tokens::REVOKE_FOR_USER)
            .bind(tenant_id)
            .bind(id)
            .bind(now)
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
        let shares: Vec<String> = sqlx::query_scalar(LIVE_SHARES_OF)
            .bind(tenant_id)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        let deleted = sqlx::query(DELETE_USER)
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        audit.bind(sqlx::query(super::audit::INSERT)).execute(&mut *tx).await?;
        let ended = shares
            .iter()
            .map(|share| ("share.revoked", format!("share:{share} with user:{id}")))
            .chain(revoked.iter().map(|(token, _)| {
                ("local_token.revoked", format!("local_token:{token} with user:{id}"))
            }));
        for (action, target) in ended {
            let event = AuditRow {
                action: action.into(),
                target,
                ..audit.clone()
            };
            event.bind(sqlx::query(super::audit::INSERT)).execute(&mut *tx).await?;
        }
        revoked.into_iter().map(|(_, system)| system).collect::<Vec<String>>()
    });
    Ok(Some(systems))
}

const INSERT_ROLE: &str =
    "INSERT INTO roles (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)";

pub async fn insert_role(db: &Db, audit: &AuditRow, r: &RoleRow) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(INSERT_ROLE)
        .bind(&r.id)
        .bind(&r.tenant_id)
        .bind(&r.name)
        .bind(r.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(())
}

const FIND_ROLE: &str =
    "SELECT id, tenant_id, name, created_at FROM roles WHERE tenant_id = $1 AND id = $2";

pub async fn find_role(db: &Db, tenant_id: &str, id: &str) -> StoreResult<Option<RoleRow>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(FIND_ROLE).bind(tenant_id).bind(id).fetch_optional(pool).await?),
    )
}

const ASSIGN: &str = "INSERT INTO role_assignments (user_id, system_id, role_id, created_at)
    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

pub async fn assign_role(
    db: &Db,
    audit: &AuditRow,
    user_id: &str,
    system_id: &str,
    role_id: &str,
    now: i64,
) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(ASSIGN)
        .bind(user_id)
        .bind(system_id)
        .bind(role_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected());
    Ok(())
}

/// A role a user holds on a system, with the user's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeldRole {
    pub system_id: String,
    pub user_name: String,
    #[sqlx(flatten)]
    pub role: RoleRow,
}

/// The roles users hold on systems of their own tenant, with the user's name.
macro_rules! held_roles_from {
    () => {
        "SELECT a.system_id, u.name AS user_name, r.id, r.tenant_id, r.name, r.created_at
    FROM users u
    JOIN role_assignments a ON a.user_id = u.id
    JOIN systems s ON s.id = a.system_id AND s.tenant_id = u.tenant_id
    JOIN roles r ON r.id = a.role_id AND r.tenant_id = u.tenant_id"
    };
}

const HELD_ROLES: &str = concat!(
    held_roles_from!(),
    " WHERE u.tenant_id = $1 AND u.id = $2 AND s.id = $3 ORDER BY r.name, r.id"
);

/// The roles a user of the tenant holds on a system of the tenant, by name, in one query:
/// none when the user or the system does not exist.
pub async fn held_roles(
    db: &Db,
    tenant_id: &str,
    user_id: &str,
    system_id: &str,
) -> StoreResult<Vec<HeldRole>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(HELD_ROLES).bind(tenant_id).bind(user_id).bind(system_id).fetch_all(pool).await?),
    )
}

const EVERY_HELD_ROLE: &str = concat!(
    held_roles_from!(),
    " WHERE u.tenant_id = $1 AND u.id = $2 ORDER BY a.system_id, r.name, r.id LIMIT $3"
);

/// The roles a user of the tenant holds on any system of the tenant, by system and then by
/// name, in one query; at most `limit` rows, so the last system's roles may be cut short when
/// that many come back.
pub async fn every_held_role(
    db: &Db,
    tenant_id: &str,
    user_id: &str,
    limit: i64,
) -> StoreResult<Vec<HeldRole>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(EVERY_HELD_ROLE).bind(tenant_id).bind(user_id).bind(limit).fetch_all(pool).await?),
    )
}

const ROLES_ON_SYSTEM: &str = "SELECT r.id, r.tenant_id, r.name, r.created_at
    FROM role_assignments a JOIN roles r ON r.id = a.role_id
    WHERE a.user_id = $1 AND a.system_id = $2 ORDER BY r.name, r.id";

/// The roles `user_id` holds on `system_id`, by name.
pub async fn roles_on_system(db: &Db, user_id: &str, system_id: &str) -> StoreResult<Vec<RoleRow>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(ROLES_ON_SYSTEM).bind(user_id).bind(system_id).fetch_all(pool).await?),
    )
}
