//! Round trips through every writer with the real binary: raw → `vmie convert -O X` → checked
//! by `qemu-img compare` and `qemu-img check`; X → `vmie convert -O raw` identical to the
//! source. And OVA: written, inspected, converted back; a tampered OVA refused.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::{assert_same, mixed_raw, run, s, tool, vmie};

/// (vmie -O, -o options, qemu-img format name, whether `qemu-img check` supports it)
const WRITERS: &[(&str, &str, &str, bool)] = &[
    ("raw", "", "raw", false),
    ("vmdk", "", "vmdk", true),
    ("vmdk", "adapter_type=lsilogic", "vmdk", true),
    ("vhd", "", "vpc", false),
    ("vhd", "subformat=fixed", "vpc", false),
    ("vhdx", "", "vhdx", true),
    ("qcow2", "", "qcow2", true),
    ("qcow2", "compression=zlib", "qcow2", true),
    ("qcow2", "compression=zstd", "qcow2", true),
];

#[test]
fn test_export_every_writer_round_trips_and_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    let want = std::fs::read(&src).unwrap();
    for (i, (fmt, opts, qfmt, check)) in WRITERS.iter().enumerate() {
        let out = dir.path().join(format!("out{i}.{fmt}"));
        let mut cmd = vmie();
        cmd.args(["convert", "-O", fmt]);
        if !opts.is_empty() {
            cmd.args(["-o", opts]);
        }
        run(cmd.args([s(&src), s(&out)]));
        tool(
            "qemu-img",
            &["compare", "-f", "raw", "-F", qfmt, s(&src), s(&out)],
        );
        if *check {
            let o = tool("qemu-img", &["check", "-f", qfmt, s(&out)]);
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(text.contains("No errors"), "{fmt} {opts}: {text}");
        }
        let back = dir.path().join(format!("back{i}.raw"));
        run(vmie().args(["convert", "-O", "raw", s(&out), s(&back)]));
        assert_same(
            &std::fs::read(&back).unwrap(),
            &want,
            &format!("{fmt} {opts} back to raw"),
        );
    }
}

#[test]
fn test_export_ova_inspects_and_converts_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    let ova = dir.path().join("web01.ova");
    run(vmie().args([
        "convert",
        "-p",
        "-O",
        "ova",
        "-o",
        "cpus=4,memory=8192,os_type=debian12_64Guest",
        s(&src),
        s(&ova),
    ]));
    let o = tool("tar", &["-tf", s(&ova)]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["web01.ovf", "web01-disk1.vmdk", "web01.mf"]
    );
    let o = run(vmie().args(["info", "--json", s(&ova)]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "ova");
    assert_eq!(v["cpus"], 4);
    assert_eq!(v["memory-mib"], 8192);
    assert_eq!(v["os-type"], "debian12_64Guest");
    assert_eq!(v["disks"][0]["format"], "vmdk");
    assert_eq!(v["disks"][0]["subformat"], "streamOptimized");
    assert_eq!(v["disks"][0]["virtual-size"], 12 << 20);
    let back = dir.path().join("back.raw");
    run(vmie().args(["convert", s(&ova), s(&back)]));
    assert_same(
        &std::fs::read(&back).unwrap(),
        &std::fs::read(&src).unwrap(),
        "ova back to raw",
    );
    // No temporary VMDK left beside the output.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial") || n.starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // One byte of the disk changed inside the archive: refused, nothing written.
    let mut bytes = std::fs::read(&ova).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    let bad = dir.path().join("bad.ova");
    std::fs::write(&bad, bytes).unwrap();
    let out = dir.path().join("never.raw");
    let o = Command::new(env!("CARGO_BIN_EXE_vmie"))
        .args(["convert", s(&bad), s(&out)])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ova-manifest-mismatch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
}

#[test]
fn test_export_bad_option_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    for opts in ["cpus=0", "memory=lots", "os_type=a b", "compression=lz4"] {
        let o = Command::new(env!("CARGO_BIN_EXE_vmie"))
            .args([
                "convert",
                "-O",
                "ova",
                "-o",
                opts,
                s(&src),
                s(&dir.path().join("x.ova")),
            ])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{opts}");
        assert!(!String::from_utf8_lossy(&o.stderr).is_empty());
    }
}
