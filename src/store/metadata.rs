//! Token metadata (SPEC §9): the JSON object a user or a client holds, changed one key at a time
//! in a transaction, so two changes of different keys never lose one another.

use super::audit::AuditRow;
use super::{Db, StoreError, StoreResult, in_transaction};

/// Whose metadata.
#[derive(Debug, Clone, Copy)]
pub enum Holder {
    User,
    Client,
}

impl Holder {
    fn select(self, postgres: bool) -> &'static str {
        match (self, postgres) {
            (Holder::User, false) => "SELECT metadata FROM users WHERE tenant_id = $1 AND id = $2",
            (Holder::User, true) => {
                "SELECT metadata FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
            }
            (Holder::Client, false) => {
                "SELECT metadata FROM clients WHERE tenant_id = $1 AND client_id = $2"
            }
            (Holder::Client, true) => {
                "SELECT metadata FROM clients WHERE tenant_id = $1 AND client_id = $2 FOR UPDATE"
            }
        }
    }

    fn update(self) -> &'static str {
        match self {
            Holder::User => "UPDATE users SET metadata = $3 WHERE tenant_id = $1 AND id = $2",
            Holder::Client => {
                "UPDATE clients SET metadata = $3 WHERE tenant_id = $1 AND client_id = $2"
            }
        }
    }
}

/// What a change did.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed<E> {
    /// The holder does not exist.
    NoHolder,
    /// `change` refused; nothing was written.
    Refused(E),
    /// Written, with its audit event; `true` if the object is different now.
    Done(bool),
}

/// Reads the holder's metadata, lets `change` edit it (or refuse), and writes it back with
/// `audit`, all in one transaction.
pub async fn change<E>(
    db: &Db,
    audit: &AuditRow,
    holder: Holder,
    tenant_id: &str,
    id: &str,
    change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> Result<bool, E>,
) -> StoreResult<Changed<E>> {
    let postgres = matches!(db, Db::Postgres { .. });
    let outcome = in_transaction!(db, tx => {
        let stored: Option<String> = sqlx::query_scalar(holder.select(postgres))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        match stored {
            None => Changed::NoHolder,
            Some(text) => {
                // Stored metadata that does not parse is reported, never overwritten.
                let mut object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&text)
                        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
                match change(&mut object) {
                    Err(e) => Changed::Refused(e),
                    Ok(false) => Changed::Done(false),
                    Ok(true) => {
                        let text = serde_json::Value::Object(object).to_string();
                        sqlx::query(holder.update())
                            .bind(tenant_id)
                            .bind(id)
                            .bind(&text)
                            .execute(&mut *tx)
                            .await?;
                        audit
                            .bind(sqlx::query(super::audit::INSERT))
                            .execute(&mut *tx)
                            .await?;
                        Changed::Done(true)
                    }
                }
            }
        }
    });
    Ok::<_, StoreError>(outcome)
}
