//! Every named VMDK rule broken once, on images built byte by byte from the specification (a
//! monolithicSparse and a streamOptimized written as a stream, footer included) that
//! `qemu-img check` finds clean and that vmie reads as qemu-img does.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;

use super::rules;
use crate::testutil::{qemu_raw_as, tmp, tool};
use crate::{DiskError, Limits, Refusal};

const SECTOR: usize = 512;
/// Capacity: 1 MiB.
const CAPACITY: u64 = 2048;
/// Grains of 4 KiB.
const GRAIN: u64 = 8;
/// Where the monolithicSparse parts sit, in sectors.
const DESC: usize = 1;
const RGD: usize = 2;
const RGT: usize = 3;
const GD: usize = 7;
const GT: usize = 8;
const OVERHEAD: usize = 16;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn descriptor(create_type: &str, name: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n# Extent description\nRW {CAPACITY} SPARSE \"{name}\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n"
    )
}

/// A sparse extent header (VMware spec 1.1, "Hosted Sparse Extent Header").
fn header(flags: u32, rgd: u64, gd: u64, overhead: u64, compress: u16) -> [u8; SECTOR] {
    let mut h = [0u8; SECTOR];
    h[0..4].copy_from_slice(b"KDMV"); // magic
    put32(&mut h, 4, if compress == 0 { 1 } else { 3 }); // version
    put32(&mut h, 8, flags); // flags
    put64(&mut h, 12, CAPACITY); // capacity (sectors)
    put64(&mut h, 20, GRAIN); // grainSize (sectors)
    put64(&mut h, 28, DESC as u64); // descriptorOffset
    put64(&mut h, 36, 1); // descriptorSize
    put32(&mut h, 44, 512); // numGTEsPerGT
    put64(&mut h, 48, rgd); // rgdOffset
    put64(&mut h, 56, gd); // gdOffset
    put64(&mut h, 64, overhead); // overHead
    h[72] = 0; // uncleanShutdown
    h[73..77].copy_from_slice(b"\n \r\n"); // newline detection characters
    h[77..79].copy_from_slice(&compress.to_le_bytes()); // compressAlgorithm
    h
}

/// A monolithicSparse image: header, descriptor, redundant GD and GT, GD and GT, then grain
/// 0 (4 KiB of 0xab) at the overhead.
fn sparse() -> Vec<u8> {
    let mut b = vec![0u8; (OVERHEAD + GRAIN as usize) * SECTOR];
    b[..SECTOR].copy_from_slice(&header(3, RGD as u64, GD as u64, OVERHEAD as u64, 0));
    let d = descriptor("monolithicSparse", "built.vmdk");
    b[DESC * SECTOR..DESC * SECTOR + d.len()].copy_from_slice(d.as_bytes());
    put32(&mut b, RGD * SECTOR, RGT as u32); // redundant GD entry 0
    put32(&mut b, RGT * SECTOR, OVERHEAD as u32); // redundant GT entry 0: grain 0
    put32(&mut b, GD * SECTOR, GT as u32); // GD entry 0
    put32(&mut b, GT * SECTOR, OVERHEAD as u32); // GT entry 0: grain 0
    b[OVERHEAD * SECTOR..].fill(0xab);
    b
}

/// A metadata marker sector: `numSectors`, size 0, `type`.
fn marker(sectors: u64, kind: u32) -> [u8; SECTOR] {
    let mut m = [0u8; SECTOR];
    put64(&mut m, 0, sectors);
    put32(&mut m, 12, kind);
    m
}

/// A streamOptimized image written as a stream: the header defers the grain directory to the
/// footer (gdOffset = GD_AT_END); grain 0 compressed behind its marker at the overhead, then
/// the grain table and directory behind their markers, the footer and the end-of-stream.
fn stream() -> Vec<u8> {
    const FLAGS: u32 = 1 | 1 << 16 | 1 << 17; // newline test, compressed, markers
    let mut b = vec![0u8; OVERHEAD * SECTOR];
    b[..SECTOR].copy_from_slice(&header(FLAGS, 0, u64::MAX, OVERHEAD as u64, 1));
    let d = descriptor("streamOptimized", "stream.vmdk");
    b[DESC * SECTOR..DESC * SECTOR + d.len()].copy_from_slice(d.as_bytes());
    // Grain 0: marker {lba 0, size} and the zlib stream, padded to a sector.
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut z = vec![0u8; 8192];
    let n = c.zlib_compress(&[0xab; 4096], &mut z).unwrap();
    let mut grain = vec![0u8; 12 + n];
    put64(&mut grain, 0, 0); // lba
    put32(&mut grain, 8, n as u32); // size
    grain[12..].copy_from_slice(&z[..n]);
    grain.resize(grain.len().next_multiple_of(SECTOR), 0);
    b.extend_from_slice(&grain);
    // The grain table (4 sectors) behind its marker, then the directory behind its own.
    let gt = b.len() / SECTOR + 1;
    b.extend_from_slice(&marker(4, 1));
    let mut table = vec![0u8; 4 * SECTOR];
    put32(&mut table, 0, OVERHEAD as u32);
    b.extend_from_slice(&table);
    let gd = b.len() / SECTOR + 1;
    b.extend_from_slice(&marker(1, 2));
    let mut dir = vec![0u8; SECTOR];
    put32(&mut dir, 0, gt as u32);
    b.extend_from_slice(&dir);
    b.extend_from_slice(&marker(1, 3)); // footer marker
    b.extend_from_slice(&header(FLAGS, 0, gd as u64, OVERHEAD as u64, 1));
    b.extend_from_slice(&marker(0, 0)); // end of stream
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

/// `sparse()` with its descriptor replaced by `text` (at most one sector).
fn with_descriptor(text: &str) -> Vec<u8> {
    let mut b = sparse();
    let at = DESC * SECTOR;
    b[at..at + SECTOR].fill(0);
    b[at..at + text.len()].copy_from_slice(text.as_bytes());
    b
}

#[test]
fn test_vmdk_built_images_are_clean_for_qemu_and_read_the_same() {
    let dir = tmp();
    for (name, b) in [("built.vmdk", sparse()), ("stream.vmdk", stream())] {
        let p = dir.path().join(name);
        std::fs::write(&p, &b).unwrap();
        tool("qemu-img", "qemu-utils", &["check", p.to_str().unwrap()]);
        let disk = open(b).unwrap();
        let mut ours = vec![0u8; (CAPACITY * 512) as usize];
        disk.read_at(&mut ours, 0).unwrap();
        assert_eq!(ours, qemu_raw_as(&p, Some("vmdk")), "{name}");
        assert_eq!(ours[..4096], [0xab; 4096], "{name}");
    }
}

#[test]
fn test_vmdk_rule_header_fields() {
    let mut b = sparse();
    b[73..77].copy_from_slice(b"\n \n\n"); // \r\n turned into \n by a text-mode copy
    assert_rule(b, rules::NEWLINES_MANGLED);
    for g in [0u64, 3, 1 << 40] {
        let mut b = sparse();
        put64(&mut b, 20, g);
        assert_rule(b, rules::GRAIN_SIZE);
    }
    for n in [0u32, 513] {
        let mut b = sparse();
        put32(&mut b, 44, n);
        assert_rule(b, rules::GTES_PER_GT);
    }
    let mut b = sparse();
    put32(&mut b, 8, 3 | 1 << 16); // compressed flag, no algorithm
    assert_rule(b, rules::COMPRESSION_FLAG);
    let mut b = sparse();
    put64(&mut b, 36, 0); // a descriptor offset without a size
    assert_rule(b, rules::DESCRIPTOR_LOCATION);
    let mut b = sparse();
    put64(&mut b, 56, 0);
    assert_rule(b, rules::GD_OFFSET_ZERO);
    let mut b = sparse();
    put64(&mut b, 48, 0); // flag bit 1 set, no redundant directory
    assert_rule(b, rules::RGD_MISSING);
    let mut b = sparse();
    put64(&mut b, 48, 1 << 30);
    match open(b).err().unwrap() {
        DiskError::Refused(Refusal::PointerOutOfBounds { what, .. }) => {
            assert_eq!(what, "redundant grain directory");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn test_vmdk_rule_footer_disagrees_with_header() {
    let b = stream();
    let footer_header = b.len() - 2 * SECTOR;
    for (at, value) in [(12, CAPACITY * 2), (20, 16), (36, 2)] {
        let mut bad = b.clone();
        put64(&mut bad, footer_header + at, value); // capacity, grain size, descriptor size
        assert_rule(bad, rules::FOOTER_MISMATCH);
    }
    // The header may not defer the directory and name another one than its footer either.
    let mut bad = b.clone();
    let gd = u64::from_le_bytes(
        b[footer_header + 56..footer_header + 64]
            .try_into()
            .unwrap(),
    );
    put64(&mut bad, 56, gd + 1);
    assert_rule(bad, rules::FOOTER_MISMATCH);
    let mut ok = b.clone();
    put64(&mut ok, 56, gd); // the header naming the footer's directory is consistent
    open(ok).unwrap();
}

#[test]
fn test_vmdk_rule_grains() {
    let mut b = sparse();
    put32(&mut b, GT * SECTOR, 4); // grain 0 inside the metadata
    put32(&mut b, RGT * SECTOR, 4);
    assert_rule(b, rules::GRAIN_BEFORE_OVERHEAD);
    let b = stream();
    let mut bad = b.clone();
    put64(&mut bad, OVERHEAD * SECTOR, 8); // grain 0's marker names grain 1's sector
    assert_rule(bad, rules::MARKER_LBA);
    let mut bad = b.clone();
    put32(&mut bad, OVERHEAD * SECTOR + 8, 1 << 20); // a compressed size above one grain
    assert_rule(bad, rules::MARKER_SIZE);
}

#[test]
fn test_vmdk_rule_grain_tables_overlap() {
    // 64 grain tables (a 128 MiB disk), all at the one table's sector: they cannot all fit.
    let text = descriptor("monolithicSparse", "built.vmdk").replace("RW 2048", "RW 262144");
    let mut b = with_descriptor(&text);
    put64(&mut b, 12, 512 * GRAIN * 64); // capacity
    for i in 0..64 {
        put32(&mut b, GD * SECTOR + i * 4, GT as u32);
    }
    assert_rule(b, rules::GRAIN_TABLES_OVERLAP);
}

#[test]
fn test_vmdk_rule_descriptor_lines() {
    let base = descriptor("monolithicSparse", "built.vmdk");
    let cases: &[(&str, &str, &str)] = &[
        (
            "ddb.adapterType = \"ide\"",
            "this line means nothing",
            rules::DESCRIPTOR_LINE,
        ),
        (
            "ddb.adapterType = \"ide\"",
            "ddb.adapterType = \"ide",
            rules::DESCRIPTOR_LINE,
        ),
        ("RW 2048 SPARSE", "WR 2048 SPARSE", rules::EXTENT_ACCESS),
        ("RW 2048 SPARSE", "RW 2048 SPARSEY", rules::EXTENT_TYPE),
        (
            "RW 2048 SPARSE \"built.vmdk\"",
            "RW 2048 SPARSE built.vmdk",
            rules::EXTENT_NAME,
        ),
        (
            "RW 2048 SPARSE \"built.vmdk\"",
            "RW 2048 SPARSE \"built.vmdk",
            rules::EXTENT_NAME,
        ),
        (
            "RW 2048 SPARSE \"built.vmdk\"",
            "RW 2048 SPARSE",
            rules::EXTENT_NAME,
        ),
        (
            "RW 2048 SPARSE \"built.vmdk\"",
            "RW 2048 SPARSE \"built.vmdk\" 0 extra",
            rules::DESCRIPTOR_LINE,
        ),
        ("RW 2048 SPARSE", "RW lots SPARSE", rules::DESCRIPTOR_LINE),
        (
            "RW 2048 SPARSE \"built.vmdk\"",
            "# no extent",
            rules::NO_EXTENT,
        ),
        (
            "createType=\"monolithicSparse\"",
            "# no createType",
            rules::CREATE_TYPE_MISSING,
        ),
        (
            "createType=\"monolithicSparse\"",
            "createType=\"streamOptimized\"",
            rules::CREATE_TYPE_MISMATCH,
        ),
        ("RW 2048", "RW 4096", rules::EXTENT_SIZE),
        ("RW 2048", "NOACCESS 2048", rules::EXTENT_NOACCESS),
        ("version=1", "version=4", rules::DESCRIPTOR_VERSION),
        ("CID=12345678", "CID=nothex", rules::CID),
        ("parentCID=ffffffff", "parentCID=123456789", rules::CID),
    ];
    for (from, to, rule) in cases {
        assert!(base.contains(from), "{from}");
        assert_rule(with_descriptor(&base.replacen(from, to, 1)), rule);
    }
    // Comments, blank lines, a file name holding `=` and spaces, RDONLY, an offset: valid.
    let ok = base
        .replace(
            "RW 2048 SPARSE \"built.vmdk\"",
            "RDONLY 2048 SPARSE \"a = b.vmdk\"",
        )
        .replace("#DDB", "   # indented comment\n\n");
    open(with_descriptor(&ok)).unwrap();
}

#[test]
fn test_vmdk_rule_stream_create_type_needs_compression() {
    let b = with_descriptor(&descriptor("streamOptimized", "built.vmdk"));
    assert_rule(b, rules::CREATE_TYPE_MISMATCH);
}
