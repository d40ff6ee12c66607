//! Sharing a system between people (SPEC §11): a person holding roles on a system lets another
//! person of the tenant mint local API tokens for it with some of those roles, until a time or
//! until revoked.
//!
//! A token minted under a share names the sharer as its subject and the recipient as the
//! actor (`act`, RFC 8693 §4.1); its list entry carries `actor` and `share`. Such a token
//! never outlives its share (its `exp` is capped at the share's expiry, and an expiring share
//! mints no permanent token), and revoking the share revokes every token minted under it in the
//! same transaction; a mint racing the revocation either commits first (and is revoked) or
//! finds the share revoked (`store::local_tokens`). It counts against the sharer's cap on the
//! system. The roles are those shared that the sharer still holds when the token is minted.
//!
//! The recipient's userinfo carries one *delegation* per live share: a 5-minute access token
//! whose only use is minting under that share (`share`, `system`, `act` claims; the scope
//! `lanyard:local-tokens:mint`). Every door but GraphQL's mint refuses it
//! ([`super::tokens`]), and it dies with its share. Userinfo hands out the same token again
//! while it has a minute to live ([`super::cache::delegations`]). A person gives at most
//! [`MAX_LIVE_SHARES`] live shares of a system and receives at most as many, counted in the
//! transaction that records a share (`store::shares`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cache::holdings::Holding;
use super::caller::ROLES_READ;
use super::{Actor, Authority, Caller, Error, Event, Result, Role, Tenant};
use crate::domain::claims::Act;
use crate::domain::{Email, RoleId, SystemId, UserId};
use crate::store::{StoreError, shares, systems, users};

/// The most live shares a person may give on one system, and receive in all: each received one
/// costs a signature on every userinfo request.
pub const MAX_LIVE_SHARES: i64 = 20;

/// How long a delegation's access token lives.
pub const DELEGATION_TTL_SECS: i64 = 300;

/// A person, as a share names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub id: UserId,
    pub name: String,
}

/// A share of a system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub id: String,
    pub system_id: SystemId,
    pub owner: Party,
    pub recipient: Party,
    pub roles: Vec<Role>,
    /// `None`: until revoked.
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A role as a share stores it.
#[derive(Serialize, Deserialize)]
struct StoredRole {
    uuid: String,
    name: String,
}

/// What minting under a share needs: the share and who is in it.
pub(super) struct MintingShare {
    pub share: shares::ShareRow,
    /// The sharer's name and the shared roles they still hold.
    pub owner: Arc<Holding>,
}

impl MintingShare {
    /// The token's `act` claim: the recipient.
    pub fn act(&self) -> Act {
        Act {
            sub: self.share.recipient_id.clone(),
            client_id: None,
            name: Some(self.share.recipient_name.clone()),
            act: None,
        }
    }
}

fn stored_roles(text: &str) -> Vec<Role> {
    serde_json::from_str::<Vec<StoredRole>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|r| Role {
            id: RoleId::stored(r.uuid),
            name: r.name,
        })
        .collect()
}

impl From<shares::ShareRow> for Share {
    fn from(row: shares::ShareRow) -> Share {
        Share {
            owner: Party {
                name: row.owner_name,
                id: UserId::stored(row.owner_id),
            },
            recipient: Party {
                name: row.recipient_name,
                id: UserId::stored(row.recipient_id),
            },
            roles: stored_roles(&row.roles),
            id: row.id,
            system_id: SystemId::stored(row.system_id),
            expires_at: row.expires_at,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

fn live(row: &shares::ShareRow, now: i64) -> bool {
    row.revoked_at.is_none() && row.expires_at.is_none_or(|exp| exp > now)
}

impl Authority {
    /// Shares some of the caller's roles on a system with the person of the tenant whose email
    /// is `email`, until `expires_at` (`None`: until revoked). Only roles the caller holds
    /// there themselves; what was shared with them cannot be shared on.
    pub async fn share_system(
        &self,
        caller: &Caller,
        system_id: &SystemId,
        email: &str,
        role_ids: &[RoleId],
        expires_at: Option<i64>,
    ) -> Result<Share> {
        let tenant = &caller.tenant;
        let owner_id = caller
            .user_id()
            .ok_or_else(|| Error::Forbidden("only a person shares a system".into()))?;
        // A share outlives the token that would make it: not one obtained by exchange.
        if caller.claims.exchanged {
            return Err(Error::Forbidden(
                "a token obtained by exchange does not share a system: a share would outlive it"
                    .into(),
            ));
        }
        let now = self.now();
        if role_ids.is_empty() {
            return Err(Error::Invalid("share at least one role".into()));
        }
        if let Some(exp) = expires_at
            && exp <= now + 60
        {
            return Err(Error::Invalid(
                "expiresAt must be at least a minute ahead".into(),
            ));
        }
        let Some(holding) = self.holding(&tenant.id, &owner_id, system_id).await? else {
            let received =
                shares::live_received(&self.db, &tenant.id, &owner_id, Some(system_id), now)
                    .await?;
            return Err(Error::Forbidden(if received.is_empty() {
                "you hold no role on this system".into()
            } else {
                "what was shared with you cannot be shared on".into()
            }));
        };
        let mut roles = Vec::new();
        for id in role_ids {
            let role = holding.roles.iter().find(|r| r.id == *id).ok_or_else(|| {
                Error::Forbidden(format!("you do not hold the role {id} on this system"))
            })?;
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        let email = Email::parse(email).map_err(|e| Error::Invalid(e.to_string()))?;
        let recipient = users::find_by_email(&self.db, &tenant.id, email.as_str())
            .await?
            .ok_or_else(|| Error::NotFound("no person of this tenant has that email".into()))?;
        if recipient.id == owner_id.as_str() {
            return Err(Error::Invalid("a system is not shared with oneself".into()));
        }
        let row = shares::ShareRow {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant.id.to_string(),
            system_id: system_id.to_string(),
            owner_id: owner_id.to_string(),
            recipient_id: recipient.id.clone(),
            roles: serde_json::to_string(
                &roles
                    .iter()
                    .map(|r| StoredRole {
                        uuid: r.id.to_string(),
                        name: r.name.clone(),
                    })
                    .collect::<Vec<_>>(),
            )
            .expect("roles serialise"),
            expires_at,
            created_at: now,
            revoked_at: None,
            owner_name: holding.user_name.clone(),
            recipient_name: recipient.name.clone(),
        };
        let event = self.event(
            &Actor::Caller(caller),
            "share.created",
            format!(
                "share:{} of system:{system_id} with user:{}",
                row.id, recipient.id
            ),
        );
        let recorded = shares::insert_within_limits(&self.db, &event, &row, MAX_LIVE_SHARES, now)
            .await
            .map_err(|e| match e {
                // The person or the system went away meanwhile.
                StoreError::Conflict => Error::Conflict("the share could not be made".into()),
                e => e.into(),
            })?;
        if !recorded {
            return Err(Error::Conflict(format!(
                "a person gives at most {MAX_LIVE_SHARES} live shares of a system and receives at most {MAX_LIVE_SHARES}; revoke one first"
            )));
        }
        tracing::info!(tenant = %tenant.slug, system = %system_id, share = %row.id, "system shared");
        Ok(row.into())
    }

    /// Revokes a share and every token minted under it: the sharer may, and so may a caller
    /// with `lanyard:roles:write`.
    pub async fn revoke_share(&self, caller: &Caller, id: &str) -> Result<Share> {
        let tenant = &caller.tenant;
        let not_found = || Error::NotFound(format!("no share {id}"));
        let row = self.find_share(tenant, id).await?.ok_or_else(not_found)?;
        if caller
            .user_id()
            .is_none_or(|me| me.as_str() != row.owner_id)
        {
            caller.require(super::caller::ROLES_WRITE)?;
        }
        let now = self.now();
        let event = self.event(
            &Actor::Caller(caller),
            "share.revoked",
            format!("share:{id}"),
        );
        shares::revoke(&self.db, &event, &tenant.id, id, now, &self.node_id).await?;
        self.share_ended(tenant, &row);
        tracing::info!(tenant = %tenant.slug, share = %id, "share revoked");
        Ok(self
            .find_share(tenant, id)
            .await?
            .ok_or_else(not_found)?
            .into())
    }

    /// What follows the end of a share here and on the other nodes: its tokens leave the
    /// system's list (they were revoked with it), its delegations stop working.
    fn share_ended(&self, tenant: &Tenant, row: &shares::ShareRow) {
        self.tally.forget(&tenant.id, &row.owner_id, &row.system_id);
        self.emit(Event::ShareRevoked {
            tenant_id: tenant.id.to_string(),
            share_id: row.id.clone(),
        });
        self.emit(Event::LocalTokensChanged {
            tenant_id: tenant.id.to_string(),
            system_id: row.system_id.clone(),
            minted: None,
        });
    }

    /// The live shares of a system: for a person holding a role there (the sharer among
    /// them), and for a caller with `lanyard:roles:read`.
    pub async fn shares(&self, caller: &Caller, system_id: &SystemId) -> Result<Vec<Share>> {
        let tenant = &caller.tenant;
        if caller.scopes.contains_str(ROLES_READ) {
            if systems::find(&self.db, &tenant.id, system_id)
                .await?
                .is_none()
            {
                return Err(Error::NotFound(format!("no system {system_id}")));
            }
        } else {
            let forbidden = || Error::Forbidden("you hold no role on this system".into());
            let me = caller.user_id().ok_or_else(forbidden)?;
            if self.roles_on_system(&me, system_id).await?.is_empty() {
                // A sharer who no longer holds a role there still sees the shares.
                let rows =
                    shares::live_for_system(&self.db, &tenant.id, system_id, self.now()).await?;
                if !rows.iter().any(|r| r.owner_id == me.as_str()) {
                    return Err(forbidden());
                }
                return Ok(rows.into_iter().map(Share::from).collect());
            }
        }
        let rows = shares::live_for_system(&self.db, &tenant.id, system_id, self.now()).await?;
        Ok(rows.into_iter().map(Share::from).collect())
    }

    /// The live shares the calling person received.
    pub async fn shares_received(&self, caller: &Caller) -> Result<Vec<Share>> {
        let tenant = &caller.tenant;
        let Some(me) = caller.user_id() else {
            return Ok(Vec::new());
        };
        let rows = shares::live_received(&self.db, &tenant.id, &me, None, self.now()).await?;
        Ok(rows.into_iter().map(Share::from).collect())
    }

    /// The share a person mints under on `system_id`: `share_id` when named (it must be theirs,
    /// live, of that system), else their only live share of the system. `Ok(None)`: they
    /// received none there.
    pub(super) async fn share_to_mint_under(
        &self,
        tenant: &Tenant,
        recipient: &UserId,
        system_id: &SystemId,
        share_id: Option<&str>,
    ) -> Result<Option<MintingShare>> {
        let now = self.now();
        let forbidden = || Error::Forbidden("no live share of this system was given to you".into());
        let row = match share_id {
            Some(id) => {
                let row = self.find_share(tenant, id).await?.ok_or_else(forbidden)?;
                if row.recipient_id != recipient.as_str()
                    || row.system_id != system_id.as_str()
                    || !live(&row, now)
                {
                    return Err(forbidden());
                }
                row
            }
            None => {
                let mut rows =
                    shares::live_received(&self.db, &tenant.id, recipient, Some(system_id), now)
                        .await?;
                match rows.len() {
                    0 => return Ok(None),
                    1 => rows.pop().expect("one"),
                    _ => {
                        return Err(Error::Invalid(
                            "you received several shares of this system: name one (shareUuid)"
                                .into(),
                        ));
                    }
                }
            }
        };
        Ok(Some(self.minting_share(tenant, row).await?))
    }

    /// A delegation's share (its token names it), checked again: live, of the token's system
    /// and sharer and recipient.
    pub(super) async fn delegated_share(
        &self,
        caller: &Caller,
        system_id: &SystemId,
    ) -> Result<MintingShare> {
        let forbidden = || {
            Error::Forbidden(
                "this delegation mints only for its own system, while its share lives".into(),
            )
        };
        let (share_id, system) = caller.delegation().ok_or_else(forbidden)?;
        if system != system_id.as_str() {
            return Err(forbidden());
        }
        let row = self
            .find_share(&caller.tenant, share_id)
            .await?
            .ok_or_else(forbidden)?;
        let acting = caller.claims.act.as_ref().map(|a| a.sub.as_str());
        if !live(&row, self.now())
            || row.system_id != system
            || row.owner_id != caller.claims.sub
            || acting != Some(row.recipient_id.as_str())
        {
            return Err(forbidden());
        }
        self.minting_share(&caller.tenant, row).await
    }

    /// The share with the sharer's current holding narrowed to the shared roles.
    async fn minting_share(&self, tenant: &Tenant, row: shares::ShareRow) -> Result<MintingShare> {
        let gone = || {
            Error::Forbidden(
                "the person who shared this system no longer holds the roles shared".into(),
            )
        };
        let owner_id = UserId::stored(row.owner_id.clone());
        let system_id = SystemId::stored(row.system_id.clone());
        let held = self
            .holding(&tenant.id, &owner_id, &system_id)
            .await?
            .ok_or_else(gone)?;
        let shared = stored_roles(&row.roles);
        let roles: Vec<Role> = held
            .roles
            .iter()
            .filter(|r| shared.iter().any(|s| s.id == r.id))
            .cloned()
            .collect();
        if roles.is_empty() {
            return Err(gone());
        }
        Ok(MintingShare {
            share: row,
            owner: Arc::new(Holding {
                user_name: held.user_name.clone(),
                roles,
            }),
        })
    }

    /// A share of the tenant by id; `None` too for text that is no share id.
    async fn find_share(
        &self,
        tenant: &Tenant,
        id: &str,
    ) -> std::result::Result<Option<shares::ShareRow>, StoreError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        shares::find(&self.db, &tenant.id, id).await
    }

    /// Whether a delegation's share is live, and names `act` as its recipient: its token is
    /// good only then.
    pub(super) async fn share_is_live(
        &self,
        tenant: &Tenant,
        share_id: &str,
        act: Option<&Act>,
    ) -> std::result::Result<bool, StoreError> {
        Ok(self.find_share(tenant, share_id).await?.is_some_and(|row| {
            live(&row, self.now()) && act.is_some_and(|a| a.sub == row.recipient_id)
        }))
    }

    /// Userinfo's `delegations` of a person (SPEC §11): one per live share they received,
    /// each with a 5-minute token that can only mint local tokens under it, issued to the
    /// client of the token userinfo was asked with. None for a token someone acts through
    /// (token exchange): a delegation is the person's own, and names them as the one acting.
    pub(super) async fn delegations(
        &self,
        tenant: &Tenant,
        recipient: &UserId,
        asked_with: &crate::domain::AccessClaims,
    ) -> std::result::Result<Vec<serde_json::Value>, crate::domain::OAuthError> {
        use crate::domain::{AccessClaims, Internal, OAuthError};
        let server_error = |e: Error| {
            OAuthError::server_error(Internal::new("delegations", anyhow::anyhow!("{e}")))
        };
        if asked_with.is_acted_through() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let rows = shares::live_received(&self.db, &tenant.id, recipient, None, now)
            .await
            .map_err(|e| server_error(e.into()))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let share = Share::from(row);
            let key = (
                tenant.id.to_string(),
                recipient.to_string(),
                asked_with.client_id.clone(),
                share.id.clone(),
            );
            let (access_token, exp) = match self.delegations.get(&key, now) {
                Some(kept) => kept,
                None => {
                    let exp = share.expires_at.map_or(now + DELEGATION_TTL_SECS, |e| {
                        e.min(now + DELEGATION_TTL_SECS)
                    });
                    let mut claims = AccessClaims::new(
                        tenant.issuer.clone(),
                        share.owner.id.to_string(),
                        tenant.slug.to_string(),
                        asked_with.client_id.clone(),
                        super::caller::LOCAL_TOKENS_MINT.into(),
                        now,
                        exp,
                        uuid::Uuid::new_v4().to_string(),
                    );
                    claims.system = Some(share.system_id.to_string());
                    claims.share = Some(share.id.clone());
                    claims.act = Some(Act {
                        sub: recipient.to_string(),
                        client_id: None,
                        name: Some(share.recipient.name.clone()),
                        act: None,
                    });
                    let jti = claims.jti.clone();
                    let issued = self.sign_claims(tenant, claims, "delegation").await?;
                    self.delegations
                        .insert(key, issued.access_token.clone(), exp, jti);
                    (issued.access_token, exp)
                }
            };
            out.push(serde_json::json!({
                "share": share.id,
                "owner": { "sub": share.owner.id.to_string(), "name": share.owner.name },
                "system": share.system_id.to_string(),
                "roles": share.roles.iter().map(|r| serde_json::json!({ "uuid": r.id.to_string(), "name": r.name })).collect::<Vec<_>>(),
                "expires_at": share.expires_at,
                "access_token": access_token,
                "expires_in": exp - now,
            }));
        }
        Ok(out)
    }
}
