//! The `booting` stage end to end: real guests (built at test time, see
//! `crates/bootcheck/tests/support/guests.rs`) imported through the engine and booted from
//! their encrypted intermediate volume. Tests wait for the task to end (a deadlock guard
//! only, far above any boot time); they never sleep on the clock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../bootcheck/tests/support/guests.rs"]
mod guests;
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog::Task;
use engine::{
    BootCheckMode, DiskContainer, Engine, ImportImageRequest, StageHook, TaskDetail, UrlPolicy,
};
use guests::{GuestSpec, Loader, MARKER};
use harness::{ACCOUNT, env_with, files_containing, from_bucket, snapshot_bytes, sub};

fn request(key: &str) -> ImportImageRequest {
    ImportImageRequest {
        disk_containers: vec![DiskContainer {
            format: Some("raw".into()),
            ..from_bucket(key)
        }],
        ..ImportImageRequest::default()
    }
}

async fn run_until_ended(engine: &Engine, id: &str) -> Task {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let e = engine.clone();
    let workers = tokio::spawn(async move { e.run_workers(1, rx).await });
    let t0 = Instant::now();
    let t = loop {
        let t = engine.catalog().task(ACCOUNT, id).await.unwrap();
        if t.ended() {
            break t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3600),
            "the task did not end: {} {}",
            t.status,
            t.status_message
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tx.send(true).unwrap();
    workers.await.unwrap();
    t
}

/// Stages entered, recorded by the stage hook.
type Seen = Arc<std::sync::Mutex<Vec<String>>>;

async fn boot_env(seen: &Seen, cancel_at_booting: bool) -> harness::Env {
    guests::need(
        "qemu-system-x86_64",
        "qemu-system-x86 (from the suite of qemu-utils)",
    );
    let s = seen.clone();
    env_with(None, &UrlPolicy::default(), move |cfg, cat| {
        cfg.boot_check.mode = BootCheckMode::Required;
        cfg.boot_check.memory_mib = 512;
        cfg.boot_check.kvm_timeout = Duration::from_secs(240);
        cfg.boot_check.tcg_timeout = Duration::from_secs(1200);
        cfg.lease = Duration::from_secs(10);
        let cat = cat.clone();
        cfg.on_stage = Some(StageHook(Arc::new(move |task: &str, stage: &str| {
            s.lock().unwrap().push(stage.to_string());
            if cancel_at_booting && stage == "booting" {
                tokio::runtime::Handle::current()
                    .block_on(cat.request_cancel(ACCOUNT, task))
                    .unwrap();
            }
        })));
    })
    .await
}

/// One boot test at a time: each checks that no QEMU of this process is left, which another
/// test's boot in progress would break (and two TCG boots on two cores only slow each other).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// QEMU processes that are children of this test process.
fn my_qemus() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let comm_ok = stat.contains("(qemu-system-");
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .unwrap_or("");
            comm_ok && ppid == me
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_booting_passes_keeps_evidence_and_leaves_nothing_in_plaintext() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seen = Seen::default();
    let env = boot_env(&seen, false).await;
    let work = tempfile::tempdir().unwrap();
    let g = guests::build(work.path(), &GuestSpec::good(Loader::Bios));
    env.upload(&g.disk, "guest.raw");
    let t = env
        .engine
        .import_image(sub(), request("guest.raw"))
        .await
        .unwrap();
    let t = run_until_ended(&env.engine, &t.id).await;
    assert_eq!(t.status, "completed", "{}", t.status_message);
    let stages = seen.lock().unwrap().clone();
    let pos = |s: &str| stages.iter().position(|x| x == s).unwrap();
    assert!(
        pos("validating") < pos("booting") && pos("booting") < pos("updating"),
        "{stages:?}"
    );

    let detail = TaskDetail::of(&t);
    let bc = detail.boot_check.clone().unwrap();
    assert_eq!(bc.status, "passed");
    assert_eq!(bc.bus.as_deref(), Some("virtio"));
    assert!(bc.evidence);

    // Evidence by task id and by image id, opened as the account.
    let ev = env.engine.boot_evidence(ACCOUNT, &t.id).await.unwrap();
    assert!(ev.report.passed);
    let a = ev.report.deciding().unwrap();
    assert!(a.console.contains("Linux version"));
    assert!(a.screen_png.as_ref().unwrap().starts_with(b"\x89PNG"));
    let ami = detail.image_id.clone().unwrap();
    let ev2 = env.engine.boot_evidence(ACCOUNT, &ami).await.unwrap();
    assert_eq!(ev2.task_id, t.id);
    assert!(
        env.engine
            .boot_evidence("999999999999", &t.id)
            .await
            .is_err()
    );

    // The snapshot is the image as uploaded: nothing the guest wrote reached it.
    let snap = &env
        .catalog()
        .image_of_task(&t.id)
        .await
        .unwrap()
        .unwrap()
        .block_devices[0]
        .snapshot_id
        .clone();
    assert!(snapshot_bytes(&env.engine, snap).await == std::fs::read(&g.disk).unwrap());
    // The guest wrote MARKER into its root filesystem: it is nowhere in the scratch or
    // data folder (the overlay was sealed, then deleted; the evidence is sealed).
    assert!(env.volumes().is_empty(), "{:?}", env.volumes());
    let hits = files_containing(env.data(), MARKER.as_bytes(), &env.data().join("none"));
    assert!(hits.is_empty(), "plaintext found in {hits:?}");
    assert!(my_qemus().is_empty());

    // Deregistering the image takes its evidence with it.
    env.catalog().delete_image(ACCOUNT, &ami).await.unwrap();
    let e = env.engine.boot_evidence(ACCOUNT, &t.id).await.unwrap_err();
    assert!(e.to_string().contains("gone with its image"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_booting_failure_is_first_boot_failure_with_evidence() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seen = Seen::default();
    let env = boot_env(&seen, false).await;
    let work = tempfile::tempdir().unwrap();
    let spec = GuestSpec {
        init: false,
        ..GuestSpec::good(Loader::Bios)
    };
    let g = guests::build(work.path(), &spec);
    env.upload(&g.disk, "noinit.raw");
    let t = env
        .engine
        .import_image(sub(), request("noinit.raw"))
        .await
        .unwrap();
    let t = run_until_ended(&env.engine, &t.id).await;
    assert_eq!(t.status, "deleted");
    assert!(
        t.status_message
            .starts_with("ClientError: FirstBootFailure: no init on the root filesystem"),
        "{}",
        t.status_message
    );
    let bc = TaskDetail::of(&t).boot_check.unwrap();
    assert_eq!(bc.status, "failed");
    let ev = env.engine.boot_evidence(ACCOUNT, &t.id).await.unwrap();
    assert!(!ev.report.passed);
    assert!(
        ev.report
            .deciding()
            .unwrap()
            .console
            .contains("No init found")
    );
    // Nothing was published or left behind.
    assert!(env.engine.store().list().await.unwrap().is_empty());
    assert!(env.catalog().images(ACCOUNT).await.unwrap().is_empty());
    assert!(env.volumes().is_empty(), "{:?}", env.volumes());
    assert!(my_qemus().is_empty());
    // The evidence of a failed task expires with it (nothing yet: it ended just now).
    assert_eq!(env.engine.expire_boot_evidence().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_booting_cancel_kills_qemu_and_removes_everything() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seen = Seen::default();
    let env = boot_env(&seen, true).await;
    let work = tempfile::tempdir().unwrap();
    let g = guests::build(work.path(), &GuestSpec::good(Loader::Bios));
    env.upload(&g.disk, "guest.raw");
    let t = env
        .engine
        .import_image(sub(), request("guest.raw"))
        .await
        .unwrap();
    let t = run_until_ended(&env.engine, &t.id).await;
    assert_eq!(t.status, "deleted");
    assert!(
        t.status_message.contains("cancelled"),
        "{}",
        t.status_message
    );
    assert!(seen.lock().unwrap().iter().any(|s| s == "booting"));
    assert!(my_qemus().is_empty());
    assert!(env.volumes().is_empty(), "{:?}", env.volumes());
    assert!(env.engine.store().list().await.unwrap().is_empty());
    assert!(env.engine.boot_evidence(ACCOUNT, &t.id).await.is_err());
}
