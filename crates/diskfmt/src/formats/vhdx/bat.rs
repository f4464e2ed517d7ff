//! The block allocation table ([MS-VHDX] 2.5): one 64-bit entry per payload block, with a
//! sector bitmap entry after every `chunk ratio` payload entries.

use super::metadata::Metadata;
use super::region::{HEADER_SECTION, Region};
use super::rules;
use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::{ReadAt, le, read_checked};
use crate::limits::{Limits, MIB, add, check_in_file, mul, to_usize};

const F: Format = Format::Vhdx;

/// Sectors per chunk numerator ([MS-VHDX] 2.5: chunk ratio = 2^23 * logical sector size /
/// block size).
const CHUNK_SECTORS: u64 = 1 << 23;

/// Payload block state: never written, reads as zeros ([MS-VHDX] 2.5.1.1).
pub const NOT_PRESENT: u64 = 0;
/// Payload block state: content undefined, read as zeros ([MS-VHDX] 2.5.1.1).
pub const UNDEFINED: u64 = 1;
/// Payload block state: reads as zeros ([MS-VHDX] 2.5.1.1).
pub const ZERO: u64 = 2;
/// Payload block state: unmapped (trimmed), read as zeros ([MS-VHDX] 2.5.1.1).
pub const UNMAPPED: u64 = 3;
/// Payload block state: allocated in the file ([MS-VHDX] 2.5.1.1).
pub const FULLY_PRESENT: u64 = 6;
/// Payload block state: some sectors come from the parent ([MS-VHDX] 2.5.1.1).
pub const PARTIALLY_PRESENT: u64 = 7;

/// Payload block table: for each block, the file offset of its data, or `None` when it
/// reads as zeros.
#[derive(Debug)]
pub struct Bat {
    /// File offset of each payload block when FULLY_PRESENT, else 0 (offset 0 is never a
    /// valid block: it holds the file type identifier).
    pub blocks: Vec<u64>,
    /// Whether every payload block is FULLY_PRESENT.
    pub all_present: bool,
}

impl Bat {
    /// Host offset of block `i`, if it is allocated.
    #[must_use]
    pub fn host(&self, i: u64) -> Option<u64> {
        let i = usize::try_from(i).ok()?;
        self.blocks.get(i).copied().filter(|&o| o != 0)
    }
}

/// Bits 3..19 of a BAT entry are reserved ([MS-VHDX] 2.5.1).
const RESERVED: u64 = 0x000f_fff8;
/// Sector bitmap block state: present ([MS-VHDX] 2.5.1.2).
pub const SB_PRESENT: u64 = 6;

fn corrupt(rule: &'static str, reason: impl Into<String>) -> DiskError {
    DiskError::corrupt_rule(F, rule, reason)
}

/// Reads and validates the BAT: each payload entry's state and reserved bits; each present
/// block inside the file (of `file_size` bytes, as extended by the log), in none of the
/// `reserved` ranges (header section, log, BAT, metadata) and overlapping no other block;
/// each sector bitmap entry not present or present inside the file.
pub fn read_bat(
    src: &dyn ReadAt,
    region: Region,
    md: &Metadata,
    reserved: &[Region],
    limits: &Limits,
) -> Result<Bat> {
    let bs = md.block_size;
    // [MS-VHDX] 2.5: chunk ratio = 2^23 * logical sector size / block size (at least 16 with
    // the sizes the metadata check allows).
    let chunk_ratio = mul(F, "chunk ratio", CHUNK_SECTORS, md.logical_sector_size)? / bs;
    if chunk_ratio == 0 {
        return Err(DiskError::corrupt(F, "chunk ratio is zero"));
    }
    let payload_blocks = md.virtual_size.div_ceil(bs);
    // [MS-VHDX] 2.5: total = payload blocks + floor((payload blocks - 1) / chunk ratio).
    let total = payload_blocks + payload_blocks.saturating_sub(1) / chunk_ratio;
    let bytes = mul(F, "BAT size", total, 8)?;
    if bytes > region.length {
        return Err(corrupt(
            rules::BAT_REGION_SMALL,
            format!(
                "BAT needs {bytes} bytes for {payload_blocks} blocks but its region holds {}",
                region.length
            ),
        ));
    }
    let len = limits.check_table(F, "BAT size", bytes)?;
    let raw = read_checked(src, F, "BAT", region.offset, len)?;
    let entries: Vec<u64> = raw.chunks_exact(8).map(|c| le::u64(c, 0)).collect();
    let file_size = src.size();
    let mut blocks = Vec::with_capacity(to_usize(F, "payload block count", payload_blocks)?);
    let mut all_present = true;
    for (idx, &e) in entries.iter().enumerate() {
        let idx = idx as u64;
        if e & RESERVED != 0 {
            return Err(corrupt(
                rules::BAT_RESERVED,
                format!("BAT entry {idx} ({e:#x}) has reserved bits set"),
            ));
        }
        // Every chunk ratio payload entries, one sector bitmap entry.
        if (idx + 1).is_multiple_of(chunk_ratio + 1) {
            check_sector_bitmap(idx, e, file_size)?;
            continue;
        }
        let i = idx - idx / (chunk_ratio + 1);
        let host = payload_block(i, e, md, file_size)?;
        all_present &= host.is_some();
        blocks.push(host.unwrap_or(0));
    }
    check_no_overlap(&blocks, bs, reserved)?;
    Ok(Bat {
        blocks,
        all_present,
    })
}

/// The file offset of payload block `i` whose entry is `e`, or `None` when it reads as zeros.
fn payload_block(i: u64, e: u64, md: &Metadata, file_size: u64) -> Result<Option<u64>> {
    let bs = md.block_size;
    let off = mul(F, "payload block offset", e >> 20, MIB)?;
    match e & 7 {
        NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED => Ok(None),
        FULLY_PRESENT => {
            if off < HEADER_SECTION {
                // Offset 0 also stands for "no block" in `Bat::blocks`: refuse it here.
                return Err(corrupt(
                    rules::BLOCK_OVER_METADATA,
                    format!("payload block {i} points into the header section"),
                ));
            }
            let in_block = bs.min(md.virtual_size - i * bs);
            check_in_file(F, "payload block", off, in_block, file_size)?;
            add(F, "payload block end", off, bs)?;
            Ok(Some(off))
        }
        PARTIALLY_PRESENT => Err(Refusal::DifferencingDisk { format: F }.into()),
        s => Err(corrupt(
            rules::BAT_STATE,
            format!("payload block {i} has the invalid state {s}"),
        )),
    }
}

/// A sector bitmap entry: not present, or present with its 1 MiB inside the file.
fn check_sector_bitmap(idx: u64, e: u64, file_size: u64) -> Result<()> {
    match e & 7 {
        NOT_PRESENT => Ok(()),
        SB_PRESENT => {
            let off = mul(F, "sector bitmap offset", e >> 20, MIB)?;
            check_in_file(F, "sector bitmap block", off, MIB, file_size)
        }
        s => Err(corrupt(
            rules::SECTOR_BITMAP_STATE,
            format!("sector bitmap entry {idx} has the state {s} (0 or 6 are valid)"),
        )),
    }
}

/// No payload block (`bs` bytes at each non-zero offset of `blocks`) may lie in a `reserved`
/// range or overlap another block.
fn check_no_overlap(blocks: &[u64], bs: u64, reserved: &[Region]) -> Result<()> {
    let mut starts: Vec<u64> = blocks.iter().copied().filter(|&o| o != 0).collect();
    starts.sort_unstable();
    for r in reserved.iter().filter(|r| r.length > 0) {
        let i = starts.partition_point(|&b| b + bs <= r.offset);
        if starts
            .get(i)
            .is_some_and(|&b| b < r.offset.saturating_add(r.length))
        {
            return Err(corrupt(
                rules::BLOCK_OVER_METADATA,
                format!(
                    "a payload block overlaps the file's own structures at offset {}",
                    r.offset
                ),
            ));
        }
    }
    for w in starts.windows(2) {
        if w[1] < w[0] + bs {
            return Err(corrupt(
                rules::BLOCKS_OVERLAP,
                format!("the payload blocks at {} and {} overlap", w[0], w[1]),
            ));
        }
    }
    Ok(())
}
