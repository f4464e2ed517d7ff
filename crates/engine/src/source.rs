//! Where images come from and exports go: buckets (a local folder per bucket, the embedded
//! default, or an S3-compatible service) and `https://` URLs.
//!
//! URL rules (checked when the request is made and again on every connection and redirect):
//! - only `s3://bucket/key` and `https://`; plain `http://` is refused;
//! - no credentials inside the URL: user information (`user:password@`) and query parameters
//!   named like passwords or tokens are refused, without repeating their value (a presigned
//!   URL's `X-Amz-*` parameters are time-limited grants made for this and are accepted);
//! - `https://` to any address that is not ordinary global unicast — loopback, private,
//!   shared (CGNAT), link-local (which holds the cloud metadata address 169.254.169.254),
//!   multicast, documentation, benchmarking, reserved, and IPv6 forms that tunnel or map to
//!   such an IPv4 address ([`crate::addr`] has the table) — is refused unless the address is
//!   in the configured allow-list; every address a name resolves to is checked, at
//!   connection time, so a name cannot be re-pointed after the check;
//! - the server's certificate is verified (system roots, plus any configured CA bundle);
//! - downloads have a size limit, known before the first byte, and are streamed into the
//!   task's encrypted intermediate volume, never held whole in memory.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ipnet::IpNet;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::Url;

use blockstore::{Backend, S3Config};
use diskfmt::write::Output;
use diskfmt::{ReadAt, Source};

use crate::error::{EngineError, Failure};
use crate::request::{DiskContainer, UserBucket, check_bucket, check_key, shown};
use crate::sealed_temp::SealedTemp;

/// Where the buckets named in requests live.
#[derive(Debug, Clone)]
pub enum Buckets {
    /// Bucket `B` is the folder `root/B`; keys are paths below it.
    Local {
        /// The folder holding one folder per bucket.
        root: PathBuf,
    },
    /// Bucket `B` is the bucket `B` of this S3-compatible service (`bucket` is ignored).
    S3(S3Config),
}

/// How `https://` sources are fetched.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// Networks that may be fetched from although they are loopback, private or link-local.
    pub allow: Vec<IpNet>,
    /// Extra trusted CA certificates (PEM), besides the system's.
    pub ca_pem: Option<Vec<u8>>,
}

/// Where one disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An object in a bucket.
    Bucket(UserBucket),
    /// An `https://` URL.
    Https(Url),
    /// A snapshot already in the store (ImportImage's `SnapshotId`).
    Snapshot(String),
}

impl Location {
    /// A description that never includes a URL's query string.
    #[must_use]
    pub fn shown(&self) -> String {
        match self {
            Location::Bucket(b) => format!("s3://{}/{}", b.s3_bucket, b.s3_key),
            Location::Https(u) => match u.port() {
                Some(p) => format!("https://{}:{p}{}", u.host_str().unwrap_or(""), u.path()),
                None => format!("https://{}{}", u.host_str().unwrap_or(""), u.path()),
            },
            Location::Snapshot(id) => id.clone(),
        }
    }
}

fn bad_url(message: impl Into<String>) -> EngineError {
    EngineError::Request {
        code: "InvalidParameterValue",
        message: message.into(),
    }
}

/// Query parameters whose presence means the URL carries a credential.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "auth_token",
    "id_token",
    "refresh_token",
    "private_token",
    "session_token",
    "sessiontoken",
    "api_key",
    "apikey",
    "api-key",
    "auth",
    "authorization",
    "credential",
    "credentials",
];

/// Why `ip` may not be fetched from, if it may not: see [`crate::addr`] for the table.
#[must_use]
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    crate::addr::blocked_reason(ip)
}

fn permitted(ip: IpAddr, allow: &[IpNet]) -> Result<(), &'static str> {
    // An IPv6 address standing for an IPv4 one is allowed by the IPv4 network too.
    let v4 = match ip {
        IpAddr::V6(v6) => crate::addr::embedded_v4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    match blocked_reason(ip) {
        Some(why)
            if !allow
                .iter()
                .any(|n| n.contains(&ip) || v4.is_some_and(|a| n.contains(&a))) =>
        {
            Err(why)
        }
        _ => Ok(()),
    }
}

/// Checks the parts of an `https://` URL that need no network: scheme, credentials, and
/// the host when it is an address.
pub fn check_https_url(u: &Url, allow: &[IpNet]) -> Result<(), EngineError> {
    if u.scheme() != "https" {
        return Err(bad_url(format!(
            "Url scheme {:?} is not accepted; use https:// or s3://",
            shown(u.scheme())
        )));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad_url(
            "Url carries credentials (user information before '@'); they are refused so that they never reach a log. Use a presigned URL or a UserBucket",
        ));
    }
    for (k, _) in u.query_pairs() {
        let k = k.to_ascii_lowercase();
        if SECRET_PARAMS.contains(&k.as_str()) {
            return Err(bad_url(format!(
                "Url carries a credential in its query parameter {:?}; it is refused so that it never reaches a log. Use a presigned URL or a UserBucket",
                shown(&k)
            )));
        }
    }
    match u.host() {
        None => return Err(bad_url("Url has no host")),
        Some(url::Host::Ipv4(a)) => check_addr(IpAddr::V4(a), allow)?,
        Some(url::Host::Ipv6(a)) => check_addr(IpAddr::V6(a), allow)?,
        Some(url::Host::Domain(_)) => {}
    }
    Ok(())
}

fn check_addr(ip: IpAddr, allow: &[IpNet]) -> Result<(), EngineError> {
    permitted(ip, allow).map_err(|why| {
        bad_url(format!(
            "Url points at a {why} address ({ip}); vmie does not fetch from such addresses unless an operator allow-lists them (--url-allow)"
        ))
    })
}

/// Where a disk container's data comes from, after the checks that need no network.
pub fn locate(dc: &DiskContainer, allow: &[IpNet]) -> Result<Location, EngineError> {
    if let Some(id) = &dc.snapshot_id {
        if dc.url.is_some() || dc.user_bucket.is_some() {
            return Err(EngineError::Request {
                code: "InvalidParameterCombination",
                message: "a disk container takes one of SnapshotId, Url or UserBucket".into(),
            });
        }
        if !crate::resources::well_formed(id, "snap-") {
            return Err(EngineError::Request {
                code: "InvalidSnapshotID.Malformed",
                message: format!("Invalid id: \"{}\" (expecting \"snap-...\")", shown(id)),
            });
        }
        return Ok(Location::Snapshot(id.clone()));
    }
    match (&dc.url, &dc.user_bucket) {
        (Some(_), Some(_)) => Err(EngineError::Request {
            code: "InvalidParameterCombination",
            message: "a disk container takes either Url or UserBucket, not both".into(),
        }),
        (None, None) => Err(EngineError::Request {
            code: "MissingParameter",
            message: "a disk container needs Url or UserBucket (S3Bucket and S3Key)".into(),
        }),
        (None, Some(b)) => {
            check_bucket("UserBucket.S3Bucket", &b.s3_bucket)?;
            check_key("UserBucket.S3Key", &b.s3_key, false)?;
            Ok(Location::Bucket(b.clone()))
        }
        (Some(raw), None) => {
            let u = Url::parse(raw).map_err(|e| bad_url(format!("Url is not a URL: {e}")))?;
            if u.scheme() == "s3" {
                if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                    return Err(bad_url(
                        "an s3:// Url takes only a bucket and a key (no user information or query)",
                    ));
                }
                let bucket = u.host_str().unwrap_or_default().to_string();
                let key = u.path().trim_start_matches('/').to_string();
                let key = percent_decode(&key);
                check_bucket("Url bucket", &bucket)?;
                check_key("Url key", &key, false)?;
                return Ok(Location::Bucket(UserBucket {
                    s3_bucket: bucket,
                    s3_key: key,
                }));
            }
            check_https_url(&u, allow)?;
            Ok(Location::Https(u))
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Resolves names for `https://` fetches and drops every address that may not be reached.
#[derive(Debug)]
struct GuardedResolver {
    allow: Arc<Vec<IpNet>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match permitted(a.ip(), &allow) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let why = refused.unwrap_or("no");
                return Err(Box::new(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} resolves only to {why} addresses, which vmie does not fetch from unless allow-listed"
                    ),
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The sources and destinations of tasks.
#[derive(Debug, Clone)]
pub struct Sources {
    buckets: Buckets,
    allow: Arc<Vec<IpNet>>,
    http: reqwest::Client,
    keys: Arc<std::collections::BTreeMap<String, String>>,
}

/// Largest image accepted by default: 2 TiB (of file size).
pub const DEFAULT_MAX_IMAGE: u64 = 2 << 40;

impl Sources {
    /// Sources over `buckets` with `policy` for URLs.
    pub fn new(buckets: Buckets, policy: &UrlPolicy) -> Result<Sources, EngineError> {
        let allow = Arc::new(policy.allow.clone());
        let redirect_allow = allow.clone();
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .https_only(true)
            .connect_timeout(std::time::Duration::from_secs(20))
            .read_timeout(std::time::Duration::from_secs(120))
            .dns_resolver(Arc::new(GuardedResolver {
                allow: allow.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("more than 5 redirects");
                }
                match check_https_url(attempt.url(), &redirect_allow) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(format!("redirect refused: {e}")),
                }
            }));
        if let Some(pem) = &policy.ca_pem {
            for c in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| EngineError::Internal(format!("the CA bundle does not parse: {e}")))?
            {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| EngineError::Internal(format!("cannot make the HTTPS client: {e}")))?;
        Ok(Sources {
            buckets,
            allow,
            http,
            keys: Arc::default(),
        })
    }

    /// The buckets the deployment marks encrypted at rest: every object written to one of
    /// them (uploads through the S3 endpoint, exports) is sealed under its KMS key (an id,
    /// ARN or alias; empty: the account's default `alias/aws/s3`).
    #[must_use]
    pub fn with_bucket_keys(mut self, keys: std::collections::BTreeMap<String, String>) -> Self {
        self.keys = Arc::new(keys);
        self
    }

    /// The KMS key objects written to `bucket` are sealed under, if the deployment marks it
    /// encrypted at rest (`Some("")`: the default key).
    #[must_use]
    pub fn bucket_key(&self, bucket: &str) -> Option<&str> {
        self.keys.get(bucket).map(String::as_str)
    }

    /// Where the records of `bucket`'s objects are kept (ETag, metadata, encryption).
    pub fn records(&self, bucket: &str) -> Result<objectmeta::Records, EngineError> {
        Ok(match &self.buckets {
            Buckets::Local { root } => objectmeta::Records::Local { root: root.clone() },
            Buckets::S3(_) => objectmeta::Records::Remote {
                store: self.store(bucket)?,
            },
        })
    }

    /// The bucket configuration.
    #[must_use]
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// The allow-list for URLs.
    #[must_use]
    pub fn allow(&self) -> &[IpNet] {
        &self.allow
    }

    fn local_dir(&self, bucket: &str) -> Option<PathBuf> {
        match &self.buckets {
            Buckets::Local { root } => Some(root.join(bucket)),
            Buckets::S3(_) => None,
        }
    }

    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, EngineError> {
        match &self.buckets {
            Buckets::Local { root } => {
                let dir = root.join(bucket);
                if !dir.is_dir() {
                    return Err(no_bucket(bucket));
                }
                Ok(Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| EngineError::Internal(e.to_string()))?,
                ))
            }
            Buckets::S3(cfg) => Backend::S3(S3Config {
                bucket: bucket.to_string(),
                ..cfg.clone()
            })
            .open()
            .map_err(EngineError::Store),
        }
    }

    /// What an import needs to know of the object `b` before reading it: its stat (size as
    /// stored, and the ETag every later read of a remote object is made conditional on) and,
    /// when it is encrypted at rest (its record says so), its data key unwrapped by `kms`
    /// for the account's service, with its plaintext size. The object's stat and its
    /// record are asked at once (each is a round trip to a remote store). A missing bucket or
    /// object is the request error naming it.
    pub async fn lookup(
        &self,
        b: &UserBucket,
        kms: &kms::Kms,
        account: &str,
    ) -> Result<(objectmeta::Stat, Option<Unsealed>), EngineError> {
        let records = self.records(&b.s3_bucket)?;
        let (stat, record) = futures::join!(self.stat(b), records.fetch(&b.s3_bucket, &b.s3_key));
        let stat = stat?;
        let Some(sse) = record.and_then(|m| m.describing(&stat)).and_then(|m| m.sse) else {
            return Ok((stat, None));
        };
        let blob = hex::decode(&sse.data_key).map_err(|_| {
            EngineError::Internal(format!(
                "the encryption record of s3://{}/{} is damaged",
                b.s3_bucket, b.s3_key
            ))
        })?;
        let key = kms
            .decrypt_data_key(
                &kms::Caller::account_root(account),
                &blob,
                &objectmeta::Sse::context(&b.s3_bucket, &b.s3_key),
            )
            .await
            .map_err(|e| EngineError::Request {
                code: "InvalidParameter",
                message: format!(
                    "the object s3://{}/{} is encrypted at rest under {} and its key could not be unwrapped: {e}",
                    b.s3_bucket, b.s3_key, sse.key_id
                ),
            })?;
        Ok((
            stat,
            Some(Unsealed {
                size: sse.size,
                key,
            }),
        ))
    }

    /// The stat of the object `b`, or the request error naming what is missing.
    async fn stat(&self, b: &UserBucket) -> Result<objectmeta::Stat, EngineError> {
        if let Some(dir) = self.local_dir(&b.s3_bucket) {
            if !dir.is_dir() {
                return Err(no_bucket(&b.s3_bucket));
            }
            let path = inside(&dir, &b.s3_key).ok_or_else(|| no_key(b))?;
            return match std::fs::metadata(path) {
                Ok(m) if m.is_file() => Ok(objectmeta::Stat::local(&m)),
                _ => Err(no_key(b)),
            };
        }
        let store = self.store(&b.s3_bucket)?;
        let path = obj_path(&b.s3_key)?;
        match store.head(&path).await {
            Ok(m) => Ok(objectmeta::Stat {
                size: m.size,
                modified: m.last_modified.into(),
                tag: m.e_tag.unwrap_or_default(),
            }),
            Err(object_store::Error::NotFound { .. }) => Err(no_key(b)),
            Err(e) => Err(EngineError::Request {
                code: "InvalidParameter",
                message: format!(
                    "the object s3://{}/{} could not be read: {e}; check the bucket, the key and that the service role may read it",
                    b.s3_bucket, b.s3_key
                ),
            }),
        }
    }

    /// Opens the object `b` (as `stat` found it) for positioned reads, unsealed with
    /// `sealed` when it is encrypted at rest. Call from a blocking thread: reads of a
    /// remote object wait on `handle`, and fetch ahead when `read_ahead` (the object is to
    /// be read through, not only looked at). Every read of a remote object is asked
    /// `If-Match` its ETag in `stat`: an object replaced meanwhile fails the read ("changed
    /// while it was read") instead of mixing two versions.
    pub fn open(
        &self,
        b: &UserBucket,
        stat: &objectmeta::Stat,
        sealed: Option<&Unsealed>,
        handle: &tokio::runtime::Handle,
        read_ahead: bool,
    ) -> Result<Source, Failure> {
        let stored = self.open_stored(b, stat, handle, read_ahead)?;
        Ok(match sealed {
            Some(u) => Arc::new(SealedSource {
                inner: stored,
                opener: objectmeta::seal::Opener::new(&u.key, 0),
                plain: u.size,
                cache: Mutex::new(VecDeque::new()),
            }),
            None => stored,
        })
    }

    fn open_stored(
        &self,
        b: &UserBucket,
        stat: &objectmeta::Stat,
        handle: &tokio::runtime::Handle,
        read_ahead: bool,
    ) -> Result<Source, Failure> {
        if let Some(dir) = self.local_dir(&b.s3_bucket) {
            let path =
                inside(&dir, &b.s3_key).ok_or_else(|| Failure::Client(no_key(b).to_string()))?;
            let f = diskfmt::FileSource::open(&path).map_err(|e| {
                Failure::Client(format!(
                    "the object s3://{}/{} could not be opened: {e}",
                    b.s3_bucket, b.s3_key
                ))
            })?;
            return Ok(Arc::new(f));
        }
        let store = self
            .store(&b.s3_bucket)
            .map_err(|e| Failure::Client(e.to_string()))?;
        let path = obj_path(&b.s3_key).map_err(|e| Failure::Client(e.to_string()))?;
        let tag = Some(stat.tag.clone()).filter(|t| !t.is_empty());
        Ok(Arc::new(ObjectSource::new(
            (store, path, tag),
            stat.size,
            handle.clone(),
            if read_ahead { OBJ_AHEAD } else { 0 },
        )))
    }

    /// Starts reading the image at `url`, at most `max` bytes. The first request asks for
    /// its first 8 MiB: a server that answers with that range (`206`, as S3 and its
    /// presigned URLs do) has the image read in place by ranges — fetched ahead and in
    /// parallel as a bucket object is, nothing downloaded first — and every later range is
    /// asked `If-Match` the first answer's ETag, so an image replaced meanwhile fails the
    /// task rather than mixing two versions. A server that sends the whole body (`200`) has
    /// it downloaded ([`HttpsImage::Whole`]).
    pub async fn get(
        &self,
        url: &Url,
        max: u64,
        handle: &tokio::runtime::Handle,
    ) -> Result<HttpsImage, Failure> {
        check_https_url(url, &self.allow).map_err(|e| Failure::Client(e.to_string()))?;
        let shown = Location::Https(url.clone()).shown();
        let resp = self
            .http
            .get(url.clone())
            .header(reqwest::header::RANGE, format!("bytes=0-{}", OBJ_BLOCK - 1))
            .send()
            .await
            .map_err(|e| {
                Failure::Client(format!(
                    "the image at {shown} could not be downloaded: {}",
                    error_chain(&e)
                ))
            })?;
        match resp.status().as_u16() {
            206 => self.ranged(url, &shown, resp, max, handle).await,
            416 => Err(Failure::Client(format!("the image at {shown} is empty"))),
            s if (200..300).contains(&s) => {
                let Some(len) = resp.content_length() else {
                    return Err(Failure::Client(format!(
                        "the server of {shown} did not state the size of the image (Content-Length); vmie needs it to bound the download"
                    )));
                };
                if len > max {
                    return Err(too_large(&shown, len, max));
                }
                Ok(HttpsImage::Whole {
                    resp: Box::new(resp),
                    size: len,
                })
            }
            s => Err(Failure::Client(format!(
                "the server of {shown} answered HTTP {s}; check that the URL (or its presigned signature) is still valid"
            ))),
        }
    }

    /// The image behind a `206` answer to the first range: read in place.
    async fn ranged(
        &self,
        url: &Url,
        shown: &str,
        resp: reqwest::Response,
        max: u64,
        handle: &tokio::runtime::Handle,
    ) -> Result<HttpsImage, Failure> {
        let bad = |why: &str| {
            Failure::Client(format!(
                "the server of {shown} answered a range request wrongly: {why}"
            ))
        };
        let (start, end, size) = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range)
            .ok_or_else(|| bad("no usable Content-Range"))?;
        if size > max {
            return Err(too_large(shown, size, max));
        }
        if start != 0 || end != OBJ_BLOCK.min(size) {
            return Err(bad("not the range asked for"));
        }
        let etag = resp.headers().get(reqwest::header::ETAG).cloned();
        let first = read_body(resp, end, shown)
            .await
            .map_err(|e| Failure::Client(e.to_string()))?;
        let (http, url, shown2) = (self.http.clone(), url.clone(), shown.to_string());
        let fetch: Fetch = Arc::new(move |range: std::ops::Range<u64>| {
            let mut req = http.get(url.clone()).header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", range.start, range.end - 1),
            );
            if let Some(e) = &etag {
                req = req.header(reqwest::header::IF_MATCH, e.clone());
            }
            let shown = shown2.clone();
            futures::FutureExt::boxed(async move {
                let resp = req.send().await.map_err(|e| {
                    io::Error::other(format!("reading {shown} broke off: {}", error_chain(&e)))
                })?;
                match resp.status().as_u16() {
                    206 => {}
                    412 => {
                        return Err(io::Error::other(format!(
                            "the image at {shown} changed while it was read"
                        )));
                    }
                    s => {
                        return Err(io::Error::other(format!(
                            "the server of {shown} answered HTTP {s} to a range request"
                        )));
                    }
                }
                let got = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range);
                if got.is_none_or(|(s, e, _)| s != range.start || e != range.end) {
                    return Err(io::Error::other(format!(
                        "the server of {shown} sent another range than asked for"
                    )));
                }
                read_body(resp, range.end - range.start, &shown).await
            })
        });
        Ok(HttpsImage::Ranged {
            source: Arc::new(ObjectSource::with_fetch(
                fetch,
                size,
                handle.clone(),
                Some(first),
                OBJ_AHEAD,
            )),
            size,
        })
    }

    /// Where an export is written; see [`ExportSink`].
    pub fn export_sink(
        &self,
        bucket: &str,
        key: &str,
        temp_dir: &Path,
    ) -> Result<ExportSink, Failure> {
        if let Some(dir) = self.local_dir(bucket) {
            if !dir.is_dir() {
                return Err(Failure::Client(no_bucket(bucket).to_string()));
            }
            let (parent, name) = contained(&dir, key, true)
                .map_err(|e| Failure::Client(format!("s3://{bucket}/{}: {e}", shown(key))))?
                .ok_or_else(|| {
                    Failure::Server(format!("cannot create the folder for s3://{bucket}/{key}"))
                })?;
            let target = parent.join(name);
            let tmp = tempfile::Builder::new()
                .prefix(".vmie-export-")
                .tempfile_in(&parent)
                .map_err(|e| {
                    Failure::Server(format!("cannot create a file in bucket {bucket}: {e}"))
                })?;
            return Ok(ExportSink::Local { tmp, target });
        }
        let store = self
            .store(bucket)
            .map_err(|e| Failure::Client(e.to_string()))?;
        let path = obj_path(key).map_err(|e| Failure::Client(e.to_string()))?;
        let file = SealedTemp::create(temp_dir).map_err(|e| Failure::Server(e.to_string()))?;
        Ok(ExportSink::Remote { file, store, path })
    }

    /// Deletes the object `key` of `bucket` (an export withdrawn); a missing object is fine.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), EngineError> {
        if let Some(dir) = self.local_dir(bucket) {
            let found = contained(&dir, key, false).map_err(|e| EngineError::Request {
                code: "InvalidParameter",
                message: format!("s3://{bucket}/{}: {e}", shown(key)),
            })?;
            let Some((parent, name)) = found else {
                return Ok(());
            };
            return match std::fs::remove_file(parent.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(EngineError::Internal(
                    format!("removing s3://{bucket}/{key}: {e}"),
                )),
                _ => Ok(()),
            };
        }
        let store = self.store(bucket)?;
        match store.delete(&obj_path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(EngineError::Internal(format!(
                "removing s3://{bucket}/{key}: {e}"
            ))),
        }
    }

    /// The object store of `bucket` (a local bucket's folder must exist).
    pub fn bucket_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, EngineError> {
        self.store(bucket)
    }

    /// The file of `key` in the local bucket folder `bucket`, if the buckets are local
    /// folders, the file exists and — symbolic links resolved — lies inside the folder.
    #[must_use]
    pub fn local_file(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        inside(&self.local_dir(bucket)?, key)
    }

    /// The folder (made as needed, every part a real folder of the bucket) and file name
    /// where `key` of the local bucket folder `bucket` is written; `Ok(None)` when the
    /// buckets are not local folders.
    pub fn local_target(&self, bucket: &str, key: &str) -> io::Result<Option<(PathBuf, String)>> {
        match self.local_dir(bucket) {
            Some(dir) => contained(&dir, key, true),
            None => Ok(None),
        }
    }

    /// `sink` sealed at rest when the deployment marks `bucket` so (else `sink` as it is):
    /// a data key is drawn for the object under the bucket's KMS key (or `alias/aws/s3`)
    /// for the account's service, and the writer fills an encrypted temporary output in
    /// `temp_dir` ([`SealedTemp`]).
    pub async fn seal_export(
        &self,
        sink: ExportSink,
        bucket: &str,
        key: &str,
        kms: &kms::Kms,
        account: &str,
        temp_dir: &Path,
    ) -> Result<ExportSink, Failure> {
        let Some(key_ref) = self.bucket_key(bucket) else {
            return Ok(sink);
        };
        let fail = |e: &dyn std::fmt::Display| {
            Failure::Server(format!(
                "bucket {bucket} keeps objects encrypted at rest, and its key could not be used: {e}"
            ))
        };
        let key_ref = if key_ref.is_empty() {
            kms.default_s3_key().await.map_err(|e| fail(&e))?.key_id
        } else {
            key_ref.to_string()
        };
        let caller = kms::Caller::account_root(account);
        let dk = kms
            .generate_data_key(&caller, &key_ref, &objectmeta::Sse::context(bucket, key))
            .await
            .map_err(|e| fail(&e))?;
        let arn = kms.key_info(&dk.key_id).await.map_err(|e| fail(&e))?.0.arn;
        let file = SealedTemp::create(temp_dir).map_err(|e| Failure::Server(e.to_string()))?;
        Ok(ExportSink::Sealed {
            file,
            dest: Box::new(sink),
            records: self.records(bucket).map_err(|e| fail(&e))?,
            at: (bucket.to_string(), key.to_string()),
            sse: objectmeta::Sse {
                algorithm: "aws:kms".into(),
                key_id: arn,
                data_key: hex::encode(&dk.ciphertext),
                size: 0,
            },
            key: dk.plaintext,
        })
    }

    /// Whether the bucket exists (local buckets) — S3 buckets are checked when written.
    pub fn check_export_bucket(&self, bucket: &str) -> Result<(), EngineError> {
        match self.local_dir(bucket) {
            Some(dir) if !dir.is_dir() => Err(no_bucket(bucket)),
            _ => Ok(()),
        }
    }
}

/// What a `GET` of an `https://` image found; see [`Sources::get`].
pub enum HttpsImage {
    /// The server reads by ranges: the image is read in place.
    Ranged {
        /// The image.
        source: Source,
        /// Its size in bytes.
        size: u64,
    },
    /// It sends the whole image: the response to read it from, and its size.
    Whole {
        /// The response, its body not read yet.
        resp: Box<reqwest::Response>,
        /// Its size in bytes (`Content-Length`).
        size: u64,
    },
}

fn too_large(shown: &str, len: u64, max: u64) -> Failure {
    Failure::Client(format!(
        "the image at {shown} is {len} bytes, more than the limit of {max} bytes"
    ))
}

/// `bytes START-LAST/SIZE` as (start, end exclusive, size), or `None`.
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, size) = (
        a.trim().parse::<u64>().ok()?,
        b.trim().parse::<u64>().ok()?,
        size.trim().parse::<u64>().ok()?,
    );
    (a <= b && b < size).then_some((a, b + 1, size))
}

/// The body of `resp`, which must be exactly `len` bytes (at most one block, so bounded).
async fn read_body(mut resp: reqwest::Response, len: u64, shown: &str) -> io::Result<Bytes> {
    let mut out = bytes::BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    while let Some(c) = resp
        .chunk()
        .await
        .map_err(|e| io::Error::other(format!("reading {shown} broke off: {}", error_chain(&e))))?
    {
        if (out.len() + c.len()) as u64 > len {
            return Err(io::Error::other(format!(
                "the server of {shown} sent more than the {len} bytes of the range"
            )));
        }
        out.extend_from_slice(&c);
    }
    if out.len() as u64 != len {
        return Err(io::Error::other(format!(
            "the server of {shown} sent {} of the {len} bytes of the range",
            out.len()
        )));
    }
    Ok(out.freeze())
}

/// Fills `buf` from `offset` of a source of `size` bytes kept in blocks of `block` bytes,
/// `get(i)` giving block `i`; how many bytes were read (short only at the end).
fn read_by_blocks<B: AsRef<[u8]>>(
    buf: &mut [u8],
    offset: u64,
    size: u64,
    block: u64,
    get: impl Fn(u64) -> io::Result<B>,
) -> io::Result<usize> {
    let n = usize::try_from(size.saturating_sub(offset).min(buf.len() as u64)).unwrap_or(0);
    let mut done = 0usize;
    while done < n {
        let at = offset + done as u64;
        let b = get(at / block)?;
        let b = b.as_ref();
        let within = usize::try_from(at % block).unwrap_or(0);
        let take = b.len().saturating_sub(within).min(n - done);
        if take == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a block is shorter than its place in the source",
            ));
        }
        buf[done..done + take].copy_from_slice(&b[within..within + take]);
        done += take;
    }
    Ok(n)
}

/// What reading a sealed object takes: its data key and plaintext size.
pub struct Unsealed {
    /// Plaintext bytes.
    pub size: u64,
    /// The data key.
    pub key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Opened blocks a sealed object's reader keeps (1 MiB).
const SEALED_CACHE: usize = 16;

/// A sealed object's plaintext ([`objectmeta::seal`]), opened block by block.
struct SealedSource {
    inner: Source,
    opener: objectmeta::seal::Opener,
    plain: u64,
    cache: Mutex<VecDeque<(u64, Bytes)>>,
}

impl SealedSource {
    fn block(&self, index: u64) -> io::Result<Bytes> {
        if let Ok(c) = self.cache.lock()
            && let Some((_, b)) = c.iter().find(|(i, _)| *i == index)
        {
            return Ok(b.clone());
        }
        let (at, len) = objectmeta::seal::slot(self.plain, index);
        let mut sealed = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self.inner.read_at(&mut sealed[done..], at + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the encrypted object is shorter than its record says",
                ));
            }
            done += n;
        }
        let plain = self.opener.open(self.plain, index, &sealed).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("block {index} of the encrypted object does not open: it was altered at rest"),
            )
        })?;
        let plain = Bytes::from(plain);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= SEALED_CACHE {
                c.pop_front();
            }
            c.push_back((index, plain.clone()));
        }
        Ok(plain)
    }
}

impl ReadAt for SealedSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.plain {
            return Ok(0);
        }
        let block = objectmeta::seal::BLOCK as u64;
        read_by_blocks(buf, offset, self.plain, block, |i| self.block(i))
    }

    fn size(&self) -> u64 {
        self.plain
    }
}

/// The error chain of `e`, one line.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !m.contains(&t) {
            m.push_str(": ");
            m.push_str(&t);
        }
        src = s.source();
    }
    // reqwest names URLs in its messages (a redirect names two); never repeat a query.
    strip_url_queries(&m)
}

/// `m` with the query string and fragment of every URL in it removed: a URL runs from its
/// `scheme://` to the next white space or closing bracket or quote.
#[must_use]
pub fn strip_url_queries(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut rest = m;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '>' | ']' | '"' | '\'' | '<'))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        out.push_str(url.find(['?', '#']).map_or(url, |q| &url[..q]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The file of `key` in the bucket folder `dir`, if it exists and — symbolic links
/// resolved — lies inside the folder: a link in a bucket never leads a task elsewhere.
fn inside(dir: &Path, key: &str) -> Option<PathBuf> {
    let root = dir.canonicalize().ok()?;
    let real = dir.join(key).canonicalize().ok()?;
    real.starts_with(&root).then_some(real)
}

/// The folder (inside the bucket folder `dir`) and file name where `key` is written or
/// deleted. Every folder on the way must be a real folder — not a symbolic link — so the
/// file cannot land outside the bucket, as [`inside`] guarantees for reads; with `create`,
/// missing folders are made, else a missing one means there is nothing there (`None`).
fn contained(dir: &Path, key: &str, create: bool) -> io::Result<Option<(PathBuf, String)>> {
    let refused = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, why.to_string());
    check_key("key", key, false).map_err(|e| refused(&e.to_string()))?;
    let mut parts: Vec<&str> = key.split('/').collect();
    let name = parts
        .pop()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| refused("the key names a folder, not an object"))?;
    let mut at = dir.canonicalize()?;
    for part in parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(refused(
                    "a part of the key is a symbolic link or a file in the bucket folder; vmie writes only below real folders of the bucket",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match std::fs::create_dir(&at) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                if !std::fs::symlink_metadata(&at)?.is_dir() {
                    return Err(refused(
                        "a folder of the key was replaced while it was made",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some((at, name.to_string())))
}

fn no_bucket(bucket: &str) -> EngineError {
    EngineError::Request {
        code: "InvalidParameter",
        message: format!(
            "the bucket {bucket:?} does not exist; create it (with the embedded default, a folder of that name under the buckets folder) or name another"
        ),
    }
}

fn no_key(b: &UserBucket) -> EngineError {
    EngineError::Request {
        code: "InvalidParameter",
        message: format!(
            "the object s3://{}/{} does not exist; check S3Key (keys are case-sensitive)",
            b.s3_bucket, b.s3_key
        ),
    }
}

fn obj_path(key: &str) -> Result<ObjPath, EngineError> {
    ObjPath::parse(key).map_err(|e| bad_url(format!("the key is not usable: {e}")))
}

/// A file being exported: written locally, then published in one step.
#[derive(Debug)]
pub enum ExportSink {
    /// Into a local bucket: a hidden temporary file beside the target, renamed at the end.
    Local {
        /// The temporary file (deleted if the export does not complete).
        tmp: tempfile::NamedTempFile,
        /// The final path.
        target: PathBuf,
    },
    /// Into an S3 bucket: an encrypted, unnamed temporary output (gone with the process
    /// whatever happens; [`SealedTemp`]), uploaded in parts at the end.
    Remote {
        /// The output the writer fills.
        file: SealedTemp,
        /// The bucket.
        store: Arc<dyn ObjectStore>,
        /// The key.
        path: ObjPath,
    },
    /// Into a bucket the deployment keeps encrypted at rest: the writer fills an encrypted,
    /// unnamed temporary output among the intermediate volumes ([`SealedTemp`]); at the end
    /// it is sealed block by block under the object's data key into `dest`
    /// ([`objectmeta::seal`]) and the object's record names its wrapped key.
    Sealed {
        /// The output the writer fills.
        file: SealedTemp,
        /// Where the sealed object goes.
        dest: Box<ExportSink>,
        /// The object's records.
        records: objectmeta::Records,
        /// Bucket and key.
        at: (String, String),
        /// Its encryption record (size set at the end) and data key.
        sse: objectmeta::Sse,
        /// The data key.
        key: zeroize::Zeroizing<[u8; 32]>,
    },
}

impl ExportSink {
    /// What the writer fills.
    #[must_use]
    pub fn output(&self) -> &dyn Output {
        match self {
            ExportSink::Local { tmp, .. } => tmp.as_file(),
            ExportSink::Remote { file, .. } | ExportSink::Sealed { file, .. } => file,
        }
    }

    /// The file published itself, if [`ExportSink::output`] is one (a local bucket's).
    #[must_use]
    pub fn published_file(&self) -> Option<&std::fs::File> {
        match self {
            ExportSink::Local { tmp, .. } => Some(tmp.as_file()),
            _ => None,
        }
    }

    /// Seals `plain` into this sink's output, in order.
    async fn fill_sealed(&self, plain: SealedTemp, key: &[u8; 32]) -> Result<u64, Failure> {
        let fail = |e: &dyn std::fmt::Display| Failure::Server(format!("sealing the export: {e}"));
        let out = self.output().share().map_err(|e| fail(&e))?;
        let mut sealer = objectmeta::seal::Sealer::new(key, 0);
        tokio::task::spawn_blocking(move || -> io::Result<u64> {
            use std::io::Write as _;
            let size = plain.size()?;
            let appender = diskfmt::write::Appender { out: &*out, at: 0 };
            let mut out = io::BufWriter::with_capacity(1 << 20, appender);
            let mut buf = vec![0u8; 1 << 20];
            let mut sealed = Vec::with_capacity((1 << 20) + 4096);
            let mut off = 0u64;
            while off < size {
                let n = usize::try_from((size - off).min(buf.len() as u64)).unwrap_or(0);
                plain.get_at(&mut buf[..n], off)?;
                sealed.clear();
                sealer.push(&buf[..n], &mut sealed);
                out.write_all(&sealed)?;
                off += n as u64;
            }
            sealed.clear();
            sealer.finish(&mut sealed);
            out.write_all(&sealed)?;
            out.flush()?;
            Ok(size)
        })
        .await
        .map_err(|e| fail(&e))?
        .map_err(|e| fail(&e))
    }

    /// Publishes the file under its key.
    pub async fn commit(self) -> Result<(), Failure> {
        match self {
            ExportSink::Sealed {
                file,
                dest,
                records,
                at,
                mut sse,
                key,
            } => {
                sse.size = dest.fill_sealed(file, &key).await?;
                let target = match &*dest {
                    ExportSink::Local { target, .. } => Some(target.clone()),
                    _ => None,
                };
                let remote = match &*dest {
                    ExportSink::Remote { store, path, .. } => Some((store.clone(), path.clone())),
                    _ => None,
                };
                Box::pin(dest.commit()).await?;
                let fail = |e: &dyn std::fmt::Display| {
                    Failure::Server(format!("recording the export: {e}"))
                };
                let stat = match (target, remote) {
                    (Some(t), _) => {
                        objectmeta::Stat::local(&std::fs::metadata(t).map_err(|e| fail(&e))?)
                    }
                    (None, Some((store, path))) => {
                        let m = store.head(&path).await.map_err(|e| fail(&e))?;
                        objectmeta::Stat {
                            size: m.size,
                            modified: m.last_modified.into(),
                            tag: m.e_tag.unwrap_or_default(),
                        }
                    }
                    (None, None) => return Err(fail(&"a sealed export inside another")),
                };
                let mut meta = objectmeta::Meta::from_stat(&stat);
                meta.stored = stat.tag;
                meta.sse = Some(sse);
                records.put(&at.0, &at.1, &meta).await.map_err(|e| fail(&e))
            }
            ExportSink::Local { tmp, target } => {
                tmp.as_file()
                    .sync_all()
                    .map_err(|e| Failure::Server(format!("cannot flush the export: {e}")))?;
                tmp.persist(&target).map_err(|e| {
                    Failure::Server(format!("cannot publish {}: {}", target.display(), e.error))
                })?;
                Ok(())
            }
            ExportSink::Remote { file, store, path } => upload(file, store, path).await,
        }
    }
}

async fn upload(
    file: SealedTemp,
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
) -> Result<(), Failure> {
    const PART: usize = 16 << 20;
    let fail =
        |e: &dyn std::fmt::Display| Failure::Server(format!("upload of the export failed: {e}"));
    let size = file.size().map_err(|e| fail(&e))?;
    let upload = store.put_multipart(&path).await.map_err(|e| fail(&e))?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
    let mut off = 0u64;
    while off < size {
        let n = usize::try_from((size - off).min(PART as u64)).unwrap_or(PART);
        let f = file.clone();
        let buf = tokio::task::spawn_blocking(move || {
            let mut b = vec![0u8; n];
            f.get_at(&mut b, off).map(|()| b)
        })
        .await
        .map_err(|e| fail(&e))?
        .map_err(|e| fail(&e))?;
        w.wait_for_capacity(2).await.map_err(|e| fail(&e))?;
        w.write(&buf);
        off += n as u64;
    }
    w.finish().await.map_err(|e| fail(&e))?;
    Ok(())
}

/// An object (or an `https://` image whose server answers ranges) read by ranges of 8 MiB,
/// each fetched by its [`Fetch`]. Each read of block *i* makes sure the next
/// [`OBJ_AHEAD`] blocks are on their way too (fetched in the background, in parallel, while
/// the decoder works on what it has), so an import from a remote store is bound by its
/// bandwidth rather than by one request's latency at a time. Blocks are fetched
/// independently — two decoding threads at different places of the object wait only for
/// their own blocks — and never twice at once. At most [`OBJ_CACHE`] blocks are kept, the
/// blocks behind the last read dropped first (the least recently read of them), else the
/// least recently read; the first and the last block are fetched as soon as the source is
/// made.
struct ObjectSource {
    fetch: Fetch,
    size: u64,
    /// Bytes per block: [`OBJ_BLOCK`], or [`GLANCE_BLOCK`] for a look at the format.
    block: u64,
    /// Blocks fetched ahead of the one read: [`OBJ_AHEAD`], or none for a look at the
    /// format (a request-time check).
    ahead: u64,
    handle: tokio::runtime::Handle,
    state: Arc<(Mutex<Blocks>, std::sync::Condvar)>,
}

/// Fetches a byte range of an object or an image (the range is inside it).
type Fetch = Arc<
    dyn Fn(std::ops::Range<u64>) -> futures::future::BoxFuture<'static, io::Result<Bytes>>
        + Send
        + Sync,
>;

/// The blocks of an [`ObjectSource`]: fetched, on their way, failed.
#[derive(Default)]
struct Blocks {
    /// Least recently read (or fetched, if not read since) first.
    cache: VecDeque<(u64, Bytes)>,
    /// The block read last.
    last_read: u64,
    inflight: std::collections::HashSet<u64>,
    failed: Vec<(u64, io::Error)>,
}

const OBJ_BLOCK: u64 = 8 << 20;
/// Bytes per block of a look at the format (a request-time check), which reads the first
/// 64 KiB and the last 512 bytes (of the plaintext, for a sealed object): a few round trips
/// of 256 KiB rather than 16 MiB before the request is answered.
const GLANCE_BLOCK: u64 = 256 << 10;
/// Blocks kept: the read-ahead windows of two decoding threads and what they work on.
const OBJ_CACHE: usize = 8;
/// Blocks fetched ahead of the one read.
const OBJ_AHEAD: u64 = 3;
/// Most fetches on their way at once.
const OBJ_INFLIGHT: usize = 6;

impl ObjectSource {
    /// The object at `path` of `store`, each range asked `If-Match` `tag` when there is one.
    fn new(
        (store, path, tag): (Arc<dyn ObjectStore>, ObjPath, Option<String>),
        size: u64,
        handle: tokio::runtime::Handle,
        ahead: u64,
    ) -> ObjectSource {
        let fetch: Fetch = Arc::new(move |range: std::ops::Range<u64>| {
            let (store, path) = (store.clone(), path.clone());
            let opts = object_store::GetOptions {
                range: Some(range.into()),
                if_match: tag.clone(),
                ..object_store::GetOptions::default()
            };
            futures::FutureExt::boxed(async move {
                let changed = |e: object_store::Error| match e {
                    object_store::Error::Precondition { .. } => io::Error::other(
                        "the object changed while it was read (it no longer has the ETag it \
                         had when the task began); import it again",
                    ),
                    e => io::Error::other(e),
                };
                store
                    .get_opts(&path, opts)
                    .await
                    .map_err(changed)?
                    .bytes()
                    .await
                    .map_err(changed)
            })
        });
        ObjectSource::with_fetch(fetch, size, handle, None, ahead)
    }

    /// A source of `size` bytes read with `fetch`, block 0 ([`OBJ_BLOCK`] bytes) already at
    /// hand when `first`, `ahead` blocks fetched ahead of each read; with neither, a look at
    /// the format, read in blocks of [`GLANCE_BLOCK`].
    fn with_fetch(
        fetch: Fetch,
        size: u64,
        handle: tokio::runtime::Handle,
        first: Option<Bytes>,
        ahead: u64,
    ) -> ObjectSource {
        let mut blocks = Blocks::default();
        let had_first = first.is_some();
        let block = if had_first || ahead > 0 {
            OBJ_BLOCK
        } else {
            GLANCE_BLOCK
        };
        if let Some(b) = first {
            blocks.cache.push_back((0, b));
        }
        let src = ObjectSource {
            fetch,
            size,
            block,
            ahead,
            handle,
            state: Arc::new((Mutex::new(blocks), std::sync::Condvar::new())),
        };
        // Opening an image reads its start and, for most formats, its end (VHD and VMDK
        // footers, the tables qcow2 appends, an OVA's last member): both are asked for at
        // once rather than one round trip after the other. A look at the format also asks
        // for the block before the last, which a short last block may not cover (a sealed
        // object's last sealed block and its end).
        if let Ok(mut b) = src.state.0.lock() {
            let last = size.div_ceil(block).saturating_sub(1);
            if !had_first && size > 0 {
                src.start(&mut b, 0);
            }
            if block == GLANCE_BLOCK && last > 1 {
                src.start(&mut b, last - 1);
            }
            if last > 0 {
                src.start(&mut b, last);
            }
        }
        src
    }

    /// Starts fetching block `index` (the state's lock held: `b`).
    fn start(&self, b: &mut Blocks, index: u64) {
        b.inflight.insert(index);
        let start = index * self.block;
        let end = (start + self.block).min(self.size);
        let (fetch, state) = (self.fetch.clone(), self.state.clone());
        self.handle.spawn(async move {
            let got = match fetch(start..end).await {
                Ok(b) if b.len() as u64 == end - start => Ok(b),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object changed size while it was read",
                )),
                Err(e) => Err(e),
            };
            let (lock, cv) = &*state;
            if let Ok(mut b) = lock.lock() {
                b.inflight.remove(&index);
                match got {
                    Ok(bytes) => {
                        if b.cache.len() >= OBJ_CACHE {
                            // Blocks behind the readers go first: a decoder reads on, while
                            // what lies ahead (the end, fetched at the start) is still to
                            // come.
                            let behind = b.cache.iter().position(|(i, _)| *i < b.last_read);
                            b.cache.remove(behind.unwrap_or(0));
                        }
                        b.cache.push_back((index, bytes));
                    }
                    Err(e) => b.failed.push((index, e)),
                }
            }
            cv.notify_all();
        });
    }

    fn block(&self, index: u64) -> io::Result<Bytes> {
        let (lock, cv) = &*self.state;
        let poisoned = || io::Error::other("object reader poisoned");
        let mut b = lock.lock().map_err(|_| poisoned())?;
        b.last_read = index;
        // What follows is wanted next: on its way while this block is decoded.
        let blocks = self.size.div_ceil(self.block);
        for next in index + 1..(index + 1 + self.ahead).min(blocks) {
            if b.inflight.len() >= OBJ_INFLIGHT {
                break;
            }
            if !b.inflight.contains(&next) && !b.cache.iter().any(|(i, _)| *i == next) {
                self.start(&mut b, next);
            }
        }
        loop {
            let at = b.cache.iter().position(|(i, _)| *i == index);
            if let Some(hit) = at.and_then(|at| b.cache.remove(at)) {
                // Kept longest: the least recently read (a format's tables, read again and
                // again, stay while the data around them passes through).
                let bytes = hit.1.clone();
                b.cache.push_back(hit);
                return Ok(bytes);
            }
            if let Some(at) = b.failed.iter().position(|(i, _)| *i == index) {
                return Err(b.failed.swap_remove(at).1);
            }
            if !b.inflight.contains(&index) {
                self.start(&mut b, index);
            }
            b = cv.wait(b).map_err(|_| poisoned())?;
        }
    }
}

impl ReadAt for ObjectSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        read_by_blocks(buf, offset, self.size, self.block, |i| self.block(i))
    }

    fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn url(u: &str) -> Result<Location, EngineError> {
        locate(
            &DiskContainer {
                url: Some(u.into()),
                ..DiskContainer::default()
            },
            &[],
        )
    }

    #[test]
    fn urls_with_credentials_or_inner_addresses_are_refused() {
        for (u, want) in [
            ("https://user:pw@example.com/a.vmdk", "user information"),
            (
                "https://example.com/a.vmdk?password=hunter2",
                "\"password\"",
            ),
            ("https://example.com/a.vmdk?Token=abc", "\"token\""),
            ("http://example.com/a.vmdk", "scheme"),
            ("ftp://example.com/a.vmdk", "scheme"),
            ("https://127.0.0.1/a.vmdk", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://10.1.2.3/a", "private"),
            ("https://100.64.0.1/a", "CGNAT"),
            ("https://[::1]/a", "loopback"),
            ("https://[fd00:ec2::254]/a", "unique local"),
            ("https://[::ffff:127.0.0.1]/a", "loopback"),
            ("https://[64:ff9b::a9fe:a9fe]/a", "link-local"),
            ("s3://Bad_Bucket/key", "bucket name"),
            ("s3://bucket/a//b", "object key"),
            ("s3://bucket/", "object key"),
        ] {
            let e = url(u).unwrap_err().to_string();
            assert!(e.contains(want), "{u}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn presigned_and_s3_urls_are_accepted() {
        let l = url("https://s3.example.com/b/k.vmdk?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261122&X-Amz-Signature=ab").unwrap();
        assert_eq!(l.shown(), "https://s3.example.com/b/k.vmdk");
        assert_eq!(
            url("s3://my-bucket/disks/a%20b.vmdk").unwrap(),
            Location::Bucket(UserBucket {
                s3_bucket: "my-bucket".into(),
                s3_key: "disks/a b.vmdk".into()
            })
        );
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let u = Url::parse("https://127.0.0.1:8443/x").unwrap();
        check_https_url(&u, &allow).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any string as a Url: a verdict, never a panic; an accepted https URL has no
        /// credentials and a refusal never repeats a secret-looking query value.
        #[test]
        fn any_url_gets_a_verdict(
            scheme in "(https|http|s3|ftp|HTTPS)",
            user in "(|[a-z]{1,4}(:[a-z0-9]{0,6})?@)",
            host in "(example\\.com|127\\.0\\.0\\.1|\\[::1\\]|169\\.254\\.169\\.254|[a-z0-9.-]{0,12}|\\[[0-9a-f:]{0,20}\\])",
            path in "[ -~]{0,40}",
            query in "(|\\?[a-zA-Z_=&%-]{0,30}=zz9secret)",
        ) {
            let u = format!("{scheme}://{user}{host}/{path}{query}");
            match url(&u) {
                Ok(Location::Https(parsed)) => {
                    proptest::prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                }
                Ok(Location::Bucket(b)) => {
                    proptest::prop_assert!(check_key("k", &b.s3_key, false).is_ok());
                }
                Ok(Location::Snapshot(_)) => proptest::prop_assert!(false, "a URL is no snapshot"),
                Err(e) => proptest::prop_assert!(!e.to_string().contains("zz9secret")),
            }
        }
    }

    #[test]
    fn content_ranges_parse_strictly() {
        assert_eq!(
            content_range("bytes 0-8388607/20000000"),
            Some((0, 8_388_608, 20_000_000))
        );
        assert_eq!(content_range("bytes 5-5/6"), Some((5, 6, 6)));
        for bad in [
            "bytes 0-9/5",
            "bytes 7-3/10",
            "bytes */10",
            "bytes 0-9/*",
            "items 0-9/10",
            "bytes 0-9",
            "bytes -1-9/10",
            "bytes 0-18446744073709551616/18446744073709551617",
        ] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn error_chains_drop_query_strings() {
        let e =
            io::Error::other("error sending request for url (https://h/k?X-Amz-Signature=secret)");
        let s = error_chain(&e);
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("https://h/k"), "{s}");
    }

    #[test]
    fn error_chains_drop_the_query_of_every_url() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("redirect of https://a.example/x?X-Amz-Signature=first#frag refused")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(io::Error::other(
            "to https://b.example:8443/y?X-Amz-Security-Token=second&s=third, then \"https://c.example/z?q=fourth\" (https://d.example/?fifth)",
        ));
        let s = error_chain(&e);
        for secret in ["first", "frag", "second", "third", "fourth", "fifth"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        for kept in [
            "https://a.example/x refused",
            "https://b.example:8443/y then",
            "\"https://c.example/z\"",
            "(https://d.example/)",
        ] {
            assert!(s.contains(kept), "{kept} not in {s}");
        }
        assert_eq!(strip_url_queries("no url? here#"), "no url? here#");
    }

    /// An object of 9 blocks and a bit, each byte its block's number, served by a fetch
    /// that counts the ranges it is asked for.
    fn counted_object(
        ahead: u64,
    ) -> (
        ObjectSource,
        Arc<Mutex<Vec<std::ops::Range<u64>>>>,
        tokio::runtime::Runtime,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let fetch: Fetch = Arc::new(move |r: std::ops::Range<u64>| {
            log.lock().unwrap().push(r.clone());
            let fill = u8::try_from(r.start / OBJ_BLOCK).unwrap();
            let len = usize::try_from(r.end - r.start).unwrap();
            futures::FutureExt::boxed(async move { Ok(Bytes::from(vec![fill; len])) })
        });
        let size = 9 * OBJ_BLOCK + 4096;
        let src = ObjectSource::with_fetch(fetch, size, rt.handle().clone(), None, ahead);
        (src, asked, rt)
    }

    #[test]
    fn an_object_read_through_is_fetched_once_block_by_block() {
        let (src, asked, _rt) = counted_object(OBJ_AHEAD);
        let size = src.size();
        // As a format opens: its start and its end, then every byte in order.
        let mut buf = vec![0u8; 1 << 20];
        src.read_at(&mut buf[..512], 0).unwrap();
        src.read_at(&mut buf[..512], size - 512).unwrap();
        assert_eq!(buf[0], 9);
        let mut off = 0;
        while off < size {
            let n = src.read_at(&mut buf, off).unwrap();
            assert!(n > 0);
            assert!(buf[..n].iter().all(|&b| u64::from(b) == off / OBJ_BLOCK));
            off += n as u64;
        }
        let mut starts: Vec<u64> = asked.lock().unwrap().iter().map(|r| r.start).collect();
        starts.sort_unstable();
        let want: Vec<u64> = (0..10).map(|i| i * OBJ_BLOCK).collect();
        // Each block once: the end, fetched first, is kept while the blocks behind the
        // reader make room.
        assert_eq!(starts, want);
    }

    #[test]
    fn a_glance_fetches_small_blocks_of_both_ends_and_nothing_ahead() {
        let (src, asked, _rt) = counted_object(0);
        let size = src.size();
        // As detection reads: the first 64 KiB, the last 512 bytes.
        let mut buf = vec![0u8; 64 << 10];
        src.read_at(&mut buf, 0).unwrap();
        src.read_at(&mut buf[..512], size - 512).unwrap();
        // A sealed object's plaintext end may start in the block before the last.
        let last = (size - 1) / GLANCE_BLOCK;
        src.read_at(&mut buf[..512], (last - 1) * GLANCE_BLOCK)
            .unwrap();
        let mut got = asked.lock().unwrap().clone();
        got.sort_by_key(|r| r.start);
        let glance = |i: u64| i * GLANCE_BLOCK..((i + 1) * GLANCE_BLOCK).min(size);
        // The first block, the last and the one before it, asked at once; 516 KiB in all,
        // where blocks of a decoding source would have been 8 MiB and 4 KiB.
        assert_eq!(got, [glance(0), glance(last - 1), glance(last)]);
    }

    #[test]
    fn a_glance_at_a_sealed_object_reads_its_plaintext_ends() {
        let key = [5u8; 32];
        let plain: Vec<u8> = (0..(3 << 20) + 1000u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut sealed = Vec::new();
        let mut sealer = objectmeta::seal::Sealer::new(&key, 0);
        sealer.push(&plain, &mut sealed);
        sealer.finish(&mut sealed);
        let stored = Bytes::from(sealed);
        let asked = Arc::new(Mutex::new(0u64));
        let (data, log) = (stored.clone(), asked.clone());
        let fetch: Fetch = Arc::new(move |r: std::ops::Range<u64>| {
            *log.lock().unwrap() += r.end - r.start;
            let b = data.slice(usize::try_from(r.start).unwrap()..usize::try_from(r.end).unwrap());
            futures::FutureExt::boxed(async move { Ok(b) })
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let inner =
            ObjectSource::with_fetch(fetch, stored.len() as u64, rt.handle().clone(), None, 0);
        let src = SealedSource {
            inner: Arc::new(inner),
            opener: objectmeta::seal::Opener::new(&key, 0),
            plain: plain.len() as u64,
            cache: Mutex::new(VecDeque::new()),
        };
        let mut head = vec![0u8; 64 << 10];
        let mut tail = vec![0u8; 512];
        src.read_at(&mut head, 0).unwrap();
        src.read_at(&mut tail, plain.len() as u64 - 512).unwrap();
        assert!(head == plain[..64 << 10] && tail == plain[plain.len() - 512..]);
        // Four 256 KiB blocks at most, of a 3 MiB object.
        assert!(
            *asked.lock().unwrap() <= 4 * GLANCE_BLOCK,
            "{}",
            asked.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn exports_and_deletes_stay_inside_the_bucket_folder() {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let root = w.join("buckets");
        std::fs::create_dir_all(root.join("out")).unwrap();
        let outside = w.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::fs::write(w.join("victim2"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out/link")).unwrap();
        std::os::unix::fs::symlink(w.join("victim2"), root.join("out/filelink")).unwrap();
        let tmp = w.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let s = Sources::new(Buckets::Local { root: root.clone() }, &UrlPolicy::default()).unwrap();
        let listing = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        for key in [
            "../escape.vmdk",
            "../../escape.vmdk",
            "vms/../../escape.vmdk",
            "link/escape.vmdk",
            "link/sub/escape.vmdk",
            "filelink/escape.vmdk",
            "/abs.vmdk",
            "vms/",
        ] {
            let r = s.export_sink("out", key, &tmp);
            assert!(r.is_err(), "export to {key} was accepted");
            let e = s.delete("out", key).await;
            assert!(e.is_err(), "delete of {key} was accepted");
        }
        for key in ["../../victim2", "link/victim", "../../outside/victim"] {
            assert!(s.delete("out", key).await.is_err(), "delete of {key}");
        }
        assert_eq!(listing(&outside), ["victim"]);
        assert_eq!(listing(w), ["buckets", "outside", "tmp", "victim2"]);
        assert_eq!(listing(&root), ["out"]);
        assert_eq!(listing(&root.join("out")), ["filelink", "link"]);

        // Inside the bucket, exports and deletes work, folders made on the way.
        let sink = s.export_sink("out", "vms/2026/a.vmdk", &tmp).unwrap();
        sink.output().put_at(b"disk", 0).unwrap();
        sink.commit().await.unwrap();
        assert_eq!(
            std::fs::read(root.join("out/vms/2026/a.vmdk")).unwrap(),
            b"disk"
        );
        s.delete("out", "vms/2026/a.vmdk").await.unwrap();
        assert!(!root.join("out/vms/2026/a.vmdk").exists());
        s.delete("out", "vms/2026/a.vmdk").await.unwrap();
        s.delete("out", "never/made.vmdk").await.unwrap();
        assert!(!root.join("out/never").exists(), "a delete makes no folder");
    }
}
