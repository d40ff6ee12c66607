//! Audit events (SPEC §14): who changed what, and every token issued or revoked. The use-cases
//! build each event here ([`Authority::event`]) and hand it to the store with the change, which
//! writes both in one transaction; tokens issued, which change nothing stored, are recorded in
//! batches. Events hold ids and names, never a secret, a token or a code. Listed behind
//! `lanyard:audit:read`, pruned after `audit.retention`.

use std::fmt::Display;

use super::caller::AUDIT_READ;
use super::{Actor, Authority, Error, Result, Tenant};
use crate::store::audit::{self, AuditRow, StoredEvent};

/// The most events one listing returns.
pub const MAX_EVENTS_PER_PAGE: i64 = 500;

/// Who acts, as an event names them.
pub(crate) fn actor_name(by: &Actor<'_>) -> String {
    match by {
        Actor::Operator(_) => "operator".into(),
        Actor::Caller(caller) => {
            let claims = &caller.claims;
            let mut name = match caller.user_id() {
                Some(user) => format!("user:{user} via client:{}", claims.client_id),
                // A delegation's token: the recipient acts for the sharer.
                None if claims.is_delegation() => {
                    format!("user:{} via client:{}", claims.sub, claims.client_id)
                }
                None => format!("client:{}", claims.client_id),
            };
            // Who acts for the subject, the current actor first (SPEC §11).
            for actor in claims.act.iter().flat_map(|a| a.named()) {
                name.push_str(&format!(", acting: {actor}"));
            }
            if let Some(app) = &claims.app {
                name.push_str(&format!(" of tenant:{}", app.host_tenant));
            }
            name
        }
    }
}

/// What lanyard's own jobs (scheduled rotation, promotion) are recorded as.
pub(crate) const LANYARD: &str = "lanyard";

impl Authority {
    /// An event of `by`'s tenant, now: `action` done to `target`, which succeeded.
    pub(crate) fn event(&self, by: &Actor<'_>, action: &str, target: impl Display) -> AuditRow {
        self.event_of(by.tenant(), actor_name(by), action, target)
    }

    /// An event of `tenant` by the actor named `actor`.
    pub(crate) fn event_of(
        &self,
        tenant: &Tenant,
        actor: String,
        action: &str,
        target: impl Display,
    ) -> AuditRow {
        self.event_in(&tenant.id, actor, action, target)
    }

    /// An event of the tenant with id `tenant_id`.
    pub(crate) fn event_in(
        &self,
        tenant_id: &str,
        actor: String,
        action: &str,
        target: impl Display,
    ) -> AuditRow {
        AuditRow {
            time: self.now(),
            tenant_id: tenant_id.to_owned(),
            actor,
            action: action.to_owned(),
            target: target.to_string(),
            outcome: "success".into(),
        }
    }

    /// The tenant's events after `after` (the `seq` of the last one seen; 0 for the oldest),
    /// oldest first, at most `limit` (up to [`MAX_EVENTS_PER_PAGE`]). Needs `lanyard:audit:read`.
    pub async fn audit_events(
        &self,
        by: impl Into<Actor<'_>>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let by = by.into();
        by.require(AUDIT_READ)?;
        if limit < 1 {
            return Err(Error::Invalid(format!(
                "limit is 1 to {MAX_EVENTS_PER_PAGE} events"
            )));
        }
        let limit = limit.min(MAX_EVENTS_PER_PAGE);
        Ok(audit::list(&self.db, &by.tenant().id, after.max(0), limit).await?)
    }

    /// Forgets events older than `audit.retention`.
    pub async fn prune_audit_once(&self) -> Result<u64> {
        let before = self.now() - self.settings.audit.retention.as_secs_i64();
        Ok(audit::prune(&self.db, before).await?)
    }
}
