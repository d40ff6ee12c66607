//! Token status lists (SPEC §10).
//!
//! A system's list is not stored as such: its length is the system's `status_list_next` (every
//! index reserved so far) and its set bits are the indices of its revoked tokens, which are
//! never un-revoked. Indices are reserved a block at a time by a conditional `UPDATE`, so two
//! nodes never hand out the same one; reservations made at the same time (mints for several
//! systems new to this node) share one transaction ([`Reservations`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, OnceLock};

use super::batch::{Batcher, Coming};
use super::{Db, StoreResult, in_transaction, on_pool, on_writer};

/// A block of indices to reserve, and where the first of them is put once it is committed
/// (`None`: the system does not exist).
pub struct Reservation {
    pub tenant_id: String,
    pub system_id: String,
    pub first: Arc<OnceLock<Option<i64>>>,
}

/// Moves the lists of some of a tenant's systems on by `$2` indices, in one statement: each
/// system's new end.
fn reserve_sql(systems: usize) -> String {
    let mut sql = String::from(
        "UPDATE systems SET status_list_next = status_list_next + $2 WHERE tenant_id = $1 AND id IN (",
    );
    for i in 0..systems {
        let sep = if i == 0 { "" } else { ", " };
        write!(sql, "{sep}${}", i + 3).expect("writing to a String");
    }
    sql.push_str(") RETURNING id, status_list_next");
    sql
}

const RESERVE_FOR_TENANT: &str = "UPDATE systems SET status_list_next = status_list_next + $2
    WHERE tenant_id = $1 AND id IN
        (SELECT id FROM systems WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $3)
    RETURNING id, status_list_next";

/// Reserves the next `n` indices of the lists of the tenant's newest `limit` systems, in one
/// statement: each system's new end.
pub async fn reserve_for_tenant(
    db: &Db,
    tenant_id: &str,
    n: i64,
    limit: usize,
) -> StoreResult<Vec<(String, i64)>> {
    Ok(on_writer!(db, pool => sqlx::query_as(RESERVE_FOR_TENANT)
        .bind(tenant_id)
        .bind(n)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?))
}

/// Rows in one reservation transaction.
const MAX_RESERVATIONS_AT_ONCE: usize = 64;

/// Reserves blocks of `n` indices, those asked for together in one statement a tenant, in one
/// transaction ([`Batcher`]). One system is asked for at most once at a time.
pub struct Reservations {
    batcher: Batcher<Reservation>,
}

impl Reservations {
    /// Starts the writing task on the current Tokio runtime; it ends when dropped.
    pub fn start(db: Db, n: i64) -> Reservations {
        let batcher = Batcher::<Reservation>::start(
            MAX_RESERVATIONS_AT_ONCE,
            Box::new(move |blocks| {
                let db = db.clone();
                Box::pin(async move {
                    let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                    for b in blocks {
                        by_tenant
                            .entry(&b.tenant_id)
                            .or_default()
                            .push(&b.system_id);
                    }
                    let ends: HashMap<String, i64> = in_transaction!(&db, tx => {
                        let mut ends = HashMap::with_capacity(blocks.len());
                        for (tenant_id, systems) in &by_tenant {
                            let sql = reserve_sql(systems.len());
                            let mut query = sqlx::query_as::<_, (String, i64)>(&sql)
                                .bind(*tenant_id)
                                .bind(n);
                            for system_id in systems {
                                query = query.bind(*system_id);
                            }
                            ends.extend(query.fetch_all(&mut *tx).await?);
                        }
                        ends
                    });
                    // Only once committed: a block of a transaction rolled back was never had.
                    for b in blocks {
                        let _ = b.first.set(ends.get(&b.system_id).map(|end| end - n));
                    }
                    Ok(())
                })
            }),
        );
        Reservations { batcher }
    }

    /// Announces a reservation about to be asked for.
    pub fn expect(&self) -> Coming {
        self.batcher.expect()
    }

    /// Reserves the next `n` indices of a system's list; the first of them, or `None` when the
    /// system does not exist.
    pub async fn reserve(
        &self,
        (tenant_id, system_id): (&str, &str),
        coming: Coming,
    ) -> StoreResult<Option<i64>> {
        let first = Arc::new(OnceLock::new());
        let reservation = Reservation {
            tenant_id: tenant_id.to_owned(),
            system_id: system_id.to_owned(),
            first: first.clone(),
        };
        self.batcher.write(reservation, coming).await?;
        Ok(first.get().copied().flatten())
    }
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

/// A system's list, or `None` when the tenant has no such system. The set bits are read first:
/// the length only grows, so the length read after them covers every one.
pub async fn read(db: &Db, tenant_id: &str, system_id: &str) -> StoreResult<Option<StoredList>> {
    Ok(on_pool!(db, pool => {
        let revoked: Vec<i64> = sqlx::query_scalar(REVOKED)
            .bind(system_id)
            .bind(tenant_id)
            .fetch_all(&mut *pool)
            .await?;
        let len: Option<i64> = sqlx::query_scalar(LENGTH)
            .bind(tenant_id)
            .bind(system_id)
            .fetch_optional(&mut *pool)
            .await?;
        len.map(|len| StoredList { len, revoked })
    }))
}
