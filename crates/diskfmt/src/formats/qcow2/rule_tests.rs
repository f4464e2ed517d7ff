//! Every named qcow2 rule broken once, on an image built byte by byte from the specification
//! that `qemu-img check` finds clean and that vmie reads as qemu-img does.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::precedence
)]

use std::sync::Arc;

use super::rules;
use crate::testutil::{qemu_raw_as, tmp, tool};
use crate::{DiskError, Limits, Refusal};

/// Where the parts of the built image sit, in clusters.
const REFTABLE: u64 = 1;
const REFBLOCK: u64 = 2;
const L1: u64 = 3;
const L2: u64 = 4;
const DATA: u64 = 5;
/// Clusters in the image.
const CLUSTERS: u64 = 6;
/// Virtual size: 1 MiB.
const SIZE: u64 = 1 << 20;

fn put32(b: &mut [u8], at: u64, v: u32) {
    let at = at as usize;
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: u64, v: u64) {
    let at = at as usize;
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A valid version 3 image of 2^`cb`-byte clusters: header, refcount table, refcount block,
/// L1, one L2 table and one data cluster (guest cluster 0, filled with 0xab). With `extl2`
/// the L2 entries are extended and the data cluster's 32 subclusters are all allocated.
fn image(cb: u32, extl2: bool) -> Vec<u8> {
    let cs = 1u64 << cb;
    let mut b = vec![0u8; (CLUSTERS * cs) as usize];
    b[0..4].copy_from_slice(b"QFI\xfb"); // magic
    put32(&mut b, 4, 3); // version
    put32(&mut b, 20, cb); // cluster_bits
    put64(&mut b, 24, SIZE); // size
    put32(&mut b, 32, 0); // crypt_method: none
    let entry = if extl2 { 16 } else { 8 };
    let l1_size = SIZE.div_ceil(cs / entry * cs);
    put32(&mut b, 36, l1_size as u32); // l1_size: the entries the virtual size needs
    put64(&mut b, 40, L1 * cs); // l1_table_offset
    put64(&mut b, 48, REFTABLE * cs); // refcount_table_offset
    put32(&mut b, 56, 1); // refcount_table_clusters
    put32(&mut b, 60, 0); // nb_snapshots
    put64(&mut b, 64, 0); // snapshots_offset
    put64(&mut b, 72, if extl2 { 1 << 4 } else { 0 }); // incompatible_features
    put64(&mut b, 80, 0); // compatible_features
    put64(&mut b, 88, 0); // autoclear_features
    put32(&mut b, 96, 4); // refcount_order: 16-bit refcounts
    put32(&mut b, 100, 104); // header_length; the extension list ends at once (type 0)
    put64(&mut b, REFTABLE * cs, REFBLOCK * cs); // refcount table entry 0
    for c in 0..CLUSTERS {
        // Every cluster of the file is used once.
        let at = (REFBLOCK * cs + c * 2) as usize;
        b[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    let copied = 1u64 << 63;
    put64(&mut b, L1 * cs, L2 * cs | copied); // L1 entry 0
    put64(&mut b, L2 * cs, DATA * cs | copied); // L2 entry 0: guest cluster 0
    if extl2 {
        put64(&mut b, L2 * cs + 8, 0xffff_ffff); // its subclusters: all allocated
    }
    b[(DATA * cs) as usize..].fill(0xab);
    b
}

fn open(b: Vec<u8>) -> crate::Result<Box<dyn crate::Disk>> {
    crate::open(Arc::new(b), &Limits::default())
}

/// Asserts `b` is refused by the named rule `rule`.
#[track_caller]
fn assert_rule(b: Vec<u8>, rule: &str) {
    match open(b) {
        Ok(_) => panic!("accepted; expected {rule}"),
        Err(e) => assert_eq!(e.name(), Some(rule), "{e}"),
    }
}

/// Asserts `b` is refused as pointing outside the file at `what`.
#[track_caller]
fn assert_out_of_file(b: Vec<u8>, what: &str) {
    match open(b) {
        Ok(_) => panic!("accepted; expected {what} out of bounds"),
        Err(DiskError::Refused(Refusal::PointerOutOfBounds { what: w, .. })) => {
            assert_eq!(w, what);
        }
        Err(e) => panic!("expected {what} out of bounds, got {e}"),
    }
}

#[test]
fn test_qcow2_built_image_is_clean_for_qemu_and_reads_the_same() {
    let dir = tmp();
    for (cb, extl2) in [(12, false), (9, false), (14, true)] {
        let b = image(cb, extl2);
        let p = dir.path().join(format!("built-{cb}-{extl2}.qcow2"));
        std::fs::write(&p, &b).unwrap();
        tool("qemu-img", "qemu-utils", &["check", p.to_str().unwrap()]);
        let disk = open(b).unwrap();
        let mut ours = vec![0u8; SIZE as usize];
        disk.read_at(&mut ours, 0).unwrap();
        assert_eq!(ours, qemu_raw_as(&p, Some("qcow2")), "cluster bits {cb}");
    }
}

#[test]
fn test_qcow2_rule_cluster_bits() {
    for cb in [8u32, 22] {
        let mut b = image(12, false);
        put32(&mut b, 20, cb);
        assert_rule(b, rules::CLUSTER_BITS);
    }
}

#[test]
fn test_qcow2_rule_crypt_method() {
    let mut b = image(12, false);
    put32(&mut b, 32, 3);
    assert_rule(b, rules::CRYPT_METHOD);
    let mut b = image(12, false);
    put32(&mut b, 32, 1);
    assert_eq!(open(b).err().unwrap().reason_code(), "encrypted");
}

#[test]
fn test_qcow2_rule_header_length() {
    for len in [100u32, 108, 8192] {
        let mut b = image(12, false);
        put32(&mut b, 100, len);
        assert_rule(b, rules::HEADER_LENGTH);
    }
}

#[test]
fn test_qcow2_rule_refcount_order() {
    let mut b = image(12, false);
    put32(&mut b, 96, 7);
    assert_rule(b, rules::REFCOUNT_ORDER);
}

#[test]
fn test_qcow2_rule_compression_type_and_bit() {
    let mut b = image(12, false);
    put64(&mut b, 72, 1 << 3); // the bit, no field (header_length 104)
    assert_rule(b, rules::COMPRESSION_BIT);
    let mut b = image(12, false);
    put32(&mut b, 100, 112);
    b[104] = 1; // zstd, without the bit
    assert_rule(b, rules::COMPRESSION_BIT);
}

#[test]
fn test_qcow2_rule_extended_l2_small_clusters() {
    let mut b = image(12, false);
    put64(&mut b, 72, 1 << 4);
    assert_rule(b, rules::EXTL2_CLUSTERS);
}

#[test]
fn test_qcow2_rule_marked_corrupt() {
    let mut b = image(12, false);
    put64(&mut b, 72, 1 << 1);
    let e = open(b).err().unwrap();
    assert_eq!(
        (e.reason_code(), e.name()),
        ("corrupt", Some(rules::MARKED_CORRUPT))
    );
}

#[test]
fn test_qcow2_rule_data_file_raw_without_data_file() {
    let mut b = image(12, false);
    put64(&mut b, 88, 1 << 1);
    assert_rule(b, rules::DATA_FILE_RAW);
}

#[test]
fn test_qcow2_rule_extensions() {
    // An extension whose data runs past the header cluster.
    let mut b = image(12, false);
    put32(&mut b, 104, 0x1234_5678);
    put32(&mut b, 108, 4096);
    assert_rule(b, rules::EXTENSION_PAST_CLUSTER);
    // A backing format name of 16 bytes.
    let mut b = image(12, false);
    put32(&mut b, 104, super::header::EXT_BACKING_FORMAT);
    put32(&mut b, 108, 16);
    assert_rule(b, rules::BACKING_FORMAT_LENGTH);
    // 1025 empty unknown extensions in a 64 KiB header cluster.
    let mut b = image(16, false);
    for i in 0..1025u64 {
        put32(&mut b, 104 + i * 8, 0x1000 + i as u32);
    }
    assert_rule(b, rules::TOO_MANY_EXTENSIONS);
}

/// `image(12)` with a bitmaps extension (autoclear bit 0 set) whose directory of `size`
/// bytes is at `offset`, counting `count` bitmaps, `len` bytes long.
fn with_bitmaps(len: u32, count: u32, size: u64, offset: u64) -> Vec<u8> {
    let mut b = image(12, false);
    put64(&mut b, 88, 1); // autoclear bit 0: the bitmaps extension is current
    put32(&mut b, 104, super::header::EXT_BITMAPS); // type
    put32(&mut b, 108, len); // length
    put32(&mut b, 112, count); // nb_bitmaps
    put32(&mut b, 116, 0); // reserved
    put64(&mut b, 120, size); // bitmap_directory_size
    put64(&mut b, 128, offset); // bitmap_directory_offset
    b
}

#[test]
fn test_qcow2_rule_bitmaps_extension() {
    // A sound one (its directory in the data cluster, which nothing checks further) opens.
    open(with_bitmaps(24, 1, 32, DATA * 4096)).unwrap();
    assert_rule(
        with_bitmaps(20, 1, 32, DATA * 4096),
        rules::BITMAPS_EXTENSION,
    );
    assert_rule(with_bitmaps(24, 0, 32, DATA * 4096), rules::BITMAPS_COUNT);
    assert_rule(
        with_bitmaps(24, 65_536, 32, DATA * 4096),
        rules::BITMAPS_COUNT,
    );
    assert_rule(
        with_bitmaps(24, 1, (64 << 20) + 1, DATA * 4096),
        rules::BITMAP_DIRECTORY_SIZE,
    );
    assert_rule(
        with_bitmaps(24, 1, 32, DATA * 4096 + 8),
        rules::BITMAP_DIRECTORY_UNALIGNED,
    );
    assert_rule(with_bitmaps(24, 1, 32, 0), rules::TABLE_IN_HEADER);
    assert_out_of_file(with_bitmaps(24, 1, 32, 1 << 30), "bitmap directory");
    // Without autoclear bit 0 the extension is stale and ignored, as the spec says.
    let mut b = with_bitmaps(20, 0, 32, 7);
    put64(&mut b, 88, 0);
    open(b).unwrap();
}

#[test]
fn test_qcow2_rule_l1_table() {
    let mut b = image(12, false);
    put32(&mut b, 36, 0);
    assert_rule(b, rules::L1_TOO_SMALL);
    let mut b = image(12, false);
    put32(&mut b, 36, (4 << 20) + 1);
    assert_rule(b, rules::L1_TOO_LARGE);
    let mut b = image(12, false);
    put64(&mut b, 40, L1 * 4096 + 8);
    assert_rule(b, rules::L1_UNALIGNED);
    let mut b = image(12, false);
    put64(&mut b, 40, 0);
    assert_rule(b, rules::TABLE_IN_HEADER);
    // More entries than the file holds.
    let mut b = image(12, false);
    put32(&mut b, 36, 4096);
    assert_out_of_file(b, "L1 table");
}

#[test]
fn test_qcow2_rule_refcount_table() {
    let mut b = image(12, false);
    put32(&mut b, 56, 0);
    assert_rule(b, rules::REFCOUNT_TABLE_EMPTY);
    let mut b = image(12, false);
    put32(&mut b, 56, 2049); // 2049 clusters of 4 KiB: above 8 MiB
    assert_rule(b, rules::REFCOUNT_TABLE_TOO_LARGE);
    let mut b = image(12, false);
    put64(&mut b, 48, REFTABLE * 4096 + 512);
    assert_rule(b, rules::REFCOUNT_TABLE_UNALIGNED);
    let mut b = image(12, false);
    put64(&mut b, 48, 0);
    assert_rule(b, rules::TABLE_IN_HEADER);
    let mut b = image(12, false);
    put64(&mut b, 48, 1 << 30);
    assert_out_of_file(b, "refcount table");
    let mut b = image(12, false);
    put32(&mut b, 56, 16); // 64 KiB from cluster 1: past the 24 KiB file
    assert_out_of_file(b, "refcount table");
}

#[test]
fn test_qcow2_rule_refcount_table_entries() {
    let mut b = image(12, false);
    put64(&mut b, REFTABLE * 4096, REFBLOCK * 4096 | 2);
    assert_rule(b, rules::REFCOUNT_ENTRY_RESERVED);
    let mut b = image(12, false);
    put64(&mut b, REFTABLE * 4096, REFBLOCK * 4096 + 512);
    assert_rule(b, rules::REFCOUNT_BLOCK_UNALIGNED);
    let mut b = image(12, false);
    put64(&mut b, REFTABLE * 4096 + 8, 1 << 30);
    assert_out_of_file(b, "refcount block");
}

/// `image(12)` with one snapshot entry in the data cluster; `entry` edits its fields.
fn with_snapshot(entry: impl Fn(&mut [u8], u64)) -> Vec<u8> {
    let mut b = image(12, false);
    let at = DATA * 4096;
    b[at as usize..].fill(0);
    put32(&mut b, 60, 1); // nb_snapshots
    put64(&mut b, 64, at); // snapshots_offset
    put64(&mut b, at, L1 * 4096); // l1_table_offset (the active one's copy, here shared)
    put32(&mut b, at + 8, 1); // l1_size
    b[(at + 12) as usize..(at + 14) as usize].copy_from_slice(&1u16.to_be_bytes()); // id size
    b[(at + 14) as usize..(at + 16) as usize].copy_from_slice(&2u16.to_be_bytes()); // name size
    put32(&mut b, at + 36, 16); // extra_data_size
    put64(&mut b, at + 48, SIZE); // extra data: disk size
    b[(at + 56) as usize] = b'1'; // id
    b[(at + 57) as usize..(at + 59) as usize].copy_from_slice(b"s1"); // name
    entry(&mut b, at);
    b
}

#[test]
fn test_qcow2_rule_snapshot_table() {
    open(with_snapshot(|_, _| {})).unwrap();
    let mut b = image(12, false);
    put32(&mut b, 60, 65_537);
    assert_rule(b, rules::TOO_MANY_SNAPSHOTS);
    // Misaligned even when empty, as qemu checks it.
    let mut b = image(12, false);
    put64(&mut b, 64, 4096 + 8);
    assert_rule(b, rules::SNAPSHOT_TABLE_UNALIGNED);
    let b = with_snapshot(|b, _| put64(b, 64, 0));
    assert_rule(b, rules::TABLE_IN_HEADER);
    let b = with_snapshot(|b, _| put32(b, 60, 200)); // 200 entries: past the end
    assert_out_of_file(b, "snapshot table");
    let b = with_snapshot(|b, at| put32(b, at + 36, 1025));
    assert_rule(b, rules::SNAPSHOT_EXTRA_DATA);
    let b = with_snapshot(|b, at| put64(b, at, L1 * 4096 + 8));
    assert_rule(b, rules::SNAPSHOT_L1_UNALIGNED);
    let b = with_snapshot(|b, at| put32(b, at + 8, (4 << 20) + 1));
    assert_rule(b, rules::SNAPSHOT_L1_TOO_LARGE);
    let b = with_snapshot(|b, at| put64(b, at, 1 << 30));
    assert_out_of_file(b, "snapshot L1 table");
    let b = with_snapshot(|b, at| put64(b, at, 0));
    assert_rule(b, rules::TABLE_IN_HEADER);
}

/// A file of `size` bytes: `head`, then snapshot entries of `entry` (each padded to 8 bytes)
/// from `start`, zeros elsewhere — a table too large to build in memory.
struct RepeatedEntries {
    head: Vec<u8>,
    start: u64,
    entry: Vec<u8>,
    size: u64,
}

impl crate::ReadAt for RepeatedEntries {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = buf.len().min(self.size.saturating_sub(offset) as usize);
        let stride = (self.entry.len() as u64).next_multiple_of(8);
        for (i, x) in buf[..n].iter_mut().enumerate() {
            let at = offset + i as u64;
            *x = if at < self.head.len() as u64 {
                self.head[at as usize]
            } else if at >= self.start {
                *self
                    .entry
                    .get(((at - self.start) % stride) as usize)
                    .unwrap_or(&0)
            } else {
                0
            };
        }
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

#[test]
fn test_qcow2_rule_snapshot_table_too_large() {
    let mut head = image(12, false);
    let start = 1u64 << 20;
    put32(&mut head, 60, 600); // nb_snapshots: 600 entries of 128 KiB are 75 MiB
    put64(&mut head, 64, start);
    let mut entry = vec![0u8; 40 + 65_535 * 2];
    entry[0..8].copy_from_slice(&(L1 * 4096).to_be_bytes()); // l1_table_offset
    entry[8..12].copy_from_slice(&1u32.to_be_bytes()); // l1_size
    entry[12..14].copy_from_slice(&65_535u16.to_be_bytes()); // id_str_size
    entry[14..16].copy_from_slice(&65_535u16.to_be_bytes()); // name_size
    let src = RepeatedEntries {
        head,
        start,
        entry,
        size: start + (80 << 20),
    };
    let e = crate::open(Arc::new(src), &Limits::default())
        .err()
        .unwrap();
    assert_eq!(e.name(), Some(rules::SNAPSHOT_TABLE_TOO_LARGE), "{e}");
}

#[test]
fn test_qcow2_rule_l1_entries() {
    let mut b = image(12, false);
    put64(&mut b, L1 * 4096, L2 * 4096 | 1 << 62);
    assert_rule(b, rules::L1_ENTRY_RESERVED);
    let mut b = image(12, false);
    put64(&mut b, L1 * 4096, L2 * 4096 + 512);
    assert_rule(b, rules::L2_UNALIGNED);
    let mut b = image(12, false);
    put64(&mut b, L1 * 4096, 1 << 30);
    assert_out_of_file(b, "L2 table");
}

#[test]
fn test_qcow2_rule_l2_entries() {
    let mut b = image(12, false);
    put64(&mut b, L2 * 4096, DATA * 4096 | 1 << 57);
    assert_rule(b, rules::L2_ENTRY_RESERVED);
    let mut b = image(12, false);
    put64(&mut b, L2 * 4096, DATA * 4096 + 512);
    assert_rule(b, rules::DATA_CLUSTER_UNALIGNED);
    let mut b = image(12, false);
    put64(&mut b, L2 * 4096, 1 << 30);
    assert_out_of_file(b, "data cluster");
    // A compressed cluster (bit 62) with the copied bit.
    let mut b = image(12, false);
    put64(&mut b, L2 * 4096, 1 << 63 | 1 << 62 | DATA * 4096);
    assert_rule(b, rules::COMPRESSED_COPIED);
}

#[test]
fn test_qcow2_rule_extended_l2_entries() {
    let cs = 1u64 << 14;
    let mut b = image(14, true);
    put64(&mut b, L2 * cs + 8, 1 | 1 << 32); // subcluster 0 allocated and zero
    assert_rule(b, rules::SUBCLUSTER_ALLOCATED_AND_ZERO);
    let mut b = image(14, true);
    put64(&mut b, L2 * cs, 0); // no host cluster, subclusters still allocated
    assert_rule(b, rules::SUBCLUSTERS_WITHOUT_HOST);
}
