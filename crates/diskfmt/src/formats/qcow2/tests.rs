//! qcow2 reader tests against images made by qemu-img and qemu-io.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::testutil::{
    assert_mutations_do_not_panic, assert_same_as_qemu, open_path, qemu_img, tmp, write_sample_raw,
};
use crate::{Disk, ExtentKind, Refusal};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn qemu_io(img: &Path, cmd: &str) {
    let out =
        crate::testutil::output(Command::new("qemu-io").args(["-f", "qcow2", "-c", cmd, p(img)]));
    assert!(
        out.status.success(),
        "qemu-io {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn variant(dir: &Path, name: &str, size: u64, opts: &[&str]) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    write_sample_raw(&raw, size);
    let img = dir.join(format!("{name}.qcow2"));
    let mut args = vec!["convert", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[p(&raw), p(&img)]);
    qemu_img(&args);
    img
}

fn check_extents(disk: &dyn Disk) {
    let ex = disk.extents(0, u64::MAX).unwrap();
    assert_eq!(ex.first().unwrap().offset, 0);
    assert_eq!(ex.last().unwrap().end(), disk.virtual_size());
    for w in ex.windows(2) {
        assert_eq!(w[0].end(), w[1].offset);
        assert_ne!(w[0].kind, w[1].kind);
    }
}

const VARIANTS: &[(&str, &[&str])] = &[
    ("v2", &["-o", "compat=0.10"]),
    ("v3", &["-o", "compat=1.1"]),
    ("c4k", &["-o", "cluster_size=4096"]),
    ("c2m", &["-o", "cluster_size=2M"]),
    ("zlib", &["-c"]),
    ("zstd", &["-c", "-o", "compression_type=zstd"]),
    ("zlib4k", &["-c", "-o", "cluster_size=4096"]),
    ("extl2", &["-o", "extended_l2=on,cluster_size=128k"]),
    ("extl2-64k", &["-o", "extended_l2=on"]),
    ("prealloc", &["-o", "preallocation=metadata"]),
];

#[test]
fn test_qcow2_variants_read_same_as_qemu() {
    let dir = tmp();
    for (name, opts) in VARIANTS {
        let img = variant(dir.path(), name, 8 << 20, opts);
        let disk = assert_same_as_qemu(&img);
        check_extents(&*disk);
        let info = disk.info();
        assert_eq!(
            info.subformat.as_deref(),
            Some(if *name == "v2" { "v2" } else { "v3" }),
            "{name}"
        );
    }
}

#[test]
fn test_qcow2_odd_size_and_zero_clusters_same_as_qemu() {
    let dir = tmp();
    let img = variant(dir.path(), "odd", (5 << 20) + 512, &[]);
    qemu_io(&img, "write -z 0 1M");
    qemu_io(&img, "write -z -u 2M 128k");
    qemu_io(&img, "write -P 0x41 4M 4k");
    let disk = assert_same_as_qemu(&img);
    let ex = disk.extents(0, 1 << 20).unwrap();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].kind, ExtentKind::Zero);
    // Extended L2 with zeroed subclusters.
    let img = variant(
        dir.path(),
        "extz",
        4 << 20,
        &["-o", "extended_l2=on,cluster_size=64k"],
    );
    qemu_io(&img, "write -z 8k 16k");
    qemu_io(&img, "write -P 0x7 70k 2k");
    assert_same_as_qemu(&img);
}

#[test]
fn test_qcow2_empty_image_is_all_zero_extents() {
    let dir = tmp();
    let img = dir.path().join("empty.qcow2");
    qemu_img(&["create", "-f", "qcow2", p(&img), "1T"]);
    let disk = open_path(&img).unwrap();
    assert_eq!(disk.virtual_size(), 1 << 40);
    let ex = disk.extents(0, u64::MAX).unwrap();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].kind, ExtentKind::Zero);
}

fn refusal_of(path: &Path) -> String {
    let err = open_path(path).err().expect("must be refused");
    err.reason_code().to_string()
}

#[test]
fn test_qcow2_backing_file_refused() {
    let dir = tmp();
    let base = dir.path().join("base.qcow2");
    qemu_img(&["create", "-f", "qcow2", p(&base), "4M"]);
    let child = dir.path().join("child.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        p(&base),
        "-F",
        "qcow2",
        p(&child),
    ]);
    assert_eq!(refusal_of(&child), "backing-file");
}

#[test]
fn test_qcow2_external_data_file_refused() {
    let dir = tmp();
    let img = dir.path().join("d.qcow2");
    let data = dir.path().join("data.raw");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", p(&data)),
        p(&img),
        "4M",
    ]);
    assert_eq!(refusal_of(&img), "external-data-file");
}

#[test]
fn test_qcow2_luks_encryption_refused() {
    let dir = tmp();
    let img = dir.path().join("e.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s0,data=hunter2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0",
        p(&img),
        "4M",
    ]);
    assert_eq!(refusal_of(&img), "encrypted");
}

#[test]
fn test_qcow2_unknown_incompatible_bit_refused() {
    let dir = tmp();
    let img = variant(dir.path(), "u", 4 << 20, &[]);
    let mut b = std::fs::read(&img).unwrap();
    b[72 + 7] |= 0x40; // incompatible bit 6
    std::fs::write(&img, &b).unwrap();
    assert_eq!(refusal_of(&img), "unknown-incompatible-features");
}

#[test]
fn test_qcow2_l1_and_l2_pointers_past_eof_refused() {
    let dir = tmp();
    let img = variant(dir.path(), "l1", 4 << 20, &[]);
    let b = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(b[40..48].try_into().unwrap()) as usize;
    let mut bad = b.clone();
    bad[l1..l1 + 8].copy_from_slice(&(1u64 << 40).to_be_bytes());
    std::fs::write(&img, &bad).unwrap();
    assert_eq!(refusal_of(&img), "pointer-out-of-bounds");
    // An L2 entry pointing past the end.
    let l2 = (u64::from_be_bytes(b[l1..l1 + 8].try_into().unwrap()) & super::OFFSET_MASK) as usize;
    let mut bad = b.clone();
    bad[l2..l2 + 8].copy_from_slice(&((1u64 << 63) | (1u64 << 41)).to_be_bytes());
    std::fs::write(&img, &bad).unwrap();
    assert_eq!(refusal_of(&img), "pointer-out-of-bounds");
}

#[test]
fn test_qcow2_truncated_refused() {
    let dir = tmp();
    let img = variant(dir.path(), "t", 4 << 20, &[]);
    let b = std::fs::read(&img).unwrap();
    for cut in [50, 100, 70_000, b.len() / 2, b.len() - 1] {
        std::fs::write(&img, &b[..cut]).unwrap();
        assert!(open_path(&img).is_err(), "cut at {cut} was accepted");
    }
}

#[test]
fn test_qcow2_mutations_do_not_panic() {
    let dir = tmp();
    for (name, opts) in [
        ("m", &[][..]),
        ("mz", &["-c"][..]),
        ("mzs", &["-c", "-o", "compression_type=zstd"][..]),
        ("mx", &["-o", "extended_l2=on"][..]),
    ] {
        let img = variant(dir.path(), name, 4 << 20, opts);
        let bytes = std::fs::read(&img).unwrap();
        assert_mutations_do_not_panic(&bytes, 200, 4 << 20);
    }
}

#[test]
fn test_qcow2_header_fields_by_hand() {
    let limits = crate::Limits::default();
    let mut h = vec![0u8; 4096];
    h[..4].copy_from_slice(b"QFI\xfb"); // magic
    h[4..8].copy_from_slice(&3u32.to_be_bytes()); // version
    h[20..24].copy_from_slice(&16u32.to_be_bytes()); // cluster_bits: 64 KiB
    h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes()); // size: 1 GiB
    h[36..40].copy_from_slice(&2u32.to_be_bytes()); // l1_size
    h[40..48].copy_from_slice(&0x30000u64.to_be_bytes()); // l1_table_offset
    h[48..56].copy_from_slice(&0x10000u64.to_be_bytes()); // refcount_table_offset
    h[56..60].copy_from_slice(&1u32.to_be_bytes()); // refcount_table_clusters
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
    h[100..104].copy_from_slice(&112u32.to_be_bytes()); // header_length
    let parsed = super::header::Header::parse(&h, &limits).unwrap();
    assert_eq!((parsed.cluster_size(), parsed.size), (65536, 1 << 30));
    let mut bad = h.clone();
    bad[20..24].copy_from_slice(&30u32.to_be_bytes());
    assert!(super::header::Header::parse(&bad, &limits).is_err());
    let mut enc = h.clone();
    enc[32..36].copy_from_slice(&1u32.to_be_bytes()); // AES
    assert!(matches!(
        super::header::Header::parse(&enc, &limits),
        Err(crate::DiskError::Refused(Refusal::Encrypted { .. }))
    ));
    let mut big = h.clone();
    big[24..32].copy_from_slice(&(17u64 << 40).to_be_bytes());
    assert_eq!(
        super::header::Header::parse(&big, &limits)
            .unwrap_err()
            .reason_code(),
        "virtual-size-too-large"
    );
}

/// The metadata rules must not refuse what qemu-img writes: internal snapshots (taken, then
/// written over), persistent bitmaps, version 2, every refcount width, lazy refcounts,
/// preallocation, the smallest and largest clusters, a shrunk image.
#[test]
fn test_qcow2_qemu_made_metadata_variants_open_same_as_qemu() {
    let dir = tmp();
    let make = |name: &str, opts: &[&str]| variant(dir.path(), name, 4 << 20, opts);
    let mut images = vec![
        make("rc1", &["-o", "refcount_bits=1"]),
        make("rc64", &["-o", "refcount_bits=64"]),
        make("lazy", &["-o", "lazy_refcounts=on"]),
        make("falloc", &["-o", "preallocation=falloc"]),
        make("c512", &["-o", "cluster_size=512"]),
        make("c2m-v2", &["-o", "cluster_size=2M,compat=0.10"]),
    ];
    for (name, opts) in [("snap", &[][..]), ("snap-v2", &["-o", "compat=0.10"][..])] {
        let img = make(name, opts);
        qemu_img(&["snapshot", "-c", "first", p(&img)]);
        qemu_io(&img, "write -P 0x33 1M 64k");
        qemu_img(&["snapshot", "-c", "second", p(&img)]);
        qemu_io(&img, "write -z 0 128k");
        images.push(img);
    }
    let img = make("bitmap", &[]);
    qemu_img(&["bitmap", "--add", p(&img), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "512k", p(&img), "b1"]);
    images.push(img);
    let img = make("shrunk", &[]);
    qemu_img(&["resize", "-f", "qcow2", "--shrink", p(&img), "3M"]);
    images.push(img);
    let img = make("deleted-snap", &[]);
    qemu_img(&["snapshot", "-c", "gone", p(&img)]);
    qemu_img(&["snapshot", "-d", "gone", p(&img)]);
    images.push(img);
    for img in &images {
        qemu_img(&["check", p(img)]);
        assert_same_as_qemu(img);
    }
}
