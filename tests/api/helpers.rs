//! `TestApp`: lanyard started the way `main` starts it, on a fresh database and free ports, with
//! a manual clock; plus the calls tests make over HTTP and a verifier that, like a resource
//! server, knows nothing but the JWKS.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard::app::App;
use lanyard::authority::{Authority, NewClient, Tenant};
use lanyard::config::Settings;
pub use lanyard::domain::{ClientId, LocalTokenId, RoleId, SystemId, UserId};
use lanyard::domain::{ManualClock, Slug};
use serde_json::Value;

/// Writes each test once and runs it on both databases:
/// `mod name { sqlite, postgres }`; the PostgreSQL run is skipped without `TEST_POSTGRES_URL`.
macro_rules! on_both_databases {
    ($(async fn $name:ident($app:ident) $body:block)+) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($app: $crate::helpers::TestApp) $body

            #[tokio::test]
            async fn sqlite() {
                run($crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await).await
            }

            #[tokio::test]
            async fn postgres() {
                match $crate::helpers::Backend::postgres_from_env() {
                    Some(backend) => run($crate::helpers::TestApp::spawn(backend).await).await,
                    None => eprintln!("TEST_POSTGRES_URL is not set: PostgreSQL run skipped"),
                }
            }
        }
    )+};
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn postgres_from_env() -> Option<Backend> {
        std::env::var("TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(Backend::Postgres)
    }
}

/// A fresh database URL for one test.
pub async fn database_url(backend: &Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/lanyard.db", dir.display()),
        Backend::Postgres(base) => {
            use sqlx::Connection;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            // Created at `now`: a later run drops it once it is an hour old.
            let name = format!("lanyard_t_{now}_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(base)
                .await
                .expect("TEST_POSTGRES_URL must reach a PostgreSQL server");
            drop_old_test_databases(&mut admin, now).await;
            let create = format!("CREATE DATABASE \"{name}\"");
            sqlx::query(&create)
                .execute(&mut admin)
                .await
                .expect("create a test database");
            let mut url = url::Url::parse(base).expect("TEST_POSTGRES_URL is a URL");
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
    }
}

/// Drops, once per test process, the test databases of earlier runs: those created more than an
/// hour ago (no test lasts that long). Best effort: one still in use is left.
async fn drop_old_test_databases(admin: &mut sqlx::PgConnection, now: u64) {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'lanyard\\_t\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name
            .strip_prefix("lanyard_t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        // Names without a time are of runs before times were written: old by now.
        if created.is_none_or(|at| at + 3600 < now) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .execute(&mut *admin)
                .await;
        }
    }
}

pub const PUBLIC_URL: &str = "http://lanyard.test";

pub struct TestApp {
    app: Option<App>,
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    pub dir: tempfile::TempDir,
}

/// A tenant with an admin client (all admin scopes), as `bootstrap` makes it.
pub struct TestTenant {
    pub tenant: Tenant,
    pub slug: String,
    pub admin_id: ClientId,
    pub admin_secret: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// As [`TestApp::spawn`], with settings adjusted by `configure`.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut settings = Settings::default();
        settings.http.listen = "127.0.0.1:0".parse().unwrap();
        settings.http.public_url = PUBLIC_URL.into();
        settings.mqtt.listen = Some("127.0.0.1:0".parse().unwrap());
        settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        settings.database.url = database_url(&backend, dir.path()).await;
        settings.database.max_connections = 5;
        settings.keys.encryption_key_file = dir.path().join("lanyard.kek");
        if let Backend::Postgres(_) = backend {
            // On PostgreSQL the key is given, never created (SPEC §14).
            let (_, text) = lanyard::crypto::KeyEncryptionKey::generate();
            std::fs::write(&settings.keys.encryption_key_file, text).unwrap();
        }
        settings.mailer.dir = dir.path().join("outbox");
        configure(&mut settings);
        Self::start(settings, dir).await
    }

    pub async fn start(settings: Settings, dir: tempfile::TempDir) -> TestApp {
        let clock = Arc::new(ManualClock::starting_now());
        let app = App::build_with_clock(settings.clone(), clock.clone())
            .await
            .expect("lanyard starts");
        TestApp {
            base: format!("http://{}", app.http_addr()),
            app: Some(app),
            http: reqwest::Client::new(),
            clock,
            settings,
            dir,
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    pub fn authority(&self) -> &Arc<Authority> {
        self.app().authority()
    }

    /// Stops the server for good.
    pub async fn stop(mut self) {
        self.app.take().expect("running").shutdown().await;
    }

    /// Stops the server and starts it again on the same database and settings.
    pub async fn restart(self) -> TestApp {
        self.restart_after(async {}).await
    }

    /// Stops the server, runs `meanwhile` (the server is down), and starts it again.
    pub async fn restart_after(
        mut self,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> TestApp {
        self.app.take().expect("running").shutdown().await;
        meanwhile.await;
        let clock = self.clock.clone();
        let app = App::build_with_clock(self.settings.clone(), clock)
            .await
            .expect("lanyard restarts");
        self.base = format!("http://{}", app.http_addr());
        self.app = Some(app);
        self
    }

    /// lanyard's own MQTT listener.
    pub fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.app().mqtt_addr().expect("an MQTT listener")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Bootstraps a tenant with an admin client.
    pub async fn tenant(&self, slug: &str) -> TestTenant {
        let out = self
            .authority()
            .bootstrap(&Slug::parse(slug).unwrap(), None)
            .await
            .expect("bootstrap");
        TestTenant {
            tenant: self.authority().tenant(slug).await.unwrap().unwrap(),
            slug: slug.into(),
            admin_id: ClientId::parse(&out.client_id).unwrap(),
            admin_secret: out.client_secret,
        }
    }

    /// Registers a client and returns its id and secret (empty for a public client).
    pub async fn client(&self, tenant: &TestTenant, new: NewClient) -> (ClientId, String) {
        let reg = self
            .authority()
            .create_client(&tenant.tenant, new)
            .await
            .expect("client registered");
        let secret = reg
            .client_secret
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        (reg.client_id, secret)
    }

    pub async fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        body: &str,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.expect("request sent")
    }

    /// A client_credentials token for this client, or panics with the error body.
    pub async fn token(&self, slug: &str, id: &str, secret: &str) -> String {
        let res = self
            .post_form(
                &format!("/t/{slug}/oauth2/token"),
                Some((id, secret)),
                "grant_type=client_credentials",
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "token request failed: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn admin_token(&self, t: &TestTenant) -> String {
        self.token(&t.slug, &t.admin_id, &t.admin_secret).await
    }

    /// Introspects `token` as the tenant's admin client.
    pub async fn introspect(&self, t: &TestTenant, token: &str) -> Value {
        let res = self
            .post_form(
                &format!("/t/{}/oauth2/introspect", t.slug),
                Some((&t.admin_id, &t.admin_secret)),
                &format!("token={}", urlencode(token)),
            )
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn is_active(&self, t: &TestTenant, token: &str) -> bool {
        self.introspect(t, token).await["active"] == Value::Bool(true)
    }

    pub async fn jwks(&self, slug: &str) -> Value {
        let res = self
            .http
            .get(self.url(&format!("/t/{slug}/.well-known/jwks.json")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn kids(&self, slug: &str) -> Vec<String> {
        self.jwks(slug).await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A client of `t` holding `scope`, as the authority sees a caller (no token needed).
pub fn client_caller(t: &TestTenant, scope: &str) -> lanyard::authority::Caller {
    lanyard::authority::Caller::new(
        t.tenant.clone(),
        lanyard::domain::AccessClaims::new(
            t.tenant.issuer.clone(),
            "caller".into(),
            t.slug.clone(),
            "caller".into(),
            scope.into(),
            0,
            i64::MAX,
            "caller".into(),
        ),
    )
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The JWS header of a token.
pub fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

/// Verifies a token as an independent resource server would: jsonwebtoken, the JWKS, the
/// expected issuer and audience. Returns the claims.
pub fn verify_with_jwks(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Value {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
    let set: JwkSet = serde_json::from_value(jwks.clone()).expect("a JWK set");
    let kid = decode_header(token).unwrap().kid.expect("a kid");
    let jwk = set.find(&kid).expect("the token's key is published");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("the token verifies with the JWKS")
        .claims
}

/// Says why a test did not run, past the test harness's capture of its output, so that
/// `.ci/run` sees it (and fails: every component it needs is installed there).
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// Whether `program` is on the PATH (a component a test needs).
pub fn installed(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free loopback port, for a process that must be told its port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process a test started (chromedriver, nginx, Caddy), killed when dropped.
pub struct Process(pub std::process::Child);

impl Process {
    /// Starts `command` and waits until it accepts connections on loopback `port`; `what`
    /// names it if it does not.
    pub async fn listening(mut command: std::process::Command, port: u16, what: &str) -> Process {
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let process = Process(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return process;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{what} did not listen on port {port}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lanyard on SQLite whose public URL is its own address, so that the status URIs in its
/// tokens reach it (the other tests' issuer is a name nothing resolves).
pub async fn reachable_app() -> TestApp {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.http.listen = addr;
        s.http.public_url = format!("http://{addr}");
    })
    .await
}

/// The Python environment `.ci/run` installs `tests/interop/requirements.txt` into; `None`
/// (the test skips, saying why) when there is none.
pub fn interop_python() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".cache/lanyard-py/bin/python"))
        .filter(|python| python.exists());
    if python.is_none() {
        skipped(
            "no ~/.cache/lanyard-py: python3 -m venv ~/.cache/lanyard-py && ~/.cache/lanyard-py/bin/pip install -r tests/interop/requirements.txt",
        );
    }
    python
}
