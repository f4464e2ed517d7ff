//! Every named VHDX rule broken once, on an image built byte by byte from [MS-VHDX] that
//! `qemu-img check` finds clean and that vmie reads as qemu-img does.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;

use super::header::{Guid, crc_with_zeroed, guid};
use super::metadata::{
    FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, PAGE_83, PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_SIZE,
};
use super::region::{BAT_GUID, METADATA_GUID};
use super::rules;
use crate::testutil::{qemu_raw_as, tmp, tool};
use crate::{DiskError, Limits, Refusal};

const MIB: usize = 1 << 20;
const HEADERS: [usize; 2] = [64 << 10, 128 << 10];
const REGION_TABLES: [usize; 2] = [192 << 10, 256 << 10];
const LOG: usize = MIB;
const METADATA: usize = 2 * MIB;
const BAT: usize = 3 * MIB;
const BLOCK0: usize = 4 * MIB;
/// Virtual size: two 1 MiB blocks, the first allocated.
const SIZE: u64 = 2 << 20;

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Rewrites the CRC-32C of the `len`-byte structure at `at` (checksum at `at + 4`).
fn seal(b: &mut [u8], at: usize, len: usize) {
    let c = crc_with_zeroed(&b[at..at + len], 4);
    put32(b, at + 4, c);
}

fn header(b: &mut [u8], at: usize, sequence: u64) {
    b[at..at + 4].copy_from_slice(b"head"); // signature
    put64(b, at + 8, sequence); // sequence number
    b[at + 16..at + 32].fill(0x11); // file write GUID
    b[at + 32..at + 48].fill(0x22); // data write GUID
    // 48: log GUID, zero: no log to replay.
    put16(b, at + 64, 0); // log version
    put16(b, at + 66, 1); // version
    put32(b, at + 68, MIB as u32); // log length
    put64(b, at + 72, LOG as u64); // log offset
    seal(b, at, 4096);
}

fn region_table(b: &mut [u8], at: usize) {
    b[at..at + 4].copy_from_slice(b"regi"); // signature
    put32(b, at + 8, 2); // entry count
    for (i, (id, offset)) in [(BAT_GUID, BAT), (METADATA_GUID, METADATA)]
        .into_iter()
        .enumerate()
    {
        let e = at + 16 + i * 32;
        b[e..e + 16].copy_from_slice(&id); // region GUID
        put64(b, e + 16, offset as u64); // file offset
        put32(b, e + 24, MIB as u32); // length
        put32(b, e + 28, 1); // required
    }
    seal(b, at, 64 << 10);
}

/// A metadata table entry: item, offset in the region, length, flags.
type Item = (Guid, u32, u32, u32);

/// An edit of the metadata table's entries.
type Edit = fn(&mut Vec<Item>);

/// The metadata table's entries.
fn metadata_items() -> Vec<Item> {
    vec![
        (FILE_PARAMETERS, 0x10000, 8, 4),
        (VIRTUAL_DISK_SIZE, 0x10008, 8, 6),
        (PAGE_83, 0x10010, 16, 6),
        (LOGICAL_SECTOR_SIZE, 0x10020, 4, 6),
        (PHYSICAL_SECTOR_SIZE, 0x10024, 4, 6),
    ]
}

fn write_metadata_table(b: &mut [u8], items: &[Item]) {
    b[METADATA..METADATA + (64 << 10)].fill(0);
    b[METADATA..METADATA + 8].copy_from_slice(b"metadata"); // signature
    put16(b, METADATA + 10, items.len() as u16); // entry count
    for (i, (id, offset, len, flags)) in items.iter().enumerate() {
        let e = METADATA + 32 + i * 32;
        b[e..e + 16].copy_from_slice(id);
        put32(b, e + 16, *offset);
        put32(b, e + 20, *len);
        put32(b, e + 24, *flags);
    }
}

/// The image: identifier, two headers, two region tables, an empty log, the metadata
/// (1 MiB blocks, 2 MiB virtual size, 512-byte logical and 4 KiB physical sectors), the BAT
/// and block 0 (0xab).
fn image() -> Vec<u8> {
    let mut b = vec![0u8; BLOCK0 + MIB];
    b[0..8].copy_from_slice(b"vhdxfile"); // file type identifier
    header(&mut b, HEADERS[0], 1);
    header(&mut b, HEADERS[1], 2);
    for at in REGION_TABLES {
        region_table(&mut b, at);
    }
    write_metadata_table(&mut b, &metadata_items());
    put32(&mut b, METADATA + 0x10000, MIB as u32); // block size
    put32(&mut b, METADATA + 0x10004, 0); // flags: no LeaveBlocksAllocated, no parent
    put64(&mut b, METADATA + 0x10008, SIZE); // virtual disk size
    b[METADATA + 0x10010..METADATA + 0x10020].fill(0x5a); // page 83 data
    put32(&mut b, METADATA + 0x10020, 512); // logical sector size
    put32(&mut b, METADATA + 0x10024, 4096); // physical sector size
    put64(&mut b, BAT, (BLOCK0 as u64) | 6); // block 0: fully present at 4 MiB
    b[BLOCK0..].fill(0xab);
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

/// Edits both headers and reseals them.
fn edit_headers(b: &mut [u8], edit: impl Fn(&mut [u8], usize)) {
    for at in HEADERS {
        edit(b, at);
        seal(b, at, 4096);
    }
}

#[test]
fn test_vhdx_built_image_is_clean_for_qemu_and_reads_the_same() {
    let dir = tmp();
    let p = dir.path().join("built.vhdx");
    let b = image();
    std::fs::write(&p, &b).unwrap();
    tool("qemu-img", "qemu-utils", &["check", p.to_str().unwrap()]);
    let disk = open(b).unwrap();
    let mut ours = vec![0u8; SIZE as usize];
    disk.read_at(&mut ours, 0).unwrap();
    assert_eq!(ours, qemu_raw_as(&p, Some("vhdx")));
    assert_eq!(ours[..MIB], [0xab; MIB]);
}

#[test]
fn test_vhdx_rule_headers() {
    let mut b = image();
    for at in HEADERS {
        b[at] = b'H';
    }
    let e = open(b).err().unwrap();
    assert_eq!(e.name(), Some(rules::HEADERS_INVALID), "{e}");
    // One sequence number for two different headers.
    let mut b = image();
    edit_headers(&mut b, |b, at| put64(b, at + 8, 7));
    b[HEADERS[1] + 40] = 0x33; // its data write GUID
    seal(&mut b, HEADERS[1], 4096);
    assert_rule(b, rules::HEADERS_SAME_SEQUENCE);
    // Identical headers with one sequence number (as Disk2VHD writes them) are fine.
    let mut b = image();
    edit_headers(&mut b, |b, at| put64(b, at + 8, 7));
    open(b).unwrap();
}

#[test]
fn test_vhdx_rule_log_place() {
    let mut b = image();
    edit_headers(&mut b, |b, at| put64(b, at + 72, 0));
    assert_rule(b, rules::LOG_LOCATION);
    let mut b = image();
    edit_headers(&mut b, |b, at| put64(b, at + 72, METADATA as u64));
    assert_rule(b, rules::LOG_OVER_REGION);
    let mut b = image();
    edit_headers(&mut b, |b, at| put64(b, at + 72, 64 * MIB as u64));
    match open(b).err().unwrap() {
        DiskError::Refused(Refusal::PointerOutOfBounds { what, .. }) => assert_eq!(what, "log"),
        e => panic!("{e}"),
    }
}

#[test]
fn test_vhdx_rule_region_tables() {
    let mut b = image();
    for at in REGION_TABLES {
        b[at + 100] ^= 1; // checksum now wrong
    }
    assert_rule(b, rules::REGION_TABLES_INVALID);
    let mut b = image();
    let unknown = guid(0x1234_5678, 1, 2, [3; 8]);
    for at in REGION_TABLES {
        put32(&mut b, at + 8, 3);
        let e = at + 16 + 64;
        b[e..e + 16].copy_from_slice(&unknown);
        put64(&mut b, e + 16, BLOCK0 as u64);
        put32(&mut b, e + 24, MIB as u32);
        put32(&mut b, e + 28, 1); // required
        seal(&mut b, at, 64 << 10);
    }
    assert_rule(b, rules::REGION_REQUIRED_UNKNOWN);
}

#[test]
fn test_vhdx_rule_metadata_table() {
    let mut b = image();
    b[METADATA] = b'M';
    assert_rule(b, rules::METADATA_SIGNATURE);
    let mut b = image();
    put16(&mut b, METADATA + 10, 2048);
    assert_rule(b, rules::METADATA_TABLE);
    let edits: [(&str, Edit); 7] = [
        (rules::METADATA_DUPLICATE, |m| m.push(m[0])),
        (rules::METADATA_OUT_OF_REGION, |m| m[0].1 = 100),
        (rules::METADATA_OUT_OF_REGION, |m| m[0].1 = (MIB - 4) as u32),
        (rules::METADATA_OVERLAP, |m| m[1].1 = 0x10004),
        (rules::METADATA_REQUIRED_UNKNOWN, |m| {
            m.push((guid(9, 9, 9, [9; 8]), 0x10100, 8, 4));
        }),
        (rules::METADATA_MISSING, |m| {
            m.remove(2); // Page 83 Data
        }),
        (rules::METADATA_SIZE, |m| m[0].2 = 12),
    ];
    for (rule, edit) in edits {
        let mut items = metadata_items();
        edit(&mut items);
        let mut b = image();
        write_metadata_table(&mut b, &items);
        assert_rule(b, rule);
    }
}

#[test]
fn test_vhdx_rule_metadata_values() {
    let item = |at: usize| METADATA + at;
    let mut b = image();
    put32(&mut b, item(0x10000), 3 * MIB as u32);
    assert_rule(b, rules::BLOCK_SIZE);
    let mut b = image();
    put32(&mut b, item(0x10020), 1024);
    assert_rule(b, rules::SECTOR_SIZE);
    let mut b = image();
    put32(&mut b, item(0x10020), 4096);
    put64(&mut b, item(0x10008), SIZE + 512);
    assert_rule(b, rules::VIRTUAL_SIZE_UNALIGNED);
}

#[test]
fn test_vhdx_rule_bat() {
    let size = |b: &mut [u8], v: u64| put64(b, METADATA + 0x10008, v);
    let mut b = image();
    size(&mut b, 200_000 * MIB as u64); // 200000 entries: more than its 1 MiB region holds
    assert_rule(b, rules::BAT_REGION_SMALL);
    let mut b = image();
    put64(&mut b, BAT, (BLOCK0 as u64) | 4);
    assert_rule(b, rules::BAT_STATE);
    let mut b = image();
    put64(&mut b, BAT, (BLOCK0 as u64) | 1 << 5 | 6);
    assert_rule(b, rules::BAT_RESERVED);
    // 4097 blocks: entry 4096 is the first chunk's sector bitmap entry.
    let mut b = image();
    size(&mut b, 4097 * MIB as u64);
    put64(&mut b, BAT + 4096 * 8, 1);
    assert_rule(b, rules::SECTOR_BITMAP_STATE);
    let mut b = image();
    put64(&mut b, BAT, (BAT as u64) | 6);
    assert_rule(b, rules::BLOCK_OVER_METADATA);
    let mut b = image();
    put64(&mut b, BAT, 6); // offset 0: the header section
    assert_rule(b, rules::BLOCK_OVER_METADATA);
    let mut b = image();
    put64(&mut b, BAT + 8, (BLOCK0 as u64) | 6);
    assert_rule(b, rules::BLOCKS_OVERLAP);
}
