//! Tenants: creation (with the first signing key), lookup, and `bootstrap`.

use serde::Serialize;

use super::clients::NewClient;
use super::{Authority, Error, Event, Result, validate_name};
use crate::domain::{GrantType, ScopeSet, Slug, TenantId};
use crate::store::{StoreError, tenants};

/// A tenant as the use-cases see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    /// `{public_url}/t/{slug}`.
    pub issuer: String,
}

/// What `lanyard bootstrap` prints (SPEC §1).
#[derive(Debug, Serialize)]
pub struct Bootstrap {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
    pub issuer: String,
    pub token_endpoint: String,
}

impl Authority {
    fn tenant_from_row(&self, row: tenants::TenantRow) -> Result<Tenant> {
        let slug = Slug::parse(&row.slug).map_err(anyhow::Error::from)?;
        Ok(Tenant {
            issuer: self.settings.issuer(slug.as_str()),
            id: TenantId::stored(row.id),
            slug,
            name: row.name,
        })
    }

    /// The tenant with this slug, if it exists.
    pub async fn tenant(&self, slug: &str) -> Result<Option<Tenant>> {
        // A string that is not a slug names no tenant; no need to ask the database.
        if Slug::parse(slug).is_err() {
            return Ok(None);
        }
        if let Some(tenant) = self.tenant_cache.read().expect("tenant cache").get(slug) {
            return Ok(Some(tenant.clone()));
        }
        let Some(row) = tenants::find_by_slug(&self.db, slug).await? else {
            return Ok(None);
        };
        let tenant = self.tenant_from_row(row)?;
        self.tenant_cache
            .write()
            .expect("tenant cache")
            .insert(slug.to_owned(), tenant.clone());
        Ok(Some(tenant))
    }

    /// The tenant whose id is `id`: from the cache when it is there (tenants are never removed
    /// and their ids and slugs never change), else from the database.
    pub async fn tenant_by_id(&self, id: &str) -> Result<Option<Tenant>> {
        let cached = self
            .tenant_cache
            .read()
            .expect("tenant cache")
            .values()
            .find(|t| t.id == id)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(tenant) = self.tenants().await?.into_iter().find(|t| t.id == id) else {
            return Ok(None);
        };
        self.tenant_cache
            .write()
            .expect("tenant cache")
            .insert(tenant.slug.to_string(), tenant.clone());
        Ok(Some(tenant))
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        tenants::list(&self.db)
            .await?
            .into_iter()
            .map(|row| self.tenant_from_row(row))
            .collect()
    }

    /// Creates a tenant and its first, ACTIVE signing key.
    pub async fn create_tenant(&self, slug: &Slug, name: &str) -> Result<Tenant> {
        let name = validate_name(name)?;
        let now = self.now();
        let id = uuid::Uuid::new_v4().to_string();
        let key = self.generate_key(&id, "ACTIVE", now, Some(now)).await?;
        let row = tenants::TenantRow {
            id,
            slug: slug.to_string(),
            name: name.to_owned(),
            created_at: now,
        };
        let event = self.event_in(
            &row.id,
            "operator".into(),
            "tenant.created",
            format!("tenant:{slug}"),
        );
        tenants::create(&self.db, &event, &row, &key)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => Error::Conflict(format!("tenant {slug} already exists")),
                other => other.into(),
            })?;
        let tenant = self.tenant_from_row(row)?;
        tracing::info!(tenant = %tenant.slug, "tenant created");
        self.emit(Event::KeysChanged {
            tenant_id: tenant.id.to_string(),
            slug: tenant.slug.to_string(),
        });
        Ok(tenant)
    }

    /// Creates the tenant if it is missing, then a new admin client holding the whole admin
    /// catalogue and every custom scope of the tenant.
    pub async fn bootstrap(&self, slug: &Slug, name: Option<&str>) -> Result<Bootstrap> {
        let tenant = match self.tenant(slug.as_str()).await? {
            Some(t) => t,
            None => match self
                .create_tenant(slug, name.unwrap_or(slug.as_str()))
                .await
            {
                Ok(t) => t,
                // Another process created it in the meantime.
                Err(Error::Conflict(_)) => self
                    .tenant(slug.as_str())
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("tenant {slug}")))?,
                Err(e) => return Err(e),
            },
        };
        let scopes = ScopeSet::admin_catalogue().union(&self.custom_scopes(&tenant).await?);
        let registration = self
            .create_client(
                &tenant,
                NewClient {
                    name: "admin".into(),
                    scopes: scopes.clone(),
                    grant_types: vec![GrantType::ClientCredentials],
                    ..NewClient::default()
                },
            )
            .await?;
        Ok(Bootstrap {
            tenant: tenant.slug.to_string(),
            client_id: registration.client_id.into(),
            client_secret: registration
                .client_secret
                .map(|s| s.expose().to_owned())
                .unwrap_or_default(),
            scope: scopes.to_string(),
            token_endpoint: format!("{}/oauth2/token", tenant.issuer),
            issuer: tenant.issuer,
        })
    }
}
