//! The HTTPS server: TLS 1.2+ (rustls with aws-lc-rs) with the certificate [`crate::tls`]
//! keeps current, plain HTTP only when asked for and only on a loopback address; the
//! connection limits and timeouts of [`crate::conn`]; body size limit and request timeout;
//! `GET /healthz`, Prometheus `GET /metrics`, and the EC2 Query endpoint at `/`.
//!
//! Every request the server refuses is in the activity log: those the endpoint answers
//! (413, 408, and all of the API's), and those hyper answers itself before the endpoint
//! sees them (a malformed request: 400; a URI or headers too large: 414, 431). Refusals of
//! connections — over the cap or the per-address limit, a failed TLS handshake, silence
//! after connecting — are counted in `/metrics` and summed up once a minute in the service
//! log and in one `ConnectionsRefused` record, not one record each.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::action::{Action, Input, Service, Spec};
use crate::dispatch::{Env, Origin, dispatch};
use crate::error::ApiError;
use crate::identity::Principal;
use crate::query::Params;
use crate::sigv4;
use crate::xml;

/// Largest request body accepted (EC2 Query requests are small).
pub const MAX_BODY: usize = 1 << 20;
/// An over-limit body up to this size is read and discarded before the 413 answer, so that a
/// client still sending it gets the answer instead of a reset connection (a bounded form of
/// "lingering close"); a larger one is answered at once and the connection closed.
const DRAIN_MAX: usize = 8 * MAX_BODY;
/// Time allowed for one request, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often refused connections are summed up in the logs.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

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
    /// The certificate is vmie's own self-signed one for these names: renewed while the
    /// server runs (`None`: the operator's files, loaded again when they change).
    pub own_cert: Option<Vec<String>>,
    /// Connection limits and timeouts.
    pub limits: crate::conn::Limits,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    errors: AtomicU64,
    auth_failures: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) env: Env,
    metrics: Arc<Metrics>,
    limiter: Arc<Limiter>,
    gate: Option<Arc<crate::conn::Gate>>,
    pub(crate) s3: crate::s3::Endpoint,
}

/// Who a request to the Query and JSON endpoint comes from.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// Whoever signed it (SigV4).
    Signed,
    /// A signed-in console session (`crate::console`), for `service`.
    Console(Box<Principal>, Service),
}

pub use crate::limiter::Limiter;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{DRAIN_MAX, MAX_BODY, read_body};
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, HeaderValue, header};

    fn streamed(sizes: &[usize]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; *n])))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    fn declared(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        h
    }

    #[tokio::test]
    async fn bodies_are_bounded_and_over_limit_ones_drained_within_a_cap() {
        let ok = read_body(streamed(&[MAX_BODY / 2, MAX_BODY / 2]), &declared(MAX_BODY))
            .await
            .ok()
            .unwrap();
        assert_eq!(ok.len(), MAX_BODY);
        // One byte over: read to its end (the client gets the answer), then 413.
        let r = read_body(streamed(&[MAX_BODY, 1]), &HeaderMap::new()).await;
        let e = r.err().unwrap();
        assert_eq!((e.error.status, e.drained), (413, true));
        assert_eq!(e.error.code, "RequestEntityTooLarge");
        // Declared beyond the drain cap: answered without reading.
        let e = read_body(streamed(&[]), &declared(DRAIN_MAX + 1))
            .await
            .err()
            .unwrap();
        assert_eq!((e.error.status, e.drained), (413, false));
        // Streamed beyond the cap without a length: given up at the cap.
        let e = read_body(streamed(&[MAX_BODY; 9]), &HeaderMap::new())
            .await
            .err()
            .unwrap();
        assert_eq!((e.error.status, e.drained), (413, false));
        // A body that breaks off.
        let broken = Body::from_stream(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"Action=")),
            Err(std::io::Error::other("connection reset")),
        ]));
        let e = read_body(broken, &HeaderMap::new()).await.err().unwrap();
        assert_eq!(
            (e.error.status, e.error.code.as_str()),
            (400, "InvalidRequest")
        );
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) addr: IpAddr,
    pub(crate) secure: bool,
}

fn request_id() -> String {
    crate::audit::event_id()
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

/// What one request's activity record says; filled in as the request is answered.
struct Rec {
    service: Service,
    action: String,
    /// The action's table entry, once the action is known.
    spec: Option<&'static Spec>,
    who: Option<crate::identity::Principal>,
    key_id: Option<String>,
    params: Option<Params>,
    ok_body: Option<String>,
    error: Option<ApiError>,
    /// The account of a named key when authentication failed (the record goes to it).
    account: Option<String>,
}

fn json_response(status: u16, body: String, rid: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [
            (
                header::CONTENT_TYPE,
                "application/x-amz-json-1.1".to_string(),
            ),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                rid.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

/// A request body that was not accepted.
struct BodyRefusal {
    error: ApiError,
    /// The whole body was read, so the connection can carry on.
    drained: bool,
}

/// Reads a request body of at most [`MAX_BODY`] bytes. A larger one (by `Content-Length` or
/// as it streams) is refused with 413; up to [`DRAIN_MAX`] bytes of it are read and dropped
/// first, so that the client, which is usually still sending, reads the answer.
async fn read_body(body: axum::body::Body, headers: &HeaderMap) -> Result<Bytes, BodyRefusal> {
    use futures::StreamExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |drained| BodyRefusal {
        error: ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
            code: "RequestEntityTooLarge".into(),
            message: format!("the request body is larger than {MAX_BODY} bytes"),
        },
        drained,
    };
    if declared.is_some_and(|n| n > DRAIN_MAX as u64) {
        return Err(too_large(false));
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(
        declared.map_or(0, |n| usize::try_from(n).unwrap_or(MAX_BODY).min(MAX_BODY)),
    );
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyRefusal {
            error: ApiError {
                status: StatusCode::BAD_REQUEST.as_u16(),
                code: "InvalidRequest".into(),
                message: format!("the request body could not be read: {e}"),
            },
            drained: false,
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen > DRAIN_MAX {
            return Err(too_large(false));
        }
        if seen <= MAX_BODY {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY {
        return Err(too_large(true));
    }
    Ok(Bytes::from(buf))
}

/// The EC2 (and STS, and CloudTrail) endpoint: answers, then records the call.
pub(crate) async fn ec2_endpoint(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
    caller: Caller,
) -> Response {
    let rid = request_id();
    let time_ms = catalog::now_ms();
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let mut rec = Rec {
        service: Service::Ec2,
        action: String::new(),
        spec: None,
        who: None,
        key_id: None,
        params: None,
        ok_body: None,
        error: None,
        account: None,
    };
    let work = async {
        match read_body(body, &headers).await {
            Ok(body) => {
                let req = Received {
                    method: &method,
                    uri: &uri,
                    headers: &headers,
                    body: &body,
                };
                answer(&app, &peer, &req, &caller, &rid, &mut rec).await
            }
            // Too large, or unreadable: refused before anything else, and recorded too.
            Err(refusal) => {
                let mut r = error_response(&refusal.error, &rid);
                if !refusal.drained {
                    r.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
                rec.error = Some(refusal.error.clone());
                r
            }
        }
    };
    // Out of time (a body that trickles in, say): answered 408 and recorded like the rest.
    let resp = match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => {
            let e = ApiError {
                status: StatusCode::REQUEST_TIMEOUT.as_u16(),
                code: "RequestTimeout".into(),
                message: format!(
                    "the request was not received and answered within {} seconds",
                    REQUEST_TIMEOUT.as_secs()
                ),
            };
            let mut r = error_response(&e, &rid);
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            rec.error = Some(e);
            r
        }
    };
    if rec.error.is_some() {
        app.metrics.errors.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(audit) = &app.env.audit {
        let ua = headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        // An action the table does not know is recorded as `UnknownAction`.
        audit.call(&crate::audit::Call {
            source: rec.service.event_source(),
            action: rec.spec.map_or("UnknownAction", |s| s.name),
            spec: rec.spec,
            time_ms,
            source_ip: peer.addr,
            user_agent: &ua,
            who: rec.who.as_ref(),
            access_key_id: rec.key_id.as_deref(),
            params: rec.params.as_ref(),
            response: rec.ok_body.as_deref(),
            error: rec.error.as_ref(),
            request_id: &rid,
            account: rec.account.as_deref(),
        });
    }
    resp
}

/// The service a request is for: the SigV4 scope's service, or CloudTrail for a JSON
/// request (`X-Amz-Target`) that did not say; EC2 otherwise.
fn service_of(signed: Option<&sigv4::Signed>, target: Option<&str>) -> Service {
    match signed.map(|s| s.service.as_str()) {
        Some("sts") => Service::Sts,
        Some("cloudtrail") => Service::CloudTrail,
        Some("kms") => Service::Kms,
        Some("iam") => Service::Iam,
        _ if target.is_some_and(|t| t.starts_with("TrentService.")) => Service::Kms,
        _ if target.is_some() => Service::CloudTrail,
        _ => Service::Ec2,
    }
}

/// The Query parameters of a request: the query string without the presigning parameters,
/// then the form body. Both are decoded the one way SigV4 verification decoded them
/// ([`crate::query::decode_pairs`]).
fn query_params(query: &str, headers: &HeaderMap, body: &[u8]) -> Result<Params, ApiError> {
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
        form.extend_from_slice(body);
    }
    Ok(Params::parse(&form)?)
}

/// A request as read off the wire.
struct Received<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

async fn answer(
    app: &App,
    peer: &Peer,
    r: &Received<'_>,
    caller: &Caller,
    rid: &str,
    rec: &mut Rec,
) -> Response {
    let (method, uri, headers, body) = (r.method, r.uri, r.headers, r.body);
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
        body,
    };
    let now = catalog::now_ms() / 1000;
    // EC2, STS and CloudTrail share the endpoint: with a custom endpoint URL the CLI sends
    // them all to the same place.
    let signed = match caller {
        Caller::Signed => sigv4::parse(&req).ok(),
        Caller::Console(..) => None,
    };
    rec.key_id = signed.as_ref().map(|s| s.access_key_id.clone());
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let service = match caller {
        Caller::Signed => service_of(signed.as_ref(), target.as_deref()),
        Caller::Console(_, service) => *service,
    };
    rec.service = service;
    let fail = |rec: &mut Rec, e: ApiError| -> Response {
        let r = match service {
            Service::CloudTrail | Service::Kms => {
                json_response(e.status, crate::cloudtrail::error_body(&e), rid)
            }
            Service::Sts => xml_response(e.status, crate::sts::error(&e, rid)),
            Service::Iam => xml_response(e.status, crate::iam_api::error(&e, rid)),
            Service::Ec2 | Service::S3 => error_response(&e, rid),
        };
        rec.error = Some(e);
        r
    };
    // The action is named before authentication, so that a refused request is recorded
    // under it (with its parameters redacted by the table's rules).
    if service == Service::CloudTrail {
        rec.action = target
            .as_deref()
            .and_then(crate::cloudtrail::action_of_target)
            .unwrap_or("")
            .to_string();
    } else if service == Service::Kms {
        rec.action = target
            .as_deref()
            .and_then(|t| t.strip_prefix("TrentService."))
            .unwrap_or("")
            .to_string();
        // Recorded as the table's parameter kinds say (blobs and policies withheld).
        rec.params = crate::kms_api::recorded_params(body);
    } else {
        match query_params(query, headers, body) {
            Ok(p) => {
                rec.action = p.get("Action").unwrap_or("").to_string();
                rec.params = Some(p);
            }
            Err(e) => rec.error = Some(e),
        }
    }
    rec.spec = Action::spec_of(service, &rec.action);
    let authenticated = match caller {
        Caller::Signed => {
            app.env
                .identity
                .authenticate(&req, &app.env.region, service.name(), now)
                .await
        }
        Caller::Console(who, _) => Ok(Principal::clone(who)),
    };
    let who = match authenticated {
        Ok(p) => p,
        Err(e) => {
            app.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(code = e.code(), source = %peer.addr, "request refused at authentication");
            if let Some(k) = &rec.key_id {
                rec.account = app
                    .env
                    .identity
                    .catalog()
                    .access_key(k)
                    .await
                    .ok()
                    .flatten()
                    .map(|k| k.account);
            }
            // Each service names a failed authentication its own way: EC2 says `AuthFailure`
            // (401) for a wrong or unknown key and `RequestExpired` for a stale request; STS
            // and CloudTrail keep their finer codes.
            let (status, code) = match service {
                Service::CloudTrail => (403, crate::cloudtrail::auth_code(e.code()).to_string()),
                Service::Kms => (400, crate::cloudtrail::auth_code(e.code()).to_string()),
                Service::Sts | Service::Iam
                    if e.code() == "RequestExpired" && e.to_string().contains("token") =>
                {
                    (403, "ExpiredToken".into())
                }
                Service::Sts | Service::Iam if e.code() == "AuthFailure" => (401, e.code().into()),
                Service::Sts | Service::Iam => (403, e.code().into()),
                Service::Ec2 if e.code() == "RequestExpired" => (400, "RequestExpired".into()),
                Service::Ec2 | Service::S3 => (401, "AuthFailure".into()),
            };
            let err = ApiError {
                status,
                code,
                message: e.to_string(),
            };
            return fail(rec, err);
        }
    };
    rec.who = Some(who.clone());
    if !app.limiter.allow_async(&who.arn).await {
        return fail(
            rec,
            ApiError {
                status: 503,
                code: "RequestLimitExceeded".into(),
                message: "Request limit exceeded: slow down and retry with backoff".into(),
            },
        );
    }
    if let Some(e) = rec.error.take() {
        // The parameters did not parse.
        return fail(rec, e);
    }
    let Some(spec) = rec.spec else {
        let shown = engine::request::shown(if rec.action.is_empty() {
            "(none)"
        } else {
            &rec.action
        });
        let e = match service {
            Service::CloudTrail | Service::Kms => ApiError::client(
                "UnknownOperationException",
                format!("{shown} is not an operation this endpoint serves"),
            ),
            _ => ApiError::client(
                "InvalidAction",
                format!("the action {shown} is not valid for this web service"),
            ),
        };
        return fail(rec, e);
    };
    let origin = Origin {
        source_ip: peer.addr,
        secure: peer.secure,
        mfa: who.mfa,
    };
    let input = match &rec.params {
        Some(p) if !service.is_json() => Input::Query(p),
        _ => Input::Json(body),
    };
    let r = dispatch(&app.env, &who, &origin, spec, input, rid, now).await;
    tracing::info!(action = spec.name, user = %who.arn, ok = r.is_ok(), request = %rid, "{} request", service.name());
    match r {
        Ok(body) => {
            // Only a write action's answer goes into the record (its responseElements).
            if app.env.audit.is_some() && !spec.read_only {
                rec.ok_body = Some(body.clone());
            }
            if service.is_json() {
                json_response(200, body, rid)
            } else {
                xml_response(200, body)
            }
        }
        Err(e) => fail(rec, e),
    }
}

async fn metrics_endpoint(State(app): State<App>) -> Response {
    let s = app.env.engine.stats();
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
    if let Some(g) = &app.gate {
        let st = &g.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str(&format!(
            "# HELP vmie_connections Connections open now\n# TYPE vmie_connections gauge\nvmie_connections {}\n\
             # HELP vmie_connections_max Connections the server keeps open at most\n# TYPE vmie_connections_max gauge\nvmie_connections_max {}\n\
             # HELP vmie_connections_accepted_total Connections accepted from the listener\n# TYPE vmie_connections_accepted_total counter\nvmie_connections_accepted_total {}\n\
             # HELP vmie_accept_errors_total Accept errors survived (out of file descriptors, ...)\n# TYPE vmie_accept_errors_total counter\nvmie_accept_errors_total {}\n\
             # HELP vmie_connections_idle_closed_total Connections closed idle after their requests\n# TYPE vmie_connections_idle_closed_total counter\nvmie_connections_idle_closed_total {}\n\
             # HELP vmie_connections_refused_total Connections refused or closed by the server, by reason\n# TYPE vmie_connections_refused_total counter\n",
            get(&st.open),
            g.limits().max_connections,
            get(&st.accepted),
            get(&st.accept_errors),
            get(&st.idle_closed),
        ));
        for (reason, n) in st.refusals() {
            out.push_str(&format!(
                "vmie_connections_refused_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
    }
    out.push_str(
        "# HELP vmie_tasks Tasks in the catalog by kind and status\n# TYPE vmie_tasks gauge\n",
    );
    match app.env.engine.catalog().task_counts().await {
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
fn router(
    env: Env,
    metrics: Arc<Metrics>,
    limiter: Arc<Limiter>,
    gate: Option<Arc<crate::conn::Gate>>,
    domains: Vec<String>,
) -> std::io::Result<Router> {
    let s3 = crate::s3::Endpoint::new(&env, crate::s3::domains(&domains), limiter.clone())
        .map_err(std::io::Error::other)?;
    Ok(Router::new()
        .route("/healthz", any(healthz))
        .route("/metrics", any(metrics_or_s3))
        .route("/", any(root))
        .fallback(root)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(App {
            env,
            metrics,
            limiter,
            gate,
            s3,
        }))
}

/// An S3 request's body: streamed as it comes, but given up after [`REQUEST_TIMEOUT`]
/// without a byte (S3 bodies may take hours; a silent one may not).
pub(crate) fn s3_body(body: axum::body::Body, headers: &HeaderMap) -> axum::body::Body {
    use futures::StreamExt;
    // No body: say so exactly (s3s needs the length of what it verifies).
    let none = headers
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() == b"0")
        && !headers.contains_key(header::TRANSFER_ENCODING);
    if none {
        return axum::body::Body::empty();
    }
    let s = body.into_data_stream();
    let s = futures::stream::unfold(Some(s), |st| async move {
        let mut st = st?;
        match tokio::time::timeout(REQUEST_TIMEOUT, st.next()).await {
            Ok(Some(r)) => Some((r.map_err(std::io::Error::other), Some(st))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::other(
                    "no part of the request body arrived for 60 seconds",
                )),
                None,
            )),
        }
    });
    axum::body::Body::from_stream(s)
}

/// `/`, and every other path: S3 when the request is for S3 ([`crate::s3::is_s3`]),
/// otherwise the EC2, STS and CloudTrail endpoint.
async fn root(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    req: axum::extract::Request,
) -> Response {
    if crate::console::is_console(req.uri(), req.headers(), app.s3.domains()) {
        app.metrics.requests.fetch_add(1, Ordering::Relaxed);
        return crate::console::handle(&app, &peer, req).await;
    }
    let (parts, body) = req.into_parts();
    if crate::s3::is_s3(&parts.uri, &parts.headers, app.s3.domains()) {
        app.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let body = s3_body(body, &parts.headers);
        let req = axum::http::Request::from_parts(parts, body);
        let r = app.s3.call(req, peer.addr, peer.secure).await;
        if r.status().as_u16() >= 400 {
            app.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        return r;
    }
    ec2_endpoint(
        State(app),
        Extension(peer),
        parts.method,
        parts.uri,
        parts.headers,
        body,
        Caller::Signed,
    )
    .await
}

/// `GET /healthz`, unless the request is S3's (a bucket named `healthz`).
async fn healthz(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    req: axum::extract::Request,
) -> Response {
    if crate::s3::named_s3(req.uri(), req.headers(), app.s3.domains()) {
        return root(State(app), Extension(peer), req).await;
    }
    "ok\n".into_response()
}

/// `GET /metrics`, unless the request is S3's (a bucket named `metrics`).
async fn metrics_or_s3(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    req: axum::extract::Request,
) -> Response {
    if crate::s3::named_s3(req.uri(), req.headers(), app.s3.domains()) {
        return root(State(app), Extension(peer), req).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, metrics_endpoint(State(app))).await {
        Ok(r) => r,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// Records a request hyper refused itself (malformed, URI or headers too large) before
/// the endpoint saw it: hyper has answered it (400, 414 or 431).
fn record_http_refusal(audit: &crate::audit::Audit, peer: SocketAddr, e: &hyper::Error) {
    let text = e.to_string();
    let (status, code) = if text.contains("URI too long") {
        (414, "RequestURITooLong")
    } else if e.is_parse_too_large() {
        (431, "RequestHeaderFieldsTooLarge")
    } else {
        (400, "MalformedHTTPRequest")
    };
    let error = ApiError {
        status,
        code: code.into(),
        message: format!("the request was refused before it was read: {text} (HTTP {status})"),
    };
    audit.call(&crate::audit::Call {
        source: "ec2.amazonaws.com",
        action: "UnknownAction",
        spec: None,
        time_ms: catalog::now_ms(),
        source_ip: peer.ip(),
        user_agent: "",
        who: None,
        access_key_id: None,
        params: None,
        response: None,
        error: Some(&error),
        request_id: &request_id(),
        account: None,
    });
}

/// Sums up, every [`SUMMARY_EVERY`] and once more when `shutdown` turns true, the
/// connections refused or closed since the last time: one warning in the service log and
/// one `ConnectionsRefused` record.
async fn summarize(
    gate: Arc<crate::conn::Gate>,
    audit: Option<Arc<crate::audit::Audit>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut before = gate.stats.refusals();
    let mut stop = false;
    while !stop {
        tokio::select! {
            () = tokio::time::sleep(SUMMARY_EVERY) => {}
            _ = shutdown.changed() => stop = true,
        }
        let now = gate.stats.refusals();
        let recent = gate.take_recent();
        let Some(&(top, _)) = recent.first() else {
            before = now;
            continue;
        };
        let counts: Vec<String> = now
            .iter()
            .zip(&before)
            .filter(|((reason, n), (_, b))| *reason != "http" && n > b)
            .map(|((reason, n), (_, b))| format!("{reason} {}", n - b))
            .collect();
        let before_summary = before;
        before = now;
        let sources: Vec<String> = recent
            .iter()
            .take(5)
            .map(|(ip, n)| format!("{ip} ({n})"))
            .collect();
        let total: u64 = recent.iter().map(|(_, n)| n).sum();
        let message = format!(
            "{total} connections refused or closed by the server in the last {} s: {}; from {}{}",
            SUMMARY_EVERY.as_secs(),
            counts.join(", "),
            sources.join(", "),
            if recent.len() > 5 { ", …" } else { "" }
        );
        tracing::warn!(open = gate.stats.open.load(Ordering::Relaxed), "{message}");
        if let Some(a) = &audit {
            let error = ApiError {
                status: 503,
                code: "ConnectionLimitExceeded".into(),
                message,
            };
            // Not a call anybody made: the service's own event, with the figures.
            let mut r = a.call_record(&crate::audit::Call {
                source: "ec2.amazonaws.com",
                action: "ConnectionsRefused",
                spec: None,
                time_ms: catalog::now_ms(),
                source_ip: top,
                user_agent: "",
                who: None,
                access_key_id: None,
                params: None,
                response: None,
                error: Some(&error),
                request_id: &request_id(),
                account: None,
            });
            if let Some(o) = r.as_object_mut() {
                o.insert("eventType".into(), serde_json::json!("AwsServiceEvent"));
                o.insert(
                    "userIdentity".into(),
                    serde_json::json!({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}),
                );
                let by_reason: serde_json::Map<String, serde_json::Value> = now
                    .iter()
                    .zip(&before_summary)
                    .filter(|((reason, n), (_, b))| *reason != "http" && n > b)
                    .map(|((reason, n), (_, b))| ((*reason).to_string(), serde_json::json!(n - b)))
                    .collect();
                let sources: Vec<serde_json::Value> = recent
                    .iter()
                    .take(5)
                    .map(|(ip, n)| serde_json::json!({"address": ip.to_string(), "count": n}))
                    .collect();
                o.insert(
                    "serviceEventDetails".into(),
                    serde_json::json!({
                        "refused": by_reason,
                        "sources": sources,
                        "addresses": recent.len(),
                        "open": gate.stats.open.load(Ordering::Relaxed),
                        "max": gate.limits().max_connections,
                    }),
                );
            }
            a.writer().record(r);
        }
    }
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    env: Env,
    cfg: ServeConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let certs = match (&cfg.tls, cfg.plain_http) {
        (_, true) if !cfg.listen.ip().is_loopback() => {
            return Err(std::io::Error::other(
                "plain HTTP is served only on a loopback address; use TLS (the default) to listen elsewhere",
            ));
        }
        (_, true) => None,
        (Some((c, k)), false) => Some(Arc::new(crate::tls::Certs::load(
            c,
            k,
            cfg.own_cert.clone(),
        )?)),
        (None, false) => return Err(std::io::Error::other("TLS needs a certificate and a key")),
    };
    let tls = match &certs {
        Some(c) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            c.server_config()?,
        ))),
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen).await?;
    let limiter = if env.engine.catalog().backend() == catalog::Backend::Postgres {
        Limiter::shared(cfg.rate_limit, env.engine.catalog().clone())
    } else {
        Limiter::new(cfg.rate_limit)
    };
    let gate = crate::conn::Gate::new(cfg.limits.clone());
    let audit = env.audit.clone();
    let metrics = Arc::new(Metrics::default());
    let mut names = cfg.own_cert.clone().unwrap_or_default();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(h.trim().to_string());
    }
    let app = router(
        env,
        metrics.clone(),
        Arc::new(limiter),
        Some(gate.clone()),
        names,
    )?;
    if let Some(c) = &certs {
        tokio::spawn(c.clone().run_refresher(shutdown.clone()));
    }
    let summary = tokio::spawn(summarize(gate.clone(), audit.clone(), shutdown.clone()));
    let make_svc = move |peer: SocketAddr, secure: bool| {
        let peer = Peer {
            addr: peer.ip(),
            secure,
        };
        // The EC2 endpoint times its requests out itself (and records them), `/metrics`
        // too; S3 bodies stream for as long as they keep coming (see `s3_body`).
        TowerToHyperService::new(app.clone().layer(Extension(peer)))
    };
    let ended = move |peer: SocketAddr, why: &crate::conn::Ended| {
        if let crate::conn::Ended::Http(e) = why {
            match e.downcast_ref::<hyper::Error>() {
                Some(h) if h.is_parse() || h.is_parse_too_large() => {
                    // A request the server answered (hyper did): counted and recorded.
                    metrics.requests.fetch_add(1, Ordering::Relaxed);
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %peer, error = %h, "request refused before it was read");
                    if let Some(a) = &audit {
                        record_http_refusal(a, peer, h);
                    }
                }
                _ => tracing::debug!(peer = %peer, error = %e, "connection ended with an error"),
            }
        }
    };
    crate::conn::run(listener, gate, tls, make_svc, ended, shutdown).await;
    // The last summary is queued before the caller writes the log's last batch.
    let _ = summary.await;
    Ok(())
}
