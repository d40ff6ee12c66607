//! People: users with their granted scopes and metadata, roles, and the roles users hold on
//! systems.

use serde_json::{Map, Value};

use super::caller::{ROLES_WRITE, USERS_READ, USERS_WRITE};
use super::validate_name;
use super::{Actor, Authority, Error, Event, Result, Tenant};
use crate::domain::{Email, RoleId, ScopeSet, SystemId, UserId};
use crate::store::{StoreError, systems, users};

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub scopes: ScopeSet,
    /// Merged into userinfo.
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: RoleId,
    pub name: String,
}

impl User {
    fn from_row(row: users::UserRow) -> User {
        User {
            id: UserId::stored(row.id),
            email: row.email,
            name: row.name,
            scopes: ScopeSet::parse(&row.scopes).unwrap_or_default(),
            metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
        }
    }
}

impl Authority {
    /// Creates a user, with only `lanyard:` scopes the actor holds (and any of the tenant's own).
    pub async fn create_user(
        &self,
        by: impl Into<Actor<'_>>,
        email: &str,
        name: &str,
        scopes: ScopeSet,
        metadata: Map<String, Value>,
    ) -> Result<User> {
        let by = by.into();
        by.require(USERS_WRITE)?;
        let tenant = by.tenant();
        let email = Email::parse(email).map_err(|e| Error::Invalid(e.to_string()))?;
        let name = validate_name(name)?;
        self.check_grantable(by, &scopes).await?;
        super::metadata::check_object(&metadata)?;
        let metadata_text = Value::Object(metadata.clone()).to_string();
        let row = users::UserRow {
            id: UserId::generate().into(),
            tenant_id: tenant.id.to_string(),
            email: email.to_string(),
            name: name.to_owned(),
            scopes: scopes.to_string(),
            metadata: metadata_text,
            created_at: self.now(),
        };
        let event = self.event(&by, "user.created", format!("user:{}", row.id));
        users::insert(&self.db, &event, &row)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    Error::Conflict(format!("a user with email {email} exists"))
                }
                other => other.into(),
            })?;
        tracing::info!(tenant = %tenant.slug, user = %row.id, "user created");
        Ok(User::from_row(row))
    }

    /// The person `id`, if `by` may manage them: it holds every `lanyard:` scope they hold
    /// (SPEC §6).
    pub(super) async fn managed_user(&self, by: Actor<'_>, id: &UserId) -> Result<User> {
        let user = self
            .user(by.tenant(), id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no user {id}")))?;
        by.require_all_admin(&user.scopes, &format!("user {id}"))?;
        Ok(user)
    }

    /// A person of the tenant. Needs `lanyard:users:read`.
    pub async fn read_user(&self, by: impl Into<Actor<'_>>, id: &UserId) -> Result<User> {
        let by = by.into();
        by.require(USERS_READ)?;
        self.user(by.tenant(), id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no user {id}")))
    }

    pub async fn user(&self, tenant: &Tenant, id: &UserId) -> Result<Option<User>> {
        Ok(users::find(&self.db, &tenant.id, id)
            .await?
            .map(User::from_row))
    }

    pub(crate) async fn user_by_email(
        &self,
        tenant: &Tenant,
        email: &Email,
    ) -> Result<Option<User>> {
        Ok(users::find_by_email(&self.db, &tenant.id, email.as_str())
            .await?
            .map(User::from_row))
    }

    /// Deletes a user: their local API tokens show as REVOKED, their refresh tokens die with
    /// them, and their access tokens and MQTT sessions end. The actor must hold every `lanyard:`
    /// scope the user holds.
    pub async fn delete_user(&self, by: impl Into<Actor<'_>>, id: &UserId) -> Result<()> {
        let by = by.into();
        by.require(USERS_WRITE)?;
        let tenant = by.tenant();
        self.managed_user(by, id).await?;
        // One event for the person and everything that goes with them (their local tokens
        // revoked, their sign-ins ended), in the transaction that does it.
        let event = self.event(&by, "user.deleted", format!("user:{id}"));
        // Their shares go with them, and the tokens minted under the ones they received count
        // no more against the sharers' caps.
        let received =
            crate::store::shares::live_received(&self.db, &tenant.id, id, None, self.now()).await?;
        let Some(systems) =
            users::delete(&self.db, &event, &tenant.id, id, self.now(), &self.node_id).await?
        else {
            return Err(Error::NotFound(format!("no user {id}")));
        };
        for share in &received {
            self.tally
                .forget(&tenant.id, &share.owner_id, &share.system_id);
        }
        tracing::info!(tenant = %tenant.slug, user = %id, "user deleted");
        self.emit(Event::UserDeleted {
            tenant_id: tenant.id.to_string(),
            user_id: id.to_string(),
        });
        let mut systems = systems;
        systems.sort();
        systems.dedup();
        for system_id in systems {
            self.emit(Event::LocalTokensChanged {
                tenant_id: tenant.id.to_string(),
                system_id,
                minted: None,
            });
        }
        Ok(())
    }

    pub async fn create_role(&self, by: impl Into<Actor<'_>>, name: &str) -> Result<Role> {
        let by = by.into();
        by.require(ROLES_WRITE)?;
        let tenant = by.tenant();
        let name = validate_name(name)?;
        let row = users::RoleRow {
            id: RoleId::generate().into(),
            tenant_id: tenant.id.to_string(),
            name: name.to_owned(),
            created_at: self.now(),
        };
        let event = self.event(&by, "role.created", format!("role:{}", row.id));
        users::insert_role(&self.db, &event, &row)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => Error::Conflict(format!("role {name:?} exists")),
                other => other.into(),
            })?;
        Ok(Role {
            id: RoleId::stored(row.id),
            name: row.name,
        })
    }

    /// Gives a user a role on a system. All three must belong to the tenant.
    pub async fn assign_role(
        &self,
        by: impl Into<Actor<'_>>,
        user_id: &UserId,
        system_id: &SystemId,
        role_id: &RoleId,
    ) -> Result<()> {
        let by = by.into();
        by.require(ROLES_WRITE)?;
        let tenant = by.tenant();
        if users::find(&self.db, &tenant.id, user_id).await?.is_none() {
            return Err(Error::NotFound(format!("no user {user_id}")));
        }
        if systems::find(&self.db, &tenant.id, system_id)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!("no system {system_id}")));
        }
        if users::find_role(&self.db, &tenant.id, role_id)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!("no role {role_id}")));
        }
        let event = self.event(
            &by,
            "role.assigned",
            format!("user:{user_id} role:{role_id} system:{system_id}"),
        );
        users::assign_role(&self.db, &event, user_id, system_id, role_id, self.now()).await?;
        self.emit(Event::RoleAssigned {
            tenant_id: tenant.id.to_string(),
            user_id: user_id.to_string(),
            system_id: system_id.to_string(),
        });
        Ok(())
    }

    /// The roles a user holds on a system.
    pub async fn roles_on_system(&self, user_id: &str, system_id: &str) -> Result<Vec<Role>> {
        Ok(users::roles_on_system(&self.db, user_id, system_id)
            .await?
            .into_iter()
            .map(|r| Role {
                id: RoleId::stored(r.id),
                name: r.name,
            })
            .collect())
    }
}
