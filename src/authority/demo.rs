//! The demo seed (SPEC §1): on a first start with an empty database and `[demo] seed = true`, a
//! `demo` tenant with a system, a role, a person holding that role on the system, a public app
//! client people sign in with (also on the web, from any loopback port), and a device client bound to the system, with a random secret.

use super::{Authority, NewClient, Result, Tenant};
use crate::crypto::Secret;
use crate::domain::web::RedirectUri;
use crate::domain::{ClientId, GrantType, ScopeSet, Slug, SystemId};
use crate::store::tenants;

pub const DEMO_SLUG: &str = "demo";
pub const DEMO_DEVICE_CLIENT: &str = "demo-device";
pub const DEMO_APP_CLIENT: &str = "demo-app";
pub const DEMO_USER_EMAIL: &str = "demo@example.com";
/// Where the demo app may send people back after signing in on the web (any loopback port).
pub const DEMO_APP_REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// What the seed created, for the start-up message. The secret exists nowhere else.
#[derive(Debug)]
pub struct DemoSeed {
    pub tenant: Tenant,
    pub system_id: SystemId,
    pub device_client_id: ClientId,
    pub device_secret: Secret,
    pub app_client_id: ClientId,
    pub user_email: String,
}

impl Authority {
    /// Seeds the demo tenant if seeding is on and the database holds no tenant yet.
    pub async fn seed_demo_if_empty(&self) -> Result<Option<DemoSeed>> {
        if !self.settings.demo.seed || tenants::count(&self.db).await? > 0 {
            return Ok(None);
        }
        let slug = Slug::parse(DEMO_SLUG).expect("a valid slug");
        let tenant = self.create_tenant(&slug, "Demo").await?;
        let system_id = self.create_system(&tenant, "Demo Gateway").await?;
        let device = self
            .create_client(
                &tenant,
                NewClient {
                    name: "Demo Gateway device".into(),
                    scopes: ScopeSet::default(),
                    grant_types: vec![GrantType::ClientCredentials],
                    system_id: Some(system_id.clone()),
                    client_id: Some(
                        ClientId::parse(DEMO_DEVICE_CLIENT).expect("a valid client id"),
                    ),
                    ..NewClient::default()
                },
            )
            .await?;
        let role = self.create_role(&tenant, "Domain Owner").await?;
        let user = self
            .create_user(
                &tenant,
                DEMO_USER_EMAIL,
                "Demo User",
                ScopeSet::default(),
                Default::default(),
            )
            .await?;
        self.assign_role(&tenant, &user.id, &system_id, &role.id)
            .await?;
        let app = self
            .create_client(
                &tenant,
                NewClient {
                    name: "Demo App".into(),
                    public: true,
                    // `cargo run --example web_app` on any port of the loopback address.
                    redirect_uris: vec![
                        RedirectUri::parse(DEMO_APP_REDIRECT_URI).expect("a valid redirect URI"),
                    ],
                    post_logout_redirect_uris: vec![
                        RedirectUri::parse("http://127.0.0.1/").expect("a valid redirect URI"),
                    ],
                    client_id: Some(ClientId::parse(DEMO_APP_CLIENT).expect("a valid client id")),
                    ..NewClient::default()
                },
            )
            .await?;
        Ok(Some(DemoSeed {
            tenant,
            system_id,
            device_client_id: device.client_id,
            device_secret: device
                .client_secret
                .expect("a confidential client has a secret"),
            app_client_id: app.client_id,
            user_email: user.email,
        }))
    }
}
