//! The least CPU an import of a disk costs the snapshot store, whatever the pipeline around it:
//! every non-zero 1 MiB chunk of a raw disk named (BLAKE3 keyed hash), compressed (zstd at
//! the store's level) and sealed (AES-256-GCM), as `chunk::encode_with` does in every
//! import — in memory, no decoding, no file written, no catalog.
//!
//! `cargo bench -p blockstore --bench chunk_floor -- RAW [THREADS]` prints the time of each
//! step on one core over the whole disk, the wall time of all three on THREADS threads
//! (default: every core) and that of reading the chunks back as an export does (open and
//! decompress each), as one line of JSON too (`scripts/bench-import` prints it beside
//! qemu-img's time for the same disk). `VMIE_SNAPSHOT_ZSTD_LEVEL` sets the level (default 1,
//! the store's default).
//!
//! The disk is read into memory first (untimed), so the figures are CPU only.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use blockstore::Origin;
use blockstore::chunk::{Squeezers, decode_into, encode_with};
use blockstore::naming::Namer;

const CHUNK: usize = 1 << 20;

/// Runs `f(i)` for every `i` below `n`, spread over `threads` threads; returns the seconds.
fn on_threads(threads: usize, n: usize, f: impl Fn(usize) + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    f(i);
                }
            });
        }
    });
    t.elapsed().as_secs_f64()
}

/// Seconds of `f` on this thread, and what it returned.
fn timed<R>(f: impl FnOnce() -> R) -> (f64, R) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

fn origin(index: usize) -> Origin {
    Origin {
        snapshot: "snap-0123456789abcdef0".into(),
        index: index as u64,
    }
}

/// The command line: the disk's path, the threads, the zstd level.
fn settings() -> (String, usize, i32) {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(path) = args.first().cloned() else {
        eprintln!("usage: cargo bench -p blockstore --bench chunk_floor -- RAW [THREADS]");
        std::process::exit(2);
    };
    let threads = args
        .get(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let level: i32 = std::env::var("VMIE_SNAPSHOT_ZSTD_LEVEL")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(blockstore::StoreOptions::default().zstd_level);
    (path, threads, level)
}

fn main() {
    let (path, threads, level) = settings();
    let disk = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("chunk_floor: cannot read {path}: {e}");
        std::process::exit(2);
    });
    let chunks: Vec<&[u8]> = disk
        .chunks(CHUNK)
        .filter(|c| c.iter().any(|&b| b != 0))
        .collect();
    let data: usize = chunks.iter().map(|c| c.len()).sum();
    let namer = Namer::new(2, &[7u8; 32]).unwrap();
    let key = kms::aead::AeadKey::new(&[9u8; 32]);

    // Each step alone, on one core.
    let (hash, names) = timed(|| chunks.iter().map(|c| namer.name(c)).collect::<Vec<_>>());
    let mut zc = zstd::bulk::Compressor::new(level).unwrap();
    let (zstd_s, packed) = timed(|| {
        chunks
            .iter()
            .map(|c| zc.compress(c).unwrap().len())
            .sum::<usize>()
    });
    let (seal, ()) = timed(|| {
        for (i, c) in chunks.iter().enumerate() {
            std::hint::black_box(key.seal(&i.to_be_bytes(), c));
        }
    });

    // All three, as an import does them, on every thread.
    let squeezers = Squeezers::new(level);
    let wall = on_threads(threads, chunks.len(), |i| {
        let name = namer.name(chunks[i]);
        std::hint::black_box(encode_with(&squeezers, &key, &origin(i), &name, chunks[i]));
    });
    // The objects to read back, made again untimed (kept, they would have the timing above
    // pay for fresh memory, which a store writing them out does not).
    let objects: Vec<Mutex<Vec<u8>>> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| Mutex::new(encode_with(&squeezers, &key, &origin(i), &names[i], c)))
        .collect();

    // And back, as an export reads them: each opened (decrypted, authenticated) and
    // decompressed into a buffer of its own, on every thread.
    let read_wall = on_threads(threads, chunks.len(), |i| {
        thread_local! {
            static DST: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
        }
        let mut obj = objects[i].lock().unwrap().clone();
        DST.with_borrow_mut(|dst| {
            let dst = &mut dst[..chunks[i].len()];
            decode_into(&key, &origin(i), &names[i], &mut obj, dst).unwrap();
            assert!(*dst == *chunks[i], "chunk {i} did not come back");
        });
    });
    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    println!(
        "chunk_floor: {} non-zero chunks, {:.0} MiB (zstd level {level}: {:.0} MiB); one core: \
         name {hash:.2} s, compress {zstd_s:.2} s, seal {seal:.2} s; all three on {threads} \
         threads: {wall:.2} s; read back (open, decompress) on {threads} threads: {read_wall:.2} s",
        chunks.len(),
        mib(data),
        mib(packed),
    );
    println!(
        "{{\"chunks\": {}, \"data_bytes\": {data}, \"zstd_level\": {level}, \"name_s\": {hash:.4}, \
         \"compress_s\": {zstd_s:.4}, \"seal_s\": {seal:.4}, \"threads\": {threads}, \"wall_s\": {wall:.4}, \"read_wall_s\": {read_wall:.4}}}",
        chunks.len()
    );
}
