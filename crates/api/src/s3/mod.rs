//! S3 on the endpoint: the deployment's buckets ([`store`]) served with the S3 protocol of
//! the `s3s` crate — path-style and virtual-host style (`BUCKET.HOST`), SigV4 in the header
//! or presigned, `aws-chunked` bodies — with vmie's identities ([`auth`]: access keys,
//! session tokens) and vmie's one authorization: each S3 operation is a row of the action
//! table ([`actions`]), decided by [`crate::authz`] on its declaration before it runs
//! ([`service`]). Every call, allowed or refused, leaves its activity record
//! (`eventSource` `s3.amazonaws.com`; bucket and key are recorded, bodies and signatures
//! never).
//!
//! A request is for S3 ([`is_s3`]) when it is signed for the service `s3` (the
//! `Authorization` header's or `X-Amz-Credential`'s scope), addresses a bucket by its host
//! (`BUCKET.localhost`, `BUCKET.` one of the server's names), or has a path other than `/`.
//! Everything else goes to EC2, STS and CloudTrail as before.

pub mod actions;
pub mod auth;
pub mod service;
pub mod sse;
pub mod store;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::handler::Env;
use crate::identity::Principal;
use crate::spec::Spec;

pub use crate::handler::S3Target as Target;

/// The caller of an authorized S3 request, for operations that authorize more once they
/// have read their body (DeleteObjects) or name a second object (CopyObject).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub who: Principal,
    /// From where.
    pub origin: crate::handler::Origin,
}

/// What one S3 request's activity record says, filled in as it is answered.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) spec: Option<&'static Spec>,
    pub(crate) who: Option<Principal>,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) error: Option<ApiError>,
}

/// Shared between the request's steps (the access hook, the operation) and the endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slot(pub(crate) Arc<Mutex<Seen>>);

impl Slot {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> Option<T> {
        self.0.lock().ok().map(|mut g| f(&mut g))
    }
}

/// The S3 endpoint.
#[derive(Clone)]
pub struct Endpoint {
    service: s3s::service::S3Service,
    env: Env,
    domains: Arc<Vec<String>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

/// The bucket a virtual-host `Host` names (`BUCKET.DOMAIN`), if any.
fn virtual_bucket<'a>(host: &'a str, domains: &[String]) -> Option<(&'a str, &'a str)> {
    let name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    for d in domains {
        if name.len() > d.len() + 1
            && name.as_bytes()[name.len() - d.len() - 1] == b'.'
            && name[name.len() - d.len()..].eq_ignore_ascii_case(d)
        {
            let bucket = &name[..name.len() - d.len() - 1];
            return Some((bucket, &host[name.len() - d.len()..]));
        }
    }
    None
}

/// The SigV4 scope's service a request names, from `Authorization` or `X-Amz-Credential`.
fn signed_service(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let cred = if let Some(a) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        a.split("Credential=")
            .nth(1)?
            .split([',', ' '])
            .next()?
            .to_string()
    } else {
        let q = uri.query()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "X-Amz-Credential")?
            .1
            .into_owned()
    };
    // AKID/DATE/REGION/SERVICE/aws4_request
    cred.split('/').nth(3).map(str::to_string)
}

/// Whether a request is for S3 (see the module's documentation).
#[must_use]
pub fn is_s3(uri: &Uri, headers: &HeaderMap, domains: &[String]) -> bool {
    named_s3(uri, headers, domains) || (signed_service(headers, uri).is_none() && uri.path() != "/")
}

/// Whether a request says it is for S3: signed for `s3`, or addressed to a bucket's host.
#[must_use]
pub fn named_s3(uri: &Uri, headers: &HeaderMap, domains: &[String]) -> bool {
    if let Some(s) = signed_service(headers, uri) {
        return s == "s3";
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(axum::http::uri::Authority::as_str))
        .unwrap_or_default();
    virtual_bucket(host, domains).is_some()
}

/// The names the server answers to, whose sub-domains name buckets: `localhost` and the
/// given host names (IP addresses cannot have sub-domains).
#[must_use]
pub fn domains(names: &[String]) -> Vec<String> {
    let mut out = vec!["localhost".to_string()];
    for n in names {
        let n = n.to_ascii_lowercase();
        if n.parse::<IpAddr>().is_err() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

struct Hosts(Arc<Vec<String>>);

impl s3s::host::S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        Ok(match virtual_bucket(host, &self.0) {
            Some((bucket, domain)) => s3s::host::VirtualHost::new(domain).with_bucket(bucket),
            None => s3s::host::VirtualHost::new(host),
        })
    }
}

impl Endpoint {
    /// The S3 endpoint over `env`'s buckets, with virtual hosts under `domains`, its callers
    /// held to `limiter`'s per-user rate.
    pub fn new(
        env: &Env,
        domains: Vec<String>,
        limiter: Arc<crate::limiter::Limiter>,
    ) -> Result<Endpoint, String> {
        let store = store::Store::new(env.engine.sources().clone())?;
        let domains = Arc::new(domains);
        let mut b = s3s::service::S3ServiceBuilder::new(service::Vmie {
            store,
            env: env.clone(),
        });
        b.set_auth(auth::Auth {
            identity: env.identity.clone(),
        });
        b.set_access(auth::Access {
            env: env.clone(),
            limiter,
        });
        b.set_host(Hosts(domains.clone()));
        let mut cfg = s3s::config::S3Config::default();
        // CompleteMultipartUpload of 10,000 parts, DeleteObjects of 1,000 keys.
        cfg.xml_max_body_size = 4 << 20;
        // HTML form uploads are refused before s3s sees them; bound them anyway.
        cfg.post_object_max_file_size = 0;
        cfg.form_max_field_size = 4096;
        cfg.form_max_fields_size = 16384;
        cfg.form_max_parts = 16;
        b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            cfg,
        ))));
        Ok(Endpoint {
            service: b.build(),
            env: env.clone(),
            domains,
        })
    }

    /// The domains whose sub-domains name buckets.
    #[must_use]
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Answers one S3 request from `peer`, then records it.
    pub async fn call(
        &self,
        req: axum::http::Request<axum::body::Body>,
        peer: IpAddr,
        secure: bool,
    ) -> Response {
        let time_ms = catalog::now_ms();
        let rid = crate::audit::event_id();
        let (mut parts, body) = req.into_parts();
        let slot = Slot::default();
        parts.extensions.insert(slot.clone());
        parts.extensions.insert(crate::handler::Origin {
            source_ip: peer,
            secure,
            mfa: false,
        });
        let method = parts.method.clone();
        let uri = parts.uri.clone();
        let headers = parts.headers.clone();
        let refused = method == Method::POST
            && headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        let resp = if refused {
            // Browser-form uploads (POST Object) are not served: s3s would read the whole
            // file into memory before any check.
            s3_error_response(
                501,
                "NotImplemented",
                "POST uploads from HTML forms are not served; use PUT",
                &rid,
            )
        } else {
            let req = axum::http::Request::from_parts(parts, s3s::Body::http_body_unsync(body));
            match self.service.call(req).await {
                Ok(r) => {
                    let (p, b) = r.into_parts();
                    Response::from_parts(p, axum::body::Body::new(b))
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "S3 request failed");
                    s3_error_response(500, "InternalError", "the request failed", &rid)
                }
            }
        };
        let (resp, err) = error_of(resp).await;
        let status = resp.status().as_u16();
        self.record(
            &slot, &method, &uri, &headers, peer, time_ms, &rid, status, err,
        )
        .await;
        let mut resp = resp;
        if let Ok(v) = header::HeaderValue::from_str(&rid) {
            resp.headers_mut().insert("x-amz-request-id", v);
        }
        resp
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        slot: &Slot,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        peer: IpAddr,
        time_ms: i64,
        rid: &str,
        status: u16,
        err: Option<ApiError>,
    ) {
        let Some(audit) = &self.env.audit else { return };
        let (spec, who, params, denied) = slot
            .with(|s| {
                (
                    s.spec,
                    s.who.clone(),
                    std::mem::take(&mut s.params),
                    s.error.take(),
                )
            })
            .unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let spec = spec.or_else(|| guess(method, uri, host, &self.domains));
        let params = if params.is_empty() {
            auth::record_params(uri, headers, &self.domains)
        } else {
            params
        };
        let form: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let params = crate::query::Params::parse(form.as_bytes()).ok();
        let error = denied.or(err).or_else(|| {
            (status >= 400).then(|| ApiError {
                status,
                code: "UnknownError".into(),
                message: String::new(),
            })
        });
        let key_id = auth::access_key_of(headers, uri);
        let account = if who.is_none() {
            match &key_id {
                Some(k) => self
                    .env
                    .identity
                    .catalog()
                    .access_key(k)
                    .await
                    .ok()
                    .flatten()
                    .map(|k| k.account),
                None => None,
            }
        } else {
            None
        };
        let ua = headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let mut r = audit.call_record(&crate::audit::Call {
            source: crate::spec::Service::S3.event_source(),
            action: spec.map_or("UnknownAction", |s| s.name),
            spec,
            time_ms,
            source_ip: peer,
            user_agent: &ua,
            who: who.as_ref(),
            access_key_id: key_id.as_deref(),
            params: params.as_ref(),
            response: None,
            error: error.as_ref(),
            request_id: rid,
            account: account.as_deref(),
        });
        // Object-level calls and listings are CloudTrail's data events.
        let management = spec.is_some_and(|s| {
            matches!(
                s.name,
                "ListBuckets" | "CreateBucket" | "DeleteBucket" | "GetBucketLocation"
            )
        });
        if let Some(o) = r.as_object_mut()
            && !management
        {
            o.insert("managementEvent".into(), serde_json::json!(false));
            o.insert("eventCategory".into(), serde_json::json!("Data"));
        }
        audit.writer().record(r);
    }
}

/// The operation a request would be, for the record of one refused before s3s named it
/// (a bad signature, say); never used to authorize.
fn guess(method: &Method, uri: &Uri, host: &str, domains: &[String]) -> Option<&'static Spec> {
    let vh = virtual_bucket(host, domains).is_some();
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = match (vh, path.split_once('/')) {
        (true, _) => (true, !path.is_empty()),
        (false, Some((_, k))) => (true, !k.is_empty()),
        (false, None) => (!path.is_empty(), false),
    };
    let q = uri.query().unwrap_or_default();
    let has = |n: &str| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == n);
    let name = match (method.as_str(), bucket, key) {
        ("GET", false, _) => "ListBuckets",
        ("PUT", true, false) => "CreateBucket",
        ("DELETE", true, false) => "DeleteBucket",
        ("HEAD", true, false) => "HeadBucket",
        ("GET", true, false) if has("location") => "GetBucketLocation",
        ("GET", true, false) if has("list-type") => "ListObjectsV2",
        ("GET", true, false) => "ListObjects",
        ("POST", true, false) => "DeleteObjects",
        ("PUT", true, true) if has("partNumber") => "UploadPart",
        ("PUT", true, true) => "PutObject",
        ("GET", true, true) if has("uploadId") => "ListParts",
        ("GET", true, true) => "GetObject",
        ("HEAD", true, true) => "HeadObject",
        ("DELETE", true, true) if has("uploadId") => "AbortMultipartUpload",
        ("DELETE", true, true) => "DeleteObject",
        ("POST", true, true) if has("uploads") => "CreateMultipartUpload",
        ("POST", true, true) => "CompleteMultipartUpload",
        _ => return None,
    };
    crate::action::Action::spec_of(crate::spec::Service::S3, name)
}

fn s3_error_response(status: u16, code: &str, message: &str, rid: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>{}</RequestId></Error>",
        quick_xml::escape::escape(code),
        quick_xml::escape::escape(message),
        quick_xml::escape::escape(rid)
    );
    (
        axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

/// An error answer's code and message (its body is read, at most 64 KiB, and put back).
async fn error_of(resp: Response) -> (Response, Option<ApiError>) {
    let status = resp.status().as_u16();
    if status < 400 {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let i = text.find(&open)? + open.len();
        let j = text[i..].find(&format!("</{tag}>"))?;
        Some(text[i..i + j].to_string())
    };
    let e = ApiError {
        status,
        code: field("Code").unwrap_or_else(|| format!("HTTP{status}")),
        message: field("Message").unwrap_or_default(),
    };
    (
        Response::from_parts(parts, axum::body::Body::from(bytes)),
        Some(e),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        let d = domains(&["vmie.example".into(), "10.0.0.1".into()]);
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap_or(header::HOST),
                    header::HeaderValue::from_str(v)
                        .unwrap_or(header::HeaderValue::from_static("")),
                );
            }
            m
        };
        let u = |s: &str| s.parse::<Uri>().unwrap_or_default();
        let s3 = "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
        let ec2 = "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00";
        assert!(is_s3(&u("/"), &h(&[("authorization", s3)]), &d));
        assert!(!is_s3(&u("/"), &h(&[("authorization", ec2)]), &d));
        assert!(!is_s3(&u("/b/k"), &h(&[("authorization", ec2)]), &d));
        assert!(is_s3(&u("/b/k"), &h(&[]), &d));
        assert!(!is_s3(
            &u("/?Action=DescribeRegions"),
            &h(&[("host", "localhost:8443")]),
            &d
        ));
        assert!(is_s3(&u("/"), &h(&[("host", "images.localhost:8443")]), &d));
        assert!(is_s3(&u("/"), &h(&[("host", "b.vmie.example")]), &d));
        assert!(!is_s3(&u("/"), &h(&[("host", "vmie.example")]), &d));
        assert!(is_s3(
            &u("/b/k?X-Amz-Credential=AKIA%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"),
            &h(&[]),
            &d
        ));
        assert_eq!(
            virtual_bucket("images.localhost:8443", &d),
            Some(("images", "localhost:8443"))
        );
        assert_eq!(virtual_bucket("localhost:8443", &d), None);
    }
}
