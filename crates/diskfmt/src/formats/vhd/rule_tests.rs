//! Every named VHD rule broken once, on a fixed and a dynamic image built byte by byte from the
//! specification, which qemu-img reads as vmie does.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;

use super::header::checksum;
use super::rules;
use crate::testutil::{qemu_raw_as, qemu_virtual_size, tmp};
use crate::{DiskError, Limits, Refusal};

/// Virtual size: 1 MiB.
const SIZE: u64 = 1 << 20;
/// Dynamic blocks of 512 KiB: two of them.
const BLOCK: u64 = 512 << 10;
/// The dynamic layout: footer copy, dynamic header, BAT, then each block (a 512-byte sector
/// bitmap and the data).
const DYN: usize = 512;
const BAT: usize = 1536;
const BLOCK0: usize = 2048;
const SPAN: usize = 512 + BLOCK as usize;

/// A hard disk footer (spec, "Hard Disk Footer Format"), big-endian.
fn footer(disk_type: u32, data_offset: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix"); // cookie
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: the reserved bit, always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // file format version 1.0
    f[16..24].copy_from_slice(&data_offset.to_be_bytes()); // data offset
    f[24..28].copy_from_slice(&0x2d00_0000u32.to_be_bytes()); // time stamp
    f[28..32].copy_from_slice(b"win "); // creator application: sized by current size
    f[32..36].copy_from_slice(&0x000a_0000u32.to_be_bytes()); // creator version
    f[36..40].copy_from_slice(b"Wi2k"); // creator host OS
    f[40..48].copy_from_slice(&SIZE.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&SIZE.to_be_bytes()); // current size
    f[56..58].copy_from_slice(&30u16.to_be_bytes()); // cylinders (the spec's CHS for 1 MiB)
    f[58] = 4; // heads
    f[59] = 17; // sectors per track
    f[60..64].copy_from_slice(&disk_type.to_be_bytes()); // disk type
    f[68..84].copy_from_slice(&[0x42; 16]); // unique id
    f[84] = 0; // saved state
    seal_footer(&mut f);
    f
}

fn seal_footer(f: &mut [u8]) {
    let c = checksum(f, 64);
    f[64..68].copy_from_slice(&c.to_be_bytes());
}

fn seal_dyn(h: &mut [u8]) {
    let c = checksum(h, 36);
    h[36..40].copy_from_slice(&c.to_be_bytes());
}

/// A fixed disk: 1 MiB of data (the first 4 KiB 0xab), then the footer.
fn fixed() -> Vec<u8> {
    let mut b = vec![0u8; SIZE as usize];
    b[..4096].fill(0xab);
    b.extend_from_slice(&footer(2, u64::MAX));
    b
}

/// A dynamic disk with both blocks allocated (block 0 0xab, block 1 0xcd).
fn dynamic() -> Vec<u8> {
    let f = footer(3, DYN as u64);
    let mut b = vec![0u8; BLOCK0 + 2 * SPAN];
    b[..512].copy_from_slice(&f); // footer copy
    let h = &mut b[DYN..DYN + 1024];
    h[0..8].copy_from_slice(b"cxsparse"); // cookie
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: unused
    h[16..24].copy_from_slice(&(BAT as u64).to_be_bytes()); // table offset
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // header version
    h[28..32].copy_from_slice(&2u32.to_be_bytes()); // max table entries
    h[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes()); // block size
    seal_dyn(h);
    for (i, fill) in [(0usize, 0xab), (1, 0xcd)] {
        let at = BLOCK0 + i * SPAN;
        b[BAT + i * 4..BAT + i * 4 + 4].copy_from_slice(&((at / 512) as u32).to_be_bytes());
        b[at..at + 512].fill(0xff); // sector bitmap: every sector present
        b[at + 512..at + SPAN].fill(fill);
    }
    b.extend_from_slice(&f);
    b
}

/// An edit of a footer or dynamic header.
type Edit = fn(&mut [u8]);

fn open(b: Vec<u8>) -> crate::Result<Box<dyn crate::Disk>> {
    crate::open(Arc::new(b), &Limits::default())
}

#[track_caller]
fn assert_rule(b: Vec<u8>, rule: &str) {
    match open(b) {
        Ok(_) => panic!("accepted; expected {rule}"),
        Err(e) => assert_eq!(e.name(), Some(rule), "{e}"),
    }
}

/// Edits both footers (end and, for a dynamic disk, the copy) and reseals them.
fn edit_footers(b: &mut [u8], edit: impl Fn(&mut [u8])) {
    let n = b.len();
    let mut starts = vec![n - 512];
    if &b[..8] == b"conectix" {
        starts.push(0);
    }
    for s in starts {
        edit(&mut b[s..s + 512]);
        seal_footer(&mut b[s..s + 512]);
    }
}

fn edit_dyn(b: &mut [u8], edit: impl Fn(&mut [u8])) {
    edit(&mut b[DYN..DYN + 1024]);
    seal_dyn(&mut b[DYN..DYN + 1024]);
}

#[test]
fn test_vhd_built_images_read_the_same_as_qemu() {
    let dir = tmp();
    for (name, b) in [("fixed.vhd", fixed()), ("dynamic.vhd", dynamic())] {
        let p = dir.path().join(name);
        std::fs::write(&p, &b).unwrap();
        let disk = open(b).unwrap();
        assert_eq!(disk.virtual_size(), qemu_virtual_size(&p, "vpc"), "{name}");
        let mut ours = vec![0u8; SIZE as usize];
        disk.read_at(&mut ours, 0).unwrap();
        assert_eq!(ours, qemu_raw_as(&p, Some("vpc")), "{name}");
    }
}

#[test]
fn test_vhd_rule_footer_fields() {
    let mut b = fixed();
    let n = b.len();
    b[n - 512 + 40] ^= 1; // original size changed, checksum not
    let e = open(b).err().unwrap();
    assert_eq!(
        (e.reason_code(), e.name()),
        ("corrupt", Some(rules::FOOTER_CHECKSUM))
    );
    let cases: [(&str, Edit); 4] = [
        (rules::FEATURES, |f| {
            f[8..12].copy_from_slice(&0x12u32.to_be_bytes())
        }),
        (rules::VERSION, |f| {
            f[12..16].copy_from_slice(&0x0002_0000u32.to_be_bytes())
        }),
        (rules::DISK_TYPE, |f| {
            f[60..64].copy_from_slice(&5u32.to_be_bytes())
        }),
        (rules::SAVED_STATE, |f| f[84] = 2),
    ];
    for (rule, edit) in cases {
        for mut b in [fixed(), dynamic()] {
            edit_footers(&mut b, edit);
            assert_rule(b, rule);
        }
    }
    // The temporary bit (0) and a saved state are legal.
    let mut b = dynamic();
    edit_footers(&mut b, |f| {
        f[11] |= 1;
        f[84] = 1;
    });
    open(b).unwrap();
}

#[test]
fn test_vhd_rule_fixed_data_size() {
    let mut b = fixed();
    let f = b.split_off(SIZE as usize);
    b.extend_from_slice(&[0u8; 512]); // one sector more than the current size
    b.extend_from_slice(&f);
    assert_rule(b, rules::FIXED_SIZE);
    let mut b = fixed();
    let f = b.split_off(SIZE as usize - 512); // one sector short
    b.extend_from_slice(&f[512..]);
    match open(b).err().unwrap() {
        DiskError::Refused(Refusal::PointerOutOfBounds { what, .. }) => {
            assert_eq!(what, "fixed disk data");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn test_vhd_rule_footer_copy() {
    let mut b = dynamic();
    b[48..56].copy_from_slice(&(2 * SIZE).to_be_bytes()); // the copy's current size
    seal_footer(&mut b[..512]);
    assert_rule(b, rules::FOOTER_COPY);
}

#[test]
fn test_vhd_rule_dynamic_header() {
    let mut b = dynamic();
    edit_dyn(&mut b, |h| h[0..8].copy_from_slice(b"cxspares"));
    assert_rule(b, rules::DYNAMIC_COOKIE);
    let mut b = dynamic();
    b[DYN + 28] ^= 1;
    let e = open(b).err().unwrap();
    assert_eq!(
        (e.reason_code(), e.name()),
        ("corrupt", Some(rules::DYNAMIC_CHECKSUM))
    );
    let cases: [(&str, Edit); 4] = [
        (rules::DYNAMIC_VERSION, |h| {
            h[24..28].copy_from_slice(&0x0002_0000u32.to_be_bytes())
        }),
        (rules::BLOCK_SIZE, |h| {
            h[32..36].copy_from_slice(&3000u32.to_be_bytes())
        }),
        (rules::BAT_UNALIGNED, |h| {
            h[16..24].copy_from_slice(&1537u64.to_be_bytes())
        }),
        (rules::BAT_TOO_SMALL, |h| {
            h[28..32].copy_from_slice(&1u32.to_be_bytes())
        }),
    ];
    for (rule, edit) in cases {
        let mut b = dynamic();
        edit_dyn(&mut b, edit);
        assert_rule(b, rule);
    }
    // A parent's name makes a differencing disk, whatever the type says.
    let mut b = dynamic();
    edit_dyn(&mut b, |h| {
        h[64..70].copy_from_slice(&[0, b'p', 0, b'.', 0, b'v'])
    });
    assert_eq!(open(b).err().unwrap().reason_code(), "differencing-disk");
}

#[test]
fn test_vhd_rule_blocks() {
    // Block 1 where the dynamic header is.
    let mut b = dynamic();
    b[BAT + 4..BAT + 8].copy_from_slice(&2u32.to_be_bytes());
    assert_rule(b, rules::BLOCK_OVER_METADATA);
    // Block 1 half over block 0.
    let mut b = dynamic();
    let half = ((BLOCK0 + SPAN / 2) / 512) as u32;
    b[BAT + 4..BAT + 8].copy_from_slice(&half.to_be_bytes());
    assert_rule(b, rules::BLOCKS_OVERLAP);
}
