//! Random-access reads of a committed snapshot, through a small cache of decrypted chunks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use object_store::ObjectStoreExt;
use zeroize::Zeroizing;

use diskfmt::{Disk, Extent, ExtentKind, Format, ImageInfo};
use kms::Caller;
use kms::aead::AeadKey;

use crate::BlockStore;
use crate::chunk::{self, Origin};
use crate::error::{Result, StoreError};
use crate::manifest::{Entry, ManifestBody};

type Plain = Arc<Zeroizing<Vec<u8>>>;

/// A committed snapshot opened for reading. Chunks are fetched, authenticated and decrypted
/// on demand; the last few are cached (inspection reads the same metadata blocks many times).
pub struct SnapshotReader {
    store: BlockStore,
    caller: Caller,
    body: ManifestBody,
    keys: Mutex<HashMap<String, Arc<AeadKey>>>,
    cache: Mutex<VecDeque<(u64, Plain)>>,
    cache_len: usize,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("snapshot", &self.body.snapshot_id)
            .finish_non_exhaustive()
    }
}

impl SnapshotReader {
    pub(crate) fn new(
        store: BlockStore,
        caller: Caller,
        body: ManifestBody,
        key: Zeroizing<[u8; 32]>,
    ) -> Self {
        let mut keys = HashMap::new();
        keys.insert(body.snapshot_id.clone(), Arc::new(AeadKey::new(&key)));
        let cache_len = store.opts.cache_chunks;
        SnapshotReader {
            store,
            caller,
            body,
            keys: Mutex::new(keys),
            cache: Mutex::new(VecDeque::new()),
            cache_len,
        }
    }

    /// The authenticated manifest.
    #[must_use]
    pub fn manifest(&self) -> &ManifestBody {
        &self.body
    }

    /// Volume size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.body.volume_size
    }

    fn integrity(&self, what: String, detail: String) -> StoreError {
        StoreError::Integrity {
            snapshot: self.body.snapshot_id.clone(),
            what,
            detail,
        }
    }

    async fn origin_key(&self, origin: &str) -> Result<Arc<AeadKey>> {
        if let Some(k) = self
            .keys
            .lock()
            .map_err(|_| StoreError::Internal("poisoned".into()))?
            .get(origin)
        {
            return Ok(k.clone());
        }
        let material = self.store.data_key(&self.caller, origin).await?;
        let k = Arc::new(AeadKey::new(&material));
        self.keys
            .lock()
            .map_err(|_| StoreError::Internal("poisoned".into()))?
            .insert(origin.to_string(), k.clone());
        Ok(k)
    }

    /// The chunk object of manifest entry `e`, with the origin that wrote it and the key
    /// that seals it.
    async fn fetch_object(&self, e: &Entry) -> Result<(Origin, Arc<AeadKey>, bytes::Bytes)> {
        let origin: Origin = self.body.origin(e).ok_or_else(|| {
            self.integrity(format!("chunk {}", e.0), "names an unknown origin".into())
        })?;
        let key = self.origin_key(&origin.snapshot).await?;
        let path = self.store.chunk_path(&self.body.kms_key_id, &e.1);
        match self.store.store.get(&path).await {
            Ok(g) => Ok((origin, key, g.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => {
                Err(self.integrity(format!("chunk {}", e.0), "its object is missing".into()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Fetches, authenticates and decrypts the chunk of manifest entry `e`.
    pub async fn fetch_entry(&self, e: &Entry) -> Result<Zeroizing<Vec<u8>>> {
        let (origin, key, obj) = self.fetch_object(e).await?;
        let len = self.chunk_len(e.0)?;
        chunk::decode(&key, &origin, &e.1, &obj, len)
            .map_err(|d| self.integrity(format!("chunk {}", e.0), d))
    }

    /// Fetches, authenticates and decrypts the chunk of manifest entry `e` straight into
    /// `dst` (exactly the chunk's length), bypassing the cache: for reads of whole chunks
    /// (exports, copies), which need neither a cached copy nor an intermediate one.
    async fn fetch_entry_into(&self, e: &Entry, dst: &mut [u8]) -> Result<()> {
        let (origin, key, obj) = self.fetch_object(e).await?;
        // The object's own buffer when nobody else holds it (a local file read), a copy
        // otherwise.
        let mut obj = obj
            .try_into_mut()
            .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
        chunk::decode_into(&key, &origin, &e.1, &mut obj, dst)
            .map_err(|d| self.integrity(format!("chunk {}", e.0), d))
    }

    fn cached(&self, index: u64) -> Result<Option<Plain>> {
        Ok(self
            .cache
            .lock()
            .map_err(|_| StoreError::Internal("poisoned".into()))?
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, p)| p.clone()))
    }

    fn chunk_len(&self, index: u64) -> Result<usize> {
        let cs = u64::from(self.body.chunk_size);
        let off = index
            .checked_mul(cs)
            .filter(|o| *o < self.body.volume_size)
            .ok_or_else(|| {
                self.integrity(format!("chunk {index}"), "lies outside the volume".into())
            })?;
        usize::try_from(cs.min(self.body.volume_size - off))
            .map_err(|_| StoreError::Internal("chunk size".into()))
    }

    /// The plaintext of chunk `index`, or `None` when it reads as zeros.
    pub async fn chunk(&self, index: u64) -> Result<Option<Plain>> {
        if let Some(p) = self.cached(index)? {
            return Ok(Some(p));
        }
        let Ok(pos) = self.body.chunks.binary_search_by_key(&index, |e| e.0) else {
            return Ok(None);
        };
        let plain: Plain = Arc::new(self.fetch_entry(&self.body.chunks[pos]).await?);
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| StoreError::Internal("poisoned".into()))?;
        if cache.len() >= self.cache_len.max(1) {
            cache.pop_front();
        }
        cache.push_back((index, plain.clone()));
        Ok(Some(plain))
    }

    /// Fills `buf` from the volume at `offset`.
    pub async fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.body.volume_size)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "read at {offset} of {} bytes is past the end of the volume",
                    buf.len()
                ))
            })?;
        let cs = u64::from(self.body.chunk_size);
        let mut pos = offset;
        while pos < end {
            let index = pos / cs;
            let in_chunk = pos - index * cs;
            let n = (cs - in_chunk).min(end - pos);
            let (b0, b1) = (
                usize::try_from(pos - offset).map_err(|_| StoreError::Internal("offset".into()))?,
                usize::try_from(pos - offset + n)
                    .map_err(|_| StoreError::Internal("offset".into()))?,
            );
            let dst = &mut buf[b0..b1];
            if in_chunk == 0 && n == cs.min(self.body.volume_size - pos) {
                // A whole chunk: decoded straight into the caller's buffer.
                match self.body.chunks.binary_search_by_key(&index, |e| e.0) {
                    Ok(i) => match self.cached(index)? {
                        Some(p) => dst.copy_from_slice(&p[..]),
                        None => self.fetch_entry_into(&self.body.chunks[i], dst).await?,
                    },
                    Err(_) => dst.fill(0),
                }
                pos += n;
                continue;
            }
            match self.chunk(index).await? {
                Some(p) => {
                    let s = usize::try_from(in_chunk)
                        .map_err(|_| StoreError::Internal("offset".into()))?;
                    dst.copy_from_slice(&p[s..s + dst.len()]);
                }
                None => dst.fill(0),
            }
            pos += n;
        }
        Ok(())
    }

    /// The extent map of `[offset, offset + length)`: stored chunks are data, the rest zero.
    #[must_use]
    pub fn extents(&self, offset: u64, length: u64) -> Vec<Extent> {
        let end = offset.saturating_add(length).min(self.body.volume_size);
        let mut list = diskfmt::disk::ExtentList::new();
        if offset >= end {
            return list.into_vec();
        }
        let cs = u64::from(self.body.chunk_size);
        let first = self.body.chunks.partition_point(|e| e.0 < offset / cs);
        let mut pos = offset;
        for e in &self.body.chunks[first..] {
            let (cstart, cend) = (e.0 * cs, (e.0 * cs + cs).min(self.body.volume_size));
            if cstart >= end {
                break;
            }
            let (s, t) = (cstart.max(pos), cend.min(end));
            if s > pos {
                list.push(pos, s - pos, ExtentKind::Zero);
            }
            if t > s {
                list.push(s, t - s, ExtentKind::Data);
                pos = t;
            }
        }
        if pos < end {
            list.push(pos, end - pos, ExtentKind::Zero);
        }
        list.into_vec()
    }

    /// A synchronous [`Disk`] view for code that reads disks the blocking way (guest
    /// inspection, export writers). Use it from a blocking thread (`spawn_blocking`), never
    /// from inside an async task.
    #[must_use]
    pub fn blocking(self: Arc<Self>, handle: tokio::runtime::Handle) -> BlockingReader {
        BlockingReader {
            inner: self,
            handle,
        }
    }
}

/// A [`SnapshotReader`] behind the synchronous [`Disk`] trait.
#[derive(Debug)]
pub struct BlockingReader {
    inner: Arc<SnapshotReader>,
    handle: tokio::runtime::Handle,
}

impl Disk for BlockingReader {
    fn info(&self) -> ImageInfo {
        ImageInfo {
            format: Format::Raw,
            subformat: Some("snapshot".into()),
            virtual_size: self.inner.size(),
            cluster_size: Some(u64::from(self.inner.body.chunk_size)),
            details: vec![("snapshot".into(), self.inner.body.snapshot_id.clone())],
        }
    }

    fn virtual_size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> diskfmt::Result<()> {
        self.handle
            .block_on(self.inner.read_at(buf, offset))
            .map_err(|e| {
                // The cause goes into the context: callers show a disk error's message only,
                // and a task's status must say what failed (a store error, a damaged chunk).
                diskfmt::DiskError::io(
                    format!("reading snapshot at byte {offset}: {e}"),
                    std::io::Error::other(e.to_string()),
                )
            })
    }

    fn extents(&self, offset: u64, length: u64) -> diskfmt::Result<Vec<Extent>> {
        Ok(self.inner.extents(offset, length))
    }
}
