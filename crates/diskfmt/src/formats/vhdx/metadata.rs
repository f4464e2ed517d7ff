//! The metadata region ([MS-VHDX] 2.6): a 64 KiB table of items, then the items themselves.

use super::header::{Guid, guid, guid_at};
use super::region::Region;
use super::rules;
use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::{ReadAt, le, read_checked};
use crate::limits::{Limits, MIB, add};

const F: Format = Format::Vhdx;

/// Size of the metadata table at the start of the region ([MS-VHDX] 2.6.1: 64 KiB).
pub const TABLE_SIZE: u64 = 64 * 1024;
/// Most entries of the metadata table ([MS-VHDX] 2.6.1.1: at most 2047).
pub const MAX_ENTRIES: u64 = 2047;
/// Smallest block size ([MS-VHDX] 2.6.2.1: 1 MiB).
pub const MIN_BLOCK_SIZE: u64 = MIB;
/// Largest block size ([MS-VHDX] 2.6.2.1: 256 MiB).
pub const MAX_BLOCK_SIZE: u64 = 256 * MIB;

/// File Parameters item CAA16737-FA36-4D43-B3B6-33F0AA44E76B ([MS-VHDX] 2.6.2.1).
pub const FILE_PARAMETERS: Guid = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
/// Virtual Disk Size item 2FA54224-CD1B-4876-B211-5DBED83BF4B8 ([MS-VHDX] 2.6.2.2).
pub const VIRTUAL_DISK_SIZE: Guid = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// Page 83 Data item BECA12AB-B2E6-4523-93EF-C309E000C746 ([MS-VHDX] 2.6.2.3).
pub const PAGE_83: Guid = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
/// Logical Sector Size item 8141BF1D-A96F-4709-BA47-F233A8FAAB5F ([MS-VHDX] 2.6.2.4).
pub const LOGICAL_SECTOR_SIZE: Guid = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
/// Physical Sector Size item CDA348C7-445D-4471-9CC9-E9885251C556 ([MS-VHDX] 2.6.2.5).
pub const PHYSICAL_SECTOR_SIZE: Guid = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
/// Parent Locator item A8D35F2D-B30B-454D-ABF7-D3D84834AB0C ([MS-VHDX] 2.6.2.6).
pub const PARENT_LOCATOR: Guid = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

/// The metadata the reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Payload block size (power of two, 1 MiB to 256 MiB).
    pub block_size: u64,
    /// File Parameters bit 0: blocks stay allocated (fixed disks).
    pub leave_blocks_allocated: bool,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// Logical sector size (512 or 4096).
    pub logical_sector_size: u64,
    /// Physical sector size (512 or 4096).
    pub physical_sector_size: u64,
}

/// One entry of the metadata table: item, offset and length in the region, flags.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: Guid,
    offset: u64,
    length: u64,
    user: bool,
    required: bool,
}

/// Known system items and their exact lengths ([MS-VHDX] 2.6.2).
const KNOWN: [(Guid, &str, u64); 5] = [
    (FILE_PARAMETERS, "File Parameters", 8),
    (VIRTUAL_DISK_SIZE, "Virtual Disk Size", 8),
    (PAGE_83, "Page 83 Data", 16),
    (LOGICAL_SECTOR_SIZE, "Logical Sector Size", 4),
    (PHYSICAL_SECTOR_SIZE, "Physical Sector Size", 4),
];

fn corrupt(rule: &'static str, reason: impl Into<String>) -> DiskError {
    DiskError::corrupt_rule(F, rule, reason)
}

/// Reads and validates the metadata table and the items the reader needs.
pub fn read_metadata(src: &dyn ReadAt, region: Region, limits: &Limits) -> Result<Metadata> {
    let entries = read_table(src, region, limits)?;
    let items = check_entries(&entries, region)?;
    let item = |id: Guid| -> Result<Vec<u8>> {
        let (e, name, len) = items
            .iter()
            .find(|(e, _, _)| e.id == id)
            .copied()
            .ok_or_else(|| corrupt(rules::METADATA_MISSING, "a metadata item is missing"))?;
        let at = add(F, "metadata item offset", region.offset, e.offset)?;
        let len = usize::try_from(len).unwrap_or(0);
        read_checked(src, F, name, at, len)
    };
    let fp = item(FILE_PARAMETERS)?;
    // File Parameters: 0 block size u32; 4 bit 0 LeaveBlocksAllocated, bit 1 HasParent.
    let block_size = u64::from(le::u32(&fp, 0));
    let fp_flags = le::u32(&fp, 4);
    if fp_flags & 2 != 0 {
        return Err(Refusal::DifferencingDisk { format: F }.into());
    }
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(corrupt(
            rules::BLOCK_SIZE,
            format!("block size {block_size} is not a power of two from 1 MiB to 256 MiB"),
        ));
    }
    let virtual_size = limits.check_virtual_size(le::u64(&item(VIRTUAL_DISK_SIZE)?, 0))?;
    let logical_sector_size = u64::from(le::u32(&item(LOGICAL_SECTOR_SIZE)?, 0));
    let physical_sector_size = u64::from(le::u32(&item(PHYSICAL_SECTOR_SIZE)?, 0));
    for (what, v) in [
        ("logical", logical_sector_size),
        ("physical", physical_sector_size),
    ] {
        if v != 512 && v != 4096 {
            return Err(corrupt(
                rules::SECTOR_SIZE,
                format!("{what} sector size {v} is neither 512 nor 4096"),
            ));
        }
    }
    if !virtual_size.is_multiple_of(logical_sector_size) {
        return Err(corrupt(
            rules::VIRTUAL_SIZE_UNALIGNED,
            format!(
                "virtual size {virtual_size} is not a multiple of the logical sector size {logical_sector_size}"
            ),
        ));
    }
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: fp_flags & 1 != 0,
        virtual_size,
        logical_sector_size,
        physical_sector_size,
    })
}

/// Reads the 64 KiB table at the start of the region: signature, entry count, entries.
fn read_table(src: &dyn ReadAt, region: Region, limits: &Limits) -> Result<Vec<Entry>> {
    if region.length < TABLE_SIZE {
        return Err(corrupt(
            rules::METADATA_TABLE,
            "metadata region is smaller than its table",
        ));
    }
    let t = read_checked(src, F, "metadata table", region.offset, 64 * 1024)?;
    // 0: signature "metadata"; 8: reserved u16; 10: entry count u16; 12: reserved.
    if &t[0..8] != b"metadata" {
        return Err(corrupt(
            rules::METADATA_SIGNATURE,
            "no \"metadata\" signature on the metadata table",
        ));
    }
    let count = u64::from(le::u16(&t, 10));
    if count > MAX_ENTRIES {
        return Err(corrupt(
            rules::METADATA_TABLE,
            format!("metadata table has {count} entries, above {MAX_ENTRIES}"),
        ));
    }
    let count = limits.check_entries(F, "metadata entry count", count)?;
    Ok((0..count)
        .map(|i| {
            // Entries of 32 bytes from 32: item GUID, offset u32, length u32, flags u32
            // (bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired).
            let e = &t[32 + i * 32..32 + (i + 1) * 32];
            let flags = le::u32(e, 24);
            Entry {
                id: guid_at(e, 0),
                offset: u64::from(le::u32(e, 16)),
                length: u64::from(le::u32(e, 20)),
                user: flags & 1 != 0,
                required: flags & 4 != 0,
            }
        })
        .collect())
}

/// Checks every entry (no duplicate system item, inside the region past the table, no two
/// items overlapping, no unknown required item, no parent locator) and returns the known
/// system items with their names and expected lengths.
fn check_entries(entries: &[Entry], region: Region) -> Result<Vec<(Entry, &'static str, u64)>> {
    let mut items = Vec::new();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if !e.user && entries[..i].iter().any(|p| p.id == e.id && !p.user) {
            return Err(corrupt(
                rules::METADATA_DUPLICATE,
                "a metadata item is listed twice",
            ));
        }
        if e.length != 0 {
            let end = add(F, "metadata item end", e.offset, e.length)?;
            if e.offset < TABLE_SIZE || end > region.length {
                return Err(corrupt(
                    rules::METADATA_OUT_OF_REGION,
                    format!(
                        "metadata item {i} at {} of {} bytes lies outside the metadata region",
                        e.offset, e.length
                    ),
                ));
            }
            if ranges.iter().any(|&(s, t)| e.offset < t && s < end) {
                return Err(corrupt(
                    rules::METADATA_OVERLAP,
                    format!("metadata item {i} overlaps another item"),
                ));
            }
            ranges.push((e.offset, end));
        }
        if e.id == PARENT_LOCATOR && !e.user {
            return Err(Refusal::DifferencingDisk { format: F }.into());
        }
        let known = KNOWN.iter().find(|(g, _, _)| *g == e.id && !e.user);
        match known {
            Some(&(_, name, len)) => {
                if e.length != len {
                    return Err(corrupt(
                        rules::METADATA_SIZE,
                        format!("the {name} metadata item is {} bytes, not {len}", e.length),
                    ));
                }
                items.push((*e, name, len));
            }
            None if e.required => {
                return Err(DiskError::unsupported_rule(
                    F,
                    rules::METADATA_REQUIRED_UNKNOWN,
                    format!("metadata item {i} is required but unknown to this reader"),
                ));
            }
            None => {}
        }
    }
    for (id, name, _) in KNOWN {
        if !items.iter().any(|(e, _, _)| e.id == id) {
            return Err(corrupt(
                rules::METADATA_MISSING,
                format!("the {name} metadata item is missing"),
            ));
        }
    }
    Ok(items)
}
