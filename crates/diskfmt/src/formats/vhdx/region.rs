//! The region tables ([MS-VHDX] 2.2.3): two 64 KiB copies at 192 KiB and 256 KiB listing the
//! BAT and metadata regions.

use super::header::{Guid, crc_with_zeroed, guid, guid_at};
use super::rules;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{ReadAt, le, read_checked};
use crate::limits::{Limits, MIB, add, check_in_file};

const F: Format = Format::Vhdx;

/// Offsets of the two region tables ([MS-VHDX] 2.2.3: 192 KiB and 256 KiB).
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
/// Size of a region table, all covered by its checksum ([MS-VHDX] 2.2.3: 64 KiB).
pub const REGION_TABLE_SIZE: usize = 64 * 1024;
/// Most entries a region table may hold ([MS-VHDX] 2.2.3.1: at most 2047).
pub const MAX_REGION_ENTRIES: u64 = 2047;
/// The header section: the first 1 MiB (file identifier, headers, region tables).
pub const HEADER_SECTION: u64 = MIB;
/// Size of a region table entry ([MS-VHDX] 2.2.3.2).
const ENTRY_SIZE: usize = 32;

/// BAT region GUID 2DC27766-F623-4200-9D64-115E9BFD4A08 ([MS-VHDX] 2.2.3.2).
pub const BAT_GUID: Guid = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
/// Metadata region GUID 8B7CA206-4790-4B9A-B8FE-575F050F886E ([MS-VHDX] 2.2.3.2).
pub const METADATA_GUID: Guid = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);

/// A region: where it lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// File offset (multiple of 1 MiB, at least 1 MiB).
    pub offset: u64,
    /// Length in bytes (multiple of 1 MiB).
    pub length: u64,
}

impl Region {
    /// Whether the two ranges share a byte (an empty region shares none).
    #[must_use]
    pub fn overlaps(&self, other: &Region) -> bool {
        self.offset < other.offset.saturating_add(other.length)
            && other.offset < self.offset.saturating_add(self.length)
    }
}

/// The two regions the reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regions {
    /// Block allocation table.
    pub bat: Region,
    /// Metadata region.
    pub metadata: Region,
}

/// Parses one region table; the outer `Err` is a refusal to propagate as is, the inner one
/// says why this copy is not valid.
fn parse(
    b: &[u8],
    file_size: u64,
    limits: &Limits,
) -> Result<std::result::Result<Regions, String>> {
    // 0: signature "regi"; 4: CRC-32C over the 64 KiB table; 8: entry count; 12: reserved.
    if &b[0..4] != b"regi" {
        return Ok(Err("no \"regi\" signature".into()));
    }
    let stored = le::u32(b, 4);
    let computed = crc_with_zeroed(b, 4);
    if stored != computed {
        return Ok(Err(format!(
            "checksum {stored:#010x} does not match the computed {computed:#010x}"
        )));
    }
    let count = u64::from(le::u32(b, 8));
    if count > MAX_REGION_ENTRIES {
        return Ok(Err(format!("{count} entries, above {MAX_REGION_ENTRIES}")));
    }
    let count = limits.check_entries(F, "region table entry count", count)?;
    let mut bat = None;
    let mut metadata = None;
    let mut seen: Vec<Region> = Vec::new();
    for i in 0..count {
        let e = &b[16 + i * ENTRY_SIZE..16 + (i + 1) * ENTRY_SIZE];
        // 0: GUID; 16: file offset; 24: length (u32); 28: bit 0 required.
        let id = guid_at(e, 0);
        let offset = le::u64(e, 16);
        let length = u64::from(le::u32(e, 24));
        let required = le::u32(e, 28) & 1 != 0;
        let r = Region { offset, length };
        let slot = if id == BAT_GUID {
            &mut bat
        } else if id == METADATA_GUID {
            &mut metadata
        } else if required {
            return Err(DiskError::unsupported_rule(
                F,
                rules::REGION_REQUIRED_UNKNOWN,
                format!("region table entry {i} is an unknown required region"),
            ));
        } else {
            continue;
        };
        if slot.is_some() {
            return Ok(Err("a region is listed twice".into()));
        }
        if offset < MIB || !offset.is_multiple_of(MIB) || !length.is_multiple_of(MIB) || length == 0
        {
            return Ok(Err(format!(
                "region at {offset} of {length} bytes is not 1 MiB aligned after the header section"
            )));
        }
        check_in_file(F, "region", offset, length, file_size)?;
        let end = add(F, "region end", offset, length)?;
        if seen
            .iter()
            .any(|s| offset < s.offset + s.length && s.offset < end)
        {
            return Ok(Err("regions overlap".into()));
        }
        seen.push(r);
        *slot = Some(r);
    }
    match (bat, metadata) {
        (Some(bat), Some(metadata)) => Ok(Ok(Regions { bat, metadata })),
        _ => Ok(Err("the BAT or metadata region is missing".into())),
    }
}

/// Reads the first valid region table (the second if the first is not valid).
pub fn read_regions(src: &dyn ReadAt, limits: &Limits) -> Result<Regions> {
    let mut why = Vec::new();
    for (i, &off) in REGION_TABLE_OFFSETS.iter().enumerate() {
        let b = read_checked(src, F, "region table", off, REGION_TABLE_SIZE)?;
        match parse(&b, src.size(), limits)? {
            Ok(r) => return Ok(r),
            Err(e) => why.push(format!("region table {} at {off}: {e}", i + 1)),
        }
    }
    Err(DiskError::corrupt_rule(
        F,
        rules::REGION_TABLES_INVALID,
        format!("no valid region table ({})", why.join("; ")),
    ))
}
