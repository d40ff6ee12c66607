//! The settings tree (SPEC §1): defaults in code, then the TOML file (`broker.toml`, or the one
//! `--config` / `LANYARD_CONFIG` names), then `LANYARD_<SECTION>__<KEY>` environment overrides.
//!
//! Every section refuses unknown keys, naming them; every value is parsed into its domain type
//! here, so a config that cannot work stops the start with a message naming the key and what to
//! do. The shipped `broker.toml` documents every key; a test keeps the two in step.
//!
//! One file, past 500 lines, on purpose: the tree, its defaults and the checks that need more
//! than one key are read together when a setting is added; its tests are the last part.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::Period;
use crate::domain::acl::{AclRule, Permissions};
use crate::domain::topic::TopicPrefix;

/// The config file used when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "broker.toml";
const ENV_PREFIX: &str = "LANYARD_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub keys: KeySettings,
    pub mqtt: MqttSettings,
    pub tokens: TokenSettings,
    pub web: WebSettings,
    pub mailer: MailerSettings,
    pub demo: DemoSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub audit: AuditSettings,
    pub metrics: MetricsSettings,
    pub nats: NatsSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// The base of every issuer: `iss = "{public_url}/t/{slug}"`.
    pub public_url: String,
    /// A connection must send a request's headers within this time, and then its body within
    /// as long again (SPEC §7).
    pub header_timeout: Period,
    /// An idle keep-alive connection is closed after this time.
    pub idle_timeout: Period,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: ([127, 0, 0, 1], 8080).into(),
            public_url: "http://127.0.0.1:8080".into(),
            header_timeout: Period::from_secs(10),
            idle_timeout: Period::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (file and folder created) or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://data/lanyard.db".into(),
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// The key-encryption key, 32 bytes in base64 (checked at load). Prefer
    /// `LANYARD_KEYS__ENCRYPTION_KEY`. Empty: use (or, on an empty database, create)
    /// `encryption_key_file`.
    pub encryption_key: SecretSetting,
    pub encryption_key_file: PathBuf,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            encryption_key: SecretSetting::default(),
            encryption_key_file: PathBuf::from("data/lanyard.kek"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// lanyard's own MQTT listener; empty (`None`): none, for a lanyard that serves a NATS
    /// cluster instead (SPEC §13).
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
    pub topic_prefix: TopicPrefix,
    /// The largest packet a client may send, in bytes.
    pub max_packet_size: u32,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout: Period,
    /// Connections beyond this many are closed at once; the open-file budget may lower it
    /// (see `connections`).
    pub max_connections: u32,
    /// An MQTT-over-TLS listener, e.g. `0.0.0.0:8883`; empty (`None`): none.
    #[serde(with = "optional_address")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and private key of the TLS listener.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// A connection whose unsent output passes this many bytes is ended (SPEC §7).
    pub max_queued_bytes: u64,
    /// How long a 3.1.1 persistent session is kept after its client leaves; 5.0 clients say
    /// it themselves (Session Expiry Interval), up to this long.
    pub session_expiry: Period,
    /// Topic permissions beyond the built-in ones (SPEC §4).
    pub acl: Vec<AclRule>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            listen: Some(([0, 0, 0, 0], 1883).into()),
            topic_prefix: TopicPrefix::parse("drivr/v1").expect("a valid prefix"),
            max_packet_size: 256 * 1024,
            connect_timeout: Period::from_secs(10),
            max_connections: 100_000,
            tls_listen: None,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            max_queued_bytes: 16 * 1024 * 1024,
            session_expiry: Period::from_secs(86_400),
            acl: Vec::new(),
        }
    }
}

impl MqttSettings {
    /// The permission rules, built-in and configured. `validate` has already checked them.
    pub fn permissions(&self) -> Permissions {
        Permissions::new(self.topic_prefix.as_str(), self.acl.clone()).expect("validated at load")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    pub access_token_ttl: Period,
    pub local_token_prefix: String,
    pub max_local_token_duration: Period,
    /// A new key is published this long before it signs.
    pub key_publish_ahead: Period,
    pub key_rotation_interval: Period,
    /// How long a refresh token may wait to be used; each use gives a new one.
    pub refresh_token_ttl: Period,
    /// The unexpired, unrevoked local API tokens one person may hold on one system.
    pub max_local_tokens_per_system: u32,
    /// How long a revoked permanent local API token stays in its system's list.
    pub revoked_listing: Period,
    /// How long a signed token status list is valid (`exp` - `iat`); a fresh one is signed
    /// before half of it has passed (SPEC §10).
    pub status_list_ttl: Period,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            access_token_ttl: Period::from_secs(3_600),
            local_token_prefix: "CLOUD-".into(),
            max_local_token_duration: Period::from_secs(30 * 86_400),
            key_publish_ahead: Period::from_secs(600),
            key_rotation_interval: Period::from_secs(90 * 86_400),
            refresh_token_ttl: Period::from_secs(30 * 86_400),
            max_local_tokens_per_system: 50,
            revoked_listing: Period::from_secs(30 * 86_400),
            status_list_ttl: Period::from_secs(86_400),
        }
    }
}

/// Sign-in on the web (SPEC §9).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// How long a browser stays signed in after the hosted page: a later authorization
    /// request within it needs no code.
    pub session_ttl: Period,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            session_ttl: Period::from_secs(12 * 3_600),
        }
    }
}

/// Prometheus metrics (SPEC §14).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `GET /metrics` is served; empty (`None`): no metrics listener, and nothing is
    /// recorded.
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: Some(([127, 0, 0, 1], 9464).into()),
        }
    }
}

/// What keeps one source or one slow request from taking the service from others (SPEC §7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Open connections one source address may hold on each listener.
    pub connections_per_ip: u32,
    /// After SIGTERM, the process ends within this time whatever is still running.
    pub shutdown_timeout: Period,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            connections_per_ip: 1_000,
            shutdown_timeout: Period::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailerKind {
    /// One `.eml` file per message in `mailer.dir`.
    File,
    /// Sent through an SMTP server (`smtp_*` keys).
    Smtp,
    /// Messages are written to the log: development only.
    Log,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailerSettings {
    pub kind: MailerKind,
    pub dir: PathBuf,
    /// The sender of every message.
    pub from: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_username: String,
    /// Prefer `LANYARD_MAILER__SMTP_PASSWORD`.
    pub smtp_password: SecretSetting,
    pub smtp_security: SmtpSecurity,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Upgrade a plain connection (the default, port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only for a relay on the same host.
    None,
}

impl Default for MailerSettings {
    fn default() -> Self {
        MailerSettings {
            kind: MailerKind::File,
            dir: PathBuf::from("data/outbox"),
            from: "lanyard <no-reply@localhost>".into(),
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_username: String::new(),
            smtp_password: SecretSetting::default(),
            smtp_security: SmtpSecurity::Starttls,
        }
    }
}

/// A secret in the settings (the key-encryption key, the SMTP password): read with
/// [`SecretSetting::expose`], shown as `<redacted>` everywhere else (`Debug`, `lanyard config`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretSetting(String);

impl SecretSetting {
    pub fn new(text: impl Into<String>) -> Self {
        SecretSetting(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { "<redacted>" }
    }
}

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl Serialize for SecretSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// The NATS cluster lanyard serves as auth callout, publisher of the retained topics and
/// enforcer (SPEC §13). Off while `url` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// The cluster's NATS client URLs, comma-separated (`nats://10.0.0.1:4222,nats://…`).
    pub url: String,
    /// The callout's user: a user of the callout account, listed in `auth_callout.auth_users`.
    pub callout_user: String,
    /// Prefer `LANYARD_NATS__CALLOUT_PASSWORD`.
    pub callout_password: SecretSetting,
    /// The account nkey seed (`SA…`) the callout signs its answers with; its public key is
    /// `auth_callout.issuer`. Prefer `LANYARD_NATS__ISSUER_SEED`.
    pub issuer_seed: SecretSetting,
    /// A user of the system account, which finds and ends connections (CONNZ, KICK).
    pub system_user: String,
    /// Prefer `LANYARD_NATS__SYSTEM_PASSWORD`.
    pub system_password: SecretSetting,
    /// The cluster's MQTT listeners, comma-separated `host:port`: the publisher of the
    /// retained topics connects to the first that answers.
    pub mqtt_url: String,
    /// The publisher's user in each tenant's account (`{account}` is replaced): a config user,
    /// listed in `auth_callout.auth_users`, so its retained messages survive a config reload.
    pub publisher_user: String,
    /// Prefer `LANYARD_NATS__PUBLISHER_PASSWORD`.
    pub publisher_password: SecretSetting,
    /// The cluster's `max_payload`: a retained message larger than this is not published
    /// (NATS would close the publisher's connection), and is logged.
    pub max_payload: u32,
    /// Tenant slug → the NATS account its principals are placed in. A tenant not listed cannot
    /// connect through the cluster.
    pub accounts: std::collections::BTreeMap<String, String>,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: String::new(),
            callout_user: "lanyard".into(),
            callout_password: SecretSetting::default(),
            issuer_seed: SecretSetting::default(),
            system_user: "lanyard-system".into(),
            system_password: SecretSetting::default(),
            mqtt_url: String::new(),
            publisher_user: "lanyard-{account}".into(),
            publisher_password: SecretSetting::default(),
            max_payload: 1024 * 1024,
            accounts: std::collections::BTreeMap::new(),
        }
    }
}

impl NatsSettings {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The NATS client URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The publisher's user name in `account`.
    pub fn publisher_user(&self, account: &str) -> String {
        self.publisher_user.replace("{account}", account)
    }

    /// The MQTT listeners, in order.
    pub fn mqtt_addresses(&self) -> Vec<(String, u16)> {
        self.mqtt_url
            .split(',')
            .filter_map(|a| {
                let a = a.trim();
                let a = a.strip_prefix("mqtt://").unwrap_or(a);
                let (host, port) = a.rsplit_once(':')?;
                Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        for (key, value) in [
            ("callout_user", self.callout_user.as_str()),
            ("system_user", self.system_user.as_str()),
            ("mqtt_url", self.mqtt_url.as_str()),
        ] {
            if value.is_empty() {
                return Err(invalid(format!(
                    "nats.url is set: nats.{key} is needed too"
                )));
            }
        }
        for url in self.urls() {
            let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
                return Err(invalid(format!(
                    "nats.url: {url:?} is not a NATS URL like \"nats://10.0.0.1:4222\""
                )));
            };
            // Credentials go in their own keys, which are redacted; a URL is logged and shown.
            if addr.has_user_pass() || url.contains('@') {
                return Err(invalid(
                    "nats.url must not hold credentials: use nats.callout_user and nats.callout_password",
                ));
            }
        }
        for (key, secret) in [
            ("callout_password", &self.callout_password),
            ("system_password", &self.system_password),
            ("publisher_password", &self.publisher_password),
        ] {
            if secret.is_empty() {
                return Err(invalid(format!(
                    "nats.url is set: nats.{key} is needed too (better: LANYARD_NATS__{})",
                    key.to_uppercase()
                )));
            }
        }
        if self.max_payload < 1024 {
            return Err(invalid("nats.max_payload must be at least 1024 bytes"));
        }
        if !self.publisher_user.contains("{account}") {
            return Err(invalid(
                "nats.publisher_user must contain {account}: each tenant's account has its own publisher user",
            ));
        }
        let seed = self.issuer_seed.expose();
        if !seed.starts_with("SA") || nkeys::KeyPair::from_seed(seed).is_err() {
            return Err(invalid(
                "nats.issuer_seed must be an account nkey seed (SA…, e.g. from `nsc generate nkey --account`)",
            ));
        }
        if self.mqtt_addresses().len() != self.mqtt_url.split(',').count() {
            return Err(invalid(format!(
                "nats.mqtt_url = {:?} must list host:port addresses, comma-separated",
                self.mqtt_url
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (slug, account) in &self.accounts {
            crate::domain::slug::Slug::parse(slug)
                .map_err(|e| invalid(format!("nats.accounts: {e}")))?;
            if account.is_empty()
                || !account
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(format!(
                    "nats.accounts.{slug} = {account:?} must be a NATS account name of letters, digits, '-' and '_'"
                )));
            }
            if !seen.insert(account) {
                return Err(invalid(format!(
                    "nats.accounts: account {account:?} is named for two tenants; each tenant needs its own"
                )));
            }
        }
        Ok(())
    }
}

/// `mqtt.listen`, `mqtt.tls_listen`, `metrics.listen`: an address, or the empty string for none.
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&addr.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "{text:?} is not an address like \"127.0.0.1:9464\" (leave it empty for no listener)"
            ))
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// How long audit events are kept.
    pub retention: Period,
    /// Record every access token issued (on by default; local API tokens are always recorded,
    /// with the token). Off leaves access tokens out of the trail; the benchmark compares the
    /// two.
    pub token_issuance: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention: Period::from_secs(90 * 86_400),
            token_issuance: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (for people) or `json` (one object a line, for a log stack). What is logged,
    /// `RUST_LOG` says.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// Seed the `demo` tenant on a first start with an empty database.
    pub seed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Where the settings come from.
pub struct Sources<'a> {
    /// An explicitly named file must exist; without one, `broker.toml` is used if present.
    pub file: Option<&'a Path>,
    /// The environment, as `(name, value)` pairs.
    pub env: Vec<(String, String)>,
}

impl Settings {
    /// Loads and validates the settings from their sources.
    pub fn load(sources: Sources<'_>) -> Result<Settings, ConfigError> {
        let mut table = match sources.file {
            Some(path) => read_table(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_table(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, &sources.env)?;
        Self::from_table(table)
    }

    /// Parses settings from TOML text (defaults fill what it omits).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(format!("not valid TOML: {}", e.message())))?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Settings, ConfigError> {
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().message().to_owned();
                if path == "." {
                    invalid(inner)
                } else {
                    invalid(format!("{path}: {inner}"))
                }
            })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.http.public_url).map_err(|e| {
            invalid(format!(
                "http.public_url = {:?} is not a URL ({e}); set it to the address clients use, like \"http://127.0.0.1:8080\"",
                self.http.public_url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(invalid(format!(
                "http.public_url = {:?} must be an http(s) URL with a host and no query or fragment",
                self.http.public_url
            )));
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(format!(
                "database.url = {db:?} is not supported; use \"sqlite://PATH\" or \"postgres://USER@HOST/DB\""
            )));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections must be at least 1"));
        }
        Permissions::new(self.mqtt.topic_prefix.as_str(), self.mqtt.acl.clone())
            .map_err(invalid)?;
        if self.mqtt.max_packet_size < 1024 || self.mqtt.max_packet_size > 16 * 1024 * 1024 {
            return Err(invalid(
                "mqtt.max_packet_size must be between 1024 and 16777216 bytes",
            ));
        }
        if self.mqtt.connect_timeout.as_secs() == 0 || self.mqtt.connect_timeout.as_secs() > 300 {
            return Err(invalid("mqtt.connect_timeout must be between 1s and 5m"));
        }
        if self.mqtt.tls_listen.is_some()
            && (self.mqtt.tls_cert_file.is_empty() || self.mqtt.tls_key_file.is_empty())
        {
            return Err(invalid(
                "mqtt.tls_listen needs mqtt.tls_cert_file and mqtt.tls_key_file (PEM files)",
            ));
        }
        if self.mqtt.max_connections == 0 {
            return Err(invalid("mqtt.max_connections must be at least 1"));
        }
        if self.mqtt.max_queued_bytes < 64 * 1024 {
            return Err(invalid("mqtt.max_queued_bytes must be at least 65536"));
        }
        if self.http.header_timeout.as_secs() == 0 || self.http.idle_timeout.as_secs() == 0 {
            return Err(invalid(
                "http.header_timeout and http.idle_timeout must be at least 1s",
            ));
        }
        if self.limits.connections_per_ip == 0 {
            return Err(invalid("limits.connections_per_ip must be at least 1"));
        }
        if self.audit.retention.as_secs() < 86_400 {
            return Err(invalid("audit.retention must be at least 1D"));
        }
        if self.limits.shutdown_timeout.as_secs() == 0 {
            return Err(invalid("limits.shutdown_timeout must be at least 1s"));
        }
        if self.tokens.max_local_tokens_per_system == 0 {
            return Err(invalid(
                "tokens.max_local_tokens_per_system must be at least 1",
            ));
        }
        let local_prefix = &self.tokens.local_token_prefix;
        if local_prefix.len() > 32
            || !local_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'.')
        {
            return Err(invalid(format!(
                "tokens.local_token_prefix = {local_prefix:?} must be at most 32 printable ASCII characters without spaces or '.'"
            )));
        }
        let t = &self.tokens;
        if t.access_token_ttl.as_secs() < 60 || t.access_token_ttl.as_secs() > 7 * 86_400 {
            return Err(invalid(format!(
                "tokens.access_token_ttl = {} must be between 1m and 7D",
                t.access_token_ttl
            )));
        }
        if t.max_local_token_duration.as_secs() < 60 {
            return Err(invalid(
                "tokens.max_local_token_duration must be at least 1m",
            ));
        }
        if t.key_publish_ahead >= t.key_rotation_interval {
            return Err(invalid(format!(
                "tokens.key_publish_ahead ({}) must be shorter than tokens.key_rotation_interval ({})",
                t.key_publish_ahead, t.key_rotation_interval
            )));
        }
        if t.status_list_ttl.as_secs() < 120 || t.status_list_ttl.as_secs() > 30 * 86_400 {
            return Err(invalid(format!(
                "tokens.status_list_ttl = {} must be between 2m and 30D",
                t.status_list_ttl
            )));
        }
        let session = self.web.session_ttl.as_secs();
        if !(60..=30 * 86_400).contains(&session) {
            return Err(invalid(format!(
                "web.session_ttl = {} must be between 1m and 30D",
                self.web.session_ttl
            )));
        }
        self.nats.validate()?;
        if self.nats.enabled()
            && crate::nats::translate_prefix(self.mqtt.topic_prefix.as_str()).is_none()
        {
            return Err(invalid(format!(
                "mqtt.topic_prefix = {:?} cannot be a NATS subject (white space, or a level `*` or `>`); [nats] needs one",
                self.mqtt.topic_prefix.as_str()
            )));
        }
        let m = &self.mailer;
        if m.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(format!(
                "mailer.from = {:?} is not a mail address like \"lanyard <no-reply@example.com>\"",
                m.from
            )));
        }
        if m.kind == MailerKind::Smtp && m.smtp_host.is_empty() {
            return Err(invalid("mailer.kind = \"smtp\" needs mailer.smtp_host"));
        }
        if !self.keys.encryption_key.is_empty()
            && crate::crypto::KeyEncryptionKey::from_base64(self.keys.encryption_key.expose())
                .is_err()
        {
            return Err(invalid(
                "keys.encryption_key must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`)",
            ));
        }
        Ok(())
    }

    /// The issuer of a tenant: `{public_url}/t/{slug}`.
    pub fn issuer(&self, slug: &str) -> String {
        format!("{}/t/{slug}", self.http.public_url.trim_end_matches('/'))
    }

    /// The effective settings as TOML, with secrets redacted (the `config` command).
    pub fn to_redacted_toml(&self) -> String {
        // Secrets are redacted by their type; a password in the database URL, here.
        let mut shown = self.clone();
        shown.database.url = crate::store::redact_password(&shown.database.url);
        toml::to_string(&shown).expect("settings always serialise")
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Applies `LANYARD_<SECTION>__<KEY>=value`. The value's type follows the key's default: `true`
/// and `false` for switches, numbers for counts, text for everything else.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let defaults = toml::Value::try_from(Settings::default()).expect("defaults serialise");
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue; // LANYARD_CONFIG, LANYARD_LOG: not overrides
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(default) = defaults.get(&section).and_then(|s| s.get(&key)) else {
            return Err(invalid(format!(
                "environment variable {name} names no config key (there is no `{section}.{key}`)"
            )));
        };
        let value = match default {
            toml::Value::Boolean(_) => match raw.as_str() {
                "true" | "1" => toml::Value::Boolean(true),
                "false" | "0" => toml::Value::Boolean(false),
                _ => {
                    return Err(invalid(format!(
                        "{name} must be true or false, not {raw:?}"
                    )));
                }
            },
            toml::Value::Integer(_) => raw
                .parse()
                .map(toml::Value::Integer)
                .map_err(|_| invalid(format!("{name} must be a whole number, not {raw:?}")))?,
            _ => toml::Value::String(raw.clone()),
        };
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key, value);
            }
            _ => return Err(invalid(format!("`{section}` must be a table"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from(text: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut table: toml::Table = text.parse().unwrap();
        apply_env(&mut table, &env(vars))?;
        Settings::from_table(table)
    }

    #[test]
    fn the_shipped_rules_keep_people_of_one_app_apart() {
        use crate::domain::ScopeSet;
        use crate::domain::acl::Identity;
        use crate::domain::topic::{TopicFilter, TopicName};
        let shipped = Settings::from_toml(include_str!("../broker.toml")).unwrap();
        let p = shipped.mqtt.permissions();
        let none = ScopeSet::default();
        let person = |sub| Identity {
            slug: "acme",
            client_id: "app",
            sub,
            system: None,
            scopes: &none,
        };
        let (ada, bob) = (person("u-ada"), person("u-bob"));
        let filter = |f| TopicFilter::parse(f).unwrap();
        let topic = |t| TopicName::parse(t).unwrap();
        for who in [&ada, &bob] {
            assert!(!p.may_subscribe(who, &filter("tenants/acme/clients/app/#")));
            assert!(!p.may_publish(who, &topic("tenants/acme/clients/app/unlock")));
        }
        assert!(p.may_subscribe(&ada, &filter("tenants/acme/users/u-ada/#")));
        assert!(p.may_publish(&ada, &topic("tenants/acme/users/u-ada/unlock")));
        assert!(!p.may_subscribe(&bob, &filter("tenants/acme/users/u-ada/#")));
        assert!(!p.may_publish(&bob, &topic("tenants/acme/users/u-ada/unlock")));
        let device = Identity {
            client_id: "app",
            sub: "app",
            ..ada
        };
        assert!(p.may_subscribe(&device, &filter("tenants/acme/clients/app/#")));
    }

    #[test]
    fn the_shipped_file_parses_and_documents_every_key() {
        let text = include_str!("../broker.toml");
        Settings::from_toml(text).expect("broker.toml is valid");
        let shipped: toml::Table = text.parse().unwrap();
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        for (section, keys) in defaults.as_table().unwrap() {
            for key in keys.as_table().unwrap().keys() {
                let documented = shipped.get(section).and_then(|s| s.get(key)).is_some()
                    || text.contains(&format!("# {key} = "));
                assert!(documented, "broker.toml does not mention {section}.{key}");
            }
        }
    }

    #[test]
    fn a_tls_listener_needs_its_certificate_and_key() {
        let err = from("[mqtt]\ntls_listen = \"127.0.0.1:8883\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.tls_cert_file"), "{err}");
        let err = from("[mqtt]\ntls_listen = \"nope\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.tls_listen"), "{err}");
        let err = from(
            "[[mqtt.acl]]\ntopic = \"a/{nope}\"\naction = \"publish\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a/{nope}"), "{err}");
    }

    #[test]
    fn the_metrics_listener_is_on_by_default_and_empty_turns_it_off() {
        let s = from("", &[]).unwrap();
        assert_eq!(s.metrics.listen, Some(([127, 0, 0, 1], 9464).into()));
        let s = from("[metrics]\nlisten = \"\"\n", &[]).unwrap();
        assert_eq!(s.metrics.listen, None);
        let s = from("", &[("LANYARD_METRICS__LISTEN", "")]).unwrap();
        assert_eq!(s.metrics.listen, None);
        let s = from("", &[("LANYARD_METRICS__LISTEN", "127.0.0.1:0")]).unwrap();
        assert_eq!(s.metrics.listen.map(|a| a.port()), Some(0));
        let err = from("[metrics]\nlisten = \"everywhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.listen"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = from("[http]\nlisen = \"127.0.0.1:1\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http") && err.contains("lisen"), "{err}");
        let err = from("[htp]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("htp"), "{err}");
        let err = from("", &[("LANYARD_HTTP__LISEN", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("LANYARD_HTTP__LISEN"), "{err}");
    }

    #[test]
    fn a_nats_section_is_checked_whole_and_its_secrets_come_from_the_environment() {
        let seed = nkeys::KeyPair::new_account().seed().unwrap();
        let base = "[nats]\nurl = \"nats://127.0.0.1:4222,nats://127.0.0.1:4223\"\nmqtt_url = \"127.0.0.1:1883,mqtt://[::1]:1884\"\ncallout_password = \"c\"\nsystem_password = \"s\"\npublisher_password = \"p\"\n[nats.accounts]\nacme = \"acme\"\n";
        let s = from(base, &[("LANYARD_NATS__ISSUER_SEED", &seed)]).unwrap();
        assert!(s.nats.enabled());
        assert_eq!(s.nats.urls().len(), 2);
        assert_eq!(
            s.nats.mqtt_addresses(),
            [("127.0.0.1".to_string(), 1883), ("::1".to_string(), 1884)]
        );
        assert_eq!(s.nats.publisher_user("acme"), "lanyard-acme");
        assert!(!s.to_redacted_toml().contains(&seed));
        let refused = |text: &str, vars: &[(&str, &str)], needle: &str| {
            let err = from(text, vars).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        refused(base, &[], "nats.issuer_seed");
        let user_seed = nkeys::KeyPair::new_user().seed().unwrap();
        refused(
            base,
            &[("LANYARD_NATS__ISSUER_SEED", &user_seed)],
            "nats.issuer_seed",
        );
        let with_seed = [("LANYARD_NATS__ISSUER_SEED", seed.as_str())];
        refused(
            &base.replace(
                "mqtt_url = \"127.0.0.1:1883,mqtt://[::1]:1884\"",
                "mqtt_url = \"nowhere\"",
            ),
            &with_seed,
            "nats.mqtt_url",
        );
        refused(
            &base.replace("nats://127.0.0.1:4223", "nats://host:port"),
            &with_seed,
            "nats.url",
        );
        refused(
            &format!("{base}beta = \"acme\"\n"),
            &with_seed,
            "named for two tenants",
        );
        refused(
            &format!("{base}beta = \"a b\"\n"),
            &with_seed,
            "nats.accounts.beta",
        );
        refused(
            &base.replace("[nats]\n", "[nats]\npublisher_user = \"shared\"\n"),
            &with_seed,
            "{account}",
        );
        refused(
            &base.replace("nats://127.0.0.1:4223", "nats://me:secret@127.0.0.1:4223"),
            &with_seed,
            "must not hold credentials",
        );
        refused(
            &base.replace("system_password = \"s\"\n", ""),
            &with_seed,
            "nats.system_password",
        );
        refused(
            &format!("[mqtt]\ntopic_prefix = \"a/*/b\"\n{base}"),
            &with_seed,
            "mqtt.topic_prefix",
        );
        // Off while nats.url is empty, whatever else is set.
        assert!(
            !from("[nats]\nmqtt_url = \"x\"\n", &[])
                .unwrap()
                .nats
                .enabled()
        );
    }

    #[test]
    fn environment_overrides_the_file_with_typed_values() {
        let s = from(
            "[http]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("LANYARD_HTTP__LISTEN", "127.0.0.1:0"),
                ("LANYARD_DEMO__SEED", "true"),
                ("LANYARD_TOKENS__ACCESS_TOKEN_TTL", "15m"),
                ("LANYARD_DATABASE__MAX_CONNECTIONS", "3"),
                ("LANYARD_CONFIG", "ignored.toml"),
            ],
        )
        .unwrap();
        assert_eq!(s.http.listen.port(), 0);
        assert!(s.demo.seed);
        assert_eq!(s.tokens.access_token_ttl.as_secs(), 900);
        assert_eq!(s.database.max_connections, 3);
        let err = from("", &[("LANYARD_DEMO__SEED", "yes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("LANYARD_DEMO__SEED"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "[tokens]\naccess_token_ttl = \"1 hour\"\n",
                "tokens.access_token_ttl",
            ),
            ("[http]\nlisten = \"nowhere\"\n", "http.listen"),
            ("[http]\npublic_url = \"ftp://x\"\n", "http.public_url"),
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            ("[mqtt]\ntopic_prefix = \"a/#\"\n", "mqtt.topic_prefix"),
            (
                "[tokens]\nkey_publish_ahead = \"100D\"\n",
                "tokens.key_publish_ahead",
            ),
            ("[keys]\nencryption_key = \"abc\"\n", "keys.encryption_key"),
            ("[mailer]\nkind = \"pigeon\"\n", "mailer.kind"),
        ] {
            let err = from(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_printed_config_hides_the_encryption_key() {
        let mut s = Settings::default();
        s.keys.encryption_key = SecretSetting::new("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=");
        let printed = s.to_redacted_toml();
        assert!(!printed.contains("c2VjcmV0"));
        assert!(printed.contains("<redacted>"));
    }
}
