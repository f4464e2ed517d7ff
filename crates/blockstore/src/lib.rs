//! vmie's snapshot store.
//!
//! A snapshot is a manifest of fixed-size chunks (1 MiB by default). Chunks that read as zeros
//! are not stored. Every other chunk is named by a keyed hash of its content (keyed BLAKE3, or
//! HMAC-SHA256 in snapshots written before it — see [`naming`] — under a dedup key that belongs
//! to one KMS key, so equal data deduplicates only within one encryption key and names reveal
//! nothing without the key), compressed with zstd when that pays, and sealed with AES-256-GCM
//! under the data key of the snapshot that first wrote it, with that snapshot's id, the chunk
//! index and the name bound in as associated data.
//!
//! Object layout under the store's prefix:
//!
//! ```text
//! pending/<snap-id>                 a write in progress (GC keeps its chunks)
//! keys/<snap-id>.key                the snapshot's data key, wrapped by KMS
//! dedup/<kms-key-id>.key            the dedup key of a KMS key, wrapped by KMS
//! chunks/<kms-key-id>/<hh>/<name>   chunk objects (see [`chunk`])
//! manifests/<snap-id>.json          committed snapshots (see [`manifest`])
//! ```
//!
//! Commit is atomic: chunks and the wrapped key are written first, the manifest last; a
//! snapshot is visible exactly when its manifest exists. [`BlockStore::gc`] counts references
//! from every committed manifest and removes chunks and keys nobody references, including
//! those a crashed writer left behind.

pub mod backend;
pub mod chunk;
pub mod error;
pub mod manifest;
pub mod naming;
pub mod reader;
pub mod sealed;
pub mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use zeroize::Zeroizing;

use diskfmt::{Disk, ExtentKind};
use kms::{Caller, Context, Kms};

pub use backend::{Backend, S3Config};
pub use chunk::Origin;
pub use error::{Result, StoreError};
pub use reader::{BlockingReader, SnapshotReader};
pub use writer::{Buffers, SnapshotWriter};

/// Default chunk size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// Tunables of a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Chunk size in bytes: a power of two from 64 KiB to 16 MiB.
    pub chunk_size: u32,
    /// zstd level for chunks.
    pub zstd_level: i32,
    /// Chunks in flight while writing or verifying.
    pub concurrency: usize,
    /// Decrypted chunks a reader keeps.
    pub cache_chunks: usize,
    /// Threads that read a disk [`BlockStore::put`] stores (default: one per core).
    pub threads: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_level: 1,
            concurrency: 8,
            cache_chunks: 16,
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        }
    }
}

/// What to store.
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// Id of the new snapshot (`snap-` and 8 to 32 lowercase hex digits).
    pub snapshot_id: String,
    /// KMS key (id, ARN or alias); the default snapshot key `alias/aws/ebs` when `None`.
    pub kms_key: Option<String>,
    /// A previous snapshot of the same volume: unchanged chunks are taken from it without
    /// looking them up.
    pub parent: Option<String>,
    /// Who is storing (checked against the key's policy).
    pub caller: Caller,
}

/// A committed snapshot, as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotSummary {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Volume size in bytes.
    pub volume_size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// KMS key id.
    pub kms_key_id: String,
    /// Parent snapshot.
    pub parent: Option<String>,
    /// Commit time (seconds since the Unix epoch).
    pub created: u64,
    /// Non-zero bytes in the volume.
    pub data_bytes: u64,
    /// Bytes of chunk objects this snapshot added.
    pub added_bytes: u64,
    /// Non-zero chunks.
    pub chunks: u64,
}

impl From<&manifest::ManifestBody> for SnapshotSummary {
    fn from(b: &manifest::ManifestBody) -> Self {
        SnapshotSummary {
            snapshot_id: b.snapshot_id.clone(),
            volume_size: b.volume_size,
            chunk_size: b.chunk_size,
            kms_key_id: b.kms_key_id.clone(),
            parent: b.parent.clone(),
            created: b.created,
            data_bytes: b.data_bytes,
            added_bytes: b.added_bytes,
            chunks: b.chunks.len() as u64,
        }
    }
}

/// Result of [`BlockStore::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Chunks read and authenticated.
    pub chunks_checked: u64,
    /// Chunks that failed, with the reason.
    pub failures: Vec<(u64, String)>,
}

/// Result of [`BlockStore::gc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Committed snapshots seen.
    pub snapshots: u64,
    /// Distinct chunks they reference.
    pub referenced_chunks: u64,
    /// Chunk objects deleted.
    pub chunks_deleted: u64,
    /// Bytes those objects held.
    pub bytes_freed: u64,
    /// Wrapped data keys deleted.
    pub keys_deleted: u64,
    /// Markers of abandoned writes removed.
    pub stale_writes: u64,
    /// Writes in progress; their chunks were left alone.
    pub writes_in_progress: u64,
}

/// The snapshot store.
#[derive(Debug, Clone)]
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    kms: Kms,
    opts: StoreOptions,
}

/// A fresh snapshot id, `snap-` and 17 hex digits, as EC2 makes them.
#[must_use]
pub fn new_snapshot_id() -> String {
    let mut b = [0u8; 9];
    kms::aead::random(&mut b);
    format!("snap-{}", &hex::encode(b)[..17])
}

/// Checks a snapshot id before it becomes part of an object path.
pub fn validate_id(id: &str) -> Result<()> {
    let hexpart = id.strip_prefix("snap-").unwrap_or("");
    if (8..=32).contains(&hexpart.len())
        && hexpart
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid snapshot id {:?}: expected snap- and 8 to 32 lowercase hex digits",
            id.chars().take(80).collect::<String>()
        )))
    }
}

fn snapshot_context(id: &str) -> Context {
    [("vmie:snapshot".to_string(), id.to_string())]
        .into_iter()
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `buf` is all zeros (64-byte blocks folded with OR, which vectorises).
fn is_zero(buf: &[u8]) -> bool {
    let blocks = buf.chunks_exact(64);
    let rem = blocks.remainder();
    blocks
        .into_iter()
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && rem.iter().all(|&b| b == 0)
}

impl BlockStore {
    /// A store under `prefix` in `store`, using `kms` for keys.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        kms: Kms,
        opts: StoreOptions,
    ) -> Result<Self> {
        if !opts.chunk_size.is_power_of_two() || !(1 << 16..=1 << 24).contains(&opts.chunk_size) {
            return Err(StoreError::Invalid(format!(
                "chunk size {} is not a power of two from 64 KiB to 16 MiB",
                opts.chunk_size
            )));
        }
        Ok(BlockStore {
            store,
            prefix: Path::from(prefix),
            kms,
            opts,
        })
    }

    /// The key service.
    #[must_use]
    pub fn kms(&self) -> &Kms {
        &self.kms
    }

    /// The object store.
    #[must_use]
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn path(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }

    fn manifest_path(&self, id: &str) -> Path {
        self.path(&["manifests", &format!("{id}.json")])
    }

    fn key_path(&self, id: &str) -> Path {
        self.path(&["keys", &format!("{id}.key")])
    }

    fn chunk_path(&self, kms_key: &str, name: &str) -> Path {
        self.path(&["chunks", kms_key, &name[..2.min(name.len())], name])
    }

    /// The data key of snapshot `id` (as the origin of chunks), unwrapped by KMS.
    async fn data_key(&self, caller: &Caller, id: &str) -> Result<Zeroizing<[u8; 32]>> {
        let blob = match self.store.get(&self.key_path(id)).await {
            Ok(g) => g.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::Integrity {
                    snapshot: id.into(),
                    what: "data key".into(),
                    detail: "the wrapped data key object is missing".into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.kms
            .decrypt_data_key(caller, &blob, &snapshot_context(id))
            .await
            .map_err(|source| match source {
                kms::KmsError::InvalidCiphertext(d) => StoreError::Integrity {
                    snapshot: id.into(),
                    what: "data key".into(),
                    detail: d,
                },
                source => StoreError::Key {
                    snapshot: id.into(),
                    source,
                },
            })
    }

    /// The dedup key of a KMS key, created on first use (one per KMS key; several
    /// processes racing agree on the first one written).
    async fn dedup_key(&self, caller: &Caller, kms_key_id: &str) -> Result<Zeroizing<[u8; 32]>> {
        let path = self.path(&["dedup", &format!("{kms_key_id}.key")]);
        let ctx: Context = [("vmie:dedup-key".to_string(), kms_key_id.to_string())]
            .into_iter()
            .collect();
        let key_err = |source| StoreError::Key {
            snapshot: "-".into(),
            source,
        };
        for _ in 0..2 {
            match self.store.get(&path).await {
                Ok(g) => {
                    let blob = g.bytes().await?;
                    return self
                        .kms
                        .decrypt_data_key(caller, &blob, &ctx)
                        .await
                        .map_err(key_err);
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let dk = self
                .kms
                .generate_data_key(caller, kms_key_id, &ctx)
                .await
                .map_err(key_err)?;
            match self
                .store
                .put_opts(
                    &path,
                    PutPayload::from(dk.ciphertext),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => return Ok(dk.plaintext),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Internal(
            "dedup key could not be created".into(),
        ))
    }

    /// Loads and authenticates a committed manifest; returns it with its data key.
    async fn load_manifest(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(manifest::ManifestBody, Zeroizing<[u8; 32]>)> {
        validate_id(id)?;
        let bytes = match self.store.get(&self.manifest_path(id)).await {
            Ok(g) => g.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(id.into()));
            }
            Err(e) => return Err(e.into()),
        };
        let integrity = |detail: String| StoreError::Integrity {
            snapshot: id.into(),
            what: "manifest".into(),
            detail,
        };
        let file = manifest::parse(&bytes).map_err(integrity)?;
        if file.body.snapshot_id != id {
            return Err(integrity(format!(
                "it belongs to snapshot {}",
                file.body.snapshot_id.chars().take(40).collect::<String>()
            )));
        }
        let key = self.data_key(caller, id).await?;
        manifest::verify(&file, &key).map_err(integrity)?;
        let b = &file.body;
        if !manifest::READABLE.contains(&b.format)
            || !b.chunk_size.is_power_of_two()
            || b.chunk_size < 1 << 16
            || b.chunk_size > 1 << 24
        {
            return Err(integrity("unsupported format or chunk size".into()));
        }
        Ok((file.body, key))
    }

    /// Stores `disk` as a new snapshot: [`BlockStore::begin`], then `threads` threads of the
    /// blocking pool read the chunks that hold data (zero ranges of the extent map are
    /// skipped without reading) and hand them to the [`SnapshotWriter`], which publishes the
    /// manifest once every chunk is durable. `progress` (if given) counts bytes of the chunks
    /// that hold data as they complete (their total is about [`diskfmt::allocated_bytes`]).
    /// Dropping the future stops the readers at their next chunk and abandons the snapshot.
    pub async fn put(
        &self,
        disk: Arc<dyn Disk>,
        req: PutRequest,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<SnapshotSummary> {
        let size = disk.virtual_size();
        let w = Arc::new(self.begin(req, size, progress).await?);
        let mut guard = StopOnDrop(Some(w.clone()));
        let plan = Arc::new(std::sync::Mutex::new(ChunkPlan::new(size, w.chunk_size())));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..self.opts.threads.max(1) {
            let (w, disk, plan) = (w.clone(), disk.clone(), plan.clone());
            set.spawn_blocking(move || -> Result<()> {
                loop {
                    let next = plan
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next(disk.as_ref())?;
                    let Some(index) = next else {
                        return Ok(());
                    };
                    let len = w.chunk_len(index).ok_or_else(|| {
                        StoreError::Internal(format!("chunk {index} is past the end"))
                    })?;
                    let mut buf = w.buffers().take(len);
                    disk.read_at(&mut buf, index * w.chunk_size())?;
                    w.write_chunk(index, buf)?;
                }
            });
        }
        let mut first = None;
        while let Some(r) = set.join_next().await {
            let r = r
                .map_err(|e| StoreError::Internal(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = r {
                w.stop();
                first.get_or_insert(e);
            }
        }
        // Every reader has ended: the writer is ours again, nothing to stop.
        guard.0 = None;
        drop(guard);
        let w = Arc::try_unwrap(w)
            .map_err(|_| StoreError::Internal("a chunk reader outlived the write".into()))?;
        match first {
            Some(e) => {
                w.abort().await;
                Err(e)
            }
            None => w.publish().await,
        }
    }

    /// The origin recorded in an existing chunk object's header, if the object exists.
    async fn existing_origin(&self, path: &Path) -> Result<Option<Origin>> {
        match self
            .store
            .get_range(path, 0..chunk::MAX_HEADER as u64)
            .await
        {
            Ok(b) => match chunk::header(&b) {
                Ok((o, _, _)) => Ok(Some(o)),
                // A damaged object is never reused nor silently replaced: report it.
                Err(d) => Err(StoreError::Integrity {
                    snapshot: "-".into(),
                    what: format!("chunk object {path}"),
                    detail: d,
                }),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a committed snapshot for random-access reads.
    pub async fn open(&self, caller: &Caller, id: &str) -> Result<SnapshotReader> {
        let (body, key) = self.load_manifest(caller, id).await?;
        Ok(SnapshotReader::new(self.clone(), caller.clone(), body, key))
    }

    /// Committed snapshots (manifests are parsed, not authenticated: listing needs no key).
    pub async fn list(&self) -> Result<Vec<SnapshotSummary>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.path(&["manifests"])))
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let bytes = self.store.get(&m.location).await?.bytes().await?;
            match manifest::parse(&bytes) {
                Ok(f) => out.push(SnapshotSummary::from(&f.body)),
                Err(d) => {
                    return Err(StoreError::Integrity {
                        snapshot: m.location.to_string(),
                        what: "manifest".into(),
                        detail: d,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            a.created
                .cmp(&b.created)
                .then(a.snapshot_id.cmp(&b.snapshot_id))
        });
        Ok(out)
    }

    /// Re-reads and authenticates every chunk of a snapshot, and checks each one's name
    /// against the keyed hash of its content.
    pub async fn verify(&self, caller: &Caller, id: &str) -> Result<VerifyReport> {
        let reader = Arc::new(self.open(caller, id).await?);
        let dedup = self
            .dedup_key(caller, &reader.manifest().kms_key_id)
            .await?;
        let namer = Arc::new(
            naming::Namer::new(reader.manifest().format, &dedup).ok_or_else(|| {
                StoreError::Internal(format!(
                    "manifest format {} has no chunk names",
                    reader.manifest().format
                ))
            })?,
        );
        let n = reader.manifest().chunks.len();
        let mut checks = futures::stream::iter(0..n)
            .map(|i| {
                let reader = reader.clone();
                let namer = namer.clone();
                async move {
                    let e = reader.manifest().chunks[i].clone();
                    match reader.fetch_entry(&e).await {
                        Ok(plain) => {
                            if namer.name(&plain) == e.1 {
                                Ok((e.0, None))
                            } else {
                                Ok((
                                    e.0,
                                    Some(
                                        "content does not match its name (keyed hash)".to_string(),
                                    ),
                                ))
                            }
                        }
                        Err(StoreError::Integrity { detail, .. }) => Ok((e.0, Some(detail))),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(self.opts.concurrency.max(1));
        let mut report = VerifyReport::default();
        while let Some(r) = checks.next().await {
            let (idx, bad) = r?;
            report.chunks_checked += 1;
            if let Some(why) = bad {
                report.failures.push((idx, why));
            }
        }
        report.failures.sort();
        Ok(report)
    }

    /// Deletes a snapshot's manifest: it disappears at once; its chunks and key go at the
    /// next [`BlockStore::gc`] unless other snapshots still reference them.
    pub async fn delete(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        match self.store.head(&self.manifest_path(id)).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(id.into()));
            }
            Err(e) => return Err(e.into()),
        }
        self.store.delete(&self.manifest_path(id)).await?;
        Ok(())
    }

    /// Every committed snapshot's id with the time its manifest was written, unordered.
    pub async fn manifests(&self) -> Result<Vec<(String, SystemTime)>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.path(&["manifests"])))
            .try_collect()
            .await?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let id = m.location.filename()?.strip_suffix(".json")?.to_string();
                Some((id, m.last_modified.into()))
            })
            .collect())
    }

    /// Garbage collection: counts references to chunks and data keys from every committed
    /// manifest and deletes what nobody references and is older than `grace`. Writes in
    /// progress (a pending marker younger than `grace`) keep everything: collection is then
    /// limited to nothing and reported as such. Markers older than `grace` are writes whose
    /// process died; they are removed with their chunks.
    pub async fn gc(&self, grace: Duration) -> Result<GcReport> {
        let now = SystemTime::now();
        let mut report = GcReport::default();

        let pending: Vec<_> = self
            .store
            .list(Some(&self.path(&["pending"])))
            .try_collect()
            .await?;
        let mut stale = Vec::new();
        let mut in_progress = HashSet::new();
        for m in pending {
            let id = m.location.filename().unwrap_or_default().to_string();
            if older_than(m.last_modified, now, grace) {
                stale.push(m.location);
            } else {
                in_progress.insert(id);
            }
        }
        report.writes_in_progress = in_progress.len() as u64;
        if !in_progress.is_empty() {
            return Ok(report);
        }

        let mut live_chunks: HashSet<String> = HashSet::new();
        let mut live_keys: HashSet<String> = HashSet::new();
        let metas: Vec<_> = self
            .store
            .list(Some(&self.path(&["manifests"])))
            .try_collect()
            .await?;
        for m in metas {
            let bytes = self.store.get(&m.location).await?.bytes().await?;
            let f = manifest::parse(&bytes).map_err(|d| StoreError::Integrity {
                snapshot: m.location.to_string(),
                what: "manifest".into(),
                detail: format!(
                    "{d}; garbage collection stopped so that nothing referenced is deleted"
                ),
            })?;
            report.snapshots += 1;
            live_keys.insert(f.body.snapshot_id.clone());
            live_keys.extend(f.body.origins.iter().cloned());
            for e in &f.body.chunks {
                live_chunks.insert(self.chunk_path(&f.body.kms_key_id, &e.1).to_string());
            }
        }
        report.referenced_chunks = live_chunks.len() as u64;

        let chunks: Vec<_> = self
            .store
            .list(Some(&self.path(&["chunks"])))
            .try_collect()
            .await?;
        for m in chunks {
            if !live_chunks.contains(m.location.as_ref()) && older_than(m.last_modified, now, grace)
            {
                self.store.delete(&m.location).await?;
                report.chunks_deleted += 1;
                report.bytes_freed += m.size;
            }
        }
        let keys: Vec<_> = self
            .store
            .list(Some(&self.path(&["keys"])))
            .try_collect()
            .await?;
        for m in keys {
            let id = m
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".key"))
                .unwrap_or_default()
                .to_string();
            if !live_keys.contains(&id) && older_than(m.last_modified, now, grace) {
                self.store.delete(&m.location).await?;
                report.keys_deleted += 1;
            }
        }
        for p in stale {
            self.store.delete(&p).await?;
            report.stale_writes += 1;
        }
        Ok(report)
    }

    /// Bytes of every object in the store (chunks, manifests, keys): what the data costs.
    pub async fn stored_bytes(&self) -> Result<u64> {
        let metas: Vec<_> = self.store.list(Some(&self.prefix)).try_collect().await?;
        Ok(metas.iter().map(|m| m.size).sum())
    }
}

fn older_than(t: impl Into<SystemTime>, now: SystemTime, grace: Duration) -> bool {
    now.duration_since(t.into()).is_ok_and(|age| age >= grace)
}

/// Stops a writer when the future holding it is dropped (readers on the blocking pool see it
/// at their next chunk).
struct StopOnDrop(Option<Arc<SnapshotWriter>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.stop();
        }
    }
}

/// The chunks of a disk that overlap data extents, in order, found one 1 GiB window at a time
/// (bounded memory for huge sparse disks).
#[derive(Debug)]
pub struct ChunkPlan {
    size: u64,
    chunk: u64,
    next_window: u64,
    pending: std::collections::VecDeque<u64>,
}

impl ChunkPlan {
    const WINDOW: u64 = 1 << 30;

    /// A plan over a disk of `size` bytes in chunks of `chunk` bytes.
    #[must_use]
    pub fn new(size: u64, chunk: u64) -> Self {
        ChunkPlan {
            size,
            chunk: chunk.max(1),
            next_window: 0,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The next chunk index that holds data, or `None` at the end.
    pub fn next(&mut self, disk: &dyn Disk) -> diskfmt::Result<Option<u64>> {
        loop {
            if let Some(i) = self.pending.pop_front() {
                return Ok(Some(i));
            }
            if self.next_window >= self.size {
                return Ok(None);
            }
            let start = self.next_window;
            self.next_window = start.saturating_add(Self::WINDOW);
            for e in disk.extents(start, Self::WINDOW)? {
                if e.kind != ExtentKind::Data || e.length == 0 {
                    continue;
                }
                let first = e.offset / self.chunk;
                let last = (e.offset + e.length - 1) / self.chunk;
                for i in first..=last {
                    if self.pending.back() != Some(&i) {
                        self.pending.push_back(i);
                    }
                }
            }
        }
    }
}
