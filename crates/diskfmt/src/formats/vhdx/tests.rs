//! Tests against real qemu-img / qemu-io images.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::header::{HEADER_OFFSETS, crc_with_zeroed};
use super::metadata::{FILE_PARAMETERS, LOGICAL_SECTOR_SIZE};
use super::region::{BAT_GUID, METADATA_GUID, REGION_TABLE_OFFSETS};
use crate::disk::{Disk, ExtentKind};
use crate::error::DiskError;
use crate::limits::Limits;
use crate::testutil::{
    assert_mutations_do_not_panic, assert_same_as_qemu, open_path, qemu_img, qemu_raw, read_all,
    tmp, write_sample_raw,
};

const MIB: usize = 1 << 20;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Converts an 8 MiB sample raw disk to VHDX with the given `-o` options.
fn make(dir: &Path, name: &str, size: u64, opts: Option<&str>) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    write_sample_raw(&raw, size);
    let out = dir.join(format!("{name}.vhdx"));
    let mut args = vec!["convert", "-f", "raw", "-O", "vhdx"];
    if let Some(o) = opts {
        args.extend(["-o", o]);
    }
    args.extend([p(&raw), p(&out)]);
    qemu_img(&args);
    out
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// File offset of the region with `guid` in the first region table.
fn region_offset(b: &[u8], guid: [u8; 16]) -> usize {
    let t = REGION_TABLE_OFFSETS[0] as usize;
    let n = u32_at(b, t + 8) as usize;
    (0..n)
        .map(|i| t + 16 + i * 32)
        .find(|&e| b[e..e + 16] == guid)
        .map(|e| u64_at(b, e + 16) as usize)
        .unwrap()
}

/// File offset of metadata item `guid`.
fn item_offset(b: &[u8], guid: [u8; 16]) -> usize {
    let m = region_offset(b, METADATA_GUID);
    let n = u16::from_le_bytes([b[m + 10], b[m + 11]]) as usize;
    (0..n)
        .map(|i| m + 32 + i * 32)
        .find(|&e| b[e..e + 16] == guid)
        .map(|e| m + u32_at(b, e + 16) as usize)
        .unwrap()
}

/// Rewrites the checksum of the 4 KiB header at `o`.
fn fix_header_crc(b: &mut [u8], o: usize) {
    let c = crc_with_zeroed(&b[o..o + 4096], 4);
    b[o + 4..o + 8].copy_from_slice(&c.to_le_bytes());
}

/// Sets the LogGuid of both headers.
fn set_log_guid(b: &mut [u8], g: &[u8]) {
    for o in HEADER_OFFSETS {
        let o = o as usize;
        b[o + 48..o + 64].copy_from_slice(g);
        fix_header_crc(b, o);
    }
}

fn open_bytes(b: Vec<u8>) -> crate::error::Result<Box<dyn Disk>> {
    crate::open(Arc::new(b), &Limits::default())
}

fn reason(r: crate::error::Result<Box<dyn Disk>>) -> String {
    match r {
        Ok(_) => "opened".into(),
        Err(e) => format!("{}: {e}", e.reason_code()),
    }
}

fn detail(d: &dyn Disk, k: &str) -> String {
    d.info()
        .details
        .iter()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.clone())
        .unwrap()
}

#[test]
fn test_open_dynamic_default_same_as_qemu() {
    let d = tmp();
    let img = make(d.path(), "dyn", 8 << 20, None);
    let disk = assert_same_as_qemu(&img);
    let info = disk.info();
    assert_eq!(info.subformat.as_deref(), Some("dynamic"));
    assert_eq!(detail(&*disk, "log_replayed"), "no");
    assert_eq!(detail(&*disk, "logical_sector_size"), "512");
    let ext = disk.extents(0, disk.virtual_size()).unwrap();
    assert!(ext.iter().any(|e| e.kind == ExtentKind::Data));
    assert_mutations_do_not_panic(&std::fs::read(&img).unwrap(), 100, 4 << 20);
}

#[test]
fn test_open_fixed_same_as_qemu() {
    let d = tmp();
    let img = make(d.path(), "fixed", 8 << 20, Some("subformat=fixed"));
    let disk = assert_same_as_qemu(&img);
    assert_eq!(disk.info().subformat.as_deref(), Some("fixed"));
    let small = make(
        d.path(),
        "fixed4",
        4 << 20,
        Some("subformat=fixed,block_size=1M"),
    );
    assert_same_as_qemu(&small);
    assert_mutations_do_not_panic(&std::fs::read(&small).unwrap(), 300, 4 << 20);
}

#[test]
fn test_open_block_sizes_same_as_qemu() {
    let d = tmp();
    let one = make(d.path(), "b1", 8 << 20, Some("block_size=1M"));
    let disk = assert_same_as_qemu(&one);
    assert_eq!(disk.info().cluster_size, Some(1 << 20));
    let eight = make(d.path(), "b8", 8 << 20, Some("block_size=8M"));
    assert_eq!(
        assert_same_as_qemu(&eight).info().cluster_size,
        Some(8 << 20)
    );
    let odd = make(d.path(), "odd", (5 << 20) + 512 * 3, Some("block_size=2M"));
    assert_same_as_qemu(&odd);
    let small = make(d.path(), "b1s", 4 << 20, Some("block_size=1M"));
    assert_mutations_do_not_panic(&std::fs::read(&small).unwrap(), 300, 4 << 20);
}

#[test]
fn test_open_log_size_and_state_zero_off_same_as_qemu() {
    let d = tmp();
    let img = make(d.path(), "log1", 8 << 20, Some("log_size=1M"));
    assert_same_as_qemu(&img);
    let img = make(
        d.path(),
        "bsz",
        8 << 20,
        Some("subformat=fixed,block_state_zero=off"),
    );
    assert_same_as_qemu(&img);
}

#[test]
fn test_metadata_logical_sector_4096_reads_same() {
    let d = tmp();
    let img = make(d.path(), "lss", 8 << 20, Some("block_size=1M"));
    let want = qemu_raw(&img);
    // qemu-img writes 512-byte sectors only (and refuses 4096 ones), so patch the item: with
    // 8 blocks below the chunk ratio the BAT layout is unchanged and the content too.
    let mut b = std::fs::read(&img).unwrap();
    let o = item_offset(&b, LOGICAL_SECTOR_SIZE);
    b[o..o + 4].copy_from_slice(&4096u32.to_le_bytes());
    let disk = open_bytes(b).unwrap();
    assert_eq!(detail(&*disk, "logical_sector_size"), "4096");
    assert!(read_all(&*disk) == want);
}

#[test]
fn test_metadata_has_parent_refused() {
    let d = tmp();
    let img = make(d.path(), "par", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    let o = item_offset(&b, FILE_PARAMETERS);
    b[o + 4] |= 2;
    let r = reason(open_bytes(b));
    assert!(r.starts_with("differencing-disk"), "{r}");
}

#[test]
fn test_bat_entry_past_eof_refused() {
    let d = tmp();
    let img = make(d.path(), "bat", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    let bat = region_offset(&b, BAT_GUID);
    assert_eq!(u64_at(&b, bat) & 7, 6, "block 0 is present");
    let e = (1u64 << 40) << 20 | 6;
    b[bat..bat + 8].copy_from_slice(&e.to_le_bytes());
    let r = reason(open_bytes(b));
    assert!(r.starts_with("pointer-out-of-bounds"), "{r}");
}

#[test]
fn test_header_both_crcs_bad_corrupt() {
    let d = tmp();
    let img = make(d.path(), "crc", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    for o in HEADER_OFFSETS {
        b[o as usize + 100] ^= 0xff;
    }
    let r = reason(open_bytes(b.clone()));
    assert!(r.starts_with("corrupt"), "{r}");
    // One good header is enough.
    b[HEADER_OFFSETS[0] as usize + 100] ^= 0xff;
    assert!(open_bytes(b).is_ok());
}

#[test]
fn test_region_first_table_bad_uses_second() {
    let d = tmp();
    let img = make(d.path(), "reg", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    b[REGION_TABLE_OFFSETS[0] as usize + 4] ^= 1;
    let disk = open_bytes(b.clone()).unwrap();
    assert_eq!(read_all(&*disk), qemu_raw(&img));
    b[REGION_TABLE_OFFSETS[1] as usize + 4] ^= 1;
    let r = reason(open_bytes(b));
    assert!(r.starts_with("corrupt"), "{r}");
}

#[test]
fn test_open_truncated_refused() {
    let d = tmp();
    let img = make(d.path(), "tr", 4 << 20, Some("block_size=1M"));
    let b = std::fs::read(&img).unwrap();
    for cut in [100, 70_000, 200_000, 2 * MIB + 10, b.len() - MIB] {
        let r = reason(open_bytes(b[..cut].to_vec()));
        assert!(r.starts_with("pointer-out-of-bounds"), "cut {cut}: {r}");
    }
}

#[test]
fn test_virtual_size_17t_refused() {
    let d = tmp();
    let img = d.path().join("big.vhdx");
    qemu_img(&["create", "-f", "vhdx", p(&img), "17T"]);
    let r = reason(open_path(&img));
    assert!(r.starts_with("virtual-size-too-large"), "{r}");
}

/// Makes a qemu-io image whose write went through the log, then aborts; returns the image
/// bytes and the log GUID found in its first entry.
fn qemu_log_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let img = dir.join("log.vhdx");
    qemu_img(&["create", "-f", "vhdx", "-o", "block_size=1M", p(&img), "4M"]);
    let out = crate::testutil::output(Command::new("qemu-io").args([
        "-f",
        "vhdx",
        "-c",
        "write -P 0x5a 0 2M",
        "-c",
        "abort",
        p(&img),
    ]));
    assert!(!out.status.success(), "qemu-io abort should crash");
    let b = std::fs::read(&img).unwrap();
    let log = MIB;
    assert_eq!(&b[log..log + 4], b"loge", "qemu left a log entry");
    let g = b[log + 32..log + 48].to_vec();
    (img, g)
}

/// What qemu reads after replaying the log of a copy of `b` (`qemu-img check -r all`).
fn qemu_replayed(dir: &Path, b: &[u8]) -> Vec<u8> {
    let copy = dir.join("repaired.vhdx");
    std::fs::write(&copy, b).unwrap();
    // check -r opens read-write, which replays the log; its exit code reports leaks.
    let _ = crate::testutil::output(Command::new("qemu-img").args([
        "check",
        "-r",
        "all",
        "-f",
        "vhdx",
        p(&copy),
    ]));
    let after = std::fs::read(&copy).unwrap();
    assert!(
        HEADER_OFFSETS
            .iter()
            .all(|&o| after[o as usize + 48..o as usize + 64] == [0u8; 16])
            || after[MIB..MIB + 4] != *b"loge",
        "qemu replayed and cleared the log"
    );
    qemu_raw(&copy)
}

#[test]
fn test_log_qemu_entries_replayed() {
    let d = tmp();
    let (img, g1) = qemu_log_image(d.path());
    // qemu finished its writes before the abort and cleared the LogGuid, so the file as it
    // is holds what qemu meant to write.
    let intended = qemu_raw(&img);
    assert!(intended[..2 * MIB].iter().all(|&x| x == 0x5a));
    let b = std::fs::read(&img).unwrap();
    // qemu logged one entry per allocated block, each under a fresh LogGuid: seq 1 maps
    // block 0, seq 2 maps blocks 0 and 1. Making a LogGuid live again selects its entry.
    let second = MIB + u32_at(&b, MIB + 8) as usize;
    assert_eq!(&b[second..second + 4], b"loge", "qemu wrote a second entry");
    let g2 = b[second + 32..second + 48].to_vec();
    for (g, block1) in [(&g2, true), (&g1, false)] {
        let mut live = b.clone();
        set_log_guid(&mut live, g);
        let want = qemu_replayed(d.path(), &live);
        assert_eq!(want == intended, block1);
        assert_eq!(want[MIB..2 * MIB].iter().all(|&x| x == 0), !block1);
        let disk = open_bytes(live.clone()).unwrap();
        assert_eq!(detail(&*disk, "log_replayed"), "yes");
        assert!(read_all(&*disk) == want, "vmie replay differs from qemu's");
        if block1 {
            assert_mutations_do_not_panic(&live, 200, 4 << 20);
        }
    }
}

/// Builds one log entry with `data` pages and `zero` ranges.
fn log_entry(
    guid: &[u8],
    seq: u64,
    tail: u32,
    file_size: u64,
    data: &[(u64, [u8; 4096])],
    zero: &[(u64, u64)],
) -> Vec<u8> {
    let count = data.len() + zero.len();
    let desc_sectors = (64 + 32 * count).div_ceil(4096);
    let len = (desc_sectors + data.len()) * 4096;
    let mut e = vec![0u8; len];
    e[0..4].copy_from_slice(b"loge"); // signature
    e[8..12].copy_from_slice(&(len as u32).to_le_bytes()); // entry length
    e[12..16].copy_from_slice(&tail.to_le_bytes()); // tail
    e[16..24].copy_from_slice(&seq.to_le_bytes()); // sequence number
    e[24..28].copy_from_slice(&(count as u32).to_le_bytes()); // descriptor count
    e[32..48].copy_from_slice(guid); // LogGuid
    e[48..56].copy_from_slice(&file_size.to_le_bytes()); // FlushedFileOffset
    e[56..64].copy_from_slice(&file_size.to_le_bytes()); // LastFileOffset
    let mut k = 64;
    for (off, len) in zero {
        e[k..k + 4].copy_from_slice(b"zero");
        e[k + 8..k + 16].copy_from_slice(&len.to_le_bytes()); // ZeroLength
        e[k + 16..k + 24].copy_from_slice(&off.to_le_bytes()); // FileOffset
        e[k + 24..k + 32].copy_from_slice(&seq.to_le_bytes()); // SequenceNumber
        k += 32;
    }
    let mut s = desc_sectors * 4096;
    for (off, page) in data {
        e[k..k + 4].copy_from_slice(b"desc");
        e[k + 4..k + 8].copy_from_slice(&page[4092..4096]); // TrailingBytes
        e[k + 8..k + 16].copy_from_slice(&page[0..8]); // LeadingBytes
        e[k + 16..k + 24].copy_from_slice(&off.to_le_bytes()); // FileOffset
        e[k + 24..k + 32].copy_from_slice(&seq.to_le_bytes()); // SequenceNumber
        k += 32;
        e[s..s + 4].copy_from_slice(b"data");
        e[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes()); // SequenceHigh
        e[s + 8..s + 4092].copy_from_slice(&page[8..4092]);
        e[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes()); // SequenceLow
        s += 4096;
    }
    let c = crc_with_zeroed(&e, 4);
    e[4..8].copy_from_slice(&c.to_le_bytes());
    e
}

#[test]
fn test_log_overlay_differs_from_file_uses_log() {
    let d = tmp();
    let (img, g) = qemu_log_image(d.path());
    let mut b = std::fs::read(&img).unwrap();
    set_log_guid(&mut b, &g);
    let bat = region_offset(&b, BAT_GUID);
    let block0 = (u64_at(&b, bat) >> 20) as usize * MIB;
    let entry1_len = u32_at(&b, MIB + 8) as usize;
    // In place: BAT says block 0 and 1 are absent; only the logged BAT page maps them.
    let logged_bat_page = {
        let mut page = [0u8; 4096];
        page.copy_from_slice(&b[bat..bat + 4096]);
        page
    };
    b[bat..bat + 16].fill(0);
    // A second entry (seq 2, tail at the first): a data page over block 0's second 4 KiB
    // page and a zero range over its third and fourth pages; the in-place bytes stay 0x5a.
    let mut page = [0u8; 4096];
    for (i, x) in page.iter_mut().enumerate() {
        *x = (i % 251) as u8;
    }
    let file_size = b.len() as u64;
    let e2 = log_entry(
        &g,
        2,
        0,
        file_size,
        &[
            ((block0 + 4096) as u64, page),
            (bat as u64, logged_bat_page),
        ],
        &[((block0 + 8192) as u64, 8192)],
    );
    let at = MIB + entry1_len;
    b[at..at + e2.len()].copy_from_slice(&e2);
    let want = qemu_replayed(d.path(), &b);
    assert_eq!(
        &want[4096..8192],
        &page[..],
        "qemu applied the hand-made entry"
    );
    assert!(want[8192..16384].iter().all(|&x| x == 0));
    let disk = open_bytes(b.clone()).unwrap();
    assert_eq!(detail(&*disk, "log_replayed"), "yes");
    assert!(read_all(&*disk) == want, "vmie replay differs from qemu's");
    // Without the log the same bytes read as an empty disk.
    let mut no_log = b.clone();
    set_log_guid(&mut no_log, &[0u8; 16]);
    let disk = open_bytes(no_log).unwrap();
    assert!(read_all(&*disk).iter().all(|&x| x == 0));
    // A log above the configured limit is refused.
    let small = Limits {
        max_log_size: 64 * 1024,
        ..Limits::default()
    };
    let r = crate::open(Arc::new(b.clone()), &small).map(|_| ());
    assert!(
        matches!(&r, Err(e @ DiskError::Refused(_)) if e.reason_code() == "limit-exceeded"),
        "{r:?}"
    );
    assert_mutations_do_not_panic(&b, 200, 4 << 20);
}

#[test]
fn test_region_unknown_required_unsupported() {
    let d = tmp();
    let img = make(d.path(), "ureg", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    for t in REGION_TABLE_OFFSETS {
        let t = t as usize;
        let n = u32_at(&b, t + 8) as usize;
        let e = t + 16 + n * 32;
        b[e..e + 16].copy_from_slice(&[0x42; 16]); // GUID nobody knows
        b[e + 16..e + 24].copy_from_slice(&(64u64 << 20).to_le_bytes()); // offset
        b[e + 24..e + 28].copy_from_slice(&(1u32 << 20).to_le_bytes()); // length
        b[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes()); // required
        b[t + 8..t + 12].copy_from_slice(&(n as u32 + 1).to_le_bytes());
        let c = crc_with_zeroed(&b[t..t + 65536], 4);
        b[t + 4..t + 8].copy_from_slice(&c.to_le_bytes());
    }
    let r = reason(open_bytes(b));
    assert!(r.starts_with("unsupported"), "{r}");
}

#[test]
fn test_metadata_parent_locator_refused() {
    let d = tmp();
    let img = make(d.path(), "ploc", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    let m = region_offset(&b, METADATA_GUID);
    // Rename the Page 83 item to a parent locator.
    let e = (0..16)
        .map(|i| m + 32 + i * 32)
        .find(|&e| b[e..e + 16] == super::metadata::PAGE_83)
        .unwrap();
    b[e..e + 16].copy_from_slice(&super::metadata::PARENT_LOCATOR);
    let r = reason(open_bytes(b));
    assert!(r.starts_with("differencing-disk"), "{r}");
}

#[test]
fn test_bat_partially_present_refused() {
    let d = tmp();
    let img = make(d.path(), "pp", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    let bat = region_offset(&b, BAT_GUID);
    b[bat] = (b[bat] & !7) | 7;
    let r = reason(open_bytes(b));
    assert!(r.starts_with("differencing-disk"), "{r}");
}

#[test]
fn test_log_guid_without_entries_reads_in_place() {
    let d = tmp();
    let img = make(d.path(), "nolog", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    set_log_guid(&mut b, &[7u8; 16]);
    std::fs::write(&img, &b).unwrap();
    // Nothing valid to replay: qemu reads it read-only as it is, and so do we.
    let disk = assert_same_as_qemu(&img);
    assert_eq!(detail(&*disk, "log_replayed"), "no");
}

#[test]
fn test_log_entry_wrapping_around_log_end_replayed() {
    let d = tmp();
    let img = make(d.path(), "wrap", 4 << 20, Some("block_size=1M"));
    let mut b = std::fs::read(&img).unwrap();
    let (log_off, log_len) = (
        u64_at(&b, HEADER_OFFSETS[0] as usize + 72) as usize,
        u32_at(&b, HEADER_OFFSETS[0] as usize + 68) as usize,
    );
    let bat = region_offset(&b, BAT_GUID);
    let block0 = (u64_at(&b, bat) >> 20) as usize * MIB;
    let g = [0x33u8; 16];
    let mut page = [0xc3u8; 4096];
    page[0..8].copy_from_slice(b"leading!");
    page[4092..].copy_from_slice(b"tail");
    let tail = (log_len - 4096) as u32;
    let e = log_entry(&g, 5, tail, b.len() as u64, &[(block0 as u64, page)], &[]);
    assert_eq!(e.len(), 8192);
    // Descriptor sector in the last log sector, data sector wrapped to the log start.
    b[log_off + log_len - 4096..log_off + log_len].copy_from_slice(&e[..4096]);
    b[log_off..log_off + 4096].copy_from_slice(&e[4096..]);
    set_log_guid(&mut b, &g);
    let want = qemu_replayed(d.path(), &b);
    assert_eq!(&want[..4096], &page[..], "qemu applied the wrapped entry");
    let disk = open_bytes(b).unwrap();
    assert_eq!(detail(&*disk, "log_replayed"), "yes");
    assert!(read_all(&*disk) == want);
}
