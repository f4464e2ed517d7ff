//! A writer killed mid-snapshot leaves no visible snapshot, and GC collects what it wrote.
#![allow(clippy::cast_possible_truncation, clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::{PutRequest, StoreOptions};
use common::{admin, local_store, make_raw, open_disk};
use diskfmt::{Disk, Extent, ImageInfo};

const CHILD_ENV: &str = "VMIE_CRASH_CHILD_DIR";

fn opts() -> StoreOptions {
    StoreOptions {
        chunk_size: 1 << 16,
        concurrency: 4,
        ..StoreOptions::default()
    }
}

/// A disk that takes its time, so the parent can kill the writer halfway.
struct SlowDisk(Arc<dyn Disk>);

impl Disk for SlowDisk {
    fn info(&self) -> ImageInfo {
        self.0.info()
    }
    fn virtual_size(&self) -> u64 {
        self.0.virtual_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> diskfmt::Result<()> {
        std::thread::sleep(Duration::from_millis(50));
        self.0.read_at(buf, offset)
    }
    fn extents(&self, offset: u64, length: u64) -> diskfmt::Result<Vec<Extent>> {
        self.0.extents(offset, length)
    }
}

/// The child: writes a snapshot slowly until it is killed. Does nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let store = local_store(&dir, opts());
    let disk: Arc<dyn Disk> = Arc::new(SlowDisk(open_disk(&dir.join("disk.raw"))));
    let req = PutRequest {
        snapshot_id: "snap-0000000000000c4a5".into(),
        kms_key: None,
        parent: None,
        caller: admin(),
    };
    store.put(disk, req, None).await.unwrap();
    panic!("the parent should have killed this writer before it finished");
}

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { count_files(&p) } else { 1 })
        .sum()
}

#[test]
fn test_killed_writer_leaves_no_snapshot_and_gc_collects_orphans() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB of incompressible data: 128 chunks at about 50 ms each, 4 at a time: ~1.6 s.
    let data = make_raw(&dir.path().join("disk.raw"), 8 << 20, 77);
    assert!(data.iter().any(|&b| b != 0));
    // Keys and the dedup key exist before the child starts, so only snapshot objects change.
    let chunks_dir = dir.path().join("store/snapshots/chunks");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while count_files(&chunks_dir) < 8 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the writer never started writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer ended by itself"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup runs
    child.wait().unwrap();
    let orphans = count_files(&chunks_dir);
    assert!(orphans >= 8);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = local_store(dir.path(), opts());
        assert!(
            store.list().await.unwrap().is_empty(),
            "a half-written snapshot is visible"
        );
        assert!(
            store
                .open(&admin(), "snap-0000000000000c4a5")
                .await
                .is_err()
        );
        // Within the grace period the abandoned write is treated as in progress.
        let r = store.gc(Duration::from_secs(3600)).await.unwrap();
        assert_eq!((r.writes_in_progress, r.chunks_deleted), (1, 0));
        let r = store.gc(Duration::ZERO).await.unwrap();
        assert_eq!(r.stale_writes, 1);
        assert_eq!(r.keys_deleted, 1);
        assert!(
            r.chunks_deleted as usize >= orphans,
            "{r:?} vs {orphans} orphans"
        );
    });
    assert_eq!(count_files(&chunks_dir), 0);
    assert_eq!(count_files(&dir.path().join("store/snapshots/pending")), 0);
    assert_eq!(count_files(&dir.path().join("store/snapshots/keys")), 0);
}
