//! One pass over a decoded disk, on every core: each chunk of the disk that holds data is
//! decoded once and goes straight to the block store as part of a pending snapshot — and,
//! for import-image, into the task's intermediate volume in the same pass.
//!
//! - [`decode_chunks`] runs `threads` decoders over the chunks the extent map says hold data
//!   (holes are never read) and hands each chunk to a sink; the task's own thread watches
//!   cancel, the lease and progress meanwhile.
//! - import-snapshot has nothing to validate: its sink is the pending snapshot itself
//!   ([`blockstore::SnapshotWriter::write_chunk`]: hash, dedup, compress, seal, upload).
//! - import-image must validate (and boot) the disk before anything is published, and both
//!   need random access: its sink seals the chunk into the intermediate volume and offers it
//!   to the store, which follows behind ([`Trailing`]). A chunk the store has no room for
//!   is read back from the volume later instead of holding up the decoders, so decoding
//!   ends as fast as the cores allow and the store keeps working through validation and the
//!   boot check; `updating` waits for what is left and publishes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockstore::{Buffers, ChunkPlan, SnapshotSummary, SnapshotWriter};
use diskfmt::{Disk, DiskError, ReadAt};

use crate::ctx::Ctx;
use crate::error::Failure;
use crate::scratch::Scratch;

/// How often the task's thread looks at cancel, the lease and progress while others work.
const POLL: Duration = Duration::from_millis(100);

/// The first failure of a group of threads; setting it stops them all.
struct FirstFailure {
    stop: Arc<AtomicBool>,
    first: Mutex<Option<Failure>>,
}

impl FirstFailure {
    fn new(stop: Arc<AtomicBool>) -> Self {
        FirstFailure {
            stop,
            first: Mutex::new(None),
        }
    }

    fn set(&self, f: Failure) {
        self.stop.store(true, Ordering::Relaxed);
        let mut g = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.is_none() {
            *g = Some(f);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn take(self) -> Option<Failure> {
        self.first
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Decodes the chunks of `disk` (chunk size `cs`) that overlap data extents, with the
/// engine's threads, each chunk once, into buffers from `buffers`, and hands them to `sink`
/// (index, bytes) in no particular order. The calling thread reports `on_bytes(bytes
/// decoded)` and stops every decoder on cancel, lease loss or the first failure; `fail_disk`
/// names a decoding error.
pub(crate) fn decode_chunks(
    ctx: &Ctx,
    disk: &dyn Disk,
    cs: u64,
    buffers: &Buffers,
    fail_disk: &(dyn Fn(DiskError) -> Failure + Sync),
    sink: &(dyn Fn(u64, Vec<u8>) -> Result<(), Failure> + Sync),
    on_bytes: &mut dyn FnMut(u64) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let size = disk.virtual_size();
    let plan = Mutex::new(ChunkPlan::new(size, cs));
    let failure = FirstFailure::new(Arc::new(AtomicBool::new(false)));
    let done = AtomicU64::new(0);
    let threads = ctx.inner.cfg.threads.max(1);
    std::thread::scope(|s| {
        // Each decoder holds a sender; when the last one ends, the receiver hears it at once.
        let (alive, ended) = mpsc::channel::<()>();
        for _ in 0..threads {
            let alive = alive.clone();
            let (plan, failure, done) = (&plan, &failure, &done);
            s.spawn(move || {
                let _alive = alive;
                while !failure.stopped() {
                    let next = plan
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next(disk);
                    let index = match next {
                        Ok(Some(i)) => i,
                        Ok(None) => return,
                        Err(e) => return failure.set(fail_disk(e)),
                    };
                    let off = index * cs;
                    let len = cs.min(size - off);
                    let mut buf = buffers.take(usize::try_from(len).unwrap_or(0));
                    if let Err(e) = disk.read_at(&mut buf, off) {
                        return failure.set(fail_disk(e));
                    }
                    if let Err(f) = sink(index, buf) {
                        return failure.set(f);
                    }
                    done.fetch_add(len, Ordering::Relaxed);
                    ctx.inner
                        .stats
                        .bytes_imported
                        .fetch_add(len, Ordering::Relaxed);
                }
            });
        }
        drop(alive);
        loop {
            match ended.recv_timeout(POLL) {
                Err(RecvTimeoutError::Timeout) if !failure.stopped() => {
                    if let Err(f) = on_bytes(done.load(Ordering::Relaxed)) {
                        failure.set(f);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Ok(()) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    if let Some(f) = failure.take() {
        return Err(f);
    }
    on_bytes(done.load(Ordering::Relaxed))
}

/// Chunks handed from the decoders to a [`Trailing`] store: in memory while it keeps up,
/// otherwise only their index (the bytes are in the volume).
pub(crate) struct Feeder {
    tx: SyncSender<(u64, Vec<u8>)>,
    spilled: Arc<Mutex<Vec<u64>>>,
    buffers: Arc<Buffers>,
}

impl Feeder {
    /// The pool the decoders take their buffers from (the store's).
    pub(crate) fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// Offers chunk `index` to the store; never waits.
    pub(crate) fn offer(&self, index: u64, buf: Vec<u8>) -> Result<(), Failure> {
        match self.tx.try_send((index, buf)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full((_, buf))) => {
                self.buffers.give(buf);
                self.spilled
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(index);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(Failure::Server(
                "the snapshot store stopped taking chunks".into(),
            )),
        }
    }
}

/// A disk's pending snapshot, written behind the decoders by threads of its own, from the
/// chunks they offered or, for those it had no room for, from the intermediate volume.
/// Dropped before [`Trailing::finish`], it stops, and the pending snapshot is abandoned.
pub(crate) struct Trailing {
    writer: Option<Arc<SnapshotWriter>>,
    stop: Arc<AtomicBool>,
    failure: Arc<FirstFailure>,
    threads: Vec<std::thread::JoinHandle<()>>,
    handle: tokio::runtime::Handle,
}

impl Trailing {
    /// Starts `threads` store threads for `writer`, reading spilled chunks from `vol`.
    pub(crate) fn start(
        ctx: &Ctx,
        vol: Arc<Scratch>,
        writer: SnapshotWriter,
        threads: usize,
    ) -> (Trailing, Feeder) {
        let buffers = writer.buffers();
        let writer = Arc::new(writer);
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(FirstFailure::new(stop.clone()));
        // Room for two chunks per thread: enough to keep the store busy, little memory.
        let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads.max(1) * 2);
        let rx = Arc::new(Mutex::new(rx));
        let spilled: Arc<Mutex<Vec<u64>>> = Arc::default();
        let mut hs = Vec::new();
        for _ in 0..threads.max(1) {
            let (writer, failure, rx, spilled, vol) = (
                writer.clone(),
                failure.clone(),
                rx.clone(),
                spilled.clone(),
                vol.clone(),
            );
            hs.push(std::thread::spawn(move || {
                if let Err(f) = trail(&writer, &failure, &rx, &spilled, &vol) {
                    writer.stop();
                    failure.set(f);
                }
            }));
        }
        (
            Trailing {
                writer: Some(writer),
                stop,
                failure,
                threads: hs,
                handle: ctx.handle.clone(),
            },
            Feeder {
                tx,
                spilled,
                buffers,
            },
        )
    }

    /// Waits (as `stage`, progress from `pct(bytes done)`) until every chunk is in the
    /// store, then publishes the snapshot.
    pub(crate) fn finish(
        mut self,
        ctx: &Ctx,
        stage: &str,
        pct: &dyn Fn(u64) -> i64,
    ) -> Result<SnapshotSummary, Failure> {
        let Some(writer) = self.writer.clone() else {
            return Err(Failure::Server("the snapshot was already published".into()));
        };
        while self.threads.iter().any(|h| !h.is_finished()) {
            if self.failure.stopped() {
                break;
            }
            ctx.report(stage, pct(writer.done_bytes()))?;
            std::thread::sleep(Duration::from_millis(20));
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        let failure = std::mem::replace(
            &mut self.failure,
            Arc::new(FirstFailure::new(Arc::new(AtomicBool::new(false)))),
        );
        if let Some(f) = Arc::into_inner(failure).and_then(FirstFailure::take) {
            return Err(f);
        }
        drop(writer);
        let writer = self
            .writer
            .take()
            .and_then(Arc::into_inner)
            .ok_or_else(|| Failure::Server("a store thread outlived its snapshot".into()))?;
        ctx.wait(async { Ok(writer.publish().await?) }, None)
    }
}

/// The work of one store thread.
fn trail(
    writer: &SnapshotWriter,
    failure: &FirstFailure,
    rx: &Mutex<mpsc::Receiver<(u64, Vec<u8>)>>,
    spilled: &Mutex<Vec<u64>>,
    vol: &Scratch,
) -> Result<(), Failure> {
    loop {
        if failure.stopped() {
            return Ok(());
        }
        let next = rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        // Disconnected: the decoders are done; what is left is in the volume.
        let Ok((index, buf)) = next else { break };
        writer.write_chunk(index, buf)?;
    }
    loop {
        if failure.stopped() {
            return Ok(());
        }
        let next = spilled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let Some(index) = next else {
            return Ok(());
        };
        let len = writer
            .chunk_len(index)
            .ok_or_else(|| Failure::Server(format!("chunk {index} is past the end")))?;
        let mut buf = writer.buffers().take(len);
        let n = vol
            .read_at(&mut buf, index * writer.chunk_size())
            .map_err(|e| Failure::Server(format!("reading the intermediate volume: {e}")))?;
        if n != len {
            return Err(Failure::Server(
                "the intermediate volume ended early".into(),
            ));
        }
        writer.write_chunk(index, buf)?;
    }
}

impl Drop for Trailing {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        writer.stop();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        if let Some(w) = Arc::into_inner(writer) {
            // On the task's thread (a blocking one): remove the pending marker now.
            self.handle.block_on(w.abort());
        }
    }
}
