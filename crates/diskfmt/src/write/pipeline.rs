//! The ordered grain pipeline every grain-based writer (VMDK, VHD, VHDX, qcow2) runs on:
//! workers read and transform (compress) grains in parallel, one thread hands them to the
//! writer in grain order.
//!
//! Why this shape: compression is the expensive part and parallelizes per grain, but every
//! format lays grains out in order, so the writing must be sequential. Jobs of about
//! [`JOB_BYTES`] carry a sequence number; a bounded number of tokens keeps at most
//! `2 * threads + 2` jobs (and their buffers, which are reused) in flight whatever the disk
//! size; finished jobs wait in a map until their turn.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::convert::is_zero;
use crate::disk::{Disk, ExtentKind};
use crate::error::{DiskError, Result};

/// Bytes of grains one worker processes at a time (at least one grain).
const JOB_BYTES: u64 = 2 << 20;
/// Extents are planned in windows this large, so the plan stays small for any disk.
const WINDOW: u64 = 1 << 30;

/// What a writer does to each grain on a worker: `Some(new bytes)`, or `None` to store it as
/// it is.
pub(crate) type GrainWork = dyn Fn(&[u8]) -> Result<Option<Vec<u8>>> + Sync;

/// What a worker made of one grain.
enum Grain {
    /// The grain's own bytes: this range of the job's buffer.
    Same(std::ops::Range<usize>),
    /// New bytes (compressed, or the zero-padded last grain).
    Owned(Vec<u8>),
}

/// A run of `count` grains from grain `first`, the `seq`-th job handed out.
struct Job {
    seq: u64,
    first: u64,
    count: u64,
}

/// A finished job: the bytes of the disk it covered, its buffer (returned to the pool once
/// the sink has the grains) and its non-zero grains.
struct Done {
    seq: u64,
    bytes: u64,
    buf: Vec<u8>,
    grains: Vec<(u64, Grain)>,
}

/// The jobs still to hand out, planned one window of the extent map at a time.
#[derive(Default)]
struct Plan {
    next_window: u64,
    /// The last grain already planned (an extent may start in it).
    last_grain: Option<u64>,
    jobs: VecDeque<(u64, u64)>,
    seq: u64,
}

/// What the workers share.
struct Pipeline<'a> {
    disk: &'a dyn Disk,
    size: u64,
    grain: u64,
    grain_len: usize,
    per_job: u64,
    progress: &'a AtomicU64,
    work: &'a GrainWork,
    plan: Mutex<Plan>,
    /// Job buffers to reuse.
    pool: Mutex<Vec<Vec<u8>>>,
    stop: AtomicBool,
}

/// Locks `m`, recovering from a poisoned lock: a panic elsewhere cannot leave a plan or a
/// buffer pool in a state that matters here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipeline<'_> {
    /// The next job in disk order, planning the next window of the extent map when the queue
    /// is empty (zero extents are counted as done and never read).
    fn next_job(&self) -> Result<Option<Job>> {
        let mut p = lock(&self.plan);
        loop {
            if let Some((first, count)) = p.jobs.pop_front() {
                let seq = p.seq;
                p.seq += 1;
                return Ok(Some(Job { seq, first, count }));
            }
            if p.next_window >= self.size {
                return Ok(None);
            }
            self.plan_window(&mut p)?;
        }
    }

    /// Splits the data extents of the next window into jobs of at most `per_job` grains.
    fn plan_window(&self, p: &mut Plan) -> Result<()> {
        let w = p.next_window;
        let len = WINDOW.min(self.size - w);
        for e in self.disk.extents(w, len)? {
            if e.kind == ExtentKind::Zero {
                self.progress.fetch_add(e.length, Ordering::Relaxed);
                continue;
            }
            let mut g = e.offset / self.grain;
            if p.last_grain == Some(g) {
                g += 1;
            }
            let last = (e.end() - 1) / self.grain;
            while g <= last {
                let n = self.per_job.min(last - g + 1);
                p.jobs.push_back((g, n));
                g += n;
            }
            p.last_grain = Some(last);
        }
        p.next_window = w + len;
        Ok(())
    }

    /// Reads the job's grains into a pooled buffer and runs the work on each non-zero one
    /// (the last grain of the disk zero-padded to a full grain).
    fn run(&self, job: &Job) -> Result<Done> {
        let start = job.first * self.grain;
        let end = ((job.first + job.count) * self.grain).min(self.size);
        let len = usize::try_from(end - start).unwrap_or(0);
        let job_len = self.grain_len * usize::try_from(self.per_job).unwrap_or(1);
        let mut buf = lock(&self.pool).pop().unwrap_or_else(|| vec![0u8; job_len]);
        let b = &mut buf[..len];
        self.disk.read_at(b, start)?;
        let mut grains = Vec::new();
        for i in 0..job.count {
            let lo = usize::try_from(i * self.grain)
                .unwrap_or(usize::MAX)
                .min(len);
            let hi = (lo + self.grain_len).min(len);
            let chunk = &b[lo..hi];
            if is_zero(chunk) {
                continue;
            }
            let g = if chunk.len() == self.grain_len {
                (self.work)(chunk)?.map_or(Grain::Same(lo..hi), Grain::Owned)
            } else {
                let mut padded = vec![0u8; self.grain_len];
                padded[..chunk.len()].copy_from_slice(chunk);
                Grain::Owned((self.work)(&padded)?.unwrap_or(padded))
            };
            grains.push((job.first + i, g));
        }
        Ok(Done {
            seq: job.seq,
            bytes: end - start,
            buf,
            grains,
        })
    }

    /// A worker: a token first, then a job (so jobs in flight stay bounded and are taken in
    /// order), until the plan is done, the sink stops or a read fails.
    fn worker(&self, tokens: &Mutex<Receiver<()>>, to_sink: &SyncSender<Result<Done>>) {
        while !self.stop.load(Ordering::Relaxed) {
            if lock(tokens).recv().is_err() {
                return;
            }
            let job = match self.next_job() {
                Ok(Some(j)) => j,
                Ok(None) => return,
                Err(e) => {
                    let _ = to_sink.send(Err(e));
                    return;
                }
            };
            if to_sink.send(self.run(&job)).is_err() {
                return;
            }
        }
    }

    /// Hands finished jobs to `sink` in sequence order, returning a token per job. The first
    /// error (a read, the work or the sink) ends it: nothing after it reaches the sink.
    fn drain(
        &self,
        results: Receiver<Result<Done>>,
        give_token: &Sender<()>,
        sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
        let mut next = 0u64;
        for r in results {
            let done = r?;
            waiting.insert(done.seq, done);
            while let Some(done) = waiting.remove(&next) {
                let sent = done.grains.iter().try_for_each(|(gi, g)| {
                    let data = match g {
                        Grain::Same(r) => &done.buf[r.clone()],
                        Grain::Owned(v) => v.as_slice(),
                    };
                    sink(*gi, data)
                });
                lock(&self.pool).push(done.buf);
                sent?;
                self.progress.fetch_add(done.bytes, Ordering::Relaxed);
                next += 1;
                let _ = give_token.send(());
            }
        }
        Ok(())
    }
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
    let grain_len = usize::try_from(grain)
        .map_err(|_| DiskError::invalid(disk.info().format, "grain too large"))?;
    let p = Pipeline {
        disk,
        size: disk.virtual_size(),
        grain,
        grain_len,
        per_job: (JOB_BYTES / grain.max(1)).max(1),
        progress,
        work,
        plan: Mutex::new(Plan::default()),
        pool: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    };
    let threads = threads.max(1);
    let in_flight = threads * 2 + 2;
    let (to_sink, results) = std::sync::mpsc::sync_channel::<Result<Done>>(in_flight);
    let (give_token, tokens) = std::sync::mpsc::channel::<()>();
    for _ in 0..in_flight {
        let _ = give_token.send(());
    }
    let tokens = Mutex::new(tokens);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let to_sink = to_sink.clone();
            let (p, tokens) = (&p, &tokens);
            s.spawn(move || p.worker(tokens, &to_sink));
        }
        drop(to_sink);
        let outcome = p.drain(results, &give_token, sink);
        // Stop the workers: those waiting for a token see the channel close, those sending
        // see the results dropped with `drain`.
        p.stop.store(true, Ordering::Relaxed);
        drop(give_token);
        outcome
    })
}
