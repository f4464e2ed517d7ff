//! Every named VDI rule broken once, on an image built byte by byte from the VDI 1.1 layout
//! that `qemu-img check` finds clean and that vmie reads as qemu-img does.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;

use super::header::{SIGNATURE, VERSION_1_1};
use super::rules;
use crate::Limits;
use crate::testutil::{qemu_raw_as, tmp, tool};

const MIB: usize = 1 << 20;
const BMAP: usize = 0x200;
const DATA: usize = 0x400;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// A dynamic 4 MiB image of four 1 MiB blocks: block 0 allocated (0xab), block 1 free,
/// block 2 zeroed (discarded), block 3 free.
fn image() -> Vec<u8> {
    let mut b = vec![0u8; DATA + MIB];
    let text = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
    b[..text.len()].copy_from_slice(text); // pre-header text
    put32(&mut b, 0x40, SIGNATURE); // signature
    put32(&mut b, 0x44, VERSION_1_1); // version 1.1
    put32(&mut b, 0x48, 0x190); // header size
    put32(&mut b, 0x4c, 1); // image type: normal (dynamic)
    put32(&mut b, 0x154, BMAP as u32); // block map offset
    put32(&mut b, 0x158, DATA as u32); // data offset
    put32(&mut b, 0x168, 512); // sector size
    b[0x170..0x178].copy_from_slice(&(4u64 << 20).to_le_bytes()); // disk size
    put32(&mut b, 0x178, MIB as u32); // block size
    put32(&mut b, 0x17c, 0); // block extra data
    put32(&mut b, 0x180, 4); // blocks
    put32(&mut b, 0x184, 1); // allocated blocks
    b[0x188..0x198].fill(0x42); // image UUID
    b[0x198..0x1a8].fill(0x43); // last snapshot UUID
    for (i, e) in [0u32, u32::MAX, u32::MAX - 1, u32::MAX]
        .into_iter()
        .enumerate()
    {
        put32(&mut b, BMAP + i * 4, e); // block map
    }
    b[DATA..].fill(0xab);
    b
}

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

#[test]
fn test_vdi_built_image_is_clean_for_qemu_and_reads_the_same() {
    let dir = tmp();
    let p = dir.path().join("built.vdi");
    let b = image();
    std::fs::write(&p, &b).unwrap();
    tool("qemu-img", "qemu-utils", &["check", p.to_str().unwrap()]);
    let disk = open(b).unwrap();
    let mut ours = vec![0u8; 4 * MIB];
    disk.read_at(&mut ours, 0).unwrap();
    assert_eq!(ours, qemu_raw_as(&p, Some("vdi")));
}

#[test]
fn test_vdi_rule_header_fields() {
    let cases: [(&str, usize, u32); 11] = [
        (rules::VERSION, 0x44, 0x0001_0000),
        (rules::HEADER_SIZE, 0x48, 0x100),
        (rules::IMAGE_TYPE, 0x4c, 7),
        (rules::SECTOR_SIZE, 0x168, 4096),
        (rules::UNALIGNED, 0x154, BMAP as u32 + 1),
        (rules::UNALIGNED, 0x158, DATA as u32 + 8),
        (rules::MAP_OVER_HEADER, 0x48, 0x200), // the header now ends at 0x248
        (rules::DATA_OVER_MAP, 0x158, BMAP as u32),
        (rules::BLOCK_SIZE, 0x178, 3000),
        (rules::BLOCK_EXTRA, 0x17c, 100),
        (rules::ALLOCATED_COUNT, 0x184, 5),
    ];
    for (rule, at, v) in cases {
        let mut b = image();
        put32(&mut b, at, v);
        assert_rule(b, rule);
    }
}

#[test]
fn test_vdi_rule_block_map() {
    let mut b = image();
    put32(&mut b, 0x180, 2); // two blocks cannot hold 4 MiB
    assert_rule(b, rules::MAP_TOO_SMALL);
    let mut b = image();
    put32(&mut b, 0x184, 0); // one block in use, none counted
    assert_rule(b, rules::ALLOCATED_MISMATCH);
    let mut b = image();
    put32(&mut b, 0x184, 2);
    put32(&mut b, BMAP + 4, 0); // block 1 on block 0's data
    assert_rule(b, rules::BLOCK_USED_TWICE);
    let mut b = image();
    b.resize(DATA + 5 * MIB, 0); // room for a fifth data block
    put32(&mut b, 0x184, 2);
    put32(&mut b, BMAP + 4, 4); // data block 4 of an image of 4
    assert_rule(b, rules::INDEX_OUT_OF_RANGE);
}
