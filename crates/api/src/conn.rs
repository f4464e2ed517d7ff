//! Connections: how many are open, from where, and for how long, so that no client —
//! however many connections it opens and leaves silent — can stop the service or crowd
//! out the others.
//!
//! - **Accept errors** (out of file descriptors: `EMFILE`, `ENFILE`; a connection reset
//!   before it was accepted: `ECONNABORTED`; …) are logged and survived: the listener backs
//!   off (10 ms, doubling to 1 s) and accepts again.
//! - **A cap on open connections**, below the process's open-files limit so that the
//!   catalog, the object store, intermediate volumes and workers keep the descriptors they
//!   need ([`Limits::for_open_files`]). At the cap, the connection that has been idle
//!   longest (no request in flight: silent since it connected, or between requests) is
//!   closed to make room; when every connection has a request in flight, the new one is
//!   closed at once.
//! - **Per-address limit**: one IPv4 address (or IPv6 /64) may hold at most
//!   [`Limits::per_ip`] connections; more are closed at once.
//! - **Timeouts**: the TLS handshake ([`Limits::handshake`]); the first request's headers
//!   ([`Limits::first_request`]) — a connection that says nothing after connecting (or after
//!   its handshake) is closed; HTTP/1 headers ([`Limits::header_read`]); idle keep-alive
//!   between requests, HTTP/1 and HTTP/2 alike ([`Limits::idle`]); and HTTP/2 keep-alive
//!   pings ([`Limits::h2_ping`]), whose answer must come within [`Limits::h2_ping_timeout`].
//!   A request in flight is never cut by these (the request timeout bounds it).
//!
//! Refusals at this level are counted ([`Stats`], `/metrics`) and summed up in the service
//! log and the activity log once a minute (see `server`), not recorded one by one: a flood
//! of connections must not become a flood of records.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

/// The limits on connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one IPv4 address or IPv6 /64 at most.
    pub per_ip: usize,
    /// Time for a TLS handshake.
    pub handshake: Duration,
    /// Time from the connection (and its handshake) to the first request's headers.
    pub first_request: Duration,
    /// Time to read one HTTP/1 request's headers.
    pub header_read: Duration,
    /// Time a connection may stay idle between requests.
    pub idle: Duration,
    /// Interval of HTTP/2 keep-alive pings.
    pub h2_ping: Duration,
    /// Time for the answer to a ping.
    pub h2_ping_timeout: Duration,
    /// HTTP/2 streams (requests) at once on one connection.
    pub h2_streams: u32,
}

/// Open files kept for everything but connections: at least this many…
pub const RESERVED_FILES: u64 = 256;
/// …or this fraction (1/n) of the limit, whichever is more.
pub const RESERVED_FRACTION: u64 = 4;
/// The default cap never exceeds this, however high the open-files limit.
pub const MAX_DEFAULT_CONNECTIONS: usize = 16_384;
/// Default per-address limit.
pub const DEFAULT_PER_IP: usize = 256;
/// Default idle time between requests.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// Longest wait for the first request.
pub const FIRST_REQUEST: Duration = Duration::from_secs(15);

impl Limits {
    /// The defaults for a process that may open `nofile` files: the connection cap leaves
    /// [`RESERVED_FILES`] or a quarter of the limit, whichever is more, to the rest of the
    /// service.
    #[must_use]
    pub fn for_open_files(nofile: u64) -> Limits {
        let reserve = RESERVED_FILES.max(nofile / RESERVED_FRACTION);
        let cap = if nofile > reserve + 16 {
            nofile - reserve
        } else {
            nofile / 2
        };
        Limits {
            max_connections: usize::try_from(cap)
                .unwrap_or(MAX_DEFAULT_CONNECTIONS)
                .clamp(1, MAX_DEFAULT_CONNECTIONS),
            per_ip: DEFAULT_PER_IP,
            handshake: Duration::from_secs(10),
            first_request: FIRST_REQUEST,
            header_read: Duration::from_secs(15),
            idle: DEFAULT_IDLE,
            h2_ping: Duration::from_secs(30),
            h2_ping_timeout: Duration::from_secs(20),
            h2_streams: 100,
        }
    }

    /// With `idle` as the keep-alive idle time (the first request is awaited no longer).
    #[must_use]
    pub fn with_idle(mut self, idle: Duration) -> Limits {
        self.idle = idle;
        self.first_request = FIRST_REQUEST.min(idle);
        self
    }
}

/// Counters of the connection layer.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted from the listener (admitted or not).
    pub accepted: AtomicU64,
    /// Accept errors (out of file descriptors, …).
    pub accept_errors: AtomicU64,
    /// Closed at once: over the per-address limit.
    pub refused_per_ip: AtomicU64,
    /// Closed at once: at the cap with no idle connection to close.
    pub refused_full: AtomicU64,
    /// Idle connections closed to make room at the cap.
    pub evicted: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failed: AtomicU64,
    /// Closed for sending no request in time after connecting.
    pub first_request_timeout: AtomicU64,
    /// HTTP/1 headers not received in time.
    pub header_timeout: AtomicU64,
    /// Closed after a request, idle for the keep-alive time (normal).
    pub idle_closed: AtomicU64,
    /// Requests hyper refused itself (malformed, URI or headers too large).
    pub http_refused: AtomicU64,
}

impl Stats {
    /// The refusal counters, by the reason `/metrics` labels them with.
    #[must_use]
    pub fn refusals(&self) -> [(&'static str, u64); 7] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("per-ip", g(&self.refused_per_ip)),
            ("full", g(&self.refused_full)),
            ("evicted", g(&self.evicted)),
            ("handshake", g(&self.handshake_failed)),
            ("first-request-timeout", g(&self.first_request_timeout)),
            ("header-timeout", g(&self.header_timeout)),
            ("http", g(&self.http_refused)),
        ]
    }
}

/// One open connection's state.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    /// The client.
    pub peer: SocketAddr,
    in_flight: AtomicUsize,
    served: AtomicU64,
    /// When it last became idle (ms since the gate's start).
    idle_since: AtomicU64,
    closing: AtomicBool,
    close: Notify,
}

/// Admits connections under the limits; see the module documentation.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    start: Instant,
    state: Mutex<GateState>,
    /// Counters.
    pub stats: Stats,
    /// Refusals since the last summary, by client address.
    recent: Mutex<HashMap<IpAddr, u64>>,
}

#[derive(Debug, Default)]
struct GateState {
    next_id: u64,
    by_ip: HashMap<IpAddr, usize>,
    conns: HashMap<u64, Arc<Conn>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds [`Limits::per_ip`] connections.
    PerIp,
    /// [`Limits::max_connections`] are open, each with a request in flight.
    Full,
}

/// An admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    key: IpAddr,
    /// The connection.
    pub conn: Arc<Conn>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut s) = self.gate.state.lock() {
            s.conns.remove(&self.conn.id);
            if let Some(n) = s.by_ip.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    s.by_ip.remove(&self.key);
                }
            }
        }
        self.gate.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The address a per-address limit counts: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its
/// /64 (one host commonly holds a whole /64).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl Gate {
    /// A gate enforcing `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            start: Instant::now(),
            state: Mutex::default(),
            stats: Stats::default(),
            recent: Mutex::default(),
        })
    }

    /// The limits.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes a refusal of `ip` for the next summary.
    pub fn note(&self, ip: IpAddr) {
        if let Ok(mut r) = self.recent.lock()
            && (r.len() < 10_000 || r.contains_key(&ip))
        {
            *r.entry(ip).or_insert(0) += 1;
        }
    }

    /// The refusals noted since the last call, most frequent addresses first.
    pub fn take_recent(&self) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<(IpAddr, u64)> = self
            .recent
            .lock()
            .map(|mut r| r.drain().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Admits a connection from `peer`, closing the longest-idle one at the cap.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Permit, Refusal> {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let key = ip_key(peer.ip());
        let Ok(mut s) = self.state.lock() else {
            return Err(Refusal::Full);
        };
        if s.by_ip.get(&key).copied().unwrap_or(0) >= self.limits.per_ip {
            self.stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            drop(s);
            self.note(peer.ip());
            return Err(Refusal::PerIp);
        }
        let closing = s
            .conns
            .values()
            .filter(|c| c.closing.load(Ordering::Relaxed))
            .count();
        if s.conns.len() - closing >= self.limits.max_connections {
            let victim = s
                .conns
                .values()
                .filter(|c| {
                    !c.closing.load(Ordering::Relaxed) && c.in_flight.load(Ordering::Acquire) == 0
                })
                .min_by_key(|c| (c.idle_since.load(Ordering::Relaxed), c.id))
                .cloned();
            match victim {
                Some(v) => {
                    v.closing.store(true, Ordering::Relaxed);
                    v.close.notify_one();
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    self.note(v.peer.ip());
                }
                None => {
                    self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                    drop(s);
                    self.note(peer.ip());
                    return Err(Refusal::Full);
                }
            }
        }
        s.next_id += 1;
        let conn = Arc::new(Conn {
            id: s.next_id,
            peer,
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        s.conns.insert(conn.id, conn.clone());
        *s.by_ip.entry(key).or_insert(0) += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            gate: self.clone(),
            key,
            conn,
        })
    }
}

impl Permit {
    /// Marks a request in flight until the returned guard is dropped.
    #[must_use]
    pub fn busy(&self) -> Busy {
        self.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy {
            gate: self.gate.clone(),
            conn: self.conn.clone(),
        }
    }

    /// When the connection may be closed as idle, if it is idle now.
    fn idle_deadline(&self) -> Option<(Instant, bool)> {
        if self.conn.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let first = self.conn.served.load(Ordering::Relaxed) == 0;
        let limit = if first {
            self.gate.limits.first_request
        } else {
            self.gate.limits.idle
        };
        let since = Duration::from_millis(self.conn.idle_since.load(Ordering::Relaxed));
        Some((self.gate.start + since + limit, first))
    }
}

/// A request in flight on a connection; see [`Permit::busy`].
#[derive(Debug)]
pub struct Busy {
    gate: Arc<Gate>,
    conn: Arc<Conn>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.served.fetch_add(1, Ordering::Relaxed);
        self.conn
            .idle_since
            .store(self.gate.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A hyper service that marks each of its requests in flight on its connection.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    permit: Arc<Permit>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        let busy = self.permit.busy();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(busy);
            r
        })
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The client closed it, or it was served to its end.
    Done,
    /// Closed: no request came in time after connecting.
    FirstRequestTimeout,
    /// Closed: idle too long between requests.
    Idle,
    /// Closed to make room for another at the cap.
    Evicted,
    /// The TLS handshake failed or timed out.
    Handshake,
    /// Ended with an error of the HTTP layer (hyper's, when it refused a request itself).
    Http(Box<dyn std::error::Error + Send + Sync>),
}

/// The HTTP server of one connection (HTTP/1 and HTTP/2) with `limits`' timeouts.
#[must_use]
pub fn http_builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_ping)
        .keep_alive_timeout(limits.h2_ping_timeout)
        .max_concurrent_streams(limits.h2_streams);
    http
}

/// Serves one connection over `io` with `svc` until it ends, closing it when it stays idle
/// too long or the gate needs its place.
pub async fn serve<I, S, B>(
    http: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    io: I,
    svc: S,
    permit: Arc<Permit>,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tracked = Tracked {
        inner: svc,
        permit: permit.clone(),
    };
    let conn = http.serve_connection(TokioIo::new(io), tracked);
    tokio::pin!(conn);
    let why = loop {
        let (wake, first) = match permit.idle_deadline() {
            Some((at, first)) => (at, Some(first)),
            // A request is in flight: look again after an idle period.
            None => (Instant::now() + permit.gate.limits.idle, None),
        };
        tokio::select! {
            r = conn.as_mut() => {
                return match r {
                    Ok(()) => Ended::Done,
                    Err(e) => Ended::Http(e),
                };
            }
            () = permit.conn.close.notified() => break Ended::Evicted,
            () = tokio::time::sleep_until(wake.into()) => {
                // Still idle since the deadline was computed?
                if let (Some(first), Some((at, _))) = (first, permit.idle_deadline())
                    && at <= Instant::now()
                {
                    break if first { Ended::FirstRequestTimeout } else { Ended::Idle };
                }
            }
        }
    };
    conn.as_mut().graceful_shutdown();
    // An idle connection has nothing to finish; an HTTP/2 client gets its GOAWAY.
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
    why
}

/// Counts how an admitted connection ended, and notes its address for the next summary
/// when the server closed or refused it.
fn count_end(gate: &Gate, peer: SocketAddr, why: &Ended) {
    let counter = match why {
        Ended::Handshake => Some(&gate.stats.handshake_failed),
        Ended::FirstRequestTimeout => Some(&gate.stats.first_request_timeout),
        Ended::Idle => Some(&gate.stats.idle_closed),
        Ended::Http(e) => match e.downcast_ref::<hyper::Error>() {
            Some(h) if h.is_timeout() => Some(&gate.stats.header_timeout),
            Some(h) if h.is_parse() || h.is_parse_too_large() => Some(&gate.stats.http_refused),
            _ => None,
        },
        Ended::Done | Ended::Evicted => None,
    };
    if let Some(c) = counter {
        c.fetch_add(1, Ordering::Relaxed);
        // Summed up later; refused requests (Http) are recorded one by one instead.
        if !matches!(why, Ended::Idle | Ended::Http(_)) {
            gate.note(peer.ip());
        }
    }
}

/// Serves `listener` until `shutdown` turns true: each connection admitted by `gate`, its
/// TLS handshake done (with `tls`), then served by `make_svc(peer, secure)` through
/// [`serve`]; `ended` is told how each admitted connection ended. Accept errors are
/// survived with a back-off.
pub async fn run<F, S, B, E>(
    listener: tokio::net::TcpListener,
    gate: Arc<Gate>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    make_svc: F,
    ended: E,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    F: Fn(SocketAddr, bool) -> S + Clone + Send + Sync + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Fn(SocketAddr, &Ended) + Clone + Send + Sync + 'static,
{
    let http = Arc::new(http_builder(&gate.limits));
    let mut backoff = Duration::ZERO;
    let mut last_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (sock, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::ZERO;
                x
            }
            Err(e) => {
                gate.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    last_log = Some(Instant::now());
                    tracing::error!(
                        error = %e,
                        open = gate.stats.open.load(Ordering::Relaxed),
                        errors = gate.stats.accept_errors.load(Ordering::Relaxed),
                        "accept failed; the listener backs off {} ms and goes on",
                        backoff.as_millis()
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let permit = match gate.admit(peer) {
            Ok(p) => Arc::new(p),
            Err(_) => {
                // Closed at once: dropping the socket frees its descriptor.
                drop(sock);
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let (tls, http, make_svc, ended, gate) = (
            tls.clone(),
            http.clone(),
            make_svc.clone(),
            ended.clone(),
            gate.clone(),
        );
        tokio::spawn(async move {
            let why = match tls {
                None => serve(&http, sock, make_svc(peer, false), permit.clone()).await,
                Some(acceptor) => {
                    let hs = tokio::select! {
                        r = tokio::time::timeout(gate.limits.handshake, acceptor.accept(sock)) => r.ok().and_then(Result::ok),
                        () = permit.conn.close.notified() => None,
                    };
                    match hs {
                        Some(stream) => {
                            serve(&http, stream, make_svc(peer, true), permit.clone()).await
                        }
                        None if permit.conn.closing.load(Ordering::Relaxed) => Ended::Evicted,
                        None => Ended::Handshake,
                    }
                }
            };
            count_end(&gate, peer, &why);
            ended(peer, &why);
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn limits() -> Limits {
        let mut l = Limits::for_open_files(1 << 16);
        l.max_connections = 3;
        l.per_ip = 2;
        l.first_request = Duration::from_millis(300);
        l.idle = Duration::from_millis(400);
        l.h2_ping = Duration::from_secs(600);
        l
    }

    /// A server on 127.0.0.1 answering `ok` (to `/slow`: after 800 ms).
    async fn server(l: Limits) -> (SocketAddr, Arc<Gate>, tokio::sync::watch::Sender<bool>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate::new(l);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let svc = |_: SocketAddr, _: bool| {
            hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(axum::body::Body::from(
                    "ok",
                )))
            })
        };
        tokio::spawn(run(listener, gate.clone(), None, svc, |_, _| {}, rx));
        (addr, gate, tx)
    }

    /// Connects from the loopback address `from`.
    async fn connect(from: [u8; 4], to: SocketAddr) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((from, 0))).unwrap();
        s.connect(to).await.unwrap()
    }

    /// Reads until the server closes (failing after 20 s); what it sent.
    async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the server did not close the connection");
        out
    }

    async fn get(s: &mut TcpStream, path: &str) -> String {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn wait_for(what: impl Fn() -> bool) {
        while !what() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_and_idle_connections_are_closed_busy_ones_are_not() {
        let (addr, gate, _stop) = server(limits()).await;
        // Silent from the start: closed after the first-request time, without an answer.
        let mut silent = connect([127, 0, 0, 1], addr).await;
        assert!(until_closed(&mut silent).await.is_empty());
        assert_eq!(gate.stats.first_request_timeout.load(Ordering::Relaxed), 1);
        // Served, then idle: closed after the idle time.
        let mut kept = connect([127, 0, 0, 1], addr).await;
        assert!(get(&mut kept, "/").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(&mut kept, "/").await.starts_with("HTTP/1.1 200"),
            "keep-alive"
        );
        assert!(until_closed(&mut kept).await.is_empty());
        // A request longer than the idle time is answered.
        let mut slow = connect([127, 0, 0, 1], addr).await;
        assert!(get(&mut slow, "/slow").await.starts_with("HTTP/1.1 200"));
        wait_for(|| gate.stats.idle_closed.load(Ordering::Relaxed) >= 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_address_limit_and_the_cap_close_the_longest_idle() {
        let mut l = limits();
        l.first_request = Duration::from_secs(60);
        l.idle = Duration::from_secs(60);
        let (addr, gate, _stop) = server(l).await;
        let open = |n: u64| {
            let g = gate.clone();
            move || g.stats.open.load(Ordering::Relaxed) == n
        };
        let mut a1 = connect([127, 0, 0, 1], addr).await;
        wait_for(open(1)).await;
        let mut a2 = connect([127, 0, 0, 1], addr).await;
        wait_for(open(2)).await;
        // A third from the same address: closed at once.
        let mut a3 = connect([127, 0, 0, 1], addr).await;
        assert!(until_closed(&mut a3).await.is_empty());
        assert_eq!(gate.stats.refused_per_ip.load(Ordering::Relaxed), 1);
        let mut b1 = connect([127, 0, 0, 2], addr).await;
        wait_for(open(3)).await;
        // At the cap: the longest idle (a1) is closed for the newcomer, which is served.
        let mut c1 = connect([127, 0, 0, 3], addr).await;
        assert!(until_closed(&mut a1).await.is_empty());
        assert!(get(&mut c1, "/").await.starts_with("HTTP/1.1 200"));
        assert_eq!(gate.stats.evicted.load(Ordering::Relaxed), 1);
        // b1 and c1 busy; a2 idle: a newcomer takes a2's place.
        let busy_b = tokio::spawn(async move { get(&mut b1, "/slow").await });
        let busy_c = tokio::spawn(async move { get(&mut c1, "/slow").await });
        let busy = {
            let g = gate.clone();
            move || {
                g.state
                    .lock()
                    .unwrap()
                    .conns
                    .values()
                    .filter(|c| c.in_flight.load(Ordering::Relaxed) > 0)
                    .count()
                    == 2
            }
        };
        wait_for(busy).await;
        let mut d1 = connect([127, 0, 0, 4], addr).await;
        assert!(until_closed(&mut a2).await.is_empty());
        let slow_d = tokio::spawn(async move { get(&mut d1, "/slow").await });
        let g = gate.clone();
        wait_for(move || {
            g.state
                .lock()
                .unwrap()
                .conns
                .values()
                .filter(|c| c.in_flight.load(Ordering::Relaxed) > 0)
                .count()
                == 3
        })
        .await;
        // Every connection busy: a newcomer is closed at once.
        let mut e1 = connect([127, 0, 0, 5], addr).await;
        assert!(until_closed(&mut e1).await.is_empty());
        assert_eq!(gate.stats.refused_full.load(Ordering::Relaxed), 1);
        for t in [busy_b, busy_c, slow_d] {
            assert!(t.await.unwrap().starts_with("HTTP/1.1 200"));
        }
        assert_eq!(gate.stats.evicted.load(Ordering::Relaxed), 2);
        let recent = gate.take_recent();
        assert_eq!(recent[0], ("127.0.0.1".parse().unwrap(), 3), "{recent:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http2_connections_are_closed_when_idle_with_a_goaway() {
        let (addr, gate, _stop) = server(limits()).await;
        let mut s = connect([127, 0, 0, 1], addr).await;
        // The preface, an empty SETTINGS frame, and a GET / on stream 1 (HPACK: indexed
        // :method GET, :path /, :scheme http; :authority "t" as a literal).
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        s.write_all(&[0, 0, 6, 1, 0x05, 0, 0, 0, 1]).await.unwrap();
        s.write_all(&[0x82, 0x84, 0x86, 0x41, 0x01, b't'])
            .await
            .unwrap();
        let got = until_closed(&mut s).await;
        // The frames: the answer's DATA (type 0), then a GOAWAY (type 7).
        let mut at = 0;
        let mut types = Vec::new();
        while at + 9 <= got.len() {
            let len = (usize::from(got[at]) << 16)
                | (usize::from(got[at + 1]) << 8)
                | usize::from(got[at + 2]);
            types.push(got[at + 3]);
            at += 9 + len;
        }
        let data = types.iter().position(|t| *t == 0);
        let goaway = types.iter().rposition(|t| *t == 7);
        assert!(
            data < goaway && data.is_some(),
            "no answer, then GOAWAY: {types:?}"
        );
        wait_for(|| gate.stats.idle_closed.load(Ordering::Relaxed) >= 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http2_peers_that_do_not_answer_pings_are_closed() {
        let mut l = limits();
        l.first_request = Duration::from_secs(60);
        l.idle = Duration::from_secs(60);
        l.h2_ping = Duration::from_millis(200);
        l.h2_ping_timeout = Duration::from_millis(200);
        let (addr, _gate, _stop) = server(l).await;
        let mut s = connect([127, 0, 0, 1], addr).await;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        // A request in flight keeps the connection from being idle; only pings can end it.
        s.write_all(&[0, 0, 6, 1, 0x04, 0, 0, 0, 1]).await.unwrap();
        s.write_all(&[0x82, 0x84, 0x86, 0x41, 0x01, b't'])
            .await
            .unwrap();
        let got = until_closed(&mut s).await;
        let mut at = 0;
        let mut types = Vec::new();
        while at + 9 <= got.len() {
            let len = (usize::from(got[at]) << 16)
                | (usize::from(got[at + 1]) << 8)
                | usize::from(got[at + 2]);
            types.push(got[at + 3]);
            at += 9 + len;
        }
        assert!(types.contains(&6), "no PING sent: {types:?}");
    }

    #[test]
    fn the_cap_leaves_files_for_the_rest_of_the_service() {
        assert_eq!(Limits::for_open_files(1024).max_connections, 768);
        assert_eq!(Limits::for_open_files(4096).max_connections, 3072);
        assert_eq!(Limits::for_open_files(300).max_connections, 44);
        assert_eq!(Limits::for_open_files(200).max_connections, 100);
        assert_eq!(
            Limits::for_open_files(1 << 20).max_connections,
            MAX_DEFAULT_CONNECTIONS
        );
        assert_eq!(Limits::for_open_files(0).max_connections, 1);
        let l = Limits::for_open_files(1024).with_idle(Duration::from_secs(5));
        assert_eq!(
            (l.idle, l.first_request),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        let k = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
    }
}
