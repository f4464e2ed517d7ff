//! Conversion of any [`Disk`] to a sparse raw file: holes stay holes, memory stays constant
//! whatever the image size, and every core reads (and so inflates) its own ranges in parallel.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::disk::{Disk, ExtentKind};
use crate::error::{DiskError, Result};
use crate::write::Output;

/// Options of [`convert_to_raw`].
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Worker threads (default: the number of cores).
    pub threads: usize,
    /// Bytes each worker reads at once (default 2 MiB). Memory use is about
    /// `(2 * threads + 1) * chunk_size` plus the readers' metadata caches.
    pub chunk_size: usize,
    /// Granularity of zero detection in data extents; all-zero blocks are left as holes.
    pub zero_block: usize,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            chunk_size: 2 << 20,
            zero_block: 4096,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Size of the virtual disk.
    pub virtual_size: u64,
    /// Bytes written to the output (the rest are holes).
    pub written: u64,
    /// Bytes the extent map listed as data.
    pub data: u64,
}

/// Extents are fetched from the reader in windows this large, so the plan never holds more
/// than one window's worth of extents.
const WINDOW: u64 = 1 << 30;

struct Plan<'a> {
    disk: &'a dyn Disk,
    next: u64,
    pending: VecDeque<(u64, u64)>,
    chunk: u64,
}

impl Plan<'_> {
    /// The next data range to copy, at most one chunk long and chunk-aligned; zero extents
    /// are counted as done in `progress` as they are passed.
    fn next(&mut self, progress: &AtomicU64, data: &AtomicU64) -> Result<Option<(u64, u64)>> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Ok(Some(p));
            }
            let size = self.disk.virtual_size();
            if self.next >= size {
                return Ok(None);
            }
            let len = WINDOW.min(size - self.next);
            let extents = self.disk.extents(self.next, len)?;
            let mut covered = self.next;
            for e in extents {
                if e.offset != covered || e.end() > self.next + len || e.length == 0 {
                    return Err(DiskError::corrupt(
                        self.disk.info().format,
                        format!("extent map is inconsistent at offset {covered}"),
                    ));
                }
                covered = e.end();
                match e.kind {
                    ExtentKind::Zero => {
                        progress.fetch_add(e.length, Ordering::Relaxed);
                    }
                    ExtentKind::Data => {
                        data.fetch_add(e.length, Ordering::Relaxed);
                        let mut off = e.offset;
                        while off < e.end() {
                            let boundary = (off / self.chunk + 1) * self.chunk;
                            let end = boundary.min(e.end());
                            self.pending.push_back((off, end - off));
                            off = end;
                        }
                    }
                }
            }
            if covered != self.next + len {
                return Err(DiskError::corrupt(
                    self.disk.info().format,
                    format!("extent map leaves a gap at offset {covered}"),
                ));
            }
            self.next += len;
        }
    }
}

pub(crate) fn is_zero(b: &[u8]) -> bool {
    b.chunks(256)
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// What the readers of a conversion share.
struct Readers<'a> {
    disk: &'a dyn Disk,
    plan: Mutex<Plan<'a>>,
    /// Empty chunk buffers; their number bounds the memory in use.
    from_pool: Mutex<std::sync::mpsc::Receiver<Vec<u8>>>,
    chunk: usize,
    zero_block: usize,
    progress: &'a AtomicU64,
    /// Bytes the extent map lists as data.
    data: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<DiskError>>,
}

impl Readers<'_> {
    /// Records the first error and stops every thread.
    fn fail(&self, e: DiskError) {
        self.stop.store(true, Ordering::Relaxed);
        let mut g = self
            .first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// A reader: takes the next data range of the plan and a free buffer, reads (and so
    /// decompresses) the range into it, finds its non-zero runs and hands it to the writer.
    fn read_loop(&self, to_writer: &std::sync::mpsc::SyncSender<Filled>) {
        while !self.stop.load(Ordering::Relaxed) {
            let next = self
                .plan
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .next(self.progress, &self.data);
            let (off, len) = match next {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return self.fail(e),
            };
            let Ok(mut buf) = self
                .from_pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recv()
            else {
                return;
            };
            // `len` is at most one chunk, so it fits in usize.
            let len = usize::try_from(len).unwrap_or(self.chunk).min(self.chunk);
            if let Err(e) = self.disk.read_at(&mut buf[..len], off) {
                return self.fail(e);
            }
            let runs = nonzero_runs(&buf[..len], self.zero_block);
            if to_writer
                .send(Filled {
                    off,
                    len,
                    buf,
                    runs,
                })
                .is_err()
            {
                return;
            }
        }
    }

    /// The one writer: writes the non-zero runs of each filled buffer at their offsets (in
    /// any order: `pwrite` to a preallocated, sparse file) and returns the buffer to the pool.
    /// Returns the bytes written.
    fn write_loop(
        &self,
        out: &dyn Output,
        from_readers: std::sync::mpsc::Receiver<Filled>,
        to_pool: &std::sync::mpsc::Sender<Vec<u8>>,
    ) -> u64 {
        let mut written = 0u64;
        for f in from_readers {
            if !self.stop.load(Ordering::Relaxed) {
                for &(a, b) in &f.runs {
                    let at = f.off + a as u64;
                    if let Err(e) = out.put_at(&f.buf[a..b], at) {
                        self.fail(DiskError::io(
                            format!("writing the output at offset {at}"),
                            e,
                        ));
                        break;
                    }
                    written += (b - a) as u64;
                }
                self.progress.fetch_add(f.len as u64, Ordering::Relaxed);
            }
            let _ = to_pool.send(f.buf);
        }
        written
    }
}

/// Writes the virtual disk to `out` (a new, empty file) as raw bytes. Data extents are read
/// (and decompressed) by `opts.threads` workers into pooled buffers and written at their
/// offsets by the calling thread; zero extents and all-zero blocks are never written.
/// `progress` grows to the virtual size. On error the output is incomplete and the caller
/// removes it.
pub fn convert_to_raw(
    disk: &dyn Disk,
    out: &dyn Output,
    opts: &ConvertOptions,
    progress: &AtomicU64,
) -> Result<ConvertStats> {
    let size = disk.virtual_size();
    out.set_size(size)
        .map_err(|e| DiskError::io("setting the output size", e))?;
    // Zero ranges are skipped in blocks of the output's own (an encrypted output seals
    // 64 KiB blocks: skipping 4 KiB pages inside one would have it read and seal the block
    // again for every run).
    let zero_block = opts.zero_block.max(512).max(out.granularity());
    let chunk = opts.chunk_size.max(zero_block).next_multiple_of(zero_block);
    // Readers (one per thread: decompression runs there) hand filled buffers to this thread,
    // the one writer: parallel writes to one file only contend on its inode lock.
    let threads = opts.threads.max(1);
    let (to_writer, from_readers) = std::sync::mpsc::sync_channel::<Filled>(threads * 2);
    let (to_pool, from_pool) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..threads * 2 + 1 {
        let _ = to_pool.send(vec![0u8; chunk]);
    }
    let r = Readers {
        disk,
        plan: Mutex::new(Plan {
            disk,
            next: 0,
            pending: VecDeque::new(),
            chunk: chunk as u64,
        }),
        from_pool: Mutex::new(from_pool),
        chunk,
        zero_block,
        progress,
        data: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_error: Mutex::new(None),
    };
    let written = std::thread::scope(|s| {
        for _ in 0..threads {
            let to_writer = to_writer.clone();
            let r = &r;
            s.spawn(move || r.read_loop(&to_writer));
        }
        drop(to_writer);
        r.write_loop(out, from_readers, &to_pool)
    });
    if let Some(e) = r
        .first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        return Err(e);
    }
    Ok(ConvertStats {
        virtual_size: size,
        written,
        data: r.data.into_inner(),
    })
}

/// A chunk read by a worker, with the ranges of it that are not zero.
struct Filled {
    off: u64,
    len: usize,
    buf: Vec<u8>,
    runs: Vec<(usize, usize)>,
}

/// The ranges of `b` that hold non-zero `zero_block`-sized blocks, merged.
pub(crate) fn nonzero_runs(b: &[u8], zero_block: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        let end = (pos + zero_block).min(b.len());
        if !is_zero(&b[pos..end]) {
            match runs.last_mut() {
                Some(last) if last.1 == pos => last.1 = end,
                _ => runs.push((pos, end)),
            }
        }
        pos = end;
    }
    runs
}
