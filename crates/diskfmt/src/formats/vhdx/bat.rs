//! The block allocation table ([MS-VHDX] 2.5): one 64-bit entry per payload block, with a
//! sector bitmap entry after every `chunk ratio` payload entries.

use super::metadata::Metadata;
use super::region::Region;
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

/// Reads and validates the BAT: each present block must lie inside the file (of
/// `file_size` bytes, as extended by the log).
pub fn read_bat(src: &dyn ReadAt, region: Region, md: &Metadata, limits: &Limits) -> Result<Bat> {
    let bs = md.block_size;
    let chunk_ratio = mul(F, "chunk ratio", CHUNK_SECTORS, md.logical_sector_size)? / bs;
    if chunk_ratio == 0 {
        return Err(DiskError::corrupt(F, "chunk ratio is zero"));
    }
    let payload_blocks = md.virtual_size.div_ceil(bs);
    // [MS-VHDX] 2.5: total = payload blocks + floor((payload blocks - 1) / chunk ratio).
    let total = payload_blocks + payload_blocks.saturating_sub(1) / chunk_ratio;
    let bytes = mul(F, "BAT size", total, 8)?;
    if bytes > region.length {
        return Err(DiskError::corrupt(
            F,
            format!(
                "BAT needs {bytes} bytes for {payload_blocks} blocks but its region holds {}",
                region.length
            ),
        ));
    }
    let len = limits.check_table(F, "BAT size", bytes)?;
    let raw = read_checked(src, F, "BAT", region.offset, len)?;
    let file_size = src.size();
    let mut blocks = Vec::with_capacity(to_usize(F, "payload block count", payload_blocks)?);
    let mut all_present = true;
    for i in 0..payload_blocks {
        let idx = i + i / chunk_ratio;
        let e = le::u64(&raw, to_usize(F, "BAT index", idx)? * 8);
        let state = e & 7;
        let off = mul(F, "payload block offset", e >> 20, MIB)?;
        match state {
            NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED => {
                all_present = false;
                blocks.push(0);
            }
            FULLY_PRESENT => {
                let in_block = bs.min(md.virtual_size - i * bs);
                check_in_file(F, "payload block", off, in_block, file_size)?;
                if off < MIB {
                    return Err(DiskError::corrupt(
                        F,
                        format!("payload block {i} points into the header section"),
                    ));
                }
                add(F, "payload block end", off, bs)?;
                blocks.push(off);
            }
            PARTIALLY_PRESENT => {
                return Err(Refusal::DifferencingDisk { format: F }.into());
            }
            s => {
                return Err(DiskError::corrupt(
                    F,
                    format!("payload block {i} has the invalid state {s}"),
                ));
            }
        }
    }
    Ok(Bat {
        blocks,
        all_present,
    })
}
