//! The processes of a run: lanyard under test, Mosquitto as the broker reference, `openssl
//! speed` as the signing reference, and the CPU time and memory of each read from `/proc`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLK_TCK: f64 = 100.0;

/// User + system CPU seconds of a process so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / CLK_TCK
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// This process: the benchmark's load generators.
pub fn own_pid() -> u32 {
    std::process::id()
}

/// A running lanyard, stopped when dropped.
pub struct Lanyard {
    child: Child,
    /// Its data folder: configuration, database, log and mail outbox.
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    /// The metrics listener (`GET /metrics`), when it is on.
    pub metrics: Option<SocketAddr>,
    /// The demo device's client credentials, printed by the demo seed on the first start
    /// (empty on a later start of the same folder).
    pub device_id: String,
    pub device_secret: String,
}

impl Lanyard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The MQTT connections lanyard's open-file budget allows, from the line it logs at start
    /// ("… at most H http and M mqtt connections …"), less a few for the benchmark's own token
    /// requests.
    pub fn mqtt_budget(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("lanyard.log")).unwrap_or_default();
        log.lines()
            .find_map(|l| {
                let rest = l.split(" http and ").nth(1)?;
                rest.split_whitespace().next()?.parse::<usize>().ok()
            })
            .map_or(usize::MAX, |m| m.saturating_sub(16))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Lanyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts lanyard on its embedded defaults plus a data folder of its own, free ports (the
/// metrics listener's too, on by default as in a deployment), and a rule that lets the
/// benchmark's clients publish under `bench/`. Two limits are lifted: every client of the
/// benchmark comes from one address, and one person mints all its tokens, so the per-address
/// connection cap and the per-person token cap would measure themselves, not lanyard's speed.
pub fn start_lanyard(bin: &Path, dir: &Path) -> Lanyard {
    start_lanyard_with(bin, dir, "")
}

/// [`start_lanyard`] with `extra` (TOML tables) added to its configuration; a `[metrics]`
/// table there replaces the one that puts the metrics listener on a free port.
pub fn start_lanyard_with(bin: &Path, dir: &Path, extra: &str) -> Lanyard {
    // The demo seed (and its message on stdout) happens on the first start only.
    let first_start = !dir.join("lanyard.db").exists();
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"[http]
listen = "127.0.0.1:0"
[database]
url = "sqlite://{db}"
[keys]
encryption_key_file = "{kek}"
[mqtt]
listen = "127.0.0.1:0"
max_connections = 100000
[[mqtt.acl]]
topic = "bench/#"
action = "publish_subscribe"
[tokens]
max_local_tokens_per_system = 100000000
[mailer]
dir = "{outbox}"
[demo]
seed = true
[limits]
connections_per_ip = 1000000
{metrics}{extra}"#,
            metrics = if extra.contains("[metrics]") {
                ""
            } else {
                "[metrics]\nlisten = \"127.0.0.1:0\"\n"
            },
            db = dir.join("lanyard.db").display(),
            kek = dir.join("lanyard.kek").display(),
            outbox = dir.join("outbox").display(),
        ),
    )
    .unwrap();
    // The log goes to a file, as a deployment's would: a pipe would wake the benchmark for
    // every line lanyard logs (a mint logs one) and put that on the figures.
    let log_path = dir.join("lanyard.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,lanyard=info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("lanyard starts");
    let (mut http, mut mqtt, mut metrics_addr) = (None, None, None);
    let started = Instant::now();
    // The metrics listener, when on, is logged before the MQTT one.
    while http.is_none() || mqtt.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "lanyard logs its ports within a minute; see {}",
            log_path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
        for line in std::fs::read_to_string(&log_path).unwrap().lines() {
            if let Some(a) = line.split("http listening on ").nth(1) {
                http = a.trim().parse().ok();
            }
            if let Some(a) = line.split("mqtt listening on ").nth(1) {
                mqtt = a.trim().parse().ok();
            }
            if let Some(a) = line.split("metrics listening on ").nth(1) {
                metrics_addr = a.trim().parse().ok();
            }
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut out = String::new();
    if first_start {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            out.push_str(&line);
            out.push('\n');
            if line.contains("export CLIENT_ID=") {
                break;
            }
        }
    }
    let field = |name: &str| {
        out.split(&format!("{name}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default()
            .to_owned()
    };
    Lanyard {
        device_id: field("CLIENT_ID"),
        device_secret: field("CLIENT_SECRET"),
        child,
        dir: dir.to_owned(),
        http: http.unwrap(),
        mqtt: mqtt.unwrap(),
        metrics: metrics_addr,
    }
}

/// A running Mosquitto that lets anyone in, stopped when dropped.
pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
}

impl Mosquitto {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Mosquitto on a free port with its configuration in `dir`, and waits until it accepts.
pub fn start_mosquitto(dir: &Path) -> Mosquitto {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("mosquitto.conf");
    let mut f = std::fs::File::create(&config).unwrap();
    writeln!(
        f,
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000"
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto runs (apt-get install mosquitto)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Mosquitto { child, addr }
}

/// `openssl speed rsa2048` signatures per second, on one core or on `multi`.
pub fn openssl_signs(multi: Option<u32>, seconds: u32) -> f64 {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-seconds", &seconds.to_string()]);
    if let Some(n) = multi {
        cmd.args(["-multi", &n.to_string()]);
    }
    cmd.arg("rsa2048");
    let out = cmd.output().expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000233s 0.000014s   4284.0  70423.2" or "rsa 2048 bits 0.000118s ..."
    // with -multi: "rsa 2048 bits 0.000116s 0.000007s 8568.0 140846.4"
    text.lines()
        .filter(|l| l.starts_with("rsa 2048") || l.starts_with("rsa  2048"))
        .filter_map(|l| {
            l.split_whitespace()
                .rev()
                .nth(1)
                .and_then(|v| v.parse().ok())
        })
        .next_back()
        .unwrap_or(0.0)
}
