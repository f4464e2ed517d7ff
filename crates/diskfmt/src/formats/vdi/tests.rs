#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Limits;
use crate::disk::ExtentKind;
use crate::testutil::{
    assert_mutations_do_not_panic, assert_same_as_qemu, qemu_img, tmp, write_sample_raw,
};

/// Converts a sample raw disk of `size` bytes to VDI with `opts` (e.g. `static=on`).
fn make_vdi(dir: &Path, name: &str, size: u64, opts: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    write_sample_raw(&raw, size);
    let out = dir.join(format!("{name}.vdi"));
    let mut args = vec!["convert", "-f", "raw", "-O", "vdi"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&args);
    out
}

fn open_bytes(b: Vec<u8>) -> crate::Result<Box<dyn crate::Disk>> {
    super::open(Arc::new(b), &Limits::default())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn qemu_virtual_size(path: &Path) -> u64 {
    crate::testutil::qemu_virtual_size(path, "vdi")
}

#[test]
fn test_vdi_dynamic_matches_qemu() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "dyn", 8 << 20, "");
    let d = assert_same_as_qemu(&p);
    let info = d.info();
    assert_eq!(info.subformat.as_deref(), Some("dynamic"));
    assert_eq!(info.cluster_size, Some(1 << 20));
    assert_eq!(d.virtual_size(), qemu_virtual_size(&p));
    // The sample has zero megabytes: qemu leaves them unallocated.
    let ext = d.extents(0, d.virtual_size()).unwrap();
    assert!(ext.iter().any(|e| e.kind == ExtentKind::Zero));
}

#[test]
fn test_vdi_static_matches_qemu() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "static", 8 << 20, "static=on");
    let d = assert_same_as_qemu(&p);
    assert_eq!(d.info().subformat.as_deref(), Some("static"));
    // Every block allocated and contiguous: one data extent.
    let ext = d.extents(0, d.virtual_size()).unwrap();
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].kind, ExtentKind::Data);
}

#[test]
fn test_vdi_odd_disk_size_matches_qemu() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "odd", 8 << 20, "");
    let mut b = std::fs::read(&p).unwrap();
    b[0x170..0x178].copy_from_slice(&((8u64 << 20) - 1000).to_le_bytes());
    let q = dir.path().join("odd2.vdi");
    std::fs::write(&q, &b).unwrap();
    let d = assert_same_as_qemu(&q);
    assert_eq!(d.virtual_size(), qemu_virtual_size(&q));
}

#[test]
fn test_vdi_zero_block_entry_reads_zero() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "dyn", 4 << 20, "");
    let mut b = std::fs::read(&p).unwrap();
    let bmap = le32(&b, 0x154) as usize;
    assert_ne!(le32(&b, bmap), u32::MAX, "block 0 holds sample data");
    b[bmap..bmap + 4].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    let d = open_bytes(b).unwrap();
    let mut buf = vec![0xAAu8; 1 << 20];
    d.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    assert_eq!(d.extents(0, 1 << 20).unwrap()[0].kind, ExtentKind::Zero);
}

#[test]
fn test_vdi_differencing_type_refused() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "dyn", 4 << 20, "");
    let orig = std::fs::read(&p).unwrap();
    for t in [3u32, 4] {
        let mut b = orig.clone();
        b[0x4c..0x50].copy_from_slice(&t.to_le_bytes());
        assert_eq!(
            open_bytes(b).err().unwrap().reason_code(),
            "differencing-disk"
        );
    }
    let mut b = orig;
    b[0x1b8] = 0x5a; // parent UUID
    assert_eq!(
        open_bytes(b).err().unwrap().reason_code(),
        "differencing-disk"
    );
}

#[test]
fn test_vdi_block_map_entry_past_eof_refused() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "dyn", 4 << 20, "");
    let mut b = std::fs::read(&p).unwrap();
    let bmap = le32(&b, 0x154) as usize;
    b[bmap..bmap + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(
        open_bytes(b).err().unwrap().reason_code(),
        "pointer-out-of-bounds"
    );
}

#[test]
fn test_vdi_blocks_not_covering_disk_corrupt() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "dyn", 4 << 20, "");
    let mut b = std::fs::read(&p).unwrap();
    b[0x170..0x178].copy_from_slice(&(5u64 << 20).to_le_bytes());
    assert_eq!(open_bytes(b).err().unwrap().reason_code(), "corrupt");
}

#[test]
fn test_vdi_truncated_files_refused() {
    let dir = tmp();
    let p = make_vdi(dir.path(), "static", 4 << 20, "static=on");
    let b = std::fs::read(&p).unwrap();
    // Last block cut short.
    assert_eq!(
        open_bytes(b[..b.len() - 4096].to_vec())
            .err()
            .unwrap()
            .reason_code(),
        "pointer-out-of-bounds"
    );
    // Cut inside the block map, then inside the header.
    let bmap = le32(&b, 0x154) as usize;
    for cut in [bmap + 2, 0x100] {
        assert_eq!(
            open_bytes(b[..cut].to_vec()).err().unwrap().reason_code(),
            "pointer-out-of-bounds"
        );
    }
}

#[test]
fn test_vdi_mutations_do_not_panic() {
    let dir = tmp();
    for (name, opts) in [("dyn", ""), ("static", "static=on")] {
        let p = make_vdi(dir.path(), name, 4 << 20, opts);
        let b = std::fs::read(&p).unwrap();
        assert_mutations_do_not_panic(&b, 300, 4 << 20);
    }
}
