//! The intermediate volume: where a task keeps the decoded disk while it validates and
//! commits it.
//!
//! - **One per task**, a file `<task-id>.vol` in a folder only the service can read (mode
//!   0700; the file 0600).
//! - **Encrypted with a throw-away key** (AES-256-GCM, 256-bit, drawn when the volume is made,
//!   held only in this process's memory and never written anywhere). The disk is cut into
//!   64 KiB blocks; each is sealed with the block number as nonce and associated data, so a
//!   block moved, swapped or altered on disk fails to open. Each block is written at most
//!   once — in ascending order through [`Scratch::write_at`], or in any order from several
//!   threads through [`Scratch::put_blocks`], which refuses a block already written — so a
//!   nonce is never reused.
//! - **Sparse**: all-zero blocks are not written and read back as zeros; the extent map
//!   reports only written blocks, so later stages skip the holes.
//! - **Destroyed when dropped**, however the task ends (completed, failed, cancelled, or a
//!   panic unwinding). A volume left by a killed process cannot be read by anyone (its key
//!   died with the process); [`sweep`] deletes such files at the next start.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Plaintext bytes per block.
pub const BLOCK: u64 = BLOCK_LEN as u64;
const BLOCK_LEN: usize = 64 * 1024;
const TAG: u64 = 16;
const SLOT: u64 = BLOCK + TAG;

/// Errors of the intermediate volume.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// The file system refused.
    #[error("intermediate volume {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A write went backwards, past the end, or over a block already written.
    #[error("intermediate volume: write of {len} bytes at {offset} is out of order or past {size}")]
    Order {
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Volume size.
        size: u64,
    },
    /// Sealing a block failed.
    #[error("intermediate volume: block {0} could not be sealed")]
    Seal(u64),
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ScratchError + '_ {
    move |source| ScratchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` for intermediate volumes if needed, with mode 0700.
pub fn prepare_dir(dir: &Path) -> Result<(), ScratchError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// Deletes every intermediate volume in `dir` — left by a process that died — and returns
/// their names. Call before any worker starts.
pub fn sweep(dir: &Path) -> Result<Vec<String>, ScratchError> {
    let mut gone = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(gone),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".vol") {
            std::fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            gone.push(name);
        }
    }
    gone.sort();
    Ok(gone)
}

/// An encrypted intermediate volume of a fixed virtual size.
pub struct Scratch {
    path: PathBuf,
    file: File,
    key: LessSafeKey,
    size: u64,
    /// Which blocks hold data: disjoint runs `[start, end)` of block numbers keyed by start,
    /// merged as they touch. Memory follows the data written, not the virtual size.
    runs: Mutex<Runs>,
    /// The block being filled: (index, plaintext).
    open: Option<(u64, Vec<u8>)>,
    /// The next writable offset (writes never go back).
    next: u64,
    /// Last block read, decrypted.
    cache: Mutex<Option<(u64, Vec<u8>)>>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Scratch {
    /// Creates the volume for `task_id` in `dir` (see [`prepare_dir`]), `size` bytes.
    pub fn create(dir: &Path, task_id: &str, size: u64) -> Result<Scratch, ScratchError> {
        let safe: String = task_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let path = dir.join(format!("{safe}.vol"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        // Drawn here, held only by this value, zeroized as it goes out of scope.
        let k = kms::aead::random_key();
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, k.as_ref()).map_err(|_| ScratchError::Seal(0))?,
        );
        Ok(Scratch {
            path,
            file,
            key,
            size,
            runs: Mutex::new(Runs::default()),
            open: None,
            next: 0,
            cache: Mutex::new(None),
        })
    }

    /// Where the volume lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn nonce(index: u64) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(&index.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn seal(&mut self, index: u64, mut block: Vec<u8>) -> Result<(), ScratchError> {
        if is_zero(&block) {
            return Ok(());
        }
        block.resize(BLOCK_LEN, 0);
        self.key
            .seal_in_place_append_tag(
                Self::nonce(index),
                Aad::from(index.to_be_bytes()),
                &mut block,
            )
            .map_err(|_| ScratchError::Seal(index))?;
        if !self.runs_mut().insert(index) {
            return Err(ScratchError::Order {
                offset: index * BLOCK,
                len: BLOCK_LEN,
                size: self.size,
            });
        }
        self.file
            .write_all_at(&block, index * SLOT)
            .map_err(io_err(&self.path))?;
        Ok(())
    }

    fn runs_mut(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `data` at `offset` from any thread: `offset` is a multiple of [`BLOCK`] and
    /// `data` whole blocks (the last may end at the end of the volume). All-zero blocks are
    /// skipped; each other block is sealed on the calling thread and written to its slot.
    /// A block already written is refused (its nonce would be reused), so callers write
    /// disjoint ranges, e.g. the chunks of a decoded disk from several threads.
    pub fn put_blocks(&self, data: &[u8], offset: u64) -> Result<(), ScratchError> {
        let order = || ScratchError::Order {
            offset,
            len: data.len(),
            size: self.size,
        };
        let end = offset.checked_add(data.len() as u64).ok_or_else(order)?;
        if !offset.is_multiple_of(BLOCK)
            || end > self.size
            || (!end.is_multiple_of(BLOCK) && end != self.size)
        {
            return Err(order());
        }
        // Consecutive slots are consecutive in the file: a run of non-zero blocks is sealed
        // into one buffer and written with one call (a call per 64 KiB block cost more in
        // system time than the copy).
        let slot = usize::try_from(SLOT).unwrap_or(0);
        let mut run: Vec<u8> = Vec::with_capacity(data.len().div_ceil(BLOCK_LEN) * slot);
        let mut run_start = 0u64;
        for (n, block) in data.chunks(BLOCK_LEN).enumerate() {
            let index = offset / BLOCK + n as u64;
            if is_zero(block) {
                self.write_run(&mut run, run_start)?;
                continue;
            }
            if !self.runs_mut().insert(index) {
                return Err(order());
            }
            if run.is_empty() {
                run_start = index;
            }
            let at = run.len();
            run.extend_from_slice(block);
            run.resize(at + BLOCK_LEN, 0);
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    Self::nonce(index),
                    Aad::from(index.to_be_bytes()),
                    &mut run[at..],
                )
                .map_err(|_| ScratchError::Seal(index))?;
            run.extend_from_slice(tag.as_ref());
        }
        self.write_run(&mut run, run_start)
    }

    /// Writes the sealed slots gathered in `run` from slot `first` on, and empties it.
    fn write_run(&self, run: &mut Vec<u8>, first: u64) -> Result<(), ScratchError> {
        if !run.is_empty() {
            self.file
                .write_all_at(run, first * SLOT)
                .map_err(io_err(&self.path))?;
            run.clear();
        }
        Ok(())
    }

    /// Writes `data` at `offset`. Offsets never go back: each write starts at or after the
    /// end of the previous one.
    pub fn write_at(&mut self, mut data: &[u8], mut offset: u64) -> Result<(), ScratchError> {
        let end = offset.checked_add(data.len() as u64);
        if offset < self.next || end.is_none_or(|e| e > self.size) {
            return Err(ScratchError::Order {
                offset,
                len: data.len(),
                size: self.size,
            });
        }
        while !data.is_empty() {
            let index = offset / BLOCK;
            if let Some((i, _)) = &self.open
                && *i != index
            {
                let (i, b) = self.open.take().unwrap_or_default();
                self.seal(i, b)?;
            }
            let (_, buf) = self
                .open
                .get_or_insert_with(|| (index, Vec::with_capacity(BLOCK_LEN)));
            let within = usize::try_from(offset % BLOCK).unwrap_or(0);
            if buf.len() < within {
                buf.resize(within, 0);
            }
            let n = data.len().min(BLOCK_LEN - within);
            buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            offset += n as u64;
        }
        self.next = offset;
        Ok(())
    }

    /// Seals the last block; the volume is then read-only. Nothing is flushed to disk: only
    /// this process reads the volume (through the page cache), and after a crash it is
    /// unreadable anyway (its key died with the process) and swept at the next start, so
    /// waiting for the disk would buy nothing.
    pub fn finish(&mut self) -> Result<(), ScratchError> {
        if let Some((i, b)) = self.open.take() {
            self.seal(i, b)?;
        }
        self.next = self.size;
        Ok(())
    }

    /// The first run of written blocks that ends after block `index`.
    fn run_after(&self, index: u64) -> Option<(u64, u64)> {
        self.runs_mut().after(index)
    }

    /// Calls `f` with the plaintext of block `index` (zeros for a block never written),
    /// decrypting it only when it is not the block last read.
    fn with_block<R>(&self, index: u64, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        static ZEROS: [u8; BLOCK_LEN] = [0; BLOCK_LEN];
        if self.run_after(index).is_none_or(|(start, _)| start > index) {
            return Ok(f(&ZEROS));
        }
        // The lock is held only to look at and refill the one-block cache; reading and
        // decrypting happen outside it, so parallel readers do not queue behind each other.
        let mut buf = {
            let mut cache = self
                .cache
                .lock()
                .map_err(|_| io::Error::other("intermediate volume cache poisoned"))?;
            if let Some((i, b)) = &*cache
                && *i == index
            {
                return Ok(f(b));
            }
            cache.take().map(|(_, b)| b).unwrap_or_default()
        };
        buf.resize(usize::try_from(SLOT).unwrap_or(0), 0);
        self.file.read_exact_at(&mut buf, index * SLOT)?;
        let n = self
            .key
            .open_in_place(Self::nonce(index), Aad::from(index.to_be_bytes()), &mut buf)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("intermediate volume block {index} failed authentication"),
                )
            })?
            .len();
        buf.truncate(n);
        let r = f(&buf);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((index, buf));
        }
        Ok(r)
    }
}

impl diskfmt::ReadAt for Scratch {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = usize::try_from((self.size - offset).min(buf.len() as u64)).unwrap_or(0);
        let mut done = 0;
        while done < n {
            let at = offset + done as u64;
            let within = usize::try_from(at % BLOCK).unwrap_or(0);
            let dst = &mut buf[done..n];
            done += self.with_block(at / BLOCK, |block| {
                let take = (block.len() - within).min(dst.len());
                dst[..take].copy_from_slice(&block[within..within + take]);
                take
            })?;
        }
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        if offset >= self.size {
            return Ok(None);
        }
        Ok(self.run_after(offset / BLOCK).map(|(start, end)| {
            (
                (start * BLOCK).max(offset),
                end.saturating_mul(BLOCK).min(self.size),
            )
        }))
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Disjoint runs `[start, end)` of block numbers, keyed by start; touching runs merge.
#[derive(Debug, Default)]
struct Runs(BTreeMap<u64, u64>);

impl Runs {
    /// Adds block `i`; false if it is already there.
    fn insert(&mut self, i: u64) -> bool {
        let before = self.0.range(..=i).next_back().map(|(&s, &e)| (s, e));
        if let Some((_, e)) = before
            && e > i
        {
            return false;
        }
        let after = self.0.get(&(i + 1)).copied();
        match (before, after) {
            (Some((s, e)), Some(ae)) if e == i => {
                self.0.remove(&(i + 1));
                self.0.insert(s, ae);
            }
            (Some((s, e)), None) if e == i => {
                self.0.insert(s, i + 1);
            }
            (_, Some(ae)) => {
                self.0.remove(&(i + 1));
                self.0.insert(i, ae);
            }
            _ => {
                self.0.insert(i, i + 1);
            }
        }
        true
    }

    /// The first run that ends after block `i`.
    fn after(&self, i: u64) -> Option<(u64, u64)> {
        if let Some((&s, &e)) = self.0.range(..=i).next_back()
            && e > i
        {
            return Some((s, e));
        }
        self.0
            .range(i.saturating_add(1)..)
            .next()
            .map(|(&s, &e)| (s, e))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.path.display(), error = %e, "could not delete an intermediate volume");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;
    use diskfmt::ReadAt;

    #[test]
    fn test_scratch_round_trip_holes_encryption_and_destruction() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        prepare_dir(&scratch).unwrap();
        let size = 20 * BLOCK + 12_345;
        let mut expect = vec![0u8; size as usize];
        let marker = b"PLAINTEXT-MARKER-vmie-scratch-0123456789";
        let mut v = Scratch::create(&scratch, "import-ami-0123456789abcdef0", size).unwrap();
        // Unaligned writes, in order, with holes between them, crossing block edges.
        let mut at = 1000u64;
        for (i, len) in [5000usize, 70_000, 3, 200_000].into_iter().enumerate() {
            let mut data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8 | 1).collect();
            data[..marker.len().min(len)].copy_from_slice(&marker[..marker.len().min(len)]);
            v.write_at(&data, at).unwrap();
            expect[at as usize..at as usize + len].copy_from_slice(&data);
            at += len as u64 + 3 * BLOCK;
        }
        // Going back is refused.
        assert!(matches!(
            v.write_at(b"x", 0),
            Err(ScratchError::Order { .. })
        ));
        v.finish().unwrap();
        let mut got = vec![0u8; size as usize];
        assert_eq!(v.read_at(&mut got, 0).unwrap(), size as usize);
        assert_eq!(got, expect);
        // Holes are reported; data regions cover every non-zero byte.
        let mut regions = Vec::new();
        let mut o = 0;
        while let Some((s, e)) = v.next_data(o).unwrap() {
            regions.push((s, e));
            o = e;
        }
        assert!(regions.len() >= 3 && (regions.iter().map(|(s, e)| e - s).sum::<u64>()) < size);
        for (i, b) in expect.iter().enumerate() {
            if *b != 0 {
                assert!(regions.iter().any(|(s, e)| (*s..*e).contains(&(i as u64))));
            }
        }
        // On disk: no plaintext, mode 0600 in a 0700 folder.
        let raw = std::fs::read(v.path()).unwrap();
        assert!(!raw.windows(marker.len()).any(|w| w == marker));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(v.path()), 0o600);
        assert_eq!(mode(&scratch), 0o700);
        // A flipped byte on disk fails authentication, never returns wrong data.
        let path = v.path().to_path_buf();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[raw[9] ^ 1], 9).unwrap();
        let mut b = vec![0u8; 100];
        let e = v.read_at(&mut b, 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Dropped: gone.
        drop(v);
        assert!(!path.exists());
    }

    #[test]
    fn test_put_blocks_from_several_threads_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        prepare_dir(dir.path()).unwrap();
        let size = 64 * BLOCK + 1000;
        let v = Scratch::create(dir.path(), "import-ami-00000000000000002", size).unwrap();
        let piece = 4 * BLOCK;
        let pieces = size.div_ceil(piece);
        let content = |i: u64| -> Vec<u8> {
            let len = piece.min(size - i * piece) as usize;
            let mut b: Vec<u8> = (0..len).map(|j| (j as u64 * 31 + i) as u8 | 1).collect();
            // Every third piece starts with a zero block, every fifth is all zero ...
            if i.is_multiple_of(3) && len > BLOCK as usize {
                b[..BLOCK as usize].fill(0);
            }
            // ... and others one in the middle (two runs of sealed blocks in one call).
            if i % 3 == 1 && len > 3 * BLOCK as usize {
                b[2 * BLOCK as usize..3 * BLOCK as usize].fill(0);
            }
            if i.is_multiple_of(5) {
                b.fill(0);
            }
            b
        };
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let v = &v;
                s.spawn(move || {
                    // Each thread takes every third piece, from the end backwards.
                    for i in (0..pieces).rev().filter(|i| i % 3 == t) {
                        v.put_blocks(&content(i), i * piece).unwrap();
                    }
                });
            }
        });
        let mut want = Vec::new();
        for i in 0..pieces {
            want.extend(content(i));
        }
        let mut got = vec![0u8; size as usize];
        assert_eq!(v.read_at(&mut got, 0).unwrap(), size as usize);
        assert!(got == want);
        // The extent map covers every non-zero byte and skips the all-zero pieces.
        let mut covered = 0;
        let mut o = 0;
        while let Some((s, e)) = v.next_data(o).unwrap() {
            assert!(want[o as usize..s as usize].iter().all(|&b| b == 0));
            covered += e - s;
            o = e;
        }
        assert!(want[o as usize..].iter().all(|&b| b == 0));
        assert!(covered < size);
        // A block written twice would reuse its nonce: refused. Unaligned writes too.
        assert!(matches!(
            v.put_blocks(&content(1), piece),
            Err(ScratchError::Order { .. })
        ));
        assert!(matches!(
            v.put_blocks(&[1u8; 10], 5),
            Err(ScratchError::Order { .. })
        ));
    }

    #[test]
    fn test_runs_merge_and_refuse_duplicates() {
        let mut r = Runs::default();
        for i in [5, 7, 6, 1, 0, 9] {
            assert!(r.insert(i));
        }
        assert!(!r.insert(6) && !r.insert(0));
        assert_eq!(
            r.0.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(),
            [(0, 2), (5, 8), (9, 10)]
        );
        assert_eq!(r.after(3), Some((5, 8)));
        assert_eq!(r.after(6), Some((5, 8)));
        assert_eq!(r.after(8), Some((9, 10)));
        assert_eq!(r.after(10), None);
    }

    #[test]
    fn test_sweep_destroys_volumes_left_by_a_dead_process() {
        let dir = tempfile::tempdir().unwrap();
        prepare_dir(dir.path()).unwrap();
        let mut v =
            Scratch::create(dir.path(), "import-snap-00000000000000001", BLOCK * 2).unwrap();
        v.write_at(&[7u8; 100], 0).unwrap();
        v.finish().unwrap();
        // As if the process died: the file stays, the key is gone.
        std::mem::forget(v);
        std::fs::write(dir.path().join("keep.txt"), b"not ours").unwrap();
        let gone = sweep(dir.path()).unwrap();
        assert_eq!(gone, vec!["import-snap-00000000000000001.vol".to_string()]);
        assert!(dir.path().join("keep.txt").exists());
        assert!(sweep(&dir.path().join("absent")).unwrap().is_empty());
    }
}
