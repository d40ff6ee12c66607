//! The types and resolvers of the GraphQL schema. Each resolver takes the caller from the
//! request, calls one use-case (which checks who may) and maps the answer; the rules themselves
//! live in the authority.
//!
//! One file, past 500 lines, on purpose: it is the schema's table of contents, every type next
//! to the resolvers that return it, in the order `schema.graphql` (generated from it) lists them.

use std::sync::Arc;

use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions, InputObject, Json, Object, SimpleObject,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::authority::clients::Application;
use crate::authority::{self, Authority, Caller, LocalToken, LocalTokenStatus, NewClient};
use crate::domain::web::RedirectUri;
use crate::domain::{ClientId, GrantType as DomainGrant, KeyStatus as DomainKeyStatus, ScopeSet};

type Result<T> = std::result::Result<T, async_graphql::Error>;

fn error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

/// The authority's errors, mapped once.
fn mapped(e: authority::Error) -> async_graphql::Error {
    match e {
        authority::Error::NotFound(m) => error("NOT_FOUND", m),
        authority::Error::Conflict(m) => error("CONFLICT", m),
        authority::Error::Invalid(m) => error("BAD_USER_INPUT", m),
        authority::Error::Forbidden(m) => error("FORBIDDEN", m),
        authority::Error::Internal(e) => {
            // Logged here, once; the caller gets no internals.
            tracing::error!("graphql: {e:#}");
            error("INTERNAL", "the server could not complete the request")
        }
    }
}

/// A `clientId` argument: text that cannot be a client id is the caller's mistake.
fn client_id_input(text: &str) -> Result<ClientId> {
    ClientId::parse(text).map_err(|e| error("BAD_USER_INPUT", e.to_string()))
}

fn authority<'a>(ctx: &Context<'a>) -> &'a Arc<Authority> {
    ctx.data_unchecked::<Arc<Authority>>()
}

fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Caller> {
    ctx.data_opt::<Caller>().ok_or_else(|| {
        error(
            "UNAUTHENTICATED",
            "send a valid lanyard access token as Authorization: Bearer",
        )
    })
}

fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

#[derive(SimpleObject)]
pub struct CreatedLocalApiToken {
    /// The token: the local token prefix followed by a JWT.
    pub jwt: String,
    pub uuid: Uuid,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum LocalApiTokenStatus {
    Activated,
    Revoked,
}

#[derive(SimpleObject)]
pub struct LocalApiToken {
    pub uuid: Uuid,
    pub status: LocalApiTokenStatus,
    pub system_uuid: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub not_before: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub subject: TokenSubject,
    pub name: Option<String>,
    pub requested_device: Option<String>,
    /// Who minted it for its subject: the person a system was shared with, or whoever
    /// acted through token exchange.
    pub actor: Option<TokenActor>,
    /// The share it was minted under.
    pub share_uuid: Option<Uuid>,
}

/// The person a local token was minted for.
#[derive(SimpleObject)]
pub struct TokenSubject {
    pub uuid: Uuid,
    pub name: String,
}

/// Who acted for a token's subject (RFC 8693 §4.1).
#[derive(SimpleObject)]
pub struct TokenActor {
    /// A person's uuid, or a client's id.
    pub uuid: String,
    pub name: String,
    /// `USER` or `CLIENT`.
    #[graphql(name = "type")]
    pub kind: String,
}

/// A person as a share names them.
#[derive(SimpleObject)]
pub struct ShareParty {
    pub uuid: Uuid,
    pub name: String,
}

/// Some of a person's roles on a system, shared with another person (SPEC §11).
#[derive(SimpleObject)]
pub struct Share {
    pub uuid: Uuid,
    pub system_uuid: Uuid,
    pub owner: ShareParty,
    pub recipient: ShareParty,
    pub roles: Vec<Role>,
    /// `null`: until revoked.
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<authority::shares::Share> for Share {
    fn from(s: authority::shares::Share) -> Self {
        Share {
            uuid: Uuid::parse_str(&s.id).unwrap_or_default(),
            system_uuid: s.system_id.uuid(),
            owner: ShareParty {
                uuid: s.owner.id.uuid(),
                name: s.owner.name,
            },
            recipient: ShareParty {
                uuid: s.recipient.id.uuid(),
                name: s.recipient.name,
            },
            roles: s
                .roles
                .into_iter()
                .map(|r| Role {
                    uuid: r.id.uuid(),
                    name: r.name,
                })
                .collect(),
            expires_at: s.expires_at.map(time),
            created_at: time(s.created_at),
            revoked_at: s.revoked_at.map(time),
        }
    }
}

/// A tenant's grant of access to an application of another tenant (SPEC §11).
#[derive(SimpleObject)]
pub struct ApplicationAccess {
    pub host_tenant: String,
    pub app_name: String,
    pub app_version: String,
    pub scopes: Vec<String>,
    pub granted_at: DateTime<Utc>,
}

impl From<authority::applications::ApplicationGrant> for ApplicationAccess {
    fn from(g: authority::applications::ApplicationGrant) -> Self {
        ApplicationAccess {
            host_tenant: g.host_tenant,
            app_name: g.application.name,
            app_version: g.application.version,
            scopes: g.scopes.iter().map(ToString::to_string).collect(),
            granted_at: time(g.granted_at),
        }
    }
}

impl From<LocalToken> for LocalApiToken {
    fn from(t: LocalToken) -> Self {
        LocalApiToken {
            uuid: t.id.uuid(),
            status: match t.status {
                LocalTokenStatus::Activated => LocalApiTokenStatus::Activated,
                LocalTokenStatus::Revoked => LocalApiTokenStatus::Revoked,
            },
            system_uuid: t.system_id.uuid(),
            expires_at: t.expires_at.map(time),
            not_before: time(t.not_before),
            created_at: time(t.created_at),
            subject: TokenSubject {
                uuid: t.subject_id.uuid(),
                name: t.subject_name,
            },
            name: t.name,
            requested_device: t.requested_device,
            actor: t.actor.map(|a| TokenActor {
                uuid: a.id,
                name: a.name,
                kind: a.kind.to_owned(),
            }),
            share_uuid: t.share_id.and_then(|id| Uuid::parse_str(&id).ok()),
        }
    }
}

#[derive(SimpleObject)]
pub struct System {
    pub uuid: Uuid,
    pub name: String,
}

#[derive(SimpleObject)]
pub struct Role {
    pub uuid: Uuid,
    pub name: String,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct User {
    pub uuid: Uuid,
    pub email: String,
    pub name: String,
}

impl From<authority::User> for User {
    fn from(u: authority::User) -> Self {
        User {
            uuid: u.id.uuid(),
            email: u.email,
            name: u.name,
        }
    }
}

#[ComplexObject]
impl User {
    /// The person's token metadata, merged into userinfo. Needs `lanyard:token-metadata:read`.
    async fn metadata(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        let caller = caller(ctx)?;
        let metadata = authority(ctx)
            .user_metadata(caller, &self.uuid.into())
            .await
            .map_err(mapped)?;
        Ok(Json(serde_json::Value::Object(metadata)))
    }
}

/// A registered OAuth client.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub public: bool,
    pub scopes: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub system_uuid: Option<Uuid>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// The client that may exchange this client's tokens without an actor token.
    pub may_act: Option<String>,
    /// The application version whose credentials this client holds.
    pub app_name: Option<String>,
    pub app_version: Option<String>,
}

#[ComplexObject]
impl Client {
    /// The client's token metadata, carried by introspection answers as `client_metadata`.
    /// Needs `lanyard:token-metadata:read`.
    async fn metadata(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        let caller = caller(ctx)?;
        let metadata = authority(ctx)
            .client_metadata(caller, &client_id_input(&self.client_id)?)
            .await
            .map_err(mapped)?;
        Ok(Json(serde_json::Value::Object(metadata)))
    }
}

/// A change made in the tenant, or a token issued or revoked: who did what to what, and when.
#[derive(SimpleObject)]
pub struct AuditEvent {
    /// Its place in the tenant's order: the cursor for `auditEvents(after:)`.
    pub seq: i64,
    pub time: DateTime<Utc>,
    /// `client:ID`, `user:ID via client:ID`, `operator` (the command line) or `lanyard` (its
    /// own jobs).
    pub actor: String,
    /// `noun.verb`: `client.created`, `token.issued`, `key.invalidated`, …
    pub action: String,
    /// `kind:ID`, what the action was done to.
    pub target: String,
    pub outcome: String,
}

#[derive(SimpleObject)]
pub struct Scope {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum KeyStatus {
    Pending,
    Active,
    Retired,
    Invalidated,
}

impl From<DomainKeyStatus> for KeyStatus {
    fn from(s: DomainKeyStatus) -> Self {
        match s {
            DomainKeyStatus::Pending => KeyStatus::Pending,
            DomainKeyStatus::Active => KeyStatus::Active,
            DomainKeyStatus::Retired => KeyStatus::Retired,
            DomainKeyStatus::Invalidated => KeyStatus::Invalidated,
        }
    }
}

#[derive(SimpleObject)]
pub struct SigningKey {
    pub kid: String,
    pub status: KeyStatus,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum GrantType {
    ClientCredentials,
    Otp,
    RefreshToken,
    AuthorizationCode,
    /// RFC 8693 token exchange (SPEC §11).
    TokenExchange,
}

impl From<DomainGrant> for GrantType {
    fn from(g: DomainGrant) -> Self {
        match g {
            DomainGrant::ClientCredentials => GrantType::ClientCredentials,
            DomainGrant::Otp => GrantType::Otp,
            DomainGrant::RefreshToken => GrantType::RefreshToken,
            DomainGrant::AuthorizationCode => GrantType::AuthorizationCode,
            DomainGrant::TokenExchange => GrantType::TokenExchange,
        }
    }
}

impl From<GrantType> for DomainGrant {
    fn from(g: GrantType) -> Self {
        match g {
            GrantType::ClientCredentials => DomainGrant::ClientCredentials,
            GrantType::Otp => DomainGrant::Otp,
            GrantType::RefreshToken => DomainGrant::RefreshToken,
            GrantType::AuthorizationCode => DomainGrant::AuthorizationCode,
            GrantType::TokenExchange => DomainGrant::TokenExchange,
        }
    }
}

#[derive(InputObject)]
pub struct CreateClientInput {
    pub name: String,
    /// Default: none.
    pub scopes: Option<Vec<String>>,
    /// Default: CLIENT_CREDENTIALS for confidential clients; OTP, REFRESH_TOKEN and
    /// AUTHORIZATION_CODE for public.
    pub grant_types: Option<Vec<GrantType>>,
    /// A public client has no secret (an app on people's devices).
    pub public: Option<bool>,
    /// The system this client is the device of.
    pub system_uuid: Option<Uuid>,
    /// Where the authorization endpoint may send people back, compared as exact strings:
    /// `https://…`, `http://127.0.0.1:PORT/…` (any port when registered without one),
    /// `http://[::1]…`, `http://localhost…`, or a private-use scheme (`com.example.app:/cb`).
    pub redirect_uris: Option<Vec<String>>,
    /// Where logout may send people back; the same rules.
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// A client allowed to exchange this client's tokens without an actor token
    /// (impersonation, RFC 8693): the tokens issued to this client name it in `may_act`.
    pub may_act: Option<String>,
    /// An application's name and version (both or neither): the credentials of a
    /// confidential client that other tenants grant access to (SPEC §11).
    pub app_name: Option<String>,
    pub app_version: Option<String>,
}

fn redirect_uris(list: Option<Vec<String>>) -> Result<Vec<RedirectUri>> {
    list.unwrap_or_default()
        .iter()
        .map(|u| RedirectUri::parse(u).map_err(|e| error("BAD_USER_INPUT", e.to_string())))
        .collect()
}

#[derive(SimpleObject)]
pub struct ClientRegistration {
    pub client_id: String,
    /// Shown only here, only now.
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    /// 0: the secret does not expire.
    pub client_secret_expires_at: i64,
}

impl From<authority::ClientRegistration> for ClientRegistration {
    fn from(r: authority::ClientRegistration) -> Self {
        ClientRegistration {
            client_id: r.client_id.into(),
            client_secret: r.client_secret.map(|s| s.expose().to_owned()),
            client_id_issued_at: r.client_id_issued_at,
            client_secret_expires_at: r.client_secret_expires_at,
        }
    }
}

/// Who the caller is.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Principal {
    pub sub: String,
    pub client_id: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    /// For a person's token.
    pub user: Option<User>,
}

#[ComplexObject]
impl Principal {
    /// The roles the calling person holds on a system themselves (what they may share);
    /// empty for a client's token.
    async fn roles(&self, ctx: &Context<'_>, system_uuid: Uuid) -> Result<Vec<Role>> {
        let caller = caller(ctx)?;
        let Some(me) = caller.user_id() else {
            return Ok(Vec::new());
        };
        let roles = authority(ctx)
            .roles_on_system(&me, &crate::domain::SystemId::from(system_uuid))
            .await
            .map_err(mapped)?;
        Ok(roles
            .into_iter()
            .map(|r| Role {
                uuid: r.id.uuid(),
                name: r.name,
            })
            .collect())
    }

    /// The live shares a person received: systems they may mint local tokens for in another's
    /// name.
    async fn shares_received(&self, ctx: &Context<'_>) -> Result<Vec<Share>> {
        let caller = caller(ctx)?;
        let shares = authority(ctx)
            .shares_received(caller)
            .await
            .map_err(mapped)?;
        Ok(shares.into_iter().map(Into::into).collect())
    }
}

fn scopes(list: Option<Vec<String>>) -> Result<ScopeSet> {
    ScopeSet::parse(&list.unwrap_or_default().join(" "))
        .map_err(|e| error("BAD_USER_INPUT", e.to_string()))
}

pub struct Query;

#[Object]
impl Query {
    /// The system's local API tokens that have not expired. For people holding a role on it,
    /// and for tokens with `lanyard:local-tokens:read`.
    async fn local_api_tokens(
        &self,
        ctx: &Context<'_>,
        system_uuid: Uuid,
    ) -> Result<Vec<LocalApiToken>> {
        let caller = caller(ctx)?;
        let tokens = authority(ctx)
            .local_tokens(caller, &system_uuid.into())
            .await
            .map_err(mapped)?;
        Ok(tokens.into_iter().map(Into::into).collect())
    }

    /// The live shares of a system. For people holding a role on it, and for tokens with
    /// `lanyard:roles:read`.
    async fn shares(&self, ctx: &Context<'_>, system_uuid: Uuid) -> Result<Vec<Share>> {
        let caller = caller(ctx)?;
        let shares = authority(ctx)
            .shares(caller, &system_uuid.into())
            .await
            .map_err(mapped)?;
        Ok(shares.into_iter().map(Into::into).collect())
    }

    /// The applications of other tenants this tenant granted access. Needs
    /// `lanyard:applications:read`.
    async fn application_access(&self, ctx: &Context<'_>) -> Result<Vec<ApplicationAccess>> {
        let caller = caller(ctx)?;
        let grants = authority(ctx)
            .application_grants(caller)
            .await
            .map_err(mapped)?;
        Ok(grants.into_iter().map(Into::into).collect())
    }

    /// A registered client. Needs `lanyard:clients:read`.
    async fn client(&self, ctx: &Context<'_>, client_id: String) -> Result<Client> {
        let caller = caller(ctx)?;
        let c = authority(ctx)
            .client(caller, &client_id_input(&client_id)?)
            .await
            .map_err(mapped)?;
        Ok(Client {
            client_id: c.client_id.to_string(),
            name: c.name,
            public: c.public,
            scopes: c.scopes.iter().map(ToString::to_string).collect(),
            grant_types: c.grant_types.into_iter().map(Into::into).collect(),
            system_uuid: c.system_id.map(|s| s.uuid()),
            redirect_uris: c.redirect_uris.iter().map(ToString::to_string).collect(),
            post_logout_redirect_uris: c
                .post_logout_redirect_uris
                .iter()
                .map(ToString::to_string)
                .collect(),
            may_act: c.may_act.map(String::from),
            app_name: c.application.as_ref().map(|a| a.name.clone()),
            app_version: c.application.map(|a| a.version),
        })
    }

    /// A person of the tenant. Needs `lanyard:users:read`.
    async fn user(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<User> {
        let caller = caller(ctx)?;
        let user = authority(ctx)
            .read_user(caller, &uuid.into())
            .await
            .map_err(mapped)?;
        Ok(user.into())
    }

    /// Needs `lanyard:systems:read`.
    async fn systems(&self, ctx: &Context<'_>) -> Result<Vec<System>> {
        let caller = caller(ctx)?;
        let systems = authority(ctx).systems(caller).await.map_err(mapped)?;
        Ok(systems
            .into_iter()
            .map(|(id, name)| System {
                uuid: id.uuid(),
                name,
            })
            .collect())
    }

    /// Needs `lanyard:keys:read`.
    async fn signing_keys(&self, ctx: &Context<'_>) -> Result<Vec<SigningKey>> {
        let caller = caller(ctx)?;
        let keys = authority(ctx).signing_keys(caller).await.map_err(mapped)?;
        Ok(keys
            .into_iter()
            .map(|k| SigningKey {
                kid: k.kid,
                status: k.status.into(),
            })
            .collect())
    }

    /// The tenant's audit events after the one numbered `after` (0, the default: from the
    /// oldest kept), oldest first, at most `limit` (default 100, at most 500). Page by passing
    /// the last `seq` seen. Needs `lanyard:audit:read`.
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Vec<AuditEvent>> {
        let caller = caller(ctx)?;
        let events = authority(ctx)
            .audit_events(caller, after.unwrap_or(0), limit.unwrap_or(100))
            .await
            .map_err(mapped)?;
        Ok(events
            .into_iter()
            .map(|e| AuditEvent {
                seq: e.seq,
                time: time(e.time),
                actor: e.actor,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
            })
            .collect())
    }

    /// Who the caller is. Not for a delegation's token, which only mints.
    async fn me(&self, ctx: &Context<'_>) -> Result<Principal> {
        let caller = caller(ctx)?;
        if caller.delegation().is_some() {
            return Err(error(
                "FORBIDDEN",
                "a delegation's token only mints local API tokens for its system",
            ));
        }
        let user = match caller.user_id() {
            Some(id) => authority(ctx)
                .user(&caller.tenant, &id)
                .await
                .map_err(mapped)?
                .map(User::from),
            None => None,
        };
        Ok(Principal {
            sub: caller.claims.sub.clone(),
            client_id: caller.claims.client_id.clone(),
            tenant: caller.tenant.slug.to_string(),
            scopes: caller.scopes.iter().map(|s| s.to_string()).collect(),
            user,
        })
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Mints a token for a system you hold a role on, valid for `duration` (`15M`, `12H`,
    /// `1D`, `1W` or ISO 8601 like `PT12H`). On a system shared with you, it is minted in
    /// the sharer's name with the shared roles: under `shareUuid` when given, else under the
    /// one share of it you received (when you hold no role there yourself).
    async fn create_local_api_token(
        &self,
        ctx: &Context<'_>,
        system_uuid: Uuid,
        requested_device: Option<String>,
        duration: String,
        share_uuid: Option<Uuid>,
    ) -> Result<CreatedLocalApiToken> {
        let caller = caller(ctx)?;
        let share = share_uuid.map(|u| u.to_string());
        let minted = authority(ctx)
            .create_local_token(
                caller,
                &system_uuid.into(),
                requested_device.as_deref(),
                &duration,
                share.as_deref(),
            )
            .await
            .map_err(mapped)?;
        Ok(CreatedLocalApiToken {
            jwt: minted.token,
            uuid: minted.id.uuid(),
        })
    }

    /// Mints a token that never expires; `name` says what it is for. `shareUuid` as for
    /// `createLocalApiToken` (a share that expires mints no permanent token).
    async fn create_permanent_local_api_token(
        &self,
        ctx: &Context<'_>,
        system_uuid: Uuid,
        name: String,
        share_uuid: Option<Uuid>,
    ) -> Result<CreatedLocalApiToken> {
        let caller = caller(ctx)?;
        let share = share_uuid.map(|u| u.to_string());
        let minted = authority(ctx)
            .create_permanent_local_token(caller, &system_uuid.into(), &name, share.as_deref())
            .await
            .map_err(mapped)?;
        Ok(CreatedLocalApiToken {
            jwt: minted.token,
            uuid: minted.id.uuid(),
        })
    }

    /// Its subject may revoke a token, and so may a caller with `lanyard:local-tokens:write`.
    async fn revoke_local_api_token(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<LocalApiToken> {
        let caller = caller(ctx)?;
        let token = authority(ctx)
            .revoke_local_token(caller, &uuid.into())
            .await
            .map_err(mapped)?;
        Ok(token.into())
    }

    /// Shares some of your roles on a system with the person of this tenant whose email is
    /// `email`, until `expiresAt` (`null`: until revoked). Only roles you hold there yourself.
    async fn share_system(
        &self,
        ctx: &Context<'_>,
        system_uuid: Uuid,
        email: String,
        role_uuids: Vec<Uuid>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Share> {
        let caller = caller(ctx)?;
        let roles: Vec<crate::domain::RoleId> = role_uuids.into_iter().map(Into::into).collect();
        let share = authority(ctx)
            .share_system(
                caller,
                &system_uuid.into(),
                &email,
                &roles,
                expires_at.map(|t| t.timestamp()),
            )
            .await
            .map_err(mapped)?;
        Ok(share.into())
    }

    /// Revokes a share, and every token minted under it. The sharer may, and so may a caller
    /// with `lanyard:roles:write`.
    async fn revoke_share(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<Share> {
        let caller = caller(ctx)?;
        let share = authority(ctx)
            .revoke_share(caller, &uuid.to_string())
            .await
            .map_err(mapped)?;
        Ok(share.into())
    }

    /// Grants the application `appName`@`appVersion` of tenant `hostTenant` access to this
    /// tenant with `scopes` (replacing an earlier grant's). Needs
    /// `lanyard:applications:write` and every `lanyard:` scope granted.
    async fn grant_application_access(
        &self,
        ctx: &Context<'_>,
        host_tenant: String,
        app_name: String,
        app_version: String,
        scopes: Vec<String>,
    ) -> Result<ApplicationAccess> {
        let caller = caller(ctx)?;
        let application = Application::parse(&app_name, &app_version).map_err(mapped)?;
        let grant = authority(ctx)
            .grant_application_access(
                caller,
                &host_tenant,
                &application,
                &self::scopes(Some(scopes))?,
            )
            .await
            .map_err(mapped)?;
        Ok(grant.into())
    }

    /// Revokes an application's access: it gets no more technical tokens of this tenant, and
    /// those it holds stop working. Needs `lanyard:applications:write`.
    async fn revoke_application_access(
        &self,
        ctx: &Context<'_>,
        host_tenant: String,
        app_name: String,
        app_version: String,
    ) -> Result<bool> {
        let caller = caller(ctx)?;
        let application = Application::parse(&app_name, &app_version).map_err(mapped)?;
        authority(ctx)
            .revoke_application_access(caller, &host_tenant, &application)
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Needs `lanyard:systems:write`.
    async fn create_system(&self, ctx: &Context<'_>, name: String) -> Result<System> {
        let caller = caller(ctx)?;
        let id = authority(ctx)
            .create_system(caller, &name)
            .await
            .map_err(mapped)?;
        Ok(System {
            uuid: id.uuid(),
            name: name.trim().to_owned(),
        })
    }

    /// Needs `lanyard:roles:write`.
    async fn create_role(&self, ctx: &Context<'_>, name: String) -> Result<Role> {
        let caller = caller(ctx)?;
        let role = authority(ctx)
            .create_role(caller, &name)
            .await
            .map_err(mapped)?;
        Ok(Role {
            uuid: role.id.uuid(),
            name: role.name,
        })
    }

    /// Needs `lanyard:users:write`; the user gets only `lanyard:` scopes the caller holds (the
    /// tenant's own scopes freely).
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        email: String,
        name: String,
        scopes: Option<Vec<String>>,
    ) -> Result<User> {
        let caller = caller(ctx)?;
        let user = authority(ctx)
            .create_user(
                caller,
                &email,
                &name,
                self::scopes(scopes)?,
                Default::default(),
            )
            .await
            .map_err(mapped)?;
        Ok(user.into())
    }

    /// Sets one key of a person's token metadata (merged into userinfo). Needs
    /// `lanyard:token-metadata:write` and every `lanyard:` scope the person holds.
    async fn set_user_metadata(
        &self,
        ctx: &Context<'_>,
        user_uuid: Uuid,
        key: String,
        value: Json<serde_json::Value>,
    ) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .change_user_metadata(caller, &user_uuid.into(), &key, Some(value.0))
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Deletes one key of a person's token metadata; deleting a key that is not there is not
    /// an error. Needs what `setUserMetadata` needs.
    async fn delete_user_metadata(
        &self,
        ctx: &Context<'_>,
        user_uuid: Uuid,
        key: String,
    ) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .change_user_metadata(caller, &user_uuid.into(), &key, None)
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Sets one key of a client's token metadata (in introspection answers as
    /// `client_metadata`). Needs `lanyard:token-metadata:write` and every `lanyard:` scope the
    /// client holds.
    async fn set_client_metadata(
        &self,
        ctx: &Context<'_>,
        client_id: String,
        key: String,
        value: Json<serde_json::Value>,
    ) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .change_client_metadata(caller, &client_id_input(&client_id)?, &key, Some(value.0))
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Deletes one key of a client's token metadata. Needs what `setClientMetadata` needs.
    async fn delete_client_metadata(
        &self,
        ctx: &Context<'_>,
        client_id: String,
        key: String,
    ) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .change_client_metadata(caller, &client_id_input(&client_id)?, &key, None)
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Needs `lanyard:users:write`, and every `lanyard:` scope the user holds. The user's local
    /// tokens show as REVOKED and their sessions end.
    async fn delete_user(&self, ctx: &Context<'_>, uuid: Uuid) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .delete_user(caller, &uuid.into())
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Needs `lanyard:roles:write`.
    async fn assign_role(
        &self,
        ctx: &Context<'_>,
        user_uuid: Uuid,
        system_uuid: Uuid,
        role_uuid: Uuid,
    ) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .assign_role(
                caller,
                &user_uuid.into(),
                &system_uuid.into(),
                &role_uuid.into(),
            )
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Needs `lanyard:scopes:write`.
    async fn create_scope(
        &self,
        ctx: &Context<'_>,
        name: String,
        description: Option<String>,
    ) -> Result<Scope> {
        let caller = caller(ctx)?;
        let scope = authority(ctx)
            .create_scope(caller, &name, description.as_deref())
            .await
            .map_err(mapped)?;
        Ok(Scope {
            name: scope.to_string(),
            description,
        })
    }

    /// Needs `lanyard:clients:write`; the client gets only `lanyard:` scopes the caller holds
    /// (the tenant's own scopes freely). Binding it to a system (`systemUuid`) also needs
    /// `lanyard:local-tokens:read`. The secret is in the answer and nowhere else.
    async fn create_client(
        &self,
        ctx: &Context<'_>,
        input: CreateClientInput,
    ) -> Result<ClientRegistration> {
        let caller = caller(ctx)?;
        let new = NewClient {
            name: input.name,
            scopes: scopes(input.scopes)?,
            grant_types: input
                .grant_types
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            public: input.public.unwrap_or(false),
            system_id: input.system_uuid.map(Into::into),
            redirect_uris: redirect_uris(input.redirect_uris)?,
            post_logout_redirect_uris: redirect_uris(input.post_logout_redirect_uris)?,
            may_act: input.may_act.as_deref().map(client_id_input).transpose()?,
            application: match (input.app_name, input.app_version) {
                (None, None) => None,
                (Some(name), Some(version)) => {
                    Some(Application::parse(&name, &version).map_err(mapped)?)
                }
                _ => {
                    return Err(error(
                        "BAD_USER_INPUT",
                        "appName and appVersion go together",
                    ));
                }
            },
            ..NewClient::default()
        };
        let registration = authority(ctx)
            .create_client(caller, new)
            .await
            .map_err(mapped)?;
        Ok(registration.into())
    }

    /// Needs `lanyard:clients:write`, and every `lanyard:` scope the client holds.
    async fn rotate_client_secret(
        &self,
        ctx: &Context<'_>,
        client_id: String,
    ) -> Result<ClientRegistration> {
        let caller = caller(ctx)?;
        let registration = authority(ctx)
            .rotate_client_secret(caller, &client_id_input(&client_id)?)
            .await
            .map_err(mapped)?;
        Ok(registration.into())
    }

    /// Needs `lanyard:clients:write`, and every `lanyard:` scope the client holds. The client's
    /// tokens stop working and its MQTT sessions end.
    async fn delete_client(&self, ctx: &Context<'_>, client_id: String) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .delete_client(caller, &client_id_input(&client_id)?)
            .await
            .map_err(mapped)?;
        Ok(true)
    }

    /// Needs `lanyard:keys:write`. The new key is published at once and signs after
    /// `tokens.key_publish_ahead`.
    async fn rotate_signing_key(&self, ctx: &Context<'_>) -> Result<SigningKey> {
        let caller = caller(ctx)?;
        let key = authority(ctx)
            .rotate_signing_key(caller)
            .await
            .map_err(mapped)?;
        Ok(SigningKey {
            kid: key.kid,
            status: key.status.into(),
        })
    }

    /// Needs `lanyard:keys:write`. Withdraws the key from both JWKS at once.
    async fn invalidate_signing_key(&self, ctx: &Context<'_>, kid: String) -> Result<SigningKey> {
        let caller = caller(ctx)?;
        let key = authority(ctx)
            .invalidate_signing_key(caller, &kid)
            .await
            .map_err(mapped)?;
        Ok(SigningKey {
            kid: key.kid,
            status: key.status.into(),
        })
    }

    /// Needs `lanyard:keys:write`.
    async fn reactivate_signing_key(&self, ctx: &Context<'_>, kid: String) -> Result<SigningKey> {
        let caller = caller(ctx)?;
        let key = authority(ctx)
            .reactivate_signing_key(caller, &kid)
            .await
            .map_err(mapped)?;
        Ok(SigningKey {
            kid: key.kid,
            status: key.status.into(),
        })
    }

    /// Needs `lanyard:keys:write`. Final.
    async fn delete_signing_key(&self, ctx: &Context<'_>, kid: String) -> Result<bool> {
        let caller = caller(ctx)?;
        authority(ctx)
            .delete_signing_key(caller, &kid)
            .await
            .map_err(mapped)?;
        Ok(true)
    }
}
