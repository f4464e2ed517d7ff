//! vmie's snapshot store.
//!
//! A snapshot is a manifest of fixed-size chunks (1 MiB by default). Chunks that read as zeros
//! are not stored. Every other chunk is named by a keyed hash of its content (HMAC-SHA256 under
//! a dedup key that belongs to one KMS key, so equal data deduplicates only within one
//! encryption key and names reveal nothing without the key), compressed with zstd when that
//! pays, and sealed with AES-256-GCM under the data key of the snapshot that first wrote it,
//! with that snapshot's id, the chunk index and the name bound in as associated data.
//!
//! Object layout under the store's prefix:
//!
//! ```text
//! pending/<snap-id>                 a write in progress (GC keeps its chunks)
//! keys/<snap-id>.key                the snapshot's data key, wrapped by KMS
//! dedup/<kms-key-id>.key            the dedup HMAC key of a KMS key, wrapped by KMS
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
pub mod reader;
pub mod sealed;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use zeroize::Zeroizing;

use diskfmt::{Disk, ExtentKind};
use kms::aead::AeadKey;
use kms::{Caller, Context, Kms};

pub use backend::{Backend, S3Config};
pub use chunk::Origin;
pub use error::{Result, StoreError};
pub use reader::{BlockingReader, SnapshotReader};

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_level: 1,
            concurrency: 8,
            cache_chunks: 16,
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

struct Stored {
    index: u64,
    name: String,
    origin: Origin,
    added: u64,
    data: u64,
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

    /// The dedup HMAC key of a KMS key, created on first use (one per KMS key; several
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
        if b.format != manifest::FORMAT
            || !b.chunk_size.is_power_of_two()
            || b.chunk_size < 1 << 16
            || b.chunk_size > 1 << 24
        {
            return Err(integrity("unsupported format or chunk size".into()));
        }
        Ok((file.body, key))
    }

    /// Stores `disk` as a new snapshot. Zero ranges are skipped without reading, chunks are
    /// processed `concurrency` at a time on the blocking pool, and the manifest is written only
    /// after every chunk is durable. `progress` (if given) counts bytes of the chunks that
    /// hold data as they complete (their total is about [`diskfmt::allocated_bytes`]).
    pub async fn put(
        &self,
        disk: Arc<dyn Disk>,
        req: PutRequest,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<SnapshotSummary> {
        let id = req.snapshot_id.clone();
        validate_id(&id)?;
        match self.store.head(&self.manifest_path(&id)).await {
            Ok(_) => return Err(StoreError::AlreadyExists(id)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let key_ref = match &req.kms_key {
            Some(k) => k.clone(),
            None => {
                self.kms
                    .default_ebs_key()
                    .await
                    .map_err(|source| StoreError::Key {
                        snapshot: id.clone(),
                        source,
                    })?
                    .key_id
            }
        };
        let dk = self
            .kms
            .generate_data_key(&req.caller, &key_ref, &snapshot_context(&id))
            .await
            .map_err(|source| StoreError::Key {
                snapshot: id.clone(),
                source,
            })?;
        let kms_key_id = dk.key_id.clone();

        let pending = self.path(&["pending", &id]);
        self.store
            .put(&pending, PutPayload::from(now_secs().to_string()))
            .await?;
        match self
            .store
            .put_opts(
                &self.key_path(&id),
                PutPayload::from(dk.ciphertext.clone()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(StoreError::AlreadyExists(id));
            }
            Err(e) => return Err(e.into()),
        }
        let dedup = Arc::new(self.dedup_key(&req.caller, &kms_key_id).await?);

        let cs = u64::from(self.opts.chunk_size);
        let mut parent_map: HashMap<u64, (String, Origin)> = HashMap::new();
        if let Some(parent) = &req.parent {
            let (pb, _) = self.load_manifest(&req.caller, parent).await?;
            if pb.kms_key_id == kms_key_id && u64::from(pb.chunk_size) == cs {
                for e in &pb.chunks {
                    if let Some(o) = pb.origin(e) {
                        parent_map.insert(e.0, (e.1.clone(), o));
                    }
                }
            }
        }
        let parent_map = Arc::new(parent_map);
        let aead = Arc::new(AeadKey::new(&dk.plaintext));
        let size = disk.virtual_size();

        // Chunk indices that hold data, window by window (bounded memory for huge sparse disks).
        let disk_for_idx = disk.clone();
        let indices = futures::stream::iter(window_starts(size))
            .then(move |w| {
                let disk = disk_for_idx.clone();
                async move {
                    tokio::task::spawn_blocking(move || data_chunks(disk.as_ref(), w, cs))
                        .await
                        .map_err(|e| StoreError::Internal(e.to_string()))?
                }
            })
            .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok::<u64, StoreError>)))
            .try_flatten();

        let this = self.clone();
        let kms_key_for_chunks = kms_key_id.clone();
        let id_for_chunks = id.clone();
        let level = self.opts.zstd_level;
        let results = indices
            .map_ok(move |index| {
                let this = this.clone();
                let disk = disk.clone();
                let dedup = dedup.clone();
                let aead = aead.clone();
                let parent_map = parent_map.clone();
                let kms_key = kms_key_for_chunks.clone();
                let id = id_for_chunks.clone();
                async move {
                    this.store_chunk(
                        disk,
                        index,
                        cs,
                        size,
                        &dedup,
                        &aead,
                        &parent_map,
                        &kms_key,
                        &id,
                        level,
                    )
                    .await
                    .map(|stored| (cs.min(size - index * cs), stored))
                }
            })
            .try_buffer_unordered(self.opts.concurrency.max(1));
        let mut results = std::pin::pin!(results);

        let mut stored: Vec<Stored> = Vec::new();
        let mut last_refresh = std::time::Instant::now();
        let mut done_bytes = 0u64;
        while let Some(item) = results.next().await {
            let (len, s) = item?;
            done_bytes += len;
            if let Some(s) = s {
                stored.push(s);
            }
            if let Some(p) = &progress {
                p.store(done_bytes, Ordering::Relaxed);
            }
            if last_refresh.elapsed() > Duration::from_secs(60) {
                self.store
                    .put(&pending, PutPayload::from(now_secs().to_string()))
                    .await?;
                last_refresh = std::time::Instant::now();
            }
        }
        stored.sort_by_key(|s| s.index);

        let mut origins: Vec<String> = Vec::new();
        let mut origin_no: HashMap<String, u32> = HashMap::new();
        let mut chunks = Vec::with_capacity(stored.len());
        let (mut data_bytes, mut added_bytes) = (0u64, 0u64);
        for s in stored {
            let n = match origin_no.get(&s.origin.snapshot) {
                Some(n) => *n,
                None => {
                    let n = u32::try_from(origins.len())
                        .map_err(|_| StoreError::Internal("too many origins".into()))?;
                    origins.push(s.origin.snapshot.clone());
                    origin_no.insert(s.origin.snapshot.clone(), n);
                    n
                }
            };
            data_bytes += s.data;
            added_bytes += s.added;
            chunks.push(manifest::Entry(s.index, s.name, n, s.origin.index));
        }
        let body = manifest::ManifestBody {
            format: manifest::FORMAT,
            snapshot_id: id.clone(),
            volume_size: size,
            chunk_size: self.opts.chunk_size,
            kms_key_id,
            parent: req.parent.clone(),
            created: now_secs(),
            data_bytes,
            added_bytes,
            origins,
            chunks,
        };
        let summary = SnapshotSummary::from(&body);
        let bytes = manifest::seal(body, &dk.plaintext).map_err(StoreError::Internal)?;
        // Large manifests go up in parts; either way the object appears atomically.
        let mut w = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            self.manifest_path(&id),
            8 << 20,
        );
        tokio::io::AsyncWriteExt::write_all(&mut w, &bytes)
            .await
            .map_err(|e| StoreError::Internal(format!("writing manifest: {e}")))?;
        tokio::io::AsyncWriteExt::shutdown(&mut w)
            .await
            .map_err(|e| StoreError::Internal(format!("committing manifest: {e}")))?;
        // The write is committed; the marker only protected it from GC.
        let _ = self.store.delete(&pending).await;
        Ok(summary)
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_chunk(
        &self,
        disk: Arc<dyn Disk>,
        index: u64,
        cs: u64,
        size: u64,
        dedup: &Arc<Zeroizing<[u8; 32]>>,
        aead: &Arc<AeadKey>,
        parent_map: &HashMap<u64, (String, Origin)>,
        kms_key: &str,
        id: &str,
        level: i32,
    ) -> Result<Option<Stored>> {
        let off = index * cs;
        let len = cs.min(size - off);
        let dk = dedup.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<Option<(Vec<u8>, String)>> {
            let len =
                usize::try_from(len).map_err(|_| StoreError::Internal("chunk too large".into()))?;
            let mut buf = vec![0u8; len];
            disk.read_at(&mut buf, off)?;
            if is_zero(&buf) {
                return Ok(None);
            }
            let name = hex::encode(kms::aead::hmac_sha256(&dk[..], &buf));
            Ok(Some((buf, name)))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        let Some((plain, name)) = read else {
            return Ok(None);
        };
        let data = plain.len() as u64;
        if let Some((pname, porigin)) = parent_map.get(&index)
            && *pname == name
        {
            return Ok(Some(Stored {
                index,
                name,
                origin: porigin.clone(),
                added: 0,
                data,
            }));
        }
        let path = self.chunk_path(kms_key, &name);
        if let Some(origin) = self.existing_origin(&path).await? {
            return Ok(Some(Stored {
                index,
                name,
                origin,
                added: 0,
                data,
            }));
        }
        let origin = Origin {
            snapshot: id.to_string(),
            index,
        };
        let (aead, o2, n2) = (aead.clone(), origin.clone(), name.clone());
        let obj =
            tokio::task::spawn_blocking(move || chunk::encode(&aead, &o2, &n2, &plain, level))
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?;
        let added = obj.len() as u64;
        match self
            .store
            .put_opts(
                &path,
                PutPayload::from(obj),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(Some(Stored {
                index,
                name,
                origin,
                added,
                data,
            })),
            // Written meanwhile by a concurrent writer (or an identical chunk of ours).
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                match self.existing_origin(&path).await? {
                    Some(origin) => Ok(Some(Stored {
                        index,
                        name,
                        origin,
                        added: 0,
                        data,
                    })),
                    None => Err(StoreError::Internal(format!(
                        "chunk {name} vanished while being written"
                    ))),
                }
            }
            Err(e) => Err(e.into()),
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
        let dedup = Arc::new(
            self.dedup_key(caller, &reader.manifest().kms_key_id)
                .await?,
        );
        let n = reader.manifest().chunks.len();
        let mut checks = futures::stream::iter(0..n)
            .map(|i| {
                let reader = reader.clone();
                let dedup = dedup.clone();
                async move {
                    let e = reader.manifest().chunks[i].clone();
                    match reader.fetch_entry(&e).await {
                        Ok(plain) => {
                            let h = hex::encode(kms::aead::hmac_sha256(&dedup[..], &plain));
                            if h == e.1 {
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

/// Start offsets of 1 GiB windows over a volume of `size` bytes.
fn window_starts(size: u64) -> impl Iterator<Item = u64> {
    const WINDOW: u64 = 1 << 30;
    (0..size.div_ceil(WINDOW)).map(|i| i * WINDOW)
}

/// Indices of chunks of size `cs` that overlap data extents in the window at `start`.
fn data_chunks(disk: &dyn Disk, start: u64, cs: u64) -> Result<Vec<u64>> {
    const WINDOW: u64 = 1 << 30;
    let mut out: Vec<u64> = Vec::new();
    for e in disk.extents(start, WINDOW)? {
        if e.kind != ExtentKind::Data || e.length == 0 {
            continue;
        }
        let first = e.offset / cs;
        let last = (e.offset + e.length - 1) / cs;
        for i in first..=last {
            if out.last() != Some(&i) {
                out.push(i);
            }
        }
    }
    Ok(out)
}
