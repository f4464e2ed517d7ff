//! `vmie snapshot` and `vmie kms` end to end: an image made by qemu-img goes into the
//! encrypted store and comes back out byte-identical; tampering and disabled keys are refused.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_same, mixed_raw, qemu_raw, run, s, tool, vmie};

fn vm(data: &Path) -> Command {
    let mut c = vmie();
    c.env("VMIE_DATA", data)
        .env_remove("VMIE_ROOT_KEY")
        .env_remove("VMIE_S3_BUCKET");
    c
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn test_snapshot_roundtrip_verify_tamper_and_disabled_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = mixed_raw(dir.path());
    let img = dir.path().join("disk.vhd");
    tool("qemu-img", &["convert", "-O", "vpc", s(&src), s(&img)]);

    let out = run(vm(&data).args(["snapshot", "create", "--json", s(&img)]));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = summary["snapshot_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("snap-"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("root.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let back = dir.path().join("back.raw");
    run(vm(&data).args(["snapshot", "export", &id, s(&back)]));
    assert_same(
        &std::fs::read(&back).unwrap(),
        &qemu_raw(&img, "vpc", dir.path()),
        "export vs qemu-img",
    );
    let v = run(vm(&data).args(["snapshot", "verify", &id]));
    assert!(String::from_utf8_lossy(&v.stdout).contains("chunks verified"));

    // Stored twice: nothing new is written.
    let again = run(vm(&data).args(["snapshot", "create", "--json", s(&img)]));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["added_bytes"], 0);

    // The key is the default EBS key; disabling it stops reads with a clear error and writes
    // nothing to OUT.
    let key = summary["kms_key_id"].as_str().unwrap();
    run(vm(&data).args(["kms", "disable-key", key]));
    let blocked = dir.path().join("blocked.raw");
    let o = vm(&data)
        .args(["snapshot", "export", &id, s(&blocked)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(
        msg.contains("KMSKeyDisabled") && msg.contains("disabled"),
        "{msg}"
    );
    assert!(!blocked.exists());
    run(vm(&data).args(["kms", "enable-key", key]));

    // A flipped byte in a stored chunk is caught by verify (exit 1) and by export.
    let chunk = files_under(&data.join("objects/snapshots/chunks"))
        .into_iter()
        .next()
        .unwrap();
    let mut b = std::fs::read(&chunk).unwrap();
    let n = b.len();
    b[n - 20] ^= 0x80;
    std::fs::write(&chunk, b).unwrap();
    let o = vm(&data)
        .args(["snapshot", "verify", &id])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("failed verification"));
    let o = vm(&data)
        .args(["snapshot", "export", &id, s(&blocked)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!blocked.exists());

    // A refused image never becomes a snapshot.
    let child = dir.path().join("child.qcow2");
    std::fs::write(&child, b"QFI\xfb").unwrap();
    let o = vm(&data)
        .args(["snapshot", "create", s(&child)])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    let list = run(vm(&data).args(["snapshot", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

/// `snapshot_zstd_level`: a fast level stores the same disk in more bytes, both read back
/// identical (and verify), and a level out of range is refused by name before anything runs.
#[test]
fn test_snapshot_zstd_level_setting() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    let mut added = Vec::new();
    for level in ["19", "-7"] {
        let data = dir.path().join(format!("data{level}"));
        let out = run(vm(&data).env("VMIE_SNAPSHOT_ZSTD_LEVEL", level).args([
            "snapshot",
            "create",
            "--json",
            s(&src),
        ]));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = summary["snapshot_id"].as_str().unwrap().to_string();
        added.push(summary["added_bytes"].as_u64().unwrap());
        let back = dir.path().join(format!("back{level}.raw"));
        // Read back under the default level: the level is a property of the chunks.
        run(vm(&data).args(["snapshot", "export", &id, s(&back)]));
        assert_same(
            &std::fs::read(&back).unwrap(),
            &std::fs::read(&src).unwrap(),
            "export vs source",
        );
        run(vm(&data).args(["snapshot", "verify", &id]));
    }
    assert!(
        added[0] < added[1],
        "level 19 stored {} bytes, level -7 {}",
        added[0],
        added[1]
    );
    for bad in ["0", "20", "-8", "fast"] {
        let o = vm(&dir.path().join("bad"))
            .env("VMIE_SNAPSHOT_ZSTD_LEVEL", bad)
            .args(["snapshot", "list"])
            .output()
            .unwrap();
        assert_ne!(o.status.code(), Some(0));
        let msg = String::from_utf8_lossy(&o.stderr);
        assert!(msg.contains("snapshot_zstd_level"), "{bad}: {msg}");
    }
}
