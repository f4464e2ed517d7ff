//! The catalog against both of its real backends: an SQLite file and a PostgreSQL server the
//! test starts (`catalog::pgtest`). The same checks run on each.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::sync::Arc;

use catalog::{
    BlockDevice, Catalog, CatalogError, ClientToken, Image, NewTask, Progress, Snapshot, Tag,
    TaskKind, new_id, now_ms, status, token_hash,
};

fn new_task(account: &str, kind: TaskKind, request: &str, token: Option<&str>) -> NewTask {
    let tags = vec![Tag {
        key: "team".into(),
        value: "blue".into(),
    }];
    NewTask {
        id: new_id(kind.prefix()),
        account: account.into(),
        kind,
        status_message: "pending".into(),
        request: request.into(),
        client_token: token.map(|t| ClientToken {
            token: t.into(),
            params_hash: token_hash(request, &tags),
        }),
        tags,
        sealed: None,
    }
}

async fn lifecycle(c: &Catalog) {
    // Ids look like EC2's.
    let (t, created) = c
        .create_task(new_task(
            "111",
            TaskKind::ImportImage,
            "{\"a\":1}",
            Some("tok-1"),
        ))
        .await
        .unwrap();
    assert!(created);
    assert!(t.id.starts_with("import-ami-") && t.id.len() == "import-ami-".len() + 17);
    assert_eq!(
        (t.status.as_str(), t.status_message.as_str()),
        ("active", "pending")
    );

    // Idempotency: same token and request → the same task; other request → mismatch;
    // another account or another action may reuse the token.
    let (again, created) = c
        .create_task(new_task(
            "111",
            TaskKind::ImportImage,
            "{\"a\":1}",
            Some("tok-1"),
        ))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, t.id);
    let e = c
        .create_task(new_task(
            "111",
            TaskKind::ImportImage,
            "{\"a\":2}",
            Some("tok-1"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CatalogError::IdempotentParameterMismatch { ref task, .. } if *task == t.id),
        "{e}"
    );
    assert!(
        !e.to_string().contains("tok-1"),
        "the token is the caller's free text and stays out of messages: {e}"
    );
    // The token is looked up before any work (the engine checks it first).
    let probe = |req: &str, tok: &str| ClientToken {
        token: tok.into(),
        params_hash: token_hash(req, &new_task("111", TaskKind::ImportImage, req, None).tags),
    };
    let found = c
        .task_of_token("111", TaskKind::ImportImage, &probe("{\"a\":1}", "tok-1"))
        .await
        .unwrap();
    assert_eq!(found.map(|f| f.id), Some(t.id.clone()));
    assert!(
        c.task_of_token("111", TaskKind::ImportImage, &probe("{\"a\":1}", "unused"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        c.task_of_token("111", TaskKind::ImportImage, &probe("{\"a\":9}", "tok-1"))
            .await,
        Err(CatalogError::IdempotentParameterMismatch { .. })
    ));
    c.create_task(new_task(
        "222",
        TaskKind::ImportImage,
        "{\"a\":2}",
        Some("tok-1"),
    ))
    .await
    .unwrap();
    c.create_task(new_task(
        "111",
        TaskKind::ImportSnapshot,
        "{\"a\":2}",
        Some("tok-1"),
    ))
    .await
    .unwrap();
    // Accounts do not see each other's tasks.
    assert!(matches!(
        c.task("222", &t.id).await,
        Err(CatalogError::NotFound(_))
    ));

    // Claim with a lease; a second worker finds nothing of this task while the lease lives.
    let mut claimed = Vec::new();
    while let Some(x) = c.claim("w1", 60_000).await.unwrap() {
        claimed.push(x.id);
    }
    assert!(claimed.contains(&t.id));
    assert!(c.claim("w2", 60_000).await.unwrap().is_none());
    // Progress only grows; each stage is an event.
    assert!(
        c.progress(
            &t.id,
            "w1",
            Progress {
                message: "converting",
                progress: 30
            }
        )
        .await
        .unwrap()
    );
    assert!(
        c.progress(
            &t.id,
            "w1",
            Progress {
                message: "validating",
                progress: 10
            }
        )
        .await
        .unwrap()
    );
    let now = c.task("111", &t.id).await.unwrap();
    assert_eq!(
        (now.status_message.as_str(), now.progress),
        ("validating", 30)
    );
    // Another worker cannot report on it.
    assert!(
        !c.progress(
            &t.id,
            "w2",
            Progress {
                message: "x",
                progress: 90
            }
        )
        .await
        .unwrap()
    );

    // The lease expires: another worker takes over; the first one's heartbeat fails.
    assert!(c.heartbeat(&t.id, "w1", -1).await.unwrap().is_some());
    let taken = c.claim("w2", 60_000).await.unwrap().unwrap();
    assert_eq!(taken.id, t.id);
    assert_eq!(taken.attempts, 2);
    assert!(c.heartbeat(&t.id, "w1", 60_000).await.unwrap().is_none());
    assert!(c.checkpoint(&t.id, "w2", "{\"stage\":2}").await.unwrap());
    assert!(!c.checkpoint(&t.id, "w1", "{\"stage\":9}").await.unwrap());

    // Completion by the holder; the loser cannot finish it.
    assert!(
        !c.finish(&t.id, Some("w1"), status::COMPLETED, "completed", None)
            .await
            .unwrap()
    );
    assert!(
        c.finish(
            &t.id,
            Some("w2"),
            status::COMPLETED,
            "completed",
            Some("{\"image\":\"ami-1\"}")
        )
        .await
        .unwrap()
    );
    let done = c.task("111", &t.id).await.unwrap();
    assert!(done.ended());
    assert_eq!(done.progress, 100);
    assert!(done.ended_ms.is_some() && done.lease_owner.is_none());
    let events = c.events(&t.id).await.unwrap();
    let msgs: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["pending", "converting", "validating", "completed"]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));

    // Cancel: active → deleting (claimable, to clean up) → deleted; an ended task refuses.
    let (k, _) = c
        .create_task(new_task("111", TaskKind::ExportImage, "{}", None))
        .await
        .unwrap();
    let d = c.request_cancel("111", &k.id).await.unwrap();
    assert_eq!((d.status.as_str(), d.cancel_requested), ("deleting", true));
    let w = c.claim("w3", 60_000).await.unwrap().unwrap();
    assert_eq!(w.id, k.id);
    assert!(
        c.finish(&k.id, Some("w3"), status::DELETED, "deleted", None)
            .await
            .unwrap()
    );
    assert!(matches!(
        c.request_cancel("111", &k.id).await,
        Err(CatalogError::Conflict(_))
    ));
    assert!(matches!(
        c.request_cancel("111", "import-ami-00000000000000000")
            .await,
        Err(CatalogError::NotFound(_))
    ));

    // Listing: active ones and those ended since the cut-off.
    let all = c.tasks("111", TaskKind::ImportImage, 0).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(
        c.tasks("111", TaskKind::ImportImage, now_ms() + 1000)
            .await
            .unwrap()
            .is_empty()
    );

    // Snapshots and images: idempotent puts, lookups per account, in-use protection.
    let snap = Snapshot {
        id: "snap-0123456789abcdef0".into(),
        account: "111".into(),
        task_id: Some(t.id.clone()),
        volume_size: 1 << 30,
        encrypted: true,
        kms_key_id: Some("arn:aws:kms:us-east-1:111:key/k".into()),
        state: "completed".into(),
        description: "root disk".into(),
        tags: vec![],
        created_ms: now_ms(),
        extra: catalog::SnapshotExtra::default(),
    };
    c.put_snapshot(&snap).await.unwrap();
    c.put_snapshot(&snap).await.unwrap();
    assert_eq!(c.snapshots("111").await.unwrap(), vec![snap.clone()]);
    assert!(c.snapshots("222").await.unwrap().is_empty());
    let img = Image {
        id: "ami-0123456789abcdef0".into(),
        account: "111".into(),
        task_id: Some(t.id.clone()),
        name: "import-ami".into(),
        description: String::new(),
        architecture: "x86_64".into(),
        platform: "Linux/UNIX".into(),
        boot_mode: Some("uefi".into()),
        block_devices: vec![BlockDevice {
            device_name: "/dev/sda1".into(),
            snapshot_id: snap.id.clone(),
            volume_size_gib: 1,
        }],
        encrypted: true,
        kms_key_id: snap.kms_key_id.clone(),
        state: "available".into(),
        tags: vec![],
        created_ms: now_ms(),
        extra: catalog::ImageExtra::default(),
    };
    c.put_image(&img).await.unwrap();
    // A second image for the same task is never made.
    let mut dup = img.clone();
    dup.id = "ami-0fffffffffffffff0".into();
    c.put_image(&dup).await.unwrap();
    assert_eq!(c.images("111").await.unwrap(), vec![img.clone()]);
    assert_eq!(c.image_of_task(&t.id).await.unwrap(), Some(img.clone()));
    assert!(matches!(
        c.delete_snapshot("111", &snap.id).await,
        Err(CatalogError::Conflict(_))
    ));
    c.delete_image("111", &img.id).await.unwrap();
    c.delete_snapshot("111", &snap.id).await.unwrap();
    assert!(matches!(
        c.delete_snapshot("111", &snap.id).await,
        Err(CatalogError::NotFound(_))
    ));

    // Settings.
    assert_eq!(
        c.setting("111", "ebs-encryption-by-default").await.unwrap(),
        None
    );
    c.set_setting("111", "ebs-encryption-by-default", "true")
        .await
        .unwrap();
    c.set_setting("111", "ebs-encryption-by-default", "false")
        .await
        .unwrap();
    assert_eq!(
        c.setting("111", "ebs-encryption-by-default")
            .await
            .unwrap()
            .as_deref(),
        Some("false")
    );
}

/// Four workers race over 40 tasks: each task is claimed and finished exactly once.
/// Settings as a compare-and-swap (the activity log's digest chain): of several writers
/// expecting the same old value, exactly one wins.
async fn settings_swap(c: &Catalog) {
    assert!(c.swap_setting("swap", "head", None, "1").await.unwrap());
    assert!(!c.swap_setting("swap", "head", None, "x").await.unwrap());
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.swap_setting("swap", "head", Some("1"), &format!("2-{i}"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for t in tries {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    assert!(
        c.setting("swap", "head")
            .await
            .unwrap()
            .unwrap()
            .starts_with("2-")
    );
    c.delete_setting("swap", "head").await.unwrap();
    c.delete_setting("swap", "head").await.unwrap();
    assert_eq!(c.setting("swap", "head").await.unwrap(), None);
}

async fn race(c: &Catalog) {
    let mut ids = HashSet::new();
    for _ in 0..40 {
        let (t, _) = c
            .create_task(new_task("race", TaskKind::ImportSnapshot, "{}", None))
            .await
            .unwrap();
        ids.insert(t.id);
    }
    let c = Arc::new(c.clone());
    let mut joins = Vec::new();
    for w in 0..4 {
        let c = c.clone();
        joins.push(tokio::spawn(async move {
            let me = format!("racer-{w}");
            let mut mine = Vec::new();
            while let Some(t) = c.claim(&me, 60_000).await.unwrap() {
                assert!(
                    c.finish(&t.id, Some(&me), status::COMPLETED, "completed", None)
                        .await
                        .unwrap()
                );
                mine.push(t.id);
            }
            mine
        }));
    }
    let mut done = Vec::new();
    for j in joins {
        done.extend(j.await.unwrap());
    }
    let unique: HashSet<_> = done.iter().cloned().collect();
    assert_eq!(done.len(), 40, "a task was finished twice");
    assert_eq!(unique, ids);
}

async fn identities(c: &Catalog) {
    use catalog::iam::{AccessKey, PrincipalKind};
    let a = "111122223333";
    c.create_user(a, "alice").await.unwrap();
    assert!(matches!(
        c.create_user(a, "alice").await,
        Err(CatalogError::Conflict(_))
    ));
    c.create_role(a, "vmimport").await.unwrap();
    let key = AccessKey {
        access_key_id: "AKIAVMIE0000000000001".into(),
        account: a.into(),
        user_name: "alice".into(),
        secret_sealed: vec![1, 2, 3, 250],
        status: "Active".into(),
        created_ms: 1,
        last_used_ms: None,
    };
    c.create_access_key(&key).await.unwrap();
    let orphan = AccessKey {
        user_name: "bob".into(),
        access_key_id: "AKIAVMIE0000000000002".into(),
        ..key.clone()
    };
    assert!(matches!(
        c.create_access_key(&orphan).await,
        Err(CatalogError::NotFound(_))
    ));
    assert_eq!(
        c.access_key(&key.access_key_id).await.unwrap().unwrap(),
        key
    );
    assert!(
        !format!("{key:?}").contains("250"),
        "the sealed secret is not printed"
    );
    c.touch_access_key(&key.access_key_id).await.unwrap();
    assert!(
        c.access_key(&key.access_key_id)
            .await
            .unwrap()
            .unwrap()
            .last_used_ms
            .is_some()
    );
    c.set_access_key_status(a, &key.access_key_id, "Inactive")
        .await
        .unwrap();
    assert_eq!(
        c.access_keys(a, Some("alice")).await.unwrap()[0].status,
        "Inactive"
    );
    let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:*","Resource":"*"}}"#;
    c.put_policy(a, "ec2-all", doc).await.unwrap();
    c.attach_policy(a, PrincipalKind::User, "alice", "ec2-all")
        .await
        .unwrap();
    c.attach_policy(a, PrincipalKind::Role, "vmimport", "ec2-all")
        .await
        .unwrap();
    assert!(
        c.attach_policy(a, PrincipalKind::User, "nobody", "ec2-all")
            .await
            .is_err()
    );
    assert_eq!(
        c.attached_policies(a, PrincipalKind::User, "alice")
            .await
            .unwrap()[0]
            .document,
        doc
    );
    assert!(matches!(
        c.delete_policy(a, "ec2-all").await,
        Err(CatalogError::Conflict(_))
    ));
    c.delete_principal(a, PrincipalKind::User, "alice")
        .await
        .unwrap();
    assert!(
        c.access_key(&key.access_key_id).await.unwrap().is_none(),
        "keys go with their user"
    );
    assert!(
        c.attached_policies(a, PrincipalKind::User, "alice")
            .await
            .unwrap()
            .is_empty()
    );
    c.detach_policy(a, PrincipalKind::Role, "vmimport", "ec2-all")
        .await
        .unwrap();
    c.delete_policy(a, "ec2-all").await.unwrap();
    assert_eq!(c.roles(a).await.unwrap(), ["vmimport"]);
    assert!(c.users(a).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_catalog_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let c = Catalog::open(&url).await.unwrap();
    assert_eq!(c.backend(), catalog::Backend::Sqlite);
    lifecycle(&c).await;
    identities(&c).await;
    race(&c).await;
    settings_swap(&c).await;
    // Reopening finds everything, and migrating again changes nothing.
    drop(c);
    let c = Catalog::open(&url).await.unwrap();
    assert_eq!(
        c.tasks("race", TaskKind::ImportSnapshot, 0)
            .await
            .unwrap()
            .len(),
        40
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_catalog_postgres() {
    let pg = catalog::pgtest::TempPostgres::start().expect("start PostgreSQL for the test");
    let c = Catalog::open(&pg.url).await.unwrap();
    assert_eq!(c.backend(), catalog::Backend::Postgres);
    lifecycle(&c).await;
    identities(&c).await;
    race(&c).await;
    settings_swap(&c).await;
    // A second process's catalog on the same database migrates nothing and sees the same.
    let other = Catalog::open(&pg.url).await.unwrap();
    // Request counts are shared: hits through either handle add up, concurrently.
    let hits: Vec<_> = (0..20)
        .map(|i| {
            let c = if i % 2 == 0 { c.clone() } else { other.clone() };
            tokio::spawn(async move { c.rate_hit("arn:alice", 4000).await.unwrap() })
        })
        .collect();
    let mut counts = Vec::new();
    for h in hits {
        counts.push(h.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<i64>>());
    assert_eq!(other.rate_hit("arn:alice", 6000).await.unwrap(), 1);
    c.rate_prune(6000).await.unwrap();
    assert_eq!(c.rate_hit("arn:alice", 4000).await.unwrap(), 1, "pruned");
    assert_eq!(
        other
            .tasks("race", TaskKind::ImportSnapshot, 0)
            .await
            .unwrap()
            .len(),
        40
    );
}

#[tokio::test]
async fn test_catalog_refuses_unknown_urls_without_echoing_credentials() {
    let e = Catalog::open("mysql://user:hunter2@db/x")
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
