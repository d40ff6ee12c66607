//! A few SQLite connections handed out one at a time, and the checkpoints of the writer's log.
//!
//! sqlx's pool pings a connection every time it is given back, and on SQLite every ping, like
//! every query, is a round trip to the connection's own thread: two thread switches that cost
//! more than a simple query. A connection to a local file cannot go stale, so these are handed
//! out and taken back without a check.
//!
//! The writer never copies its write-ahead log back into the database file itself (SQLite's
//! automatic checkpoint): a checkpoint waits for the disk twice (`fsync`), tens of
//! milliseconds during which every write of the process would queue behind it. [`Checkpoints`]
//! does it on a connection of its own, soon after writes.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

/// How long a caller waits for a free connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Connections {
    idle: Mutex<Vec<SqliteConnection>>,
    free: Semaphore,
    size: u32,
    /// Notified each time a connection comes back: the writer's wakes its [`Checkpoints`].
    returned: Option<Arc<Notify>>,
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
            returned: None,
        })
    }

    /// The one connection that writes, which leaves checkpoints to the [`Checkpoints`]
    /// returned with it.
    pub async fn open_writer(
        options: &SqliteConnectOptions,
    ) -> sqlx::Result<(Arc<Connections>, Checkpoints)> {
        let no_checkpoints = options.clone().pragma("wal_autocheckpoint", "0");
        let mut writer = Connections::open(&no_checkpoints, 1).await?;
        let written = Arc::new(Notify::new());
        writer.returned = Some(written.clone());
        let writer = Arc::new(writer);
        let checkpoints = Checkpoints::start(options.connect().await?, writer.clone(), written);
        Ok((writer, checkpoints))
    }

    /// How many connections there are.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// How many are not lent out now.
    pub fn idle(&self) -> u32 {
        self.free.available_permits() as u32
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
        if let Some(returned) = &self.home.returned {
            returned.notify_one();
        }
    }
}

/// How long after a write the log is copied back: the writes meanwhile share the checkpoint.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(500);

/// A log this long (in pages, 4 MiB) is made to start over, as SQLite's own checkpoints do.
const RESTART_AFTER_PAGES: i64 = 1000;

/// Copies the writer's log back into the database file, on a connection of its own, half a
/// second after writes. Writes go on meanwhile. The log starts over at the first write after
/// a checkpoint that copied all of it, which writes coming in during the checkpoint prevent;
/// so once the log is long, what they added is copied with the writer held, only long enough
/// for that, and the log does not grow while writes keep coming.
#[derive(Debug)]
pub struct Checkpoints {
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpoints {
    fn start(
        mut conn: SqliteConnection,
        writer: Arc<Connections>,
        written: Arc<Notify>,
    ) -> Checkpoints {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.notified() => break,
                    _ = written.notified() => {}
                }
                tokio::select! {
                    _ = stopped.notified() => break,
                    _ = tokio::time::sleep(CHECKPOINT_AFTER) => {}
                }
                match checkpoint(&mut conn).await {
                    Ok(pages) if pages >= RESTART_AFTER_PAGES => {
                        let Ok(_held) = writer.acquire().await else {
                            break;
                        };
                        if let Err(e) = checkpoint(&mut conn).await {
                            tracing::warn!("database checkpoint failed: {e}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("database checkpoint failed: {e}"),
                }
            }
            let _ = conn.close().await;
        });
        Checkpoints {
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops checkpointing and closes its connection.
    pub async fn close(&self) {
        self.stop.notify_one();
        let task = self.task.lock().expect("checkpoints lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// Copies what it can of the log into the database file without waiting for anyone; returns
/// how many pages the log holds.
async fn checkpoint(conn: &mut SqliteConnection) -> sqlx::Result<i64> {
    let (_busy, pages, _copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use crate::store::Db;

    const PATIENCE: Duration = Duration::from_secs(30);

    async fn open(dir: &Path) -> (Db, PathBuf) {
        let file = dir.join("lanyard.db");
        let db = Db::connect(&format!("sqlite://{}", file.display()), 2)
            .await
            .unwrap();
        write(&db, "CREATE TABLE notes (note TEXT NOT NULL)").await;
        (db, file)
    }

    async fn write(db: &Db, sql: &str) {
        let Db::Sqlite { writer, .. } = db else {
            unreachable!()
        };
        sqlx::query(sql)
            .execute(&mut *writer.acquire().await.unwrap())
            .await
            .unwrap();
    }

    /// The log's checkpoint sequence number, which goes up each time the log starts over.
    fn log_restarts(file: &Path) -> u32 {
        let log = std::fs::read(format!("{}-wal", file.display())).unwrap_or_default();
        log.get(12..16)
            .map_or(0, |n| u32::from_be_bytes(n.try_into().unwrap()))
    }

    #[tokio::test]
    async fn a_write_reaches_the_database_file_while_the_database_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let (db, file) = open(dir.path()).await;
        let note = "a note to find in the file";
        write(&db, &format!("INSERT INTO notes VALUES ('{note}')")).await;
        let started = Instant::now();
        while !std::fs::read(&file)
            .unwrap()
            .windows(note.len())
            .any(|w| w == note.as_bytes())
        {
            assert!(started.elapsed() < PATIENCE, "never copied from the log");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        db.close().await;
    }

    #[tokio::test]
    async fn the_log_starts_over_while_writes_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let (db, file) = open(dir.path()).await;
        let writing = tokio::spawn({
            let db = db.clone();
            async move {
                loop {
                    write(&db, "INSERT INTO notes VALUES ('another note')").await;
                }
            }
        });
        let first = log_restarts(&file);
        let started = Instant::now();
        while log_restarts(&file) < first + 2 {
            assert!(started.elapsed() < PATIENCE, "the log grows without end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        writing.abort();
        let _ = writing.await;
        db.close().await;
    }
}
