//! The buckets the S3 endpoint serves: the deployment's own (the engine's [`Buckets`]) — a
//! folder per bucket in the embedded default, the buckets of the S3-compatible service at
//! scale — so an object written here is what `import-image` reads from `S3Bucket`/`S3Key`,
//! and what an export writes is read back here.
//!
//! An object is its bytes at its key, nothing else: a local bucket's file `DIR/KEY`, or the
//! remote bucket's object `KEY`. What S3 keeps beside the bytes (the ETag as S3 computes it,
//! `Content-Type`, `x-amz-meta-*`) is a small JSON record (crate `objectmeta`, which the
//! activity log writes too): in the embedded default under `BUCKETS/.vmie-meta/BUCKET/KEY.json`,
//! remotely the bucket's `.vmie-meta/KEY.json`. It names the stored bytes it describes (size
//! and modification, or the backend's ETag), so a record left behind by bytes replaced some
//! other way (an export) is ignored. Keys with a part starting `.vmie-` are the service's own
//! and refused.
//!
//! Uploads never leave half an object: a single `PUT` is written to a temporary file in the
//! key's folder and renamed into place once its digests are checked (remotely, a multipart
//! upload of the backend, aborted on any error). Multipart uploads keep their parts apart —
//! `BUCKETS/.vmie-uploads/BUCKET/ID/` or the bucket's `.vmie-uploads/ID/` — until completion
//! assembles them the same way; an abort removes them. Bodies stream: memory stays bounded
//! whatever their size.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use blockstore::S3Config;
use engine::{Buckets, Sources};

/// A store error, as S3 names it.
#[derive(Debug)]
pub struct StoreError {
    /// The S3 error code (`NoSuchKey`, `BadDigest`, …).
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl StoreError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        StoreError {
            code,
            message: message.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        StoreError::new("InternalError", e.to_string())
    }
}

type R<T> = Result<T, StoreError>;

use objectmeta::seal::{Opener, Sealer};
pub use objectmeta::{Meta, RESERVED, Sse, Stat};
use objectmeta::{Records, quoted};

/// The data key an object's bytes are sealed with ([`objectmeta::seal`]), and its record
/// (the key wrapped under KMS). Made by the S3 operations, which ask KMS for it as the caller.
pub struct SealKey {
    /// The record the object will carry (its `size` is set when the bytes are stored).
    pub sse: Sse,
    /// The data key.
    pub material: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("key_id", &self.sse.key_id)
            .finish_non_exhaustive()
    }
}

/// Largest object written by one `PUT`, and largest part: S3's 5 GiB.
pub const MAX_PUT: u64 = 5 << 30;
/// Smallest part but the last.
pub const MIN_PART: u64 = 5 << 20;
/// Most parts of one upload.
pub const MAX_PARTS: i32 = 10_000;
/// Most keys one listing reads from a bucket before giving up (the local folder walk).
const MAX_WALK: usize = 1_000_000;
/// Buffer of file writes (a block of zeros in it is skipped, leaving a hole).
const BLOCK: usize = 64 << 10;

/// An object's stat and what S3 keeps beside it.
#[derive(Debug, Clone)]
pub struct Object {
    /// As stored.
    pub stat: Stat,
    /// Its record, or one made from the stat (ETag: the stored tag) when it has none.
    pub meta: Meta,
}

impl Object {
    /// The object's size as clients see it (its plaintext when sealed).
    #[must_use]
    pub fn size(&self) -> u64 {
        self.meta.sse.as_ref().map_or(self.stat.size, |e| e.size)
    }
}

/// What a finished write reports.
#[derive(Debug, Clone)]
pub struct Written {
    /// The ETag, quoted.
    pub etag: String,
    /// Bytes.
    pub size: u64,
}

/// One listed key.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Last modified.
    pub modified: SystemTime,
    /// The ETag, quoted.
    pub etag: String,
}

/// A multipart upload's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    /// The key it will complete.
    pub key: String,
    /// What the object will carry.
    pub meta: Meta,
    /// When it was started (ms).
    pub initiated_ms: i64,
}

/// One stored part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartInfo {
    /// Its number.
    pub number: i32,
    /// Its ETag (the MD5 of its bytes), quoted.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// When it was stored (ms).
    pub modified_ms: i64,
}

/// What a body's bytes must match (given by the client) and what was computed.
#[derive(Default)]
pub struct Digests {
    md5: Option<s3s::crypto::Md5>,
    /// The checksums asked for (`x-amz-checksum-*`, by name), computed as the bytes pass.
    pub checksums: s3s::checksum::ChecksumHasher,
}

impl Digests {
    fn update(&mut self, b: &[u8]) {
        use s3s::crypto::Checksum as _;
        if let Some(m) = &mut self.md5 {
            m.update(b);
        }
        self.checksums.update(b);
    }
}

/// A body to store, as it arrives.
pub type Body = std::pin::Pin<
    Box<dyn Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

/// What a body written gave: its MD5 and the checksums computed.
pub struct Received {
    /// MD5 of the bytes.
    pub md5: [u8; 16],
    /// Bytes.
    pub size: u64,
    /// The checksums asked for.
    pub checksums: s3s::dto::Checksum,
}

/// The deployment's buckets, as the S3 endpoint sees them.
#[derive(Clone)]
pub struct Store {
    sources: Sources,
    local: Option<PathBuf>,
    remote: Option<S3Config>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    catalog::now_ms()
}

fn obj(key: &str) -> R<ObjPath> {
    ObjPath::parse(key).map_err(|e| StoreError::new("InvalidArgument", format!("key: {e}")))
}

/// Refuses keys the service keeps for itself or a folder could not hold.
pub fn check_key(key: &str) -> R<()> {
    engine::request::check_key("key", key, false)
        .map_err(|e| StoreError::new("InvalidArgument", e.to_string()))?;
    if key.split('/').any(|p| p.starts_with(RESERVED)) {
        return Err(StoreError::new(
            "InvalidArgument",
            format!("keys with a part starting {RESERVED:?} are the service's own"),
        ));
    }
    if key.ends_with('/') {
        return Err(StoreError::new(
            "InvalidArgument",
            "keys ending with '/' (folder markers) are not stored: folders exist by the keys in them",
        ));
    }
    Ok(())
}

fn no_bucket(b: &str) -> StoreError {
    StoreError::new("NoSuchBucket", format!("The bucket {b} does not exist"))
}

fn no_key(k: &str) -> StoreError {
    StoreError::new(
        "NoSuchKey",
        format!(
            "The specified key does not exist: {}",
            engine::request::shown(k)
        ),
    )
}

fn no_upload() -> StoreError {
    StoreError::new(
        "NoSuchUpload",
        "The specified multipart upload does not exist; it may have been aborted or completed",
    )
}

fn from_os(e: &object_store::Error, key: &str) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => no_key(key),
        e => StoreError::internal(e),
    }
}

/// Writes `buf` at the file's position, seeking over whole blocks of zeros (holes).
fn write_sparse(f: &mut std::fs::File, buf: &[u8]) -> std::io::Result<()> {
    for block in buf.chunks(BLOCK) {
        if block.iter().all(|b| *b == 0) {
            f.seek(SeekFrom::Current(i64::try_from(block.len()).unwrap_or(0)))?;
        } else {
            f.write_all(block)?;
        }
    }
    Ok(())
}

/// Where a body goes, sealed on the way when the object is encrypted at rest.
struct Sink {
    to: To,
    sealer: Option<Sealer>,
}

enum To {
    /// A temporary file, renamed to `target` on commit.
    File {
        file: Option<std::fs::File>,
        tmp: tempfile::TempPath,
        target: PathBuf,
        size: u64,
    },
    /// A multipart upload of the backend.
    Remote { w: WriteMultipart },
}

impl Sink {
    fn file(dir: &Path, target: PathBuf) -> R<Sink> {
        let tmp = tempfile::Builder::new()
            .prefix(".vmie-upload-")
            .tempfile_in(dir)
            .map_err(StoreError::internal)?;
        let (file, tmp) = tmp.into_parts();
        Ok(Sink {
            to: To::File {
                file: Some(file),
                tmp,
                target,
                size: 0,
            },
            sealer: None,
        })
    }

    async fn remote(store: &Arc<dyn ObjectStore>, path: &ObjPath) -> R<Sink> {
        let up = store
            .put_multipart(path)
            .await
            .map_err(StoreError::internal)?;
        Ok(Sink {
            to: To::Remote {
                w: WriteMultipart::new_with_chunk_size(up, 8 << 20),
            },
            sealer: None,
        })
    }

    /// Seals what is written as stream `stream` under `key` ([`objectmeta::seal`]).
    fn sealed(mut self, key: Option<&[u8; 32]>, stream: u32) -> Sink {
        self.sealer = key.map(|k| Sealer::new(k, stream));
        self
    }

    /// Writes `buf` (hashing the plaintext into `d` on the way).
    async fn write(&mut self, buf: Vec<u8>, d: &mut Digests) -> R<()> {
        let Some(mut sealer) = self.sealer.take() else {
            return self.to.write(buf, Some(d)).await;
        };
        let mut dd = std::mem::take(d);
        let (sealer, dd, out) = tokio::task::spawn_blocking(move || {
            dd.update(&buf);
            let mut out = Vec::with_capacity(buf.len() + buf.len() / 1024 + 64);
            sealer.push(&buf, &mut out);
            (sealer, dd, out)
        })
        .await
        .map_err(StoreError::internal)?;
        self.sealer = Some(sealer);
        *d = dd;
        self.to.write(out, None).await
    }

    async fn commit(mut self) -> R<()> {
        if let Some(sealer) = self.sealer.take() {
            let mut out = Vec::new();
            sealer.finish(&mut out);
            self.to.write(out, None).await?;
        }
        self.to.commit().await
    }

    async fn abort(self) {
        self.to.abort().await;
    }
}

impl To {
    /// Writes `buf`, hashing it into `d` when given.
    async fn write(&mut self, buf: Vec<u8>, d: Option<&mut Digests>) -> R<()> {
        match self {
            To::File { file, size, .. } => {
                let mut f = file
                    .take()
                    .ok_or_else(|| StoreError::internal("file gone"))?;
                let mut d = d;
                let mut taken = d.as_deref_mut().map(std::mem::take);
                let n = buf.len() as u64;
                let (f, back, r) = tokio::task::spawn_blocking(move || {
                    if let Some(t) = &mut taken {
                        t.update(&buf);
                    }
                    let r = write_sparse(&mut f, &buf);
                    (f, taken, r)
                })
                .await
                .map_err(StoreError::internal)?;
                *file = Some(f);
                if let (Some(back), Some(d)) = (back, d) {
                    *d = back;
                }
                *size += n;
                r.map_err(StoreError::internal)
            }
            To::Remote { w } => {
                if let Some(d) = d {
                    d.update(&buf);
                }
                w.wait_for_capacity(4).await.map_err(StoreError::internal)?;
                w.write(&buf);
                Ok(())
            }
        }
    }

    async fn commit(self) -> R<()> {
        match self {
            To::File {
                file,
                tmp,
                target,
                size,
            } => {
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    if let Some(f) = file {
                        // Trailing holes are still part of the object.
                        f.set_len(size)?;
                        f.sync_all()?;
                    }
                    tmp.persist(&target).map_err(|e| e.error)?;
                    // The rename itself is durable only once its folder is flushed: an
                    // acknowledged write survives a power cut, as S3 promises.
                    if let Some(dir) = target.parent() {
                        std::fs::File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                })
                .await
                .map_err(StoreError::internal)?
                .map_err(StoreError::internal)
            }
            To::Remote { w } => w.finish().await.map(|_| ()).map_err(StoreError::internal),
        }
    }

    async fn abort(self) {
        match self {
            // The temporary file goes with its path.
            To::File { .. } => {}
            To::Remote { w } => {
                let _ = w.abort().await;
            }
        }
    }
}

/// Collects a body into `sink` in blocks of about 1 MiB, at most `max` bytes.
async fn pump(body: &mut Body, sink: &mut Sink, d: &mut Digests, max: u64) -> R<u64> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            StoreError::new("IncompleteBody", format!("the body could not be read: {e}"))
        })?;
        total += chunk.len() as u64;
        if total > max {
            return Err(StoreError::new(
                "EntityTooLarge",
                format!("Your proposed upload exceeds the maximum allowed size of {max} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= 1 << 20 {
            sink.write(std::mem::replace(&mut buf, Vec::with_capacity(1 << 20)), d)
                .await?;
        }
    }
    if !buf.is_empty() {
        sink.write(buf, d).await?;
    }
    Ok(total)
}

/// Streams `body` into `sink`, then checks it against `check` before committing; any error
/// aborts (nothing is left).
async fn receive(
    mut body: Body,
    mut sink: Sink,
    mut d: Digests,
    check: impl FnOnce(&Received) -> R<()>,
) -> R<Received> {
    use s3s::crypto::Checksum as _;
    d.md5 = Some(s3s::crypto::Md5::new());
    let r = pump(&mut body, &mut sink, &mut d, MAX_PUT).await;
    let size = match r {
        Ok(n) => n,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    let md5 = d
        .md5
        .take()
        .map(s3s::crypto::Md5::finalize)
        .unwrap_or_default();
    let got = Received {
        md5,
        size,
        checksums: d.checksums.finalize(),
    };
    if let Err(e) = check(&got) {
        sink.abort().await;
        return Err(e);
    }
    sink.commit().await?;
    Ok(got)
}

impl Store {
    /// The buckets of `sources`.
    pub fn new(sources: Sources) -> Result<Store, String> {
        let (local, remote) = match sources.buckets() {
            Buckets::Local { root } => (Some(root.clone()), None),
            Buckets::S3(c) => (None, Some(c.clone())),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Store {
            sources,
            local,
            remote,
            http,
        })
    }

    /// The bucket folder (local buckets).
    fn dir(&self, bucket: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|r| r.join(bucket))
    }

    fn remote_store(&self, bucket: &str) -> R<Arc<dyn ObjectStore>> {
        self.sources
            .bucket_store(bucket)
            .map_err(|_| no_bucket(bucket))
    }

    /// Where `bucket`'s records live.
    fn records(&self, bucket: &str) -> R<Records> {
        Ok(match &self.local {
            Some(root) => Records::Local { root: root.clone() },
            None => Records::Remote {
                store: self.remote_store(bucket)?,
            },
        })
    }

    /// Where a bucket's multipart uploads are kept, and the prefix of upload `id`.
    fn uploads_at(&self, bucket: &str, id: &str) -> R<(Arc<dyn ObjectStore>, String)> {
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.len() != 32 {
            return Err(no_upload());
        }
        match &self.local {
            Some(root) => {
                let dir = root.join(".vmie-uploads");
                std::fs::create_dir_all(&dir).map_err(StoreError::internal)?;
                let s = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(StoreError::internal)?;
                Ok((Arc::new(s), format!("{bucket}/{id}")))
            }
            None => Ok((self.remote_store(bucket)?, format!(".vmie-uploads/{id}"))),
        }
    }

    /// The local folder holding upload `id`'s parts.
    fn upload_dir(&self, bucket: &str, id: &str) -> Option<PathBuf> {
        self.local
            .as_ref()
            .map(|r| r.join(".vmie-uploads").join(bucket).join(id))
    }

    // ---- buckets ----

    /// The buckets and when each was made.
    pub async fn list_buckets(&self) -> R<Vec<(String, SystemTime)>> {
        if let Some(root) = &self.local {
            let mut out = Vec::new();
            for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(m) = e.metadata() else { continue };
                if !m.is_dir() || engine::request::check_bucket("bucket", &name).is_err() {
                    continue;
                }
                out.push((name, m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
            out.sort();
            return Ok(out);
        }
        let (status, body) = self.remote_call("GET", "/").await?;
        if status != 200 {
            return Err(StoreError::internal(format!(
                "the bucket service answered HTTP {status} to ListBuckets"
            )));
        }
        Ok(bucket_names(&body)
            .into_iter()
            .map(|n| (n, SystemTime::UNIX_EPOCH))
            .collect())
    }

    /// Whether `bucket` exists.
    pub async fn bucket_exists(&self, bucket: &str) -> R<bool> {
        if let Some(dir) = self.dir(bucket) {
            return Ok(dir.is_dir());
        }
        let (status, _) = self.remote_call("HEAD", &format!("/{bucket}")).await?;
        Ok(status == 200)
    }

    async fn need_bucket(&self, bucket: &str) -> R<()> {
        if self.bucket_exists(bucket).await? {
            Ok(())
        } else {
            Err(no_bucket(bucket))
        }
    }

    /// Makes `bucket`.
    pub async fn create_bucket(&self, bucket: &str) -> R<()> {
        engine::request::check_bucket("bucket", bucket)
            .map_err(|e| StoreError::new("InvalidBucketName", e.to_string()))?;
        if self.bucket_exists(bucket).await? {
            return Err(StoreError::new(
                "BucketAlreadyOwnedByYou",
                format!("The bucket {bucket} exists and is yours"),
            ));
        }
        if let Some(dir) = self.dir(bucket) {
            return std::fs::create_dir(&dir).map_err(StoreError::internal);
        }
        let (status, _) = self.remote_call("PUT", &format!("/{bucket}")).await?;
        if status == 200 {
            Ok(())
        } else {
            Err(StoreError::internal(format!(
                "the bucket service answered HTTP {status} to CreateBucket"
            )))
        }
    }

    /// Removes `bucket`, which must hold no object.
    pub async fn delete_bucket(&self, bucket: &str) -> R<()> {
        self.need_bucket(bucket).await?;
        let page = self.list(bucket, "", None, 1).await?;
        if !page.0.is_empty() {
            return Err(StoreError::new(
                "BucketNotEmpty",
                "The bucket you tried to delete is not empty",
            ));
        }
        if let (Some(dir), Some(root)) = (self.dir(bucket), &self.local) {
            for extra in [".vmie-meta", ".vmie-uploads"] {
                let _ = std::fs::remove_dir_all(root.join(extra).join(bucket));
            }
            // Folders left empty by deleted keys go with it.
            prune(&dir);
            return std::fs::remove_dir(&dir).map_err(|e| {
                StoreError::new(
                    "BucketNotEmpty",
                    format!("The bucket you tried to delete is not empty: {e}"),
                )
            });
        }
        let store = self.remote_store(bucket)?;
        let own: Vec<ObjPath> = store
            .list(None)
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(StoreError::internal)?;
        for p in own {
            let _ = store.delete(&p).await;
        }
        let (status, _) = self.remote_call("DELETE", &format!("/{bucket}")).await?;
        if status == 204 || status == 200 {
            Ok(())
        } else {
            Err(StoreError::internal(format!(
                "the bucket service answered HTTP {status} to DeleteBucket"
            )))
        }
    }

    /// A request to the bucket service itself (bucket operations, which the object store
    /// layer has none of), signed with the deployment's credentials.
    async fn remote_call(&self, method: &str, path: &str) -> R<(u16, String)> {
        let cfg = self
            .remote
            .as_ref()
            .ok_or_else(|| StoreError::internal("no bucket service"))?;
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        let url = reqwest::Url::parse(&format!("{}{path}", endpoint.trim_end_matches('/')))
            .map_err(StoreError::internal)?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let amz_date = crate::sigv4::format_amz_date(now_ms() / 1000);
        let empty = crate::sigv4::sha256_hex(b"");
        let mut headers = vec![
            ("host".to_string(), host),
            ("x-amz-content-sha256".to_string(), empty),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        if let Some(t) = &cfg.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        let names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
        let req = crate::sigv4::Request {
            method,
            path: url.path(),
            query: "",
            headers: &headers,
            body: b"",
        };
        let auth = crate::sigv4::authorization(
            &req,
            cfg.access_key_id.as_deref().unwrap_or_default(),
            cfg.secret_access_key.as_deref().unwrap_or_default(),
            &cfg.region,
            "s3",
            &amz_date,
            &names,
        )
        .map_err(StoreError::internal)?;
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(StoreError::internal)?;
        let mut rb = self.http.request(m, url).header("authorization", auth);
        for (n, v) in &headers {
            if n != "host" {
                rb = rb.header(n.as_str(), v.as_str());
            }
        }
        let resp = rb.send().await.map_err(|e| {
            StoreError::internal(format!(
                "the bucket service could not be reached: {}",
                engine::source::error_chain(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, text))
    }

    // ---- objects ----

    /// The object `key` of `bucket`.
    pub async fn stat(&self, bucket: &str, key: &str) -> R<Stat> {
        self.need_bucket(bucket).await?;
        if self.local.is_some() {
            let path = self
                .sources
                .local_file(bucket, key)
                .ok_or_else(|| no_key(key))?;
            let m = std::fs::metadata(&path).map_err(|_| no_key(key))?;
            if !m.is_file() {
                return Err(no_key(key));
            }
            return Ok(Stat::local(&m));
        }
        let m = self
            .remote_store(bucket)?
            .head(&obj(key)?)
            .await
            .map_err(|e| from_os(&e, key))?;
        Ok(Stat {
            size: m.size,
            modified: m.last_modified.into(),
            tag: m.e_tag.unwrap_or_default(),
        })
    }

    /// The record of `key`, if it describes the bytes `stat` says are stored.
    async fn meta(&self, bucket: &str, key: &str, stat: &Stat) -> Meta {
        let found = match self.records(bucket) {
            Ok(r) => r.get(bucket, key, stat).await,
            Err(_) => None,
        };
        found.unwrap_or_else(|| Meta::from_stat(stat))
    }

    /// The object and its record.
    pub async fn head(&self, bucket: &str, key: &str) -> R<Object> {
        let stat = self.stat(bucket, key).await?;
        let meta = self.meta(bucket, key, &stat).await;
        Ok(Object { stat, meta })
    }

    async fn put_meta(&self, bucket: &str, key: &str, meta: &Meta) -> R<()> {
        self.records(bucket)?
            .put(bucket, key, meta)
            .await
            .map_err(StoreError::internal)
    }

    async fn delete_meta(&self, bucket: &str, key: &str) {
        if let Ok(r) = self.records(bucket) {
            r.delete(bucket, key).await;
        }
    }

    async fn sink_for(&self, bucket: &str, key: &str) -> R<Sink> {
        check_key(key)?;
        self.need_bucket(bucket).await?;
        if self.local.is_some() {
            let (parent, name) = self
                .sources
                .local_target(bucket, key)
                .map_err(|e| StoreError::new("InvalidArgument", e.to_string()))?
                .ok_or_else(|| no_bucket(bucket))?;
            let target = parent.join(name);
            if target.is_dir() {
                return Err(StoreError::new(
                    "InvalidArgument",
                    "a folder of that name holds other keys (key/…); choose another key",
                ));
            }
            return Sink::file(&parent, target);
        }
        Sink::remote(&self.remote_store(bucket)?, &obj(key)?).await
    }

    /// Stores `body` as `key`, checked by `check` and sealed under `seal` when given;
    /// records `meta` with the ETag (the MD5 of the plaintext).
    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Body,
        digests: Digests,
        mut meta: Meta,
        seal: Option<&SealKey>,
        check: impl FnOnce(&Received) -> R<()>,
    ) -> R<(Written, Received)> {
        let sink = self
            .sink_for(bucket, key)
            .await?
            .sealed(seal.map(|k| &*k.material), 0);
        let got = receive(body, sink, digests, check).await?;
        meta.etag = quoted(&hex::encode(got.md5));
        meta.sse = seal.map(|k| Sse {
            size: got.size,
            ..k.sse.clone()
        });
        self.finish(bucket, key, meta, got).await
    }

    /// Records `meta` for the bytes just stored at `key`.
    async fn finish(
        &self,
        bucket: &str,
        key: &str,
        mut meta: Meta,
        got: Received,
    ) -> R<(Written, Received)> {
        let stat = self.stat(bucket, key).await?;
        meta.stored = stat.tag;
        self.put_meta(bucket, key, &meta).await?;
        Ok((
            Written {
                etag: meta.etag,
                size: got.size,
            },
            got,
        ))
    }

    /// The bytes `range` (end exclusive) of `key` as clients see them, as a stream: opened
    /// with the data key `open` when the object `o` is sealed.
    pub async fn read(
        &self,
        bucket: &str,
        key: &str,
        o: &Object,
        range: std::ops::Range<u64>,
        open: Option<&[u8; 32]>,
    ) -> R<s3s::dto::StreamingBlob> {
        let stream = match (&o.meta.sse, open) {
            (None, _) => self.read_stored(bucket, key, range).await?,
            (Some(e), Some(k)) => {
                if range.is_empty() {
                    futures::stream::empty().boxed()
                } else {
                    let first = range.start / objectmeta::seal::BLOCK as u64;
                    let last = (range.end - 1) / objectmeta::seal::BLOCK as u64;
                    let from = objectmeta::seal::slot(e.size, first).0;
                    let (at, len) = objectmeta::seal::slot(e.size, last);
                    let stored = self.read_stored(bucket, key, from..at + len as u64).await?;
                    opened(stored, Opener::new(k, 0), e.size, first, range)
                }
            }
            (Some(_), None) => {
                return Err(StoreError::internal(
                    "the object is encrypted at rest and no key was given to read it",
                ));
            }
        };
        Ok(s3s::dto::StreamingBlob::wrap(SyncStream::new(stream)))
    }

    /// The stored bytes `range` of `key`.
    async fn read_stored(
        &self,
        bucket: &str,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> R<futures::stream::BoxStream<'static, std::io::Result<Bytes>>> {
        if self.local.is_some() {
            let path = self
                .sources
                .local_file(bucket, key)
                .ok_or_else(|| no_key(key))?;
            let mut f = std::fs::File::open(&path).map_err(|_| no_key(key))?;
            f.seek(SeekFrom::Start(range.start))
                .map_err(StoreError::internal)?;
            let left = range.end.saturating_sub(range.start);
            let s = futures::stream::unfold((Some(f), left), |(f, left)| async move {
                let mut f = f?;
                if left == 0 {
                    return None;
                }
                let n = usize::try_from(left.min(256 << 10)).unwrap_or(256 << 10);
                let r = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    let r = f.read_exact(&mut buf).map(|()| buf);
                    (f, r)
                })
                .await;
                Some(match r {
                    Ok((f, Ok(buf))) => (Ok(Bytes::from(buf)), (Some(f), left - n as u64)),
                    Ok((_, Err(e))) => (Err(e), (None, 0)),
                    Err(e) => (Err(std::io::Error::other(e)), (None, 0)),
                })
            });
            return Ok(s.boxed());
        }
        let store = self.remote_store(bucket)?;
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..Default::default()
        };
        let r = store
            .get_opts(&obj(key)?, opts)
            .await
            .map_err(|e| from_os(&e, key))?;
        Ok(r.into_stream().map_err(std::io::Error::other).boxed())
    }

    /// Removes `key` (a missing one is fine, as in S3).
    pub async fn delete(&self, bucket: &str, key: &str) -> R<()> {
        self.need_bucket(bucket).await?;
        if key.split('/').any(|p| p.starts_with(RESERVED)) {
            return Ok(());
        }
        self.sources
            .delete(bucket, key)
            .await
            .map_err(|e| StoreError::new("InvalidArgument", e.to_string()))?;
        self.delete_meta(bucket, key).await;
        // A folder exists by the keys in it: the ones left empty go.
        if let (Some(dir), Some(root)) = (self.dir(bucket), &self.local) {
            unfold(&dir, key);
            unfold(&root.join(".vmie-meta").join(bucket), key);
        }
        Ok(())
    }

    /// One page of `bucket`'s keys under `prefix` after `after`, at most `max`; and whether
    /// more follow.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> R<(Vec<Listed>, bool)> {
        self.need_bucket(bucket).await?;
        let mut all: Vec<(String, Stat)> = if let Some(dir) = self.dir(bucket) {
            let prefix = prefix.to_string();
            tokio::task::spawn_blocking(move || walk(&dir, &prefix))
                .await
                .map_err(StoreError::internal)??
        } else {
            let store = self.remote_store(bucket)?;
            // The object store lists by whole path parts: from the prefix's folder.
            let base = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let base = if base.is_empty() {
                None
            } else {
                Some(obj(base)?)
            };
            let mut s = store.list(base.as_ref());
            let mut out = Vec::new();
            while let Some(m) = s.next().await {
                let m = m.map_err(StoreError::internal)?;
                let k = m.location.to_string();
                if !k.starts_with(prefix) || k.split('/').any(|p| p.starts_with(RESERVED)) {
                    continue;
                }
                if out.len() >= MAX_WALK {
                    return Err(StoreError::internal(
                        "more than 1,000,000 keys under the prefix",
                    ));
                }
                out.push((
                    k,
                    Stat {
                        size: m.size,
                        modified: m.last_modified.into(),
                        tag: m.e_tag.unwrap_or_default(),
                    },
                ));
            }
            out
        };
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let start = match after {
            Some(a) => all.partition_point(|(k, _)| k.as_str() <= a),
            None => 0,
        };
        let more = all.len() > start + max;
        let mut page = Vec::new();
        for (key, stat) in all.into_iter().skip(start).take(max) {
            let meta = self.meta(bucket, &key, &stat).await;
            page.push(Listed {
                key,
                size: meta.sse.as_ref().map_or(stat.size, |e| e.size),
                modified: stat.modified,
                etag: meta.etag,
            });
        }
        Ok((page, more))
    }

    /// Copies `src` to `dst` (across buckets too), with `meta` (the source's unless
    /// replaced); the copy's ETag is the source's.
    pub async fn copy(
        &self,
        src: (&str, &str),
        dst: (&str, &str),
        meta: Option<Meta>,
        open: Option<&[u8; 32]>,
        seal: Option<&SealKey>,
    ) -> R<Written> {
        let from = self.head(src.0, src.1).await?;
        let body = self.read(src.0, src.1, &from, 0..from.size(), open).await?;
        let body: Body = Box::pin(body);
        let mut meta = meta.unwrap_or_else(|| from.meta.clone());
        let (w, got) = self
            .put(
                dst.0,
                dst.1,
                body,
                Digests::default(),
                meta.clone(),
                seal,
                |_| Ok(()),
            )
            .await?;
        // The source's ETag (a multipart one stays one), as S3 keeps it.
        if from.meta.etag != w.etag && from.meta.etag.contains('-') {
            meta.etag.clone_from(&from.meta.etag);
            meta.sse = seal.map(|k| Sse {
                size: got.size,
                ..k.sse.clone()
            });
            return Ok(self.finish(dst.0, dst.1, meta, got).await?.0);
        }
        Ok(w)
    }

    // ---- multipart uploads ----

    /// Starts an upload of `key`; its id.
    pub async fn create_upload(&self, bucket: &str, key: &str, meta: Meta) -> R<String> {
        check_key(key)?;
        self.need_bucket(bucket).await?;
        let mut b = [0u8; 16];
        kms::aead::random(&mut b);
        let id = hex::encode(b);
        let (s, p) = self.uploads_at(bucket, &id)?;
        let rec = Upload {
            key: key.to_string(),
            meta,
            initiated_ms: now_ms(),
        };
        s.put(
            &obj(&format!("{p}/upload.json"))?,
            PutPayload::from(serde_json::to_vec(&rec).map_err(StoreError::internal)?),
        )
        .await
        .map_err(StoreError::internal)?;
        Ok(id)
    }

    /// Upload `id` of `key`.
    pub async fn upload(&self, bucket: &str, key: &str, id: &str) -> R<Upload> {
        self.need_bucket(bucket).await?;
        let (s, p) = self.uploads_at(bucket, id)?;
        let b = s
            .get(&obj(&format!("{p}/upload.json"))?)
            .await
            .map_err(|_| no_upload())?
            .bytes()
            .await
            .map_err(|_| no_upload())?;
        let u: Upload = serde_json::from_slice(&b).map_err(|_| no_upload())?;
        if u.key != key {
            return Err(no_upload());
        }
        Ok(u)
    }

    /// Every multipart upload of `bucket` in progress whose key starts with `prefix`: its
    /// id and record, by key then by when it was started (ListMultipartUploads).
    pub async fn uploads(&self, bucket: &str, prefix: &str) -> R<Vec<(String, Upload)>> {
        self.need_bucket(bucket).await?;
        let (s, root) = match &self.local {
            Some(r) => {
                let dir = r.join(".vmie-uploads").join(bucket);
                if !dir.is_dir() {
                    return Ok(Vec::new());
                }
                let s = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(StoreError::internal)?;
                (Arc::new(s) as Arc<dyn ObjectStore>, None)
            }
            None => (self.remote_store(bucket)?, Some(obj(".vmie-uploads")?)),
        };
        let records: Vec<ObjPath> = s
            .list(root.as_ref())
            .map_ok(|m| m.location)
            .try_filter(|p| futures::future::ready(p.filename() == Some("upload.json")))
            .try_collect()
            .await
            .map_err(StoreError::internal)?;
        let mut out = Vec::new();
        for r in records.into_iter().take(MAX_WALK) {
            // .../ID/upload.json
            let parts: Vec<_> = r.parts().collect();
            let Some(id) = parts
                .len()
                .checked_sub(2)
                .map(|i| parts[i].as_ref().to_string())
            else {
                continue;
            };
            let Ok(g) = s.get(&r).await else { continue };
            let Ok(b) = g.bytes().await else { continue };
            if let Ok(u) = serde_json::from_slice::<Upload>(&b)
                && u.key.starts_with(prefix)
            {
                out.push((id, u));
            }
        }
        out.sort_by(|a, b| {
            (&a.1.key, a.1.initiated_ms, &a.0).cmp(&(&b.1.key, b.1.initiated_ms, &b.0))
        });
        Ok(out)
    }

    /// Stores part `n` of upload `id`.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        n: i32,
        body: Body,
        digests: Digests,
        seal: Option<&[u8; 32]>,
        check: impl FnOnce(&Received) -> R<()>,
    ) -> R<(PartInfo, Received)> {
        if !(1..=MAX_PARTS).contains(&n) {
            return Err(StoreError::new(
                "InvalidArgument",
                format!("Part number must be an integer between 1 and {MAX_PARTS}, inclusive"),
            ));
        }
        self.upload(bucket, key, id).await?;
        let (s, p) = self.uploads_at(bucket, id)?;
        let sink = match self.upload_dir(bucket, id) {
            Some(dir) => Sink::file(&dir, dir.join(format!("{n}.part")))?,
            None => Sink::remote(&s, &obj(&format!("{p}/{n}.part"))?).await?,
        }
        // A part of an upload sealed at rest is sealed as stream `n` of the upload's key.
        .sealed(seal, n.unsigned_abs());
        let got = receive(body, sink, digests, check).await?;
        let info = PartInfo {
            number: n,
            etag: quoted(&hex::encode(got.md5)),
            size: got.size,
            modified_ms: now_ms(),
        };
        s.put(
            &obj(&format!("{p}/{n}.json"))?,
            PutPayload::from(serde_json::to_vec(&info).map_err(StoreError::internal)?),
        )
        .await
        .map_err(StoreError::internal)?;
        // Aborted meanwhile: nothing of it may stay.
        if self.upload(bucket, key, id).await.is_err() {
            self.remove_upload(bucket, id).await;
            return Err(no_upload());
        }
        Ok((info, got))
    }

    /// The parts of upload `id` stored so far, in order.
    pub async fn parts(&self, bucket: &str, key: &str, id: &str) -> R<Vec<PartInfo>> {
        self.upload(bucket, key, id).await?;
        let (s, p) = self.uploads_at(bucket, id)?;
        let metas: Vec<ObjPath> = s
            .list(Some(&obj(&p)?))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(StoreError::internal)?;
        let mut out = Vec::new();
        for m in metas {
            let name = m.filename().unwrap_or_default();
            if !name.ends_with(".json") || name == "upload.json" {
                continue;
            }
            let Ok(g) = s.get(&m).await else { continue };
            let Ok(b) = g.bytes().await else { continue };
            if let Ok(i) = serde_json::from_slice::<PartInfo>(&b) {
                out.push(i);
            }
        }
        out.sort_by_key(|i| i.number);
        Ok(out)
    }

    /// Removes upload `id` and its parts.
    pub async fn remove_upload(&self, bucket: &str, id: &str) {
        if let Some(dir) = self.upload_dir(bucket, id) {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        if let Ok((s, p)) = self.uploads_at(bucket, id)
            && let Ok(prefix) = obj(&p)
        {
            let all: Vec<ObjPath> = s
                .list(Some(&prefix))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .unwrap_or_default();
            for x in all {
                let _ = s.delete(&x).await;
            }
        }
    }

    /// Aborts upload `id`: its parts are removed.
    pub async fn abort_upload(&self, bucket: &str, key: &str, id: &str) -> R<()> {
        self.upload(bucket, key, id).await?;
        self.remove_upload(bucket, id).await;
        Ok(())
    }

    /// Completes upload `id` from the parts `chosen` (number, ETag), in ascending order.
    pub async fn complete(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        chosen: &[(i32, String)],
        seal: Option<&[u8; 32]>,
    ) -> R<Written> {
        let up = self.upload(bucket, key, id).await?;
        let stored = self.parts(bucket, key, id).await?;
        if chosen.is_empty() {
            return Err(StoreError::new(
                "MalformedXML",
                "You must specify at least one part",
            ));
        }
        let mut parts = Vec::new();
        let mut last = 0;
        for (i, (n, etag)) in chosen.iter().enumerate() {
            if *n <= last {
                return Err(StoreError::new(
                    "InvalidPartOrder",
                    "The list of parts was not in ascending order",
                ));
            }
            last = *n;
            let p = stored
                .iter()
                .find(|p| p.number == *n && p.etag.trim_matches('"') == etag.trim_matches('"'))
                .ok_or_else(|| {
                    StoreError::new(
                        "InvalidPart",
                        format!("Part {n} was not uploaded, or its ETag is not {etag}"),
                    )
                })?;
            if i + 1 < chosen.len() && p.size < MIN_PART {
                return Err(StoreError::new(
                    "EntityTooSmall",
                    format!("Part {n} is smaller than the minimum of 5 MiB"),
                ));
            }
            parts.push(p.clone());
        }
        let mut md5s = Vec::with_capacity(parts.len() * 16);
        for p in &parts {
            md5s.extend(hex::decode(p.etag.trim_matches('"')).map_err(StoreError::internal)?);
        }
        let etag = {
            use s3s::crypto::Checksum as _;
            format!(
                "\"{}-{}\"",
                hex::encode(s3s::crypto::Md5::checksum(&md5s)),
                parts.len()
            )
        };
        let size: u64 = parts.iter().map(|p| p.size).sum();
        let mut sink = self.sink_for(bucket, key).await?.sealed(seal, 0);
        let r = self.assemble(bucket, id, &parts, seal, &mut sink).await;
        if let Err(e) = r {
            sink.abort().await;
            return Err(e);
        }
        sink.commit().await?;
        let mut meta = up.meta;
        meta.etag = etag;
        if let Some(e) = &mut meta.sse {
            e.size = size;
        }
        let got = Received {
            md5: [0; 16],
            size,
            checksums: s3s::dto::Checksum::default(),
        };
        let w = self.finish(bucket, key, meta, got).await?.0;
        self.remove_upload(bucket, id).await;
        Ok(w)
    }

    /// Writes the parts into `sink`, opened first when the upload is sealed (`seal`).
    async fn assemble(
        &self,
        bucket: &str,
        id: &str,
        parts: &[PartInfo],
        seal: Option<&[u8; 32]>,
        sink: &mut Sink,
    ) -> R<()> {
        let mut d = Digests::default();
        let (s, p) = self.uploads_at(bucket, id)?;
        for part in parts {
            let stored_len = match seal {
                Some(_) => objectmeta::seal::sealed_len(part.size),
                None => part.size,
            };
            let stored: futures::stream::BoxStream<'static, std::io::Result<Bytes>> =
                match self.upload_dir(bucket, id) {
                    Some(dir) => {
                        let path = dir.join(format!("{}.part", part.number));
                        let f = std::fs::File::open(&path).map_err(StoreError::internal)?;
                        file_stream(f)
                    }
                    None => s
                        .get(&obj(&format!("{p}/{}.part", part.number))?)
                        .await
                        .map_err(StoreError::internal)?
                        .into_stream()
                        .map_err(std::io::Error::other)
                        .boxed(),
                };
            let mut st = match seal {
                Some(k) => opened(
                    stored,
                    Opener::new(k, part.number.unsigned_abs()),
                    part.size,
                    0,
                    0..part.size,
                ),
                None => stored,
            };
            let mut got = 0u64;
            while let Some(b) = st.next().await {
                let b = b.map_err(StoreError::internal)?;
                got += b.len() as u64;
                sink.write(b.to_vec(), &mut d).await?;
            }
            if got != part.size {
                return Err(StoreError::internal(format!(
                    "part {} holds {got} bytes of {} ({stored_len} stored)",
                    part.number, part.size
                )));
            }
        }
        Ok(())
    }
}

/// A local file read to its end in blocks of 1 MiB.
fn file_stream(f: std::fs::File) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    futures::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let r = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 1 << 20];
            let r = read_full(&mut f, &mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (f, r)
        })
        .await;
        match r {
            Ok((_, Ok(buf))) if buf.is_empty() => None,
            Ok((f, Ok(buf))) => Some((Ok(Bytes::from(buf)), Some(f))),
            Ok((_, Err(e))) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    })
    .boxed()
}

/// The plaintext `range` of a sealed object of `plain` bytes, from its stored bytes read
/// from the start of block `first` ([`objectmeta::seal::slot`]); a block that does not open
/// ends the stream with an error (the client sees a short body, never altered bytes).
fn opened(
    stored: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
    opener: Opener,
    plain: u64,
    first: u64,
    range: std::ops::Range<u64>,
) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    let block = objectmeta::seal::BLOCK as u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut index = first;
    let mut failed = false;
    stored
        .map(move |chunk| -> Vec<std::io::Result<Bytes>> {
            if failed {
                return Vec::new();
            }
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failed = true;
                    return vec![Err(e)];
                }
            };
            buf.extend_from_slice(&chunk);
            let mut out = Vec::new();
            loop {
                let (_, len) = objectmeta::seal::slot(plain, index);
                if buf.len() < len || index * block >= range.end {
                    break;
                }
                let sealed: Vec<u8> = buf.drain(..len).collect();
                let Some(p) = opener.open(plain, index, &sealed) else {
                    failed = true;
                    out.push(Err(std::io::Error::other(format!(
                        "block {index} of the object does not open: it was altered at rest"
                    ))));
                    break;
                };
                let start = index * block;
                let lo = usize::try_from(range.start.saturating_sub(start)).unwrap_or(0);
                let hi =
                    usize::try_from((range.end - start).min(p.len() as u64)).unwrap_or(p.len());
                if lo < hi {
                    out.push(Ok(Bytes::copy_from_slice(&p[lo..hi])));
                }
                index += 1;
            }
            out
        })
        .flat_map(futures::stream::iter)
        .boxed()
}

/// Removes the folders of `key` below `dir` that are left empty, deepest first.
fn unfold(dir: &Path, key: &str) {
    let mut parts: Vec<&str> = key.split('/').collect();
    parts.pop();
    while !parts.is_empty() {
        let at = parts.iter().fold(dir.to_path_buf(), |p, s| p.join(s));
        if std::fs::remove_dir(&at).is_err() {
            break;
        }
        parts.pop();
    }
}

/// Removes every empty folder below `dir` (not `dir` itself), deepest first; never follows
/// a symbolic link.
fn prune(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            prune(&e.path());
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The files of the bucket folder `dir` whose keys start with `prefix` (symbolic links and
/// the service's own names skipped).
fn walk(dir: &Path, prefix: &str) -> R<Vec<(String, Stat)>> {
    let mut out = Vec::new();
    // Start at the prefix's folder.
    let base = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut todo = vec![(
        if base.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(base)
        },
        if base.is_empty() {
            String::new()
        } else {
            format!("{base}/")
        },
    )];
    if base
        .split('/')
        .any(|p| p == ".." || p == "." || p.starts_with(RESERVED))
    {
        return Ok(out);
    }
    while let Some((d, at)) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(RESERVED) {
                continue;
            }
            let key = format!("{at}{name}");
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                if prefix.starts_with(&key) || key.starts_with(prefix) {
                    todo.push((e.path(), format!("{key}/")));
                }
            } else if m.is_file() && key.starts_with(prefix) {
                if out.len() >= MAX_WALK {
                    return Err(StoreError::internal(
                        "more than 1,000,000 keys under the prefix",
                    ));
                }
                out.push((key, Stat::local(&m)));
            }
        }
    }
    Ok(out)
}

/// The bucket names in a ListAllMyBucketsResult.
fn bucket_names(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Name>") {
        let tail = &rest[i + 6..];
        let Some(j) = tail.find("</Name>") else { break };
        out.push(tail[..j].to_string());
        rest = &tail[j..];
    }
    out
}

/// A stream that is `Sync` (which s3s's bodies must be) because only its owner ever
/// touches it.
pub struct SyncStream<T>(std::sync::Mutex<futures::stream::BoxStream<'static, T>>);

impl<T> SyncStream<T> {
    /// Wraps `s`.
    pub fn new(s: futures::stream::BoxStream<'static, T>) -> Self {
        SyncStream(std::sync::Mutex::new(s))
    }
}

impl<T> Stream for SyncStream<T> {
    type Item = T;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        match self.get_mut().0.get_mut() {
            Ok(s) => s.poll_next_unpin(cx),
            Err(_) => std::task::Poll::Ready(None),
        }
    }
}
