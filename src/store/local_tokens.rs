//! Local API tokens.

use std::fmt::Write;

use std::collections::BTreeSet;

use super::audit::{self, AuditRow};
use super::batch::{Batcher, Coming};
use super::{Db, StoreError, StoreResult, audited, in_transaction, on_pool};

/// The signing keys among `$1…` that are still published.
const LIVE_KEYS: &str = "SELECT kid FROM signing_keys WHERE status <> 'INVALIDATED' AND kid IN";
/// The people among `$1…` that still exist.
const LIVE_USERS: &str = "SELECT id FROM users WHERE id IN";
/// The shares among `$2…` that are neither revoked nor expired at `$1`.
const LIVE_SHARES: &str = "SELECT id FROM shares WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1) AND id IN";

/// `query` with `n` parameters in its `IN`, numbered from `$first`, locking the rows for share
/// on PostgreSQL.
fn still_there(query: &str, first: usize, n: usize, sqlite: bool) -> String {
    let params: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    let lock = if sqlite { "" } else { " FOR SHARE" };
    format!("{query} ({}){lock}", params.join(", "))
}

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
    /// Its index in the system's status list; `None` never for a row written now.
    pub status_idx: Option<i64>,
    /// Who acted for the subject when it was minted (RFC 8693 §4.1): a person's uuid or a
    /// client's id, its name, and `USER` or `CLIENT`.
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub actor_type: Option<String>,
    /// The share it was minted under (SPEC §11).
    pub share_id: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, system_id, user_id, user_name, roles, name, requested_device, kid, token, status, not_before, expires_at, created_at, updated_at, status_idx, actor_id, actor_name, actor_type, share_id";

/// Parameters a row takes in an `INSERT`: its columns, and the node that writes it.
const PARAMS_PER_ROW: usize = 21;

/// Rows in one multi-row `INSERT`: 21 parameters each, well inside both databases' limits.
const MAX_ROWS_PER_INSERT: usize = 64;

/// Statements for up to this many rows are prepared once and kept; larger ones, rare, each time,
/// so they do not push the other statements out of the connection's cache.
const MAX_ROWS_KEPT: usize = 16;

/// Inserts rows in one statement, as written by `node`: all of them or none.
async fn insert_rows(
    db: &Db,
    node: &str,
    rows: &[&LocalTokenRow],
    audits: &[&AuditRow],
) -> StoreResult<()> {
    // SQLite finds the number of a `$N` parameter by scanning the names of all parameters
    // before it, so binding hundreds of them costs more than the insert; plain `?` are numbered
    // by their place.
    let sqlite = matches!(db, Db::Sqlite { .. });
    let mut sql = format!("INSERT INTO local_api_tokens ({COLUMNS}, written_by) VALUES ");
    for r in 0..rows.len() {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=PARAMS_PER_ROW {
            if c > 1 {
                sql.push_str(", ");
            }
            if sqlite {
                sql.push('?');
            } else {
                write!(sql, "${}", r * PARAMS_PER_ROW + c).expect("writing to a String");
            }
        }
        sql.push(')');
    }
    let audit_sql = audit::insert_many(db, audits.len());
    let kids: BTreeSet<&str> = rows.iter().map(|r| r.kid.as_str()).collect();
    // The people acting count as the subjects do.
    let users: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| {
            let actor = r
                .actor_id
                .as_deref()
                .filter(|_| r.actor_type.as_deref() == Some("USER"));
            std::iter::once(r.user_id.as_str()).chain(actor)
        })
        .collect();
    let shares: BTreeSet<&str> = rows.iter().filter_map(|r| r.share_id.as_deref()).collect();
    let minted_at = rows.iter().map(|r| r.created_at).min().unwrap_or_default();
    let live_keys = still_there(LIVE_KEYS, 1, kids.len(), sqlite);
    let live_users = still_there(LIVE_USERS, 1, users.len(), sqlite);
    // `$1` is the time the shares must be live at.
    let live_shares = still_there(LIVE_SHARES, 2, shares.len(), sqlite);
    // The tokens and their audit events commit together.
    in_transaction!(db, tx => {
        // A key invalidated, a person deleted or a share revoked while these tokens were being
        // minted must not leave them live: the revocation that went with it could not see rows
        // committed after it. On PostgreSQL the key, person and share rows are locked for
        // share, so that change runs wholly before this insert (and is seen here) or after it
        // (and revokes these rows).
        let mut keys = sqlx::query_scalar::<_, String>(&live_keys);
        for kid in &kids {
            keys = keys.bind(*kid);
        }
        let mut people = sqlx::query_scalar::<_, String>(&live_users);
        for user in &users {
            people = people.bind(*user);
        }
        let live_shares_found = if shares.is_empty() {
            0
        } else {
            let mut live = sqlx::query_scalar::<_, String>(&live_shares).bind(minted_at);
            for share in &shares {
                live = live.bind(*share);
            }
            live.fetch_all(&mut *tx).await?.len()
        };
        if keys.fetch_all(&mut *tx).await?.len() != kids.len()
            || people.fetch_all(&mut *tx).await?.len() != users.len()
            || live_shares_found != shares.len()
        {
            tx.rollback().await?;
            return Err(StoreError::Conflict);
        }
        let mut query = sqlx::query(&sql).persistent(rows.len() <= MAX_ROWS_KEPT);
        for t in rows {
            query = query
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
                .bind(t.status_idx)
                .bind(&t.actor_id)
                .bind(&t.actor_name)
                .bind(&t.actor_type)
                .bind(&t.share_id)
                .bind(node);
        }
        query.execute(&mut *tx).await?;
        audit::bind_many(sqlx::query(&audit_sql).persistent(audits.len() <= MAX_ROWS_KEPT), audits)
            .execute(&mut *tx)
            .await?;
    });
    Ok(())
}

/// A minted token's row and its `local_token.issued` event, written together.
pub struct Minted {
    pub row: LocalTokenRow,
    pub audit: AuditRow,
}

/// Inserts tokens minted at the same time together, with their events ([`Batcher`]: a group
/// commit, waiting about one signature for tokens still being signed).
pub struct Inserts(Batcher<Minted>);

impl Inserts {
    /// Starts the writing task on the current Tokio runtime, which writes rows as `node`'s; it
    /// ends when `Inserts` is dropped.
    pub fn start(db: Db, node: String) -> Inserts {
        Inserts(Batcher::start(
            MAX_ROWS_PER_INSERT,
            Box::new(move |minted| {
                let (db, node) = (db.clone(), node.clone());
                Box::pin(async move {
                    let rows: Vec<&LocalTokenRow> = minted.iter().map(|m| &m.row).collect();
                    let audits: Vec<&AuditRow> = minted.iter().map(|m| &m.audit).collect();
                    insert_rows(&db, &node, &rows, &audits).await
                })
            }),
        ))
    }

    /// Announces a row about to be made (a token being signed), so the writer waits for it.
    pub fn expect(&self) -> Coming {
        self.0.expect()
    }

    /// Inserts one token's row and event, announced by `coming`; returns once it is committed.
    pub async fn insert(&self, minted: Minted, coming: Coming) -> StoreResult<()> {
        self.0.write(minted, coming).await
    }
}

pub async fn find(db: &Db, tenant_id: &str, id: &str) -> StoreResult<Option<LocalTokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM local_api_tokens WHERE tenant_id = $1 AND id = $2");
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(id).fetch_optional(pool).await?),
    )
}

/// At most this many systems are read in one query.
pub const MAX_SYSTEMS_PER_READ: usize = 512;

/// The tokens of some of the tenant's systems (at most [`MAX_SYSTEMS_PER_READ`]) that have not
/// expired at `now` (permanent ones unless revoked before `revoked_before`), by system, each
/// system's oldest first: one query for all of them.
pub async fn for_systems(
    db: &Db,
    tenant_id: &str,
    system_ids: &[&str],
    now: i64,
    revoked_before: i64,
) -> StoreResult<Vec<LocalTokenRow>> {
    assert!(system_ids.len() <= MAX_SYSTEMS_PER_READ);
    let Some(last) = system_ids.last() else {
        return Ok(Vec::new());
    };
    // The list of ids is as long as the next power of two, the last one repeated: a handful of
    // statements to prepare and keep, however many systems are asked for.
    let width = system_ids.len().next_power_of_two();
    let params: Vec<String> = (0..width).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM local_api_tokens
         WHERE tenant_id = $1 AND (expires_at IS NULL OR expires_at > $2)
           AND NOT (expires_at IS NULL AND status = 'REVOKED' AND updated_at <= $3)
           AND system_id IN ({})
         ORDER BY system_id, created_at, id",
        params.join(", ")
    );
    Ok(on_pool!(db, pool => {
        let mut query = sqlx::query_as(&sql).bind(tenant_id).bind(now).bind(revoked_before);
        for system_id in system_ids.iter().chain(std::iter::repeat_n(last, width - system_ids.len())) {
            query = query.bind(*system_id);
        }
        query.fetch_all(pool).await?
    }))
}

/// Read through the index of a system's tokens (`user_id || ''` keeps SQLite off the index of a
/// person's tokens, which holds every token of a person who mints for many systems): a system's
/// rows are what its list holds anyway, and no further index slows every mint's insert.
const LIVE_EXPIRIES: &str = "SELECT expires_at, kid FROM local_api_tokens
    WHERE system_id = $3 AND tenant_id = $1 AND user_id || '' = $2 AND status = 'ACTIVATED'
      AND (expires_at IS NULL OR expires_at > $4)
    LIMIT $5";

/// The expiry and signing key of up to `limit` of a person's unexpired, unrevoked tokens on a
/// system: what counts against their cap.
pub async fn live_expiries(
    db: &Db,
    (tenant_id, user_id, system_id): (&str, &str, &str),
    now: i64,
    limit: usize,
) -> StoreResult<Vec<(Option<i64>, String)>> {
    Ok(on_pool!(db, pool => sqlx::query_as(LIVE_EXPIRIES)
        .bind(tenant_id)
        .bind(user_id)
        .bind(system_id)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?))
}

const REVOKE: &str =
    "UPDATE local_api_tokens SET status = 'REVOKED', updated_at = $3, written_by = $4
    WHERE tenant_id = $1 AND id = $2 AND status = 'ACTIVATED'";

/// Revokes a token, as `node`.
pub async fn revoke(
    db: &Db,
    audit: &AuditRow,
    tenant_id: &str,
    id: &str,
    now: i64,
    node: &str,
) -> StoreResult<()> {
    audited!(db, audit, tx => sqlx::query(REVOKE).bind(tenant_id).bind(id).bind(now).bind(node).execute(&mut *tx).await?.rows_affected());
    Ok(())
}

/// Revokes every token of a user, and every token they minted for another as its actor (under
/// a share), written by a node; used when the user is deleted, in that transaction
/// (`users::delete`).
pub(super) const REVOKE_FOR_USER: &str =
    "UPDATE local_api_tokens SET status = 'REVOKED', updated_at = $3, written_by = $4
    WHERE tenant_id = $1 AND (user_id = $2 OR (actor_id = $2 AND actor_type = 'USER'))
      AND status = 'ACTIVATED'
    RETURNING id, system_id";

/// Revokes every token minted under a share (written by a node); used when the share is
/// revoked, in that transaction (`shares::revoke`).
pub(super) const REVOKE_FOR_SHARE: &str =
    "UPDATE local_api_tokens SET status = 'REVOKED', updated_at = $3, written_by = $4
    WHERE tenant_id = $1 AND share_id = $2 AND status = 'ACTIVATED' RETURNING id";

/// A row of `local_api_tokens` changed, or (with no token) a system created.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListChange {
    pub tenant_id: String,
    pub system_id: String,
    pub id: Option<String>,
    pub status: Option<String>,
    pub updated_at: Option<i64>,
}

const CHANGED_SINCE: &str = "SELECT tenant_id, system_id, id, status, updated_at
    FROM local_api_tokens WHERE updated_at >= $1 AND (written_by IS NULL OR written_by <> $2)
    UNION ALL SELECT tenant_id, id, NULL, NULL, NULL FROM systems WHERE created_at >= $1";

/// What may have changed lists at or after `since` other than `node` itself: tokens minted or
/// revoked by others, and systems created. How a node learns of changes made by another.
pub async fn list_changes_since(db: &Db, since: i64, node: &str) -> StoreResult<Vec<ListChange>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(CHANGED_SINCE).bind(since).bind(node).fetch_all(pool).await?),
    )
}
