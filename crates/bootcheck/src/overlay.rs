//! The throw-away overlay that takes the guest's writes.
//!
//! The disk QEMU sees is the base (read-only, never written) with the guest's writes laid
//! over it. Writes are kept in 4 KiB blocks in a file of the work folder, each block sealed
//! with AES-256-GCM under a key drawn when the overlay is made and held only in memory: a
//! fresh 96-bit counter nonce for every sealing (so rewriting a block never reuses one), the
//! block number as associated data (so a block moved on disk fails to open). Nothing the
//! guest writes is on disk in plaintext, the base is never changed, and the file is deleted
//! when the overlay is dropped. A file left by a killed process is unreadable (its key died
//! with it); its name ends in `.vol`, so the engine's start-up sweep deletes it.
//!
//! The overlay also notes writes that touch watched regions (the root partition, the
//! filesystem's mount marks), which is how a boot is seen to succeed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};

use crate::Region;
use crate::source::DiskSource;

/// Bytes per overlay block.
pub const BLOCK: u64 = 4096;
const BLOCK_LEN: usize = 4096;
const TAG_LEN: usize = 16;
const SLOT: u64 = BLOCK + TAG_LEN as u64;

/// A watched region and the writes seen in it.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The region.
    pub region: Region,
    /// Writes that touched it.
    pub writes: u64,
    /// When the first one came.
    pub first: Option<Instant>,
}

struct Slot {
    index: u64,
    nonce: u64,
}

struct State {
    map: HashMap<u64, Slot>,
    next_slot: u64,
    counter: u64,
    bytes_written: u64,
    watches: Vec<Watch>,
}

/// The base disk with the guest's writes sealed over it.
pub struct Overlay {
    base: Arc<dyn DiskSource>,
    size: u64,
    path: PathBuf,
    file: File,
    key: LessSafeKey,
    max_blocks: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Errors of overlay reads and writes, as NBD reports them.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Past the end of the disk.
    #[error("request of {len} bytes at {offset} is past the end of the disk ({size} bytes)")]
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Disk size.
        size: u64,
    },
    /// The overlay holds as many blocks as it may.
    #[error("the guest wrote more than the overlay's limit of {0} bytes")]
    Full(u64),
    /// Reading the base or the overlay file failed, or a sealed block failed to open.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Overlay {
    /// An empty overlay over `base`, its file `<name>.vol` in `dir`, keeping at most
    /// `max_bytes` of writes; `watch` lists the regions whose writes are counted.
    pub fn create(
        dir: &Path,
        name: &str,
        base: Arc<dyn DiskSource>,
        max_bytes: u64,
        watch: &[Region],
    ) -> io::Result<Overlay> {
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let path = dir.join(format!("{safe}.vol"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut material = [0u8; 32];
        aws_lc_rs::rand::fill(&mut material).map_err(|_| io::Error::other("no randomness"))?;
        let unbound = UnboundKey::new(&AES_256_GCM, &material);
        material.fill(0);
        let key = LessSafeKey::new(unbound.map_err(|_| io::Error::other("AES key"))?);
        Ok(Overlay {
            size: base.size(),
            base,
            path,
            file,
            key,
            max_blocks: max_bytes / BLOCK,
            state: Mutex::new(State {
                map: HashMap::new(),
                next_slot: 0,
                counter: 0,
                bytes_written: 0,
                watches: watch
                    .iter()
                    .map(|r| Watch {
                        region: *r,
                        writes: 0,
                        first: None,
                    })
                    .collect(),
            }),
        })
    }

    /// The disk's size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The overlay file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("overlay state poisoned"))
    }

    /// The watched regions and the writes seen in each.
    #[must_use]
    pub fn watches(&self) -> Vec<Watch> {
        self.lock().map(|s| s.watches.clone()).unwrap_or_default()
    }

    /// Bytes the guest has written.
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.lock().map(|s| s.bytes_written).unwrap_or(0)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), OverlayError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(OverlayError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    fn nonce(counter: u64) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Plaintext length of block `index` (the last one may be short).
    fn block_len(&self, index: u64) -> usize {
        usize::try_from(BLOCK.min(self.size - index * BLOCK)).unwrap_or(BLOCK_LEN)
    }

    fn open_slot(&self, index: u64, slot: &Slot, out: &mut [u8]) -> io::Result<()> {
        let n = out.len();
        let mut buf = vec![0u8; n + TAG_LEN];
        self.file.read_exact_at(&mut buf, slot.index * SLOT)?;
        let plain = self
            .key
            .open_in_place(
                Self::nonce(slot.nonce),
                Aad::from(index.to_be_bytes()),
                &mut buf,
            )
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("overlay block {index} failed authentication"),
                )
            })?;
        out.copy_from_slice(plain);
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`: the guest's writes where it made them, the base
    /// elsewhere.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), OverlayError> {
        self.check_range(offset, buf.len() as u64)?;
        let st = self.lock()?;
        self.read_locked(&st, buf, offset)
    }

    fn read_locked(&self, st: &State, buf: &mut [u8], offset: u64) -> Result<(), OverlayError> {
        let end = offset + buf.len() as u64;
        let mut at = offset;
        // A run of blocks not in the overlay is read from the base in one call.
        let mut base_from: Option<u64> = None;
        let flush = |from: u64, to: u64, buf: &mut [u8]| -> io::Result<()> {
            let a = usize::try_from(from - offset).unwrap_or(0);
            let b = usize::try_from(to - offset).unwrap_or(0);
            if b > a {
                self.base.read_exact_at(&mut buf[a..b], from)?;
            }
            Ok(())
        };
        while at < end {
            let index = at / BLOCK;
            let block_end = ((index + 1) * BLOCK).min(end);
            if let Some(slot) = st.map.get(&index) {
                if let Some(from) = base_from.take() {
                    flush(from, at, buf)?;
                }
                let mut block = vec![0u8; self.block_len(index)];
                self.open_slot(index, slot, &mut block)?;
                let within = usize::try_from(at - index * BLOCK).unwrap_or(0);
                let a = usize::try_from(at - offset).unwrap_or(0);
                let n = usize::try_from(block_end - at).unwrap_or(0);
                buf[a..a + n].copy_from_slice(&block[within..within + n]);
            } else if base_from.is_none() {
                base_from = Some(at);
            }
            at = block_end;
        }
        if let Some(from) = base_from {
            flush(from, end, buf)?;
        }
        Ok(())
    }

    /// Writes `data` at `offset` into the overlay (never into the base).
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), OverlayError> {
        self.check_range(offset, data.len() as u64)?;
        let mut st = self.lock()?;
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let block_start = index * BLOCK;
            let block_end = (block_start + BLOCK).min(end);
            let len = self.block_len(index);
            let mut block = vec![0u8; len];
            let whole = at == block_start && block_end - block_start == len as u64;
            if !whole {
                self.read_locked(&st, &mut block, block_start)?;
            }
            let within = usize::try_from(at - block_start).unwrap_or(0);
            let from = usize::try_from(at - offset).unwrap_or(0);
            let n = usize::try_from(block_end - at).unwrap_or(0);
            block[within..within + n].copy_from_slice(&data[from..from + n]);
            self.seal_block(&mut st, index, block)?;
            at = block_end;
        }
        st.bytes_written += data.len() as u64;
        let now = Instant::now();
        for w in &mut st.watches {
            if w.region.overlaps(offset, data.len() as u64) {
                w.writes += 1;
                w.first.get_or_insert(now);
            }
        }
        Ok(())
    }

    /// Writes zeros over `[offset, offset + len)` (NBD `WRITE_ZEROES` and `TRIM`).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), OverlayError> {
        self.check_range(offset, len)?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(zeros.len() as u64);
            self.write_at(&zeros[..usize::try_from(n).unwrap_or(0)], at)?;
            at += n;
        }
        Ok(())
    }

    fn seal_block(
        &self,
        st: &mut State,
        index: u64,
        mut block: Vec<u8>,
    ) -> Result<(), OverlayError> {
        let counter = st.counter;
        st.counter += 1;
        let slot_index = match st.map.get(&index) {
            Some(s) => s.index,
            None => {
                if st.next_slot >= self.max_blocks {
                    return Err(OverlayError::Full(self.max_blocks * BLOCK));
                }
                st.next_slot += 1;
                st.next_slot - 1
            }
        };
        let tag: Tag = self
            .key
            .seal_in_place_separate_tag(
                Self::nonce(counter),
                Aad::from(index.to_be_bytes()),
                &mut block,
            )
            .map_err(|_| io::Error::other("sealing an overlay block failed"))?;
        block.extend_from_slice(tag.as_ref());
        self.file.write_all_at(&block, slot_index * SLOT)?;
        st.map.insert(
            index,
            Slot {
                index: slot_index,
                nonce: counter,
            },
        );
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.path.display(), error = %e, "could not delete a boot-check overlay");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;

    struct Mem(Vec<u8>);
    impl DiskSource for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn test_overlay_unaligned_writes_read_back_sealed_and_base_untouched() {
        let dir = tempfile::tempdir().unwrap();
        // A size that is not a multiple of the block, so the last block is short.
        let size = 10 * BLOCK as usize + 1000;
        let base: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let src = Arc::new(Mem(base.clone()));
        let root = Region {
            start: 3 * BLOCK,
            len: 2 * BLOCK,
        };
        let ov = Overlay::create(dir.path(), "t-1", src.clone(), 1 << 20, &[root]).unwrap();
        let mut expect = base.clone();
        let marker = b"GUEST-WROTE-THIS-MARKER-0123456789";
        for (off, len) in [
            (100usize, 50usize),
            (4090, 20),
            (3 * 4096 + 7, 9000),
            (size - 30, 30),
        ] {
            let data: Vec<u8> = (0..len).map(|i| marker[i % marker.len()]).collect();
            ov.write_at(&data, off as u64).unwrap();
            expect[off..off + len].copy_from_slice(&data);
        }
        // Rewrite a block: a new nonce, same slot.
        ov.write_at(b"again", 102).unwrap();
        expect[102..107].copy_from_slice(b"again");
        let mut got = vec![0u8; size];
        ov.read_at(&mut got, 0).unwrap();
        assert_eq!(got, expect);
        let mut piece = vec![0u8; 5000];
        ov.read_at(&mut piece, 4000).unwrap();
        assert_eq!(piece, expect[4000..9000]);
        // The base is unchanged; the file holds no plaintext.
        assert_eq!(src.0, base);
        let raw = std::fs::read(ov.path()).unwrap();
        assert!(!raw.windows(16).any(|w| w == &marker[..16]));
        // Watched region: only the write that overlaps it counted.
        let w = ov.watches();
        assert_eq!(w[0].writes, 1);
        assert_eq!(ov.bytes_written(), 50 + 20 + 9000 + 30 + 5);
        // Past the end is refused; zeroes work.
        assert!(matches!(
            ov.write_at(b"x", size as u64),
            Err(OverlayError::OutOfRange { .. })
        ));
        ov.write_zeroes(0, 8192).unwrap();
        ov.read_at(&mut got[..8192], 0).unwrap();
        assert!(got[..8192].iter().all(|b| *b == 0));
        // A flipped byte in a sealed block fails authentication.
        let path = ov.path().to_path_buf();
        let raw2 = std::fs::read(&path).unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[raw2[10] ^ 1], 10).unwrap();
        assert!(ov.read_at(&mut got[..10], 0).is_err());
        drop(ov);
        assert!(!path.exists());
    }

    #[test]
    fn test_overlay_full_refuses_new_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let src = Arc::new(Mem(vec![0u8; 64 * 1024]));
        let ov = Overlay::create(dir.path(), "t-2", src, 2 * BLOCK, &[]).unwrap();
        ov.write_at(&[1u8; 8192], 0).unwrap();
        ov.write_at(&[2u8; 10], 0).unwrap();
        assert!(matches!(
            ov.write_at(&[3u8; 1], 9000),
            Err(OverlayError::Full(_))
        ));
    }
}
