//! One-time sign-in codes, and the record of every request for one (the rate limits count
//! them per address and per source).
//!
//! `seq` orders the codes strictly as they were asked for: PostgreSQL draws it from a sequence,
//! SQLite (one writer) takes the next number in the same statement.
//!
//! The hosted sign-in page's email step (`web_sign_in`) is counted here too, as a row with no
//! `client_id` and a hash of nothing anybody knows: it counts for the limits and redeems
//! nothing (the OTP grant reads only rows of its client).
//!
//! A request is counted against the limits and recorded in one transaction, serialised per
//! address and per source (SQLite: the one writer; PostgreSQL: advisory locks), so requests
//! sent at once cannot all pass a limit that each would see as not yet reached.

use super::{Db, StoreResult, in_transaction, on_pool, on_writer};

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

/// What [`insert_within_limits`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Recorded,
    /// The address already has `per_email` requests in the window.
    AddressLimited,
    /// The source already has `per_source` requests in the window.
    SourceLimited,
}

/// The limits a request for a code is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub since: i64,
    pub per_email: i64,
    pub per_source: i64,
}

/// Records `o` unless the address `counted_email` (in `o`'s tenant) or `o.source` has reached
/// its limit since `limits.since`; the count and the insert are one transaction, serialised per
/// address and per source.
pub async fn insert_within_limits(
    db: &Db,
    o: &OtpRow,
    counted_email: &str,
    limits: Limits,
) -> StoreResult<Admission> {
    let postgres = matches!(db, Db::Postgres { .. });
    let insert = match db {
        Db::Sqlite { .. } => INSERT_SQLITE,
        Db::Postgres { .. } => INSERT,
    };
    let admission = in_transaction!(db, tx => {
        if postgres {
            // Address first, then source, in every transaction: no two wait on each other.
            for key in [format!("otp-email:{}:{counted_email}", o.tenant_id), format!("otp-source:{}", o.source)] {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let from_source: i64 = sqlx::query_scalar(COUNT_SOURCE_SINCE)
            .bind(&o.source)
            .bind(limits.since)
            .fetch_one(&mut *tx)
            .await?;
        let for_email: i64 = sqlx::query_scalar(COUNT_SINCE)
            .bind(&o.tenant_id)
            .bind(counted_email)
            .bind(limits.since)
            .fetch_one(&mut *tx)
            .await?;
        if from_source >= limits.per_source {
            Admission::SourceLimited
        } else if for_email >= limits.per_email {
            Admission::AddressLimited
        } else {
            sqlx::query(insert)
                .bind(&o.id)
                .bind(&o.tenant_id)
                .bind(&o.email)
                .bind(&o.client_id)
                .bind(&o.code_hash)
                .bind(o.created_at)
                .bind(o.expires_at)
                .bind(&o.source)
                .execute(&mut *tx)
                .await?;
            Admission::Recorded
        }
    });
    Ok(admission)
}

/// Requests from one source address since `$2`, in every tenant.
const COUNT_SOURCE_SINCE: &str =
    "SELECT COUNT(*) FROM otp_codes WHERE source = $1 AND created_at > $2";

/// Requests for one address of a tenant since `$3`.
const COUNT_SINCE: &str =
    "SELECT COUNT(*) FROM otp_codes WHERE tenant_id = $1 AND email = $2 AND created_at > $3";

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

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Row, SqliteConnection};

    use super::*;

    /// What SQLite plans for `sql`: one line per step.
    async fn plan(conn: &mut SqliteConnection, sql: &str) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        for _ in 0..sql.matches('$').count() {
            query = query.bind("x");
        }
        let rows = query.fetch_all(&mut *conn).await.unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The counts every `send-otp` makes find their rows by index, however many codes the
    /// table holds (a flood of fresh addresses must not make each request scan them all).
    #[tokio::test]
    async fn the_sign_in_code_limits_count_by_index() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        crate::store::SQLITE_MIGRATIONS
            .run(&mut conn)
            .await
            .unwrap();
        let by_source = plan(&mut conn, COUNT_SOURCE_SINCE).await;
        assert!(by_source.contains("INDEX otp_codes_source"), "{by_source}");
        let by_address = plan(&mut conn, COUNT_SINCE).await;
        assert!(by_address.contains("INDEX otp_codes_email"), "{by_address}");
    }
}
