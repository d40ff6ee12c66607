//! Local API tokens (SPEC §3, §6): JWTs whose audience is one system, minted by a person who
//! holds a role on it, so the system can accept them on its own network while offline.
//!
//! A token carries the roles its subject held on the system when it was minted. It shows as
//! REVOKED once revoked, once its subject is deleted, and while the key that signed it is not
//! published (invalidated). Every change is announced as [`Event::LocalTokensChanged`], which
//! is how the system's retained list follows.
//!
//! One file, past 500 lines, on purpose: minting, revoking and listing share the stored row's
//! view (`local_token_view`), the holdings and the cap; the caches they use are in `cache/`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::cache::holdings::{self, Holding};
use super::cache::keyring::TenantKeys;
use super::cache::tally::Reserved;
use super::caller::SYSTEMS_READ;
use super::offline_trust::{StatusClaim, StatusReference, status_list_uri};
use super::validate_name;
use super::{Actor, Authority, Caller, Error, Event, Result, Role, Tenant};
use crate::crypto::jws;
use crate::domain::claims::{Act, MAX_ACT_DEPTH};
use crate::domain::{LocalTokenId, Period, RoleId, SystemId, UserId};
use crate::metrics::Signed;
use crate::store::{local_tokens, systems, users};

/// The shortest lifetime a local token may have.
pub const MIN_DURATION_SECS: u64 = 60;
/// `exp` must fit a signed 32-bit time, which constrained devices parse.
const MAX_EXP: i64 = i32::MAX as i64;

pub use super::caller::{LOCAL_TOKENS_READ, LOCAL_TOKENS_WRITE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LocalTokenStatus {
    Activated,
    Revoked,
}

/// A local API token as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalToken {
    pub id: LocalTokenId,
    pub system_id: SystemId,
    pub status: LocalTokenStatus,
    pub subject_id: UserId,
    pub subject_name: String,
    pub roles: Vec<Role>,
    pub name: Option<String>,
    pub requested_device: Option<String>,
    pub not_before: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The token itself, while ACTIVATED.
    pub token: Option<String>,
    /// When the token leaves its system's list: at its expiry, or `tokens.revoked_listing`
    /// after a permanent token's revocation; `None`: not while it stays as it is.
    pub listed_until: Option<i64>,
    /// Its index in the system's status list (SPEC §10).
    pub status_idx: Option<i64>,
    /// Who acted for the subject when it was minted (SPEC §11).
    pub actor: Option<TokenActor>,
    /// The share it was minted under.
    pub share_id: Option<String>,
}

/// Who minted a token for its subject: a person a system was shared with, or a person or
/// client acting through token exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenActor {
    /// A person's uuid or a client's id.
    pub id: String,
    pub name: String,
    /// `USER` or `CLIENT`.
    pub kind: &'static str,
}

impl TokenActor {
    fn of(act: &Act) -> TokenActor {
        TokenActor {
            id: act.sub.clone(),
            name: act.name.clone().unwrap_or_else(|| act.sub.clone()),
            kind: if act.is_client() { "CLIENT" } else { "USER" },
        }
    }
}

/// Whose token is minted: the subject, their name and the roles it carries, who acts for
/// them (the token's `act`, and the actor its list entry names), and the share (its id and
/// expiry) it is minted under.
struct Minter {
    subject: UserId,
    holding: Arc<Holding>,
    act: Option<Act>,
    actor: Option<TokenActor>,
    share: Option<(String, Option<i64>)>,
}

impl Minter {
    /// Under a share: the recipient acts for the sharer, and `acting_for_recipient` (who
    /// exchanged the recipient's token) acts for the recipient.
    fn shared(s: super::shares::MintingShare, acting_for_recipient: Option<Act>) -> Minter {
        let recipient = s.act();
        Minter {
            subject: UserId::stored(s.share.owner_id.clone()),
            actor: Some(TokenActor::of(&recipient)),
            act: Some(match acting_for_recipient {
                Some(current) => current.preceded_by(recipient),
                None => recipient,
            }),
            holding: s.owner,
            share: Some((s.share.id, s.share.expires_at)),
        }
    }
}

/// A change to a system's list found in the database.
#[derive(Debug, Clone)]
pub struct ListChange {
    pub tenant_id: String,
    pub system_id: String,
    /// The token whose row changed; `None` when the system was created.
    pub token: Option<ChangedToken>,
}

/// A token's row as it was changed: stored as ACTIVATED or not, at `updated_at`.
#[derive(Debug, Clone)]
pub struct ChangedToken {
    pub id: String,
    pub activated: bool,
    pub updated_at: i64,
}

/// A freshly minted token: the only time the caller sees it outside the system's list.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub id: LocalTokenId,
    pub token: String,
}

/// A local token's claims (SPEC §3), in the order they are written.
#[derive(Serialize)]
struct LocalTokenClaims<'a> {
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    /// `None`: permanent.
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    iat: i64,
    iss: &'a str,
    jti: &'a str,
    name: &'a str,
    nbf: i64,
    roles: &'a [RoleClaim<'a>],
    status: StatusClaim<'a>,
    sub: &'a str,
    typename: &'static str,
    /// Who acted for the subject (RFC 8693 §4.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Act>,
}

#[derive(Serialize)]
struct RoleClaim<'a> {
    uuid: &'a str,
    name: &'a str,
}

/// How a token is minted: for a while, or for good with a name.
enum Lifetime<'a> {
    For { secs: u64, device: Option<&'a str> },
    Permanent { name: &'a str },
}

impl Authority {
    /// Mints a token for `system_id` valid for `duration` (`15M`, `12H`, `1D`, `1W`, `PT12H`),
    /// between one minute and `tokens.max_local_token_duration`; under `share` when named (see
    /// [`Authority::mint`] for whose roles it carries).
    pub async fn create_local_token(
        &self,
        caller: &Caller,
        system_id: &SystemId,
        requested_device: Option<&str>,
        duration: &str,
        share: Option<&str>,
    ) -> Result<MintedToken> {
        let period = Period::parse(duration).map_err(|e| Error::Invalid(e.to_string()))?;
        let max = self.settings.tokens.max_local_token_duration;
        if period.as_secs() < MIN_DURATION_SECS || period > max {
            return Err(Error::Invalid(format!(
                "duration {duration:?} must be between 1 minute and {max}"
            )));
        }
        if let Some(device) = requested_device {
            validate_name(device).map_err(|_| {
                Error::Invalid(
                    "requestedDevice must be 1 to 200 characters without control characters".into(),
                )
            })?;
        }
        let device = requested_device.map(str::trim);
        self.mint(
            caller,
            system_id,
            Lifetime::For {
                secs: period.as_secs(),
                device,
            },
            share,
        )
        .await
    }

    /// Mints a token for `system_id` that never expires; `name` says what it is for.
    pub async fn create_permanent_local_token(
        &self,
        caller: &Caller,
        system_id: &SystemId,
        name: &str,
        share: Option<&str>,
    ) -> Result<MintedToken> {
        let name = validate_name(name)?;
        self.mint(caller, system_id, Lifetime::Permanent { name }, share)
            .await
    }

    /// Whose token is minted, with which roles: a delegation's token mints under its share;
    /// a person under the share they name, else with their own roles on the system, else
    /// under the one share of it they received (SPEC §11). Whoever acts for the caller's
    /// subject (the token's `act`, or the client of an impersonation: [`Authority::acting`]) is
    /// the minted token's actor.
    async fn minter(
        &self,
        caller: &Caller,
        system_id: &SystemId,
        share: Option<&str>,
    ) -> Result<Minter> {
        let tenant = &caller.tenant;
        // A missing system and a system without a role on it get the same answer.
        let forbidden = || Error::Forbidden("you hold no role on this system".into());
        if let Some((own_share, _)) = caller.delegation() {
            if share.is_some_and(|named| named != own_share) {
                return Err(Error::Forbidden(
                    "a delegation's token mints under its own share only".into(),
                ));
            }
            let shared = self.delegated_share(caller, system_id).await?;
            return Ok(Minter::shared(shared, None));
        }
        let user_id = caller.user_id().ok_or_else(|| {
            Error::Forbidden("local API tokens are minted for people; sign in as a user".into())
        })?;
        let acting = self.acting(&caller.tenant, &caller.claims).await?;
        if share.is_none()
            && let Some(holding) = self.holding(&tenant.id, &user_id, system_id).await?
        {
            return Ok(Minter {
                subject: user_id,
                holding,
                actor: acting.as_ref().map(TokenActor::of),
                act: acting,
                share: None,
            });
        }
        match self
            .share_to_mint_under(tenant, &user_id, system_id, share)
            .await?
        {
            // Exchanged for a person who received a share: whoever exchanged acts for them.
            Some(shared) => Ok(Minter::shared(shared, acting)),
            None => Err(forbidden()),
        }
    }

    async fn mint(
        &self,
        caller: &Caller,
        system_id: &SystemId,
        lifetime: Lifetime<'_>,
        share: Option<&str>,
    ) -> Result<MintedToken> {
        let tenant = &caller.tenant;
        let forbidden = || Error::Forbidden("you hold no role on this system".into());
        let Minter {
            subject: user_id,
            holding,
            act,
            actor,
            share,
        } = self.minter(caller, system_id, share).await?;
        if act
            .as_ref()
            .is_some_and(|a| a.chain().count() > MAX_ACT_DEPTH)
        {
            return Err(Error::Invalid(format!(
                "a token names at most {MAX_ACT_DEPTH} actors, one acting for the next: this one would name more"
            )));
        }
        // Under a share, whoever acts for the recipient may be the sharer: nobody acts for
        // themselves.
        if act.as_ref().is_some_and(|a| a.names(&user_id)) {
            return Err(Error::Invalid(
                "the token would name its subject among those acting for them: nobody acts for themselves".into(),
            ));
        }
        let now = self.now();
        // A token obtained by exchange mints tokens that end with it at the latest.
        let until = caller.claims.exchanged.then_some(caller.claims.exp);
        let exp = match lifetime {
            Lifetime::For { secs, .. } => {
                let mut exp = now + secs as i64;
                if let Some(until) = until {
                    exp = exp.min(until);
                    if exp < now + MIN_DURATION_SECS as i64 {
                        return Err(Error::Invalid(
                            "the exchanged token this mints with ends within a minute".into(),
                        ));
                    }
                }
                // A token minted under a share never outlives it.
                if let Some((_, Some(until))) = &share {
                    exp = exp.min(*until);
                    if exp < now + MIN_DURATION_SECS as i64 {
                        return Err(Error::Invalid(
                            "the share ends within a minute: no token can be minted under it"
                                .into(),
                        ));
                    }
                }
                if exp > MAX_EXP {
                    return Err(Error::Invalid(
                        "the token would expire after 2038, beyond a 32-bit time".into(),
                    ));
                }
                Some(exp)
            }
            Lifetime::Permanent { .. } => {
                if until.is_some() {
                    return Err(Error::Invalid(
                        "a token obtained by exchange mints no permanent token: what it mints ends with it".into(),
                    ));
                }
                if let Some((_, Some(_))) = &share {
                    return Err(Error::Invalid(
                        "the share expires, so a token minted under it cannot be permanent".into(),
                    ));
                }
                None
            }
        };
        let keys = self.keyring(tenant).await?;
        let signer = keys
            .signer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("tenant {} has no ACTIVE signing key", tenant.slug))?;
        self.count_against_cap(&keys, tenant, &user_id, system_id, exp, now)
            .await?;
        let status_idx = match self.next_status_index(&tenant.id, system_id).await {
            Ok(idx) => idx,
            Err(e) => {
                self.tally.forget(&tenant.id, &user_id, system_id);
                return Err(match e {
                    Error::NotFound(_) => forbidden(),
                    e => e,
                });
            }
        };
        let status_uri = status_list_uri(tenant, system_id);
        // Time-ordered: a new token's id sorts after the others', so the database's index of
        // ids grows at its end, and tokens of one second are listed in the order minted.
        let id = LocalTokenId::from(uuid::Uuid::now_v7());
        let role_claims: Vec<RoleClaim> = holding
            .roles
            .iter()
            .map(|r| RoleClaim {
                uuid: &r.id,
                name: &r.name,
            })
            .collect();
        let (name, device) = match lifetime {
            Lifetime::For { device, .. } => (None, device),
            Lifetime::Permanent { name } => (Some(name), None),
        };
        let claims = LocalTokenClaims {
            aud: system_id,
            device,
            exp,
            iat: now,
            iss: &tenant.issuer,
            jti: &id,
            name: &holding.user_name,
            nbf: now,
            roles: &role_claims,
            status: StatusClaim {
                status_list: StatusReference {
                    idx: status_idx,
                    uri: &status_uri,
                },
            },
            sub: &user_id,
            typename: "USER",
            act: act.as_ref(),
        };
        let inserts = self
            .local_token_inserts
            .get_or_init(|| local_tokens::Inserts::start(self.db.clone(), self.node_id.clone()));
        let coming = inserts.expect();
        let signing = self.metrics.signing(Signed::LocalToken);
        let signed = jws::sign(&signer.key, &signer.kid, "JWT", &claims);
        drop(signing);
        let token = format!("{}{signed}", self.settings.tokens.local_token_prefix);
        // As the list shows it: the signer's key is published.
        let listed = LocalToken {
            id: id.clone(),
            system_id: system_id.clone(),
            status: LocalTokenStatus::Activated,
            subject_id: user_id.clone(),
            subject_name: holding.user_name.clone(),
            roles: holding.roles.clone(),
            name: name.map(str::to_owned),
            requested_device: device.map(str::to_owned),
            not_before: now,
            expires_at: exp,
            created_at: now,
            updated_at: now,
            token: Some(token.clone()),
            listed_until: exp,
            status_idx: Some(status_idx),
            actor: actor.clone(),
            share_id: share.as_ref().map(|(id, _)| id.clone()),
        };
        let row = local_tokens::LocalTokenRow {
            id: id.to_string(),
            tenant_id: tenant.id.to_string(),
            system_id: listed.system_id.to_string(),
            user_id: listed.subject_id.to_string(),
            user_name: listed.subject_name.clone(),
            roles: serde_json::to_string(&role_claims).expect("roles serialise"),
            name: listed.name.clone(),
            requested_device: listed.requested_device.clone(),
            kid: signer.kid.clone(),
            token: token.clone(),
            status: "ACTIVATED".into(),
            not_before: now,
            expires_at: exp,
            created_at: now,
            updated_at: now,
            status_idx: Some(status_idx),
            actor_id: actor.as_ref().map(|a| a.id.clone()),
            actor_name: actor.as_ref().map(|a| a.name.clone()),
            actor_type: actor.as_ref().map(|a| a.kind.to_owned()),
            share_id: share.as_ref().map(|(id, _)| id.clone()),
        };
        let event = self.event(
            &Actor::Caller(caller),
            "local_token.issued",
            format!("local_token:{id} for system:{system_id}"),
        );
        let minted = local_tokens::Minted { row, audit: event };
        if let Err(e) = inserts.insert(minted, coming).await {
            self.tally.forget(&tenant.id, &user_id, system_id);
            return Err(match e {
                crate::store::StoreError::Conflict => Error::Conflict(
                    "the signing key was invalidated, a person was removed, or the share was revoked, while the token was minted; nothing was minted".into(),
                ),
                e => e.into(),
            });
        }
        tracing::info!(tenant = %tenant.slug, system = %system_id, token = %id, "local API token minted");
        self.metrics.local_token_minted(exp.is_none());
        self.emit(Event::LocalTokensChanged {
            tenant_id: tenant.id.to_string(),
            system_id: system_id.to_string(),
            minted: Some(Arc::new(listed)),
        });
        Ok(MintedToken { id, token })
    }

    /// Counts a token expiring at `exp` against the person's cap on the system (SPEC §7), or
    /// refuses it with `CONFLICT` when they already hold `tokens.max_local_tokens_per_system`.
    async fn count_against_cap(
        &self,
        keys: &TenantKeys,
        tenant: &Tenant,
        user_id: &str,
        system_id: &str,
        exp: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let cap = self.settings.tokens.max_local_tokens_per_system as usize;
        let who = (tenant.id.as_str(), user_id, system_id);
        let mut reserved = self.tally.reserve(who, exp, cap, now);
        if reserved == Reserved::Unknown {
            let live = local_tokens::live_expiries(&self.db, who, now, cap + 1)
                .await?
                .into_iter()
                .filter(|(_, kid)| keys.verifier(kid).is_some())
                .map(|(exp, _)| exp)
                .collect();
            reserved = self.tally.reserve_read(who, live, exp, cap, now);
        }
        match reserved {
            Reserved::Full => Err(Error::Conflict(format!(
                "you hold {cap} live local API tokens on this system, the most one person may; revoke one first"
            ))),
            _ => Ok(()),
        }
    }

    /// The user's name and roles on the system, from memory when read before; `None` when
    /// they hold no role on it, or the user or the system does not exist.
    pub(super) async fn holding(
        &self,
        tenant_id: &str,
        user_id: &str,
        system_id: &str,
    ) -> Result<Option<Arc<Holding>>> {
        let now = std::time::Instant::now();
        if let Some(holding) = self.holdings.get(tenant_id, user_id, system_id, now) {
            return Ok(Some(holding));
        }
        if !self.holdings.knows(tenant_id, user_id, now) {
            // Nothing is known of the person lately: read everything they hold, once however
            // many of their mints wait for it.
            let _reading = self.holdings.one_reader(tenant_id, user_id).await;
            if let Some(holding) = self.holdings.get(tenant_id, user_id, system_id, now) {
                return Ok(Some(holding));
            }
            let read_in = self.holdings.generation();
            let limit = holdings::READ_AT_ONCE;
            let held = users::every_held_role(&self.db, tenant_id, user_id, limit as i64).await?;
            let complete = held.len() < limit;
            let mut people = group_holdings(held);
            if !complete {
                // The last system's roles may be cut short: it is asked about on its own.
                if let Some(last) = people.last().map(|(system, _)| system.clone()) {
                    people.retain(|(system, _)| *system != last);
                }
            }
            let systems: HashMap<String, Arc<Holding>> = people.into_iter().collect();
            let found = systems.get(system_id).cloned();
            self.holdings
                .insert_person(tenant_id, user_id, systems, read_in);
            if found.is_some() {
                return Ok(found);
            }
        }
        let read_in = self.holdings.generation();
        // One query: the user, the system and the roles held on it.
        let held = users::held_roles(&self.db, tenant_id, user_id, system_id).await?;
        let Some((_, holding)) = group_holdings(held).pop() else {
            return Ok(None);
        };
        self.holdings
            .insert(tenant_id, user_id, system_id, holding.clone(), read_in);
        Ok(Some(holding))
    }

    /// Revokes a local token: its subject may, and so may a caller with
    /// `lanyard:local-tokens:write`.
    pub async fn revoke_local_token(
        &self,
        caller: &Caller,
        id: &LocalTokenId,
    ) -> Result<LocalToken> {
        let tenant = &caller.tenant;
        let row = local_tokens::find(&self.db, &tenant.id, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no local API token {id}")))?;
        if caller.user_id().is_none_or(|me| me != row.user_id) {
            caller.require(LOCAL_TOKENS_WRITE)?;
        }
        let now = self.now();
        let event = self.event(
            &Actor::Caller(caller),
            "local_token.revoked",
            format!("local_token:{id}"),
        );
        local_tokens::revoke(&self.db, &event, &tenant.id, id, now, &self.node_id).await?;
        self.tally.forget(&tenant.id, &row.user_id, &row.system_id);
        tracing::info!(tenant = %tenant.slug, token = %id, "local API token revoked");
        self.emit(Event::LocalTokensChanged {
            tenant_id: tenant.id.to_string(),
            system_id: row.system_id.clone(),
            minted: None,
        });
        let row = local_tokens::find(&self.db, &tenant.id, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no local API token {id}")))?;
        Ok(local_token_view(
            &*self.keyring(tenant).await?,
            row,
            self.revoked_listing(),
        ))
    }

    /// The tokens of a system that have not expired, for a caller holding a role on it or
    /// `lanyard:local-tokens:read`.
    pub async fn local_tokens(
        &self,
        caller: &Caller,
        system_id: &SystemId,
    ) -> Result<Vec<LocalToken>> {
        let tenant = &caller.tenant;
        if !caller.scopes.contains_str(LOCAL_TOKENS_READ) {
            let forbidden = || Error::Forbidden("you hold no role on this system".into());
            let user_id = caller.user_id().ok_or_else(forbidden)?;
            if systems::find(&self.db, &tenant.id, system_id)
                .await?
                .is_none()
                || self.roles_on_system(&user_id, system_id).await?.is_empty()
            {
                return Err(forbidden());
            }
        }
        self.system_local_tokens(tenant, system_id).await
    }

    /// How long a revoked permanent token stays listed, in seconds.
    fn revoked_listing(&self) -> i64 {
        self.settings.tokens.revoked_listing.as_secs_i64()
    }

    /// Every listed token of a system, as the system's devices see them.
    pub async fn system_local_tokens(
        &self,
        tenant: &Tenant,
        system_id: &str,
    ) -> Result<Vec<LocalToken>> {
        let mut lists = self.systems_local_tokens(tenant, &[system_id]).await?;
        Ok(lists.pop().unwrap_or_default())
    }

    /// [`Authority::system_local_tokens`] of several systems of the tenant, in the order
    /// asked, read with one query per [`local_tokens::MAX_SYSTEMS_PER_READ`] systems.
    pub async fn systems_local_tokens(
        &self,
        tenant: &Tenant,
        system_ids: &[&str],
    ) -> Result<Vec<Vec<LocalToken>>> {
        let keys = self.keyring(tenant).await?;
        let now = self.now();
        let mut lists = Vec::with_capacity(system_ids.len());
        for chunk in system_ids.chunks(local_tokens::MAX_SYSTEMS_PER_READ) {
            let rows = local_tokens::for_systems(
                &self.db,
                &tenant.id,
                chunk,
                now,
                now - self.revoked_listing(),
            )
            .await?;
            let at: HashMap<&str, usize> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, lists.len() + i))
                .collect();
            lists.resize_with(lists.len() + chunk.len(), Vec::new);
            for row in rows {
                if let Some(&i) = at.get(row.system_id.as_str()) {
                    lists[i].push(local_token_view(&keys, row, self.revoked_listing()));
                }
            }
        }
        Ok(lists)
    }
}

/// A stored token as listed: REVOKED also while the key that signed it is not published. A
/// revoked permanent token is listed for `revoked_listing` seconds after its revocation.
fn local_token_view(
    keys: &TenantKeys,
    row: local_tokens::LocalTokenRow,
    revoked_listing: i64,
) -> LocalToken {
    let signed_by_published_key = keys.verifier(&row.kid).is_some();
    let status = if row.status == "ACTIVATED" && signed_by_published_key {
        LocalTokenStatus::Activated
    } else {
        LocalTokenStatus::Revoked
    };
    /// A role as the token's `roles` claim carries it, and the row keeps it.
    #[derive(serde::Deserialize)]
    struct StoredRole {
        uuid: RoleId,
        name: String,
    }
    let roles: Vec<StoredRole> = serde_json::from_str(&row.roles).unwrap_or_default();
    LocalToken {
        id: LocalTokenId::stored(row.id),
        system_id: SystemId::stored(row.system_id),
        status,
        subject_id: UserId::stored(row.user_id),
        subject_name: row.user_name,
        roles: roles
            .into_iter()
            .map(|r| Role {
                id: r.uuid,
                name: r.name,
            })
            .collect(),
        name: row.name,
        requested_device: row.requested_device,
        not_before: row.not_before,
        expires_at: row.expires_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
        token: (status == LocalTokenStatus::Activated).then_some(row.token),
        listed_until: match row.expires_at {
            Some(exp) => Some(exp),
            None if row.status == "REVOKED" => Some(row.updated_at + revoked_listing),
            None => None,
        },
        status_idx: row.status_idx,
        actor: row.actor_id.map(|id| TokenActor {
            name: row.actor_name.unwrap_or_else(|| id.clone()),
            kind: if row.actor_type.as_deref() == Some("CLIENT") {
                "CLIENT"
            } else {
                "USER"
            },
            id,
        }),
        share_id: row.share_id,
    }
}

/// Roles held, ordered by system, as one holding per system in that order.
fn group_holdings(held: Vec<users::HeldRole>) -> Vec<(String, Arc<Holding>)> {
    let mut out: Vec<(String, Holding)> = Vec::new();
    for h in held {
        let role = Role {
            id: RoleId::stored(h.role.id),
            name: h.role.name,
        };
        match out.last_mut() {
            Some((system, holding)) if *system == h.system_id => holding.roles.push(role),
            _ => out.push((
                h.system_id,
                Holding {
                    user_name: h.user_name,
                    roles: vec![role],
                },
            )),
        }
    }
    out.into_iter().map(|(s, h)| (s, Arc::new(h))).collect()
}

impl Authority {
    /// What may have changed systems' lists at or after `since` elsewhere (tokens minted or
    /// revoked by another node or process, systems created): this node announces its own
    /// changes as it makes them ([`Event::LocalTokensChanged`]).
    pub async fn list_changes_since(&self, since: i64) -> Result<Vec<ListChange>> {
        Ok(
            local_tokens::list_changes_since(&self.db, since, &self.node_id)
                .await?
                .into_iter()
                .map(|c| ListChange {
                    token: c.id.map(|id| ChangedToken {
                        id,
                        activated: c.status.as_deref() == Some("ACTIVATED"),
                        updated_at: c.updated_at.unwrap_or_default(),
                    }),
                    tenant_id: c.tenant_id,
                    system_id: c.system_id,
                })
                .collect(),
        )
    }

    /// The tenant's systems.
    pub async fn systems(&self, by: impl Into<Actor<'_>>) -> Result<Vec<(SystemId, String)>> {
        let by = by.into();
        by.require(SYSTEMS_READ)?;
        let tenant = by.tenant();
        Ok(systems::list(&self.db, &tenant.id)
            .await?
            .into_iter()
            .map(|s| (SystemId::stored(s.id), s.name))
            .collect())
    }
}
