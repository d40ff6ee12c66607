//! lanyard's retained messages (SPEC §4, §10): each tenant's JWKS and signed key schedule, and
//! each system's list of local API tokens and Token Status List, projected from the database
//! and published through the gate's own link.
//!
//! A system's status list is published with its token list, whenever that is read; a token
//! minted here whose index lies beyond the published status list has its lists read. A status
//! list is signed again before half its lifetime has passed ([`Gate::refresh_status_lists_once`]);
//! the key schedule goes with the JWKS.
//!
//! The database is the truth; the broker's retained store (memory only) is a projection of it.
//! Everything is published before the listener accepts its first connection; afterwards a topic
//! is republished when this process announces a change, when a listed token expires (each list's
//! earliest expiry is kept in time order, and only the due ones are looked at), and when the
//! reconciliation sees a change another process made (a JWKS that changed unannounced also
//! ends the sessions its keys no longer cover and republishes its tenant's lists, as a key
//! event would). A token minted here is put into its list as the mint announced it
//! (`TokenList::with`); every other change reads the lists it touched, several in one query.
//!
//! The reconciliation reads only the token rows changed elsewhere (each row names the node that
//! last changed it), and of those the lists only where the published list does not show the
//! change (`TokenList::shows`). When a change made here may not have been published (events
//! were missed, or publishing failed), the gate is behind, and the next reconciliation
//! republishes every list instead.
//! One task publishes, and a payload equal to the last one is not sent again, so a newer list
//! is never overtaken by an older one. The lists one step changes reach the router in one
//! hand-over, which wakes the feeder's and the router's threads once, not once a list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use rumqttd::protocol::Publish;

use super::Gate;
use super::token_list::TokenList;
use crate::authority::offline_trust::StatusListToken;
use crate::authority::{LocalToken, Tenant};
use crate::metrics::RetainedTopic;

/// How far back the reconciliation looks beyond its last run: clocks of nodes differ a little.
const RECONCILE_OVERLAP_SECS: i64 = 5;

/// What lanyard last published on one of its retained topics.
#[derive(Debug)]
pub(crate) enum Retained {
    Jwks(Bytes),
    KeySchedule(Bytes),
    List(TokenList),
    StatusList(StatusList),
}

/// A system's Token Status List as published.
#[derive(Debug)]
pub(crate) struct StatusList {
    payload: Bytes,
    /// When it was signed.
    iat: i64,
    /// The indices it covers.
    len: i64,
    tenant_id: String,
    system_id: String,
}

impl Retained {
    fn payload(&self) -> &Bytes {
        match self {
            Retained::Jwks(payload) | Retained::KeySchedule(payload) => payload,
            Retained::List(list) => list.payload(),
            Retained::StatusList(list) => &list.payload,
        }
    }
}

impl Gate {
    /// Records a retained message of lanyard's own; the publish to make, unless the topic
    /// holds that message already.
    fn retain(&self, topic: String, message: Retained) -> Option<Publish> {
        let payload = message.payload().clone();
        let mut retained = self.retained.lock().expect("retained lock");
        if retained.get(&topic).map(Retained::payload) == Some(&payload) {
            return None;
        }
        self.metrics.retained_published(match message {
            Retained::Jwks(_) => RetainedTopic::Jwks,
            Retained::KeySchedule(_) => RetainedTopic::KeySchedule,
            Retained::List(_) => RetainedTopic::TokenList,
            Retained::StatusList(_) => RetainedTopic::StatusList,
        });
        retained.insert(topic.clone(), message);
        if let Some(mirror) = self.mirror.get() {
            // Under the lock: the mirror sees the changes in the order they were made.
            let _ = mirror.send((topic.clone(), payload.clone()));
        }
        Some(Publish::new(Bytes::from(topic), payload, true))
    }

    /// Hands every later change of lanyard's retained topics to `mirror` as well (an empty
    /// message: the topic was cleared), and answers every topic's message as it is now, for
    /// the mirror to start from. Set once.
    pub(crate) fn mirror_retained(
        &self,
        mirror: tokio::sync::mpsc::UnboundedSender<(String, Bytes)>,
    ) -> Vec<(String, Bytes)> {
        let retained = self.retained.lock().expect("retained lock");
        if self.mirror.set(mirror).is_err() {
            tracing::warn!("the retained topics are mirrored once only");
        }
        retained
            .iter()
            .map(|(topic, message)| (topic.clone(), message.payload().clone()))
            .collect()
    }

    /// lanyard's current message on one of its retained topics.
    pub(crate) fn current_retained(&self, topic: &str) -> Option<Bytes> {
        self.retained
            .lock()
            .expect("retained lock")
            .get(topic)
            .map(|message| message.payload().clone())
    }

    /// Publishes a tenant's JWKS, exactly the HTTP document, and its signed key schedule;
    /// returns whether the JWKS changed.
    pub(crate) async fn publish_jwks(&self, tenant: &Tenant) -> anyhow::Result<bool> {
        let keys = self.authority.keyring(tenant).await?;
        let slug = tenant.slug.as_str();
        let jwks = Bytes::from(keys.jwks.as_bytes().to_vec());
        let changed = self.retain(self.permissions.jwks_topic(slug), Retained::Jwks(jwks));
        let schedule = self.authority.key_schedule(tenant).await?;
        let schedule = Retained::KeySchedule(Bytes::from(schedule.jwt.clone()));
        let publishes: Vec<Publish> = changed
            .iter()
            .cloned()
            .chain(self.retain(self.permissions.key_schedule_topic(slug), schedule))
            .collect();
        self.publish_all(publishes).await;
        Ok(changed.is_some())
    }

    /// The retained message of a system's status list, signed now or recently.
    async fn status_list_message(
        &self,
        tenant: &Tenant,
        system_id: &str,
    ) -> anyhow::Result<Option<(String, Retained)>> {
        let list = self.authority.status_list(tenant, system_id).await?;
        Ok(list.map(|list| self.status_list_retained(tenant, system_id, &list)))
    }

    /// A signed status list as retained on its topic.
    fn status_list_retained(
        &self,
        tenant: &Tenant,
        system_id: &str,
        list: &StatusListToken,
    ) -> (String, Retained) {
        let topic = self
            .permissions
            .status_list_topic(tenant.slug.as_str(), system_id);
        let message = Retained::StatusList(StatusList {
            payload: Bytes::from(list.jwt.clone()),
            iat: list.iat,
            len: list.len,
            tenant_id: tenant.id.to_string(),
            system_id: system_id.to_owned(),
        });
        (topic, message)
    }

    /// Publishes again the status lists that have lived half their lifetime, so a device never
    /// holds one past its `exp` while it can reach the broker. The one step of a slow timer.
    pub async fn refresh_status_lists_once(&self) -> anyhow::Result<usize> {
        let half = (self.authority.settings().tokens.status_list_ttl.as_secs() / 2) as i64;
        let now = self.authority.now();
        let mut due = Lists::new();
        for message in self.retained.lock().expect("retained lock").values() {
            if let Retained::StatusList(list) = message
                && list.iat + half <= now
            {
                due.entry(list.tenant_id.clone())
                    .or_default()
                    .insert(list.system_id.clone());
            }
        }
        self.publish_lists(due).await
    }

    /// Publishes the lists of some of a tenant's systems (each named once), read together, and
    /// notes when each list's first token expires.
    pub(crate) async fn publish_token_lists(
        &self,
        tenant: &Tenant,
        system_ids: &[&str],
    ) -> anyhow::Result<()> {
        let lists = self
            .authority
            .systems_local_tokens(tenant, system_ids)
            .await?;
        let statuses = self.status_list_messages(tenant, system_ids).await?;
        let mut publishes = Vec::new();
        for ((system_id, tokens), status) in system_ids.iter().zip(lists).zip(statuses) {
            if let Some(next) = tokens.iter().filter_map(|t| t.listed_until).min() {
                self.note_expiry(next, &tenant.id, system_id);
            }
            let topic = self
                .permissions
                .token_list_topic(tenant.slug.as_str(), system_id);
            publishes.extend(self.retain(topic, Retained::List(TokenList::of(&tokens))));
            if let Some((topic, message)) = status {
                publishes.extend(self.retain(topic, message));
            }
        }
        self.publish_all(publishes).await;
        Ok(())
    }

    /// [`Gate::status_list_message`] of each system, in order. Many lists (at start, after a key
    /// change) are read and signed on as many tasks as there are cores: each signature is a
    /// fifth of a millisecond of one core.
    async fn status_list_messages(
        &self,
        tenant: &Tenant,
        system_ids: &[&str],
    ) -> anyhow::Result<Vec<Option<(String, Retained)>>> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        if system_ids.len() < 2 * workers {
            let mut messages = Vec::with_capacity(system_ids.len());
            for system_id in system_ids {
                messages.push(self.status_list_message(tenant, system_id).await?);
            }
            return Ok(messages);
        }
        let ids: Arc<Vec<String>> = Arc::new(system_ids.iter().map(|s| s.to_string()).collect());
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let (authority, tenant, ids) = (self.authority.clone(), tenant.clone(), ids.clone());
            tasks.spawn(async move {
                let mut signed = Vec::new();
                for i in (worker..ids.len()).step_by(workers) {
                    signed.push((i, authority.status_list(&tenant, &ids[i]).await?));
                }
                anyhow::Ok(signed)
            });
        }
        let mut lists = vec![None; ids.len()];
        while let Some(done) = tasks.join_next().await {
            for (i, list) in done?? {
                lists[i] = list;
            }
        }
        Ok(ids
            .iter()
            .zip(lists)
            .map(|(system_id, list)| {
                list.map(|list| self.status_list_retained(tenant, system_id, &list))
            })
            .collect())
    }

    fn note_expiry(&self, at: i64, tenant_id: &str, system_id: &str) {
        self.expiries
            .lock()
            .expect("expiries lock")
            .entry(at)
            .or_default()
            .insert((tenant_id.to_owned(), system_id.to_owned()));
    }

    /// Adds tokens minted here (tenant id, system, token; in the order minted) to their lists
    /// and publishes them, without reading the lists. Returns the systems whose lists must be
    /// read instead: those not published yet, or already showing one of the tokens.
    pub(crate) async fn add_minted(
        &self,
        minted: Vec<(String, String, Arc<LocalToken>)>,
    ) -> anyhow::Result<Lists> {
        let mut by_list: BTreeMap<(String, String), Vec<Arc<LocalToken>>> = BTreeMap::new();
        for (tenant_id, system_id, token) in minted {
            by_list
                .entry((tenant_id, system_id))
                .or_default()
                .push(token);
        }
        let mut unread = Lists::new();
        let mut publishes = Vec::new();
        for ((tenant_id, system_id), tokens) in by_list {
            let Some(tenant) = self.authority.tenant_by_id(&tenant_id).await? else {
                continue;
            };
            let topic = self
                .permissions
                .token_list_topic(tenant.slug.as_str(), &system_id);
            let status_topic = self
                .permissions
                .status_list_topic(tenant.slug.as_str(), &system_id);
            let current = {
                let retained = self.retained.lock().expect("retained lock");
                // A token beyond the published status list needs the list read: it grew.
                let covered = match retained.get(&status_topic) {
                    Some(Retained::StatusList(list)) => tokens
                        .iter()
                        .all(|t| t.status_idx.is_none_or(|idx| idx < list.len)),
                    _ => false,
                };
                match retained.get(&topic) {
                    Some(Retained::List(list)) if covered => Some(list.clone()),
                    _ => None,
                }
            };
            let extended = current
                .and_then(|list| tokens.iter().try_fold(list, |list, token| list.with(token)));
            let Some(list) = extended else {
                unread.entry(tenant_id).or_default().insert(system_id);
                continue;
            };
            for at in tokens.iter().filter_map(|t| t.listed_until) {
                self.note_expiry(at, &tenant_id, &system_id);
            }
            publishes.extend(self.retain(topic, Retained::List(list)));
        }
        self.publish_all(publishes).await;
        Ok(unread)
    }

    /// Every list of a tenant (after a key change, statuses may differ).
    pub(crate) async fn publish_tenant_lists(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let systems = self.authority.systems(tenant).await?;
        let ids: Vec<&str> = systems.iter().map(|(id, _)| id.as_str()).collect();
        self.publish_token_lists(tenant, &ids).await
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
        let mut due = Lists::new();
        {
            let mut expiries = self.expiries.lock().expect("expiries lock");
            let later = expiries.split_off(&(now + 1));
            for (tenant_id, system_id) in std::mem::replace(&mut *expiries, later)
                .into_values()
                .flatten()
            {
                due.entry(tenant_id).or_default().insert(system_id);
            }
        }
        self.publish_lists(due).await
    }

    /// Publishes the lists of the systems named, tenant by tenant (by id); returns how many.
    pub(crate) async fn publish_lists(&self, lists: Lists) -> anyhow::Result<usize> {
        let mut done = 0;
        for (tenant_id, system_ids) in lists {
            if let Some(tenant) = self.authority.tenant_by_id(&tenant_id).await? {
                let ids: Vec<&str> = system_ids.iter().map(String::as_str).collect();
                self.publish_token_lists(&tenant, &ids).await?;
                done += ids.len();
            }
        }
        Ok(done)
    }

    /// Brings the retained topics in line with the database: every tenant's JWKS, and the
    /// lists of systems changed elsewhere since the last run, or every list when this node fell
    /// behind on its own changes. The one step of the reconciliation, which is how changes
    /// made by another process reach the devices.
    pub async fn reconcile_once(&self) -> anyhow::Result<()> {
        let everything = self.behind.swap(false, Ordering::SeqCst);
        let done = self.reconcile(everything).await;
        if done.is_err() && everything {
            self.behind.store(true, Ordering::SeqCst);
        }
        done
    }

    async fn reconcile(&self, everything: bool) -> anyhow::Result<()> {
        let now = self.authority.now();
        // Advanced only after a run that completed: a database that was away for a while
        // leaves nothing behind.
        let since = *self.reconciled_at.lock().expect("reconcile lock") - RECONCILE_OVERLAP_SECS;
        let tenants = self.authority.tenants().await?;
        for tenant in &tenants {
            if self.publish_jwks(tenant).await? {
                // The keys changed and no announcement said so: act as on one.
                self.recheck(Some(&tenant.id), false).await;
                self.publish_tenant_lists(tenant).await?;
            } else if everything {
                self.publish_tenant_lists(tenant).await?;
            }
        }
        if everything {
            *self.reconciled_at.lock().expect("reconcile lock") = now;
            return Ok(());
        }
        // Only lists that do not show a change made elsewhere already are read: a change made
        // here was published as it happened.
        let mut unseen = Lists::new();
        let changes = self.authority.list_changes_since(since).await?;
        {
            let retained = self.retained.lock().expect("retained lock");
            for change in changes {
                let Some(tenant) = tenants.iter().find(|t| t.id == change.tenant_id) else {
                    continue;
                };
                let topic = self
                    .permissions
                    .token_list_topic(tenant.slug.as_str(), &change.system_id);
                let seen = match (retained.get(&topic), &change.token) {
                    (Some(Retained::List(list)), Some(token)) => {
                        list.shows(&token.id, token.activated, token.updated_at)
                    }
                    (Some(Retained::List(_)), None) => true,
                    _ => false,
                };
                if !seen {
                    unseen
                        .entry(change.tenant_id)
                        .or_default()
                        .insert(change.system_id);
                }
            }
        }
        // A status list kept from before the change must not be handed out again.
        for (tenant_id, systems) in &unseen {
            for system_id in systems {
                self.authority.forget_status_list(tenant_id, system_id);
            }
        }
        self.publish_lists(unseen).await?;
        *self.reconciled_at.lock().expect("reconcile lock") = now;
        Ok(())
    }
}

impl Gate {
    /// Clears the retained topics of tenants and systems that no longer exist (removed from the
    /// database by an operator), so no device keeps trusting a stale JWKS or list. The one step
    /// of a slower sweep.
    pub async fn clear_orphans_once(&self) -> anyhow::Result<usize> {
        let live = self.live_topics().await?;
        let orphans: Vec<String> = {
            let mut retained = self.retained.lock().expect("retained lock");
            let orphans: Vec<String> = retained
                .keys()
                .filter(|t| !live.contains(*t))
                .cloned()
                .collect();
            for topic in &orphans {
                retained.remove(topic);
                if let Some(mirror) = self.mirror.get() {
                    let _ = mirror.send((topic.clone(), Bytes::new()));
                }
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

impl Gate {
    /// Every retained topic of lanyard's that the database says should exist: each tenant's
    /// JWKS and key schedule, each system's token list and status list.
    pub(crate) async fn live_topics(&self) -> anyhow::Result<std::collections::HashSet<String>> {
        let mut live = std::collections::HashSet::new();
        for tenant in self.authority.tenants().await? {
            let slug = tenant.slug.as_str();
            live.insert(self.permissions.jwks_topic(slug));
            live.insert(self.permissions.key_schedule_topic(slug));
            for (system_id, _) in self.authority.systems(&tenant).await? {
                live.insert(self.permissions.token_list_topic(slug, &system_id));
                live.insert(self.permissions.status_list_topic(slug, &system_id));
            }
        }
        Ok(live)
    }
}

/// Lists to republish when their earliest token expires: expiry time → (tenant id, system).
pub(crate) type Expiries = BTreeMap<i64, BTreeSet<(String, String)>>;

/// Systems whose lists to publish: tenant id → system ids.
pub(crate) type Lists = BTreeMap<String, BTreeSet<String>>;
