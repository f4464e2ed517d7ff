#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::header::checksum;
use crate::Limits;
use crate::disk::ExtentKind;
use crate::testutil::{assert_mutations_do_not_panic, qemu_img, tmp, write_sample_raw};

/// Converts an 8 MiB sample raw disk to VHD with `opts` (e.g. `subformat=fixed`).
fn make_vhd(dir: &Path, name: &str, size: u64, opts: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    write_sample_raw(&raw, size);
    let out = dir.join(format!("{name}.vhd"));
    let mut args = vec!["convert", "-f", "raw", "-O", "vpc"];
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

/// Applies `patch` to the footer at the end and to its copy at the start (if any), then
/// recomputes their checksums.
fn patch_footers(b: &mut [u8], patch: impl Fn(&mut [u8])) {
    let n = b.len();
    let mut starts = vec![n - 512];
    if &b[..8] == b"conectix" {
        starts.push(0);
    }
    for s in starts {
        let f = &mut b[s..s + 512];
        patch(f);
        let c = checksum(f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
    }
}

fn qemu_virtual_size(path: &Path) -> u64 {
    crate::testutil::qemu_virtual_size(path, "vpc")
}

fn assert_same_as_qemu(path: &Path) -> Box<dyn crate::Disk> {
    crate::testutil::assert_same_as_qemu_as(path, "vpc")
}

#[test]
fn test_vhd_dynamic_matches_qemu() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 8 << 20, "subformat=dynamic");
    crate::testutil::assert_same_as_qemu(&p);
    let d = assert_same_as_qemu(&p);
    let info = d.info();
    assert_eq!(info.subformat.as_deref(), Some("dynamic"));
    assert_eq!(info.cluster_size, Some(2 << 20));
    assert_eq!(d.virtual_size(), qemu_virtual_size(&p));
    // The sample's third 2 MiB block is all zeros: qemu leaves it unallocated.
    let ext = d.extents(0, d.virtual_size()).unwrap();
    assert!(
        ext.iter()
            .any(|e| e.kind == ExtentKind::Zero && e.offset <= 4 << 20 && e.end() >= 6 << 20)
    );
}

#[test]
fn test_vhd_damaged_end_footer_uses_start_copy() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 4 << 20, "subformat=dynamic");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 512 + 100] ^= 0xff; // reserved byte: end footer checksum now wrong
    std::fs::write(&p, &b).unwrap();
    assert_same_as_qemu(&p);
}

#[test]
fn test_vhd_fixed_matches_qemu() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "fix", 8 << 20, "subformat=fixed");
    let d = assert_same_as_qemu(&p);
    assert_eq!(d.info().subformat.as_deref(), Some("fixed"));
    assert_eq!(d.info().cluster_size, None);
}

#[test]
fn test_vhd_force_size_matches_qemu() {
    let dir = tmp();
    for sub in ["dynamic", "fixed"] {
        // 8 MiB + 3 sectors is not a CHS product: only force_size keeps it exact.
        let p = make_vhd(
            dir.path(),
            sub,
            (8 << 20) + 1536,
            &format!("subformat={sub},force_size=on"),
        );
        let d = assert_same_as_qemu(&p);
        assert_eq!(d.virtual_size(), (8 << 20) + 1536);
        assert!(
            d.info()
                .details
                .contains(&("creator_app".into(), "qem2".into()))
        );
    }
}

#[test]
fn test_vhd_creator_selects_size_source_like_qemu() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "base", 8 << 20, "subformat=dynamic");
    let orig = std::fs::read(&p).unwrap();
    for (creator, chs) in [
        (*b"win ", None),
        (*b"d2v ", None),
        (*b"tap\0", None),
        (*b"CTXS", None),
        (*b"vpc ", None),
        (*b"qemu", None),
        (*b"qem2", None),
        (*b"abcd", None),
        // The maximum geometry means "use the current size", whatever the creator.
        (*b"vpc ", Some((65535u16, 16u8, 255u8))),
    ] {
        let mut b = orig.clone();
        patch_footers(&mut b, |f| {
            f[28..32].copy_from_slice(&creator);
            // A current size below the geometry's, so the two sources differ.
            f[48..56].copy_from_slice(&(6u64 << 20).to_be_bytes());
            if let Some((c, h, s)) = chs {
                f[56..58].copy_from_slice(&c.to_be_bytes());
                f[58] = h;
                f[59] = s;
            }
        });
        let q = dir.path().join("patched.vhd");
        std::fs::write(&q, &b).unwrap();
        let d = assert_same_as_qemu(&q);
        assert_eq!(
            d.virtual_size(),
            qemu_virtual_size(&q),
            "creator {creator:?}"
        );
    }
}

#[test]
fn test_vhd_differencing_type_refused() {
    let dir = tmp();
    for sub in ["fixed", "dynamic"] {
        let p = make_vhd(dir.path(), sub, 4 << 20, &format!("subformat={sub}"));
        let mut b = std::fs::read(&p).unwrap();
        patch_footers(&mut b, |f| f[60..64].copy_from_slice(&4u32.to_be_bytes()));
        let e = open_bytes(b).err().unwrap();
        assert_eq!(e.reason_code(), "differencing-disk");
    }
}

#[test]
fn test_vhd_parent_locator_refused_as_differencing() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 4 << 20, "subformat=dynamic");
    let mut b = std::fs::read(&p).unwrap();
    // Dynamic header at 512: first parent locator's platform code ("W2ku") at 512 + 576.
    b[512 + 576..512 + 580].copy_from_slice(b"W2ku");
    let c = checksum(&b[512..1536], 36);
    b[512 + 36..512 + 40].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        open_bytes(b).err().unwrap().reason_code(),
        "differencing-disk"
    );
}

#[test]
fn test_vhd_bad_footer_checksum_corrupt() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "fix", 4 << 20, "subformat=fixed");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 512 + 48] ^= 0x10; // current size changed, checksum not updated
    let e = open_bytes(b).err().unwrap();
    assert_eq!(e.reason_code(), "corrupt");
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn test_vhd_bad_dynamic_header_checksum_corrupt() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 4 << 20, "subformat=dynamic");
    let mut b = std::fs::read(&p).unwrap();
    b[512 + 32] ^= 1; // block size changed, checksum not updated
    assert_eq!(open_bytes(b).err().unwrap().reason_code(), "corrupt");
}

#[test]
fn test_vhd_bat_entry_past_eof_refused() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 4 << 20, "subformat=dynamic");
    let mut b = std::fs::read(&p).unwrap();
    // qemu puts the BAT at 1536.
    assert_eq!(
        u64::from_be_bytes(b[512 + 16..512 + 24].try_into().unwrap()),
        1536
    );
    b[1536..1540].copy_from_slice(&0x00FF_FFF0u32.to_be_bytes());
    assert_eq!(
        open_bytes(b).err().unwrap().reason_code(),
        "pointer-out-of-bounds"
    );
}

#[test]
fn test_vhd_block_overlapping_footer_refused() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 4 << 20, "subformat=dynamic");
    let mut b = std::fs::read(&p).unwrap();
    // Point block 0 one sector further: its data now runs into the footer.
    let e = u32::from_be_bytes(b[1536..1540].try_into().unwrap());
    let last = (b.len() as u32 - 512 - 512 - (2 << 20)) / 512;
    assert!(e != u32::MAX);
    b[1536..1540].copy_from_slice(&(last + 1).to_be_bytes());
    assert_eq!(
        open_bytes(b).err().unwrap().reason_code(),
        "pointer-out-of-bounds"
    );
}

#[test]
fn test_vhd_truncated_files_refused() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 4 << 20, "subformat=dynamic");
    let b = std::fs::read(&p).unwrap();
    // Without its last block and footer: the copy at the start still opens it, and the
    // blocks past the end are refused.
    let cut = b[..b.len() - 4096].to_vec();
    assert_eq!(
        open_bytes(cut).err().unwrap().reason_code(),
        "pointer-out-of-bounds"
    );
    // Cut inside the BAT.
    assert_eq!(
        open_bytes(b[..1600].to_vec()).err().unwrap().reason_code(),
        "pointer-out-of-bounds"
    );
    let p = make_vhd(dir.path(), "fix", 4 << 20, "subformat=fixed");
    let b = std::fs::read(&p).unwrap();
    let e = open_bytes(b[..b.len() - 4096].to_vec()).err().unwrap();
    assert_eq!(e.reason_code(), "invalid-format");
    // A footer kept, data cut: the data no longer fits before the footer.
    let mut short = b[..(2 << 20)].to_vec();
    short.extend_from_slice(&b[b.len() - 512..]);
    assert_eq!(
        open_bytes(short).err().unwrap().reason_code(),
        "pointer-out-of-bounds"
    );
    assert!(open_bytes(Vec::new()).is_err());
}

#[test]
fn test_vhd_partial_bitmap_reads_zero_for_clear_sectors() {
    let dir = tmp();
    let p = make_vhd(dir.path(), "dyn", 4 << 20, "subformat=dynamic");
    let mut b = std::fs::read(&p).unwrap();
    let bitmap_at = u32::from_be_bytes(b[1536..1540].try_into().unwrap()) as usize * 512;
    // Clear sectors 0..8 and sector 9 of block 0.
    b[bitmap_at] = 0;
    b[bitmap_at + 1] = 0b1011_1111;
    let d = open_bytes(b.clone()).unwrap();
    let mut buf = vec![0xAAu8; 12 * 512];
    d.read_at(&mut buf, 0).unwrap();
    let data = &b[bitmap_at + 512..];
    assert!(buf[..8 * 512].iter().all(|&x| x == 0));
    assert_eq!(&buf[8 * 512..9 * 512], &data[8 * 512..9 * 512]);
    assert!(buf[9 * 512..10 * 512].iter().all(|&x| x == 0));
    assert_eq!(&buf[10 * 512..], &data[10 * 512..12 * 512]);
    let ext = d.extents(0, 12 * 512).unwrap();
    let kinds: Vec<_> = ext
        .iter()
        .map(|e| (e.offset / 512, e.length / 512))
        .collect();
    assert_eq!(kinds, vec![(0, 8), (8, 1), (9, 1), (10, 2)]);
    // An unaligned read across the boundary.
    let mut small = [0xAAu8; 100];
    d.read_at(&mut small, 8 * 512 - 50).unwrap();
    assert!(small[..50].iter().all(|&x| x == 0));
    assert_eq!(&small[50..], &data[8 * 512..8 * 512 + 50]);
}

#[test]
fn test_vhd_mutations_do_not_panic() {
    let dir = tmp();
    for sub in ["dynamic", "fixed"] {
        let p = make_vhd(dir.path(), sub, 4 << 20, &format!("subformat={sub}"));
        let b = std::fs::read(&p).unwrap();
        assert_mutations_do_not_panic(&b, 300, 4 << 20);
    }
}

/// The metadata rules must not refuse what qemu-img writes: empty dynamic disks of several
/// sizes (one BAT sector or many), an empty fixed disk, force_size.
#[test]
fn test_vhd_qemu_made_empty_variants_open() {
    let dir = tmp();
    for (name, opts, size) in [
        ("e1.vhd", "subformat=dynamic", "1M"),
        ("e2.vhd", "subformat=dynamic", "3G"),
        ("e3.vhd", "subformat=fixed", "3M"),
        ("e4.vhd", "subformat=dynamic,force_size=on", "100M"),
    ] {
        let p = dir.path().join(name);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            opts,
            p.to_str().unwrap(),
            size,
        ]);
        let d = crate::testutil::open_path(&p).unwrap();
        assert_eq!(d.virtual_size(), qemu_virtual_size(&p), "{name}");
    }
}
