//! Change announcements between nodes sharing one PostgreSQL database: `NOTIFY` on a channel
//! every node `LISTEN`s to. SQLite is single-node and has none.

use sqlx::postgres::PgListener;

use super::{Db, StoreResult};

/// The channel lanyard's nodes announce changes on.
pub const CHANNEL: &str = "lanyard_events";

/// Announces `payload` (at most 8000 bytes) to every node listening; nothing on SQLite.
pub async fn notify(db: &Db, payload: &str) -> StoreResult<()> {
    if let Db::Postgres { pool, .. } = db {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A subscription to the other nodes' announcements; None on SQLite.
pub struct Listener(PgListener);

impl Listener {
    pub async fn connect(db: &Db) -> StoreResult<Option<Listener>> {
        let Db::Postgres { pool, .. } = db else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Listener(listener)))
    }

    /// The next announcement. After a lost connection the listener reconnects; announcements
    /// made meanwhile are lost, which the caller learns as `Ok(None)`.
    pub async fn recv(&mut self) -> StoreResult<Option<String>> {
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_owned()))
    }
}
