//! Token status lists (SPEC §10).
//!
//! A system's list is not stored as such: its length is the system's `status_list_next` (every
//! index reserved so far) and its set bits are the indices of its revoked tokens, which are
//! never un-revoked. Indices are reserved a block at a time by a conditional `UPDATE`, so two
//! nodes never hand out the same one; reservations made at the same time (mints for several
//! systems new to this node) share one transaction ([`Reservations`]).

use std::sync::{Arc, OnceLock};

use super::batch::{Batcher, Coming};
use super::{Db, StoreResult, in_transaction, on_pool};

const RESERVE: &str = "UPDATE systems SET status_list_next = status_list_next + $3
    WHERE tenant_id = $1 AND id = $2 RETURNING status_list_next";

/// A block of indices to reserve, and where the first of them is put once it is committed
/// (`None`: the system does not exist).
pub struct Reservation {
    pub tenant_id: String,
    pub system_id: String,
    pub n: i64,
    pub first: Arc<OnceLock<Option<i64>>>,
}

/// Rows in one reservation transaction.
const MAX_RESERVATIONS_AT_ONCE: usize = 64;

/// Reserves blocks of indices, those asked for together in one transaction ([`Batcher`]).
pub struct Reservations(Batcher<Reservation>);

impl Reservations {
    /// Starts the writing task on the current Tokio runtime; it ends when dropped.
    pub fn start(db: Db) -> Reservations {
        Reservations(Batcher::start(
            MAX_RESERVATIONS_AT_ONCE,
            Box::new(move |blocks| {
                let db = db.clone();
                Box::pin(async move {
                    let firsts = in_transaction!(&db, tx => {
                        let mut firsts = Vec::with_capacity(blocks.len());
                        for b in blocks {
                            let end: Option<i64> = sqlx::query_scalar(RESERVE)
                                .bind(&b.tenant_id)
                                .bind(&b.system_id)
                                .bind(b.n)
                                .fetch_optional(&mut *tx)
                                .await?;
                            firsts.push(end.map(|end| end - b.n));
                        }
                        firsts
                    });
                    // Only once committed: a block of a transaction rolled back was never had.
                    for (b, first) in blocks.iter().zip(firsts) {
                        let _ = b.first.set(first);
                    }
                    Ok(())
                })
            }),
        ))
    }

    /// Announces a reservation about to be asked for.
    pub fn expect(&self) -> Coming {
        self.0.expect()
    }

    /// Reserves the next `n` indices of a system's list; the first of them, or `None` when the
    /// system does not exist.
    pub async fn reserve(
        &self,
        (tenant_id, system_id): (&str, &str),
        n: i64,
        coming: Coming,
    ) -> StoreResult<Option<i64>> {
        let first = Arc::new(OnceLock::new());
        let reservation = Reservation {
            tenant_id: tenant_id.to_owned(),
            system_id: system_id.to_owned(),
            n,
            first: first.clone(),
        };
        self.0.write(reservation, coming).await?;
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
