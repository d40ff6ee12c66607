//! Applications for several tenants (SPEC §11; the shapes of a token management service): an
//! application is a confidential client of its host tenant registered with an `appName` and
//! `appVersion`, whose credentials belong to that version. A user tenant grants it access with
//! some of its scopes; the application then gets *technical tokens* for each user tenant that
//! granted it access, issued and signed by that tenant.
//!
//! A technical token is an access token of the user tenant with `sub` = `client_id` = the
//! application's client (a client of the host tenant) and `app` = `{name, version,
//! host_tenant}`; 30 minutes. It is good while the grant lasts and gives its scopes, and while
//! the host tenant's client still holds that application version ([`super::tokens`] checks it
//! on every verification not answered from the token cache, which a revocation clears).
//!
//! A user tenant that never granted access, a revoked grant and another version's credentials
//! are refused alike: credentials with [`TmsError::Unauthorized`], access with
//! [`TmsError::Forbidden`].

use super::caller::{APPLICATIONS_READ, APPLICATIONS_WRITE};
use super::clients::{Application, Client, ClientCredentials};
use super::grants::IssuedToken;
use super::{Actor, Authority, Error, Event, Result, Tenant};
use crate::domain::claims::AppClaim;
use crate::domain::{AccessClaims, Internal, OAuthError, OAuthErrorCode, ScopeSet};
use crate::store::{StoreError, applications, clients};

/// How long a technical token lives.
pub const TECHNICAL_TOKEN_TTL_SECS: i64 = 30 * 60;
/// The most user tenants one request asks tokens of.
pub const MAX_TENANTS_PER_REQUEST: usize = 5;
/// The largest page of the tenant list.
pub const MAX_PAGE_SIZE: i64 = 100;

/// A user tenant's grant to an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationGrant {
    pub host_tenant: String,
    pub application: Application,
    pub scopes: ScopeSet,
    pub granted_at: i64,
}

/// Why a request of the token management endpoints was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TmsError {
    /// Credentials that are not an application version's of the host tenant (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A user tenant that has not granted this application version access (403).
    #[error("{0}")]
    Forbidden(String),
    /// A request that is not well formed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Too many failed authentications from this source (429, retry after the seconds).
    #[error("too many failed client authentications; retry later")]
    TooManyRequests(u64),
    #[error("the server could not complete the request")]
    Internal(Internal),
}

impl From<StoreError> for TmsError {
    fn from(e: StoreError) -> Self {
        TmsError::Internal(Internal::new("token management", e))
    }
}

impl From<Error> for TmsError {
    fn from(e: Error) -> Self {
        let cause = match e {
            Error::Internal(cause) => cause,
            other => anyhow::anyhow!("{other}"),
        };
        TmsError::Internal(Internal::new("token management", cause))
    }
}

/// A page of the tenants that granted access.
#[derive(Debug, Clone)]
pub struct GrantingTenants {
    pub content: Vec<ApplicationGrantOf>,
    /// Tenants that granted access, and pages of the size asked for.
    pub total: i64,
    pub pages: i64,
}

/// One tenant that granted access.
#[derive(Debug, Clone)]
pub struct ApplicationGrantOf {
    pub tenant: String,
    pub scopes: ScopeSet,
    pub granted_at: i64,
}

impl Authority {
    /// Grants the application `name`@`version` of `host_slug` access to the actor's tenant
    /// with `scopes` (replacing those of an earlier grant). Needs
    /// `lanyard:applications:write`, and every `lanyard:` scope granted.
    pub async fn grant_application_access(
        &self,
        by: impl Into<Actor<'_>>,
        host_slug: &str,
        application: &Application,
        scopes: &ScopeSet,
    ) -> Result<ApplicationGrant> {
        let by = by.into();
        by.require(APPLICATIONS_WRITE)?;
        self.check_grantable(by, scopes).await?;
        let tenant = by.tenant();
        let host = self.registered_application(host_slug, application).await?;
        // Changing a grant is managing its holder: not one with more rights than the caller.
        self.require_managing_grant(by, &host, application).await?;
        let now = self.now();
        let row = applications::GrantRow {
            tenant_id: tenant.id.to_string(),
            host_tenant_id: host.id.to_string(),
            app_name: application.name.clone(),
            app_version: application.version.clone(),
            scopes: scopes.to_string(),
            grant_id: uuid::Uuid::new_v4().to_string(),
            granted_at: now,
        };
        let event = self.event(
            &by,
            "application.access_granted",
            format!("application:{application} of tenant:{host_slug} scopes:{scopes}"),
        );
        applications::grant(&self.db, &event, &row).await?;
        tracing::info!(tenant = %tenant.slug, host = %host_slug, %application, "application access granted");
        self.emit(Event::ApplicationAccessChanged {
            tenant_id: tenant.id.to_string(),
            host_tenant: host_slug.to_owned(),
            app_name: application.name.clone(),
            app_version: application.version.clone(),
        });
        Ok(ApplicationGrant {
            host_tenant: host.slug.to_string(),
            application: application.clone(),
            scopes: scopes.clone(),
            granted_at: now,
        })
    }

    /// Revokes a grant: the application gets no more technical tokens of this tenant, and
    /// those it holds stop working. Needs `lanyard:applications:write`.
    pub async fn revoke_application_access(
        &self,
        by: impl Into<Actor<'_>>,
        host_slug: &str,
        application: &Application,
    ) -> Result<()> {
        let by = by.into();
        by.require(APPLICATIONS_WRITE)?;
        let tenant = by.tenant();
        let not_found =
            || Error::NotFound(format!("{application} of {host_slug} holds no access here"));
        let host = self.tenant(host_slug).await?.ok_or_else(not_found)?;
        self.require_managing_grant(by, &host, application).await?;
        let event = self.event(
            &by,
            "application.access_revoked",
            format!("application:{application} of tenant:{host_slug}"),
        );
        if !applications::revoke(
            &self.db,
            &event,
            &tenant.id,
            &host.id,
            &application.name,
            &application.version,
        )
        .await?
        {
            return Err(not_found());
        }
        tracing::info!(tenant = %tenant.slug, host = %host_slug, %application, "application access revoked");
        self.emit(Event::ApplicationAccessChanged {
            tenant_id: tenant.id.to_string(),
            host_tenant: host_slug.to_owned(),
            app_name: application.name.clone(),
            app_version: application.version.clone(),
        });
        Ok(())
    }

    /// The grants of the actor's tenant. Needs `lanyard:applications:read`.
    pub async fn application_grants(
        &self,
        by: impl Into<Actor<'_>>,
    ) -> Result<Vec<ApplicationGrant>> {
        let by = by.into();
        by.require(APPLICATIONS_READ)?;
        Ok(applications::of_tenant(&self.db, &by.tenant().id)
            .await?
            .into_iter()
            .map(|g| ApplicationGrant {
                host_tenant: g.host_slug,
                application: Application {
                    name: g.app_name,
                    version: g.app_version,
                },
                scopes: ScopeSet::parse(&g.scopes).unwrap_or_default(),
                granted_at: g.granted_at,
            })
            .collect())
    }

    /// Refuses unless `by` holds every `lanyard:` scope of the tenant's grant to the
    /// application, if there is one (SPEC §6: nobody manages a principal holding more).
    async fn require_managing_grant(
        &self,
        by: Actor<'_>,
        host: &Tenant,
        application: &Application,
    ) -> Result<()> {
        if let Some(grant) = applications::find(
            &self.db,
            &by.tenant().id,
            &host.id,
            &application.name,
            &application.version,
        )
        .await?
        {
            let held = ScopeSet::parse(&grant.scopes).unwrap_or_default();
            by.require_all_admin(&held, &format!("application {application}"))?;
        }
        Ok(())
    }

    /// The host tenant, when it registered the application version.
    async fn registered_application(
        &self,
        host_slug: &str,
        application: &Application,
    ) -> Result<Tenant> {
        let not_found = || {
            Error::NotFound(format!(
                "tenant {host_slug} has no application {application}"
            ))
        };
        let host = self.tenant(host_slug).await?.ok_or_else(not_found)?;
        clients::find_application(&self.db, &host.id, &application.name, &application.version)
            .await?
            .ok_or_else(not_found)?;
        Ok(host)
    }

    /// The application client these credentials authenticate: of `host_slug` when named, else
    /// of whichever tenant holds an application client with that id and secret. Anything else
    /// (an unknown tenant, a wrong secret, a client of no application, of another version) is
    /// the same 401.
    pub async fn authenticate_application(
        &self,
        host_slug: Option<&str>,
        creds: &ClientCredentials,
        application: Option<&Application>,
    ) -> Result<(Tenant, Client), TmsError> {
        let refused = || {
            TmsError::Unauthorized(
                "the credentials are not those of this application version".into(),
            )
        };
        let hosts: Vec<Tenant> = match host_slug {
            Some(slug) => self.tenant(slug).await?.into_iter().collect(),
            None => {
                let mut hosts = Vec::new();
                for tenant_id in clients::application_tenants(&self.db, &creds.client_id).await? {
                    if let Some(t) = self.tenant_by_id(&tenant_id).await? {
                        hosts.push(t);
                    }
                }
                hosts
            }
        };
        for host in hosts {
            let client = match self.authenticate_client(&host, creds).await {
                Ok(client) => client,
                Err(e) => match e.code {
                    OAuthErrorCode::TooManyRequests => {
                        return Err(TmsError::TooManyRequests(e.retry_after.unwrap_or(60)));
                    }
                    OAuthErrorCode::ServerError => {
                        return Err(TmsError::Internal(
                            e.internal
                                .unwrap_or_else(|| Internal::msg("auth", e.description)),
                        ));
                    }
                    _ => continue,
                },
            };
            let matches = match (&client.application, application) {
                (Some(held), Some(asked)) => held == asked,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if client.public || !matches {
                return Err(refused());
            }
            return Ok((host, client));
        }
        Err(refused())
    }

    /// Technical tokens of each of `user_slugs` (at most [`MAX_TENANTS_PER_REQUEST`]) for an
    /// authenticated application client of `host`: one answer per tenant, in order.
    pub async fn technical_tokens(
        &self,
        host: &Tenant,
        client: &Client,
        user_slugs: &[&str],
    ) -> Vec<Result<IssuedToken, TmsError>> {
        let mut out = Vec::with_capacity(user_slugs.len());
        for slug in user_slugs {
            out.push(self.technical_token(host, client, slug).await);
        }
        out
    }

    async fn technical_token(
        &self,
        host: &Tenant,
        client: &Client,
        user_slug: &str,
    ) -> Result<IssuedToken, TmsError> {
        let application = client
            .application
            .as_ref()
            .expect("an authenticated application client");
        let refused = || {
            TmsError::Forbidden(format!(
                "tenant {user_slug} has not granted {application} access"
            ))
        };
        let tenant = self.tenant(user_slug).await?.ok_or_else(refused)?;
        let grant = applications::find(
            &self.db,
            &tenant.id,
            &host.id,
            &application.name,
            &application.version,
        )
        .await?
        .ok_or_else(refused)?;
        let now = self.now();
        let mut claims = AccessClaims::new(
            tenant.issuer.clone(),
            client.client_id.to_string(),
            tenant.slug.to_string(),
            client.client_id.to_string(),
            grant.scopes,
            now,
            now + TECHNICAL_TOKEN_TTL_SECS,
            uuid::Uuid::new_v4().to_string(),
        );
        claims.app = Some(AppClaim {
            name: application.name.clone(),
            version: application.version.clone(),
            host_tenant: host.slug.to_string(),
            grant: grant.grant_id,
        });
        self.sign_claims(&tenant, claims, "technical_token")
            .await
            .map_err(|e: OAuthError| {
                TmsError::Internal(
                    e.internal
                        .unwrap_or_else(|| Internal::msg("technical token", e.description)),
                )
            })
    }

    /// A page (from 0) of the tenants that granted the application client's version access,
    /// by slug. A page past the last is refused, as is a size outside 1 to
    /// [`MAX_PAGE_SIZE`].
    pub async fn granting_tenants(
        &self,
        host: &Tenant,
        client: &Client,
        page: i64,
        size: i64,
    ) -> Result<GrantingTenants, TmsError> {
        let application = client
            .application
            .as_ref()
            .expect("an authenticated application client");
        if !(1..=MAX_PAGE_SIZE).contains(&size) || page < 0 {
            return Err(TmsError::BadRequest(format!(
                "page must be 0 or more and size 1 to {MAX_PAGE_SIZE}"
            )));
        }
        let (rows, total) = applications::granting_tenants(
            &self.db,
            (&host.id, &application.name, &application.version),
            size,
            page.saturating_mul(size),
        )
        .await?;
        let pages = (total + size - 1) / size;
        if page > 0 && page >= pages {
            return Err(TmsError::BadRequest(format!(
                "page {page} is out of range: there are {pages} pages of {size}"
            )));
        }
        Ok(GrantingTenants {
            content: rows
                .into_iter()
                .map(|r| ApplicationGrantOf {
                    tenant: r.slug,
                    scopes: ScopeSet::parse(&r.scopes).unwrap_or_default(),
                    granted_at: r.granted_at,
                })
                .collect(),
            total,
            pages,
        })
    }

    /// Whether a technical token of `tenant` is still good: the grant it was issued under
    /// stands (a grant revoked and made again is another, which does not bring back the tokens
    /// of the one before) and gives its scopes; and the host tenant's client still holds that
    /// application version.
    pub(super) async fn technical_token_granted(
        &self,
        tenant: &Tenant,
        app: &AppClaim,
        claims: &AccessClaims,
    ) -> Result<bool> {
        let Some(host) = self.tenant(&app.host_tenant).await? else {
            return Ok(false);
        };
        let Some(grant) =
            applications::find(&self.db, &tenant.id, &host.id, &app.name, &app.version).await?
        else {
            return Ok(false);
        };
        let granted = ScopeSet::parse(&grant.scopes).unwrap_or_default();
        if grant.grant_id != app.grant
            || !ScopeSet::parse(&claims.scope)
                .unwrap_or_default()
                .is_subset(&granted)
        {
            return Ok(false);
        }
        Ok(self
            .client_row(&host.id, &claims.client_id)
            .await?
            .is_some_and(|c| {
                c.app_name.as_deref() == Some(app.name.as_str())
                    && c.app_version.as_deref() == Some(app.version.as_str())
            }))
    }
}
