//! Conversion of any [`Disk`] to a sparse raw file: holes stay holes, memory stays constant
//! whatever the image size, and every core reads (and so inflates) its own ranges in parallel.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::disk::{Disk, ExtentKind};
use crate::error::{DiskError, Result};

/// Options of [`convert_to_raw`].
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Worker threads (default: the number of cores).
    pub threads: usize,
    /// Bytes each worker reads at once (default 2 MiB). Memory use is about
    /// `threads * chunk_size` plus the readers' metadata caches.
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

fn is_zero(b: &[u8]) -> bool {
    b.chunks(256)
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Writes the virtual disk to `out` (a new, empty file) as raw bytes. Data extents are read by
/// `opts.threads` workers, each into its own buffer, and written at their offsets; zero extents
/// and all-zero blocks are never written. `progress` grows to the virtual size. On error the
/// output is incomplete and the caller removes it.
pub fn convert_to_raw(
    disk: &dyn Disk,
    out: &File,
    opts: &ConvertOptions,
    progress: &AtomicU64,
) -> Result<ConvertStats> {
    let size = disk.virtual_size();
    out.set_len(size)
        .map_err(|e| DiskError::io("setting the output size", e))?;
    let chunk = opts.chunk_size.max(opts.zero_block).max(512);
    let zero_block = opts.zero_block.max(512);
    let plan = Mutex::new(Plan {
        disk,
        next: 0,
        pending: VecDeque::new(),
        chunk: chunk as u64,
    });
    let written = AtomicU64::new(0);
    let data = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<DiskError>> = Mutex::new(None);
    let fail = |e: DiskError| {
        stop.store(true, Ordering::Relaxed);
        let mut g = first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.is_none() {
            *g = Some(e);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; chunk];
                while !stop.load(Ordering::Relaxed) {
                    let next = plan
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next(progress, &data);
                    let (off, len) = match next {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(e) => return fail(e),
                    };
                    // `len` is at most one chunk, so it fits in usize.
                    let len = usize::try_from(len).unwrap_or(chunk).min(chunk);
                    let b = &mut buf[..len];
                    if let Err(e) = disk.read_at(b, off) {
                        return fail(e);
                    }
                    if let Err(e) = write_nonzero(out, b, off, zero_block, &written) {
                        return fail(e);
                    }
                    progress.fetch_add(len as u64, Ordering::Relaxed);
                }
            });
        }
    });
    if let Some(e) = first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        return Err(e);
    }
    Ok(ConvertStats {
        virtual_size: size,
        written: written.into_inner(),
        data: data.into_inner(),
    })
}

/// Writes the runs of `b` that are not all-zero `zero_block`s at `off`.
fn write_nonzero(
    out: &File,
    b: &[u8],
    off: u64,
    zero_block: usize,
    written: &AtomicU64,
) -> Result<()> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0usize;
    let flush = |start: usize, end: usize| -> Result<()> {
        let at = off + start as u64;
        out.write_all_at(&b[start..end], at)
            .map_err(|e| DiskError::io(format!("writing the output at offset {at}"), e))?;
        written.fetch_add((end - start) as u64, Ordering::Relaxed);
        Ok(())
    };
    while pos < b.len() {
        let end = (pos + zero_block).min(b.len());
        if is_zero(&b[pos..end]) {
            if let Some(st) = run_start.take() {
                flush(st, pos)?;
            }
        } else if run_start.is_none() {
            run_start = Some(pos);
        }
        pos = end;
    }
    if let Some(st) = run_start {
        flush(st, b.len())?;
    }
    Ok(())
}
