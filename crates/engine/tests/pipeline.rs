//! End-to-end tests of the task engine, on SQLite and on a PostgreSQL the test starts:
//! import-image from every format, import-snapshot, export to every format (checked with
//! `qemu-img compare`), idempotency, cancel in each stage, hostile and refused input, and
//! a search of the data folder for plaintext afterwards.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use catalog::{Catalog, TaskKind, status};
use engine::{
    DiskContainer, ExportImageRequest, ExportLocation, ImportImageRequest, ImportSnapshotRequest,
    StageHook, Submit, TaskDetail, UrlPolicy,
};
use harness::*;

const MARKER: &str = "VMIE-PLAINTEXT-MARKER-7f3a9c51e2";

fn image_request(key: &str) -> ImportImageRequest {
    ImportImageRequest {
        disk_containers: vec![from_bucket(key)],
        description: Some("imported by the test".into()),
        ..ImportImageRequest::default()
    }
}

/// The stages a task went through, consecutive repeats folded.
async fn stages(cat: &Catalog, id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last_progress = 0;
    for e in cat.events(id).await.unwrap() {
        assert!(e.progress >= last_progress, "progress went back in {id}");
        last_progress = e.progress;
        if out.last() != Some(&e.message) {
            out.push(e.message);
        }
    }
    out
}

async fn every_path(url: Option<&str>) {
    let env = env(url).await;
    let work = tempfile::tempdir().unwrap();
    let raw = debian_disk(work.path(), MARKER, 24);
    let want = std::fs::read(&raw).unwrap();
    let inputs = [
        (
            "debian.vmdk",
            qemu_convert(&raw, "vmdk", "subformat=streamOptimized", "d.vmdk"),
        ),
        (
            "debian.vhd",
            qemu_convert(&raw, "vpc", "subformat=dynamic", "d.vhd"),
        ),
        ("debian.vhdx", qemu_convert(&raw, "vhdx", "", "d.vhdx")),
        (
            "debian.qcow2",
            qemu_convert(&raw, "qcow2", "compat=1.1", "d.qcow2"),
        ),
        ("debian.raw", raw.clone()),
        ("debian.ova", ova(&raw)),
    ];
    let mut ids = Vec::new();
    for (key, file) in &inputs {
        env.upload(file, key);
        let t = env
            .engine
            .import_image(sub(), image_request(key))
            .await
            .unwrap();
        assert!(
            t.id.starts_with("import-ami-") && t.id.len() == 28,
            "{}",
            t.id
        );
        assert_eq!(
            (t.status.as_str(), t.status_message.as_str()),
            ("active", "pending")
        );
        ids.push(t.id);
    }
    let snap_task = env
        .engine
        .import_snapshot(
            sub(),
            ImportSnapshotRequest {
                disk_container: DiskContainer {
                    format: Some("qcow2".into()),
                    ..from_bucket("debian.qcow2")
                },
                description: Some("a snapshot".into()),
                ..ImportSnapshotRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(snap_task.id.starts_with("import-snap-"));
    ids.push(snap_task.id.clone());

    let ended = run_until_ended(&env.engine, &ids).await;
    for t in &ended {
        assert_eq!(
            (t.status.as_str(), t.progress),
            (status::COMPLETED, 100),
            "{}: {}",
            t.id,
            t.status_message
        );
    }
    let cat = env.catalog();
    for (t, (key, _)) in ended.iter().zip(&inputs) {
        let d = TaskDetail::of(t);
        assert_eq!(d.platform.as_deref(), Some("Linux"), "{key}");
        assert_eq!(d.architecture.as_deref(), Some("x86_64"), "{key}");
        assert_eq!(d.boot_mode.as_deref(), Some("legacy-bios"), "{key}");
        assert_eq!(d.os_name.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        let img = cat.image_of_task(&t.id).await.unwrap().unwrap();
        assert_eq!(Some(&img.id), d.image_id.as_ref());
        assert_eq!(
            (img.platform.as_str(), img.architecture.as_str()),
            ("Linux", "x86_64")
        );
        assert_eq!(img.block_devices.len(), 1);
        assert_eq!(img.block_devices[0].device_name, "/dev/sda1");
        let snaps = cat.snapshots_of_task(&t.id).await.unwrap();
        assert_eq!(snaps.len(), 1, "{key}");
        assert_eq!(snaps[0].id, img.block_devices[0].snapshot_id);
        // Every snapshot is encrypted at rest, and says so, with the key it is under (the
        // service default here: the request asked for none).
        assert!(snaps[0].encrypted && snaps[0].kms_key_id.is_some());
        // VHD rounds the disk up to its CHS geometry: the rest reads as zeros.
        let got = snapshot_bytes(&env.engine, &snaps[0].id).await;
        assert!(
            got.len() >= want.len()
                && got[..want.len()] == want[..]
                && got[want.len()..].iter().all(|&b| b == 0),
            "{key}: the snapshot differs from the source disk"
        );
        assert_eq!(
            stages(cat, &t.id).await,
            [
                "pending",
                "converting",
                "validating",
                "updating",
                "preparing ami",
                "completed"
            ],
            "{key}"
        );
    }
    let snaps = cat.snapshots_of_task(&snap_task.id).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].description, "a snapshot");
    assert!(cat.image_of_task(&snap_task.id).await.unwrap().is_none());
    assert!(snapshot_bytes(&env.engine, &snaps[0].id).await == want);
    assert_eq!(
        stages(cat, &snap_task.id).await,
        ["pending", "downloading/converting", "completed"]
    );

    // Idempotency: the same token and request give the same task; another request fails.
    let tokened = Submit {
        client_token: Some("token-1".into()),
        ..sub()
    };
    let a = env
        .engine
        .import_image(tokened.clone(), image_request("debian.raw"))
        .await
        .unwrap();
    let b = env
        .engine
        .import_image(tokened.clone(), image_request("debian.raw"))
        .await
        .unwrap();
    assert_eq!(a.id, b.id);
    let e = env
        .engine
        .import_image(tokened.clone(), image_request("debian.vhd"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "IdempotentParameterMismatch");
    assert!(
        !e.to_string().contains("token-1"),
        "the token stays out of messages: {e}"
    );
    // A retry is answered from the token before anything is read: with the object gone, the
    // same request still gives the same task (a HEAD first would have failed it).
    let moved = env.bucket("src").join("debian.raw.away");
    std::fs::rename(env.bucket("src").join("debian.raw"), &moved).unwrap();
    let c = env
        .engine
        .import_image(tokened.clone(), image_request("debian.raw"))
        .await
        .unwrap();
    assert_eq!(c.id, a.id);
    std::fs::rename(&moved, env.bucket("src").join("debian.raw")).unwrap();
    env.engine.cancel(ACCOUNT, &a.id).await.unwrap();

    // Export the image imported from the VMDK to every format.
    let image = cat.image_of_task(&ended[0].id).await.unwrap().unwrap();
    let mut exports = Vec::new();
    for f in ["VMDK", "VHD", "RAW", "vhdx", "QCOW2", "OVA"] {
        let t = env
            .engine
            .export_image(
                sub(),
                ExportImageRequest {
                    image_id: image.id.clone(),
                    disk_image_format: f.into(),
                    s3_export_location: ExportLocation {
                        s3_bucket: "out".into(),
                        s3_prefix: Some("exports/".into()),
                    },
                    ..ExportImageRequest::default()
                },
            )
            .await
            .unwrap();
        assert!(t.id.starts_with("export-ami-"));
        exports.push((f, t.id));
    }
    let ids: Vec<String> = exports.iter().map(|e| e.1.clone()).collect();
    for t in run_until_ended(&env.engine, &ids).await {
        assert_eq!(t.status, status::COMPLETED, "{}", t.status_message);
        assert_eq!(
            stages(cat, &t.id).await,
            ["validating", "converting", "completed"]
        );
    }
    for (f, id) in &exports {
        let ext = f.to_ascii_lowercase();
        let file = env.bucket("out").join(format!("exports/{id}.{ext}"));
        assert!(file.exists(), "{f}: {} missing", file.display());
        let check = if *f == "OVA" {
            let x = work.path().join(format!("x-{id}"));
            std::fs::create_dir_all(&x).unwrap();
            tool("tar", &["-C", s(&x), "-xf", s(&file)]);
            std::fs::read_dir(&x)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "vmdk"))
                .unwrap()
        } else {
            file
        };
        tool("qemu-img", &["compare", "-f", "raw", s(&raw), s(&check)]);
    }
    let leftovers: Vec<_> = std::fs::read_dir(env.bucket("out").join("exports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // No intermediate volume is left, and the marker is nowhere but in the source bucket
    // and the export bucket (where the caller asked for plaintext).
    assert!(env.volumes().is_empty(), "{:?}", env.volumes());
    let hits = files_containing(env.data(), MARKER.as_bytes(), &env.data().join("buckets"));
    assert!(hits.is_empty(), "plaintext found in {hits:?}");
}

type Plan = Arc<Mutex<HashMap<String, String>>>;

/// A hook that cancels a task when it enters the stage planned for it.
fn cancelling_hook(plan: Plan, cat: Catalog) -> StageHook {
    StageHook(Arc::new(move |task: &str, stage: &str| {
        let due = plan.lock().unwrap().get(task).is_some_and(|s| s == stage);
        if due {
            tokio::runtime::Handle::current()
                .block_on(cat.request_cancel(ACCOUNT, task))
                .unwrap();
        }
    }))
}

async fn cancel_every_stage(url: Option<&str>) {
    let plan: Plan = Arc::default();
    let p = plan.clone();
    let env = env_with(url, &UrlPolicy::default(), move |cfg, cat| {
        cfg.on_stage = Some(cancelling_hook(p, cat.clone()));
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let raw = debian_disk(work.path(), MARKER, 16);
    let vmdk = qemu_convert(&raw, "vmdk", "subformat=streamOptimized", "d.vmdk");
    env.upload(&vmdk, "d.vmdk");

    // One image to export, imported first.
    let t = env
        .engine
        .import_image(sub(), image_request("d.vmdk"))
        .await
        .unwrap();
    run_until_ended(&env.engine, std::slice::from_ref(&t.id)).await;
    let image = env.catalog().image_of_task(&t.id).await.unwrap().unwrap();
    let published = env.engine.store().list().await.unwrap().len();
    assert_eq!(published, 1);

    let mut ids = Vec::new();
    for stage in ["converting", "validating", "updating", "preparing ami"] {
        let t = env
            .engine
            .import_image(sub(), image_request("d.vmdk"))
            .await
            .unwrap();
        plan.lock().unwrap().insert(t.id.clone(), stage.into());
        ids.push((stage, t.id));
    }
    let t = env
        .engine
        .import_snapshot(
            sub(),
            ImportSnapshotRequest {
                disk_container: from_bucket("d.vmdk"),
                ..ImportSnapshotRequest::default()
            },
        )
        .await
        .unwrap();
    plan.lock()
        .unwrap()
        .insert(t.id.clone(), "downloading/converting".into());
    ids.push(("downloading/converting", t.id));
    for stage in ["validating", "converting"] {
        let t = env
            .engine
            .export_image(
                sub(),
                ExportImageRequest {
                    image_id: image.id.clone(),
                    disk_image_format: "VHD".into(),
                    s3_export_location: ExportLocation {
                        s3_bucket: "out".into(),
                        s3_prefix: None,
                    },
                    ..ExportImageRequest::default()
                },
            )
            .await
            .unwrap();
        plan.lock().unwrap().insert(t.id.clone(), stage.into());
        ids.push((stage, t.id));
    }
    // Cancelled while still pending, before any worker saw it.
    let t = env
        .engine
        .import_image(sub(), image_request("d.vmdk"))
        .await
        .unwrap();
    let c = env.engine.cancel(ACCOUNT, &t.id).await.unwrap();
    assert_eq!(
        (c.status.as_str(), c.status_message.as_str()),
        ("deleting", "deleting")
    );
    ids.push(("pending", t.id));

    let all: Vec<String> = ids.iter().map(|i| i.1.clone()).collect();
    let ended = run_until_ended(&env.engine, &all).await;
    for ((stage, id), t) in ids.iter().zip(&ended) {
        assert_eq!(t.status, status::DELETED, "{stage}: {}", t.status_message);
        assert!(
            t.status_message.contains("cancelled"),
            "{stage}: {}",
            t.status_message
        );
        let st = stages(env.catalog(), id).await;
        assert_eq!(
            st.last().map(String::as_str),
            Some(t.status_message.as_str())
        );
        if *stage != "pending" {
            assert!(st.iter().any(|s| s == stage), "{stage}: {st:?}");
        }
        assert!(
            env.catalog()
                .snapshots_of_task(id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(env.catalog().image_of_task(id).await.unwrap().is_none());
        let e = env.engine.cancel(ACCOUNT, id).await.unwrap_err();
        assert_eq!(e.code(), "IncorrectState", "{stage}");
    }
    // Nothing a cancelled task stored remains visible in the store, and no volume is left.
    assert_eq!(env.engine.store().list().await.unwrap().len(), published);
    assert!(env.volumes().is_empty(), "{:?}", env.volumes());
    let out: Vec<_> = std::fs::read_dir(env.bucket("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(out.is_empty(), "a cancelled export left files: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_on_sqlite() {
    every_path(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_every_stage_on_sqlite() {
    cancel_every_stage(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_and_cancel_on_postgres() {
    let pg = catalog::pgtest::TempPostgres::start().unwrap();
    every_path(Some(&pg.url)).await;
    let pg2 = catalog::pgtest::TempPostgres::start().unwrap();
    cancel_every_stage(Some(&pg2.url)).await;
}

fn assert_refused(r: Result<catalog::Task, engine::EngineError>, code: &str, words: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    assert!(e.to_string().contains(words), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_and_hostile_images() {
    let env = env(None).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let raw = debian_disk(w, MARKER, 16);
    let qcow = qemu_convert(&raw, "qcow2", "", "d.qcow2");
    env.upload(&qcow, "d.qcow2");
    let e = &env.engine;

    // Fail fast, at request time.
    assert_refused(
        e.import_image(sub(), image_request("missing.vmdk")).await,
        "InvalidParameter",
        "does not exist",
    );
    // A symbolic link in a bucket that leads out of it is not followed.
    std::os::unix::fs::symlink(&qcow, env.bucket("src").join("link.qcow2")).unwrap();
    assert_refused(
        e.import_image(sub(), image_request("link.qcow2")).await,
        "InvalidParameter",
        "does not exist",
    );
    let mut r = image_request("d.qcow2");
    r.disk_containers[0].user_bucket.as_mut().unwrap().s3_bucket = "nobucket".into();
    assert_refused(
        e.import_image(sub(), r).await,
        "InvalidParameter",
        "bucket \"nobucket\"",
    );
    let mut r = image_request("d.qcow2");
    r.disk_containers[0].format = Some("VHD".into());
    assert_refused(
        e.import_image(sub(), r).await,
        "InvalidParameterValue",
        "is a QCOW2 image",
    );
    let mut r = image_request("d.qcow2");
    r.disk_containers[0].format = Some("ISO9660".into());
    assert_refused(
        e.import_image(sub(), r).await,
        "InvalidParameterValue",
        "Format must be one of",
    );
    let mut r = image_request("d.qcow2");
    r.architecture = Some("sparc".into());
    assert_refused(
        e.import_image(sub(), r).await,
        "InvalidParameterValue",
        "Architecture",
    );
    let mut r = image_request("d.qcow2");
    r.kms_key_id = Some("alias/nope".into());
    assert_refused(
        e.import_image(sub(), r).await,
        "InvalidParameterCombination",
        "Encrypted=true",
    );
    let mut r = image_request("d.qcow2");
    r.encrypted = Some(true);
    r.kms_key_id = Some("alias/nope".into());
    assert_refused(
        e.import_image(sub(), r).await,
        "InvalidParameterValue",
        "KmsKeyId",
    );
    assert_refused(
        e.import_image(sub(), ImportImageRequest::default()).await,
        "InvalidParameterValue",
        "1 to 16 disk containers",
    );
    for (u, words) in [
        ("https://user:secret@example.com/d.vmdk", "user information"),
        ("https://169.254.169.254/latest/d.vmdk", "link-local"),
        ("http://example.com/d.vmdk", "scheme"),
    ] {
        let r = ImportImageRequest {
            disk_containers: vec![DiskContainer {
                url: Some(u.into()),
                ..DiskContainer::default()
            }],
            ..ImportImageRequest::default()
        };
        assert_refused(
            e.import_image(sub(), r).await,
            "InvalidParameterValue",
            words,
        );
    }
    assert_refused(
        e.export_image(
            sub(),
            ExportImageRequest {
                image_id: "ami-0123456789abcdef0".into(),
                disk_image_format: "VMDK".into(),
                s3_export_location: ExportLocation {
                    s3_bucket: "out".into(),
                    s3_prefix: None,
                },
                ..ExportImageRequest::default()
            },
        )
        .await,
        "InvalidAMIID.NotFound",
        "does not exist",
    );
    let every = catalog::now_ms();
    for kind in [TaskKind::ImportImage, TaskKind::ExportImage] {
        assert!(
            e.catalog()
                .tasks(ACCOUNT, kind, every)
                .await
                .unwrap()
                .is_empty()
        );
    }

    // Accepted, then refused by the pipeline with a specific reason.
    // 1. A qcow2 naming a backing file (a file that must never be opened).
    let backed = w.join("backed.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "/etc/shadow",
            "-u",
            s(&backed),
            "16M",
        ],
    );
    env.upload(&backed, "backed.qcow2");
    // 2. A stream-optimized VMDK cut short.
    let vmdk = qemu_convert(&raw, "vmdk", "subformat=streamOptimized", "d.vmdk");
    let bytes = std::fs::read(&vmdk).unwrap();
    std::fs::write(w.join("cut.vmdk"), &bytes[..bytes.len() / 2]).unwrap();
    env.upload(&w.join("cut.vmdk"), "cut.vmdk");
    // 3. A data disk without an operating system, as an image and as a snapshot.
    env.upload(&data_disk(w), "data.raw");
    let mut with_platform = image_request("data.raw");
    with_platform.platform = Some("Linux".into());
    with_platform.architecture = Some("arm64".into());
    with_platform.boot_mode = Some("uefi".into());
    // 4. An x86_64 disk said to be arm64.
    let mut wrong_arch = image_request("d.qcow2");
    wrong_arch.architecture = Some("arm64".into());

    let mut ids = Vec::new();
    for r in [
        image_request("backed.qcow2"),
        image_request("cut.vmdk"),
        image_request("data.raw"),
        with_platform,
        wrong_arch,
    ] {
        ids.push(e.import_image(sub(), r).await.unwrap().id);
    }
    ids.push(
        e.import_snapshot(
            sub(),
            ImportSnapshotRequest {
                disk_container: from_bucket("data.raw"),
                ..ImportSnapshotRequest::default()
            },
        )
        .await
        .unwrap()
        .id,
    );
    let ended = run_until_ended(e, &ids).await;
    let msg = |i: usize| ended[i].status_message.clone();
    assert_eq!(ended[0].status, status::DELETED);
    assert!(msg(0).starts_with("ClientError: Disk validation failed [Unsafe QCOW2 File] on disk 1 (s3://src/backed.qcow2)"), "{}", msg(0));
    assert!(msg(0).contains("backing"), "{}", msg(0));
    assert_eq!(ended[1].status, status::DELETED);
    assert!(
        msg(1).starts_with("ClientError: Disk validation failed ["),
        "{}",
        msg(1)
    );
    assert!(msg(1).contains("VMDK"), "{}", msg(1));
    assert_eq!(ended[2].status, status::DELETED);
    assert!(
        msg(2).starts_with(
            "ClientError: Unknown OS / Missing OS files: no operating system was found on disk 1"
        ),
        "{}",
        msg(2)
    );
    assert!(msg(2).contains("Platform"), "{}", msg(2));
    assert_eq!(ended[3].status, status::COMPLETED, "{}", msg(3));
    let d = TaskDetail::of(&ended[3]);
    assert_eq!(
        (
            d.platform.as_deref(),
            d.architecture.as_deref(),
            d.boot_mode.as_deref()
        ),
        (Some("Linux"), Some("arm64"), Some("uefi"))
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("no operating system was identified"))
    );
    assert_eq!(ended[4].status, status::DELETED);
    assert!(
        msg(4).contains("Architecture arm64 was requested but disk 1 holds a x86_64"),
        "{}",
        msg(4)
    );
    assert_eq!(ended[5].status, status::COMPLETED, "{}", msg(5));
    for t in &ended {
        let made = e.catalog().snapshots_of_task(&t.id).await.unwrap().len();
        assert_eq!(made, usize::from(t.status == status::COMPLETED), "{}", t.id);
    }
    assert_eq!(e.store().list().await.unwrap().len(), 2);
    assert!(env.volumes().is_empty());
}
