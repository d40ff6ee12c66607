//! The check value of the key-encryption key (SPEC §14), and resealing every signing key under a
//! new one. Signing keys are inserted only while the recorded check value is the inserting
//! node's own (see `signing_keys::INSERT_KEY`), and not while the resealing runs, so a node left
//! running with a replaced key cannot store a key the others cannot open.

use super::{Db, StoreResult, in_transaction, on_pool, on_writer};

const RECORDED: &str = "SELECT check_value FROM key_encryption WHERE id = 1";

/// The recorded check value; `None` on a database no version with the check has opened.
pub async fn recorded(db: &Db) -> StoreResult<Option<String>> {
    Ok(on_pool!(db, pool => sqlx::query_scalar(RECORDED).fetch_optional(pool).await?))
}

const RECORD: &str = "INSERT INTO key_encryption (id, check_value, recorded_at) VALUES (1, $1, $2)
    ON CONFLICT (id) DO NOTHING";

/// Records `check` unless a value is recorded already (the first node to start wins; the others
/// compare theirs with it).
pub async fn record_if_none(db: &Db, check: &str, now: i64) -> StoreResult<()> {
    on_writer!(db, pool => sqlx::query(RECORD).bind(check).bind(now).execute(pool).await?.rows_affected());
    Ok(())
}

/// PostgreSQL: no key is inserted until the resealing commits. A key's insert checks the
/// recorded value without waiting for the row it reads (`signing_keys::INSERT_KEY`), so without
/// this a node still running with the old key could store a key the resealing never sees. On
/// SQLite the transaction's write lock (`BEGIN IMMEDIATE`) holds every other writer already.
const HOLD_KEYS: &str = "LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE";
const TAKE_OVER: &str = "UPDATE key_encryption SET check_value = $2, recorded_at = $3 WHERE id = 1 AND check_value = $1";
const ALL_SEALED: &str = "SELECT kid, sealed_private_key FROM signing_keys ORDER BY kid";
const RESEAL: &str = "UPDATE signing_keys SET sealed_private_key = $2 WHERE kid = $1";

/// Why resealing stopped.
#[derive(Debug)]
pub enum ResealRefused {
    /// The recorded check value is not `old_check`: another key is in use.
    NotTheRecordedKey,
    /// `reseal` could not open the key with this id.
    Unopened(String),
}

/// In one transaction: the check value changes from `old_check` to `new_check` and every stored
/// signing key is replaced by `reseal(kid, sealed)`. Returns how many keys were resealed, or
/// why nothing changed.
pub async fn reseal_all(
    db: &Db,
    old_check: &str,
    new_check: &str,
    now: i64,
    reseal: impl Fn(&str, &[u8]) -> Option<Vec<u8>>,
) -> StoreResult<Result<usize, ResealRefused>> {
    let postgres = matches!(db, Db::Postgres { .. });
    let outcome = in_transaction!(db, tx => {
        if postgres {
            sqlx::query(HOLD_KEYS).execute(&mut *tx).await?;
        }
        let taken = sqlx::query(TAKE_OVER)
            .bind(old_check)
            .bind(new_check)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if taken.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Err(ResealRefused::NotTheRecordedKey));
        }
        let keys: Vec<(String, Vec<u8>)> =
            sqlx::query_as(ALL_SEALED).fetch_all(&mut *tx).await?;
        for (kid, sealed) in &keys {
            let Some(resealed) = reseal(kid, sealed) else {
                tx.rollback().await?;
                return Ok(Err(ResealRefused::Unopened(kid.clone())));
            };
            sqlx::query(RESEAL)
                .bind(kid)
                .bind(resealed)
                .execute(&mut *tx)
                .await?;
        }
        keys.len()
    });
    Ok(Ok(outcome))
}
