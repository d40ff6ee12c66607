//! Who acts on a use-case: a verified access token of a tenant ([`Caller`]), or the operator at
//! the command line ([`Actor::Operator`], the `bootstrap` command, the demo seed, tests).
//!
//! Every management use-case takes an [`Actor`] and checks the `lanyard:` scope it needs
//! itself, so every door (GraphQL today, a REST API tomorrow) answers alike about who may do
//! what: the doors only turn a token into a [`Caller`].

use super::{Error, Result, Tenant};
use crate::domain::{AccessClaims, ScopeSet, UserId};

/// The scope that lets a caller revoke any local token of the tenant.
pub const LOCAL_TOKENS_WRITE: &str = "lanyard:local-tokens:write";
/// The scope that lets a caller list any system's local tokens (and bind a client to a system,
/// which reads them).
pub const LOCAL_TOKENS_READ: &str = "lanyard:local-tokens:read";
pub const SYSTEMS_READ: &str = "lanyard:systems:read";
pub const SYSTEMS_WRITE: &str = "lanyard:systems:write";
pub const ROLES_WRITE: &str = "lanyard:roles:write";
pub const USERS_READ: &str = "lanyard:users:read";
pub const USERS_WRITE: &str = "lanyard:users:write";
pub const SCOPES_WRITE: &str = "lanyard:scopes:write";
pub const CLIENTS_READ: &str = "lanyard:clients:read";
pub const CLIENTS_WRITE: &str = "lanyard:clients:write";
pub const KEYS_READ: &str = "lanyard:keys:read";
pub const KEYS_WRITE: &str = "lanyard:keys:write";
/// The scopes that let a caller read and change token metadata (SPEC §9).
pub const TOKEN_METADATA_READ: &str = "lanyard:token-metadata:read";
pub const TOKEN_METADATA_WRITE: &str = "lanyard:token-metadata:write";
/// The scope that lets a caller read the tenant's audit events.
pub const AUDIT_READ: &str = "lanyard:audit:read";
/// The scopes of a user tenant's grants to applications of other tenants (SPEC §11).
pub const APPLICATIONS_READ: &str = "lanyard:applications:read";
pub const APPLICATIONS_WRITE: &str = "lanyard:applications:write";
/// The one scope of a delegation's token: minting local tokens under its share.
pub const LOCAL_TOKENS_MINT: &str = crate::domain::scope::DELEGATION_SCOPE;
/// Lets a caller list any system's shares (SPEC §11).
pub const ROLES_READ: &str = "lanyard:roles:read";

/// Who calls a use-case: a verified access token of a tenant.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Tenant,
    pub claims: AccessClaims,
    pub scopes: ScopeSet,
}

impl Caller {
    pub fn new(tenant: Tenant, claims: AccessClaims) -> Caller {
        let scopes = ScopeSet::parse(&claims.scope).unwrap_or_default();
        Caller {
            tenant,
            claims,
            scopes,
        }
    }

    /// The user behind the token, if it is a person's token (a client's own has `sub` =
    /// `client_id`; a person's `sub` is their id). A delegation's token has none: it acts for
    /// nobody but through [`Caller::delegation`].
    pub fn user_id(&self) -> Option<UserId> {
        if self.claims.sub == self.claims.client_id || self.claims.is_delegation() {
            return None;
        }
        UserId::parse(&self.claims.sub).ok()
    }

    /// For a delegation's token (SPEC §11): the share it was issued under, and its system.
    pub fn delegation(&self) -> Option<(&str, &str)> {
        Some((
            self.claims.share.as_deref()?,
            self.claims.system.as_deref()?,
        ))
    }

    /// Refuses unless the token carries `scope`.
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.scopes.contains_str(scope) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("this needs the scope {scope}")))
        }
    }
}

/// Who acts on a management use-case.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// The operator at the command line: may do anything in the tenant.
    Operator(&'a Tenant),
    /// A token, limited to its scopes.
    Caller(&'a Caller),
}

impl<'a> From<&'a Tenant> for Actor<'a> {
    fn from(tenant: &'a Tenant) -> Self {
        Actor::Operator(tenant)
    }
}

impl<'a> From<&'a Caller> for Actor<'a> {
    fn from(caller: &'a Caller) -> Self {
        Actor::Caller(caller)
    }
}

impl<'a> Actor<'a> {
    pub fn tenant(&self) -> &'a Tenant {
        match self {
            Actor::Operator(tenant) => tenant,
            Actor::Caller(caller) => &caller.tenant,
        }
    }

    /// The scopes the actor holds; `None` for the operator, who holds them all.
    pub fn scopes(&self) -> Option<&'a ScopeSet> {
        match self {
            Actor::Operator(_) => None,
            Actor::Caller(caller) => Some(&caller.scopes),
        }
    }

    /// Refuses unless the actor may use `scope`.
    pub fn require(&self, scope: &str) -> Result<()> {
        match self {
            Actor::Operator(_) => Ok(()),
            Actor::Caller(caller) => caller.require(scope),
        }
    }

    /// Refuses unless the actor holds every `lanyard:` scope of `held`, the scopes of the
    /// principal it would act on (`what` names it in the error): nobody manages a principal
    /// with more rights than their own (SPEC §6).
    pub fn require_all_admin(&self, held: &ScopeSet, what: &str) -> Result<()> {
        let Some(mine) = self.scopes() else {
            return Ok(());
        };
        let missing = admin_scopes_missing(held, mine);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{what} holds scopes the caller does not: {missing}"
            )))
        }
    }
}

/// The `lanyard:` scopes of `scopes` that `held` lacks, space-separated; empty when none.
pub(crate) fn admin_scopes_missing(scopes: &ScopeSet, held: &ScopeSet) -> String {
    scopes
        .difference(held)
        .iter()
        .filter(|s| s.is_admin())
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
