//! A snapshot written from many threads at once: a *pending* snapshot that chunks are added
//! to in any order while a disk is still being decoded, published when its task says so
//! (after validation) or abandoned.
//!
//! - [`BlockStore::begin`] writes the pending marker (which keeps GC away) and the wrapped
//!   data key, and returns a [`SnapshotWriter`].
//! - [`SnapshotWriter::write_chunk`] takes the plaintext of one chunk from any thread: an
//!   all-zero chunk costs a scan and nothing else; the others are named by their keyed hash on
//!   the calling thread, and a chunk whose name this writer has already seen (a duplicate
//!   inside the disk), or that the parent snapshot holds at the same index, costs nothing
//!   more. A new name is looked up in the store first (stored by another snapshot: not
//!   compressed nor encrypted again), then compressed, sealed and uploaded as an async task;
//!   at most `concurrency` chunks are in flight, so memory stays bounded and the caller is
//!   held back when the store is slower than the decoder.
//! - [`SnapshotWriter::publish`] waits for the chunks in flight and writes the manifest: the
//!   snapshot becomes visible at that moment and not before. [`SnapshotWriter::abort`] (or
//!   dropping the writer) stops it: nothing becomes visible, and GC collects what it wrote
//!   after the grace period, as for a crashed writer.
//!
//! While the writer lives, the pending marker is renewed every minute, so a pending snapshot
//! held through a long validation or boot check is not mistaken for an abandoned one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use kms::aead::AeadKey;

use crate::chunk::{self, Origin};
use crate::error::{Result, StoreError};
use crate::naming::Namer;
use crate::{BlockStore, PutRequest, SnapshotSummary, manifest, now_secs, snapshot_context};

/// How often the pending marker of a live writer is renewed.
const RENEW: Duration = Duration::from_secs(60);

/// Chunk buffers passed around between the threads that decode a disk and a writer: a
/// buffer handed to [`SnapshotWriter::write_chunk`] comes back here once the writer is done
/// with it, so a long import reuses a few buffers instead of asking the allocator for fresh
/// (zeroed, page-faulted) megabytes per chunk. At most `max` wait here; more are freed.
#[derive(Debug)]
pub struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl Buffers {
    /// A pool keeping at most `max` buffers.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Buffers {
            free: Mutex::new(Vec::new()),
            max,
        }
    }

    /// A buffer of `len` bytes. A recycled one still holds an earlier chunk's bytes: the
    /// caller overwrites every byte (as [`diskfmt::Disk::read_at`] does) before using it.
    #[must_use]
    pub fn take(&self, len: usize) -> Vec<u8> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match reused {
            Some(mut b) => {
                b.resize(len, 0);
                b
            }
            None => vec![0u8; len],
        }
    }

    /// Gives a buffer back for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < self.max && buf.capacity() > 0 {
            free.push(buf);
        }
    }
}

/// A chunk name this writer has met.
enum Known {
    /// Being looked up or uploaded by one of this writer's tasks.
    InFlight,
    /// Stored (by this snapshot or an earlier one): its origin.
    Stored(Origin),
}

/// One non-zero chunk of the snapshot: index, name, origin when already known (the
/// parent's), and its length.
struct Entry {
    index: u64,
    name: String,
    origin: Option<Origin>,
    len: u64,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    names: HashMap<String, Known>,
    added: u64,
    error: Option<StoreError>,
}

struct Inner {
    store: BlockStore,
    id: String,
    kms_key_id: String,
    parent: Option<String>,
    data_key: Zeroizing<[u8; 32]>,
    aead: AeadKey,
    namer: Namer,
    parent_map: HashMap<u64, (String, Origin)>,
    size: u64,
    chunk_size: u64,
    squeezers: chunk::Squeezers,
    /// Compressions at once: one per core and one more (so a core that finishes one finds
    /// the next ready); more would not go faster, only hold more compression contexts.
    /// Measured on 2 cores: with one per core the import ran at 158–169 % CPU, with one
    /// more at 171–176 %.
    cpu: Semaphore,
    handle: tokio::runtime::Handle,
    slots: Arc<Semaphore>,
    max_slots: u32,
    state: Mutex<State>,
    stopped: AtomicBool,
    done: Arc<AtomicU64>,
    pending: Path,
    buffers: Arc<Buffers>,
}

/// A pending snapshot being written; see the [module](self) documentation.
pub struct SnapshotWriter {
    inner: Arc<Inner>,
    renew: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("snapshot", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the first error; later chunks are refused.
    fn fail(&self, e: StoreError) {
        self.stopped.store(true, Ordering::Relaxed);
        let mut s = self.lock();
        if s.error.is_none() {
            s.error = Some(e);
        }
    }

    fn check(&self) -> Result<()> {
        if !self.stopped.load(Ordering::Relaxed) {
            return Ok(());
        }
        match &self.lock().error {
            Some(e) => Err(StoreError::Internal(format!(
                "snapshot {} stopped: {e}",
                self.id
            ))),
            None => Err(StoreError::Internal(format!(
                "snapshot {} was abandoned",
                self.id
            ))),
        }
    }

    /// Looks up, or compresses, seals and uploads, the chunk `name` first met at `index`.
    async fn store_new(self: &Arc<Self>, index: u64, name: &str, plain: Vec<u8>) -> Result<()> {
        let path = self.store.chunk_path(&self.kms_key_id, name);
        let (origin, added) = if let Some(o) = self.store.existing_origin(&path).await? {
            self.buffers.give(plain);
            (o, 0)
        } else {
            let origin = Origin {
                snapshot: self.id.clone(),
                index,
            };
            let (me, o2, n2) = (self.clone(), origin.clone(), name.to_string());
            let cpu = self
                .cpu
                .acquire()
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let obj = tokio::task::spawn_blocking(move || {
                let obj = chunk::encode_with(&me.squeezers, &me.aead, &o2, &n2, &plain);
                me.buffers.give(plain);
                obj
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
            drop(cpu);
            let added = obj.len() as u64;
            match self
                .store
                .store
                .put_opts(
                    &path,
                    PutPayload::from(obj),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => (origin, added),
                // Written meanwhile by a concurrent writer.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => match self.store.existing_origin(&path).await? {
                    Some(o) => (o, 0),
                    None => {
                        return Err(StoreError::Internal(format!(
                            "chunk {name} vanished while being written"
                        )));
                    }
                },
                Err(e) => return Err(e.into()),
            }
        };
        let mut s = self.lock();
        s.added += added;
        s.names.insert(name.to_string(), Known::Stored(origin));
        Ok(())
    }

    /// Waits until no chunk is in flight.
    async fn drain(&self) -> Result<()> {
        let all = self
            .slots
            .acquire_many(self.max_slots)
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        drop(all);
        Ok(())
    }
}

impl BlockStore {
    /// Starts the pending snapshot `req.snapshot_id` of a volume of `size` bytes: checks that
    /// no snapshot of that id exists, draws its data key under the KMS key, and writes the
    /// pending marker and the wrapped key. `progress` (if given) counts the bytes of every
    /// chunk handed to the writer once it is done with it.
    pub async fn begin(
        &self,
        req: PutRequest,
        size: u64,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<SnapshotWriter> {
        let id = req.snapshot_id.clone();
        crate::validate_id(&id)?;
        match self.store.head(&self.manifest_path(&id)).await {
            Ok(_) => return Err(StoreError::AlreadyExists(id)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let dk = self.draw_data_key(&req, &id).await?;
        let kms_key_id = dk.key_id.clone();
        let pending = self.mark_pending(&id, &dk.ciphertext).await?;
        let dedup = self.dedup_key(&req.caller, &kms_key_id).await?;
        let cs = u64::from(self.opts.chunk_size);
        let parent_map = self.parent_chunks(&req, &kms_key_id, cs).await?;
        let max_slots = u32::try_from(self.opts.concurrency.clamp(1, 1024)).unwrap_or(8);
        let inner = Arc::new(Inner {
            store: self.clone(),
            id,
            kms_key_id,
            parent: req.parent.clone(),
            aead: AeadKey::new(&dk.plaintext),
            data_key: dk.plaintext,
            namer: Namer::new(manifest::FORMAT, &dedup)
                .ok_or_else(|| StoreError::Internal("no chunk names for this format".into()))?,
            parent_map,
            size,
            chunk_size: cs,
            squeezers: chunk::Squeezers::new(self.opts.zstd_level),
            cpu: Semaphore::new(self.opts.threads.max(1) + 1),
            handle: tokio::runtime::Handle::current(),
            slots: Arc::new(Semaphore::new(max_slots as usize)),
            max_slots,
            state: Mutex::new(State::default()),
            stopped: AtomicBool::new(false),
            done: progress.unwrap_or_default(),
            pending: pending.clone(),
            // Room for the chunks in flight and a few on their way from the decoders.
            buffers: Arc::new(Buffers::new(max_slots as usize + 8)),
        });
        Ok(SnapshotWriter {
            inner,
            renew: self.renew_marker(pending),
            ended: false,
        })
    }

    /// A fresh data key for snapshot `id` under the request's KMS key (default: the
    /// account's EBS key), bound to the snapshot by its encryption context.
    async fn draw_data_key(&self, req: &PutRequest, id: &str) -> Result<kms::DataKey> {
        let key_err = |source| StoreError::Key {
            snapshot: id.to_string(),
            source,
        };
        let key_ref = match &req.kms_key {
            Some(k) => k.clone(),
            None => self.kms.default_ebs_key().await.map_err(key_err)?.key_id,
        };
        self.kms
            .generate_data_key(&req.caller, &key_ref, &snapshot_context(id))
            .await
            .map_err(key_err)
    }

    /// Writes the pending marker (which keeps GC away from the chunks before the manifest
    /// exists) and then the wrapped data key; the key is created only if absent, so two
    /// writers of one id cannot both start. Returns the marker's path.
    async fn mark_pending(&self, id: &str, wrapped_key: &[u8]) -> Result<Path> {
        let pending = self.path(&["pending", id]);
        self.store
            .put(&pending, PutPayload::from(now_secs().to_string()))
            .await?;
        match self
            .store
            .put_opts(
                &self.key_path(id),
                PutPayload::from(wrapped_key.to_vec()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => Ok(pending),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(StoreError::AlreadyExists(id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The chunks of the request's parent snapshot by index, when the parent can lend them:
    /// same KMS key, chunk size and chunk names (otherwise its chunks are not reused and the
    /// map is empty).
    async fn parent_chunks(
        &self,
        req: &PutRequest,
        kms_key_id: &str,
        chunk_size: u64,
    ) -> Result<HashMap<u64, (String, Origin)>> {
        let mut parent_map = HashMap::new();
        let Some(parent) = &req.parent else {
            return Ok(parent_map);
        };
        let (pb, _) = self.load_manifest(&req.caller, parent).await?;
        if pb.kms_key_id == kms_key_id
            && u64::from(pb.chunk_size) == chunk_size
            && pb.format == manifest::FORMAT
        {
            for e in &pb.chunks {
                if let Some(o) = pb.origin(e) {
                    parent_map.insert(e.0, (e.1.clone(), o));
                }
            }
        }
        Ok(parent_map)
    }

    /// Renews the pending marker every [`RENEW`] while the writer lives, so a snapshot held
    /// through a long validation is not taken for abandoned.
    fn renew_marker(&self, pending: Path) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                if let Err(e) = store
                    .put(&pending, PutPayload::from(now_secs().to_string()))
                    .await
                {
                    tracing::warn!(marker = %pending, error = %e, "could not renew a pending snapshot's marker");
                }
            }
        })
    }
}

impl SnapshotWriter {
    /// The snapshot's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Chunk size in bytes: chunk `i` covers `[i * chunk_size, (i + 1) * chunk_size)`.
    #[must_use]
    pub fn chunk_size(&self) -> u64 {
        self.inner.chunk_size
    }

    /// Size of the volume in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// Bytes of the chunks the writer is done with (zero, duplicate or stored).
    #[must_use]
    pub fn done_bytes(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }

    /// The pool that chunks handed to [`SnapshotWriter::write_chunk`] return to: take the
    /// buffers to decode into from it.
    #[must_use]
    pub fn buffers(&self) -> Arc<Buffers> {
        self.inner.buffers.clone()
    }

    /// Length of chunk `index`, or `None` past the end of the volume.
    #[must_use]
    pub fn chunk_len(&self, index: u64) -> Option<usize> {
        let off = index.checked_mul(self.inner.chunk_size)?;
        (off < self.inner.size)
            .then(|| usize::try_from(self.inner.chunk_size.min(self.inner.size - off)).ok())
            .flatten()
    }

    /// Adds chunk `index` with plaintext `plain` (exactly [`SnapshotWriter::chunk_len`]
    /// bytes). Blocking: call it from a thread of its own or the blocking pool, never from an
    /// async task. Each index is written at most once; chunks not written read as zeros.
    /// Fails once the writer has failed or been stopped.
    pub fn write_chunk(&self, index: u64, plain: Vec<u8>) -> Result<()> {
        let inner = &self.inner;
        inner.check()?;
        if self.chunk_len(index) != Some(plain.len()) {
            return Err(StoreError::Invalid(format!(
                "chunk {index} of {} bytes does not fit a volume of {} bytes in chunks of {}",
                plain.len(),
                inner.size,
                inner.chunk_size
            )));
        }
        let len = plain.len() as u64;
        if crate::is_zero(&plain) {
            inner.done.fetch_add(len, Ordering::Relaxed);
            inner.buffers.give(plain);
            return Ok(());
        }
        let name = inner.namer.name(&plain);
        let from_parent = inner
            .parent_map
            .get(&index)
            .filter(|(pname, _)| *pname == name)
            .map(|(_, o)| o.clone());
        let new = {
            let mut s = inner.lock();
            let new = from_parent.is_none() && !s.names.contains_key(&name);
            if new {
                s.names.insert(name.clone(), Known::InFlight);
            }
            s.entries.push(Entry {
                index,
                name: name.clone(),
                origin: from_parent,
                len,
            });
            new
        };
        if !new {
            inner.done.fetch_add(len, Ordering::Relaxed);
            inner.buffers.give(plain);
            return Ok(());
        }
        let permit = inner
            .handle
            .block_on(inner.slots.clone().acquire_owned())
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let me = inner.clone();
        inner.handle.spawn(async move {
            if let Err(e) = me.store_new(index, &name, plain).await {
                me.fail(e);
            }
            me.done.fetch_add(len, Ordering::Relaxed);
            drop(permit);
        });
        Ok(())
    }

    /// Waits for the chunks in flight and commits the manifest: the snapshot is visible from
    /// now on. Fails with the first error any chunk met.
    pub async fn publish(mut self) -> Result<SnapshotSummary> {
        self.ended = true;
        self.renew.abort();
        let inner = self.inner.clone();
        inner.drain().await?;
        let (entries, names, added) = {
            let mut s = inner.lock();
            if let Some(e) = s.error.take() {
                return Err(e);
            }
            if inner.stopped.load(Ordering::Relaxed) {
                return Err(StoreError::Internal(format!(
                    "snapshot {} was abandoned",
                    inner.id
                )));
            }
            (
                std::mem::take(&mut s.entries),
                std::mem::take(&mut s.names),
                s.added,
            )
        };
        let mut entries = entries;
        entries.sort_by_key(|e| e.index);
        let mut origins: Vec<String> = Vec::new();
        let mut origin_no: HashMap<String, u32> = HashMap::new();
        let mut chunks = Vec::with_capacity(entries.len());
        let mut data_bytes = 0u64;
        let mut last = None;
        for e in entries {
            if last == Some(e.index) {
                return Err(StoreError::Invalid(format!(
                    "chunk {} was written twice",
                    e.index
                )));
            }
            last = Some(e.index);
            let origin = match e.origin {
                Some(o) => o,
                None => match names.get(&e.name) {
                    Some(Known::Stored(o)) => o.clone(),
                    _ => {
                        return Err(StoreError::Internal(format!(
                            "chunk {} was never stored",
                            e.index
                        )));
                    }
                },
            };
            let n = match origin_no.get(&origin.snapshot) {
                Some(n) => *n,
                None => {
                    let n = u32::try_from(origins.len())
                        .map_err(|_| StoreError::Internal("too many origins".into()))?;
                    origins.push(origin.snapshot.clone());
                    origin_no.insert(origin.snapshot.clone(), n);
                    n
                }
            };
            data_bytes += e.len;
            chunks.push(manifest::Entry(e.index, e.name, n, origin.index));
        }
        let body = manifest::ManifestBody {
            format: manifest::FORMAT,
            snapshot_id: inner.id.clone(),
            volume_size: inner.size,
            chunk_size: u32::try_from(inner.chunk_size)
                .map_err(|_| StoreError::Internal("chunk size".into()))?,
            kms_key_id: inner.kms_key_id.clone(),
            parent: inner.parent.clone(),
            created: now_secs(),
            data_bytes,
            added_bytes: added,
            origins,
            chunks,
        };
        let summary = SnapshotSummary::from(&body);
        let bytes = manifest::seal(body, &inner.data_key).map_err(StoreError::Internal)?;
        // Large manifests go up in parts; either way the object appears atomically.
        let mut w = object_store::buffered::BufWriter::with_capacity(
            inner.store.store.clone(),
            inner.store.manifest_path(&inner.id),
            8 << 20,
        );
        tokio::io::AsyncWriteExt::write_all(&mut w, &bytes)
            .await
            .map_err(|e| StoreError::Internal(format!("writing manifest: {e}")))?;
        tokio::io::AsyncWriteExt::shutdown(&mut w)
            .await
            .map_err(|e| StoreError::Internal(format!("committing manifest: {e}")))?;
        // The write is committed; the marker only protected it from GC.
        let _ = inner.store.store.delete(&inner.pending).await;
        Ok(summary)
    }

    /// Stops the writer, waits for the chunks in flight and removes the pending marker: the
    /// snapshot never becomes visible, and GC collects its chunks and key after the grace
    /// period (other snapshots that found its chunks meanwhile keep them).
    pub async fn abort(mut self) {
        self.ended = true;
        self.renew.abort();
        self.inner.stopped.store(true, Ordering::Relaxed);
        let _ = self.inner.drain().await;
        let _ = self.inner.store.store.delete(&self.inner.pending).await;
    }

    /// Stops the writer at once: chunks not yet handed over are refused. What is in flight
    /// finishes; call [`SnapshotWriter::abort`] to also remove the marker.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Neither published nor aborted (a panic, or a caller that forgot): stop it and
        // remove its marker in the background; GC does the rest.
        self.renew.abort();
        self.inner.stopped.store(true, Ordering::Relaxed);
        let inner = self.inner.clone();
        inner.handle.clone().spawn(async move {
            let _ = inner.drain().await;
            let _ = inner.store.store.delete(&inner.pending).await;
        });
    }
}
