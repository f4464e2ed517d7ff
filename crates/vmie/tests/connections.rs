//! Connection floods against the real `vmie serve`, started with an open-files limit of
//! 1024 (`prlimit`), as issue 17 found it: about 1,000 silent connections made the server
//! exit ("Too many open files").
//!
//! 1. 1,500 idle TCP and 500 idle TLS connections (handshake done, then silence) from 40
//!    loopback addresses: the server keeps at most its cap (768) open, closing the longest
//!    idle to make room, and a normal client gets every answer meanwhile — `/healthz`,
//!    `/metrics` and a signed API call (`vmie tasks --endpoint-url`); 300 more from one
//!    address: 256 are held, 44 closed at once; a URI too long (414) and too many headers
//!    (431), which hyper answers itself, each leave an activity record, as does the summary
//!    of refused connections written when the server stops; the silent connections are
//!    closed by the server after the first-request timeout.
//! 2. With `--max-connections` set above what the limit allows, 1,200 idle connections run
//!    the server out of descriptors: accept fails with EMFILE, the server backs off and goes
//!    on, and the normal client's requests, queued meanwhile, are answered once the idle
//!    connections are closed.
//!
//! The server never exits. Every wait is for a state (a counter in `/metrics`, a connection
//! closed by the server), bounded only so that a failure does not hang.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::terminate;

const NOFILE: u64 = 1024;
/// What `Limits::for_open_files(1024)` leaves for connections.
const CAP: f64 = 768.0;

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn assert_alive(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!(
                "the server exited ({st}): {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// Raises this test's own open-files limit: it holds thousands of connections.
fn raise_own_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse().ok())
        .unwrap_or(NOFILE);
    let want = hard.min(16_384);
    assert!(
        want >= 5000,
        "this test holds 5000 connections; the hard open-files limit is {hard}"
    );
    let o = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={want}:{hard}"))
        .output()
        .expect("this test needs prlimit (util-linux)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `vmie serve` on a free loopback port under `prlimit --nofile=1024:1024`; on a fresh
/// data folder, the admin key it prints.
fn serve(data: &Path, log: &Path, extra: &[&str]) -> (Server, Option<(String, String)>) {
    let fresh = !data.exists();
    let port = support::free_port();
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vmie"))
        .arg("--data-dir")
        .arg(data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node",
            "flood",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("this test needs prlimit (util-linux)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    if fresh {
        let mut id = String::new();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("AccessKeyId:") {
                id = v.trim().into();
            }
            if let Some(v) = line.strip_prefix("SecretAccessKey:") {
                key = Some((id.clone(), v.trim().to_string()));
                break;
            }
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let mut s = Server {
        child,
        port,
        log: log.to_path_buf(),
    };
    support::wait_serving(&mut s.child, port, log);
    (s, key)
}

/// The normal client: from 127.0.0.1, a new connection for every request.
struct Client {
    http: reqwest::Client,
    base: String,
    ca: PathBuf,
    key: (String, String),
}

impl Client {
    fn new(s: &Server, data: &Path, key: (String, String)) -> Client {
        let ca = data.join("tls/cert.pem");
        let cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
        Client {
            http: reqwest::Client::builder()
                .add_root_certificate(cert)
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
            base: format!("https://127.0.0.1:{}", s.port),
            ca,
            key,
        }
    }

    async fn get(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.text().await.unwrap()
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        self.get("/metrics")
            .await
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    async fn metric(&self, name: &str) -> f64 {
        self.metrics().await.get(name).copied().unwrap_or(0.0)
    }

    /// Waits until `name` in `/metrics` satisfies `ok` (each look is a request too).
    async fn wait_metric(&self, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let t0 = Instant::now();
        loop {
            let v = self.metric(name).await;
            if ok(v) {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(90), "{name} stays {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A signed EC2 call through the API: `vmie tasks --endpoint-url`.
    async fn signed_call(&self) {
        let (base, ca, key) = (self.base.clone(), self.ca.clone(), self.key.clone());
        let o = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_vmie"))
                .args(["tasks", "--endpoint-url", &base, "--ca-bundle"])
                .arg(ca)
                .env("AWS_ACCESS_KEY_ID", &key.0)
                .env("AWS_SECRET_ACCESS_KEY", &key.1)
                .env("VMIE_DATA", "/nonexistent/vmie-client")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            o.status.success(),
            "a signed call failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    async fn round(&self) {
        assert_eq!(self.get("/healthz").await, "ok\n");
        self.signed_call().await;
    }
}

/// Connections waiting in the accept queue of the listener on the loopback `port`.
fn accept_queue(port: u16) -> u64 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for l in tcp.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        // local_address rem_address st tx_queue:rx_queue …; 0A is LISTEN.
        if f.len() > 4 && f[3] == "0A" && f[1].ends_with(&format!(":{port:04X}")) {
            let rx = f[4].split(':').nth(1).unwrap();
            return u64::from_str_radix(rx, 16).unwrap();
        }
    }
    panic!("no listener on port {port}")
}

/// `n` connections to `to`, 50 from each of the loopback addresses `net.1`, `net.2`, …,
/// 100 at a time, each hundred once the listener's accept queue (1,024 long) has room for
/// it: a connection the kernel drops from a full queue would never reach the server.
async fn flood(to: SocketAddr, net: [u8; 3], n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let t0 = Instant::now();
        while accept_queue(to.port()) > 512 {
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "the accept queue stays full"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let from = Ipv4Addr::new(net[0], net[1], net[2], 1 + (i / 50) as u8);
            set.spawn(async move {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind(SocketAddr::from((from, 0))).unwrap();
                s.connect(to).await.unwrap()
            });
        }
        while let Some(s) = set.join_next().await {
            out.push(s.unwrap());
        }
    }
    out
}

fn tls_connector(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// TLS handshakes over `conns`; those the server closed first (to make room) are dropped.
async fn handshakes(conns: Vec<TcpStream>, ca: &Path) -> Vec<Tls> {
    let tls = tls_connector(ca, &[b"h2", b"http/1.1"]);
    let mut set = tokio::task::JoinSet::new();
    for c in conns {
        let tls = tls.clone();
        set.spawn(async move {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            tls.connect(name, c).await.ok()
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.extend(r.unwrap());
    }
    out
}

/// Waits until the server has closed every one of `conns`.
async fn all_closed<S: AsyncRead + Unpin + Send + 'static>(conns: Vec<S>) {
    let mut set = tokio::task::JoinSet::new();
    for mut c in conns {
        set.spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
    let total = set.len();
    let mut done = 0;
    let all = async {
        while set.join_next().await.is_some() {
            done += 1;
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(90), all).await;
    assert!(
        r.is_ok(),
        "the server did not close {} of {total} idle connections",
        total - done
    );
}

/// Sends `head` over a TLS connection and returns the status line of the answer.
async fn raw_request(addr: SocketAddr, ca: &Path, head: &str) -> String {
    let tls = tls_connector(ca, &[b"http/1.1"]);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls.connect(name, tcp).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn records(data: &Path) -> Vec<serde_json::Value> {
    let o = support::vmie(data, &["trail", "lookup"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_of_idle_connections_neither_stop_the_server_nor_keep_others_out() {
    raise_own_limit();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let log = work.path().join("serve1.log");
    let (mut server, key) = serve(&data, &log, &["--idle-timeout", "10"]);
    let key = key.unwrap();
    let c = Client::new(&server, &data, key.clone());
    let ca = data.join("tls/cert.pem");
    c.round().await;
    assert_eq!(c.metric("vmie_connections_max").await, CAP);
    let started = std::fs::read_to_string(&log).unwrap();
    assert!(
        started.contains("at most 768 connections (256 per address), open-files limit 1024"),
        "{started}"
    );

    // 300 from one address: 256 are held, the 44 over the limit closed at once.
    let accepted = c.metric("vmie_connections_accepted_total").await;
    let mut from_one = Vec::new();
    for _ in 0..300 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from(([127, 0, 3, 1], 0))).unwrap();
        from_one.push(s.connect(server.addr()).await.unwrap());
    }
    c.wait_metric("vmie_connections_accepted_total", |v| v >= accepted + 300.0)
        .await;
    let per_ip = "vmie_connections_refused_total{reason=\"per-ip\"}";
    assert_eq!(c.metric(per_ip).await, 44.0);

    // 1,500 idle TCP connections, then 500 that finish a TLS handshake and stay silent:
    // at the cap, the longest idle are closed to make room.
    let t0 = Instant::now();
    let accepted = c.metric("vmie_connections_accepted_total").await;
    let tcp = flood(server.addr(), [127, 0, 1], 1500).await;
    let tls = handshakes(flood(server.addr(), [127, 0, 2], 500).await, &ca).await;
    c.wait_metric("vmie_connections_accepted_total", |v| {
        v >= accepted + 2000.0
    })
    .await;
    let flooded = t0.elapsed();
    server.assert_alive();
    // Connections closed to make room finish closing as the newcomers are served: the
    // count comes back to the cap.
    c.wait_metric("vmie_connections", |v| v <= CAP).await;
    let m = c.metrics().await;
    let refused = |r: &str| m[&format!("vmie_connections_refused_total{{reason=\"{r}\"}}")];
    assert!(m["vmie_connections"] <= CAP + 1.0, "{m:?}");
    assert!(refused("evicted") > 0.0, "after {flooded:?}: {m:?}");
    assert!(
        tls.len() >= 250,
        "{} of 500 TLS handshakes completed in {flooded:?}",
        tls.len()
    );
    // Meanwhile, the normal client gets every answer.
    // (Each request's connection makes room by closing one: at most that one is still
    // closing when the count is read.)
    for _ in 0..20 {
        c.round().await;
        let open = c.metric("vmie_connections").await;
        assert!(open <= CAP + 2.0, "{open} connections open");
    }
    server.assert_alive();

    // What hyper refuses itself is recorded: a URI too long, too many headers.
    let long = format!(
        "GET /?{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70_000)
    );
    let status = raw_request(server.addr(), &ca, &long).await;
    assert!(status.starts_with("HTTP/1.1 414"), "{status}");
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n");
    let status = raw_request(server.addr(), &ca, &head).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");

    // The silent connections are closed by the server (first-request timeout: 10 s).
    all_closed(tcp).await;
    all_closed(tls).await;
    all_closed(from_one).await;
    c.wait_metric("vmie_connections", |v| v <= 1.0).await;
    c.round().await;
    server.assert_alive();
    assert!(terminate(&mut server.child).success());

    let recs = records(&data);
    for code in ["RequestURITooLong", "RequestHeaderFieldsTooLarge"] {
        assert!(
            recs.iter().any(|r| r["errorCode"] == code
                && r["eventName"] == "UnknownAction"
                && r["sourceIPAddress"] == "127.0.0.1"),
            "no record of {code}"
        );
    }
    // The summaries (one a minute, and the last when the server stopped).
    let summaries: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["eventName"] == "ConnectionsRefused")
        .collect();
    assert!(!summaries.is_empty(), "no ConnectionsRefused record");
    let text: String = summaries
        .iter()
        .map(|r| {
            assert_eq!(r["errorCode"], "ConnectionLimitExceeded", "{r}");
            assert_eq!(r["eventType"], "AwsServiceEvent", "{r}");
            assert_eq!(r["serviceEventDetails"]["max"], 768, "{r}");
            r["errorMessage"].as_str().unwrap().to_string()
        })
        .collect();
    let per_ip: u64 = summaries
        .iter()
        .filter_map(|r| r["serviceEventDetails"]["refused"]["per-ip"].as_u64())
        .sum();
    assert_eq!(per_ip, 44);
    for want in [
        "evicted",
        "per-ip 44",
        "first-request-timeout",
        "127.0.3.1 (",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }

    // 2. A cap above what the limit allows: descriptors run out, accept fails, the server
    // goes on.
    let log2 = work.path().join("serve2.log");
    let (mut server, _) = serve(
        &data,
        &log2,
        &["--max-connections", "4000", "--idle-timeout", "5"],
    );
    let c = Client::new(&server, &data, key);
    c.round().await;
    let idle = flood(server.addr(), [127, 0, 4], 1200).await;
    // Queued behind the flood until the server has descriptors again.
    c.round().await;
    server.assert_alive();
    let errors = c.wait_metric("vmie_accept_errors_total", |v| v > 0.0).await;
    assert!(errors > 0.0);
    all_closed(idle).await;
    for _ in 0..5 {
        c.round().await;
    }
    server.assert_alive();
    assert!(terminate(&mut server.child).success());
    let log2 = std::fs::read_to_string(&log2).unwrap();
    assert!(
        log2.contains("is more than the open-files limit")
            && log2.contains("accept failed")
            && log2.contains("Too many open files"),
        "{log2}"
    );
}
