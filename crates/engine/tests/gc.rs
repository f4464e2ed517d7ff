//! Garbage collection with the catalog (issue 24): a manifest no catalog row owns is deleted
//! with what only it referenced; snapshots with a row, and the snapshots an unfinished task
//! stored under its derived ids, are kept.

#![allow(clippy::unwrap_used, missing_docs)]

mod harness;

use std::sync::Arc;
use std::time::Duration;

use blockstore::PutRequest;
use catalog::{NewTask, TaskKind};
use diskfmt::{Disk, FileSource, Limits};
use engine::ImportSnapshotRequest;
use harness::*;

async fn import(env: &Env, key: &str) -> String {
    let t = env
        .engine
        .import_snapshot(
            sub(),
            ImportSnapshotRequest {
                disk_container: from_bucket(key),
                ..ImportSnapshotRequest::default()
            },
        )
        .await
        .unwrap();
    let done = run_until_ended(&env.engine, std::slice::from_ref(&t.id)).await;
    assert_eq!(done[0].status, catalog::status::COMPLETED, "{:?}", done[0]);
    engine::TaskDetail::of(&done[0]).disks[0]
        .snapshot_id
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_manifests_no_catalog_row_owns_and_keeps_the_rest() {
    let env = env(None).await;
    let raw = data_disk(env.data());
    env.upload(&raw, "data.raw");
    let kept = import(&env, "data.raw").await;
    let orphan = import(&env, "data.raw").await;
    let store = env.engine.store().clone();
    let cat = env.catalog().clone();

    // The orphan: its row is gone, its manifest stays (as when a task died between the two).
    cat.delete_snapshot(ACCOUNT, &orphan).await.unwrap();
    // An unfinished task that has stored its first disk and not recorded it yet.
    let task_id = engine::new_task_id(TaskKind::ImportSnapshot);
    cat.create_task(NewTask {
        id: task_id.clone(),
        account: ACCOUNT.into(),
        kind: TaskKind::ImportSnapshot,
        status_message: "pending".into(),
        request: "{}".into(),
        tags: Vec::new(),
        client_token: None,
        sealed: None,
    })
    .await
    .unwrap();
    let in_flight = catalog::derived_id("snap-", &[&task_id, "0", "1"]);
    let disk: Arc<dyn Disk> = Arc::from(
        diskfmt::open(
            Arc::new(FileSource::open(&raw).unwrap()),
            &Limits::default(),
        )
        .unwrap(),
    );
    store
        .put(
            disk,
            PutRequest {
                snapshot_id: in_flight.clone(),
                kms_key: None,
                parent: None,
                caller: kms::Caller::account_root(ACCOUNT),
            },
            None,
        )
        .await
        .unwrap();

    // Within the grace period nothing goes.
    let r = engine::gc::collect(&cat, &store, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(r.orphaned_manifests.is_empty(), "{r:?}");

    let r = engine::gc::collect(&cat, &store, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(r.orphaned_manifests, vec![orphan.clone()], "{r:?}");
    let mut left: Vec<String> = store
        .manifests()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    left.sort();
    let mut want = vec![kept.clone(), in_flight.clone()];
    want.sort();
    assert_eq!(left, want);
    // The orphan's own data key went with it; the kept snapshot still reads whole.
    assert!(r.store.keys_deleted >= 1, "{r:?}");
    let caller = kms::Caller::account_root(ACCOUNT);
    let rep = store.verify(&caller, &kept).await.unwrap();
    assert!(rep.failures.is_empty(), "{rep:?}");
    // A second run finds nothing more.
    let again = engine::gc::collect(&cat, &store, Duration::ZERO)
        .await
        .unwrap();
    assert!(again.orphaned_manifests.is_empty(), "{again:?}");
}
