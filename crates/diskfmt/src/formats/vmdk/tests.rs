//! Tests of the VMDK reader against images made by qemu-img.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::path::Path;

use crate::testutil::{assert_same_as_qemu, qemu_img, tmp, write_sample_raw};

const SAMPLE: u64 = 8 << 20;

fn make(dir: &Path, name: &str, opts: &[&str]) -> std::path::PathBuf {
    let raw = dir.join("s.raw");
    if !raw.exists() {
        write_sample_raw(&raw, SAMPLE);
    }
    let out = dir.join(name);
    let mut args = vec!["convert", "-O", "vmdk"];
    args.extend_from_slice(opts);
    args.push(raw.to_str().unwrap());
    args.push(out.to_str().unwrap());
    qemu_img(&args);
    out
}

#[test]
fn test_monolithic_sparse_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "m.vmdk", &[]);
    let disk = assert_same_as_qemu(&p);
    let info = disk.info();
    assert_eq!(info.subformat.as_deref(), Some("monolithicSparse"));
    assert_eq!(info.cluster_size, Some(65536));
}

#[test]
fn test_stream_optimized_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "so.vmdk", &["-o", "subformat=streamOptimized"]);
    let disk = assert_same_as_qemu(&p);
    let info = disk.info();
    assert_eq!(info.subformat.as_deref(), Some("streamOptimized"));
    assert!(info.details.contains(&("compressed".into(), "true".into())));
}

#[test]
fn test_compat6_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "c6.vmdk", &["-o", "compat6"]);
    assert_same_as_qemu(&p);
}

#[test]
fn test_adapter_type_lsilogic_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "lsi.vmdk", &["-o", "adapter_type=lsilogic"]);
    let disk = assert_same_as_qemu(&p);
    assert!(
        disk.info()
            .details
            .contains(&("adapter_type".into(), "lsilogic".into()))
    );
}

#[test]
fn test_zeroed_grain_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "z.vmdk", &["-o", "zeroed_grain=on"]);
    let out = crate::testutil::output(std::process::Command::new("qemu-io").args([
        "-f",
        "vmdk",
        "-c",
        "write -z 0 128k",
        p.to_str().unwrap(),
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disk = assert_same_as_qemu(&p);
    let ext = disk.extents(0, 1 << 20).unwrap();
    assert_eq!(ext[0].kind, crate::disk::ExtentKind::Zero);
    assert_eq!(ext[0].length, 128 << 10);
}

/// Turns a qemu-made streamOptimized file into the layout of one written as a stream: the
/// header's gdOffset becomes GD_AT_END and the real header moves to a footer.
fn with_footer(mut b: Vec<u8>) -> Vec<u8> {
    let header: Vec<u8> = b[..512].to_vec();
    let mut marker = vec![0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes()); // numSectors of the footer
    marker[8..12].copy_from_slice(&0u32.to_le_bytes()); // size 0: a metadata marker
    marker[12..16].copy_from_slice(&3u32.to_le_bytes()); // type 3: footer
    b.extend_from_slice(&marker);
    b.extend_from_slice(&header);
    b.extend_from_slice(&[0u8; 512]); // end-of-stream marker: all zero (type 0)
    b[56..64].copy_from_slice(&u64::MAX.to_le_bytes()); // gdOffset = GD_AT_END
    b
}

#[test]
fn test_stream_optimized_footer_same_as_qemu() {
    let d = tmp();
    let p = make(d.path(), "so.vmdk", &["-o", "subformat=streamOptimized"]);
    let f = d.path().join("footer.vmdk");
    std::fs::write(&f, with_footer(std::fs::read(&p).unwrap())).unwrap();
    let disk = assert_same_as_qemu(&f);
    assert!(
        disk.info()
            .details
            .contains(&("footer".into(), "true".into()))
    );
}

#[test]
fn test_stream_optimized_footer_truncated_corrupt() {
    let d = tmp();
    let p = make(d.path(), "so.vmdk", &["-o", "subformat=streamOptimized"]);
    let mut b = with_footer(std::fs::read(&p).unwrap());
    b.truncate(b.len() - 700);
    let e = open_bytes(b).unwrap_err();
    assert_eq!(e.reason_code(), "corrupt", "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn test_stream_optimized_truncated_pointer_out_of_bounds() {
    let d = tmp();
    let p = make(d.path(), "so.vmdk", &["-o", "subformat=streamOptimized"]);
    let mut b = std::fs::read(&p).unwrap();
    b.truncate(b.len() * 2 / 3);
    let e = open_bytes(b).unwrap_err();
    assert_eq!(e.reason_code(), "pointer-out-of-bounds", "{e}");
}

/// Opens image bytes; only the error matters to the refusal tests.
fn open_bytes(b: Vec<u8>) -> crate::Result<()> {
    crate::open(std::sync::Arc::new(b), &crate::Limits::default()).map(|_| ())
}

#[test]
fn test_standalone_flat_descriptor_external_extent() {
    // Never opened: the reader must refuse from the descriptor text alone.
    let text = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 8 FLAT \"/etc/passwd\" 0\n\nddb.adapterType = \"ide\"\n";
    let e = open_bytes(text.to_vec()).unwrap_err();
    assert_eq!(e.reason_code(), "external-extent", "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("monolithicFlat") && msg.contains("/etc/passwd"),
        "{msg}"
    );
    assert!(!msg.contains("root:"), "{msg}");
}

#[test]
fn test_two_gb_max_extent_sparse_external_extent() {
    let d = tmp();
    let p = d.path().join("split.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        p.to_str().unwrap(),
        "4M",
    ]);
    let e = crate::testutil::open_path(&p).map(|_| ()).unwrap_err();
    assert_eq!(e.reason_code(), "external-extent", "{e}");
    assert!(e.to_string().contains("twoGbMaxExtentSparse"), "{e}");
}

/// Replaces `from` by `to` (space-padded to the same length) in `b`.
fn patch_text(b: &mut [u8], from: &[u8], to: &[u8]) {
    assert!(to.len() <= from.len());
    let i = b.windows(from.len()).position(|w| w == from).unwrap();
    b[i..i + from.len()].fill(b' ');
    b[i..i + to.len()].copy_from_slice(to);
}

#[test]
fn test_embedded_create_type_vmfs_external_extent() {
    let d = tmp();
    let p = make(d.path(), "m.vmdk", &[]);
    let mut b = std::fs::read(&p).unwrap();
    patch_text(
        &mut b,
        b"createType=\"monolithicSparse\"",
        b"createType=\"vmfs\"",
    );
    let e = open_bytes(b).unwrap_err();
    assert_eq!(e.reason_code(), "external-extent", "{e}");
}

#[test]
fn test_embedded_flat_extent_external_extent() {
    let d = tmp();
    let p = make(d.path(), "m.vmdk", &[]);
    let mut b = std::fs::read(&p).unwrap();
    patch_text(
        &mut b,
        b"RW 16384 SPARSE \"m.vmdk\"",
        b"RW 8 FLAT \"/dev/sda\" 0",
    );
    let e = open_bytes(b).unwrap_err();
    assert_eq!(e.reason_code(), "external-extent", "{e}");
}

#[test]
fn test_child_with_backing_file_refused() {
    let d = tmp();
    let base = d.path().join("base.vmdk");
    let child = d.path().join("child.vmdk");
    qemu_img(&["create", "-f", "vmdk", base.to_str().unwrap(), "4M"]);
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "vmdk",
        child.to_str().unwrap(),
    ]);
    let e = crate::testutil::open_path(&child).map(|_| ()).unwrap_err();
    assert_eq!(e.reason_code(), "backing-file", "{e}");
}

/// Byte offsets of the grain directory and of the first grain table of a qemu-made image.
fn gd_and_gt(b: &[u8]) -> (usize, usize) {
    let gd = u64::from_le_bytes(b[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(b[gd..gd + 4].try_into().unwrap()) as usize * 512;
    (gd, gt)
}

#[test]
fn test_gd_entry_past_eof_pointer_out_of_bounds() {
    let d = tmp();
    let p = make(d.path(), "m.vmdk", &[]);
    let mut b = std::fs::read(&p).unwrap();
    let (gd, _) = gd_and_gt(&b);
    b[gd..gd + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let e = open_bytes(b).unwrap_err();
    assert_eq!(e.reason_code(), "pointer-out-of-bounds", "{e}");
}

#[test]
fn test_gt_entry_past_eof_pointer_out_of_bounds() {
    for opts in [&[][..], &["-o", "subformat=streamOptimized"][..]] {
        let d = tmp();
        let p = make(d.path(), "m.vmdk", opts);
        let mut b = std::fs::read(&p).unwrap();
        let (_, gt) = gd_and_gt(&b);
        b[gt + 8..gt + 12].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        let e = open_bytes(b).unwrap_err();
        assert_eq!(e.reason_code(), "pointer-out-of-bounds", "{e}");
    }
}

#[test]
fn test_grain_marker_wrong_lba_corrupt() {
    let d = tmp();
    let p = make(d.path(), "so.vmdk", &["-o", "subformat=streamOptimized"]);
    let mut b = std::fs::read(&p).unwrap();
    let (_, gt) = gd_and_gt(&b);
    let g0 = u32::from_le_bytes(b[gt..gt + 4].try_into().unwrap()) as usize * 512;
    b[g0..g0 + 8].copy_from_slice(&7u64.to_le_bytes());
    let e = open_bytes(b).unwrap_err();
    assert_eq!(e.reason_code(), "corrupt", "{e}");
}

#[test]
fn test_virtual_size_above_limit_refused() {
    let d = tmp();
    let p = make(d.path(), "m.vmdk", &[]);
    let b = std::fs::read(&p).unwrap();
    let limits = crate::Limits {
        max_virtual_size: 1 << 20,
        ..crate::Limits::default()
    };
    let e = crate::open(std::sync::Arc::new(b), &limits)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.reason_code(), "virtual-size-too-large", "{e}");
}

#[test]
fn test_mutations_do_not_panic() {
    let d = tmp();
    let raw = d.path().join("small.raw");
    write_sample_raw(&raw, 4 << 20);
    let mut variants = Vec::new();
    for (name, opts) in [
        ("m.vmdk", &[][..]),
        ("so.vmdk", &["-o", "subformat=streamOptimized"][..]),
    ] {
        let out = d.path().join(name);
        let mut args = vec!["convert", "-O", "vmdk"];
        args.extend_from_slice(opts);
        args.push(raw.to_str().unwrap());
        args.push(out.to_str().unwrap());
        qemu_img(&args);
        variants.push(std::fs::read(&out).unwrap());
    }
    variants.push(with_footer(variants[1].clone()));
    for v in &variants {
        crate::testutil::assert_mutations_do_not_panic(v, 300, 4 << 20);
    }
}

#[test]
fn test_open_garbage_invalid() {
    let src: crate::io::Source = std::sync::Arc::new(vec![7u8; 4096]);
    let e = super::open(src, &crate::Limits::default())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.reason_code(), "invalid-format", "{e}");
}

#[test]
fn test_open_cowd_unsupported() {
    let mut b = vec![0u8; 4096];
    b[..4].copy_from_slice(b"COWD");
    let e = open_bytes(b).unwrap_err();
    assert_eq!(e.reason_code(), "unsupported", "{e}");
}

#[test]
fn test_read_and_extents_partial_ranges_match_whole() {
    let d = tmp();
    for (name, opts) in [
        ("m.vmdk", &[][..]),
        ("so.vmdk", &["-o", "subformat=streamOptimized"][..]),
    ] {
        let p = make(d.path(), name, opts);
        let disk = crate::testutil::open_path(&p).unwrap();
        let whole = crate::testutil::read_all(&*disk);
        // Unaligned reads crossing grain boundaries, including the last sector.
        for (off, len) in [
            (1usize, 70_000usize),
            (65_535, 2),
            (3 << 19, 1 << 20),
            (SAMPLE as usize - 700, 700),
        ] {
            let mut buf = vec![0xAAu8; len];
            disk.read_at(&mut buf, off as u64).unwrap();
            assert_eq!(buf, whole[off..off + len]);
        }
        let ext = disk.extents(100, 3 << 20).unwrap();
        assert_eq!(ext.first().unwrap().offset, 100);
        assert_eq!(ext.last().unwrap().end(), 100 + (3 << 20));
        assert!(disk.read_at(&mut [0u8; 2], SAMPLE - 1).is_err());
    }
}

/// The metadata rules must not refuse what qemu-img writes: every adapter type and hardware
/// version, empty images, several grain tables, a stand-alone descriptor without extents is
/// named as such.
#[test]
fn test_vmdk_qemu_made_variants_open_same_as_qemu() {
    let d = tmp();
    let mut images = Vec::new();
    for (name, opts) in [
        ("hw6.vmdk", &["-o", "hwversion=6"][..]),
        ("bus.vmdk", &["-o", "adapter_type=buslogic"][..]),
        ("esx.vmdk", &["-o", "adapter_type=legacyESX"][..]),
        (
            "so-lsi.vmdk",
            &["-o", "subformat=streamOptimized,adapter_type=lsilogic"][..],
        ),
    ] {
        images.push(make(d.path(), name, opts));
    }
    for (name, sub, size) in [
        ("empty.vmdk", "monolithicSparse", "64M"),
        ("empty-so.vmdk", "streamOptimized", "64M"),
        ("big.vmdk", "monolithicSparse", "3G"),
    ] {
        let p = d.path().join(name);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            p.to_str().unwrap(),
            size,
        ]);
        images.push(p);
    }
    for p in &images {
        qemu_img(&["check", p.to_str().unwrap()]);
        let disk = crate::testutil::open_path(p).unwrap();
        assert_eq!(
            disk.virtual_size(),
            crate::testutil::qemu_virtual_size(p, "vmdk")
        );
        if disk.virtual_size() <= 64 << 20 {
            assert_same_as_qemu(p);
        }
    }
    let e =
        open_bytes(b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n".to_vec())
            .unwrap_err();
    assert_eq!(e.name(), Some(super::rules::NO_EXTENT), "{e}");
}
