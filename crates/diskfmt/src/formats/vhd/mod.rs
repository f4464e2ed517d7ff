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
mod tests;

use crate::cache::TableCache;
use crate::disk::{
    Disk, Extent, ExtentKind, ExtentList, ImageInfo, check_read, clip_end, run_slice,
};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{Source, read_checked, read_checked_into};
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

impl VhdDisk {
    /// Parses and validates the footer, the dynamic header and the whole BAT.
    pub fn open(src: Source, limits: &Limits) -> Result<Self> {
        let file_size = src.size();
        let footer_len = FOOTER_SIZE as u64;
        let mut tail = [0u8; FOOTER_SIZE];
        let tail_ok = file_size >= footer_len && {
            read_checked_into(&*src, F, "footer", file_size - footer_len, &mut tail)?;
            Footer::has_cookie(&tail)
        };
        let mut head = [0u8; FOOTER_SIZE];
        let head_ok = file_size >= footer_len && {
            read_checked_into(&*src, F, "footer copy", 0, &mut head)?;
            Footer::has_cookie(&head)
        };
        // Prefer the footer at the end; fall back to the copy at the start of a dynamic disk
        // whose end was damaged. A checksum error is reported when neither copy is sound.
        let footer = match (tail_ok, head_ok) {
            (true, true) => Footer::parse(&tail).or_else(|e| match (&e, Footer::parse(&head)) {
                // Only a damaged (bad checksum) end footer gives way to a dynamic disk's copy;
                // a sound footer that refuses the image (differencing, …) is final.
                (DiskError::Corrupt { .. }, Ok(f)) if f.disk_type != TYPE_FIXED => Ok(f),
                _ => Err(e),
            })?,
            (true, false) => Footer::parse(&tail)?,
            (false, true) => Footer::parse(&head)?,
            (false, false) => {
                return Err(DiskError::invalid(
                    F,
                    "no \"conectix\" footer at the end or the start of the file",
                ));
            }
        };
        let size = limits.check_virtual_size(footer.virtual_size()?)?;
        // Data and blocks must end before the footer (when it is at the end).
        let data_limit = if tail_ok {
            file_size - footer_len
        } else {
            file_size
        };
        let layout = if footer.disk_type == TYPE_FIXED {
            if !tail_ok {
                return Err(DiskError::invalid(
                    F,
                    "fixed disk without a footer at the end of the file",
                ));
            }
            check_in_file(F, "fixed disk data", 0, size, data_limit)?;
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
            return Err(DiskError::corrupt(
                F,
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
