//! Systems: the gateways, locks and building controllers local API tokens are addressed to.

use super::caller::SYSTEMS_WRITE;
use super::validate_name;
use super::{Actor, Authority, Result};
use crate::domain::SystemId;
use crate::store::systems;

impl Authority {
    /// Creates a system and returns its uuid.
    pub async fn create_system(&self, by: impl Into<Actor<'_>>, name: &str) -> Result<SystemId> {
        let by = by.into();
        by.require(SYSTEMS_WRITE)?;
        let tenant = by.tenant();
        let name = validate_name(name)?;
        let id = SystemId::generate();
        systems::insert(
            &self.db,
            &self.event(&by, "system.created", format!("system:{id}")),
            &systems::SystemRow {
                id: id.to_string(),
                tenant_id: tenant.id.to_string(),
                name: name.to_owned(),
                created_at: self.now(),
            },
        )
        .await?;
        tracing::info!(tenant = %tenant.slug, system = %id, "system created");
        self.emit(super::Event::LocalTokensChanged {
            tenant_id: tenant.id.to_string(),
            system_id: id.to_string(),
            minted: None,
        });
        Ok(id)
    }
}
