//! Systems: the gateways, locks and building controllers local API tokens are addressed to.

use super::caller::SYSTEMS_WRITE;
use super::validate_name;
use super::{Actor, Authority, Result};
use crate::store::systems;

impl Authority {
    /// Creates a system and returns its uuid.
    pub async fn create_system(&self, by: impl Into<Actor<'_>>, name: &str) -> Result<String> {
        let by = by.into();
        by.require(SYSTEMS_WRITE)?;
        let tenant = by.tenant();
        let name = validate_name(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        systems::insert(
            &self.db,
            &systems::SystemRow {
                id: id.clone(),
                tenant_id: tenant.id.clone(),
                name: name.to_owned(),
                created_at: self.now(),
            },
        )
        .await?;
        tracing::info!(tenant = %tenant.slug, system = %id, "system created");
        self.emit(super::Event::LocalTokensChanged {
            tenant_id: tenant.id.clone(),
            system_id: id.clone(),
            minted: None,
        });
        Ok(id)
    }
}
