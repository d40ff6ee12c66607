//! OAuth clients, their authentication (RFC 6749 §2.3.1) and the tenant's custom scopes.
//!
//! Secrets are 256-bit random, returned once at registration or rotation, and stored only as a
//! SHA-256 hash (see `crypto::secret` for why a fast hash is right here).

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use super::caller::{
    CLIENTS_READ, CLIENTS_WRITE, LOCAL_TOKENS_READ, SCOPES_WRITE, admin_scopes_missing,
};
use super::validate_name;
use super::{Actor, Authority, Error, Event, Result, Tenant};
use crate::crypto::secret::random_id;
use crate::crypto::{Secret, SecretHash};
use crate::domain::web::{MAX_REDIRECT_URIS, RedirectUri};
use crate::domain::{
    ClientId, GrantType, Internal, OAuthError, OAuthErrorCode, Scope, ScopeSet, SystemId,
};
use crate::store::{StoreError, clients, scopes, systems};
use serde_json::{Map, Value};

/// A client to register.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub name: String,
    pub scopes: ScopeSet,
    /// Empty: the defaults for the client kind (`GrantType::defaults`).
    pub grant_types: Vec<GrantType>,
    pub public: bool,
    /// Bind the client to one system (its gateway or device).
    pub system_id: Option<SystemId>,
    /// A fixed `client_id` instead of a random one (the demo seed).
    pub client_id: Option<ClientId>,
    /// Where the authorization endpoint may send people back (SPEC §9).
    pub redirect_uris: Vec<RedirectUri>,
    /// Where logout may send people back.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// The client that may exchange this client's tokens without an actor token: the tokens
    /// issued to this client carry it as `may_act` (SPEC §11).
    pub may_act: Option<ClientId>,
    /// The application version whose credentials this confidential client holds (SPEC §11).
    pub application: Option<Application>,
}

/// An application version (SPEC §11): its name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub name: String,
    pub version: String,
}

impl Application {
    /// 1 to 64 characters each, of `A-Z a-z 0-9 . _ - +`.
    pub fn parse(name: &str, version: &str) -> Result<Application> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        };
        if !valid(name) || !valid(version) {
            return Err(Error::Invalid(
                "appName and appVersion must be 1 to 64 characters of A-Z a-z 0-9 . _ - +".into(),
            ));
        }
        Ok(Application {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }
}

impl std::fmt::Display for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// What a registration returns, once (RFC 7591 §3.2.1 names).
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub client_id: ClientId,
    /// Confidential clients only; never retrievable again.
    pub client_secret: Option<Secret>,
    pub client_id_issued_at: i64,
    /// 0: the secret does not expire.
    pub client_secret_expires_at: i64,
}

/// A registered client as the use-cases see it.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: ClientId,
    pub name: String,
    pub public: bool,
    pub scopes: ScopeSet,
    pub grant_types: Vec<GrantType>,
    pub system_id: Option<SystemId>,
    pub redirect_uris: Vec<RedirectUri>,
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// Carried by introspection answers as `client_metadata`.
    pub metadata: Map<String, Value>,
    pub may_act: Option<ClientId>,
    pub application: Option<Application>,
}

/// The stored JSON array of redirect URIs; one that no longer parses is dropped.
fn stored_uris(text: &str) -> Vec<RedirectUri> {
    serde_json::from_str::<Vec<String>>(text)
        .unwrap_or_default()
        .iter()
        .filter_map(|u| RedirectUri::parse(u).ok())
        .collect()
}

fn uris_text(uris: &[RedirectUri]) -> String {
    Value::from(uris.iter().map(|u| u.as_str()).collect::<Vec<_>>()).to_string()
}

impl Client {
    pub(crate) fn from_row(row: &clients::ClientRow) -> Client {
        Client {
            client_id: ClientId::stored(row.client_id.clone()),
            name: row.name.clone(),
            public: row.is_public,
            // Stored scopes were validated when written; a scope dropped from the catalogue since
            // is simply no longer granted.
            scopes: row
                .scopes
                .split(' ')
                .filter_map(|s| Scope::parse(s).ok())
                .collect(),
            grant_types: GrantType::split(&row.grant_types),
            system_id: row.system_id.clone().map(SystemId::stored),
            redirect_uris: stored_uris(&row.redirect_uris),
            post_logout_redirect_uris: stored_uris(&row.post_logout_redirect_uris),
            metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
            may_act: row.may_act.clone().map(ClientId::stored),
            application: match (&row.app_name, &row.app_version) {
                (Some(name), Some(version)) => Some(Application {
                    name: name.clone(),
                    version: version.clone(),
                }),
                _ => None,
            },
        }
    }
}

/// Longer client ids and secrets are refused before any lookup.
const MAX_CREDENTIAL_LEN: usize = 256;

/// Compared against when the client does not exist, so an unknown client costs what a wrong
/// secret costs.
static DUMMY_HASH: LazyLock<SecretHash> = LazyLock::new(|| Secret::generate().hash());

/// Credentials presented by a client (RFC 6749 §2.3.1).
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    /// None for a public client identifying itself.
    pub secret: Option<Secret>,
    /// The network address the credentials came from, as the rate limit counts it (the door
    /// folds an IPv6 address to its /64); `None` where a door has none.
    pub source: Option<IpAddr>,
}

impl Authority {
    /// Authenticates a client of `tenant`. A confidential client must present its secret; a
    /// public client identifies itself by `client_id` alone. An unknown client and a wrong secret
    /// get the same answer after the same work. Failures are rate limited per `client_id` and
    /// source address (SPEC §3, §7): a source that failed too often gets 429 instead of 401 for
    /// its next failures, while the right credentials are always accepted, from any source, so
    /// nobody can lock a client out by failing in its name.
    pub async fn authenticate_client(
        &self,
        tenant: &Tenant,
        creds: &ClientCredentials,
    ) -> Result<Client, OAuthError> {
        let now = self.now();
        let source = creds.source.map(|ip| ip.to_string()).unwrap_or_default();
        let limit_key = format!("{}:{}:{source}", tenant.id, creds.client_id);
        let blocked = self.auth_failures.blocked(&limit_key, now);
        let too_long = creds.client_id.len() > MAX_CREDENTIAL_LEN
            || creds
                .secret
                .as_ref()
                .is_some_and(|s| s.expose().len() > MAX_CREDENTIAL_LEN);
        let row = if too_long {
            None
        } else {
            self.client_row(&tenant.id, &creds.client_id)
                .await
                .map_err(|e| OAuthError::server_error(Internal::new("client lookup", e)))?
        };
        let stored = row
            .as_ref()
            .and_then(|r| r.secret_hash.as_deref())
            .and_then(SecretHash::from_slice);
        let authenticated = match (&row, &creds.secret) {
            (Some(r), None) => r.is_public,
            (Some(r), Some(secret)) => {
                !r.is_public && stored.as_ref().is_some_and(|h| h.matches(secret))
            }
            (None, Some(secret)) => {
                let _ = DUMMY_HASH.matches(secret);
                false
            }
            (None, None) => false,
        };
        match row {
            Some(r) if authenticated => Ok(Client::from_row(&r)),
            _ => {
                if let Some(wait) = blocked {
                    let mut e = OAuthError::new(
                        OAuthErrorCode::TooManyRequests,
                        "too many failed client authentications; try again later",
                    );
                    e.retry_after = Some(wait);
                    return Err(e);
                }
                self.auth_failures.record(&limit_key, now);
                Err(OAuthError::invalid_client())
            }
        }
    }

    /// The tenant's own scopes (not the admin catalogue).
    pub async fn custom_scopes(&self, tenant: &Tenant) -> Result<ScopeSet> {
        Ok(scopes::list(&self.db, &tenant.id)
            .await?
            .into_iter()
            .filter_map(|row| Scope::parse(&row.name).ok())
            .collect())
    }

    /// Defines a tenant scope. The `lanyard:` namespace is reserved.
    pub async fn create_scope(
        &self,
        by: impl Into<Actor<'_>>,
        name: &str,
        description: Option<&str>,
    ) -> Result<Scope> {
        let by = by.into();
        by.require(SCOPES_WRITE)?;
        let tenant = by.tenant();
        let scope = Scope::parse(name).map_err(|e| Error::Invalid(e.to_string()))?;
        if scope.is_admin() {
            return Err(Error::Invalid(
                "scopes starting with lanyard: are reserved".into(),
            ));
        }
        if description.is_some_and(|d| d.chars().count() > 500) {
            return Err(Error::Invalid(
                "a scope description is at most 500 characters".into(),
            ));
        }
        scopes::insert(
            &self.db,
            &self.event(&by, "scope.created", format!("scope:{scope}")),
            &tenant.id,
            scope.as_str(),
            description,
            self.now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict => Error::Conflict(format!("scope {scope} already exists")),
            other => other.into(),
        })?;
        Ok(scope)
    }

    /// Checks that `scopes` exist in the tenant (or in the admin catalogue) and that the actor
    /// may hand them out: a `lanyard:` scope only if it holds it itself; the tenant's own scopes
    /// always (SPEC §2 — otherwise nobody could ever hand out a scope an admin just created).
    pub(crate) async fn check_grantable(&self, by: Actor<'_>, scopes: &ScopeSet) -> Result<()> {
        if scopes.contains_str(crate::domain::scope::DELEGATION_SCOPE) {
            return Err(Error::Invalid(format!(
                "{} is carried only by a delegation's token; it is granted to no one",
                crate::domain::scope::DELEGATION_SCOPE
            )));
        }
        if let Some(held) = by.scopes() {
            let missing = admin_scopes_missing(scopes, held);
            if !missing.is_empty() {
                return Err(Error::Forbidden(format!(
                    "cannot grant scopes the caller does not hold: {missing}"
                )));
            }
        }
        let custom = self.custom_scopes(by.tenant()).await?;
        if let Some(unknown) = scopes.iter().find(|s| !s.is_admin() && !custom.contains(s)) {
            return Err(Error::Invalid(format!(
                "scope {unknown} is not defined in this tenant"
            )));
        }
        Ok(())
    }

    /// The client `client_id`, if the actor may manage it: only an actor holding every
    /// `lanyard:` scope the client holds may rotate its secret, change or delete it (SPEC §6), or
    /// whoever holds `lanyard:clients:write` could take over the tenant's admin client; and a
    /// client bound to a system also needs `lanyard:local-tokens:read`, as binding one does.
    pub(super) async fn managed_client(&self, by: Actor<'_>, client_id: &str) -> Result<Client> {
        let row = clients::find(&self.db, &by.tenant().id, client_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no client {client_id}")))?;
        let client = Client::from_row(&row);
        by.require_all_admin(&client.scopes, &format!("client {client_id}"))?;
        // Whoever holds a bound client's secret reads its system's tokens: taking one over is
        // binding (SPEC §6).
        if client.system_id.is_some() {
            by.require(LOCAL_TOKENS_READ).map_err(|_| {
                Error::Forbidden(format!(
                    "client {client_id} is bound to a system and reads its tokens: managing it needs the scope {LOCAL_TOKENS_READ}"
                ))
            })?;
        }
        Ok(client)
    }

    /// Registers a client, with only `lanyard:` scopes the actor holds (and any of the tenant's
    /// own); binding it to a system also needs `lanyard:local-tokens:read`.
    pub async fn create_client(
        &self,
        by: impl Into<Actor<'_>>,
        new: NewClient,
    ) -> Result<ClientRegistration> {
        let by = by.into();
        by.require(CLIENTS_WRITE)?;
        let tenant = by.tenant();
        let name = validate_name(&new.name)?;
        self.check_grantable(by, &new.scopes).await?;
        // A bound client reads its system's token list over MQTT: binding is reading (SPEC §6).
        if new.system_id.is_some() {
            by.require(LOCAL_TOKENS_READ).map_err(|_| {
                Error::Forbidden(format!(
                    "binding a client to a system lets it read the system's tokens: this needs the scope {LOCAL_TOKENS_READ}"
                ))
            })?;
        }
        let grant_types = if new.grant_types.is_empty() {
            GrantType::defaults(new.public)
        } else {
            let mut g = new.grant_types.clone();
            g.sort();
            g.dedup();
            g
        };
        if new.public && grant_types.contains(&GrantType::ClientCredentials) {
            return Err(Error::Invalid(
                "a public client cannot use client_credentials: it has no secret".into(),
            ));
        }
        if new.public && grant_types.contains(&GrantType::TokenExchange) {
            return Err(Error::Invalid(
                "a public client cannot use token exchange: it has no secret".into(),
            ));
        }
        if new.redirect_uris.len() > MAX_REDIRECT_URIS
            || new.post_logout_redirect_uris.len() > MAX_REDIRECT_URIS
        {
            return Err(Error::Invalid(format!(
                "a client registers at most {MAX_REDIRECT_URIS} redirect URIs of each kind"
            )));
        }
        if let Some(system_id) = &new.system_id
            && systems::find(&self.db, &tenant.id, system_id)
                .await?
                .is_none()
        {
            return Err(Error::NotFound(format!("no system {system_id}")));
        }
        if new.public && new.application.is_some() {
            return Err(Error::Invalid(
                "an application's credentials are a confidential client's: it cannot be public"
                    .into(),
            ));
        }
        if let Some(actor) = &new.may_act
            && self.client_row(&tenant.id, actor).await?.is_none()
        {
            return Err(Error::NotFound(format!("no client {actor} (mayAct)")));
        }
        let client_id = match new.client_id {
            Some(id) => id,
            None => ClientId::parse(&random_id(16)).expect("a random id is a client id"),
        };
        let secret = (!new.public).then(Secret::generate);
        let now = self.now();
        let row = clients::ClientRow {
            client_id: client_id.to_string(),
            tenant_id: tenant.id.to_string(),
            name: name.to_owned(),
            is_public: new.public,
            secret_hash: secret.as_ref().map(|s| s.hash().0.to_vec()),
            scopes: new.scopes.to_string(),
            grant_types: GrantType::join(&grant_types),
            system_id: new.system_id.map(String::from),
            metadata: "{}".into(),
            created_at: now,
            secret_rotated_at: now,
            redirect_uris: uris_text(&new.redirect_uris),
            post_logout_redirect_uris: uris_text(&new.post_logout_redirect_uris),
            may_act: new.may_act.map(String::from),
            app_name: new.application.as_ref().map(|a| a.name.clone()),
            app_version: new.application.as_ref().map(|a| a.version.clone()),
        };
        let event = self.event(&by, "client.created", format!("client:{client_id}"));
        clients::insert(&self.db, &event, &row)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => match &new.application {
                    Some(app) => Error::Conflict(format!(
                        "client {client_id}, or a client of application {app}, already exists"
                    )),
                    None => Error::Conflict(format!("client {client_id} already exists")),
                },
                other => other.into(),
            })?;
        tracing::info!(tenant = %tenant.slug, %client_id, "client registered");
        Ok(ClientRegistration {
            client_id,
            client_secret: secret,
            client_id_issued_at: now,
            client_secret_expires_at: 0,
        })
    }

    /// A client of the tenant as registered. Needs `lanyard:clients:read`.
    pub async fn client(&self, by: impl Into<Actor<'_>>, client_id: &ClientId) -> Result<Client> {
        let by = by.into();
        by.require(CLIENTS_READ)?;
        clients::find(&self.db, &by.tenant().id, client_id.as_str())
            .await?
            .map(|row| Client::from_row(&row))
            .ok_or_else(|| Error::NotFound(format!("no client {client_id}")))
    }

    /// Replaces a confidential client's secret; the old one stops working at once. The actor
    /// must hold every `lanyard:` scope the client holds.
    pub async fn rotate_client_secret(
        &self,
        by: impl Into<Actor<'_>>,
        client_id: &ClientId,
    ) -> Result<ClientRegistration> {
        let by = by.into();
        by.require(CLIENTS_WRITE)?;
        let tenant = by.tenant();
        self.managed_client(by, client_id).await?;
        let secret = Secret::generate();
        let now = self.now();
        let event = self.event(&by, "client.secret_rotated", format!("client:{client_id}"));
        if !clients::set_secret(
            &self.db,
            &event,
            &tenant.id,
            client_id,
            &secret.hash().0,
            now,
        )
        .await?
        {
            return Err(Error::NotFound(format!(
                "no confidential client {client_id}"
            )));
        }
        self.emit(Event::ClientSecretRotated {
            tenant_id: tenant.id.to_string(),
            client_id: client_id.to_string(),
        });
        let row = clients::find(&self.db, &tenant.id, client_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no client {client_id}")))?;
        Ok(ClientRegistration {
            client_id: client_id.clone(),
            client_secret: Some(secret),
            client_id_issued_at: row.created_at,
            client_secret_expires_at: 0,
        })
    }

    /// The client's stored row, from memory when it was read before.
    pub(crate) async fn client_row(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<Arc<clients::ClientRow>>, StoreError> {
        let key = (tenant_id.to_owned(), client_id.to_owned());
        if let Some(row) = self.client_cache.read().expect("client cache").get(&key) {
            return Ok(Some(row.clone()));
        }
        let Some(row) = clients::find(&self.db, tenant_id, client_id).await? else {
            return Ok(None);
        };
        let row = Arc::new(row);
        self.client_cache
            .write()
            .expect("client cache")
            .insert(key, row.clone());
        Ok(Some(row))
    }

    pub(crate) fn forget_client(&self, tenant_id: &str, client_id: &str) {
        self.client_cache
            .write()
            .expect("client cache")
            .remove(&(tenant_id.to_owned(), client_id.to_owned()));
    }

    /// Deletes a client; its access tokens stop verifying (the client must still exist). The
    /// actor must hold every `lanyard:` scope the client holds.
    pub async fn delete_client(
        &self,
        by: impl Into<Actor<'_>>,
        client_id: &ClientId,
    ) -> Result<()> {
        let by = by.into();
        by.require(CLIENTS_WRITE)?;
        let tenant = by.tenant();
        self.managed_client(by, client_id).await?;
        let event = self.event(&by, "client.deleted", format!("client:{client_id}"));
        if !clients::delete(&self.db, &event, &tenant.id, client_id).await? {
            return Err(Error::NotFound(format!("no client {client_id}")));
        }
        tracing::info!(tenant = %tenant.slug, %client_id, "client deleted");
        self.emit(Event::ClientDeleted {
            tenant_id: tenant.id.to_string(),
            client_id: client_id.to_string(),
        });
        Ok(())
    }
}
