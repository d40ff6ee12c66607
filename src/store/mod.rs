//! Persistence: one [`Db`] over SQLite (read-only connections and one writer) or a PostgreSQL
//! pool, one file per aggregate.
//!
//! The SQL is written once in the dialect both databases share (`$1` parameters, `RETURNING`,
//! `ON CONFLICT`, partial unique indexes) and run on whichever database is active through
//! `on_pool!` (reads), `on_writer!` (a statement that writes) and `in_transaction!`. The
//! `Any` driver is not used: it cannot decode booleans or timestamps on SQLite. Times are stored
//! as Unix seconds and ids as text, so the same binds work on both databases and time
//! comparisons are numeric.
//!
//! Anything that must happen together is one function here that runs one transaction; one-time
//! things are consumed with a single conditional `UPDATE … RETURNING`, never read-then-write.
//! A write that changes what a tenant holds takes its audit event ([`audit::AuditRow`]) and
//! writes it in the same transaction (`audited!`), so the two commit together or not at all.
//! This module knows SQL and rows, not HTTP, MQTT or JWTs.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::metrics::DbWaits;

pub mod applications;
pub mod audit;
pub mod batch;
pub mod clients;
pub mod events;
pub mod jobs;
pub mod key_encryption;
pub mod local_tokens;
pub mod metadata;
pub mod otp;
pub mod refresh_tokens;
pub mod revocations;
pub mod scopes;
pub mod shares;
pub mod signing_keys;
pub mod sqlite;
pub mod status_lists;
pub mod systems;
pub mod tenants;
pub mod users;
pub mod web_sign_in;

/// The database, on either driver.
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite lets one connection write at a time; a writer that finds the lock taken sleeps in
    /// SQLite's busy handler for a millisecond or more. So every write goes through `writer`, a
    /// single connection, where writers queue without sleeping, and reads go to `reader`,
    /// whose connections are read-only (WAL mode lets them read while the writer writes).
    Sqlite {
        reader: Arc<sqlite::Connections>,
        writer: Arc<sqlite::Connections>,
        /// `None` for a database in memory, which has no log.
        checkpoints: Option<Arc<sqlite::Checkpoints>>,
        waits: DbWaits,
    },
    Postgres {
        pool: PgPool,
        waits: DbWaits,
    },
}

/// Runs `$body` with `$pool` bound to a connection that reads (on SQLite a read-only one); the
/// body is compiled once per driver and uses `$pool` once. The wait for the connection is timed
/// (`lanyard_db_wait_seconds{kind="read"}`).
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        $crate::store::on_side!($db, reader, Read, $pool => $body)
    };
}

/// Runs `$body`, a single statement that writes, with `$pool` bound to a connection that writes
/// (on SQLite the writer).
macro_rules! on_writer {
    ($db:expr, $pool:ident => $body:expr) => {
        $crate::store::on_side!($db, writer, Write, $pool => $body)
    };
}

/// [`on_pool!`] and [`on_writer!`]: `$side` names the SQLite connections to use, `$kind` the
/// [`DbKind`](crate::metrics::DbKind) the wait is recorded as. On PostgreSQL the connection is
/// taken from the pool here, as the pool would take it for the statement, so that the wait is
/// measured apart from the statement.
macro_rules! on_side {
    ($db:expr, $side:ident, $kind:ident, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite {
                $side: connections,
                waits,
                ..
            } => {
                let waited = waits.start($crate::metrics::DbKind::$kind);
                let mut conn = connections.acquire().await?;
                drop(waited);
                let $pool = &mut *conn;
                $body
            }
            $crate::store::Db::Postgres { pool, waits } => {
                let waited = waits.start($crate::metrics::DbKind::$kind);
                let mut conn = pool.acquire().await?;
                drop(waited);
                let $pool = &mut *conn;
                $body
            }
        }
    };
}

/// Runs `$body` inside a transaction bound to `$tx` and commits it; an early return (`?`) rolls
/// back. On SQLite the write lock is taken up front (`BEGIN IMMEDIATE`), so a read followed by a
/// write in one transaction cannot fail half-way with `SQLITE_BUSY`. The wait for the
/// connection is timed (`kind="transaction"`).
macro_rules! in_transaction {
    ($db:expr, $tx:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite { writer, waits, .. } => {
                let waited = waits.start($crate::metrics::DbKind::Transaction);
                let mut conn = writer.acquire().await?;
                drop(waited);
                let mut $tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::Db::Postgres { pool, waits } => {
                let waited = waits.start($crate::metrics::DbKind::Transaction);
                let mut conn = pool.acquire().await?;
                drop(waited);
                let mut $tx = sqlx::Connection::begin(&mut *conn).await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Runs `$body` (statements on `$tx`, evaluating to how many rows they changed) in a transaction
/// and, when it changed any, records `$audit` (an [`audit::AuditRow`]) in the same transaction:
/// an event commits with its change or not at all.
macro_rules! audited {
    ($db:expr, $audit:expr, $tx:ident => $body:expr) => {
        $crate::store::in_transaction!($db, $tx => {
            let changed: u64 = $body;
            if changed > 0 {
                $audit
                    .bind(sqlx::query($crate::store::audit::INSERT))
                    .execute(&mut *$tx)
                    .await?;
            }
            changed
        })
    };
}

pub(crate) use {audited, in_transaction, on_pool, on_side, on_writer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write.
    #[error("the record already exists")]
    Conflict,
    /// A signing key was sealed under a key-encryption key the database no longer records
    /// (`lanyard rekey` replaced it while this node ran): it is not stored.
    #[error(
        "the database records another key-encryption key (rekeyed?): restart this node with the new one"
    )]
    KeyEncryptionKeyReplaced,
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "database.url: cannot open SQLite database {url:?}: {source}; check that the folder is writable"
    )]
    Sqlite { url: String, source: sqlx::Error },
    #[error(
        "database.url: cannot connect to PostgreSQL at {url}: {source}; check that the server runs and the URL (user, host, database) is right"
    )]
    Postgres { url: String, source: sqlx::Error },
    #[error("database.url: cannot create the folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://…`). SQLite files and their
    /// folder are created; SQLite runs in WAL mode with a busy timeout, `max_connections`
    /// read-only connections (see [`sqlite`]) and one writer.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, ConnectError> {
        if url.starts_with("sqlite:") {
            let sqlite_err = |source| ConnectError::Sqlite {
                url: url.to_owned(),
                source,
            };
            let options = SqliteConnectOptions::from_str(url)
                .map_err(sqlite_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(folder) = Path::new(options.get_filename()).parent()
                && !folder.as_os_str().is_empty()
            {
                std::fs::create_dir_all(folder).map_err(|source| ConnectError::Folder {
                    path: folder.display().to_string(),
                    source,
                })?;
            }
            if options.get_filename() == Path::new(":memory:") {
                // A second connection would open a second, empty database.
                let writer = Arc::new(
                    sqlite::Connections::open(&options, 1)
                        .await
                        .map_err(sqlite_err)?,
                );
                return Ok(Db::Sqlite {
                    reader: writer.clone(),
                    writer,
                    checkpoints: None,
                    waits: DbWaits::default(),
                });
            }
            let (writer, checkpoints) = sqlite::Connections::open_writer(&options)
                .await
                .map_err(sqlite_err)?;
            let reader = Arc::new(
                sqlite::Connections::open(&options.read_only(true), max_connections)
                    .await
                    .map_err(sqlite_err)?,
            );
            Ok(Db::Sqlite {
                reader,
                writer,
                checkpoints: Some(Arc::new(checkpoints)),
                waits: DbWaits::default(),
            })
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|source| ConnectError::Postgres {
                    url: redact_password(url),
                    source,
                })?;
            Ok(Db::Postgres {
                pool,
                waits: DbWaits::default(),
            })
        }
    }

    /// This database with its connection waits timed by `waits`.
    pub fn measured(mut self, waits: DbWaits) -> Db {
        match &mut self {
            Db::Sqlite { waits: w, .. } | Db::Postgres { waits: w, .. } => *w = waits,
        }
        self
    }

    /// Each pool's connections, open and not lent out: `(pool, open, idle)`.
    pub fn pool_sizes(&self) -> Vec<(&'static str, u32, u32)> {
        match self {
            Db::Sqlite { reader, writer, .. } => vec![
                ("read", reader.size(), reader.idle()),
                ("write", writer.size(), writer.idle()),
            ],
            Db::Postgres { pool, .. } => {
                vec![("postgres", pool.size(), pool.num_idle() as u32)]
            }
        }
    }

    /// Applies the migrations the database has not seen yet.
    pub async fn migrate(&self) -> Result<(), ConnectError> {
        match self {
            Db::Sqlite { writer, .. } => {
                let mut conn = writer
                    .acquire()
                    .await
                    .map_err(sqlx::migrate::MigrateError::from)?;
                SQLITE_MIGRATIONS.run(&mut *conn).await?
            }
            Db::Postgres { pool, .. } => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// A round trip, for readiness.
    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await?.rows_affected());
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite {
                reader,
                writer,
                checkpoints,
                ..
            } => {
                if let Some(checkpoints) = checkpoints {
                    checkpoints.close().await;
                }
                reader.close().await;
                writer.close().await;
            }
            Db::Postgres { pool, .. } => pool.close().await,
        }
    }
}

/// The URL without its password, for messages and `lanyard config`.
pub fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
