//! Audit events (SPEC §14). An event is written by [`audited!`](super::audited) in the
//! transaction of the change it records, or, for tokens issued (which change nothing stored), in
//! batches by [`Recorder`]; listed newest last by `seq`, and pruned after `audit.retention`.

use super::batch::{Batcher, Coming};
use super::{Db, StoreResult, on_pool, on_writer};

/// One event as stored. Never a secret, a token or a code: ids and names only.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub time: i64,
    pub tenant_id: String,
    /// Who acted: `client:ID`, `user:ID via client:ID`, `operator`, or `lanyard` (its own jobs).
    pub actor: String,
    /// What was done, `noun.verb` (`client.created`, `token.issued`, …).
    pub action: String,
    /// What it was done to, `kind:ID` (`client:demo-app`, `key:KID`, …).
    pub target: String,
    pub outcome: String,
}

/// A stored event with its place in the order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub time: i64,
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

pub(super) const INSERT: &str =
    "INSERT INTO audit_events (time, tenant_id, actor, action, target, outcome)
    VALUES ($1, $2, $3, $4, $5, $6)";

impl AuditRow {
    pub(super) fn bind<'q, DB: sqlx::Database>(
        &'q self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.time)
            .bind(self.tenant_id.as_str())
            .bind(self.actor.as_str())
            .bind(self.action.as_str())
            .bind(self.target.as_str())
            .bind(self.outcome.as_str())
    }
}

const LIST: &str = "SELECT seq, time, tenant_id, actor, action, target, outcome FROM audit_events
    WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// The tenant's events after `after` (a `seq`), oldest first, at most `limit`.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<StoredEvent>> {
    Ok(
        on_pool!(db, pool => sqlx::query_as(LIST).bind(tenant_id).bind(after).bind(limit).fetch_all(pool).await?),
    )
}

/// Events forgotten by one statement: a large backlog is pruned a piece at a time, so the
/// writer is never held for long (on SQLite every write waits for it).
const PRUNE_CHUNK: i64 = 5_000;
const PRUNE: &str = "DELETE FROM audit_events WHERE seq IN
    (SELECT seq FROM audit_events WHERE time < $1 ORDER BY seq LIMIT $2)";

/// Forgets events older than `before`, a chunk at a time; returns how many.
pub async fn prune(db: &Db, before: i64) -> StoreResult<u64> {
    let mut pruned = 0;
    loop {
        let n = on_writer!(db, pool => sqlx::query(PRUNE).bind(before).bind(PRUNE_CHUNK).execute(pool).await?.rows_affected());
        pruned += n;
        if n < PRUNE_CHUNK as u64 {
            return Ok(pruned);
        }
        tokio::task::yield_now().await;
    }
}

/// Most events written in one statement by the [`Recorder`].
const MAX_ROWS_PER_BATCH: usize = 256;

/// Writes the events of tokens issued, many with one statement ([`Batcher`]): each waits for
/// its own before its token is answered.
pub struct Recorder(Batcher<AuditRow>);

impl Recorder {
    /// Starts the writing task on the current Tokio runtime; it ends when `Recorder` is dropped.
    pub fn start(db: Db) -> Recorder {
        Recorder(Batcher::start(
            MAX_ROWS_PER_BATCH,
            Box::new(move |rows| {
                let db = db.clone();
                Box::pin(async move { write(&db, rows).await })
            }),
        ))
    }

    /// Announces an event about to be given (a token being signed), so the writer waits for it.
    pub fn expect(&self) -> Coming {
        self.0.expect()
    }

    /// Records one event announced by `coming`; returns once it is committed.
    pub async fn record(&self, row: AuditRow, coming: Coming) -> StoreResult<()> {
        self.0.write(row, coming).await
    }
}

/// Writes `rows` with one statement, which commits them all or none.
async fn write(db: &Db, rows: &[&AuditRow]) -> StoreResult<()> {
    let sql = insert_many(db, rows.len());
    on_writer!(db, pool => bind_many(sqlx::query(&sql), rows).execute(pool).await?.rows_affected());
    Ok(())
}

/// One statement inserting `n` events (plain `?` on SQLite, which numbers them by place more
/// cheaply than it finds `$N` by name).
pub(super) fn insert_many(db: &Db, n: usize) -> String {
    use std::fmt::Write;
    let sqlite = matches!(db, Db::Sqlite { .. });
    let mut sql = String::from(
        "INSERT INTO audit_events (time, tenant_id, actor, action, target, outcome) VALUES ",
    );
    for r in 0..n {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=6 {
            if c > 1 {
                sql.push_str(", ");
            }
            if sqlite {
                sql.push('?');
            } else {
                write!(sql, "${}", r * 6 + c).expect("writing to a String");
            }
        }
        sql.push(')');
    }
    sql
}

/// Binds `rows` to a statement from [`insert_many`].
pub(super) fn bind_many<'q, DB: sqlx::Database>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    rows: &[&'q AuditRow],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for row in rows {
        query = row.bind(query);
    }
    query
}
