//! qcow2, versions 2 and 3 (qemu `docs/interop/qcow2.txt`).
//!
//! Layout: a header (see [`header`]) names the L1 table; each L1 entry points at an L2 table
//! of one cluster; each L2 entry maps one guest cluster:
//!
//! ```text
//! standard entry (64 bits):  bit 0 reads-as-zero, bits 9..55 host cluster offset,
//!                            bit 62 = 0 (not compressed), bit 63 copied
//! compressed entry:          x = 62 - (cluster_bits - 8); bits 0..x-1 host byte offset,
//!                            bits x..61 additional 512-byte sectors, bit 62 = 1
//! extended L2 (128 bits):    the standard entry, then a subcluster bitmap: bits 0..31
//!                            allocated, bits 32..63 reads-as-zero, 32 subclusters/cluster
//! ```
//!
//! Compressed clusters are raw deflate or a zstd frame (header compression type). Unallocated
//! clusters read as zeros (backing files are refused, never opened).
//!
//! Opening is the safety inspection: the header is checked and every L2 table reachable from
//! the L1 entries covering the virtual disk is read once and every entry validated (host
//! clusters aligned and inside the file, compressed ranges starting inside the file) before
//! any guest data is read. L2 tables are then kept in a byte-budgeted cache.

pub mod header;
pub mod refcount;
#[cfg(test)]
mod rule_tests;
pub mod rules;
pub mod snapshot;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::cache::TableCache;
use crate::codec;
use crate::disk::{
    Disk, Extent, ExtentKind, ExtentList, ImageInfo, check_read, clip_end, run_slice,
};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{ReadAt, Source, be, read_checked, read_checked_into};
use crate::limits::{self, Limits, check_in_file};

use header::{Compression, Header};

const F: Format = Format::Qcow2;
/// Bits 9..55 of L1 and standard L2 entries: the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// L1 and L2 entry bit 63: refcount exactly one (never set for a compressed cluster).
const COPIED: u64 = 1 << 63;
/// Reserved bits of an L1 entry: 0..=8 and 56..=62 (qemu `L1E_RESERVED_MASK`).
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Reserved bits of a standard L2 entry: 1..=8 and 56..=61 (qemu `L2E_STD_RESERVED_MASK`).
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// L2 entry bit 0: reads as zero.
const ZERO: u64 = 1;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u64 = 32;
/// Compressed clusters fetched with one read at most (bytes of compressed data).
const MAX_COMPRESSED_RUN: u64 = 4 << 20;

/// Reads the first cluster (at most 2 MiB: the header and its extensions live there) and
/// parses the header.
fn read_header(src: &dyn ReadAt, limits: &Limits) -> Result<Header> {
    let file_size = src.size();
    let first = file_size.min(1 << header::MAX_CLUSTER_BITS);
    let head_len = limits::to_usize(F, "header", first.min(4096))?;
    let mut b = read_checked(src, F, "header", 0, head_len)?;
    if b.len() >= 24 {
        let cb = be::u32(&b, 20);
        if (header::MIN_CLUSTER_BITS..=header::MAX_CLUSTER_BITS).contains(&cb) {
            let want = limits::to_usize(F, "header cluster", (1u64 << cb).min(file_size))?;
            if want > b.len() {
                b = read_checked(src, F, "header", 0, want)?;
            }
        }
    }
    Header::parse(&b, limits)
}

/// Reads the whole L1 table and checks every entry (reserved bits clear, L2 table aligned and
/// inside the file); returns the L2 table offsets of the entries that map the virtual disk.
fn read_l1(src: &dyn ReadAt, h: &Header, limits: &Limits) -> Result<Vec<u64>> {
    let cs = h.cluster_size();
    let bytes = limits.check_table(F, "L1 table", u64::from(h.l1_size) * 8)?;
    let raw = read_checked(src, F, "L1 table", h.l1_table_offset, bytes)?;
    let needed = limits::to_usize(F, "L1 entries", h.l1_entries_needed())?;
    let mut l1 = Vec::with_capacity(needed);
    for (i, e) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        if e & L1_RESERVED != 0 {
            return Err(DiskError::corrupt_rule(
                F,
                rules::L1_ENTRY_RESERVED,
                format!("L1 entry {i} ({e:#x}) has reserved bits set"),
            ));
        }
        let off = e & OFFSET_MASK;
        if off != 0 {
            if !off.is_multiple_of(cs) {
                return Err(DiskError::corrupt_rule(
                    F,
                    rules::L2_UNALIGNED,
                    format!("L1 entry {i} points at an unaligned L2 table"),
                ));
            }
            check_in_file(F, "L2 table", off, cs, src.size())?;
        }
        if i < needed {
            l1.push(off);
        }
    }
    Ok(l1)
}

/// Opens a qcow2 image.
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    Ok(Box::new(Qcow2Disk::open(src, limits)?))
}

/// What one guest cluster (or subcluster) maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    /// Reads as zeros.
    Zero,
    /// Data at this host offset.
    Host(u64),
    /// Compressed data: host byte range `[offset, end)` (end clipped to the file).
    Compressed { offset: u64, end: u64 },
}

/// One L2 table: entries as `(entry, bitmap)` (bitmap 0 without extended L2).
type L2Table = Vec<(u64, u64)>;

/// A qcow2 image opened for reading.
pub struct Qcow2Disk {
    src: Source,
    h: Header,
    file_size: u64,
    /// L2 table offset per L1 index (0: no table, all zero).
    l1: Vec<u64>,
    l2_entries: u64,
    cache: TableCache<L2Table>,
}

impl std::fmt::Debug for Qcow2Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Disk")
            .field("header", &self.h)
            .finish_non_exhaustive()
    }
}

impl Qcow2Disk {
    /// Opens and inspects `src`: the header and its extensions, the place of every table,
    /// the refcount and snapshot tables, the L1 table and every L2 table it points at, in
    /// that order, before any guest data is read.
    pub fn open(src: Source, limits: &Limits) -> Result<Self> {
        let file_size = src.size();
        let h = read_header(&*src, limits)?;
        h.check_in_file(file_size)?;
        refcount::check_table(&*src, &h, limits)?;
        snapshot::check_table(&*src, &h)?;
        let l1 = read_l1(&*src, &h, limits)?;
        let entry_size: u64 = if h.extended_l2() { 16 } else { 8 };
        let disk = Qcow2Disk {
            cache: TableCache::new(limits::to_usize(F, "cache", limits.max_cache_size)?),
            l2_entries: h.cluster_size() / entry_size,
            src,
            h,
            file_size,
            l1,
        };
        // Every L2 table once, every entry checked, nothing kept but what fits the cache.
        for i in 0..disk.l1.len() {
            if disk.l1[i] != 0 {
                let t = disk.load_l2(disk.l1[i])?;
                disk.validate_l2(i as u64, &t)?;
            }
        }
        Ok(disk)
    }

    fn load_l2(&self, off: u64) -> Result<Arc<L2Table>> {
        self.cache.get_or_load(off, || {
            let cs = limits::to_usize(F, "cluster", self.h.cluster_size())?;
            let raw = read_checked(&*self.src, F, "L2 table", off, cs)?;
            let ext = self.h.extended_l2();
            let step = if ext { 16 } else { 8 };
            let t: L2Table = raw
                .chunks_exact(step)
                .map(|c| (be::u64(c, 0), if ext { be::u64(c, 8) } else { 0 }))
                .collect();
            let bytes = t.len() * 16;
            Ok((t, bytes))
        })
    }

    /// Checks every entry of the L2 table of L1 index `l1_index` that maps the virtual disk.
    fn validate_l2(&self, l1_index: u64, t: &L2Table) -> Result<()> {
        let cs = self.h.cluster_size();
        for (j, &(e, bitmap)) in t.iter().enumerate() {
            let guest = (l1_index * self.l2_entries + j as u64) * cs;
            if guest >= self.h.size {
                break;
            }
            if e & COMPRESSED != 0 {
                if e & COPIED != 0 {
                    return Err(DiskError::corrupt_rule(
                        F,
                        rules::COMPRESSED_COPIED,
                        format!(
                            "guest offset {guest}: a compressed cluster has the copied bit set"
                        ),
                    ));
                }
                self.compressed_range(e)?;
                continue;
            }
            if e & L2_RESERVED != 0 {
                return Err(DiskError::corrupt_rule(
                    F,
                    rules::L2_ENTRY_RESERVED,
                    format!("guest offset {guest}: the L2 entry {e:#x} has reserved bits set"),
                ));
            }
            let host = e & OFFSET_MASK;
            let Some(need) = self.host_bytes_needed(guest, host, bitmap)? else {
                continue;
            };
            if !host.is_multiple_of(cs) {
                return Err(DiskError::corrupt_rule(
                    F,
                    rules::DATA_CLUSTER_UNALIGNED,
                    format!("guest offset {guest}: host cluster {host:#x} is not aligned"),
                ));
            }
            check_in_file(F, "data cluster", host, need, self.file_size)?;
        }
        Ok(())
    }

    /// How many bytes of the host cluster `host` of the guest cluster at `guest` must be in
    /// the file: none (`None`) for a cluster that reads as zeros, the part up to the last
    /// allocated subcluster with extended L2 (only allocated subclusters are written: the
    /// file may end inside the cluster), else the cluster, clipped to the virtual size.
    fn host_bytes_needed(&self, guest: u64, host: u64, bitmap: u64) -> Result<Option<u64>> {
        let cs = self.h.cluster_size();
        let need = cs.min(self.h.size - guest);
        if !self.h.extended_l2() {
            return Ok((host != 0).then_some(need));
        }
        let (alloc, zero) = (bitmap & 0xffff_ffff, bitmap >> 32);
        if alloc & zero != 0 {
            return Err(DiskError::corrupt_rule(
                F,
                rules::SUBCLUSTER_ALLOCATED_AND_ZERO,
                format!("guest offset {guest}: a subcluster is both allocated and zero"),
            ));
        }
        if alloc != 0 && host == 0 {
            return Err(DiskError::corrupt_rule(
                F,
                rules::SUBCLUSTERS_WITHOUT_HOST,
                format!("guest offset {guest}: allocated subclusters without a host cluster"),
            ));
        }
        if alloc == 0 {
            return Ok(None);
        }
        let last = 64 - u64::from(alloc.leading_zeros());
        Ok(Some(need.min(last * (cs / SUBCLUSTERS))))
    }

    /// The host byte range of a compressed cluster, its start checked against the file.
    fn compressed_range(&self, e: u64) -> Result<(u64, u64)> {
        let x = 62 - (self.h.cluster_bits - 8);
        let offset = e & ((1u64 << x) - 1);
        let sectors = ((e >> x) & ((1u64 << (self.h.cluster_bits - 8)) - 1)) + 1;
        let len = sectors * 512 - (offset & 511);
        // The last sector may run past the end of the file: only its start must be inside.
        check_in_file(F, "compressed cluster", offset, 1, self.file_size)?;
        Ok((offset, (offset + len).min(self.file_size)))
    }

    /// Maps guest cluster `c` (and subcluster `sc` with extended L2).
    fn map(&self, c: u64, sc: u64) -> Result<Map> {
        let l1_index = c / self.l2_entries;
        let l2_off = *self
            .l1
            .get(limits::to_usize(F, "L1 index", l1_index)?)
            .ok_or_else(|| DiskError::invalid(F, "read past the L1 table"))?;
        if l2_off == 0 {
            return Ok(Map::Zero);
        }
        let t = self.load_l2(l2_off)?;
        let (e, bitmap) = *t
            .get(limits::to_usize(F, "L2 index", c % self.l2_entries)?)
            .ok_or_else(|| DiskError::invalid(F, "read past an L2 table"))?;
        if e & COMPRESSED != 0 {
            let (offset, end) = self.compressed_range(e)?;
            return Ok(Map::Compressed { offset, end });
        }
        let host = e & OFFSET_MASK;
        if self.h.extended_l2() {
            if bitmap >> sc & 1 == 1 {
                return Ok(Map::Host(host + sc * (self.h.cluster_size() / SUBCLUSTERS)));
            }
            return Ok(Map::Zero);
        }
        if e & ZERO != 0 || host == 0 {
            Ok(Map::Zero)
        } else {
            Ok(Map::Host(host))
        }
    }

    /// Unit of mapping: the subcluster with extended L2, else the cluster.
    fn unit(&self) -> u64 {
        if self.h.extended_l2() {
            self.h.cluster_size() / SUBCLUSTERS
        } else {
            self.h.cluster_size()
        }
    }

    /// Walks `[offset, end)` in runs: `f(guest, len, map)` where host runs are merged when
    /// contiguous in the file and compressed clusters come one cluster at a time.
    fn for_each_run(
        &self,
        offset: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, Map) -> Result<()>,
    ) -> Result<()> {
        let cs = self.h.cluster_size();
        let unit = self.unit();
        let mut pos = offset;
        let mut pending: Option<(u64, u64, Map)> = None;
        let coverage = self.l2_entries.saturating_mul(cs);
        while pos < end {
            let c = pos / cs;
            let l1_index = c / self.l2_entries;
            if self.l1.get(limits::to_usize(F, "L1 index", l1_index)?) == Some(&0) {
                // No L2 table: the whole L1 entry's range reads as zeros.
                let len = (l1_index + 1).saturating_mul(coverage).min(end) - pos;
                pending = match pending {
                    Some((g, l, Map::Zero)) => Some((g, l + len, Map::Zero)),
                    Some(p) => {
                        f(p.0, p.1, p.2)?;
                        Some((pos, len, Map::Zero))
                    }
                    None => Some((pos, len, Map::Zero)),
                };
                pos += len;
                continue;
            }
            let sc = (pos % cs) / unit;
            let m = self.map(c, sc)?;
            let unit_end = if matches!(m, Map::Compressed { .. }) {
                (c + 1) * cs
            } else {
                (pos / unit + 1) * unit
            };
            let len = unit_end.min(end) - pos;
            let m = match m {
                Map::Host(h) => Map::Host(h + pos % unit),
                other => other,
            };
            pending = match (pending, m) {
                (Some((g, l, Map::Zero)), Map::Zero) => Some((g, l + len, Map::Zero)),
                (Some((g, l, Map::Host(h0))), Map::Host(h)) if h0 + l == h => {
                    Some((g, l + len, Map::Host(h0)))
                }
                (Some(p), m) => {
                    f(p.0, p.1, p.2)?;
                    Some((pos, len, m))
                }
                (None, m) => Some((pos, len, m)),
            };
            pos += len;
        }
        if let Some(p) = pending {
            f(p.0, p.1, p.2)?;
        }
        Ok(())
    }

    fn decompress(&self, input: &[u8], out: &mut [u8]) -> Result<()> {
        let n = match self.h.compression {
            Compression::Zlib => codec::inflate_raw(F, input, out)?,
            Compression::Zstd => codec::unzstd(F, input, out)?,
        };
        if n != out.len() {
            return Err(DiskError::corrupt(
                F,
                format!(
                    "a compressed cluster holds {n} bytes instead of {}",
                    out.len()
                ),
            ));
        }
        Ok(())
    }
}

impl Disk for Qcow2Disk {
    fn info(&self) -> ImageInfo {
        let mut details = vec![(
            "compat".to_string(),
            if self.h.version == 2 { "0.10" } else { "1.1" }.to_string(),
        )];
        if self.h.version == 3 {
            details.push((
                "compression".into(),
                match self.h.compression {
                    Compression::Zlib => "zlib",
                    Compression::Zstd => "zstd",
                }
                .into(),
            ));
            details.push(("extended_l2".into(), self.h.extended_l2().to_string()));
            details.push((
                "dirty".into(),
                (self.h.incompatible & header::INCOMPAT_DIRTY != 0).to_string(),
            ));
        }
        ImageInfo {
            format: F,
            subformat: Some(format!("v{}", self.h.version)),
            virtual_size: self.h.size,
            cluster_size: Some(self.h.cluster_size()),
            details,
        }
    }

    fn virtual_size(&self) -> u64 {
        self.h.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_read(F, offset, buf.len(), self.h.size)?;
        let end = offset + buf.len() as u64;
        let cs = self.h.cluster_size();
        let csz = limits::to_usize(F, "cluster", cs)?;
        // Compressed clusters are gathered and fetched with one read per run of neighbours.
        let mut batch: Vec<(u64, u64, u64, u64)> = Vec::new(); // (guest, len, offset, end)
        let mut scratch: Vec<u8> = Vec::new();
        let mut flush = |batch: &mut Vec<(u64, u64, u64, u64)>, buf: &mut [u8]| -> Result<()> {
            let Some(&(_, _, first, _)) = batch.first() else {
                return Ok(());
            };
            let last = batch.iter().map(|b| b.3).max().unwrap_or(first);
            let span = limits::to_usize(F, "compressed run", last - first)?;
            let mut raw = vec![0u8; span];
            read_checked_into(&*self.src, F, "compressed cluster", first, &mut raw)?;
            for &(g, len, o, e) in batch.iter() {
                let input = &raw[limits::to_usize(F, "offset", o - first)?
                    ..limits::to_usize(F, "offset", e - first)?];
                let lo = limits::to_usize(F, "read offset", g - offset)?;
                let hi = limits::to_usize(F, "read offset", g - offset + len)?;
                let in_cluster = limits::to_usize(F, "offset", g % cs)?;
                if in_cluster == 0 && hi - lo == csz {
                    self.decompress(input, &mut buf[lo..hi])?;
                } else {
                    scratch.resize(csz, 0);
                    self.decompress(input, &mut scratch)?;
                    buf[lo..hi].copy_from_slice(&scratch[in_cluster..in_cluster + (hi - lo)]);
                }
            }
            batch.clear();
            Ok(())
        };
        let mut plain: Vec<(u64, u64, Map)> = Vec::new();
        self.for_each_run(offset, end, |g, len, m| {
            plain.push((g, len, m));
            Ok(())
        })?;
        for (g, len, m) in plain {
            match m {
                Map::Compressed { offset: o, end: e } => {
                    let joins = batch.last().is_some_and(|&(_, _, lo, le)| {
                        o >= lo && o <= le && e.saturating_sub(batch[0].2) <= MAX_COMPRESSED_RUN
                    });
                    if !joins {
                        flush(&mut batch, buf)?;
                    }
                    batch.push((g, len, o, e));
                }
                Map::Zero => run_slice(F, buf, offset, g, len)?.fill(0),
                Map::Host(h) => {
                    let out = run_slice(F, buf, offset, g, len)?;
                    read_checked_into(&*self.src, F, "data cluster", h, out)?;
                }
            }
        }
        flush(&mut batch, buf)
    }

    fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, length, self.h.size);
        let mut list = ExtentList::new();
        if end > offset {
            self.for_each_run(offset, end, |g, len, m| {
                let kind = if m == Map::Zero {
                    ExtentKind::Zero
                } else {
                    ExtentKind::Data
                };
                list.push(g, len, kind);
                Ok(())
            })?;
        }
        Ok(list.into_vec())
    }
}
