//! One node at a time for background jobs: a PostgreSQL advisory lock held by an open
//! transaction, released when it ends. SQLite is single-node, so the lock is always granted.

use sqlx::{Postgres, Transaction};

use super::{Db, StoreResult};

/// Held while a job runs; [`JobLock::release`] lets another node take it.
pub struct JobLock(Option<Transaction<'static, Postgres>>);

/// Takes the lock named `job` if no other node holds it.
pub async fn try_lock(db: &Db, job: i64) -> StoreResult<Option<JobLock>> {
    match db {
        Db::Sqlite { .. } => Ok(Some(JobLock(None))),
        Db::Postgres { pool, .. } => {
            let mut tx = pool.begin().await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(job)
                .fetch_one(&mut *tx)
                .await?;
            Ok(locked.then_some(JobLock(Some(tx))))
        }
    }
}

impl JobLock {
    pub async fn release(self) -> StoreResult<()> {
        if let Some(tx) = self.0 {
            tx.commit().await?;
        }
        Ok(())
    }
}
