//! The HTTPS server: TLS 1.2+ (rustls with aws-lc-rs), a self-signed certificate made on
//! first start unless one is given, plain HTTP only when asked for and only on a loopback
//! address; body size limit, header and request timeouts; `GET /healthz`, Prometheus
//! `GET /metrics`, and the EC2 Query endpoint at `/`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::ec2::{ApiError, Ec2, Origin};
use crate::query::Params;
use crate::sigv4;
use crate::xml;

/// Largest request body accepted (EC2 Query requests are small).
pub const MAX_BODY: usize = 1 << 20;
/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one request, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server listens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address and port.
    pub listen: SocketAddr,
    /// TLS certificate and key (PEM); `None` with `plain_http` serves plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve plain HTTP (refused unless `listen` is a loopback address).
    pub plain_http: bool,
    /// Requests a second per principal (bursts of twice as many); 0: no limit.
    pub rate_limit: u32,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    errors: AtomicU64,
    auth_failures: AtomicU64,
}

#[derive(Clone)]
struct App {
    ec2: Ec2,
    metrics: Arc<Metrics>,
    limiter: Arc<Limiter>,
}

/// Per-principal token buckets: `rate` requests a second, bursts of `2 × rate`.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl Limiter {
    /// A limiter of `rate` requests a second per principal (0: no limit).
    #[must_use]
    pub fn new(rate: u32) -> Self {
        Limiter {
            rate: f64::from(rate),
            buckets: std::sync::Mutex::default(),
        }
    }

    /// Takes a token for `who`; false when its bucket is empty.
    pub fn allow(&self, who: &str) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        if b.len() > 100_000 {
            b.clear();
        }
        let now = std::time::Instant::now();
        let burst = self.rate * 2.0;
        let e = b.entry(who.to_string()).or_insert((burst, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * self.rate).min(burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limiter;

    #[test]
    fn buckets_refill_and_are_per_principal() {
        let l = Limiter::new(5);
        let granted = (0..20).filter(|_| l.allow("a")).count();
        assert_eq!(granted, 10, "a burst of twice the rate");
        assert!(l.allow("b"));
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(l.allow("a"), "refilled at the rate");
        assert!((0..100).all(|_| Limiter::new(0).allow("x")));
    }
}

#[derive(Clone, Copy)]
struct Peer {
    addr: IpAddr,
    secure: bool,
}

/// Makes (once) a self-signed certificate for `names` in `dir` (`cert.pem`, `key.pem`, the
/// key mode 0600); returns their paths.
pub fn self_signed(dir: &Path, names: &[String]) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir)?;
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| std::io::Error::other(format!("making the certificate: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)?;
    std::io::Write::write_all(&mut f, made.signing_key.serialize_pem().as_bytes())?;
    f.sync_all()?;
    std::fs::write(&cert, made.cert.pem())?;
    Ok((cert, key))
}

fn tls_config(cert: &Path, key: &Path) -> std::io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &Path, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("{}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(cert, &e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn request_id() -> String {
    let mut b = [0u8; 16];
    kms::aead::random(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn xml_response(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn error_response(e: &ApiError, rid: &str) -> Response {
    xml_response(e.status, xml::error(&e.code, &e.message, rid))
}

async fn ec2_endpoint(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id();
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let hs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let query = uri.query().unwrap_or("");
    let req = sigv4::Request {
        method: method.as_str(),
        path: uri.path(),
        query,
        headers: &hs,
        body: &body,
    };
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(0);
    // Requests signed for STS (GetSessionToken) share the endpoint, as with a custom
    // endpoint URL the CLI sends both to the same place.
    let sts = sigv4::parse(&req).is_ok_and(|s| s.service == "sts");
    let service = if sts { "sts" } else { "ec2" };
    let who = match app
        .ec2
        .identity
        .authenticate(&req, &app.ec2.region, service, now)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            app.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(code = e.code(), source = %peer.addr, "request refused at authentication");
            let err = ApiError {
                status: if e.code() == "AuthFailure" { 401 } else { 403 },
                code: if sts && e.code() == "RequestExpired" && e.to_string().contains("token") {
                    "ExpiredToken".into()
                } else {
                    e.code().into()
                },
                message: e.to_string(),
            };
            if sts {
                return xml_response(err.status, crate::sts::error(&err, &rid));
            }
            return error_response(&err, &rid);
        }
    };
    if !app.limiter.allow(&who.arn) {
        app.metrics.errors.fetch_add(1, Ordering::Relaxed);
        return error_response(
            &ApiError {
                status: 503,
                code: "RequestLimitExceeded".into(),
                message: "Request limit exceeded: slow down and retry with backoff".into(),
            },
            &rid,
        );
    }
    // Parameters: the form body, and the query string without the presigning parameters.
    let mut form: Vec<u8> = Vec::new();
    for pair in query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("X-Amz-"))
    {
        form.extend_from_slice(pair.as_bytes());
        form.push(b'&');
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        form.extend_from_slice(&body);
    }
    let result = match Params::parse(&form) {
        Ok(p) => {
            let origin = Origin {
                source_ip: peer.addr,
                secure: peer.secure,
                mfa: who.mfa,
            };
            let action = p.get("Action").unwrap_or("").to_string();
            if sts {
                let r = crate::sts::handle(&app.ec2.identity, &who, &p, &rid, now).await;
                tracing::info!(action = %engine::request::shown(&action), user = %who.arn, ok = r.is_ok(), request = %rid, "sts request");
                return match r {
                    Ok(body) => xml_response(200, body),
                    Err(e) => {
                        app.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        xml_response(e.status, crate::sts::error(&e, &rid))
                    }
                };
            }
            let r = app.ec2.handle(&who, &origin, &p, &rid).await;
            tracing::info!(action = %engine::request::shown(&action), user = %who.arn, ok = r.is_ok(), request = %rid, "request");
            r
        }
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(body) => xml_response(200, body),
        Err(e) => {
            app.metrics.errors.fetch_add(1, Ordering::Relaxed);
            error_response(&e, &rid)
        }
    }
}

async fn metrics_endpoint(State(app): State<App>) -> Response {
    let s = app.ec2.engine.stats();
    let m = &app.metrics;
    let counters = [
        ("vmie_requests_total", "API requests received", &m.requests),
        (
            "vmie_request_errors_total",
            "API requests answered with an error",
            &m.errors,
        ),
        (
            "vmie_auth_failures_total",
            "API requests refused at authentication",
            &m.auth_failures,
        ),
        (
            "vmie_bytes_imported_total",
            "bytes of virtual disk decoded by imports",
            &s.bytes_imported,
        ),
        (
            "vmie_bytes_exported_total",
            "bytes written by exports",
            &s.bytes_exported,
        ),
        (
            "vmie_tasks_completed_total",
            "tasks completed by this process",
            &s.completed,
        ),
        (
            "vmie_tasks_failed_total",
            "tasks failed in this process",
            &s.failed,
        ),
        (
            "vmie_tasks_cancelled_total",
            "tasks cancelled in this process",
            &s.cancelled,
        ),
    ];
    let mut out = String::new();
    for (name, help, v) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    out.push_str(
        "# HELP vmie_tasks Tasks in the catalog by kind and status\n# TYPE vmie_tasks gauge\n",
    );
    match app.ec2.engine.catalog().task_counts().await {
        Ok(rows) => {
            for (kind, status, n) in rows {
                out.push_str(&format!(
                    "vmie_tasks{{kind=\"{kind}\",status=\"{status}\"}} {n}\n"
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: task counts unavailable"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The router (without TLS), for embedding and tests.
fn router(ec2: Ec2, metrics: Arc<Metrics>, limiter: Arc<Limiter>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_endpoint))
        .route("/", any(ec2_endpoint))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(App {
            ec2,
            metrics,
            limiter,
        })
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    ec2: Ec2,
    cfg: ServeConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let tls = match (&cfg.tls, cfg.plain_http) {
        (_, true) if !cfg.listen.ip().is_loopback() => {
            return Err(std::io::Error::other(
                "plain HTTP is served only on a loopback address; use TLS (the default) to listen elsewhere",
            ));
        }
        (_, true) => None,
        (Some((c, k)), false) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(c, k)?))),
        (None, false) => return Err(std::io::Error::other("TLS needs a certificate and a key")),
    };
    let listener = TcpListener::bind(cfg.listen).await?;
    let app = router(
        ec2,
        Arc::new(Metrics::default()),
        Arc::new(Limiter::new(cfg.rate_limit)),
    );
    loop {
        let (sock, addr) = tokio::select! {
            r = listener.accept() => r?,
            _ = shutdown.changed() => return Ok(()),
        };
        let _ = sock.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let peer = Peer {
                addr: addr.ip(),
                secure: tls.is_some(),
            };
            let svc = TowerToHyperService::new(app.layer(Extension(peer)).layer(
                tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                ),
            ));
            let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            http.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(15));
            let r = match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await
                    else {
                        return;
                    };
                    http.serve_connection(TokioIo::new(stream), svc).await
                }
                None => http.serve_connection(TokioIo::new(sock), svc).await,
            };
            if let Err(e) = r {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        });
    }
}
