//! A few SQLite connections handed out one at a time.
//!
//! sqlx's pool pings a connection every time it is given back, and on SQLite every ping, like
//! every query, is a round trip to the connection's own thread: two thread switches that cost
//! more than a simple query. A connection to a local file cannot go stale, so these are handed
//! out and taken back without a check.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a caller waits for a free connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Connections {
    idle: Mutex<Vec<SqliteConnection>>,
    free: Semaphore,
    size: u32,
}

/// A connection lent out; it goes back when dropped.
pub struct Lent<'a> {
    conn: Option<SqliteConnection>,
    home: &'a Connections,
    _permit: SemaphorePermit<'a>,
}

impl Connections {
    /// Opens `count` connections with `options`.
    pub async fn open(options: &SqliteConnectOptions, count: u32) -> sqlx::Result<Connections> {
        let mut idle = Vec::with_capacity(count as usize);
        for _ in 0..count.max(1) {
            idle.push(options.connect().await?);
        }
        Ok(Connections {
            free: Semaphore::new(idle.len()),
            size: idle.len() as u32,
            idle: Mutex::new(idle),
        })
    }

    /// A free connection, waiting for one if all are lent.
    pub async fn acquire(&self) -> sqlx::Result<Lent<'_>> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.free.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let conn = self.idle.lock().expect("connections lock").pop();
        Ok(Lent {
            conn: Some(conn.expect("a permit stands for an idle connection")),
            home: self,
            _permit: permit,
        })
    }

    /// Closes every connection, waiting for those lent out.
    pub async fn close(&self) {
        let all = self.free.acquire_many(self.size).await;
        let idle = std::mem::take(&mut *self.idle.lock().expect("connections lock"));
        self.free.close();
        drop(all);
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

impl Deref for Lent<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("lent until dropped")
    }
}

impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("lent until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Back before the permit is released, so the next holder of a permit finds it.
            self.home.idle.lock().expect("connections lock").push(conn);
        }
    }
}
