//! Microsoft VHD ("Virtual Hard Disk Image Format Specification"; qemu calls it `vpc`).
//!
//! Layout (all numbers big-endian):
//! - **Fixed** disks are the raw disk followed by a 512-byte *hard disk footer* (cookie
//!   `conectix`, sizes, CHS geometry, disk type, checksum).
//! - **Dynamic** disks start with a copy of the footer, then a 1024-byte *dynamic disk
//!   header* (cookie `cxsparse`) at the footer's data offset naming the *block allocation
//!   table* (BAT): one `u32` sector offset per block, `0xFFFFFFFF` for an unallocated block.
//!   Each allocated block is a sector bitmap (one bit per sector, most significant bit first,
//!   padded to 512 bytes) followed by the block's data; the footer closes the file.
//! - **Differencing** disks (type 4, or a dynamic header with parent locators) need their
//!   parent and are refused.
//!
//! The virtual size is what qemu-img reports: the CHS geometry for Virtual PC / old qemu
//! images, the footer's current size for Hyper-V and similar creators ([`header::Footer`]).
//!
//! Opening validates the footer, the dynamic header and every BAT entry (bitmap and data
//! inside the file, before the footer). Sector bitmaps are read lazily and cached; sectors
//! whose bit is clear read as zeros.

pub mod header;
#[cfg(test)]
mod rule_tests;
pub mod rules;
#[cfg(test)]
mod tests;

use crate::cache::TableCache;
use crate::disk::{
    Disk, Extent, ExtentKind, ExtentList, ImageInfo, check_read, clip_end, run_slice,
};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{ReadAt, Source, read_checked, read_checked_into};
use crate::limits::{self, Limits, check_in_file};

use header::{DYN_HEADER_SIZE, DynHeader, FOOTER_SIZE, Footer, SECTOR, TYPE_FIXED};

const F: Format = Format::Vhd;
/// BAT entry of an unallocated block (spec, "Block Allocation Table").
const UNALLOCATED: u32 = 0xFFFF_FFFF;

/// Opens a VHD image.
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    Ok(Box::new(VhdDisk::open(src, limits)?))
}

/// A sector bitmap of one block, as loaded.
#[derive(Debug)]
enum Bitmap {
    /// Every sector of the block is present (what qemu and Hyper-V write).
    Full,
    /// The bitmap bytes, one bit per sector, most significant bit first.
    Bits(Vec<u8>),
}

impl Bitmap {
    fn present(&self, sector: u64) -> bool {
        match self {
            Bitmap::Full => true,
            Bitmap::Bits(b) => bit_set(b, sector),
        }
    }
}

/// Whether `sector`'s bit is set in a sector bitmap (most significant bit first).
fn bit_set(bitmap: &[u8], sector: u64) -> bool {
    usize::try_from(sector / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .is_some_and(|&byte| byte & (0x80 >> (sector % 8)) != 0)
}

struct Dynamic {
    bat: Vec<u32>,
    block_size: u64,
    bitmap_size: u64,
    bitmaps: TableCache<Bitmap>,
}

enum Layout {
    Fixed,
    Dynamic(Dynamic),
}

/// An opened VHD (fixed or dynamic).
pub struct VhdDisk {
    src: Source,
    size: u64,
    footer: Footer,
    layout: Layout,
}

/// The footer that describes the disk, and whether it is the one at the end of the file. The
/// footer at the end is preferred; the copy at the start of a dynamic disk is used when the end
/// is damaged (a checksum error), and must otherwise agree with it.
fn read_footer(src: &dyn ReadAt) -> Result<(Footer, bool)> {
    let file_size = src.size();
    let footer_len = FOOTER_SIZE as u64;
    let mut tail = [0u8; FOOTER_SIZE];
    let tail_ok = file_size >= footer_len && {
        read_checked_into(src, F, "footer", file_size - footer_len, &mut tail)?;
        Footer::has_cookie(&tail)
    };
    let mut head = [0u8; FOOTER_SIZE];
    let head_ok = file_size >= footer_len && {
        read_checked_into(src, F, "footer copy", 0, &mut head)?;
        Footer::has_cookie(&head)
    };
    match (tail_ok, head_ok) {
        (true, true) => match (Footer::parse(&tail), Footer::parse(&head)) {
            (Ok(t), Ok(h)) if t.disk_type != TYPE_FIXED && !t.same_disk_as(&h) => {
                Err(DiskError::invalid_rule(
                    F,
                    rules::FOOTER_COPY,
                    "the footer copy at the start describes another disk than the footer at the end (type, size, geometry, creator, header offset or id differ)",
                ))
            }
            (Ok(t), _) => Ok((t, true)),
            // Only a damaged (bad checksum) end footer gives way to a dynamic disk's copy; a
            // sound footer that refuses the image (differencing, …) is final.
            (Err(DiskError::Corrupt { .. }), Ok(h)) if h.disk_type != TYPE_FIXED => Ok((h, false)),
            (Err(e), _) => Err(e),
        },
        (true, false) => Ok((Footer::parse(&tail)?, true)),
        (false, true) => Ok((Footer::parse(&head)?, false)),
        (false, false) => Err(DiskError::invalid(
            F,
            "no \"conectix\" footer at the end or the start of the file",
        )),
    }
}

/// Checks no block (`span` bytes from its BAT entry's sector) overlaps another or one of the
/// `metadata` ranges (`(offset, length)`: the footer copy, the dynamic header, the BAT).
fn check_no_overlap(bat: &[u32], span: u64, metadata: &[(u64, u64)]) -> Result<()> {
    let mut blocks: Vec<u64> = bat
        .iter()
        .filter(|&&e| e != UNALLOCATED)
        .map(|&e| u64::from(e) * SECTOR)
        .collect();
    blocks.sort_unstable();
    for &(m, len) in metadata {
        // The first block ending after the metadata starts is the only one that can overlap.
        let i = blocks.partition_point(|&b| b + span <= m);
        if blocks.get(i).is_some_and(|&b| b < m.saturating_add(len)) {
            return Err(DiskError::corrupt_rule(
                F,
                rules::BLOCK_OVER_METADATA,
                format!("a block overlaps the metadata at offset {m}"),
            ));
        }
    }
    for w in blocks.windows(2) {
        if w[1] < w[0] + span {
            return Err(DiskError::corrupt_rule(
                F,
                rules::BLOCKS_OVERLAP,
                format!("the blocks at offsets {} and {} overlap", w[0], w[1]),
            ));
        }
    }
    Ok(())
}

/// A fixed disk is its data followed by the footer: the data before the footer holds the
/// virtual disk and is exactly the footer's current size.
fn check_fixed_data(footer: &Footer, size: u64, data_limit: u64) -> Result<()> {
    check_in_file(F, "fixed disk data", 0, size, data_limit)?;
    check_in_file(F, "fixed disk data", 0, footer.current_size, data_limit)?;
    if data_limit > footer.current_size {
        return Err(DiskError::invalid_rule(
            F,
            rules::FIXED_SIZE,
            format!(
                "{data_limit} bytes of data precede the footer, which gives a current size of {}",
                footer.current_size
            ),
        ));
    }
    Ok(())
}

impl VhdDisk {
    /// Parses and validates the footer (and its copy), then the fixed disk's data or the
    /// dynamic disk's header and whole BAT.
    pub fn open(src: Source, limits: &Limits) -> Result<Self> {
        let file_size = src.size();
        let (footer, at_end) = read_footer(&*src)?;
        let size = limits.check_virtual_size(footer.virtual_size()?)?;
        // Data and blocks must end before the footer (when it is at the end).
        let data_limit = if at_end {
            file_size - FOOTER_SIZE as u64
        } else {
            file_size
        };
        let layout = if footer.disk_type == TYPE_FIXED {
            if !at_end {
                return Err(DiskError::invalid(
                    F,
                    "fixed disk without a footer at the end of the file",
                ));
            }
            check_fixed_data(&footer, size, data_limit)?;
            Layout::Fixed
        } else {
            Layout::Dynamic(Self::open_dynamic(&src, &footer, size, data_limit, limits)?)
        };
        Ok(VhdDisk {
            src,
            size,
            footer,
            layout,
        })
    }

    fn open_dynamic(
        src: &Source,
        footer: &Footer,
        size: u64,
        data_limit: u64,
        limits: &Limits,
    ) -> Result<Dynamic> {
        let mut hb = [0u8; DYN_HEADER_SIZE];
        read_checked_into(
            &**src,
            F,
            "dynamic disk header",
            footer.data_offset,
            &mut hb,
        )?;
        let h = DynHeader::parse(&hb)?;
        let block_size = u64::from(h.block_size);
        let entries = u64::from(h.max_table_entries);
        let covered = limits::mul(F, "BAT coverage", entries, block_size)?;
        if covered < size {
            return Err(DiskError::corrupt_rule(
                F,
                rules::BAT_TOO_SMALL,
                format!(
                    "the BAT's {entries} blocks of {block_size} bytes cover {covered} bytes, less than the virtual size {size}"
                ),
            ));
        }
        let bat_bytes = limits.check_table(F, "BAT size", entries * 4)?;
        let raw = read_checked(&**src, F, "BAT", h.table_offset, bat_bytes)?;
        let bat: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bitmap_size = h.bitmap_size();
        let span = bitmap_size + block_size;
        for &e in &bat {
            if e != UNALLOCATED {
                check_in_file(F, "data block", u64::from(e) * SECTOR, span, data_limit)?;
            }
        }
        let metadata = [
            (0, FOOTER_SIZE as u64),
            (footer.data_offset, DYN_HEADER_SIZE as u64),
            (h.table_offset, entries * 4),
        ];
        check_no_overlap(&bat, span, &metadata)?;
        let budget = usize::try_from(limits.max_cache_size).unwrap_or(usize::MAX);
        Ok(Dynamic {
            bat,
            block_size,
            bitmap_size,
            bitmaps: TableCache::new(budget),
        })
    }

    /// Calls `f(virtual_offset, len, host_offset)` for each run of `[offset, end)` in order;
    /// `host_offset` is `None` for ranges that read as zeros. Runs of one block are merged
    /// when host-contiguous.
    fn for_each_run(
        &self,
        offset: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, Option<u64>) -> Result<()>,
    ) -> Result<()> {
        let d = match &self.layout {
            Layout::Fixed => return f(offset, end - offset, Some(offset)),
            Layout::Dynamic(d) => d,
        };
        let mut pos = offset;
        while pos < end {
            let block = pos / d.block_size;
            let within = pos % d.block_size;
            let chunk = (d.block_size - within).min(end - pos);
            let entry = usize::try_from(block)
                .ok()
                .and_then(|i| d.bat.get(i))
                .copied()
                .unwrap_or(UNALLOCATED);
            if entry == UNALLOCATED {
                f(pos, chunk, None)?;
            } else {
                let bitmap_at = u64::from(entry) * SECTOR;
                let data_at = bitmap_at + d.bitmap_size;
                let bitmap = d.bitmaps.get_or_load(block, || {
                    let len = limits::to_usize(F, "sector bitmap", d.bitmap_size)?;
                    let b = read_checked(&*self.src, F, "sector bitmap", bitmap_at, len)?;
                    let sectors = d.block_size / SECTOR;
                    let full = (0..sectors).all(|s| bit_set(&b, s));
                    // A full bitmap is kept as a flag: account a few bytes, not the sector.
                    Ok(if full {
                        (Bitmap::Full, 16)
                    } else {
                        (Bitmap::Bits(b), len)
                    })
                })?;
                match &*bitmap {
                    Bitmap::Full => f(pos, chunk, Some(data_at + within))?,
                    Bitmap::Bits(_) => {
                        // Walk sector by sector, emitting runs of equal presence.
                        let stop = within + chunk;
                        let mut at = within;
                        while at < stop {
                            let present = bitmap.present(at / SECTOR);
                            let mut next = (at / SECTOR + 1) * SECTOR;
                            while next < stop && bitmap.present(next / SECTOR) == present {
                                next += SECTOR;
                            }
                            let next = next.min(stop);
                            let base = pos - within;
                            f(base + at, next - at, present.then_some(data_at + at))?;
                            at = next;
                        }
                    }
                }
            }
            pos += chunk;
        }
        Ok(())
    }
}

impl Disk for VhdDisk {
    fn info(&self) -> ImageInfo {
        let (subformat, cluster_size) = match &self.layout {
            Layout::Fixed => ("fixed", None),
            Layout::Dynamic(d) => ("dynamic", Some(d.block_size)),
        };
        let f = &self.footer;
        ImageInfo {
            format: F,
            subformat: Some(subformat.to_string()),
            virtual_size: self.size,
            cluster_size,
            details: vec![
                ("creator_app".into(), f.creator_text()),
                (
                    "geometry".into(),
                    format!("{}/{}/{}", f.cylinders, f.heads, f.sectors),
                ),
                (
                    "size_from".into(),
                    if f.sized_by_current_size() {
                        "current_size"
                    } else {
                        "geometry"
                    }
                    .into(),
                ),
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
        if end <= offset {
            return Ok(list.into_vec());
        }
        if let Layout::Fixed = self.layout {
            // A sparse host file's holes read as zeros: report them, as for raw disks.
            let mut at = offset;
            while at < end {
                let next = self.src.next_data(at).map_err(|e| {
                    DiskError::io(format!("finding data in the vhd file at {at}"), e)
                })?;
                match next {
                    Some((start, stop)) if start < end => {
                        let start = start.max(at);
                        let stop = stop.clamp(start + 1, end);
                        list.push(at, start - at, ExtentKind::Zero);
                        list.push(start, stop - start, ExtentKind::Data);
                        at = stop;
                    }
                    _ => {
                        list.push(at, end - at, ExtentKind::Zero);
                        at = end;
                    }
                }
            }
            return Ok(list.into_vec());
        }
        self.for_each_run(offset, end, |at, len, host| {
            let kind = if host.is_some() {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            };
            list.push(at, len, kind);
            Ok(())
        })?;
        Ok(list.into_vec())
    }
}
