//! lanyard's benchmarks, side by side with a reference measured in the same run (targets in
//! docs/performance.md). Run through `bench/run`, which builds the release binary
//! first; `--quick` runs each figure for about a second and only checks that it was produced.
//!
//! Every figure is a ratio against its reference, because the machines are shared and noisy;
//! where it can, the reference is measured around the figure (just before and just after, or in
//! turn with it):
//! - RSA signatures in lanyard's own library (aws-lc-rs) against `openssl speed rsa2048`;
//! - the token endpoint against `openssl speed rsa2048` (`-multi <cores>` a second at a time in turn
//!   with it, one core before and after), with the server's own CPU time per token from
//!   `/proc/<pid>/stat`;
//! - GraphQL `createLocalApiToken` against the token endpoint, a second of each in turn, round
//!   10,000 systems;
//! - MQTT CONNECT with a real RS256 token, and a reconnect storm, against Mosquitto's anonymous
//!   CONNECT, a second of each in turn;
//! - publish throughput (QoS 0 and 1, 100-byte payloads, one and four subscribers) against
//!   Mosquitto;
//! - mint → device latency across those systems; restart time with each holding 10 tokens;
//! - RSS with many idle authenticated connections against Mosquitto's.
//!
//! The load generators run in this process; the CPU they took is printed too. HTTP load goes
//! over plain keep-alive connections with requests written out once, so that it takes little.
//! `--only tokens,graphql,…` measures just the named figures and their references.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    lanyard: PathBuf,
    quick: bool,
    /// `--only a,b`: just these figures (and what they are measured against), for profiling.
    only: Vec<String>,
}

/// How long fresh RS256 CONNECTs, and the reconnect storm, are measured for (a second at a time).
const FRESH_RUN: Duration = Duration::from_secs(3);

/// The figures `--only` knows.
const FIGURES: [&str; 7] = [
    "tokens", "graphql", "connect", "publish", "latency", "idle", "restart",
];

impl Args {
    fn wants(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == figure)
    }
}

fn args() -> Args {
    let mut lanyard = PathBuf::from("target/release/lanyard");
    let mut quick = false;
    let mut only = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--lanyard" => lanyard = it.next().expect("--lanyard PATH").into(),
            "--only" => {
                let list = it.next().expect("--only FIGURE,…");
                only = list.split(',').map(str::to_owned).collect();
                if let Some(f) = only.iter().find(|f| !FIGURES.contains(&f.as_str())) {
                    panic!("unknown figure {f}; known: {}", FIGURES.join(", "));
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        lanyard,
        quick,
        only,
    }
}

/// One line of the table.
struct Row {
    figure: String,
    value: String,
    reference: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

fn row(
    figure: &str,
    value: String,
    reference: String,
    ratio: Option<f64>,
    target: &str,
    met: Option<bool>,
) -> Row {
    Row {
        figure: figure.into(),
        value,
        reference,
        ratio: ratio
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "—".into()),
        target: target.into(),
        met,
    }
}

/// A figure that must reach at least `min` times its reference.
fn at_least(
    figure: &str,
    value: String,
    reference: String,
    ours: f64,
    theirs: f64,
    min: f64,
) -> Row {
    row(
        figure,
        value,
        reference,
        Some(ours / theirs.max(1e-9)),
        &format!("≥ {min:.1}×"),
        Some(ours >= min * theirs),
    )
}

// ---------------------------------------------------------------------------------------------
// Processes and their CPU time

const CLK_TCK: f64 = 100.0;

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / CLK_TCK
}

/// The idle-connection figure's count: 20,000, or fewer where this process may not hold that
/// many sockets open (`bench/run` raises the limit where it can).
fn idle_connections() -> usize {
    const WANTED: usize = 20_000;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok())
        .unwrap_or(WANTED);
    WANTED.min(open_files.saturating_sub(256))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn own_pid() -> u32 {
    std::process::id()
}

struct Lanyard {
    child: Child,
    dir: PathBuf,
    http: SocketAddr,
    mqtt: SocketAddr,
    device_id: String,
    device_secret: String,
}

impl Lanyard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The MQTT connections lanyard's open-file budget allows, from the line it logs at start
    /// ("… at most H http and M mqtt connections …"), less a few for the benchmark's own token
    /// requests.
    fn mqtt_budget(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("lanyard.log")).unwrap_or_default();
        log.lines()
            .find_map(|l| {
                let rest = l.split(" http and ").nth(1)?;
                rest.split_whitespace().next()?.parse::<usize>().ok()
            })
            .map_or(usize::MAX, |m| m.saturating_sub(16))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Lanyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts lanyard on its embedded defaults plus a data folder of its own, free ports, and a rule
/// that lets the benchmark's clients publish under `bench/`. Two limits are lifted: every client
/// of the benchmark comes from one address, and one person mints all its tokens, so the
/// per-address connection cap and the per-person token cap would measure themselves, not
/// lanyard's speed.
fn start_lanyard(bin: &Path, dir: &Path) -> Lanyard {
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
"#,
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
    let (mut http, mut mqtt) = (None, None);
    let started = Instant::now();
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
    }
}

struct Mosquitto {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto(dir: &Path) -> Mosquitto {
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
fn openssl_signs(multi: Option<u32>, seconds: u32) -> f64 {
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

// ---------------------------------------------------------------------------------------------
// Load generators

/// Runs `workers` copies of `op` until `duration` passes; returns operations per second.
async fn drive<F, Fut>(workers: usize, duration: Duration, op: F) -> (f64, u64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let done = done.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if op(w).await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    (n as f64 / started.elapsed().as_secs_f64(), n)
}

/// An HTTP/1.1 request written out in full, for [`drive_http`].
fn http_request(l: &Lanyard, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\nhost: {}\r\n", l.http);
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// One keep-alive HTTP/1.1 connection that writes prepared requests and reads whole answers.
/// It does no more than a load generator must (no URL parsing, header maps or pools), so the
/// server, not the generator, gets the cores.
struct HttpConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    fn new(addr: SocketAddr) -> Self {
        HttpConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Sends `request`; the status and the body of the answer, or `None` when the connection
    /// failed (it is opened again on the next call).
    async fn send(&mut self, request: &[u8]) -> Option<(u16, &[u8])> {
        let answer = self.exchange(request).await;
        if answer.is_none() {
            self.stream = None;
        }
        let (status, at) = answer?;
        Some((status, &self.buf[at..]))
    }

    async fn exchange(&mut self, request: &[u8]) -> Option<(u16, usize)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await.ok()?;
            s.set_nodelay(true).ok()?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut()?;
        stream.write_all(request).await.ok()?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).ok()?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })?;
        while self.buf.len() < head_end + length {
            if stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
        Some((status, head_end))
    }
}

/// [`drive`] over HTTP: `workers` connections, each sending `request(worker)` in turn; an
/// operation counts when the answer is 200 and `ok` accepts its body.
async fn drive_http<R, K>(
    addr: SocketAddr,
    workers: usize,
    duration: Duration,
    request: R,
    ok: K,
) -> (f64, u64)
where
    R: Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    K: Fn(&[u8]) -> bool + Send + Sync + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let (request, ok) = (Arc::new(request), Arc::new(ok));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (done, request, ok) = (done.clone(), request.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(addr);
            while Instant::now() < deadline {
                let req = request(w);
                if let Some((200, body)) = conn.send(&req).await
                    && ok(body)
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    (n as f64 / started.elapsed().as_secs_f64(), n)
}

fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return;
        }
    }
}

fn mqtt_string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// An MQTT 3.1.1 CONNECT, with a password when given.
fn connect_packet(client_id: &str, password: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(b"MQTT", &mut body);
    body.push(4);
    body.push(if password.is_some() { 0xc2 } else { 0x02 });
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_string(client_id.as_bytes(), &mut body);
    if let Some(p) = password {
        mqtt_string(b"bench", &mut body);
        mqtt_string(p.as_bytes(), &mut body);
    }
    let mut out = vec![0x10];
    remaining_length(body.len(), &mut out);
    out.extend(body);
    out
}

/// Connects, waits for a successful CONNACK; the stream stays open.
/// Connects from 127.0.0.2 to 127.0.0.254 in turn. A connection closed by the client leaves its
/// port in TIME_WAIT for a minute: from one address, the 28,000 ports of the ephemeral range
/// run out within two seconds of CONNECTs, and the kernel's search for a free port then costs
/// the load generator more than the CONNECT costs the server.
async fn connect_spread(addr: SocketAddr) -> std::io::Result<TcpStream> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = (NEXT.fetch_add(1, Ordering::Relaxed) % 253) as u8;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 2 + n], 0)))?;
    socket.connect(addr).await
}

async fn mqtt_connect(
    addr: SocketAddr,
    client_id: &str,
    password: Option<&str>,
) -> Option<TcpStream> {
    let mut s = connect_spread(addr).await.ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(&connect_packet(client_id, password))
        .await
        .ok()?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.ok()?;
    (ack == [0x20, 2, 0, 0]).then_some(s)
}

/// CONNECT, CONNACK, DISCONNECT.
async fn connect_cycle(addr: SocketAddr, client_id: &str, password: Option<&str>) -> bool {
    match mqtt_connect(addr, client_id, password).await {
        Some(mut s) => s.write_all(&[0xe0, 0x00]).await.is_ok(),
        None => false,
    }
}

/// CONNECT cycles by 16 clients, each with a token of `tokens` used once, for `duration` or
/// until the tokens run out: seconds taken and successful CONNECTs.
async fn fresh_connects(addr: SocketAddr, tokens: Vec<String>, duration: Duration) -> (f64, u64) {
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (tokens, next) = (tokens.clone(), next.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(t) = tokens.get(i) else { break };
                    if connect_cycle(addr, &format!("c{w}-{i}"), Some(t)).await {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for w in workers {
        ok += w.await.unwrap();
    }
    (started.elapsed().as_secs_f64(), ok)
}

fn subscribe_packet(filter: &str, qos: u8) -> Vec<u8> {
    let mut body = vec![0, 1];
    mqtt_string(filter.as_bytes(), &mut body);
    body.push(qos);
    let mut out = vec![0x82];
    remaining_length(body.len(), &mut out);
    out.extend(body);
    out
}

fn publish_packet(topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let mut out = vec![0x30 | (qos << 1)];
    remaining_length(body.len(), &mut out);
    out.extend(body);
    out
}

/// Reads MQTT frames from `s`, counting PUBLISHes (and acknowledging QoS 1 ones) until `want`
/// arrived or `timeout` passed.
async fn count_publishes(mut s: TcpStream, want: u64, timeout: Duration) -> u64 {
    let mut buf = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while got < want {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut acks = Vec::new();
        let mut at = 0;
        while let Some((len, header)) = frame_len(&buf[at..]) {
            if buf.len() - at < len {
                break;
            }
            let first = buf[at];
            if first >> 4 == 3 {
                got += 1;
                if (first >> 1) & 3 == 1 {
                    let body = &buf[at + header..at + len];
                    let tl = u16::from_be_bytes([body[0], body[1]]) as usize;
                    acks.extend_from_slice(&[0x40, 2, body[2 + tl], body[3 + tl]]);
                }
            }
            at += len;
        }
        buf.drain(..at);
        if !acks.is_empty() && s.write_all(&acks).await.is_err() {
            break;
        }
    }
    got
}

/// Total length and header length of the frame at the start of `b`.
fn frame_len(b: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for i in 1..5 {
        let byte = *b.get(i)?;
        len |= ((byte & 0x7f) as usize) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((i + 1 + len, i + 1));
        }
    }
    None
}

/// Publishes `count` messages of 100 bytes at `qos` from one connection and measures how long
/// until every subscriber has all of them.
async fn fan_out(
    addr: SocketAddr,
    password: Option<&str>,
    qos: u8,
    subscribers: usize,
    count: u64,
    tag: &str,
) -> f64 {
    let topic = format!("bench/{tag}");
    let mut receivers = Vec::new();
    for i in 0..subscribers {
        let mut s = mqtt_connect(addr, &format!("sub-{tag}-{i}"), password)
            .await
            .expect("subscriber connects");
        s.write_all(&subscribe_packet(&topic, qos)).await.unwrap();
        let mut suback = [0u8; 5];
        s.read_exact(&mut suback).await.unwrap();
        assert_eq!(suback[0], 0x90, "SUBACK");
        receivers.push(tokio::spawn(count_publishes(
            s,
            count,
            Duration::from_secs(60),
        )));
    }
    let mut publisher = mqtt_connect(addr, &format!("pub-{tag}"), password)
        .await
        .expect("publisher connects");
    let payload = [b'x'; 100];
    let started = Instant::now();
    // The publisher's own acknowledgements are read and dropped in the background.
    let (mut rd, mut wr) = publisher.split();
    let drain = async {
        let mut sink = vec![0u8; 1 << 16];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(60), rd.read(&mut sink)).await
        {
            if n == 0 {
                break;
            }
        }
    };
    let send = async {
        let mut batch = Vec::with_capacity(64 * 1024);
        for i in 0..count {
            batch.extend(publish_packet(
                &topic,
                &payload,
                qos,
                (i % 65_000 + 1) as u16,
            ));
            if batch.len() > 60 * 1024 {
                wr.write_all(&batch).await.unwrap();
                batch.clear();
            }
        }
        wr.write_all(&batch).await.unwrap();
    };
    let receive = async {
        let mut total = 0;
        for r in receivers {
            total += r.await.unwrap();
        }
        total
    };
    let (_, total) = tokio::join!(send, async {
        tokio::select! {
            total = receive => total,
            _ = drain => 0,
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    if total < count * subscribers as u64 {
        eprintln!(
            "  ({tag}: {total} of {} deliveries arrived)",
            count * subscribers as u64
        );
    }
    total as f64 / elapsed
}

// ---------------------------------------------------------------------------------------------
// lanyard helpers over HTTP

async fn client_token(http: &reqwest::Client, l: &Lanyard, id: &str, secret: &str) -> String {
    let res: Value = http
        .post(l.url("/t/demo/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["access_token"].as_str().expect("a token").to_owned()
}

/// Signs the demo person in with a code from the file outbox.
async fn person_token(http: &reqwest::Client, l: &Lanyard) -> String {
    let before = std::fs::read_dir(l.dir.join("outbox"))
        .map(|d| d.count())
        .unwrap_or(0);
    http.post(l.url("/t/demo/auth/send-otp"))
        .json(&json!({ "email": "demo@example.com", "client_id": "demo-app" }))
        .send()
        .await
        .unwrap();
    let mut code = String::new();
    for _ in 0..100 {
        let mut files: Vec<_> = std::fs::read_dir(l.dir.join("outbox"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        if files.len() > before {
            files.sort();
            let text = std::fs::read_to_string(files.last().unwrap()).unwrap();
            let at = text.find(" is your code").unwrap();
            code = text[at - 6..at].to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res: Value = http
        .post(l.url("/t/demo/oauth2/token"))
        .form(&[
            ("grant_type", "urn:lanyard:params:oauth:grant-type:otp"),
            ("client_id", "demo-app"),
            ("email", "demo@example.com"),
            ("code", code.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["access_token"].as_str().expect("signed in").to_owned()
}

async fn graphql(
    http: &reqwest::Client,
    l: &Lanyard,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    http.post(l.url("/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The demo device's `client_credentials` tokens per second over `run`, and the server's CPU
/// µs per token.
async fn token_endpoint(l: &Lanyard, run: Duration) -> (f64, f64) {
    let basic = STANDARD.encode(format!("{}:{}", l.device_id, l.device_secret));
    let request = http_request(
        l,
        "/t/demo/oauth2/token",
        &[
            ("authorization", &format!("Basic {basic}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    );
    let cpu0 = cpu_seconds(l.pid());
    let (per_s, n) = drive_http(l.http, 32, run, move |_| request.clone(), |_| true).await;
    (per_s, (cpu_seconds(l.pid()) - cpu0) / n.max(1) as f64 * 1e6)
}

/// µs per RS256 signature with lanyard's own signing key, on one core: what the token endpoint
/// costs below HTTP.
fn lanyard_signature_micros(run: Duration) -> f64 {
    let key = lanyard::crypto::SigningKey::generate().expect("a key");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run {
        std::hint::black_box(key.sign(b"header.payload"));
        n += 1;
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// An admin client of the demo tenant, from `lanyard bootstrap`.
fn bootstrap_admin(bin: &Path, dir: &Path) -> (String, String) {
    let out = Command::new(bin)
        .args(["--config"])
        .arg(dir.join("broker.toml"))
        .args(["bootstrap", "--tenant", "demo"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("bootstrap prints JSON");
    (
        v["client_id"].as_str().unwrap().into(),
        v["client_secret"].as_str().unwrap().into(),
    )
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let args = args();
    let secs = if args.quick { 1 } else { 5 };
    let run = Duration::from_secs(secs);
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut loadgen_before = cpu_seconds(own_pid());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // The RSA ceiling on one core, measured again after the token endpoint: the figures use
    // the mean of the two, so a neighbour's load that comes or goes skews it less. The 2-core
    // ceiling is measured in turn with the token endpoint itself (on its own without it).
    // The ceiling is OpenSSL signing on every core the machine has, as the server may.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let mut one_core = openssl_signs(None, secs as u32);
    eprintln!("openssl rsa2048: {one_core:.0} signs/s on 1 core");
    let all_cores;
    if args.wants("tokens") {
        // Not a load generator: its CPU is left out of theirs.
        let cpu0 = cpu_seconds(own_pid());
        let ours = lanyard_signature_micros(run);
        loadgen_before += cpu_seconds(own_pid()) - cpu0;
        let theirs = 1e6 / one_core.max(1.0);
        rows.push(row(
            "RSA-2048 signature, lanyard's library (aws-lc-rs), 1 core",
            format!("{ours:.0} µs"),
            format!("openssl {theirs:.0} µs"),
            Some(ours / theirs),
            "—",
            None,
        ));
    }

    let l = start_lanyard(&args.lanyard, &work.path().join("lanyard"));

    // 1. client_credentials tokens/s.
    if args.wants("tokens") {
        eprintln!("- token endpoint");
        // A second of each at a time, from a ceiling to a ceiling, so that the two meet the
        // same neighbours.
        let rounds = secs;
        let slice = run / rounds as u32;
        let (mut tokens, mut token_cpu) = (0.0, 0.0);
        let mut ceilings = vec![openssl_signs(Some(cores), 1)];
        for _ in 0..rounds {
            let (per_s, cpu_each) = token_endpoint(&l, slice).await;
            tokens += per_s * slice.as_secs_f64();
            token_cpu += per_s * slice.as_secs_f64() * cpu_each;
            ceilings.push(openssl_signs(Some(cores), 1));
        }
        let tokens_per_s = tokens / run.as_secs_f64();
        let cpu_per_token = token_cpu / tokens.max(1.0);
        // The first and the last ceiling stand for half a round each.
        let last = ceilings.len() - 1;
        all_cores = (ceilings[1..last].iter().sum::<f64>() + (ceilings[0] + ceilings[last]) / 2.0)
            / last as f64;
        one_core = (one_core + openssl_signs(None, secs as u32)) / 2.0;
        // The server signs with every core busy, where a signature costs more CPU than on one
        // core alone (the cores share what is under them): a bare signature is measured alike.
        let bare_sign = cores as f64 * 1e6 / all_cores.max(1.0);
        let idle_sign = 1e6 / one_core.max(1.0);
        rows.push(at_least(
            "client_credentials tokens/s",
            format!("{tokens_per_s:.0}/s"),
            format!("openssl {cores} cores {all_cores:.0}/s"),
            tokens_per_s,
            all_cores,
            0.8,
        ));
        rows.push(row(
            "CPU µs per token",
            format!("{cpu_per_token:.0} µs"),
            format!(
                "one signature with all {cores} cores signing {bare_sign:.0} µs (one core alone {idle_sign:.0} µs)"
            ),
            Some(cpu_per_token / bare_sign),
            "≤ 1.15×",
            Some(cpu_per_token <= 1.15 * bare_sign),
        ));
    } else {
        all_cores = openssl_signs(Some(cores), secs as u32);
    }

    let person = person_token(&http, &l).await;
    // The systems the person holds a role on: GraphQL mints go round them, the latency figure
    // listens on them, and the restart figure fills each with tokens.
    let mut system_ids: Vec<String> = Vec::new();
    let mut admin = None;
    // Tokens minted per system so far.
    let mut minted = 0u64;
    if args.wants("graphql") || args.wants("latency") || args.wants("restart") {
        let systems = if args.quick { 20 } else { 10_000 };
        eprintln!("- {systems} systems");
        let (admin_id, admin_secret) = bootstrap_admin(&args.lanyard, &l.dir);
        let admin_token = client_token(&http, &l, &admin_id, &admin_secret).await;
        let person_id =
            graphql(&http, &l, &person, "{ me { sub } }", json!({})).await["data"]["me"]["sub"]
                .as_str()
                .unwrap()
                .to_owned();
        let role = graphql(
            &http,
            &l,
            &admin_token,
            "mutation { createRole(name: \"Bench\") { uuid } }",
            json!({}),
        )
        .await["data"]["createRole"]["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let (http, l, admin_token) = (&http, &l, &admin_token);
        let (person_id, role) = (&person_id, &role);
        system_ids = futures::stream::iter(0..systems)
            .map(|i| async move {
                let s = graphql(
                    http,
                    l,
                    admin_token,
                    "mutation($n: String!) { createSystem(name: $n) { uuid } }",
                    json!({ "n": format!("S{i}") }),
                )
                .await["data"]["createSystem"]["uuid"]
                    .as_str()
                    .expect("a system")
                    .to_owned();
                graphql(http, l, admin_token, "mutation($u: UUID!, $s: UUID!, $r: UUID!) { assignRole(userUuid: $u, systemUuid: $s, roleUuid: $r) }", json!({ "u": person_id, "s": s, "r": role })).await;
                s
            })
            .buffer_unordered(8)
            .collect()
            .await;
        admin = Some(admin_token.clone());
    }

    // 2. GraphQL createLocalApiToken per second, round the systems, against the token endpoint
    // measured in turn with it, a fifth of the time at once and once more at the end, so that a
    // neighbour's load that comes or goes weighs on both alike.
    if args.wants("graphql") {
        eprintln!("- GraphQL mints, in turn with the token endpoint");
        let requests: Arc<Vec<Vec<u8>>> = Arc::new(
            system_ids
                .iter()
                .map(|system| {
                    let body = json!({
                        "query": "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }",
                        "variables": { "s": system },
                    });
                    http_request(
                        &l,
                        "/graphql",
                        &[
                            ("authorization", &format!("Bearer {person}")),
                            ("content-type", "application/json"),
                        ],
                        &body.to_string(),
                    )
                })
                .collect(),
        );
        let next = Arc::new(AtomicU64::new(0));
        let slice = run / 5;
        let (mut tokens, mut token_cpu, mut token_secs) = (0.0, 0.0, 0.0);
        let (mut mints, mut mint_cpu, mut mint_secs) = (0u64, 0.0, 0.0);
        for round in 0..=5 {
            let (per_s, cpu_each) = token_endpoint(&l, slice).await;
            tokens += per_s * slice.as_secs_f64();
            token_cpu += per_s * slice.as_secs_f64() * cpu_each;
            token_secs += slice.as_secs_f64();
            if round == 5 {
                break;
            }
            let (requests, next) = (requests.clone(), next.clone());
            let cpu0 = cpu_seconds(l.pid());
            let started = Instant::now();
            let (_, n) = drive_http(
                l.http,
                32,
                slice,
                move |_| {
                    requests[next.fetch_add(1, Ordering::Relaxed) as usize % requests.len()].clone()
                },
                |body| serde_json::from_slice::<Value>(body).is_ok_and(|v| v["errors"].is_null()),
            )
            .await;
            mint_secs += started.elapsed().as_secs_f64();
            mint_cpu += (cpu_seconds(l.pid()) - cpu0) * 1e6;
            mints += n;
        }
        minted = mints;
        let mints_per_s = mints as f64 / mint_secs;
        let cpu_per_mint = mint_cpu / mints.max(1) as f64;
        let tokens_per_s = tokens / token_secs;
        let cpu_per_token = token_cpu / tokens.max(1.0);
        rows.push(at_least(
            "GraphQL createLocalApiToken/s",
            format!("{mints_per_s:.0}/s ({cpu_per_mint:.0} µs CPU each)"),
            format!("token endpoint {tokens_per_s:.0}/s ({cpu_per_token:.0} µs CPU each)"),
            mints_per_s,
            tokens_per_s,
            0.8,
        ));
    }

    // 3. MQTT CONNECT/s: fresh tokens (each verified once), then a reconnect storm, each in turn
    // with Mosquitto a second at a time, from a Mosquitto second to a Mosquitto second, so that
    // the two meet the same neighbours.
    let mut mosq = None;
    if args.wants("connect") {
        eprintln!("- MQTT CONNECT, in turn with Mosquitto");
        let mqtt = l.mqtt;
        let m = mosq.get_or_insert_with(|| start_mosquitto(work.path()));
        let (maddr, mpid) = (m.addr, m.child.id());
        let rounds = if args.quick {
            1
        } else {
            FRESH_RUN.as_secs() as usize
        };
        let slice = if args.quick {
            run
        } else {
            Duration::from_secs(1)
        };
        let mosquitto_second = async || {
            let cpu0 = cpu_seconds(mpid);
            let (per_s, n) = drive(16, slice, move |w| async move {
                connect_cycle(maddr, &format!("m{w}"), None).await
            })
            .await;
            (per_s, n, cpu_seconds(mpid) - cpu0)
        };
        let mut mosq_seconds = vec![mosquitto_second().await];
        let (mut fresh_n, mut fresh_secs, mut fresh_cpu) = (0u64, 0.0, 0.0);
        let (mut storm_n, mut storm_secs) = (0u64, 0.0);
        let mut storm_token = None;
        for _ in 0..rounds {
            // Each token is used once, so every CONNECT verifies a signature: a third more of
            // them than Mosquitto's last second would use (a few hundred in a quick run),
            // fetched eight at a time.
            let want = if args.quick {
                500
            } else {
                (mosq_seconds.last().unwrap().0 * slice.as_secs_f64() * 4.0 / 3.0) as usize
            };
            let fresh: Vec<String> = futures::stream::iter(0..want)
                .map(|_| client_token(&http, &l, &l.device_id, &l.device_secret))
                .buffer_unordered(8)
                .collect()
                .await;
            storm_token.get_or_insert_with(|| fresh[0].clone());
            let cpu0 = cpu_seconds(l.pid());
            let (secs, n) = fresh_connects(mqtt, fresh, slice).await;
            fresh_cpu += cpu_seconds(l.pid()) - cpu0;
            (fresh_secs, fresh_n) = (fresh_secs + secs, fresh_n + n);
            mosq_seconds.push(mosquitto_second().await);
            let t = storm_token.clone().unwrap();
            let started = Instant::now();
            let (_, n) = drive(16, slice, move |w| {
                let t = t.clone();
                async move { connect_cycle(mqtt, &format!("storm-{w}"), Some(&t)).await }
            })
            .await;
            (storm_secs, storm_n) = (storm_secs + started.elapsed().as_secs_f64(), storm_n + n);
            mosq_seconds.push(mosquitto_second().await);
        }
        let connects_fresh = fresh_n as f64 / fresh_secs;
        let cpu_per_connect = fresh_cpu / fresh_n.max(1) as f64 * 1e6;
        let connects_storm = storm_n as f64 / storm_secs;
        // The first and the last Mosquitto second stand for half a round each.
        let rates: Vec<f64> = mosq_seconds.iter().map(|m| m.0).collect();
        let last = rates.len() - 1;
        let connects_mosq =
            (rates[1..last].iter().sum::<f64>() + (rates[0] + rates[last]) / 2.0) / last as f64;
        let mosq_n: u64 = mosq_seconds.iter().map(|m| m.1).sum();
        let mosq_cpu = mosq_seconds.iter().map(|m| m.2).sum::<f64>() / mosq_n.max(1) as f64 * 1e6;
        rows.push(at_least(
            "MQTT CONNECT/s, fresh RS256 tokens",
            format!("{connects_fresh:.0}/s ({cpu_per_connect:.0} µs CPU each)"),
            format!("Mosquitto anonymous {connects_mosq:.0}/s ({mosq_cpu:.0} µs CPU each)"),
            connects_fresh,
            connects_mosq,
            0.8,
        ));
        rows.push(at_least(
            "MQTT CONNECT/s, reconnect storm",
            format!("{connects_storm:.0}/s"),
            format!("Mosquitto anonymous {connects_mosq:.0}/s"),
            connects_storm,
            connects_mosq,
            1.0,
        ));
    }

    // 4. Publish throughput.
    if args.wants("publish") {
        eprintln!("- publish throughput");
        let mosq = mosq.get_or_insert_with(|| start_mosquitto(work.path()));
        let count: u64 = if args.quick { 2_000 } else { 100_000 };
        let bench_token = client_token(&http, &l, &l.device_id, &l.device_secret).await;
        for (qos, subs) in [(0u8, 1usize), (0, 4), (1, 1), (1, 4)] {
            let tag = format!("q{qos}s{subs}");
            let ours = fan_out(
                l.mqtt,
                Some(&bench_token),
                qos,
                subs,
                count,
                &format!("l{tag}"),
            )
            .await;
            let theirs = fan_out(mosq.addr, None, qos, subs, count, &format!("m{tag}")).await;
            rows.push(at_least(
                &format!("publish QoS {qos}, 100 B, 1 → {subs}"),
                format!("{ours:.0} deliveries/s"),
                format!("Mosquitto {theirs:.0}/s"),
                ours,
                theirs,
                1.0,
            ));
        }
    }
    drop(mosq);

    // 5. Mint → device latency, across the systems.
    if args.wants("latency") {
        let admin = admin.as_ref().expect("systems were created");
        eprintln!("- mint → device latency");
        let reader = {
            let reg = graphql(&http, &l, admin, "mutation { createClient(input: {name: \"reader\", scopes: [\"lanyard:local-tokens:read\"]}) { clientId clientSecret } }", json!({})).await;
            let reg = &reg["data"]["createClient"];
            client_token(
                &http,
                &l,
                reg["clientId"].as_str().unwrap(),
                reg["clientSecret"].as_str().unwrap(),
            )
            .await
        };
        let samples = if args.quick { 10 } else { 200 };
        let mut latencies = Vec::new();
        for i in 0..samples {
            let system = &system_ids[i % system_ids.len()];
            let topic = format!("drivr/v1/demo/authorization/localApiTokens/{system}");
            let mut s = mqtt_connect(l.mqtt, &format!("lat-{i}"), Some(&reader))
                .await
                .expect("reader connects");
            s.write_all(&subscribe_packet(&topic, 0)).await.unwrap();
            // SUBACK and the current list.
            let mut sink = vec![0u8; 1 << 20];
            let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut sink)).await;
            let started = Instant::now();
            let minted = graphql(&http, &l, &person, "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }", json!({ "s": system })).await;
            let uuid = minted["data"]["createLocalApiToken"]["uuid"]
                .as_str()
                .unwrap()
                .to_owned();
            let mut seen = String::new();
            while !seen.contains(&uuid) {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await {
                    Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&sink[..n])),
                    _ => break,
                }
            }
            if seen.contains(&uuid) {
                latencies.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let (p50, p99) = (pct(0.5), pct(0.99));
        rows.push(row(
            &format!("mint → device latency, {} systems", system_ids.len()),
            format!(
                "p50 {p50:.1} ms, p99 {p99:.1} ms ({} samples)",
                latencies.len()
            ),
            "—".into(),
            None,
            "p99 < 50 ms",
            Some(p99 < 50.0),
        ));
    }

    // 6. Idle authenticated connections: RSS against Mosquitto, both in fresh processes so
    // neither carries what the other figures left behind.
    if args.wants("idle") {
        eprintln!("- idle connections");
        let mosq = start_mosquitto(work.path());
        let idle_server = start_lanyard(&args.lanyard, &work.path().join("idle"));
        let bench_token = client_token(
            &http,
            &idle_server,
            &idle_server.device_id,
            &idle_server.device_secret,
        )
        .await;
        let idle = if args.quick {
            500
        } else {
            idle_connections().min(idle_server.mqtt_budget())
        };
        let base_ours = rss_kib(idle_server.pid());
        let base_theirs = rss_kib(mosq.child.id());
        // One server's connections at a time, so this process needs descriptors for one side.
        let mut held = Vec::with_capacity(idle);
        for i in 0..idle {
            if let Some(s) =
                mqtt_connect(idle_server.mqtt, &format!("idle-{i}"), Some(&bench_token)).await
            {
                held.push(s);
            }
        }
        let ours_conns = held.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ours = rss_kib(idle_server.pid());
        held.clear();
        for i in 0..idle {
            if let Some(s) = mqtt_connect(mosq.addr, &format!("idle-{i}"), None).await {
                held.push(s);
            }
        }
        let theirs_conns = held.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let theirs = rss_kib(mosq.child.id());
        let per_connection =
            |rss: u64, base: u64, n: usize| rss.saturating_sub(base) as f64 / n.max(1) as f64;
        rows.push(row(
            &format!("RSS with {ours_conns} idle authenticated connections"),
            format!(
                "{} MiB (+{:.1} KiB per connection)",
                ours / 1024,
                per_connection(ours, base_ours, ours_conns)
            ),
            format!(
                "Mosquitto, {theirs_conns} connections: {} MiB (+{:.1} KiB per connection)",
                theirs / 1024,
                per_connection(theirs, base_theirs, theirs_conns)
            ),
            Some(ours as f64 / theirs.max(1) as f64),
            "≤ 2×",
            Some(ours_conns == idle && theirs_conns == idle && ours as f64 <= 2.0 * theirs as f64),
        ));
        drop(held);
        drop(mosq);
        drop(idle_server);
    }

    // 7. Restart with many systems × 10 tokens: time until the listener accepts.
    if args.wants("restart") {
        eprintln!("- restart");
        // Round robin from the first system: the first `minted % n` systems got one more.
        let n = system_ids.len() as u64;
        let (http, server, person) = (&http, &l, &person);
        futures::stream::iter(system_ids.iter().enumerate())
            .flat_map(|(i, system)| {
                let have = minted / n + u64::from((i as u64) < minted % n);
                futures::stream::iter((have..10).map(move |_| system))
            })
            .map(|system| async move {
                graphql(http, server, person, "mutation($s: UUID!) { createLocalApiToken(systemUuid: $s, duration: \"1D\") { uuid } }", json!({ "s": system })).await
            })
            .buffer_unordered(16)
            .for_each(|_| async {})
            .await;
        let dir = l.dir.clone();
        drop(l);
        let started = Instant::now();
        let l = start_lanyard(&args.lanyard, &dir);
        let restart = started.elapsed().as_secs_f64();
        rows.push(row(
            &format!(
                "restart with {} systems × 10 tokens: until MQTT accepts",
                system_ids.len() + 1
            ),
            format!("{restart:.2} s"),
            "—".into(),
            None,
            "< 5 s",
            Some(restart < 5.0),
        ));
        drop(l);
    }

    let loadgen = cpu_seconds(own_pid()) - loadgen_before;
    println!("| figure | lanyard | reference in the same run | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure, r.value, r.reference, r.ratio, r.target, met
        );
    }
    println!(
        "\nload generators: {loadgen:.1} s of CPU in this process; openssl rsa2048: {one_core:.0}/s on 1 core, {all_cores:.0}/s on {cores}{}",
        if args.quick {
            " (quick run: figures are not meaningful)"
        } else {
            ""
        }
    );
    let missing = rows
        .iter()
        .filter(|r| r.value.contains("NaN") || r.value.starts_with("0/s"))
        .count();
    if missing > 0 {
        eprintln!("{missing} figure(s) were not produced");
        std::process::exit(1);
    }
}
