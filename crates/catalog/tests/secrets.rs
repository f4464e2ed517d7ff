//! What the catalog keeps of a task's secrets (issue 17): the sealed part of a request is
//! dropped in the transaction that ends the task; a scrubbed value is gone from the SQLite
//! file and its write-ahead log once the log is checkpointed (`secure_delete` on); and the
//! database files are readable by their owner only, whatever the umask.

#![allow(clippy::unwrap_used, missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use catalog::{Backend, Catalog, NewTask, TaskKind, new_id, status};

const MARKER: &str = "X-Amz-Signature=SCRUBMARKER0c1d2e3f4a5b";

fn new_task(request: &str, sealed: Option<&str>) -> NewTask {
    NewTask {
        id: new_id("import-snap-"),
        account: "111".into(),
        kind: TaskKind::ImportSnapshot,
        status_message: "pending".into(),
        request: request.into(),
        tags: Vec::new(),
        client_token: None,
        sealed: sealed.map(str::to_string),
    }
}

fn files_with(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        if b.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    hits.sort();
    hits
}

async fn sealed_part_ends_with_the_task(c: &Catalog) {
    let (t, _) = c
        .create_task(new_task("{\"u\":1}", Some("ab12")))
        .await
        .unwrap();
    assert_eq!(t.sealed.as_deref(), Some("ab12"));
    let claimed = c.claim("w", 60_000).await.unwrap().unwrap();
    assert_eq!(claimed.sealed.as_deref(), Some("ab12"), "a worker gets it");
    assert!(
        c.finish(&t.id, Some("w"), status::DELETED, "failed", None)
            .await
            .unwrap()
    );
    assert_eq!(c.task("111", &t.id).await.unwrap().sealed, None);
}

#[tokio::test]
async fn scrubbed_values_leave_the_database_and_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let c = Catalog::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    assert_eq!(c.backend(), Backend::Sqlite);
    sealed_part_ends_with_the_task(&c).await;

    // A request stored in clear (as versions before the sealing did), scrubbed when its
    // task ended: after the checkpoint the value is in no file of the catalog.
    let (t, _) = c
        .create_task(new_task(
            &format!("{{\"url\":\"https://h/d?{MARKER}\"}}"),
            None,
        ))
        .await
        .unwrap();
    // Other rows are written after it, so the page stays in use.
    for _ in 0..20 {
        c.create_task(new_task("{\"filler\":true}", None))
            .await
            .unwrap();
    }
    assert!(
        !files_with(dir.path(), MARKER).is_empty(),
        "the test sees it first"
    );
    assert!(
        c.finish(&t.id, None, status::COMPLETED, "completed", None)
            .await
            .unwrap()
    );
    c.redact_request(&t.id, "{\"url\":\"https://h/d\"}")
        .await
        .unwrap();
    assert!(c.checkpoint_log().await.unwrap(), "no reader held the log");
    assert_eq!(files_with(dir.path(), MARKER), Vec::<String>::new());
    drop(c);
    assert_eq!(files_with(dir.path(), MARKER), Vec::<String>::new());
}

#[tokio::test]
async fn database_files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // New: made 0600 (the test runs with the usual umask 022), and its log files alike.
    let db = dir.path().join("new.db");
    let c = Catalog::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    c.create_task(new_task("{}", None)).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(c);
    // Left readable by others (an earlier version): narrowed when opened.
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Catalog::open(&format!("sqlite://{}", old.display()))
        .await
        .unwrap();
    c.create_task(new_task("{}", None)).await.unwrap();
    assert_eq!(mode(&old), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_part_ends_with_the_task_on_postgres() {
    let pg = catalog::pgtest::TempPostgres::start().expect("start PostgreSQL for the test");
    let c = Catalog::open(&pg.url).await.unwrap();
    sealed_part_ends_with_the_task(&c).await;
    assert!(c.checkpoint_log().await.unwrap());
}
