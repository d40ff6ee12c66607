//! One-time sign-in codes, and the record of every request for one (the rate limits count
//! them per address and per source).
//!
//! `seq` orders the codes strictly as they were asked for: PostgreSQL draws it from a sequence,
//! SQLite (one writer) takes the next number in the same statement.

use super::{Db, StoreResult, on_pool, on_writer};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OtpRow {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub client_id: String,
    pub code_hash: Vec<u8>,
    pub attempts: i64,
    pub used: bool,
    pub created_at: i64,
    pub expires_at: i64,
    /// The address that asked for the code.
    pub source: String,
}

const INSERT: &str = "INSERT INTO otp_codes
    (id, tenant_id, email, client_id, code_hash, created_at, expires_at, source)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// SQLite has no sequence: the next `seq` is taken in the statement, which the single writer
/// runs alone.
const INSERT_SQLITE: &str = "INSERT INTO otp_codes
    (id, tenant_id, email, client_id, code_hash, created_at, expires_at, source, seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT COALESCE(MAX(seq), 0) + 1 FROM otp_codes))";

pub async fn insert(db: &Db, o: &OtpRow) -> StoreResult<()> {
    let sql = match db {
        Db::Sqlite { .. } => INSERT_SQLITE,
        Db::Postgres { .. } => INSERT,
    };
    on_writer!(db, pool => sqlx::query(sql)
        .bind(&o.id)
        .bind(&o.tenant_id)
        .bind(&o.email)
        .bind(&o.client_id)
        .bind(&o.code_hash)
        .bind(o.created_at)
        .bind(o.expires_at)
        .bind(&o.source)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

const COUNT_SINCE: &str =
    "SELECT COUNT(*) FROM otp_codes WHERE tenant_id = $1 AND email = $2 AND created_at > $3";

/// Codes requested for one email since `since` (for the rate limit).
pub async fn count_for_email_since(
    db: &Db,
    tenant_id: &str,
    email: &str,
    since: i64,
) -> StoreResult<i64> {
    Ok(
        on_pool!(db, pool => sqlx::query_scalar(COUNT_SINCE).bind(tenant_id).bind(email).bind(since).fetch_one(pool).await?),
    )
}

const COUNT_SOURCE_SINCE: &str =
    "SELECT COUNT(*) FROM otp_codes WHERE source = $1 AND created_at > $2";

/// Requests from one source address since `since`, in every tenant (for the rate limit).
pub async fn count_for_source_since(db: &Db, source: &str, since: i64) -> StoreResult<i64> {
    Ok(
        on_pool!(db, pool => sqlx::query_scalar(COUNT_SOURCE_SINCE).bind(source).bind(since).fetch_one(pool).await?),
    )
}

const LATEST: &str = "SELECT id, tenant_id, email, client_id, code_hash, attempts, used,
    created_at, expires_at, source
    FROM otp_codes WHERE tenant_id = $1 AND email = $2 AND client_id = $3
    ORDER BY seq DESC LIMIT 1";

/// The newest code issued for this email to this client: the last one asked for.
pub async fn latest(
    db: &Db,
    tenant_id: &str,
    email: &str,
    client_id: &str,
) -> StoreResult<Option<OtpRow>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(LATEST).bind(tenant_id).bind(email).bind(client_id).fetch_optional(pool).await?),
    )
}

const CONSUME: &str = "UPDATE otp_codes SET used = TRUE
    WHERE id = $1 AND used = FALSE AND attempts < $2 AND expires_at > $3 RETURNING id";

/// Marks the code used if it is still usable; exactly one of concurrent callers gets `true`.
pub async fn consume(db: &Db, id: &str, max_attempts: i64, now: i64) -> StoreResult<bool> {
    let row: Option<String> = on_writer!(db, pool => sqlx::query_scalar(CONSUME).bind(id).bind(max_attempts).bind(now).fetch_optional(pool).await?);
    Ok(row.is_some())
}

const FAIL_ATTEMPT: &str =
    "UPDATE otp_codes SET attempts = attempts + 1 WHERE id = $1 AND used = FALSE";

pub async fn record_failed_attempt(db: &Db, id: &str) -> StoreResult<()> {
    on_writer!(db, pool => sqlx::query(FAIL_ATTEMPT).bind(id).execute(pool).await?.rows_affected());
    Ok(())
}

const PRUNE: &str = "DELETE FROM otp_codes WHERE expires_at < $1";

/// Forgets codes that expired before `before` (kept a while for the rate limit).
pub async fn prune(db: &Db, before: i64) -> StoreResult<u64> {
    Ok(on_writer!(db, pool => sqlx::query(PRUNE).bind(before).execute(pool).await?.rows_affected()))
}
