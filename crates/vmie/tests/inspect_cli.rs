//! `vmie inspect` on a real disk (MBR + ext4 made by sfdisk and mkfs.ext4 -d) wrapped by
//! qemu-img, and on an OVA holding it.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{ext4_disk, run, s, tool, vmie};

#[test]
fn test_inspect_cli_names_distribution_through_qcow2_and_ova() {
    let dir = tempfile::tempdir().unwrap();
    let raw = ext4_disk(dir.path());
    let qcow2 = dir.path().join("d.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&qcow2)]);
    let ova = dir.path().join("d.ova");
    run(vmie().args(["convert", "-O", "ova", s(&raw), s(&ova)]));
    for img in [&qcow2, &ova] {
        let o = run(vmie().args(["inspect", "--json", s(img)]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["platform"], "linux", "{}", s(img));
        assert_eq!(v["distribution"], "debian");
        assert_eq!(v["version"], "12");
        assert_eq!(v["root"], 1);
        assert_eq!(v["volumes"][0]["filesystem"]["kind"], "ext4");
    }
    let o = run(vmie().args(["inspect", s(&qcow2)]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("distribution: debian"), "{text}");
    assert!(text.contains("warning: no bootloader found"), "{text}");
}
