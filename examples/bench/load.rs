//! The load generators: workers that repeat an operation (an MQTT CONNECT, an HTTP request) for
//! a while and count those that succeed. HTTP requests are written out once and sent over plain
//! keep-alive connections, so that the load takes little of the cores the server is measured on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procs::Lanyard;

/// Runs `workers` copies of `op` until `duration` passes; returns the operations that succeeded
/// per second, and their number.
pub async fn drive<F, Fut>(workers: usize, duration: Duration, op: F) -> (f64, u64)
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
pub fn http_request(l: &Lanyard, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
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
pub async fn drive_http<R, K>(
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
