//! Token metadata (SPEC §9): JSON values under short keys that people and clients hold.
//! A person's keys are merged into userinfo; a client's travel in introspection answers as
//! `client_metadata`. Reading needs `lanyard:token-metadata:read`, changing
//! `lanyard:token-metadata:write` and what managing the person or client needs (SPEC §6): every
//! `lanyard:` scope it holds, and for a client bound to a system `lanyard:local-tokens:read`.

use serde_json::{Map, Value};

use super::caller::{TOKEN_METADATA_READ, TOKEN_METADATA_WRITE};
use super::clients::Client;
use super::{Actor, Authority, Error, Result};
use crate::domain::metadata::{MAX_METADATA_KEYS, MAX_METADATA_VALUE_BYTES, metadata_key_problem};
use crate::domain::{ClientId, UserId};
use crate::store::clients;
use crate::store::metadata::{self, Changed, Holder};

/// Refuses a key or value that may not be stored (SPEC §9).
pub(crate) fn check_entry(key: &str, value: &Value) -> Result<()> {
    if let Some(problem) = metadata_key_problem(key) {
        return Err(Error::Invalid(problem));
    }
    if value.to_string().len() > MAX_METADATA_VALUE_BYTES {
        return Err(Error::Invalid(format!(
            "the value of {key:?} is larger than 16 KiB"
        )));
    }
    Ok(())
}

/// Refuses a whole metadata object that may not be stored.
pub(crate) fn check_object(object: &Map<String, Value>) -> Result<()> {
    if object.len() > MAX_METADATA_KEYS {
        return Err(Error::Invalid(format!(
            "at most {MAX_METADATA_KEYS} metadata keys"
        )));
    }
    object.iter().try_for_each(|(k, v)| check_entry(k, v))
}

impl Authority {
    /// A person's metadata. Needs `lanyard:token-metadata:read`.
    pub async fn user_metadata(
        &self,
        by: impl Into<Actor<'_>>,
        user_id: &UserId,
    ) -> Result<Map<String, Value>> {
        let by = by.into();
        by.require(TOKEN_METADATA_READ)?;
        let user = self
            .user(by.tenant(), user_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no user {user_id}")))?;
        Ok(user.metadata)
    }

    /// A client's metadata. Needs `lanyard:token-metadata:read`.
    pub async fn client_metadata(
        &self,
        by: impl Into<Actor<'_>>,
        client_id: &ClientId,
    ) -> Result<Map<String, Value>> {
        let by = by.into();
        by.require(TOKEN_METADATA_READ)?;
        let row = clients::find(&self.db, &by.tenant().id, client_id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound(format!("no client {client_id}")))?;
        Ok(Client::from_row(&row).metadata)
    }

    /// Sets (`Some`) or deletes (`None`) one key of a person's metadata.
    pub async fn change_user_metadata(
        &self,
        by: impl Into<Actor<'_>>,
        user_id: &UserId,
        key: &str,
        value: Option<Value>,
    ) -> Result<()> {
        let by = by.into();
        by.require(TOKEN_METADATA_WRITE)?;
        self.managed_user(by, user_id).await?;
        self.change_metadata(by, Holder::User, user_id.as_str(), key, value)
            .await
    }

    /// Sets (`Some`) or deletes (`None`) one key of a client's metadata.
    pub async fn change_client_metadata(
        &self,
        by: impl Into<Actor<'_>>,
        client_id: &ClientId,
        key: &str,
        value: Option<Value>,
    ) -> Result<()> {
        let by = by.into();
        by.require(TOKEN_METADATA_WRITE)?;
        self.managed_client(by, client_id.as_str()).await?;
        self.change_metadata(by, Holder::Client, client_id.as_str(), key, value)
            .await?;
        self.forget_client(&by.tenant().id, client_id.as_str());
        Ok(())
    }

    async fn change_metadata(
        &self,
        by: Actor<'_>,
        holder: Holder,
        id: &str,
        key: &str,
        value: Option<Value>,
    ) -> Result<()> {
        match &value {
            Some(v) => check_entry(key, v)?,
            None => {
                if let Some(problem) = metadata_key_problem(key) {
                    return Err(Error::Invalid(problem));
                }
            }
        }
        let (kind, action) = match (holder, value.is_some()) {
            (Holder::User, true) => ("user", "user.metadata_set"),
            (Holder::User, false) => ("user", "user.metadata_deleted"),
            (Holder::Client, true) => ("client", "client.metadata_set"),
            (Holder::Client, false) => ("client", "client.metadata_deleted"),
        };
        let event = self.event(&by, action, format!("{kind}:{id} key:{key}"));
        let changed =
            metadata::change(
                &self.db,
                &event,
                holder,
                &by.tenant().id,
                id,
                |object| match value {
                    Some(v) => {
                        if !object.contains_key(key) && object.len() >= MAX_METADATA_KEYS {
                            return Err(format!("at most {MAX_METADATA_KEYS} metadata keys"));
                        }
                        Ok(object.insert(key.to_owned(), v.clone()) != Some(v))
                    }
                    None => Ok(object.remove(key).is_some()),
                },
            )
            .await?;
        match changed {
            Changed::NoHolder => Err(Error::NotFound(format!("no {kind} {id}"))),
            Changed::Refused(why) => Err(Error::Invalid(why)),
            Changed::Done(_) => Ok(()),
        }
    }
}
