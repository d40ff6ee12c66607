//! Token status lists (SPEC §10).
//!
//! A system's list is not stored as such: its length is the system's `status_list_next` (every
//! index reserved so far) and its set bits are the indices of its revoked tokens, which are
//! never un-revoked. Indices are reserved a block at a time by one conditional `UPDATE`, so two
//! nodes never hand out the same one.

use super::{Db, StoreResult, on_pool, on_writer};

const RESERVE: &str = "UPDATE systems SET status_list_next = status_list_next + $3
    WHERE tenant_id = $1 AND id = $2 RETURNING status_list_next";

/// Reserves the next `n` indices of a system's list; the first of them, or `None` when the
/// system does not exist.
pub async fn reserve(
    db: &Db,
    tenant_id: &str,
    system_id: &str,
    n: i64,
) -> StoreResult<Option<i64>> {
    let end: Option<i64> = on_writer!(db, pool => sqlx::query_scalar(RESERVE)
        .bind(tenant_id)
        .bind(system_id)
        .bind(n)
        .fetch_optional(pool)
        .await?);
    Ok(end.map(|end| end - n))
}

/// A system's list as stored: how many indices it covers and which are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredList {
    pub len: i64,
    pub revoked: Vec<i64>,
}

const LENGTH: &str = "SELECT status_list_next FROM systems WHERE tenant_id = $1 AND id = $2";
const REVOKED: &str = "SELECT status_idx FROM local_api_tokens
    WHERE system_id = $1 AND status = 'REVOKED' AND status_idx IS NOT NULL AND tenant_id = $2";

/// A system's list, or `None` when the tenant has no such system.
pub async fn read(db: &Db, tenant_id: &str, system_id: &str) -> StoreResult<Option<StoredList>> {
    Ok(on_pool!(db, pool => {
        let len: Option<i64> = sqlx::query_scalar(LENGTH)
            .bind(tenant_id)
            .bind(system_id)
            .fetch_optional(&mut *pool)
            .await?;
        match len {
            None => None,
            Some(len) => {
                let revoked: Vec<i64> = sqlx::query_scalar(REVOKED)
                    .bind(system_id)
                    .bind(tenant_id)
                    .fetch_all(&mut *pool)
                    .await?;
                Some(StoredList { len, revoked })
            }
        }
    }))
}
