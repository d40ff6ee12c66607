//! Shares of a system between people (SPEC §11), and the revocation of the tokens minted under
//! one, in the share's own transaction.

use super::audit::AuditRow;
use super::{Db, StoreResult, audited, in_transaction, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShareRow {
    pub id: String,
    pub tenant_id: String,
    pub system_id: String,
    pub owner_id: String,
    pub recipient_id: String,
    /// A JSON array of `{"uuid","name"}`.
    pub roles: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The two people's names, as read (not written).
    pub owner_name: String,
    pub recipient_name: String,
}

/// A share with its people's names (`s`, `o`, `r`).
const SELECT: &str = "SELECT s.id, s.tenant_id, s.system_id, s.owner_id, s.recipient_id, s.roles,
    s.expires_at, s.created_at, s.revoked_at, o.name AS owner_name, r.name AS recipient_name
    FROM shares s JOIN users o ON o.id = s.owner_id JOIN users r ON r.id = s.recipient_id";

/// The share `s` is live at `$N`: neither revoked nor expired.
const LIVE_AT: &str = "s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at >";

const INSERT: &str = "INSERT INTO shares
    (id, tenant_id, system_id, owner_id, recipient_id, roles, expires_at, created_at, revoked_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)";

/// Records a share unless its sharer already gives `max` live shares of the system at `now`,
/// or its recipient receives `max` in all: the counts and the insert are one transaction,
/// serialised per sharer and system and per recipient. `false`: a limit was reached.
pub async fn insert_within_limits(
    db: &Db,
    audit: &AuditRow,
    s: &ShareRow,
    max: i64,
    now: i64,
) -> StoreResult<bool> {
    let postgres = matches!(db, Db::Postgres { .. });
    let given = format!(
        "SELECT COUNT(*) FROM shares s WHERE s.system_id = $3 AND s.tenant_id = $1 AND s.owner_id = $2 AND {LIVE_AT} $4)"
    );
    let received = format!(
        "SELECT COUNT(*) FROM shares s WHERE s.recipient_id = $2 AND s.tenant_id = $1 AND {LIVE_AT} $3)"
    );
    let recorded = in_transaction!(db, tx => {
        if postgres {
            // Sharer first, then recipient, in every transaction: no two wait on each other.
            for key in [format!("share-owner:{}:{}", s.owner_id, s.system_id), format!("share-recipient:{}", s.recipient_id)] {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let gives: i64 = sqlx::query_scalar(&given)
            .bind(&s.tenant_id)
            .bind(&s.owner_id)
            .bind(&s.system_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let receives: i64 = sqlx::query_scalar(&received)
            .bind(&s.tenant_id)
            .bind(&s.recipient_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if gives >= max || receives >= max {
            false
        } else {
            sqlx::query(INSERT)
                .bind(&s.id)
                .bind(&s.tenant_id)
                .bind(&s.system_id)
                .bind(&s.owner_id)
                .bind(&s.recipient_id)
                .bind(&s.roles)
                .bind(s.expires_at)
                .bind(s.created_at)
                .execute(&mut *tx)
                .await?;
            audit.bind(sqlx::query(super::audit::INSERT)).execute(&mut *tx).await?;
            true
        }
    });
    Ok(recorded)
}

pub async fn find(db: &Db, tenant_id: &str, id: &str) -> StoreResult<Option<ShareRow>> {
    let sql = format!("{SELECT} WHERE s.tenant_id = $1 AND s.id = $2");
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(id).fetch_optional(pool).await?),
    )
}

/// The live shares of a system, oldest first.
pub async fn live_for_system(
    db: &Db,
    tenant_id: &str,
    system_id: &str,
    now: i64,
) -> StoreResult<Vec<ShareRow>> {
    let sql = format!(
        "{SELECT} WHERE s.system_id = $2 AND s.tenant_id = $1 AND {LIVE_AT} $3)
         ORDER BY s.created_at, s.id"
    );
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(system_id).bind(now).fetch_all(pool).await?),
    )
}

/// The live shares a person received, of one system or of all, oldest first.
pub async fn live_received(
    db: &Db,
    tenant_id: &str,
    recipient_id: &str,
    system_id: Option<&str>,
    now: i64,
) -> StoreResult<Vec<ShareRow>> {
    let sql = format!(
        "{SELECT} WHERE s.recipient_id = $2 AND s.tenant_id = $1 AND {LIVE_AT} $3)
           AND COALESCE($4, s.system_id) = s.system_id
         ORDER BY s.created_at, s.id"
    );
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(recipient_id).bind(now).bind(system_id).fetch_all(pool).await?),
    )
}

const REVOKE: &str =
    "UPDATE shares SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL";

/// Revokes a share and every token minted under it, as `node`, in one transaction, with an
/// event for the share (`audit`) and one for each token: a token being minted under it either
/// commits first (and is revoked here) or finds it revoked (see `local_tokens::insert_rows`).
/// `false`: it was revoked already.
pub async fn revoke(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    id: &str,
    now: i64,
    node: &str,
) -> StoreResult<bool> {
    let changed = audited!(db, audit, tx => {
        let revoked = sqlx::query(REVOKE).bind(tenant_id).bind(id).bind(now).execute(&mut *tx).await?.rows_affected();
        if revoked > 0 {
            let tokens: Vec<String> = sqlx::query_scalar(super::local_tokens::REVOKE_FOR_SHARE)
                .bind(tenant_id)
                .bind(id)
                .bind(now)
                .bind(node)
                .fetch_all(&mut *tx)
                .await?;
            // Every token revoked with the share is an event of its own.
            for token in tokens {
                let event = AuditRow {
                    action: "local_token.revoked".into(),
                    target: format!("local_token:{token} with share:{id}"),
                    ..audit.clone()
                };
                event.bind(sqlx::query(super::audit::INSERT)).execute(&mut *tx).await?;
            }
        }
        revoked
    });
    Ok(changed > 0)
}
