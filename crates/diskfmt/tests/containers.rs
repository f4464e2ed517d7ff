//! Containers vmie recognizes but does not read, made at test time by the tools that write
//! them (qemu-img, cryptsetup, gzip, xz, zstd, bzip2, lz4, zip, 7zz): each is refused with its
//! name, never read as raw. And what raw means: a file that is not a whole number of sectors is
//! not a disk; an ISO hybrid made by xorriso is read as the raw data it is.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use diskfmt::{DiskError, FileSource, Limits};

/// Runs `name` (Debian package `package`); panics naming both when it is missing.
fn tool(name: &str, package: &str, args: &[&str]) -> Output {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("this test needs `{name}` (Debian package {package}), which cannot be run: {e}; install it or run .ci/run")
    });
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open(path: &Path) -> diskfmt::Result<Box<dyn diskfmt::Disk>> {
    diskfmt::open(Arc::new(FileSource::open(path)?), &Limits::default())
}

fn refusal(path: &Path) -> DiskError {
    match open(path) {
        Ok(_) => panic!("{} was read as a disk", path.display()),
        Err(e) => e,
    }
}

/// Asserts `path` is refused as the container `name` with reason code `code`, by `open` and
/// by `inspect` alike.
fn assert_refused_as(path: &Path, name: &str, code: &str) {
    let e = refusal(path);
    assert_eq!(e.reason_code(), code, "{}: {e}", path.display());
    assert_eq!(e.name(), Some(name), "{}: {e}", path.display());
    let insp = diskfmt::inspect(
        Arc::new(FileSource::open(path).unwrap()),
        &Limits::default(),
    )
    .unwrap();
    let v = serde_json::to_value(&insp.verdict).unwrap();
    assert_eq!(v["reason"], code, "{v}");
    assert_eq!(v["name"], name, "{v}");
}

/// A 4 MiB raw disk with some data, and a qcow2 of it made by qemu-img.
fn sample(dir: &Path) -> (PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    let mut b = vec![0u8; 4 << 20];
    for (i, x) in b[..(1 << 20)].iter_mut().enumerate() {
        *x = (i * 7 % 251) as u8;
    }
    std::fs::write(&raw, b).unwrap();
    let q = dir.join("disk.qcow2");
    tool(
        "qemu-img",
        "qemu-utils",
        &["convert", "-O", "qcow2", s(&raw), s(&q)],
    );
    (raw, q)
}

#[test]
fn test_formats_qemu_img_writes_but_vmie_does_not_read_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (fmt, name) in [("parallels", "parallels"), ("qed", "qed"), ("qcow", "qcow")] {
        let img = dir.path().join(format!("a.{fmt}"));
        tool(
            "qemu-img",
            "qemu-utils",
            &["create", "-q", "-f", fmt, s(&img), "4M"],
        );
        assert_refused_as(&img, name, "unsupported-format");
        // With data in it too (converted from a raw disk).
        let (raw, _) = sample(dir.path());
        let full = dir.path().join(format!("full.{fmt}"));
        tool(
            "qemu-img",
            "qemu-utils",
            &["convert", "-O", fmt, s(&raw), s(&full)],
        );
        assert_refused_as(&full, name, "unsupported-format");
    }
}

#[test]
fn test_luks_volumes_refused_as_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    // qemu-img's own LUKS format (a LUKS1 header).
    let q = dir.path().join("q.luks");
    tool(
        "qemu-img",
        "qemu-utils",
        &[
            "create",
            "-q",
            "-f",
            "luks",
            "--object",
            "secret,id=s0,data=hunter2",
            "-o",
            "key-secret=s0,iter-time=10",
            s(&q),
            "4M",
        ],
    );
    assert_refused_as(&q, "luks", "encrypted");
    // cryptsetup luksFormat on a file, LUKS1 and LUKS2.
    let key = dir.path().join("key");
    std::fs::write(&key, b"hunter2").unwrap();
    for kind in ["luks1", "luks2"] {
        let v = dir.path().join(format!("v.{kind}"));
        std::fs::write(&v, vec![0u8; 20 << 20]).unwrap();
        tool(
            "cryptsetup",
            "cryptsetup-bin",
            &[
                "luksFormat",
                "--batch-mode",
                "--type",
                kind,
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                s(&key),
                s(&v),
            ],
        );
        assert_refused_as(&v, "luks", "encrypted");
    }
}

#[test]
fn test_compressed_disk_images_refused_as_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, q) = sample(dir.path());
    let compressors: [(&str, &str, &str, &[&str]); 5] = [
        ("gzip", "gzip", "gz", &["-k", "-f"]),
        ("xz", "xz-utils", "xz", &["-k", "-f", "-0"]),
        ("zstd", "zstd", "zst", &["-q", "-k", "-f"]),
        ("bzip2", "bzip2", "bz2", &["-k", "-f"]),
        ("lz4", "lz4", "lz4", &["-q", "-f", "-m"]),
    ];
    for (name, package, ext, args) in compressors {
        let mut a = args.to_vec();
        a.push(s(&q));
        tool(name, package, &a);
        let out = dir.path().join(format!("disk.qcow2.{ext}"));
        assert_refused_as(&out, name, "compressed");
    }
    let zip = dir.path().join("disk.zip");
    tool("zip", "zip", &["-q", "-j", s(&zip), s(&raw)]);
    assert_refused_as(&zip, "zip", "compressed");
    let sevenz = dir.path().join("disk.7z");
    tool("7zz", "7zip", &["a", "-bd", "-bso0", s(&sevenz), s(&raw)]);
    assert_refused_as(&sevenz, "7z", "compressed");
}

#[test]
fn test_files_that_are_not_disks_refused_not_a_disk() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("note.txt", b"hello, vm\n".to_vec()),
        ("empty", Vec::new()),
        ("odd.img", vec![0x5a; (1 << 20) + 1]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let e = refusal(&p);
        assert_eq!(e.reason_code(), "not-a-disk", "{name}: {e}");
    }
    // A whole number of sectors that matches no signature is a raw disk.
    let p = dir.path().join("sectors.img");
    std::fs::write(&p, vec![0x5a; 3 * 512]).unwrap();
    assert_eq!(open(&p).unwrap().virtual_size(), 3 * 512);
}

#[test]
fn test_iso_hybrids_made_by_xorriso_read_as_raw() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("cd");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("A.TXT"), b"hybrid").unwrap();
    let efi = dir.path().join("efi.img");
    std::fs::write(&efi, vec![0u8; 1440 << 10]).unwrap();
    for (name, extra, table) in [
        ("mbr.iso", vec!["--protective-msdos-label"], "mbr"),
        (
            "gpt.iso",
            vec![
                "-append_partition",
                "2",
                "0xef",
                s(&efi),
                "-appended_part_as_gpt",
            ],
            "gpt",
        ),
    ] {
        let iso = dir.path().join(name);
        let mut args = vec!["-as", "mkisofs", "-quiet", "-V", "HYBRID", "-o", s(&iso)];
        args.extend(extra);
        args.push(s(&tree));
        tool("xorriso", "xorriso", &args);
        let disk = open(&iso).unwrap();
        let info = disk.info();
        assert_eq!(info.format, diskfmt::Format::Iso);
        assert!(
            info.details.contains(&("hybrid".into(), table.into())),
            "{info:?}"
        );
        let mut all = vec![0u8; usize::try_from(disk.virtual_size()).unwrap()];
        disk.read_at(&mut all, 0).unwrap();
        assert_eq!(all, std::fs::read(&iso).unwrap());
    }
}

#[test]
fn test_split_vmdk_extent_on_its_own_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let desc = dir.path().join("split.vmdk");
    tool(
        "qemu-img",
        "qemu-utils",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            s(&desc),
            "3G",
        ],
    );
    // The descriptor names other files; each extent is a sparse extent without a descriptor.
    assert_eq!(refusal(&desc).reason_code(), "external-extent");
    for extent in ["split-s001.vmdk", "split-s002.vmdk"] {
        assert_refused_as(
            &dir.path().join(extent),
            "vmdk-extent",
            "unsupported-format",
        );
    }
}
