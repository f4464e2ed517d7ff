//! A worker process SIGKILLed in the middle of an import: after a restart the task
//! completes exactly once, nothing was half-visible in between, the intermediate volume the
//! dead process left is destroyed (and reported), and no plaintext remains in the data folder.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

#[path = "../../engine/tests/harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;

const MARKER: &str = "VMIE-CRASH-MARKER-0b6f1d7a";

fn vmie(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("VMIE_LEASE_SECONDS", "2")
        .output()
        .unwrap()
}

fn json(data: &Path, args: &[&str]) -> serde_json::Value {
    let o = vmie(data, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn volumes(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("scratch"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sigkill_during_an_import_then_restart() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(data.join("buckets/src")).unwrap();

    // A Debian disk followed by 320 MiB of random data, so the import takes seconds.
    let raw = debian_disk(work.path(), MARKER, 24);
    fill_random(&raw, 32..352, 0x9e37_79b9_7f4a_7c15);
    let qcow = qemu_convert(&raw, "qcow2", "", "big.qcow2");
    std::fs::rename(&qcow, data.join("buckets/src/big.qcow2")).unwrap();

    let t = json(
        &data,
        &[
            "import-image",
            "--bucket",
            "src",
            "--key",
            "big.qcow2",
            "--no-wait",
            "--json",
        ],
    );
    let id = t["TaskId"].as_str().unwrap().to_string();

    let mut child = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .env("VMIE_BOOT_CHECK", "off")
        .arg("--data-dir")
        .arg(&data)
        .args(["work", "--workers", "1", "--lease-seconds", "2"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The kill point is checked with the worker frozen (SIGSTOP): the task is active and
    // committing its volume to the store ("updating") and the volume exists. Otherwise the
    // worker runs on for a short while (SIGCONT) and is looked at again; frozen most of the
    // time, it cannot finish between two looks however fast the import is.
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let signal = |s| rustix::process::kill_process(pid, s).unwrap();
    let t0 = Instant::now();
    let seen = loop {
        signal(rustix::process::Signal::STOP);
        let tasks = json(&data, &["tasks", "--json"]);
        let task = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["TaskId"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(
            task["Status"], "active",
            "the import ended before the kill: {task}"
        );
        if task["StatusMessage"] == "updating" && !volumes(&data).is_empty() {
            break task;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "never reached updating: {task}"
        );
        signal(rustix::process::Signal::CONT);
        std::thread::sleep(Duration::from_millis(10));
    };
    // SIGKILL (delivered to a stopped process too): no destructor runs, no cleanup happens.
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(seen["Status"], "active");
    let left = volumes(&data);
    assert!(
        !left.is_empty(),
        "the killed worker held an intermediate volume"
    );
    for v in &left {
        let bytes = std::fs::read(data.join("scratch").join(v)).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{v} holds plaintext"
        );
    }
    assert_eq!(json(&data, &["images", "--json"]), serde_json::json!([]));

    // Restart: the volume is destroyed and reported, the lease expires, the task reruns.
    let o = vmie(&data, &["wait", &id, "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("destroyed 1 intermediate volume"), "{err}");
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["Status"], "completed", "{done}");
    assert_eq!(done["Progress"], "100");

    let images = json(&data, &["images", "--json"]);
    let images = images.as_array().unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    let snap = images[0]["BlockDeviceMappings"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = json(&data, &["snapshot", "list", "--json"]);
    let stored: Vec<&str> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        stored,
        [snap.as_str()],
        "exactly the published snapshot is stored"
    );
    assert!(volumes(&data).is_empty(), "{:?}", volumes(&data));
    let hits = files_containing(&data, MARKER.as_bytes(), &data.join("buckets"));
    assert!(hits.is_empty(), "plaintext in {hits:?}");

    // The command line keeps the API's rule: a snapshot an image uses is not deleted.
    let o = vmie(&data, &["snapshot", "delete", &snap]);
    assert!(!o.status.success(), "deleted a snapshot in use");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("InvalidSnapshot.InUse"), "{err}");
    assert_eq!(
        json(&data, &["snapshot", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "the snapshot is still stored"
    );
}
