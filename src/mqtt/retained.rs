//! lanyard's retained messages (SPEC §4): each tenant's JWKS and each system's list of local
//! API tokens, projected from the database and published through the gate's own link.
//!
//! The database is the truth; the broker's retained store (memory only) is a projection of it.
//! Everything is published before the listener accepts its first connection; afterwards a topic
//! is republished when this process announces a change, when a listed token expires (each list's
//! earliest expiry is kept in time order, and only the due ones are looked at), and when the
//! reconciliation sees a change another process made.
//! One task publishes, and a payload equal to the last one is not sent again, so a newer list
//! is never overtaken by an older one.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rumqttd::protocol::Publish;
use serde_json::{Value, json};

use super::Gate;
use crate::authority::{LocalToken, LocalTokenStatus, Tenant};

/// How far back the reconciliation looks beyond its last run: clocks of nodes differ a little.
const RECONCILE_OVERLAP_SECS: i64 = 5;

fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One entry of a system's list (SPEC §4).
fn entry(t: &LocalToken) -> Value {
    let mut e = json!({
        "uuid": t.id,
        "createdAt": rfc3339(t.created_at),
        "updatedAt": rfc3339(t.updated_at),
        "status": t.status,
        "expiresAt": t.expires_at.map(rfc3339),
        "notBefore": rfc3339(t.not_before),
        "systemUuid": t.system_id,
        "roles": t.roles.iter().map(|r| json!({ "uuid": r.id, "name": r.name })).collect::<Vec<_>>(),
        "subject": { "uuid": t.subject_id, "name": t.subject_name, "type": "USER" },
    });
    if let (LocalTokenStatus::Activated, Some(token)) = (t.status, &t.token) {
        e["token"] = token.clone().into();
    }
    if let Some(name) = &t.name {
        e["name"] = name.clone().into();
    }
    if let Some(device) = &t.requested_device {
        e["requestedDevice"] = device.clone().into();
    }
    e
}

/// The system's list as published: every token that has not expired, oldest first.
pub fn token_list(tokens: &[LocalToken]) -> Bytes {
    Bytes::from(Value::Array(tokens.iter().map(entry).collect()).to_string())
}

impl Gate {
    /// Publishes a retained message of lanyard's own, unless the topic holds it already.
    async fn publish_retained(&self, topic: String, payload: Bytes) {
        {
            let mut retained = self.retained.lock().expect("retained lock");
            if retained.get(&topic) == Some(&payload) {
                return;
            }
            retained.insert(topic.clone(), payload.clone());
        }
        self.publish(Publish::new(Bytes::from(topic), payload, true))
            .await;
    }

    /// lanyard's current message on one of its retained topics.
    pub(crate) fn current_retained(&self, topic: &str) -> Option<Bytes> {
        self.retained
            .lock()
            .expect("retained lock")
            .get(topic)
            .cloned()
    }

    /// Publishes a tenant's JWKS, exactly the HTTP document.
    pub(crate) async fn publish_jwks(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let keys = self.authority.keyring(tenant).await?;
        let topic = self.permissions.jwks_topic(tenant.slug.as_str());
        self.publish_retained(topic, Bytes::from(keys.jwks.as_bytes().to_vec()))
            .await;
        Ok(())
    }

    /// Publishes a system's list, and notes when its first listed token expires.
    pub(crate) async fn publish_token_list(
        &self,
        tenant: &Tenant,
        system_id: &str,
    ) -> anyhow::Result<()> {
        let tokens = self
            .authority
            .system_local_tokens(tenant, system_id)
            .await?;
        if let Some(next) = tokens.iter().filter_map(|t| t.expires_at).min() {
            self.expiries
                .lock()
                .expect("expiries lock")
                .entry(next)
                .or_default()
                .insert((tenant.slug.to_string(), system_id.to_owned()));
        }
        let topic = self
            .permissions
            .token_list_topic(tenant.slug.as_str(), system_id);
        self.publish_retained(topic, token_list(&tokens)).await;
        Ok(())
    }

    /// Every list of a tenant (after a key change, statuses may differ).
    pub(crate) async fn publish_tenant_lists(&self, tenant: &Tenant) -> anyhow::Result<()> {
        for (system_id, _) in self.authority.systems(tenant).await? {
            self.publish_token_list(tenant, &system_id).await?;
        }
        Ok(())
    }

    /// Everything, from the database: at start, before the listener accepts.
    pub(crate) async fn publish_everything(&self) -> anyhow::Result<()> {
        for tenant in self.authority.tenants().await? {
            self.publish_jwks(&tenant).await?;
            self.publish_tenant_lists(&tenant).await?;
        }
        Ok(())
    }

    /// Republishes the lists whose earliest token has expired by now. The one step of the
    /// expiry timer.
    pub async fn expire_lists_once(&self) -> anyhow::Result<usize> {
        let now = self.authority.now();
        let due: Vec<(String, String)> = {
            let mut expiries = self.expiries.lock().expect("expiries lock");
            let later = expiries.split_off(&(now + 1));
            std::mem::replace(&mut *expiries, later)
                .into_values()
                .flatten()
                .collect()
        };
        let mut done = 0;
        for (slug, system_id) in due {
            if let Some(tenant) = self.authority.tenant(&slug).await? {
                self.publish_token_list(&tenant, &system_id).await?;
                done += 1;
            }
        }
        Ok(done)
    }

    /// Brings the retained topics in line with the database: every tenant's JWKS, and the
    /// lists of systems changed since the last run. The one step of the reconciliation, which
    /// is how changes made by another process reach the devices.
    pub async fn reconcile_once(&self) -> anyhow::Result<()> {
        let now = self.authority.now();
        // Advanced only after a run that completed: a database that was away for a while
        // leaves nothing behind.
        let since = *self.reconciled_at.lock().expect("reconcile lock") - RECONCILE_OVERLAP_SECS;
        let tenants = self.authority.tenants().await?;
        for tenant in &tenants {
            self.publish_jwks(tenant).await?;
        }
        for (tenant_id, system_id) in self.authority.systems_changed_since(since).await? {
            if let Some(tenant) = tenants.iter().find(|t| t.id == tenant_id) {
                self.publish_token_list(tenant, &system_id).await?;
            }
        }
        *self.reconciled_at.lock().expect("reconcile lock") = now;
        Ok(())
    }
}

impl Gate {
    /// Clears the retained topics of tenants and systems that no longer exist (removed from the
    /// database by an operator), so no device keeps trusting a stale JWKS or list. The one step
    /// of a slower sweep.
    pub async fn clear_orphans_once(&self) -> anyhow::Result<usize> {
        let mut live = std::collections::HashSet::new();
        for tenant in self.authority.tenants().await? {
            let slug = tenant.slug.as_str();
            live.insert(self.permissions.jwks_topic(slug));
            for (system_id, _) in self.authority.systems(&tenant).await? {
                live.insert(self.permissions.token_list_topic(slug, &system_id));
            }
        }
        let orphans: Vec<String> = {
            let mut retained = self.retained.lock().expect("retained lock");
            let orphans: Vec<String> = retained
                .keys()
                .filter(|t| !live.contains(*t))
                .cloned()
                .collect();
            for topic in &orphans {
                retained.remove(topic);
            }
            orphans
        };
        for topic in &orphans {
            // An empty retained message removes the retained one (MQTT §3.3.1.3).
            self.publish(Publish::new(Bytes::from(topic.clone()), Bytes::new(), true))
                .await;
        }
        Ok(orphans.len())
    }
}

/// Lists to republish when their earliest token expires: expiry time → (slug, system).
pub(crate) type Expiries = BTreeMap<i64, BTreeSet<(String, String)>>;
