//! The grain directory (GD) and grain tables (GTs) of a sparse extent.
//!
//! The GD is an array of `u32` sector offsets, one per grain table; 0 marks a table that was
//! never allocated (its grains read as zeros). Each GT holds `numGTEsPerGT` `u32` sector
//! offsets of grains: 0 is an unallocated grain, 1 a zeroed grain (newer VMware products),
//! anything else the sector where the grain starts. In a compressed (streamOptimized)
//! extent that sector starts with a grain marker `{u64 lba, u32 size}` followed by `size`
//! bytes of zlib data.
//!
//! Opening validates every table and every grain pointer; grain tables are then re-read on
//! demand through a [`TableCache`].

use std::sync::Arc;

use crate::cache::TableCache;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{Source, le, read_checked};
use crate::limits::{Limits, add, check_in_file, mul, to_usize};

use super::header::{
    FLAG_REDUNDANT_GT, GRAIN_MARKER_LEN, SECTOR, SparseHeader, max_compressed_grain,
};
use super::rules;

const F: Format = Format::Vmdk;

/// Largest read used to load several adjacent grain tables at once while opening.
const GT_BATCH_BYTES: u64 = 1 << 20;

/// What one grain of the virtual disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Reads as zeros (unallocated or zeroed).
    Zero,
    /// Stored at this byte offset of the file (the grain marker, when compressed).
    Data(u64),
}

/// The grain directory and a cache of grain tables.
pub struct GrainMap {
    /// Grain table sector offsets.
    gd: Vec<u32>,
    /// Entries per grain table.
    gtes: u64,
    /// Bytes of one grain table as stored.
    gt_bytes: u64,
    /// Bytes per grain.
    pub grain_bytes: u64,
    /// Number of grains of the virtual disk.
    grains: u64,
    /// Virtual size in bytes.
    virtual_size: u64,
    /// Grains are compressed and start with a marker.
    compressed: bool,
    /// Sectors of metadata before the first grain (`overHead`).
    overhead: u64,
    file_size: u64,
    cache: TableCache<Vec<u32>>,
}

impl GrainMap {
    /// Loads the grain directory of `h` and validates every grain table and grain pointer.
    pub fn open(
        src: &Source,
        h: &SparseHeader,
        virtual_size: u64,
        limits: &Limits,
    ) -> Result<Self> {
        let file_size = src.size();
        let grain_bytes = mul(F, "grain size", h.grain_sectors, SECTOR)?;
        let grains = virtual_size.div_ceil(grain_bytes);
        let gd_entries = grains.div_ceil(h.gtes_per_gt);
        let gd_len = limits.check_table(
            F,
            "grain directory size",
            mul(F, "grain directory size", gd_entries, 4)?,
        )?;
        let gd_off = mul(F, "grain directory offset", h.gd_offset, SECTOR)?;
        if gd_entries > 0 && h.gd_offset == 0 {
            return Err(DiskError::corrupt_rule(
                F,
                rules::GD_OFFSET_ZERO,
                "the grain directory offset is 0",
            ));
        }
        if h.flags & FLAG_REDUNDANT_GT != 0 {
            // Not read (the primary one is), but it is metadata the header points at.
            let rgd = mul(F, "redundant grain directory offset", h.rgd_offset, SECTOR)?;
            check_in_file(
                F,
                "redundant grain directory",
                rgd,
                gd_len as u64,
                src.size(),
            )?;
        }
        let raw = read_checked(&**src, F, "grain directory", gd_off, gd_len)?;
        let gd: Vec<u32> = raw.chunks_exact(4).map(|c| le::u32(c, 0)).collect();
        let map = GrainMap {
            gd,
            gtes: h.gtes_per_gt,
            gt_bytes: h.gtes_per_gt * 4,
            grain_bytes,
            grains,
            virtual_size,
            compressed: h.compressed(),
            overhead: h.overhead,
            file_size,
            cache: TableCache::new(to_usize(F, "cache size", limits.max_cache_size)?),
        };
        map.validate_all(src)?;
        Ok(map)
    }

    /// Reads every grain table (adjacent tables in one read) and checks all pointers.
    fn validate_all(&self, src: &Source) -> Result<()> {
        let gt_span = self.gt_bytes.div_ceil(SECTOR) * SECTOR;
        // Each allocated table occupies its own sectors in a well-formed file: more tables
        // than fit in the file means they overlap, and would make opening read far more
        // than the file holds.
        let allocated = self.gd.iter().filter(|&&s| s != 0).count() as u64;
        if allocated.saturating_mul(gt_span) > self.file_size {
            return Err(DiskError::corrupt_rule(
                F,
                rules::GRAIN_TABLES_OVERLAP,
                format!(
                    "{allocated} grain tables cannot fit in a file of {} bytes: the grain directory is corrupt",
                    self.file_size
                ),
            ));
        }
        let mut compressed_seen = 0u64;
        let mut i = 0usize;
        while i < self.gd.len() {
            if self.gd[i] == 0 {
                i += 1;
                continue;
            }
            // Batch the run of tables stored back to back.
            let start = u64::from(self.gd[i]) * SECTOR;
            let mut j = i + 1;
            while j < self.gd.len()
                && u64::from(self.gd[j]) * SECTOR == start + (j - i) as u64 * gt_span
                && (j + 1 - i) as u64 * gt_span <= GT_BATCH_BYTES
            {
                j += 1;
            }
            let len = (j - i - 1) as u64 * gt_span + self.gt_bytes;
            check_in_file(F, "grain table", start, len, self.file_size)?;
            let buf = read_checked(
                &**src,
                F,
                "grain table",
                start,
                to_usize(F, "grain table", len)?,
            )?;
            for k in i..j {
                let rel = to_usize(F, "grain table", (k - i) as u64 * gt_span)?;
                let table = buf
                    .get(rel..rel + to_usize(F, "grain table", self.gt_bytes)?)
                    .ok_or_else(|| DiskError::corrupt(F, "grain table batch is short"))?;
                let first_grain = k as u64 * self.gtes;
                for (n, c) in table.chunks_exact(4).enumerate() {
                    let g = first_grain + n as u64;
                    if g >= self.grains {
                        break;
                    }
                    let e = le::u32(c, 0);
                    if e > 1 {
                        self.check_grain(src, g, e)?;
                        if self.compressed {
                            compressed_seen += 1;
                            if compressed_seen > self.file_size / SECTOR {
                                // Defensive: each marker names its own grain, so two grains
                                // never share a sector and this bound holds already.
                                return Err(DiskError::corrupt(
                                    F,
                                    "more compressed grains than sectors in the file: the grain tables are corrupt",
                                ));
                            }
                        }
                    }
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Checks grain `g`'s entry `e` (a sector offset, > 1) points inside the file, after the
    /// metadata; for a compressed grain, that its marker names the grain and its data is in
    /// the file.
    fn check_grain(&self, src: &Source, g: u64, e: u32) -> Result<()> {
        if u64::from(e) < self.overhead {
            return Err(DiskError::corrupt_rule(
                F,
                rules::GRAIN_BEFORE_OVERHEAD,
                format!(
                    "grain {g} at sector {e} lies in the metadata (the first {} sectors)",
                    self.overhead
                ),
            ));
        }
        let off = u64::from(e) * SECTOR;
        if !self.compressed {
            let start = g * self.grain_bytes;
            let need = self.grain_bytes.min(self.virtual_size - start);
            return check_in_file(F, "grain", off, need, self.file_size);
        }
        let m = read_checked(&**src, F, "grain marker", off, GRAIN_MARKER_LEN)?;
        let lba = le::u64(&m, 0);
        let size = u64::from(le::u32(&m, 8));
        let want = g * (self.grain_bytes / SECTOR);
        if lba != want {
            return Err(DiskError::corrupt_rule(
                F,
                rules::MARKER_LBA,
                format!("the grain marker at offset {off} names sector {lba}, not {want}"),
            ));
        }
        self.check_compressed_size(off, size)
    }

    fn check_compressed_size(&self, off: u64, size: u64) -> Result<()> {
        let max = max_compressed_grain(self.grain_bytes);
        if size == 0 || size > max {
            return Err(DiskError::corrupt_rule(
                F,
                rules::MARKER_SIZE,
                format!(
                    "the compressed grain at offset {off} claims {size} bytes (1 to {max} are valid)"
                ),
            ));
        }
        check_in_file(
            F,
            "compressed grain",
            add(F, "grain offset", off, GRAIN_MARKER_LEN as u64)?,
            size,
            self.file_size,
        )
    }

    /// Reads the size of the compressed grain whose marker is at `off`, checked.
    pub fn compressed_size(&self, src: &Source, off: u64) -> Result<u64> {
        let m = read_checked(&**src, F, "grain marker", off, GRAIN_MARKER_LEN)?;
        let size = u64::from(le::u32(&m, 8));
        self.check_compressed_size(off, size)?;
        Ok(size)
    }

    /// Whether grains are compressed.
    #[must_use]
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    fn load_gt(&self, src: &Source, sector: u32) -> Result<Arc<Vec<u32>>> {
        self.cache.get_or_load(u64::from(sector), || {
            let len = to_usize(F, "grain table", self.gt_bytes)?;
            let raw = read_checked(&**src, F, "grain table", u64::from(sector) * SECTOR, len)?;
            let t: Vec<u32> = raw.chunks_exact(4).map(|c| le::u32(c, 0)).collect();
            Ok((t, len))
        })
    }

    fn entry_to_grain(&self, g: u64, e: u32) -> Result<Grain> {
        match e {
            0 | 1 => Ok(Grain::Zero),
            _ => {
                let off = u64::from(e) * SECTOR;
                // Validated at open; checked again cheaply in case the source changed.
                if !self.compressed {
                    let need = self
                        .grain_bytes
                        .min(self.virtual_size - g * self.grain_bytes);
                    check_in_file(F, "grain", off, need, self.file_size)?;
                }
                Ok(Grain::Data(off))
            }
        }
    }

    /// Calls `f(first_grain, count, grain)` for the grains `[first, end)` in order; a run of
    /// `count > 1` is only reported for grains of an unallocated grain table (all zero).
    pub fn walk(
        &self,
        src: &Source,
        first: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, Grain) -> Result<()>,
    ) -> Result<()> {
        let end = end.min(self.grains);
        let mut g = first;
        while g < end {
            let gt_index = g / self.gtes;
            let gt_end = ((gt_index + 1) * self.gtes).min(end);
            let sector = to_usize(F, "grain table index", gt_index)
                .ok()
                .and_then(|i| self.gd.get(i).copied())
                .unwrap_or(0);
            if sector == 0 {
                f(g, gt_end - g, Grain::Zero)?;
                g = gt_end;
                continue;
            }
            let gt = self.load_gt(src, sector)?;
            while g < gt_end {
                let idx = to_usize(F, "grain index", g % self.gtes)?;
                let e = gt.get(idx).copied().unwrap_or(0);
                f(g, 1, self.entry_to_grain(g, e)?)?;
                g += 1;
            }
        }
        Ok(())
    }
}
