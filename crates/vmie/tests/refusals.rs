//! Every safety refusal, built with real tools, through the real binary: refused with its
//! named reason, exit status 3, never a panic, and nothing written where OUT would go.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{mixed_raw, names, s, tool, vmie};

/// Runs `vmie convert IMG OUT` and `vmie info IMG`; asserts both refuse with `reason` and that
/// no output (or temporary output) was created.
fn assert_refused(img: &Path, reason: &str) {
    let dir = img.parent().unwrap();
    let before = names(dir);
    let out = dir.join("out.raw");
    let r = vmie()
        .args(["convert", "-O", "raw", s(img), s(&out)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(
        r.status.code(),
        Some(3),
        "convert {}: {stderr}",
        img.display()
    );
    assert!(
        stderr.contains(reason),
        "expected reason {reason}, got: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "OUT was written");
    assert_eq!(names(dir), before, "files appeared in the output folder");

    let r = vmie().args(["info", "--json", s(img)]).output().unwrap();
    assert_eq!(r.status.code(), Some(3), "info {}", img.display());
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["safety"]["status"], "refused");
    assert_eq!(v["safety"]["reason"], reason, "{v}");
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

fn qcow2_of_mixed(dir: &Path, name: &str) -> PathBuf {
    let src = mixed_raw(dir);
    let img = dir.join(name);
    tool("qemu-img", &["convert", "-O", "qcow2", s(&src), s(&img)]);
    std::fs::remove_file(src).unwrap();
    img
}

#[test]
fn test_refuse_qcow2_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    let top = dir.path().join("top.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    assert_refused(&top, "backing-file");
}

#[test]
fn test_refuse_qcow2_external_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    let img = dir.path().join("ext.qcow2");
    let opt = format!("data_file={}", s(&data));
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-o", &opt, s(&img), "4M"],
    );
    assert_refused(&img, "external-data-file");
}

#[test]
fn test_refuse_qcow2_luks_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("enc.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            "secret,id=sec0,data=vmie-test",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0",
            s(&img),
            "4M",
        ],
    );
    assert_refused(&img, "encrypted");
}

#[test]
fn test_refuse_qcow2_unknown_incompatible_feature() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_of_mixed(dir.path(), "feat.qcow2");
    // qcow2 v3 header: incompatible_features is the big-endian u64 at byte 72; set bit 40.
    patch(&img, 72, &(1u64 << 40).to_be_bytes());
    assert_refused(&img, "unknown-incompatible-features");
}

#[test]
fn test_refuse_qcow2_truncated_pointer_outside_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_of_mixed(dir.path(), "trunc.qcow2");
    let len = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_refused(&img, "pointer-out-of-bounds");
}

#[test]
fn test_refuse_virtual_size_above_maximum() {
    let dir = tempfile::tempdir().unwrap();
    for (name, fmt) in [
        ("big.qcow2", "qcow2"),
        ("big.vhdx", "vhdx"),
        ("big.vmdk", "vmdk"),
    ] {
        let img = dir.path().join(name);
        tool("qemu-img", &["create", "-q", "-f", fmt, s(&img), "17T"]);
        assert_refused(&img, "virtual-size-too-large");
        std::fs::remove_file(img).unwrap();
    }
}

#[test]
fn test_refuse_vmdk_descriptor_naming_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("flat.vmdk");
    std::fs::write(
        &img,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\n# Extent description\n\
         RW 2048 FLAT \"/etc/passwd\" 0\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"2\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n",
    )
    .unwrap();
    assert_refused(&img, "external-extent");
}

#[test]
fn test_refuse_vmdk_vmfs_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vmfs.vmdk");
    std::fs::write(
        &img,
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"vmfs\"\n\nRW 8192 VMFS \"/dev/sda\"\n",
    )
    .unwrap();
    assert_refused(&img, "external-extent");
}

#[test]
fn test_refuse_vmdk_two_gb_max_extent_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("split.vmdk");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            s(&img),
            "8M",
        ],
    );
    assert_refused(&img, "external-extent");
}

/// VHD footer: disk type is the big-endian u32 at byte 60, checksum at byte 64 (one's
/// complement of the byte sum with the checksum zeroed).
fn make_vhd_differencing(img: &Path) {
    let len = std::fs::metadata(img).unwrap().len();
    let f = std::fs::File::open(img).unwrap();
    let mut footer = [0u8; 512];
    f.read_exact_at(&mut footer, len - 512).unwrap();
    footer[60..64].copy_from_slice(&4u32.to_be_bytes());
    footer[64..68].fill(0);
    let sum: u32 = footer.iter().map(|&b| u32::from(b)).sum();
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
    patch(img, len - 512, &footer);
    patch(img, 0, &footer);
}

#[test]
fn test_refuse_vhd_differencing_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("diff.vhd");
    tool("qemu-img", &["create", "-q", "-f", "vpc", s(&img), "8M"]);
    make_vhd_differencing(&img);
    assert_refused(&img, "differencing-disk");
}

#[test]
fn test_refuse_qcow2_header_planted_in_iso() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("cd");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("A.TXT"), b"a").unwrap();
    let iso = dir.path().join("evil.iso");
    tool(
        "xorriso",
        &["-as", "mkisofs", "-quiet", "-o", s(&iso), s(&tree)],
    );
    // A qcow2 header in the ISO's 32 KiB system area, as OpenStack's format_inspector test does.
    let q = dir.path().join("h.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", s(&q), "1M"]);
    let header = std::fs::read(&q).unwrap();
    std::fs::remove_file(&q).unwrap();
    patch(&iso, 0, &header[..512]);
    assert_refused(&iso, "multiple-formats");
}

#[test]
fn test_refuse_random_bytes_with_format_magic() {
    let dir = tempfile::tempdir().unwrap();
    for (name, magic) in [
        ("r.qcow2", &b"QFI\xfb"[..]),
        ("r.vmdk", &b"KDMV"[..]),
        ("r.vhdx", &b"vhdxfile"[..]),
    ] {
        let img = dir.path().join(name);
        let mut bytes = common::pseudo_random(7, 1 << 20);
        bytes[..magic.len()].copy_from_slice(magic);
        std::fs::write(&img, bytes).unwrap();
        let r = vmie()
            .args(["convert", s(&img), s(&dir.path().join("o.raw"))])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(3), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!dir.path().join("o.raw").exists());
        std::fs::remove_file(img).unwrap();
    }
}

#[test]
fn test_refuse_bit_flipped_images_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    for (name, fmt) in [
        ("f.qcow2", "qcow2"),
        ("f.vmdk", "vmdk"),
        ("f.vhd", "vpc"),
        ("f.vhdx", "vhdx"),
        ("f.vdi", "vdi"),
    ] {
        let img = dir.path().join(name);
        tool("qemu-img", &["convert", "-O", fmt, s(&src), s(&img)]);
        let good = std::fs::read(&img).unwrap();
        for i in 0..24u64 {
            let mut bytes = good.clone();
            // Flip bits throughout the metadata area at the head of the file.
            let at = ((i * 2654435761) % 65536) as usize % bytes.len();
            bytes[at] ^= 0x5a;
            std::fs::write(&img, &bytes).unwrap();
            let out = dir.path().join("o.raw");
            let r = vmie().args(["convert", s(&img), s(&out)]).output().unwrap();
            let stderr = String::from_utf8_lossy(&r.stderr);
            assert!(
                !stderr.contains("panicked"),
                "{name} flip at {at}: {stderr}"
            );
            assert!(
                matches!(r.status.code(), Some(0 | 3)),
                "{name} flip at {at}: {stderr}"
            );
            if r.status.code() == Some(3) {
                assert!(!out.exists());
            }
            let _ = std::fs::remove_file(&out);
        }
    }
}

/// Finds the VHDX File Parameters item through the region and metadata tables and sets its
/// HasParent flag (metadata carries no checksum; the header and region CRCs stay valid).
fn make_vhdx_with_parent(img: &Path) {
    let b = std::fs::read(img).unwrap();
    let u32le = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64le = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    // Metadata region GUID 8B7CA206-4790-4B9A-B8FE-575F050F886E, as stored.
    let meta_guid = [
        0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88,
        0x6e,
    ];
    // File Parameters item CAA16737-FA36-4D43-B3B6-33F0AA44E76B, as stored.
    let fp_guid = [
        0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7,
        0x6b,
    ];
    let rt = 192 * 1024;
    let count = u32le(rt + 8) as usize;
    let meta = (0..count)
        .map(|i| rt + 16 + i * 32)
        .find(|&e| b[e..e + 16] == meta_guid)
        .map(|e| u64le(e + 16) as usize)
        .expect("metadata region");
    let items = u16::from_le_bytes([b[meta + 10], b[meta + 11]]) as usize;
    let fp = (0..items)
        .map(|i| meta + 32 + i * 32)
        .find(|&e| b[e..e + 16] == fp_guid)
        .map(|e| meta + u32le(e + 16) as usize)
        .expect("file parameters item");
    let flags = u32le(fp + 4) | 2; // bit 1: HasParent
    patch(img, (fp + 4) as u64, &flags.to_le_bytes());
}

#[test]
fn test_refuse_vhdx_with_parent() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    let img = dir.path().join("child.vhdx");
    tool("qemu-img", &["convert", "-O", "vhdx", s(&src), s(&img)]);
    std::fs::remove_file(&src).unwrap();
    make_vhdx_with_parent(&img);
    assert_refused(&img, "differencing-disk");
}

#[test]
fn test_refuse_vdi_differencing_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = mixed_raw(dir.path());
    let img = dir.path().join("diff.vdi");
    tool("qemu-img", &["convert", "-O", "vdi", s(&src), s(&img)]);
    std::fs::remove_file(&src).unwrap();
    patch(&img, 0x4c, &4u32.to_le_bytes()); // image type 4: differencing
    assert_refused(&img, "differencing-disk");
}

#[test]
fn test_refuse_containers_vmie_does_not_read_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let parallels = dir.path().join("disk.hdd");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "parallels", s(&parallels), "4M"],
    );
    let luks = dir.path().join("disk.luks");
    std::fs::write(&luks, vec![0u8; 20 << 20]).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"hunter2").unwrap();
    tool(
        "cryptsetup",
        &[
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            s(&key),
            s(&luks),
        ],
    );
    std::fs::remove_file(&key).unwrap();
    let gz = qcow2_of_mixed(dir.path(), "disk.qcow2");
    tool("gzip", &["-f", s(&gz)]);
    let gz = dir.path().join("disk.qcow2.gz");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"hello, vm\n").unwrap();
    for (img, reason, name) in [
        (&parallels, "unsupported-format", Some("parallels")),
        (&luks, "encrypted", Some("luks")),
        (&gz, "compressed", Some("gzip")),
        (&text, "not-a-disk", None),
    ] {
        assert_refused(img, reason);
        let r = vmie().args(["info", "--json", s(img)]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(v["safety"]["name"].as_str(), name, "{v}");
    }
}
