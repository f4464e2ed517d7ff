//! VirtualBox VDI (header version 1.1), little-endian.
//!
//! Layout:
//! - a 64-byte text line (`<<< Oracle VM VirtualBox Disk Image >>>`, older Sun / innotek
//!   variants, or qemu's own), the signature `0xbeda107f` at 0x40 and the v1.1 header
//!   ([`header::Header`]): image type, block map and data offsets, disk size, block size,
//!   block count and UUIDs;
//! - the *block map* at `offset_bmap`: one `u32` per block, the index of the block in the data
//!   area, `0xFFFFFFFF` for an unallocated block and `0xFFFFFFFE` for a zeroed (discarded)
//!   block, both reading as zeros;
//! - the data area at `offset_data`: block `i` of the map is at
//!   `offset_data + i * (block_size + block_extra) + block_extra`.
//!
//! Normal (dynamic) and fixed (static) images are read; undo and differencing images, and any
//! image with a link or parent UUID, need another image and are refused. Opening validates the
//! header and every block map entry (each allocated block inside the file).

pub mod header;
#[cfg(test)]
mod rule_tests;
pub mod rules;
#[cfg(test)]
mod tests;

use crate::disk::{
    Disk, Extent, ExtentKind, ExtentList, ImageInfo, check_read, clip_end, run_slice,
};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{Source, read_checked, read_checked_into};
use crate::limits::{self, Limits, check_in_file};

use header::{HEADER_SIZE, Header, TYPE_FIXED};

const F: Format = Format::Vdi;
/// Block map entry of an unallocated block (VirtualBox `VDI_IMAGE_BLOCK_FREE`).
const BLOCK_FREE: u32 = 0xFFFF_FFFF;
/// Block map entry of a zeroed block (VirtualBox `VDI_IMAGE_BLOCK_ZERO`).
const BLOCK_ZERO: u32 = 0xFFFF_FFFE;

/// Checks the block map as `qemu-img check` does: every data block index inside the image's
/// blocks, none used twice, and no more in use than the header counts (fewer is accepted: a
/// block discarded to a zero entry may stay counted, and qemu reads such images).
fn check_block_map(entries: &[u32], h: &Header) -> Result<()> {
    let mut used: Vec<u32> = entries
        .iter()
        .copied()
        .filter(|&e| e != BLOCK_FREE && e != BLOCK_ZERO)
        .collect();
    if let Some(&e) = used.iter().find(|&&e| e >= h.blocks) {
        return Err(DiskError::corrupt_rule(
            F,
            rules::INDEX_OUT_OF_RANGE,
            format!(
                "a block map entry names data block {e}; the image has {}",
                h.blocks
            ),
        ));
    }
    used.sort_unstable();
    if let Some(w) = used.windows(2).find(|w| w[0] == w[1]) {
        return Err(DiskError::corrupt_rule(
            F,
            rules::BLOCK_USED_TWICE,
            format!("data block {} is used by two block map entries", w[0]),
        ));
    }
    if used.len() as u64 > u64::from(h.allocated) {
        return Err(DiskError::corrupt_rule(
            F,
            rules::ALLOCATED_MISMATCH,
            format!(
                "the header counts {} allocated blocks, the block map {}",
                h.allocated,
                used.len()
            ),
        ));
    }
    Ok(())
}

/// Opens a VDI image.
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    Ok(Box::new(VdiDisk::open(src, limits)?))
}

/// An opened VDI image (normal or fixed).
pub struct VdiDisk {
    src: Source,
    header: Header,
    size: u64,
    /// Host offset of each block's data; `None` for blocks that read as zeros.
    map: Vec<Option<u64>>,
}

impl VdiDisk {
    /// Parses the header and validates the whole block map.
    pub fn open(src: Source, limits: &Limits) -> Result<Self> {
        let mut hb = [0u8; HEADER_SIZE];
        read_checked_into(&*src, F, "header", 0, &mut hb)?;
        let header = Header::parse(&hb)?;
        let size = limits.check_virtual_size(header.virtual_size())?;
        let blocks = u64::from(header.blocks);
        let covered = limits::mul(F, "block map coverage", blocks, header.block_size)?;
        if covered < size {
            return Err(DiskError::corrupt_rule(
                F,
                rules::MAP_TOO_SMALL,
                format!(
                    "the block map's {blocks} blocks of {} bytes cover {covered} bytes, less than the disk size {size}",
                    header.block_size
                ),
            ));
        }
        let map_bytes = limits.check_table(F, "block map size", blocks * 4)?;
        let raw = read_checked(&*src, F, "block map", header.offset_bmap, map_bytes)?;
        let entries: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let stride = header.block_size + header.block_extra;
        let file_size = src.size();
        let mut map = Vec::with_capacity(entries.len());
        for &e in &entries {
            if e == BLOCK_FREE || e == BLOCK_ZERO {
                map.push(None);
                continue;
            }
            // stride <= 65 MiB and e < 2^32: the product fits in u64.
            let at = limits::add(
                F,
                "block offset",
                header.offset_data,
                u64::from(e) * stride + header.block_extra,
            )?;
            check_in_file(F, "data block", at, header.block_size, file_size)?;
            map.push(Some(at));
        }
        check_block_map(&entries, &header)?;
        Ok(VdiDisk {
            src,
            header,
            size,
            map,
        })
    }

    /// Calls `f(virtual_offset, len, host_offset)` for each run of `[offset, end)` in order,
    /// `host_offset` `None` for zero ranges; allocated blocks that follow each other in the
    /// file are merged into one run.
    fn for_each_run(
        &self,
        offset: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, Option<u64>) -> Result<()>,
    ) -> Result<()> {
        let bs = self.header.block_size;
        let mut pending: Option<(u64, u64, Option<u64>)> = None;
        let mut pos = offset;
        while pos < end {
            let block = pos / bs;
            let within = pos % bs;
            let chunk = (bs - within).min(end - pos);
            let host = usize::try_from(block)
                .ok()
                .and_then(|i| self.map.get(i))
                .copied()
                .flatten()
                .map(|h| h + within);
            pending = match pending {
                Some((start, len, ph)) => {
                    let joins = match (ph, host) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a + len == b,
                        _ => false,
                    };
                    if joins {
                        Some((start, len + chunk, ph))
                    } else {
                        f(start, len, ph)?;
                        Some((pos, chunk, host))
                    }
                }
                None => Some((pos, chunk, host)),
            };
            pos += chunk;
        }
        if let Some((start, len, ph)) = pending {
            f(start, len, ph)?;
        }
        Ok(())
    }
}

impl Disk for VdiDisk {
    fn info(&self) -> ImageInfo {
        let h = &self.header;
        ImageInfo {
            format: F,
            subformat: Some(
                if h.image_type == TYPE_FIXED {
                    "static"
                } else {
                    "dynamic"
                }
                .to_string(),
            ),
            virtual_size: self.size,
            cluster_size: Some(h.block_size),
            details: vec![
                ("creator_text".into(), h.text.clone()),
                ("allocated_blocks".into(), h.allocated.to_string()),
            ],
        }
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_read(F, offset, buf.len(), self.size)?;
        let end = offset + buf.len() as u64;
        self.for_each_run(offset, end, |at, len, host| {
            let out = run_slice(F, buf, offset, at, len)?;
            match host {
                None => out.fill(0),
                Some(h) => read_checked_into(&*self.src, F, "data block", h, out)?,
            }
            Ok(())
        })
    }

    fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, length, self.size);
        let mut list = ExtentList::new();
        if end > offset {
            self.for_each_run(offset, end, |at, len, host| {
                let kind = if host.is_some() {
                    ExtentKind::Data
                } else {
                    ExtentKind::Zero
                };
                list.push(at, len, kind);
                Ok(())
            })?;
        }
        Ok(list.into_vec())
    }
}
