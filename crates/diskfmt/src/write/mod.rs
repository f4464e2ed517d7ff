//! Writers: any [`Disk`] out as raw, VMDK (stream-optimized), VHD, VHDX, qcow2 or OVA,
//! streaming from the source's extent map (holes are never written as data).
//!
//! Each format's writer is a unit struct implementing [`Writer`], named in the format's row of
//! [`crate::registry::FORMATS`]; [`crate::write_image`] picks it from there. The grain-based
//! writers share one ordered, parallel pipeline, [`ordered_grains`].

pub mod ova;
pub mod qcow2;
pub mod raw;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::sync::atomic::AtomicU64;

use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::format::Format;

/// Options of a writer (`-o key=value,…` on the command line).
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Variant: `streamOptimized` (VMDK), `fixed` / `dynamic` (VHD).
    pub subformat: Option<String>,
    /// Compression: `zlib` / `zstd` (qcow2); VMDK stream-optimized is always deflate.
    pub compression: Option<String>,
    /// VMDK adapter type: `ide` (default), `lsilogic`, `buslogic`, `legacyESX`.
    pub adapter_type: Option<String>,
    /// Worker threads (compression runs on all of them).
    pub threads: usize,
    /// File name of the output (a VMDK names its own extent in its descriptor; an OVA names
    /// its virtual machine and members after it).
    pub name: Option<String>,
    /// Folder for temporary files (OVA: the VMDK made before the archive); default: the
    /// system's temporary folder.
    pub temp_dir: Option<std::path::PathBuf>,
    /// OVA: virtual CPUs to declare (default 1).
    pub cpus: Option<u32>,
    /// OVA: memory in MiB to declare (default 1024).
    pub memory_mib: Option<u64>,
    /// OVA: VMware guest OS type to declare (default `otherGuest64`).
    pub os_type: Option<String>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            subformat: None,
            compression: None,
            adapter_type: None,
            name: None,
            temp_dir: None,
            cpus: None,
            memory_mib: None,
            os_type: None,
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        }
    }
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Virtual size of the disk written.
    pub virtual_size: u64,
    /// Bytes of the output file.
    pub file_size: u64,
}

/// A format's writer. Implementations are unit structs listed in the registry.
pub trait Writer: Sync {
    /// One line describing the output, for `vmie convert --help`.
    fn description(&self) -> &'static str;

    /// Refuses a compression this writer cannot produce (`none` never reaches it).
    fn check_compression(&self, compression: &str) -> Result<()>;

    /// Writes `disk` to `out` (a new, empty file). `progress` grows to the virtual size.
    fn write(
        &self,
        disk: &dyn Disk,
        out: &File,
        opts: &WriteOptions,
        progress: &AtomicU64,
    ) -> Result<WriteStats>;
}

/// The refusal of a compression a format cannot hold, with why.
pub(crate) fn no_compression(format: Format, compression: &str, why: &str) -> DiskError {
    DiskError::unsupported(format, format!("compression {compression:?}: {why}"))
}

/// A disk identifier that differs between images (not a secret).
pub(crate) fn random_id(out: &mut [u8; 16]) {
    use std::hash::{BuildHasher, Hasher};
    for (i, part) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        part.copy_from_slice(&h.finish().to_le_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40; // version 4
    out[8] = (out[8] & 0x3f) | 0x80; // variant
}

/// Bytes of grains one worker processes at a time (at least one grain).
const JOB_BYTES: u64 = 2 << 20;

/// What a writer does to each grain on a worker: `Some(new bytes)`, or `None` to store it as
/// it is.
type GrainWork = dyn Fn(&[u8]) -> Result<Option<Vec<u8>>> + Sync;

/// What a worker made of one grain.
enum Grain {
    /// The grain's own bytes: this range of the job's buffer.
    Same(std::ops::Range<usize>),
    /// New bytes (compressed, or the zero-padded last grain).
    Owned(Vec<u8>),
}

/// Walks the non-zero grains of `disk` (grain size `grain` bytes) in order, with `threads`
/// workers running `work` on each grain's bytes (zero-padded to a full grain at the end of the
/// disk) and `sink` receiving `(grain index, bytes)` in grain order on the calling thread, where
/// the bytes are what `work` returned, or the grain itself when it returned `None` (pass-through
/// writers copy nothing: the sink reads the job's buffer). All-zero grains and zero extents are
/// skipped (zero extents are never read). Memory is bounded: at most `2 * threads + 2` jobs of
/// about [`JOB_BYTES`] are in flight, their buffers reused.
pub(crate) fn ordered_grains(
    disk: &dyn Disk,
    grain: u64,
    threads: usize,
    progress: &AtomicU64,
    work: &GrainWork,
    sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::disk::ExtentKind;

    const WINDOW: u64 = 1 << 30;
    let size = disk.virtual_size();
    let grain_len = usize::try_from(grain)
        .map_err(|_| DiskError::invalid(disk.info().format, "grain too large"))?;
    let per_job = (JOB_BYTES / grain.max(1)).max(1);
    let per_job_usize = usize::try_from(per_job).unwrap_or(1);
    // The plan: jobs (sequence, first grain, grain count) over data extents, in order.
    struct Plan {
        next_window: u64,
        last_grain: Option<u64>,
        jobs: std::collections::VecDeque<(u64, u64)>,
        seq: u64,
    }
    let plan = Mutex::new(Plan {
        next_window: 0,
        last_grain: None,
        jobs: Default::default(),
        seq: 0,
    });
    let next_job = |plan: &Mutex<Plan>| -> Result<Option<(u64, u64, u64)>> {
        let mut p = plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some((g, n)) = p.jobs.pop_front() {
                let seq = p.seq;
                p.seq += 1;
                return Ok(Some((seq, g, n)));
            }
            if p.next_window >= size {
                return Ok(None);
            }
            let w = p.next_window;
            let len = WINDOW.min(size - w);
            for e in disk.extents(w, len)? {
                if e.kind == ExtentKind::Zero {
                    progress.fetch_add(e.length, Ordering::Relaxed);
                    continue;
                }
                let mut g = e.offset / grain;
                if p.last_grain == Some(g) {
                    g += 1;
                }
                let last = (e.end() - 1) / grain;
                while g <= last {
                    let n = per_job.min(last - g + 1);
                    p.jobs.push_back((g, n));
                    g += n;
                }
                p.last_grain = Some(last);
            }
            p.next_window = w + len;
        }
    };

    type Grains = Vec<(u64, Grain)>;
    /// (sequence, bytes covered, the job's buffer, its grains)
    type Done = (u64, u64, Vec<u8>, Grains);
    let job_len = grain_len * per_job_usize;
    let pool: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let threads = threads.max(1);
    let (to_sink, results) = std::sync::mpsc::sync_channel::<Result<Done>>(threads * 2 + 2);
    let (give_token, tokens) = std::sync::mpsc::channel::<()>();
    for _ in 0..threads * 2 + 2 {
        let _ = give_token.send(());
    }
    let tokens = Mutex::new(tokens);
    let stop = AtomicBool::new(false);
    let mut outcome: Result<()> = Ok(());
    std::thread::scope(|s| {
        for _ in 0..threads {
            let to_sink = to_sink.clone();
            let (plan, tokens, stop, pool) = (&plan, &tokens, &stop, &pool);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A token first, then the job: jobs in flight stay bounded and in order.
                    if tokens
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv()
                        .is_err()
                    {
                        return;
                    }
                    let job = match next_job(plan) {
                        Ok(Some(j)) => j,
                        Ok(None) => return,
                        Err(e) => {
                            let _ = to_sink.send(Err(e));
                            return;
                        }
                    };
                    let (seq, g0, n) = job;
                    let run = || -> Result<Done> {
                        let start = g0 * grain;
                        let end = ((g0 + n) * grain).min(size);
                        let len = usize::try_from(end - start).unwrap_or(0);
                        let mut buf = pool
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .pop()
                            .unwrap_or_else(|| vec![0u8; job_len]);
                        let b = &mut buf[..len];
                        disk.read_at(b, start)?;
                        let mut out = Vec::new();
                        for i in 0..n {
                            let lo = usize::try_from(i * grain).unwrap_or(usize::MAX).min(len);
                            let hi = (lo + grain_len).min(len);
                            let chunk = &b[lo..hi];
                            if crate::convert::is_zero(chunk) {
                                continue;
                            }
                            let r = if chunk.len() == grain_len {
                                work(chunk)?.map_or(Grain::Same(lo..hi), Grain::Owned)
                            } else {
                                let mut padded = vec![0u8; grain_len];
                                padded[..chunk.len()].copy_from_slice(chunk);
                                Grain::Owned(work(&padded)?.unwrap_or(padded))
                            };
                            out.push((g0 + i, r));
                        }
                        Ok((seq, end - start, buf, out))
                    };
                    if to_sink.send(run()).is_err() {
                        return;
                    }
                }
            });
        }
        drop(to_sink);
        let mut pending: BTreeMap<u64, (u64, Vec<u8>, Grains)> = BTreeMap::new();
        let mut next = 0u64;
        for r in results {
            let (seq, bytes, buf, grains) = match r {
                Ok(d) => d,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    outcome = Err(e);
                    break;
                }
            };
            pending.insert(seq, (bytes, buf, grains));
            while let Some((bytes, buf, grains)) = pending.remove(&next) {
                let sent = grains.iter().try_for_each(|(gi, g)| {
                    let data = match g {
                        Grain::Same(r) => &buf[r.clone()],
                        Grain::Owned(v) => v.as_slice(),
                    };
                    sink(*gi, data)
                });
                pool.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(buf);
                if let Err(e) = sent {
                    // The output is broken from here on: no later grain, already finished
                    // or not, may reach the sink.
                    stop.store(true, Ordering::Relaxed);
                    outcome = Err(e);
                    break;
                }
                progress.fetch_add(bytes, Ordering::Relaxed);
                next += 1;
                let _ = give_token.send(());
            }
            if outcome.is_err() {
                break;
            }
        }
        // Unblock workers waiting for a token so the scope can end.
        stop.store(true, Ordering::Relaxed);
        drop(give_token);
    });
    outcome
}
