//! `vmie convert -O raw` of every input variant, made by `qemu-img`, must be byte-identical to
//! the source disk and to `qemu-img convert -O raw` of the same file.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

mod common;

use std::path::Path;

use common::{
    assert_same, assert_source_then_zeros, ext4_disk, mixed_raw, qemu_raw, run, s, tool, vmie,
};

/// (name, qemu-img output format, extra options) for every input variant.
const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("vmdk-monolithicSparse", "vmdk", &[]),
    (
        "vmdk-streamOptimized",
        "vmdk",
        &["-o", "subformat=streamOptimized"],
    ),
    ("vhd-dynamic", "vpc", &[]),
    ("vhd-fixed", "vpc", &["-o", "subformat=fixed"]),
    ("vhdx-dynamic", "vhdx", &[]),
    ("vhdx-fixed", "vhdx", &["-o", "subformat=fixed"]),
    ("qcow2-v2", "qcow2", &["-o", "compat=0.10"]),
    ("qcow2-v3", "qcow2", &["-o", "compat=1.1"]),
    ("qcow2-zlib", "qcow2", &["-c"]),
    (
        "qcow2-zstd",
        "qcow2",
        &["-c", "-o", "compression_type=zstd"],
    ),
    ("qcow2-extended-l2", "qcow2", &["-o", "extended_l2=on"]),
    ("vdi-dynamic", "vdi", &[]),
    ("vdi-static", "vdi", &["-o", "static=on"]),
];

fn check_all_variants(src: &Path, dir: &Path) {
    let source = std::fs::read(src).unwrap();
    for (name, fmt, opts) in VARIANTS {
        let img = dir.join(format!("{name}.img"));
        let mut args = vec!["convert", "-O", fmt];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[s(src), s(&img)]);
        tool("qemu-img", &args);

        let out = dir.join(format!("{name}.vmie.raw"));
        run(vmie().args(["convert", "-O", "raw", s(&img), s(&out)]));
        let ours = std::fs::read(&out).unwrap();
        let theirs = qemu_raw(&img, fmt, dir);
        assert_same(&ours, &theirs, &format!("{name}: vmie vs qemu-img"));
        assert_source_then_zeros(&ours, &source, &format!("{name}: vmie vs source"));
        // Holes stay holes: the output occupies no more blocks than the source has data.
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            blocks <= source.len() as u64,
            "{name}: output is not sparse ({blocks} bytes allocated)"
        );
        std::fs::remove_file(out).unwrap();
        std::fs::remove_file(img).unwrap();
    }
}

#[test]
fn test_convert_mixed_disk_every_format_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    check_all_variants(&src, dir.path());
}

#[test]
fn test_convert_ext4_partitioned_disk_every_format_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let src = ext4_disk(dir.path());
    check_all_variants(&src, dir.path());
}

#[test]
fn test_convert_raw_input_is_identical_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    let out = dir.path().join("out.raw");
    run(vmie().args(["convert", "-p", s(&src), s(&out)]));
    assert_same(
        &std::fs::read(&out).unwrap(),
        &std::fs::read(&src).unwrap(),
        "raw",
    );
}

#[test]
fn test_convert_iso_input_is_read_as_raw_data() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("cd");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("README.TXT"), b"vmie iso test\n").unwrap();
    let iso = dir.path().join("cd.iso");
    tool(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "VMIETEST",
            "-o",
            s(&iso),
            s(&tree),
        ],
    );
    let info = run(vmie().args(["info", "--json", s(&iso)]));
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["format"], "iso");
    assert_eq!(v["details"]["volume_id"], "VMIETEST");
    let out = dir.path().join("cd.raw");
    run(vmie().args(["convert", s(&iso), s(&out)]));
    assert_same(
        &std::fs::read(&out).unwrap(),
        &std::fs::read(&iso).unwrap(),
        "iso",
    );
}

#[test]
fn test_info_json_reports_format_subformat_and_sizes_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    for (name, fmt, opts, sub) in [
        ("a.qcow2", "qcow2", &[][..], "v3"),
        (
            "b.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"][..],
            "streamOptimized",
        ),
        ("c.vhd", "vpc", &[][..], "dynamic"),
        ("d.vhdx", "vhdx", &[][..], "dynamic"),
        ("e.vdi", "vdi", &[][..], "dynamic"),
    ] {
        let img = dir.path().join(name);
        let mut args = vec!["convert", "-O", fmt];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[s(&src), s(&img)]);
        tool("qemu-img", &args);
        let q = tool("qemu-img", &["info", "--output=json", s(&img)]);
        let q: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
        let ours = run(vmie().args(["info", "--json", s(&img)]));
        let v: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
        let expect_fmt = if fmt == "vpc" { "vhd" } else { fmt };
        assert_eq!(v["format"], expect_fmt, "{name}");
        assert_eq!(v["subformat"], sub, "{name}");
        assert_eq!(v["virtual-size"], q["virtual-size"], "{name}");
        assert_eq!(v["safety"]["status"], "ok", "{name}");
        let alloc = v["allocated-size"].as_u64().unwrap();
        assert!(
            alloc > 0 && alloc <= v["virtual-size"].as_u64().unwrap(),
            "{name}"
        );
        let text = run(vmie().args(["info", s(&img)]));
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(
            text.contains(&format!("file format: {expect_fmt}")),
            "{text}"
        );
        assert!(text.contains("safety: ok"), "{text}");
    }
}
