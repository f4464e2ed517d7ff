//! VHDX writer ([MS-VHDX] v1), dynamic.
//!
//! ```text
//! 0        file type identifier ("vhdxfile", creator "vmie")
//! 64 KiB   header 1, 128 KiB header 2 (sequence numbers 0 and 1, no log to replay)
//! 192 KiB  region table 1, 256 KiB region table 2 (BAT and metadata regions)
//! 1 MiB    log (1 MiB, empty)
//! 2 MiB    metadata region: file parameters, virtual disk size, page 83 id, sector sizes
//! 3 MiB    BAT (payload entries with a sector-bitmap entry after every chunk)
//! then     payload blocks, 1 MiB aligned, allocated in disk order when data first reaches them
//! ```
//!
//! Block size follows qemu-img's choice (8 MiB up to 1 GiB, 16 MiB up to 100 GiB, 32 MiB up to
//! 32 TiB, 64 MiB above). Blocks that hold data are FULLY_PRESENT; zero runs inside them stay
//! holes in the file; blocks without data are NOT_PRESENT and take no space.

use std::sync::atomic::AtomicU64;

use super::{Output, WriteOptions, WriteStats, Writer, no_compression, ordered_grains, random_id};
use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::formats::vhdx::bat::FULLY_PRESENT;
use crate::formats::vhdx::header::{HEADER_OFFSETS, HEADER_SIZE, crc_with_zeroed};
use crate::formats::vhdx::metadata::{
    FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, PAGE_83, PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_SIZE,
};
use crate::formats::vhdx::region::{
    BAT_GUID, METADATA_GUID, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE,
};
use crate::limits::MIB;

const F: Format = Format::Vhdx;
const LOGICAL_SECTOR: u64 = 512;
const PHYSICAL_SECTOR: u32 = 4096;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;
/// Metadata items start 64 KiB into the region, after the table.
const ITEMS_AT: u32 = 64 * 1024;
/// Granularity of reads and zero detection inside a block.
const GRAIN: u64 = MIB;
const MD_IS_VIRTUAL_DISK: u32 = 2;
const MD_IS_REQUIRED: u32 = 4;

/// qemu-img's default block size for a disk of `size` bytes.
fn block_size(size: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    if size > 32 << 40 {
        64 * MIB
    } else if size > 100 * GIB {
        32 * MIB
    } else if size > GIB {
        16 * MIB
    } else {
        8 * MIB
    }
}

fn io(e: std::io::Error) -> DiskError {
    DiskError::io("writing the VHDX", e)
}

fn u32_of(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| DiskError::unsupported(F, format!("{what} of {v}")))
}

fn header(sequence: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_SIZE];
    h[0..4].copy_from_slice(b"head");
    h[8..16].copy_from_slice(&sequence.to_le_bytes());
    let mut g = [0u8; 16];
    random_id(&mut g);
    h[16..32].copy_from_slice(&g); // file write GUID
    random_id(&mut g);
    h[32..48].copy_from_slice(&g); // data write GUID
    // Log GUID stays zero: nothing to replay.
    h[66..68].copy_from_slice(&1u16.to_le_bytes()); // version
    h[68..72].copy_from_slice(&u32::try_from(LOG_LENGTH).unwrap_or(0).to_le_bytes());
    h[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
    let c = crc_with_zeroed(&h, 4);
    h[4..8].copy_from_slice(&c.to_le_bytes());
    h
}

fn region_table(bat_length: u32) -> Vec<u8> {
    let mut r = vec![0u8; REGION_TABLE_SIZE];
    r[0..4].copy_from_slice(b"regi");
    r[8..12].copy_from_slice(&2u32.to_le_bytes());
    let entries: [([u8; 16], u64, u32); 2] = [
        (BAT_GUID, BAT_OFFSET, bat_length),
        (
            METADATA_GUID,
            METADATA_OFFSET,
            u32::try_from(METADATA_LENGTH).unwrap_or(0),
        ),
    ];
    for (i, (guid, offset, length)) in entries.iter().enumerate() {
        let e = 16 + i * 32;
        r[e..e + 16].copy_from_slice(guid);
        r[e + 16..e + 24].copy_from_slice(&offset.to_le_bytes());
        r[e + 24..e + 28].copy_from_slice(&length.to_le_bytes());
        r[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes()); // required
    }
    let c = crc_with_zeroed(&r, 4);
    r[4..8].copy_from_slice(&c.to_le_bytes());
    r
}

fn metadata(size: u64, block: u32) -> Vec<u8> {
    let mut disk_id = [0u8; 16];
    random_id(&mut disk_id);
    let items: [([u8; 16], Vec<u8>, u32); 5] = [
        (
            FILE_PARAMETERS,
            {
                let mut v = block.to_le_bytes().to_vec();
                v.extend_from_slice(&0u32.to_le_bytes()); // no LeaveBlocksAllocated, no parent
                v
            },
            MD_IS_REQUIRED,
        ),
        (
            VIRTUAL_DISK_SIZE,
            size.to_le_bytes().to_vec(),
            MD_IS_VIRTUAL_DISK | MD_IS_REQUIRED,
        ),
        (
            PAGE_83,
            disk_id.to_vec(),
            MD_IS_VIRTUAL_DISK | MD_IS_REQUIRED,
        ),
        (
            LOGICAL_SECTOR_SIZE,
            u32::try_from(LOGICAL_SECTOR)
                .unwrap_or(512)
                .to_le_bytes()
                .to_vec(),
            MD_IS_VIRTUAL_DISK | MD_IS_REQUIRED,
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR.to_le_bytes().to_vec(),
            MD_IS_VIRTUAL_DISK | MD_IS_REQUIRED,
        ),
    ];
    let mut m = vec![0u8; usize::try_from(ITEMS_AT).unwrap_or(0) + 4096];
    m[0..8].copy_from_slice(b"metadata");
    m[10..12].copy_from_slice(&5u16.to_le_bytes());
    let mut at = ITEMS_AT;
    for (i, (guid, data, flags)) in items.iter().enumerate() {
        let e = 32 + i * 32;
        let len = u32::try_from(data.len()).unwrap_or(0);
        m[e..e + 16].copy_from_slice(guid);
        m[e + 16..e + 20].copy_from_slice(&at.to_le_bytes());
        m[e + 20..e + 24].copy_from_slice(&len.to_le_bytes());
        m[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
        let a = usize::try_from(at).unwrap_or(0);
        m[a..a + data.len()].copy_from_slice(data);
        at += len.next_multiple_of(8);
    }
    m
}

/// The dynamic VHDX writer.
#[derive(Debug, Clone, Copy)]
pub struct VhdxWriter;

impl Writer for VhdxWriter {
    fn description(&self) -> &'static str {
        "Microsoft VHDX, dynamic"
    }

    fn check_compression(&self, compression: &str) -> Result<()> {
        Err(no_compression(F, compression, "VHDX has no compression"))
    }

    fn write(
        &self,
        disk: &dyn Disk,
        out: &dyn Output,
        opts: &WriteOptions,
        progress: &AtomicU64,
    ) -> Result<WriteStats> {
        write(disk, out, opts, progress)
    }
}

/// Writes `disk` as a dynamic VHDX.
pub fn write(
    disk: &dyn Disk,
    out: &dyn Output,
    opts: &WriteOptions,
    progress: &AtomicU64,
) -> Result<WriteStats> {
    match opts.subformat.as_deref() {
        None | Some("dynamic") => {}
        Some(other) => {
            return Err(DiskError::unsupported(
                F,
                format!("subformat {other:?}; vmie writes dynamic VHDX"),
            ));
        }
    }
    let size = disk.virtual_size().div_ceil(LOGICAL_SECTOR) * LOGICAL_SECTOR;
    if size > 64 << 40 {
        return Err(DiskError::unsupported(
            F,
            format!("a {size}-byte disk: VHDX holds at most 64 TiB"),
        ));
    }
    let block = block_size(size);
    let chunk_ratio = ((1u64 << 23) * LOGICAL_SECTOR) / block;
    let payload = size.div_ceil(block);
    let total = payload + payload.saturating_sub(1) / chunk_ratio;
    let bat_length = (total * 8).div_ceil(MIB).max(1) * MIB;
    let mut bat = vec![0u8; usize::try_from(total * 8).map_err(|_| DiskError::invalid(F, "BAT"))?];

    let mut id = vec![0u8; 64 * 1024];
    id[0..8].copy_from_slice(b"vhdxfile");
    for (i, u) in "vmie".encode_utf16().enumerate() {
        id[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    out.put_at(&id, 0).map_err(io)?;
    for (seq, at) in HEADER_OFFSETS.iter().enumerate() {
        out.put_at(&header(seq as u64), *at).map_err(io)?;
    }
    let rt = region_table(u32_of(bat_length, "BAT length")?);
    for at in REGION_TABLE_OFFSETS {
        out.put_at(&rt, at).map_err(io)?;
    }
    out.put_at(
        &metadata(size, u32_of(block, "block size")?),
        METADATA_OFFSET,
    )
    .map_err(io)?;

    let grains_per_block = block / GRAIN;
    let mut next_block_at = BAT_OFFSET + bat_length;
    let mut current: Option<(u64, u64)> = None; // (block index, file offset)
    let mut sink = |gi: u64, data: &[u8]| -> Result<()> {
        let bi = gi / grains_per_block;
        let base = match current {
            Some((b, at)) if b == bi => at,
            _ => {
                let at = next_block_at;
                next_block_at += block;
                let idx = usize::try_from(bi + bi / chunk_ratio)
                    .map_err(|_| DiskError::invalid(F, "BAT index"))?;
                let entry = FULLY_PRESENT | ((at / MIB) << 20);
                bat[idx * 8..idx * 8 + 8].copy_from_slice(&entry.to_le_bytes());
                current = Some((bi, at));
                at
            }
        };
        let at = base + (gi % grains_per_block) * GRAIN;
        for (a, b) in crate::convert::nonzero_runs(data, 4096) {
            out.put_at(&data[a..b], at + a as u64).map_err(io)?;
        }
        Ok(())
    };
    ordered_grains(
        disk,
        GRAIN,
        opts.threads,
        progress,
        &|_: &[u8]| Ok(None),
        &mut sink,
    )?;
    out.put_at(&bat, BAT_OFFSET).map_err(io)?;
    out.set_size(next_block_at).map_err(io)?;
    Ok(WriteStats {
        virtual_size: size,
        file_size: next_block_at,
    })
}
