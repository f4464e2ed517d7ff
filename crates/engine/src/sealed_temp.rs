//! An encrypted temporary output: where an export's writer puts the image when the image is
//! not itself the file published — an export into an S3 bucket (uploaded at the end), into a
//! bucket kept encrypted at rest (sealed under the object's own key at the end), and an OVA's
//! VMDK (made before the archive). The image on its way out is never on disk in plaintext;
//! the writers see a [`diskfmt::write::Output`] like a file.
//!
//! - **Unnamed** (`O_TMPFILE` in the intermediate volumes' folder, mode 0700): no path to
//!   open it by; the system removes it when the last handle closes, whatever ends the task,
//!   a crash included.
//! - **Encrypted with a throw-away key** (AES-256-GCM, drawn when the output is made, held
//!   only in this process's memory). The output is cut into 64 KiB blocks, each stored in a
//!   slot of its own: the nonce, the sealed block, its tag. Writers write some places twice
//!   (a header once more at the end, a table after its data), so a block may be sealed again:
//!   every sealing takes the next value of a counter as its nonce (never one twice under the
//!   key); the block's number is its associated data, so a slot moved or altered on disk fails
//!   to open.
//! - **Sparse**: a block never written is not stored and reads as zeros.
//! - Writes of whole blocks from several threads go straight to their slots; a write covering
//!   part of a block reads, changes and seals the block again under one lock, so two writes
//!   sharing a block (each thread's end of its range) do not lose each other's bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use diskfmt::write::Output;

const BLOCK_LEN: usize = 64 * 1024;
const BLOCK: u64 = BLOCK_LEN as u64;
const TAG: usize = 16;
const SLOT_LEN: usize = NONCE_LEN + BLOCK_LEN + TAG;
const SLOT: u64 = SLOT_LEN as u64;
/// Blocks read with one call at most (2 MiB of plaintext).
const READ_RUN: u64 = 32;

/// See the [module](self) documentation. Clones are handles on the same output.
#[derive(Clone)]
pub struct SealedTemp {
    inner: Arc<Inner>,
}

struct Inner {
    file: File,
    key: LessSafeKey,
    /// The next nonce.
    counter: AtomicU64,
    /// Size and which blocks are stored; also held across a read-change-seal of a block.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    len: u64,
    /// Bit `i` set: block `i` is stored.
    stored: Vec<u64>,
}

impl State {
    fn is_stored(&self, i: u64) -> bool {
        usize::try_from(i / 64)
            .ok()
            .and_then(|w| self.stored.get(w))
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn mark(&mut self, i: u64) -> io::Result<()> {
        let w = usize::try_from(i / 64).map_err(|_| io::Error::other("block number too large"))?;
        if self.stored.len() <= w {
            self.stored.resize(w + 1, 0);
        }
        self.stored[w] |= 1 << (i % 64);
        Ok(())
    }

    /// Forgets the blocks from `first` on.
    fn forget_from(&mut self, first: u64) {
        let w = usize::try_from(first / 64).unwrap_or(usize::MAX);
        if w < self.stored.len() {
            self.stored[w] &= (1u64 << (first % 64)) - 1;
            self.stored.truncate(w + 1);
        }
    }
}

impl std::fmt::Debug for SealedTemp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedTemp").finish_non_exhaustive()
    }
}

impl SealedTemp {
    /// A new, empty output in `dir` (the intermediate volumes' folder).
    pub fn create(dir: &Path) -> io::Result<SealedTemp> {
        let file = diskfmt::write::temp_file_in(dir)?;
        // Drawn here, held only by this value; the raw bytes are zeroized right away.
        let k = kms::aead::random_key();
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, k.as_ref())
                .map_err(|_| io::Error::other("the temporary output's key was refused"))?,
        );
        Ok(SealedTemp {
            inner: Arc::new(Inner {
                file,
                key,
                counter: AtomicU64::new(1),
                state: Mutex::default(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Seals `plain` (one block, zero-padded) as block `index` into `slot`.
    fn seal_into(&self, index: u64, plain: &[u8], slot: &mut Vec<u8>) -> io::Result<()> {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let at = slot.len();
        slot.extend_from_slice(&nonce);
        slot.extend_from_slice(plain);
        slot.resize(at + NONCE_LEN + BLOCK_LEN, 0);
        let tag = self
            .inner
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(index.to_be_bytes()),
                &mut slot[at + NONCE_LEN..],
            )
            .map_err(|_| io::Error::other(format!("block {index} could not be sealed")))?;
        slot.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens the slot of block `index` in place; returns its plaintext.
    fn open_slot<'a>(&self, index: u64, slot: &'a mut [u8]) -> io::Result<&'a [u8]> {
        let (nonce, sealed) = slot.split_at_mut(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| io::Error::other("bad nonce"))?;
        self.inner
            .key
            .open_in_place(nonce, Aad::from(index.to_be_bytes()), sealed)
            .map(|p| &*p)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("temporary output block {index} failed authentication"),
                )
            })
    }

    /// The plaintext of block `index` (zeros if never stored) into `out` (a whole block).
    fn read_block(&self, st: &State, index: u64, out: &mut [u8]) -> io::Result<()> {
        if !st.is_stored(index) {
            out.fill(0);
            return Ok(());
        }
        let mut slot = vec![0u8; SLOT_LEN];
        self.inner.file.read_exact_at(&mut slot, index * SLOT)?;
        out.copy_from_slice(self.open_slot(index, &mut slot)?);
        Ok(())
    }

    /// Writes `data` into block `index` from `within` on: read, change, seal again, all
    /// under the state's lock. A block left all zeros is still stored (it may hide older
    /// bytes).
    fn patch_block(&self, index: u64, within: usize, data: &[u8]) -> io::Result<()> {
        let mut st = self.state();
        let mut plain = vec![0u8; BLOCK_LEN];
        self.read_block(&st, index, &mut plain)?;
        plain[within..within + data.len()].copy_from_slice(data);
        let mut slot = Vec::with_capacity(SLOT_LEN);
        self.seal_into(index, &plain, &mut slot)?;
        self.inner.file.write_all_at(&slot, index * SLOT)?;
        st.mark(index)
    }

    /// Writes whole blocks from `first` on, sealed into consecutive slots with one call.
    fn put_whole(&self, first: u64, data: &[u8]) -> io::Result<()> {
        let mut run = Vec::with_capacity(data.len() / BLOCK_LEN * SLOT_LEN);
        for (n, block) in data.chunks(BLOCK_LEN).enumerate() {
            self.seal_into(first + n as u64, block, &mut run)?;
        }
        self.inner.file.write_all_at(&run, first * SLOT)?;
        let mut st = self.state();
        for n in 0..data.len() / BLOCK_LEN {
            st.mark(first + n as u64)?;
        }
        Ok(())
    }
}

impl Output for SealedTemp {
    fn put_at(&self, mut data: &[u8], mut offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::other("write past the largest offset"))?;
        while !data.is_empty() {
            let index = offset / BLOCK;
            let within = usize::try_from(offset % BLOCK).unwrap_or(0);
            let n = if within == 0 && data.len() >= BLOCK_LEN {
                // Whole blocks, up to 2 MiB at a time.
                let n = (data.len() / BLOCK_LEN).min(32) * BLOCK_LEN;
                self.put_whole(index, &data[..n])?;
                n
            } else {
                let n = data.len().min(BLOCK_LEN - within);
                self.patch_block(index, within, &data[..n])?;
                n
            };
            data = &data[n..];
            offset += n as u64;
        }
        let mut st = self.state();
        st.len = st.len.max(end);
        Ok(())
    }

    fn get_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        let st = self.state();
        if end.is_none_or(|e| e > st.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end ({})",
                    buf.len(),
                    st.len
                ),
            ));
        }
        let Some(last) = end.filter(|e| *e > offset).map(|e| (e - 1) / BLOCK) else {
            return Ok(());
        };
        let mut slots = Vec::new();
        let (mut done, mut at) = (0usize, offset);
        while done < buf.len() {
            let first = at / BLOCK;
            // Stored blocks in a row are read with one call.
            let mut count = 0;
            while first + count <= last && count < READ_RUN && st.is_stored(first + count) {
                count += 1;
            }
            if count > 0 {
                slots.resize(usize::try_from(count * SLOT).unwrap_or(0), 0);
                self.inner.file.read_exact_at(&mut slots, first * SLOT)?;
            }
            // A block never stored (count 0) reads as zeros.
            for i in 0..count.max(1) {
                let within = usize::try_from(at % BLOCK).unwrap_or(0);
                let n = (buf.len() - done).min(BLOCK_LEN - within);
                let dst = &mut buf[done..done + n];
                if count == 0 {
                    dst.fill(0);
                } else {
                    let s = usize::try_from(i * SLOT).unwrap_or(0);
                    let p = self.open_slot(first + i, &mut slots[s..s + SLOT_LEN])?;
                    dst.copy_from_slice(&p[within..within + n]);
                }
                done += n;
                at += n as u64;
                if done == buf.len() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn set_size(&self, len: u64) -> io::Result<()> {
        let cur = self.state().len;
        if len < cur {
            // Bytes cut off must read as zeros if the output grows again.
            let keep = len.div_ceil(BLOCK);
            self.state().forget_from(keep);
            let within = usize::try_from(len % BLOCK).unwrap_or(0);
            if within != 0 && self.state().is_stored(len / BLOCK) {
                self.patch_block(len / BLOCK, within, &vec![0u8; BLOCK_LEN - within])?;
            }
            self.inner.file.set_len(keep * SLOT)?;
        }
        self.state().len = len;
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn share(&self) -> io::Result<Arc<dyn Output>> {
        Ok(Arc::new(self.clone()))
    }

    fn granularity(&self) -> usize {
        BLOCK_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| u8::try_from((i * 7 + usize::from(seed) * 13) % 251).unwrap() | 1)
            .collect()
    }

    /// The output and a plain vector given the same writes read the same.
    fn same(t: &SealedTemp, want: &[u8]) {
        assert_eq!(t.size().unwrap(), want.len() as u64);
        let mut got = vec![0u8; want.len()];
        t.get_at(&mut got, 0).unwrap();
        assert!(got == want, "the output differs from the writes");
        // And in odd pieces.
        for (off, n) in [(1usize, 70_000usize), (65_535, 2), (131_072, 65_536)] {
            if off + n <= want.len() {
                let mut part = vec![0u8; n];
                t.get_at(&mut part, off as u64).unwrap();
                assert!(part == want[off..off + n], "at {off}+{n}");
            }
        }
    }

    #[test]
    fn writes_anywhere_read_back_as_written_and_nothing_is_plain_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let t = SealedTemp::create(dir.path()).unwrap();
        let mut want = vec![0u8; 0];
        let mut put = |t: &SealedTemp, off: usize, data: &[u8]| {
            t.put_at(data, off as u64).unwrap();
            if want.len() < off + data.len() {
                want.resize(off + data.len(), 0);
            }
            want[off..off + data.len()].copy_from_slice(data);
        };
        // A header, whole blocks after a gap, an unaligned run, the header again.
        put(&t, 0, &pattern(512, 1));
        put(&t, 3 * BLOCK_LEN, &pattern(5 * BLOCK_LEN, 2));
        put(&t, 10 * BLOCK_LEN + 100, &pattern(3 * BLOCK_LEN + 17, 3));
        put(&t, 0, &pattern(300, 4));
        put(&t, 4 * BLOCK_LEN + 5, &pattern(10, 5));
        same(&t, &want);
        // Gaps read as zeros; past the end is refused.
        let mut b = [1u8; 8];
        t.get_at(&mut b, BLOCK).unwrap();
        assert_eq!(b, [0; 8]);
        let e = t.get_at(&mut b, want.len() as u64 - 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // No 16-byte window of what was written appears in the file.
        let mut raw = Vec::new();
        let mut f = t.inner.file.try_clone().unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
        std::io::Read::read_to_end(&mut f, &mut raw).unwrap();
        let needle = &pattern(5 * BLOCK_LEN, 2)[1000..1016];
        assert!(!raw.windows(16).any(|w| w == needle), "plaintext on disk");
    }

    #[test]
    fn cutting_and_growing_again_reads_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let t = SealedTemp::create(dir.path()).unwrap();
        t.put_at(&pattern(4 * BLOCK_LEN, 1), 0).unwrap();
        t.set_size(BLOCK + 10).unwrap();
        t.set_size(3 * BLOCK).unwrap();
        let mut want = pattern(4 * BLOCK_LEN, 1);
        want.truncate(BLOCK_LEN + 10);
        want.resize(3 * BLOCK_LEN, 0);
        same(&t, &want);
    }

    #[test]
    fn neighbouring_writes_from_threads_keep_each_others_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let t = SealedTemp::create(dir.path()).unwrap();
        // Ranges of 100 000 bytes: most blocks are shared by two threads' writes.
        let piece = 100_000usize;
        std::thread::scope(|s| {
            for w in 0..4usize {
                let t = t.share().unwrap();
                s.spawn(move || {
                    for k in (w..64).step_by(4) {
                        t.put_at(
                            &pattern(piece, u8::try_from(k).unwrap()),
                            (k * piece) as u64,
                        )
                        .unwrap();
                    }
                });
            }
        });
        let want: Vec<u8> = (0..64)
            .flat_map(|k| pattern(piece, u8::try_from(k).unwrap()))
            .collect();
        same(&t, &want);
    }

    #[test]
    fn a_raw_disk_of_scattered_pages_is_written_whole() {
        // Pages of data between zero pages, as a used filesystem has them, and a tail that
        // ends inside a block: the raw writer skips zeros in whole 64 KiB blocks here.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        let mut want = vec![0u8; (3 << 20) + 4096];
        for (n, page) in want.chunks_mut(4096).enumerate() {
            if n % 3 == 0 {
                page.fill(u8::try_from(n % 251).unwrap() | 1);
            }
        }
        std::fs::write(&path, &want).unwrap();
        let src: diskfmt::Source = Arc::new(diskfmt::FileSource::open(&path).unwrap());
        let disk = diskfmt::open(src, &diskfmt::Limits::default()).unwrap();
        let t = SealedTemp::create(dir.path()).unwrap();
        let opts = diskfmt::write::WriteOptions::default();
        diskfmt::write_image(&*disk, &t, diskfmt::Format::Raw, &opts, &AtomicU64::new(0)).unwrap();
        same(&t, &want);
    }

    #[test]
    fn a_slot_altered_or_moved_on_disk_fails_to_read() {
        let dir = tempfile::tempdir().unwrap();
        let t = SealedTemp::create(dir.path()).unwrap();
        t.put_at(&pattern(2 * BLOCK_LEN, 1), 0).unwrap();
        let f = &t.inner.file;
        use std::os::unix::fs::FileExt as _;
        let mut slot = vec![0u8; SLOT_LEN];
        f.read_exact_at(&mut slot, 0).unwrap();
        // Block 0's slot copied over block 1's.
        f.write_all_at(&slot, SLOT).unwrap();
        let mut b = vec![0u8; 16];
        let e = t.get_at(&mut b, BLOCK).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // One bit of block 0 flipped.
        slot[NONCE_LEN + 3] ^= 1;
        f.write_all_at(&slot, 0).unwrap();
        assert!(t.get_at(&mut b, 0).is_err());
    }
}
