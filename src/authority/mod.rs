//! Use-cases: the rules every door shares. Tenants and their signing keys, clients and scopes,
//! issuing and verifying access tokens, introspection and revocation, people and their sign-in,
//! roles on systems, local API tokens, and acting for others: shares of a system, token
//! exchange, applications other tenants grant access.
//!
//! Doors (`http/`, `graphql/`, `mqtt/`) call [`Authority`] and translate its answers; they never
//! touch the store or JWT code. Changes other parts must react to (a key rotated, a token revoked,
//! a client or person deleted, a role assigned, a system's token list changed) are announced as
//! [`Event`]s on a channel the doors subscribe to, and on PostgreSQL to the other nodes: the
//! authority never calls into a door. Mail goes out through the [`mail::Mailer`] port. This module
//! imports no web, GraphQL or MQTT framework.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::config::Settings;
use crate::crypto::KeyEncryptionKey;
use crate::domain::Clock;
use crate::metrics::Metrics;
use crate::store::{Db, StoreError};

pub mod applications;
pub mod audit;
pub mod cache;
pub mod caller;
pub mod clients;
pub mod demo;
pub mod exchange;
pub mod grants;
pub mod keys;
pub mod limiter;
pub mod local_tokens;
pub mod mail;
pub mod metadata;
pub mod offline_trust;
pub mod shares;
pub mod signin;
pub mod systems;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod web_sign_in;

pub use cache::keyring::KeyRings;
pub use cache::token_cache::KnownToken;
pub use caller::{Actor, Caller};
pub use clients::{ClientCredentials, ClientRegistration, NewClient};
pub use grants::{GrantRequest, IssuedToken};
pub use local_tokens::{LocalToken, LocalTokenStatus, MintedToken};
pub use tenants::Tenant;
pub use tokens::{TokenRejected, VerifiedAccessToken};
pub use users::{Role, User};

/// Something changed that other parts may need to act on. On PostgreSQL, events are also
/// announced to the other nodes, which act on them as on their own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The tenant's published keys or its signer changed (created, rotated, invalidated, …).
    KeysChanged { tenant_id: String, slug: String },
    /// An access token was revoked.
    AccessTokenRevoked { tenant_id: String, jti: String },
    /// A client was deleted; tokens it holds must stop working.
    ClientDeleted {
        tenant_id: String,
        client_id: String,
    },
    /// A client's secret was replaced; the old one must stop working.
    ClientSecretRotated {
        tenant_id: String,
        client_id: String,
    },
    /// A user was deleted; tokens issued to them must stop working.
    UserDeleted { tenant_id: String, user_id: String },
    /// A user was given a role on a system; tokens minted from now on carry it.
    RoleAssigned {
        tenant_id: String,
        user_id: String,
        system_id: String,
    },
    /// A share was revoked (SPEC §11): its delegations' tokens stop working.
    ShareRevoked { tenant_id: String, share_id: String },
    /// A tenant revoked or changed an application's access (SPEC §11): the technical tokens
    /// it issued to the application are checked again.
    ApplicationAccessChanged {
        tenant_id: String,
        /// The application: its host tenant's slug, name and version.
        host_tenant: String,
        app_name: String,
        app_version: String,
    },
    /// Announcements from other nodes may have been missed: whatever depends on them should be
    /// checked against the database.
    Resync,
    /// A system's list of local API tokens changed (a token minted or revoked, the system
    /// created).
    LocalTokensChanged {
        tenant_id: String,
        system_id: String,
        /// The token, as listed, when the change is that it was minted here: the list can take
        /// it in without being read again; shared, not copied, by every receiver. Not announced
        /// to other nodes.
        #[serde(skip)]
        minted: Option<Arc<LocalToken>>,
    },
}

impl Event {
    /// Whether this is a change of the access of the application `app` names (a technical
    /// token's claim).
    pub fn concerns_app(&self, app: Option<&crate::domain::claims::AppClaim>) -> bool {
        match (self, app) {
            (
                Event::ApplicationAccessChanged {
                    host_tenant,
                    app_name,
                    app_version,
                    ..
                },
                Some(app),
            ) => {
                &app.host_tenant == host_tenant
                    && &app.name == app_name
                    && &app.version == app_version
            }
            _ => false,
        }
    }
}

/// Errors of the management use-cases; each door maps them once to its own form.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Error::Conflict("it already exists".into()),
            StoreError::KeyEncryptionKeyReplaced => {
                Error::Internal(StoreError::KeyEncryptionKeyReplaced.into())
            }
            StoreError::Database(e) => Error::Internal(e.into()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The authority: what every door calls.
pub struct Authority {
    pub(crate) db: Db,
    pub(crate) settings: Arc<Settings>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) kek: KeyEncryptionKey,
    pub(crate) keyrings: KeyRings,
    pub(crate) auth_failures: limiter::WindowLimiter,
    /// Hosted sign-in pages (stored requests) opened per source address.
    pub(crate) sign_in_pages: limiter::WindowLimiter,
    pub(crate) token_cache: cache::token_cache::TokenCache,
    /// The revocation list, so verifying a token no one presented before asks no database.
    pub(crate) revoked: cache::revoked::RevokedTokens,
    pub(crate) mailer: Arc<dyn mail::Mailer>,
    /// What the use-cases record: signatures, tokens minted, tokens refused on verification.
    pub(crate) metrics: Arc<Metrics>,
    /// Tenants by slug. Tenants are never renamed or deleted, so an entry never goes stale;
    /// misses are not remembered, so a tenant created by another process is found.
    pub(crate) tenant_cache: RwLock<HashMap<String, Tenant>>,
    /// Client rows by (tenant id, client id), so authenticating a client or checking that a
    /// token's client exists costs no query. Dropped on deletion and secret rotation (here or on
    /// another node); misses are not remembered.
    pub(crate) client_cache:
        RwLock<HashMap<(String, String), Arc<crate::store::clients::ClientRow>>>,
    /// People's names and roles on systems, which every local API token carries.
    pub(crate) holdings: cache::holdings::Holdings,
    /// Live local tokens per person and system, against the cap.
    pub(crate) tally: cache::tally::Tally,
    /// Writes minted local tokens, those minted together in one statement; started at the
    /// first mint (it needs the runtime).
    pub(crate) local_token_inserts: std::sync::OnceLock<crate::store::local_tokens::Inserts>,
    /// Writes the events of access tokens issued, many together; started at the first.
    pub(crate) audit_recorder: std::sync::OnceLock<crate::store::audit::Recorder>,
    /// The group commit of authorization code redemptions, started at the first.
    pub(crate) redeemer: std::sync::OnceLock<crate::store::web_sign_in::Redeemer>,
    /// The delegations' tokens userinfo handed out (SPEC §11), while they live.
    pub(crate) delegations: cache::delegations::Delegations,
    /// Signed status lists and key schedules, and the status-list indices reserved here.
    pub(crate) offline: offline_trust::OfflineTrust,
    events: broadcast::Sender<Event>,
    /// This node (this process, while it runs): tells its announcements from the others', and
    /// the token rows it changed.
    node_id: String,
}

impl Authority {
    pub fn new(
        db: Db,
        settings: Arc<Settings>,
        clock: Arc<dyn Clock>,
        kek: KeyEncryptionKey,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Authority {
            db,
            settings,
            clock,
            kek,
            keyrings: KeyRings::default(),
            auth_failures: limiter::WindowLimiter::new(10, 60),
            sign_in_pages: limiter::WindowLimiter::new(
                web_sign_in::SIGN_IN_PAGES_PER_SOURCE,
                web_sign_in::SIGN_IN_REQUEST_TTL_SECS,
            ),
            token_cache: Default::default(),
            revoked: Default::default(),
            mailer: Arc::new(mail::NoMailer),
            metrics: Metrics::off(),
            tenant_cache: Default::default(),
            client_cache: Default::default(),
            holdings: Default::default(),
            tally: Default::default(),
            local_token_inserts: Default::default(),
            audit_recorder: Default::default(),
            redeemer: Default::default(),
            delegations: Default::default(),
            offline: Default::default(),
            events,
            node_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Sends mail through `mailer` (the one-shot commands send none).
    pub fn with_mailer(mut self, mailer: Arc<dyn mail::Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// Records into `metrics`, the database's connection waits too.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.db = self.db.measured(metrics.db_waits());
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// This node's id, new each time the process starts.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Changes as they happen in this process.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Acts on a change made here, and announces it to the other nodes.
    pub(crate) fn emit(&self, event: Event) {
        if matches!(self.db, Db::Postgres { .. }) {
            let announcement =
                serde_json::json!({ "node": self.node_id, "event": event }).to_string();
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::store::events::notify(&db, &announcement).await {
                    tracing::warn!("announcing a change to the other nodes: {e}");
                }
            });
        }
        self.apply(event);
    }

    /// Acts on a change: forgets what it makes stale, and tells this node's doors.
    fn apply(&self, event: Event) {
        match &event {
            Event::KeysChanged { tenant_id, .. } => {
                self.keyrings.forget(tenant_id);
                self.delegations.forget(|(tenant, ..)| tenant == tenant_id);
                // Invalidating or deleting a key revokes its local tokens.
                self.offline.forget_lists(Some(tenant_id), None);
                self.token_cache.forget(|k| &k.tenant.id == tenant_id);
            }
            Event::AccessTokenRevoked { tenant_id, jti } => {
                self.revoked.add(jti);
                self.delegations.forget_token(jti);
                self.token_cache
                    .forget(|k| &k.tenant.id == tenant_id && &k.verified.claims.jti == jti);
            }
            Event::ClientDeleted {
                tenant_id,
                client_id,
            } => {
                self.forget_client(tenant_id, client_id);
                // Its tokens, those it acted through, and the technical tokens other tenants
                // issued it.
                self.token_cache.forget(|k| {
                    let claims = &k.verified.claims;
                    (&k.tenant.id == tenant_id
                        && (&claims.client_id == client_id
                            || claims.act.as_ref().is_some_and(|a| a.names(client_id))))
                        || (&claims.client_id == client_id && claims.app.is_some())
                });
            }
            Event::ClientSecretRotated {
                tenant_id,
                client_id,
            } => self.forget_client(tenant_id, client_id),
            Event::UserDeleted { tenant_id, user_id } => {
                self.holdings.forget_user(tenant_id, user_id, None);
                self.delegations.forget(|(tenant, recipient, _, _)| {
                    tenant == tenant_id && recipient == user_id
                });
                self.offline.forget_lists(Some(tenant_id), None);
                // Their tokens, and the tokens they acted through.
                self.token_cache.forget(|k| {
                    let claims = &k.verified.claims;
                    &k.tenant.id == tenant_id
                        && (&claims.sub == user_id
                            || claims.act.as_ref().is_some_and(|a| a.names(user_id)))
                });
            }
            Event::ShareRevoked {
                tenant_id,
                share_id,
            } => {
                self.token_cache.forget(|k| {
                    &k.tenant.id == tenant_id && k.verified.claims.share.as_ref() == Some(share_id)
                });
                self.delegations
                    .forget(|(tenant, _, _, share)| tenant == tenant_id && share == share_id);
            }
            Event::ApplicationAccessChanged { tenant_id, .. } => self.token_cache.forget(|k| {
                &k.tenant.id == tenant_id && event.concerns_app(k.verified.claims.app.as_ref())
            }),
            Event::RoleAssigned {
                tenant_id,
                user_id,
                system_id,
            } => self
                .holdings
                .forget_user(tenant_id, user_id, Some(system_id)),
            Event::LocalTokensChanged {
                tenant_id,
                system_id,
                minted: None,
            } => self.offline.forget_lists(Some(tenant_id), Some(system_id)),
            Event::LocalTokensChanged { .. } => {}
            Event::Resync => {
                self.client_cache.write().expect("client cache").clear();
                self.delegations.forget(|_| true);
                self.holdings.forget_all();
                self.keyrings.forget_all();
                self.offline.forget_lists(None, None);
                self.revoked.reset();
                self.token_cache.forget(|_| true);
            }
        }
        // No receiver is not an error: nobody needs to hear of it yet.
        let _ = self.events.send(event);
    }

    /// Starts listening to the other nodes' announcements: `None` on SQLite (a single node).
    /// Done before the doors open, so nothing they remember can have missed one.
    pub async fn listen_to_other_nodes(&self) -> Result<Option<crate::store::events::Listener>> {
        Ok(crate::store::events::Listener::connect(&self.db).await?)
    }

    /// Acts on the changes other nodes announce through `listener`, until `stopped`. A lost
    /// connection may lose announcements: the doors then hear [`Event::Resync`] and re-check
    /// what they hold.
    pub async fn follow_other_nodes(
        self: Arc<Self>,
        mut listener: crate::store::events::Listener,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let received = tokio::select! {
                _ = stopped.changed() => return,
                r = listener.recv() => r,
            };
            match received {
                Ok(Some(payload)) => {
                    #[derive(serde::Deserialize)]
                    struct Announcement {
                        node: String,
                        event: Event,
                    }
                    match serde_json::from_str::<Announcement>(&payload) {
                        Ok(a) if a.node == self.node_id => {}
                        Ok(a) => self.apply(a.event),
                        Err(e) => tracing::warn!("an announcement that is not one: {e}"),
                    }
                }
                Ok(None) => self.apply(Event::Resync),
                Err(e) => {
                    tracing::warn!("listening to the other nodes: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Readiness: the database answers.
    pub async fn ready(&self) -> Result<()> {
        self.db.ping().await?;
        Ok(())
    }
}

/// Display names: 1 to 200 characters, no control characters.
pub(crate) fn validate_name(name: &str) -> Result<&str> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 || trimmed.chars().any(char::is_control)
    {
        return Err(Error::Invalid(
            "a name must be 1 to 200 characters without control characters".into(),
        ));
    }
    Ok(trimmed)
}
