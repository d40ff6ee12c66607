//! The HTTP listener: lanyard's own accept loop in front of hyper (SPEC §7), since
//! `axum::serve` has neither a header-read timeout nor connection caps.
//!
//! - A new connection is closed at once, before anything is read, when its source address
//!   already holds `limits.connections_per_ip` connections or the listener's share of the
//!   open-file budget is used up ([`crate::connections`]).
//! - A request's head must arrive within `http.header_timeout` of its first byte; the first
//!   request of a connection within `http.header_timeout` of the accept.
//! - A request's body must arrive whole within `http.header_timeout` of its head; after that,
//!   reading it fails and the handler answers 400.
//! - A connection with no request open is closed after `http.idle_timeout` without a byte
//!   (keep-alive between requests), and so is one whose open request moves no byte in either
//!   direction for that long (a body that stops coming, a response nobody reads).
//! - A request head holds at most 64 KiB; HTTP/2 connections carry at most 32 requests at once
//!   and buffer at most 64 KiB of a stream's body ahead of its handler, so an open connection
//!   pins little memory.
//! - On shutdown the listener stops accepting and each connection finishes the request it is
//!   serving (hyper's graceful shutdown); the process's own deadline (`app`) ends the rest.
//!
//! Each request carries the TCP peer as axum's `ConnectInfo<SocketAddr>`: the source address
//! the rate limits count. A forwarding header is never trusted for it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::connections::{PerSource, Permits, WarnOnce};

/// The most a request head (HTTP/1 read buffer, HTTP/2 header list) may hold. hyper's defaults
/// (about 400 KiB, and 16 MiB for HTTP/2) let each of a source's connections pin that much
/// memory; a lanyard request's head is a few KiB (a bearer token is the largest part).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// HTTP/2: concurrent requests on one connection, and how much of a body a stream (four
/// streams' worth for the connection) may send ahead of the handler reading it.
const MAX_STREAMS: u32 = 32;
const STREAM_WINDOW: u32 = 64 * 1024;

/// What the listener enforces.
pub struct Limits {
    pub permits: Permits,
    pub per_source: Arc<PerSource>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `router` on `listener` until `stopped` turns true, then lets the open connections
/// finish their requests and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let full = WarnOnce::default();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limits.per_source.admit(peer.ip()) else {
            tracing::debug!(%peer, "http: too many connections from this source; closed");
            continue;
        };
        let Some(permit) = limits.permits.try_take() else {
            if full.ready() {
                tracing::warn!(%peer, "http: connection limit reached, closing new connections");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = limits.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, router, &limits, stopped).await;
            drop((slot, permit));
        });
    }
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let body_time = limits.header_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let deadline = Instant::now() + body_time;
        let mut request = request.map(|body| {
            axum::body::Body::new(BodyDeadline {
                inner: body,
                deadline,
                sleep: None,
            })
        });
        request.extensions_mut().insert(ConnectInfo(peer));
        let open = requests.request_started();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(open);
            response
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(STREAM_WINDOW * 4);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let watchdog = activity.watchdog(limits.header_timeout, limits.idle_timeout);
    tokio::pin!(watchdog);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            done = connection.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, "http connection: {e}");
                }
                return;
            }
            () = watchdog.as_mut() => {
                tracing::debug!(%peer, "http: slow or idle connection closed");
                return;
            }
            _ = stopped.wait_for(|s| *s), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection's watchdog reads: when a byte last moved, how many requests are open, and
/// since when the head of the next request is arriving. Times are milliseconds since `start`.
struct Activity {
    start: Instant,
    last: AtomicU64,
    open: AtomicUsize,
    /// When the first byte of a request head arrived (a new connection counts from its
    /// start: it must send its first request in time); `u64::MAX` when none is arriving.
    head_since: AtomicU64,
    /// Wakes the watchdog when a head starts arriving: its deadline moved closer.
    head_started: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            head_started: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    fn moved(&self, read: bool) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if read
            && self.open.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(u64::MAX, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(u64::MAX, Ordering::Release);
        OpenRequest(self.clone())
    }

    /// The moment the connection is to be closed, as things stand now.
    fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Instant {
        let idle = self.at(self.last.load(Ordering::Relaxed)) + idle_timeout;
        if self.open.load(Ordering::Acquire) > 0 {
            return idle;
        }
        match self.head_since.load(Ordering::Acquire) {
            u64::MAX => idle,
            since => (self.at(since) + header_timeout).min(idle),
        }
    }

    /// Completes when the connection has been slow or idle past its deadline.
    async fn watchdog(&self, header_timeout: Duration, idle_timeout: Duration) {
        loop {
            let deadline = self.deadline(header_timeout, idle_timeout);
            if deadline <= Instant::now() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = self.head_started.notified() => {}
            }
        }
    }
}

/// A request being served; dropping it (the handler answered) counts as activity.
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.last.store(self.0.now(), Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request body that must have arrived whole by `deadline`; after it, reading it fails (the
/// handler answers that it could not be read) instead of waiting for a trickle.
struct BodyDeadline {
    inner: Incoming,
    deadline: Instant,
    /// Made the first time the body is not all there when asked for.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for BodyDeadline {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(
                "the request body did not arrive within http.header_timeout".into(),
            )));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting every byte that moves.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved(true);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved(false);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved(false);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
