//! Test environments: the same store over a local folder and over a real S3 server (s3s-fs)
//! listening on loopback, started here.
#![allow(
    clippy::cast_possible_truncation,
    dead_code,
    clippy::unwrap_used,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use blockstore::{Backend, BlockStore, S3Config, StoreOptions};
use diskfmt::{Disk, FileSource, Limits};
use kms::{Caller, Kms, KmsConfig, RootKey};
use object_store::ObjectStore;

pub const ACCOUNT: &str = "111122223333";

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Local,
    S3,
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: BlockStore,
    pub objects: Arc<dyn ObjectStore>,
    pub kms: Kms,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

pub fn admin() -> Caller {
    Caller::account_root(ACCOUNT)
}

/// Starts s3s-fs serving `root` on a loopback port with SigV4 authentication; returns its URL.
pub async fn start_s3(root: &Path, bucket: &str) -> (String, tokio::task::JoinHandle<()>) {
    start_s3_gated(root, bucket, None).await
}

/// A gate on the test S3 server: ranged GETs of one object that start within `range` (or,
/// made by [`Gate::on_writes`], the writes of an object: PUT and POST, a multipart upload's
/// start among them) wait until the gate is opened. A test holds a reader at a known point
/// of an object this way (a worker mid-import), or an export about to be uploaded, rather
/// than racing it.
#[derive(Clone)]
pub struct Gate {
    key: String,
    /// `None`: writes.
    range: Option<std::ops::Range<u64>>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl Gate {
    /// A closed gate on reads starting within `range` of the object whose path ends with
    /// `key`.
    pub fn new(key: &str, range: std::ops::Range<u64>) -> Self {
        Gate {
            key: key.into(),
            range: Some(range),
            open: Arc::new(tokio::sync::watch::channel(false).0),
            waiting: Arc::default(),
        }
    }

    /// A closed gate on the writes of objects whose path ends with `key`.
    pub fn on_writes(key: &str) -> Self {
        Gate {
            key: key.into(),
            range: None,
            open: Arc::new(tokio::sync::watch::channel(false).0),
            waiting: Arc::default(),
        }
    }

    /// Requests held at the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every held and later request through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    fn holds<B>(&self, req: &hyper::Request<B>) -> bool {
        let start = req
            .headers()
            .get(hyper::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<u64>().ok());
        let m = req.method();
        req.uri().path().ends_with(&self.key)
            && match &self.range {
                Some(range) => m == hyper::Method::GET && start.is_some_and(|s| range.contains(&s)),
                None => m == hyper::Method::PUT || m == hyper::Method::POST,
            }
    }

    async fn pass<B>(&self, req: &hyper::Request<B>) {
        if !self.holds(req) {
            return;
        }
        let mut rx = self.open.subscribe();
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = rx.wait_for(|open| *open).await;
        self.waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// [`start_s3`], with requests that `gate` holds waiting until it opens.
pub async fn start_s3_gated(
    root: &Path,
    bucket: &str,
    gate: Option<Gate>,
) -> (String, tokio::task::JoinHandle<()>) {
    start_s3_with(root, bucket, gate, None).await
}

/// [`start_s3`] behind a proxy that adds `latency` to every request, as a distant S3 service
/// would.
pub async fn start_s3_slow(
    root: &Path,
    bucket: &str,
    latency: std::time::Duration,
) -> (String, tokio::task::JoinHandle<()>) {
    start_s3_with(root, bucket, None, Some(latency)).await
}

async fn start_s3_with(
    root: &Path,
    bucket: &str,
    gate: Option<Gate>,
    latency: Option<std::time::Duration>,
) -> (String, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    std::fs::create_dir_all(root.join(bucket)).unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(
        "AKIAVMIETEST",
        "vmie-test-secret",
    ));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // s3s-fs checks `If-None-Match: *` and then writes, so two such PUTs of one key at
    // once could both succeed; S3 decides them atomically (one gets 412), and the store's
    // content-addressed chunks rely on that. Conditional PUTs are served one at a time here.
    let conditional = Arc::new(tokio::sync::Mutex::new(()));
    let root = root.to_path_buf();
    let handle = tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let (service, gate, conditional, root) = (
                service.clone(),
                gate.clone(),
                conditional.clone(),
                root.clone(),
            );
            let gated =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (service, gate, conditional, root) = (
                        service.clone(),
                        gate.clone(),
                        conditional.clone(),
                        root.clone(),
                    );
                    async move {
                        if let Some(g) = &gate {
                            g.pass(&req).await;
                        }
                        if let Some(l) = latency {
                            tokio::time::sleep(l).await;
                        }
                        let _one_at_a_time = if req.method() == hyper::Method::PUT
                            && req.headers().contains_key("if-none-match")
                        {
                            Some(conditional.lock().await)
                        } else {
                            None
                        };
                        let object = (req.method() == hyper::Method::GET
                            && req.uri().query().is_none())
                        .then(|| req.uri().path().to_string());
                        let if_match = (req.method() == hyper::Method::GET)
                            .then(|| req.headers().get(hyper::header::IF_MATCH).cloned())
                            .flatten();
                        let resp = hyper::service::Service::call(&service, req).await?;
                        if let Some(refused) = if_match.and_then(|m| unmatched(&m, &resp)) {
                            return Ok(refused);
                        }
                        Ok::<_, s3s::HttpError>(match object {
                            Some(path) => read_whole(&root, &path, resp).await,
                            None => resp,
                        })
                    }
                });
            let conn = http
                .serve_connection(TokioIo::new(sock), gated)
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    (format!("http://{addr}"), handle)
}

/// S3's answer to a `GET` whose `If-Match` names another ETag than the object's: `412
/// PreconditionFailed`. s3s-fs decides `If-Match` on writes but ignores it on reads, where S3
/// (and every S3 service vmie reads from) honours it; this server does too.
fn unmatched(
    if_match: &hyper::header::HeaderValue,
    resp: &s3s::HttpResponse,
) -> Option<s3s::HttpResponse> {
    if !resp.status().is_success() {
        return None;
    }
    let bare = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    let etag = resp
        .headers()
        .get(hyper::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(bare)?;
    let wanted = if_match.to_str().ok()?;
    if wanted
        .split(',')
        .any(|t| t.trim() == "*" || bare(t) == etag)
    {
        return None;
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed</Code>\
                <Message>At least one of the pre-conditions you specified did not hold</Message></Error>";
    hyper::Response::builder()
        .status(hyper::StatusCode::PRECONDITION_FAILED)
        .header(hyper::header::CONTENT_TYPE, "application/xml")
        .body(s3s::Body::from(body.to_string()))
        .ok()
}

/// The answer to a `GET` of an object with its body read in one positioned read. s3s-fs
/// streams a body in 4 KiB reads, each a trip through tokio's blocking pool, which makes this
/// server an order of magnitude slower than the folder it serves (and than S3 itself); s3s
/// has already decided everything else (authentication, the range and its headers; an
/// `If-Match` is decided by [`unmatched`]), so only how the same bytes are read changes. Anything unusual — another
/// status, an escaped key, a body over 64 MiB, a failed read — keeps s3s-fs's own body.
async fn read_whole(root: &Path, path: &str, resp: s3s::HttpResponse) -> s3s::HttpResponse {
    use std::os::unix::fs::FileExt;
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
    };
    let range = match resp.status().as_u16() {
        200 => header(hyper::header::CONTENT_LENGTH)
            .and_then(|l| l.parse::<u64>().ok())
            .map(|l| (0, l)),
        206 => header(hyper::header::CONTENT_RANGE)
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split_once('/'))
            .and_then(|(r, _)| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()? + 1))),
        _ => None,
    };
    let Some((start, end)) = range.filter(|(a, b)| a <= b && b - a <= 64 << 20) else {
        return resp;
    };
    if path.contains('%') || path.split('/').any(|s| s == "..") {
        return resp;
    }
    let file = root.join(path.trim_start_matches('/'));
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; usize::try_from(end - start).unwrap()];
        std::fs::File::open(file)?.read_exact_at(&mut buf, start)?;
        std::io::Result::Ok(buf)
    })
    .await;
    match read {
        Ok(Ok(buf)) => {
            let (parts, _) = resp.into_parts();
            hyper::Response::from_parts(parts, s3s::Body::from(buf))
        }
        _ => resp,
    }
}

/// Settings for the server [`start_s3`] started at `url`.
pub fn s3_config(url: String, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        region: "us-east-1".into(),
        endpoint: Some(url),
        path_style: true,
        allow_http: true,
        access_key_id: Some("AKIAVMIETEST".into()),
        secret_access_key: Some("vmie-test-secret".into()),
        session_token: None,
    }
}

pub async fn env(kind: Kind) -> Env {
    env_with(
        kind,
        StoreOptions {
            chunk_size: 1 << 16,
            ..StoreOptions::default()
        },
    )
    .await
}

pub async fn env_with(kind: Kind, opts: StoreOptions) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (backend, server) = match kind {
        Kind::Local => (
            Backend::Local {
                root: dir.path().join("store"),
            },
            None,
        ),
        Kind::S3 => {
            let (url, h) = start_s3(&dir.path().join("s3"), "vmie-test").await;
            (Backend::S3(s3_config(url, "vmie-test")), Some(h))
        }
    };
    let objects = backend.open().unwrap();
    let root = Arc::new(RootKey::load_or_create(&dir.path().join("root.key")).unwrap());
    let kms = Kms::new(
        objects.clone(),
        "kms",
        root,
        KmsConfig {
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
        },
    );
    let store = BlockStore::new(objects.clone(), "snapshots", kms.clone(), opts).unwrap();
    Env {
        dir,
        store,
        objects,
        kms,
        server,
    }
}

/// A raw disk of `size` bytes: pseudo-random data, text and zero runs, written sparse.
pub fn make_raw(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut pos = 0usize;
    let mut region = 0u64;
    while pos < size {
        let len = (37 * 1024 + (region as usize * 7919) % (96 * 1024)).min(size - pos);
        match region % 4 {
            0 | 1 => {
                for b in &mut data[pos..pos + len] {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            2 => {
                let text = b"vmie test text, compressible. ";
                for (i, b) in data[pos..pos + len].iter_mut().enumerate() {
                    *b = text[i % text.len()];
                }
            }
            _ => {}
        }
        pos += len;
        region += 1;
    }
    write_sparse(path, &data);
    data
}

pub fn write_sparse(path: &Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(data.len() as u64).unwrap();
    for (i, c) in data.chunks(4096).enumerate() {
        if c.iter().any(|&b| b != 0) {
            f.write_all_at(c, (i * 4096) as u64).unwrap();
        }
    }
}

pub fn open_disk(path: &Path) -> Arc<dyn Disk> {
    let src = Arc::new(FileSource::open(path).unwrap());
    Arc::from(diskfmt::open(src, &Limits::default()).unwrap())
}

pub fn raw_path(env: &Env, name: &str) -> PathBuf {
    env.dir.path().join(name)
}

/// A store over a local folder `root` (root key in `root/root.key`), for tests that open the
/// same store from two processes.
pub fn local_store(root: &Path, opts: StoreOptions) -> BlockStore {
    let objects = Backend::Local {
        root: root.join("store"),
    }
    .open()
    .unwrap();
    let key = Arc::new(RootKey::load_or_create(&root.join("root.key")).unwrap());
    let kms = Kms::new(
        objects.clone(),
        "kms",
        key,
        KmsConfig {
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
        },
    );
    BlockStore::new(objects, "snapshots", kms, opts).unwrap()
}
