//! The composition root: builds the store, the authority and the doors, binds the listeners and
//! runs the background jobs. `main`, the tests and the examples all start lanyard through
//! [`App::build`], which returns once the listeners are bound (port 0 picks free ports). It also
//! reads the open-file limit and splits it between the listeners ([`crate::connections`]), and
//! [`App::run_until_signalled`] holds the process to `limits.shutdown_timeout` after a signal.
//! With `metrics.listen` set it makes the process's [`Metrics`], hands them to the authority
//! and the doors, times every HTTP request, and serves `GET /metrics` on a listener of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authority::Authority;
use crate::authority::demo::DemoSeed;
use crate::config::Settings;
use crate::connections::{FileBudget, PerSource, Permits};
use crate::crypto::KeyEncryptionKey;
use crate::domain::{Clock, SystemClock};
use crate::metrics::Metrics;
use crate::mqtt::Broker;
use crate::store::{Db, signing_keys};

/// How often the key job runs (promotion after publish-ahead, scheduled rotation, pruning).
const KEY_JOB_PERIOD: Duration = Duration::from_secs(1);
/// How often expired revocations are forgotten.
const PRUNE_PERIOD: Duration = Duration::from_secs(600);
/// Connections the metrics listener holds at once (a Prometheus server keeps one).
const METRICS_CONNECTIONS: usize = 16;

pub struct App {
    http_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    broker: Broker,
    authority: Arc<Authority>,
    demo: Option<DemoSeed>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Builds everything and binds the listeners, on the system clock.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`App::build`], with the clock the use-cases see (tests move a `ManualClock`).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<App> {
        // rustls may see two crypto providers compiled in (lettre brings ring); use aws-lc-rs.
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mailer = crate::mailer::from_settings(&settings.mailer)?;
        let metrics = match settings.metrics.listen {
            Some(_) => Metrics::new(),
            None => Metrics::off(),
        };
        let authority = Arc::new(
            open_authority(settings, clock)
                .await?
                .with_mailer(mailer)
                .with_metrics(metrics.clone()),
        );
        let other_nodes = authority
            .listen_to_other_nodes()
            .await
            .context("listening to the other nodes' announcements (PostgreSQL LISTEN)")?;
        authority
            .maintain_keys_once()
            .await
            .context("key maintenance at start")?;
        let demo = authority
            .seed_demo_if_empty()
            .await
            .context("seeding the demo tenant")?;

        let listen = authority.settings().http.listen;
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!("http.listen: cannot listen on {listen}; choose a free address or port 0")
        })?;
        let http_addr = listener.local_addr()?;
        tracing::info!("http listening on {http_addr}");
        let metrics_listener = match authority.settings().metrics.listen {
            Some(listen) => Some(TcpListener::bind(listen).await.with_context(|| {
                format!(
                    "metrics.listen: cannot listen on {listen}; choose a free address or port 0, or leave it empty for no metrics"
                )
            })?),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                tracing::info!("metrics listening on {addr}");
                Some(addr)
            }
            None => None,
        };
        if matches!(authority.db(), Db::Sqlite { .. }) {
            tracing::info!(
                "database: SQLite, one node only; several nodes share a PostgreSQL database"
            );
        }

        let settings = authority.settings();
        let budget = FileBudget::at_start(
            settings.database.max_connections,
            settings.mqtt.max_connections,
        );
        tracing::info!("{}", budget.describe(settings.limits.connections_per_ip));
        let http_limits = crate::http::serve::Limits {
            permits: Permits::new(budget.http),
            per_source: PerSource::new(settings.limits.connections_per_ip),
            header_timeout: Duration::from_secs(settings.http.header_timeout.as_secs()),
            idle_timeout: Duration::from_secs(settings.http.idle_timeout.as_secs()),
        };

        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let broker = Broker::start(
            authority.clone(),
            metrics.clone(),
            budget.mqtt,
            stopped.clone(),
            &mut tasks,
        )
        .await?;
        if authority.settings().nats.enabled() {
            crate::nats::start(
                authority.clone(),
                metrics.clone(),
                broker.gate(),
                stopped.clone(),
                &mut tasks,
            )
            .await?;
        }
        let gate = broker.gate().clone();
        let mut router = crate::http::router(
            authority.clone(),
            Arc::new(move || gate.is_ready()),
            metrics.clone(),
        )
        .merge(crate::graphql::router(authority.clone(), metrics.clone()));
        if let Some(listener) = metrics_listener {
            router = router.layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                crate::metrics::time_requests,
            ));
            let db = authority.db().clone();
            metrics.sample_on_scrape(move |m| {
                for (pool, size, idle) in db.pool_sizes() {
                    m.set_db_pool(pool, size, idle);
                }
            });
            let metrics_limits = crate::http::serve::Limits {
                permits: Permits::new(METRICS_CONNECTIONS),
                per_source: PerSource::new(METRICS_CONNECTIONS as u32),
                header_timeout: http_limits.header_timeout,
                idle_timeout: http_limits.idle_timeout,
            };
            tasks.push(tokio::spawn(crate::http::serve::serve(
                listener,
                crate::metrics::router(metrics.clone()),
                metrics_limits,
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::http::serve::serve(
            listener,
            router,
            http_limits,
            stopped.clone(),
        )));
        if let Some(listener) = other_nodes {
            tasks.push(tokio::spawn(
                authority
                    .clone()
                    .follow_other_nodes(listener, stopped.clone()),
            ));
        }
        tasks.push(tokio::spawn(background_jobs(authority.clone(), stopped)));

        Ok(App {
            http_addr,
            metrics_addr,
            broker,
            authority,
            demo,
            stop,
            tasks,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The metrics listener's address (`GET /metrics`), unless `metrics.listen` is empty.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// lanyard's own MQTT listener; None when `mqtt.listen` is empty.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.broker.local_addr()
    }

    /// The MQTT-over-TLS listener's address, when `mqtt.tls_listen` is set.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.broker.tls_addr()
    }

    /// The MQTT gate, for its one-step jobs.
    pub fn mqtt(&self) -> &Arc<crate::mqtt::Gate> {
        self.broker.gate()
    }

    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// What the demo seed created on this start, if it ran.
    pub fn demo(&self) -> Option<&DemoSeed> {
        self.demo.as_ref()
    }

    /// Serves until ctrl-c or SIGTERM, then ends within `limits.shutdown_timeout` (SPEC §7):
    /// open requests and connections get three quarters of it to finish; at the end of it the
    /// process exits whatever is still running, even a thread that never returns.
    pub async fn run_until_signalled(self, signals: Signals) -> anyhow::Result<()> {
        signals.received().await;
        let limit =
            Duration::from_secs(self.authority.settings().limits.shutdown_timeout.as_secs());
        tracing::info!("shutting down (at most {}s)", limit.as_secs());
        exit_after(limit);
        if tokio::time::timeout(limit * 3 / 4, self.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown did not finish within limits.shutdown_timeout; ending what still runs"
            );
        }
        Ok(())
    }

    /// Stops the listeners and jobs and closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.authority.db().close().await;
    }
}

/// Opens the database (applying migrations), the key-encryption key and the authority: what
/// `serve` and the one-shot commands share.
pub async fn open_authority(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Authority> {
    let db = Db::connect(&settings.database.url, settings.database.max_connections).await?;
    db.migrate().await?;
    let kek = load_key_encryption_key(&settings, &db).await?;
    let authority = Authority::new(db, Arc::new(settings), clock, kek);
    authority.check_key_encryption_key().await?;
    Ok(authority)
}

/// The key-encryption key from `keys.encryption_key`, else from `keys.encryption_key_file`,
/// which is created (mode 0600) only on SQLite and only while the database holds no sealed key
/// yet: a lost key file must stop the start, not silently replace the key the stored keys were
/// sealed with. On PostgreSQL the key must be given: a file created on one node reaches no
/// other. Which key is the right one, the database's check value decides
/// ([`Authority::check_key_encryption_key`]).
async fn load_key_encryption_key(settings: &Settings, db: &Db) -> anyhow::Result<KeyEncryptionKey> {
    if !settings.keys.encryption_key.is_empty() {
        return Ok(KeyEncryptionKey::from_base64(
            settings.keys.encryption_key.expose(),
        )?);
    }
    let path = &settings.keys.encryption_key_file;
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("keys.encryption_key_file: cannot read {}", path.display()))?;
        return KeyEncryptionKey::from_base64(&text).with_context(|| {
            format!(
                "keys.encryption_key_file: {} does not hold a 32-byte base64 key",
                path.display()
            )
        });
    }
    if matches!(db, Db::Postgres { .. }) {
        bail!(
            "keys.encryption_key: on PostgreSQL a key-encryption key must be given, in keys.encryption_key (better: LANYARD_KEYS__ENCRYPTION_KEY) or in a file keys.encryption_key_file names; lanyard creates no key file there, since a file on one node reaches no other (make one with `openssl rand -base64 32`)"
        );
    }
    if signing_keys::any_sealed(db).await?.is_some() {
        bail!(
            "keys.encryption_key_file: {} does not exist, but the database holds sealed signing keys; restore the file or set keys.encryption_key to the key they were sealed with",
            path.display()
        );
    }
    let (kek, text) = KeyEncryptionKey::generate();
    write_private_file(path, &text)
        .with_context(|| format!("keys.encryption_key_file: cannot create {}", path.display()))?;
    tracing::info!("created key-encryption key file {}", path.display());
    Ok(kek)
}

fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

async fn background_jobs(authority: Arc<Authority>, mut stopped: watch::Receiver<bool>) {
    let mut keys = tokio::time::interval(KEY_JOB_PERIOD);
    let mut prune = tokio::time::interval(PRUNE_PERIOD);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = keys.tick() => {
                if let Err(e) = authority.maintain_keys_exclusively().await {
                    tracing::warn!("key maintenance: {e:#}");
                }
            }
            _ = prune.tick() => {
                if let Err(e) = authority.prune_codes_once().await {
                    tracing::warn!("pruning sign-in codes: {e:#}");
                }
                if let Err(e) = authority.prune_web_sign_in_once().await {
                    tracing::warn!("pruning web sign-in requests: {e:#}");
                }
                if let Err(e) = authority.prune_revocations_once().await {
                    tracing::warn!("pruning revocations: {e:#}");
                }
                if let Err(e) = authority.prune_audit_once().await {
                    tracing::warn!("pruning audit events: {e:#}");
                }
            }
        }
    }
}

/// Ends the process after `after`, from a thread of its own: the last resort of a shutdown,
/// should the runtime not get there by itself.
fn exit_after(after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("lanyard-exit".into())
        .spawn(move || {
            std::thread::sleep(after);
            eprintln!("lanyard: shutdown took too long; exiting");
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the shutdown deadline: {e}");
    }
}

/// SIGTERM and ctrl-c, listened for from the moment this is made: `serve` makes it before it
/// builds the app, so a signal that arrives while the app starts is not lost (nor does it end
/// the process the hard way).
pub struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn received(mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.terminate) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The start-up message after the demo seed: what to paste to try lanyard.
/// What to try first after the demo seed; the MQTT lines only with a listener (`mqtt_port`).
pub fn demo_instructions(seed: &DemoSeed, settings: &Settings, mqtt_port: Option<u16>) -> String {
    let issuer = &seed.tenant.issuer;
    let slug = &seed.tenant.slug;
    let lines = [
        String::new(),
        format!(
            "lanyard seeded the `{slug}` tenant with a system ({}), a device client bound to it, a person and an app.",
            seed.system_id
        ),
        "The secret below is shown only this once. Try:".into(),
        String::new(),
        format!(
            "  export CLIENT_ID={} CLIENT_SECRET={} SYSTEM={}",
            seed.device_client_id,
            seed.device_secret.expose(),
            seed.system_id
        ),
        format!(
            "  curl -s -u \"$CLIENT_ID:$CLIENT_SECRET\" -d grant_type=client_credentials {issuer}/oauth2/token"
        ),
        format!("  curl -s {issuer}/.well-known/jwks.json"),
        format!("  curl -s {issuer}/.well-known/openid-configuration"),
        String::new(),
        match mqtt_port {
            Some(port) => format!(
                "Over MQTT the token is the password; the tenant's JWKS is retained:\n\n  TOKEN=$(curl -s -u \"$CLIENT_ID:$CLIENT_SECRET\" -d grant_type=client_credentials {issuer}/oauth2/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\n  mosquitto_sub -h {} -p {port} -u \"$CLIENT_ID\" -P \"$TOKEN\" -t '{}/{slug}/jwks' -C 1\n",
                mqtt_host(settings),
                settings.mqtt.topic_prefix
            ),
            None => "lanyard's own MQTT listener is off (mqtt.listen is empty).\n".into(),
        },
        format!(
            "A person ({}) holds a role on the system and signs in with the app `{}`:",
            seed.user_email, seed.app_client_id
        ),
        String::new(),
        format!(
            "  curl -s -H 'content-type: application/json' -d '{{\"email\":\"{}\",\"client_id\":\"{}\"}}' {issuer}/auth/send-otp",
            seed.user_email, seed.app_client_id
        ),
        format!(
            "  # the code is in the newest file of {}",
            settings.mailer.dir.display()
        ),
        "  See the README (\"A person mints a local API token\") for the rest of the way.".into(),
        String::new(),
    ];
    lines.join("\n") + "\n"
}

/// The host a local client reaches the MQTT listener at.
fn mqtt_host(settings: &Settings) -> String {
    let ip = settings
        .mqtt
        .listen
        .map_or([127, 0, 0, 1].into(), |listen| listen.ip());
    if ip.is_unspecified() {
        "127.0.0.1".into()
    } else {
        ip.to_string()
    }
}
