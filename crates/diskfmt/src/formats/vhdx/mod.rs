//! Microsoft VHDX ([MS-VHDX]).
//!
//! Layout, all little-endian, GUIDs in their mixed-endian on-disk form:
//! - 0: file type identifier `vhdxfile`;
//! - 64 KiB and 128 KiB: two 4 KiB headers (`head`, CRC-32C), the valid one with the highest
//!   sequence number is current; it locates the log ([`header`]);
//! - 192 KiB and 256 KiB: two 64 KiB region tables (`regi`, CRC-32C) locating the BAT and
//!   metadata regions, 1 MiB aligned ([`region`]);
//! - the log: when the current header's LogGuid is non-zero, logged writes that may not have
//!   reached their place yet; we replay them in memory into an overlay through which
//!   everything else is read ([`log`]);
//! - the metadata region: a 64 KiB table (`metadata`) of items — block size, virtual size,
//!   sector sizes, parent locator ([`metadata`]);
//! - the BAT: one 64-bit entry per payload block (state in bits 0..2, file offset in MiB in
//!   bits 20..63), with a sector bitmap entry after every chunk ratio payload entries
//!   ([`bat`]).
//!
//! Differencing disks (HasParent, parent locator, partially present blocks) are refused.

pub mod bat;
pub mod header;
pub mod log;
pub mod metadata;
pub mod region;
pub mod rules;

use std::sync::Arc;

use crate::disk::{Disk, Extent, ExtentKind, ExtentList, ImageInfo, check_read, clip_end};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{Source, read_exact_at};
use crate::limits::Limits;

const F: Format = Format::Vhdx;

/// An opened VHDX image.
pub struct VhdxDisk {
    /// The file, or the file with its log replayed over it.
    src: Source,
    md: metadata::Metadata,
    bat: bat::Bat,
    log_replayed: bool,
}

/// Opens the image: headers, log replay, region table, metadata and the whole BAT are read
/// and validated here.
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    Ok(Box::new(VhdxDisk::open(src, limits)?))
}

impl VhdxDisk {
    /// Opens and inspects `src`.
    pub fn open(src: Source, limits: &Limits) -> Result<Self> {
        let hdr = header::read_current(&*src)?;
        let (src, log_replayed): (Source, bool) = match log::replay(&src, &hdr, limits)? {
            Some(ov) => (Arc::new(ov), true),
            None => (src, false),
        };
        let regions = region::read_regions(&*src, limits)?;
        let log = region::Region {
            offset: hdr.log_offset,
            length: hdr.log_length,
        };
        if hdr.log_length > 0
            && [regions.bat, regions.metadata]
                .iter()
                .any(|r| r.overlaps(&log))
        {
            return Err(DiskError::corrupt_rule(
                F,
                rules::LOG_OVER_REGION,
                "the log overlaps the BAT or the metadata region",
            ));
        }
        let md = metadata::read_metadata(&*src, regions.metadata, limits)?;
        // Payload blocks may lie in none of these.
        let reserved = [
            region::Region {
                offset: 0,
                length: region::HEADER_SECTION,
            },
            log,
            regions.bat,
            regions.metadata,
        ];
        let bat = bat::read_bat(&*src, regions.bat, &md, &reserved, limits)?;
        Ok(VhdxDisk {
            src,
            md,
            bat,
            log_replayed,
        })
    }

    /// Calls `f(start, end, host)` for each run of the virtual range `[offset, end)`, where
    /// `host` is the file offset of `start` when allocated; host-contiguous blocks merge.
    fn walk(
        &self,
        offset: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, Option<u64>) -> Result<()>,
    ) -> Result<()> {
        let bs = self.md.block_size;
        let mut at = offset;
        let mut run: Option<(u64, u64, Option<u64>)> = None;
        while at < end {
            let blk = at / bs;
            let in_blk = at % bs;
            let stop = (blk + 1).saturating_mul(bs).min(end);
            let host = self.bat.host(blk).map(|h| h + in_blk);
            let extends = run.is_some_and(|(s, e, h)| match (h, host) {
                (None, None) => true,
                (Some(hs), Some(hn)) => hs + (e - s) == hn,
                _ => false,
            });
            if extends {
                if let Some(r) = run.as_mut() {
                    r.1 = stop;
                }
            } else {
                if let Some((s, e, h)) = run.take() {
                    f(s, e, h)?;
                }
                run = Some((at, stop, host));
            }
            at = stop;
        }
        if let Some((s, e, h)) = run {
            f(s, e, h)?;
        }
        Ok(())
    }
}

impl Disk for VhdxDisk {
    fn info(&self) -> ImageInfo {
        let fixed = self.bat.all_present && self.md.leave_blocks_allocated;
        ImageInfo {
            format: F,
            subformat: Some(if fixed { "fixed" } else { "dynamic" }.to_string()),
            virtual_size: self.md.virtual_size,
            cluster_size: Some(self.md.block_size),
            details: vec![
                (
                    "logical_sector_size".into(),
                    self.md.logical_sector_size.to_string(),
                ),
                (
                    "physical_sector_size".into(),
                    self.md.physical_sector_size.to_string(),
                ),
                (
                    "log_replayed".into(),
                    if self.log_replayed { "yes" } else { "no" }.into(),
                ),
            ],
        }
    }

    fn virtual_size(&self) -> u64 {
        self.md.virtual_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_read(F, offset, buf.len(), self.md.virtual_size)?;
        let end = offset + buf.len() as u64;
        self.walk(offset, end, |s, e, host| {
            // `s..e` lies inside `offset..end`, so these fit in `buf`.
            let a = usize::try_from(s - offset).unwrap_or(0);
            let b = usize::try_from(e - offset).unwrap_or(0);
            let dst = &mut buf[a..b];
            match host {
                None => dst.fill(0),
                Some(h) => read_exact_at(&*self.src, dst, h).map_err(|err| {
                    DiskError::io(format!("reading vhdx payload at file offset {h}"), err)
                })?,
            }
            Ok(())
        })
    }

    fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, length, self.md.virtual_size);
        let mut list = ExtentList::new();
        if end <= offset {
            return Ok(Vec::new());
        }
        self.walk(offset, end, |s, e, host| {
            let kind = if host.is_some() {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            };
            list.push(s, e - s, kind);
            Ok(())
        })?;
        Ok(list.into_vec())
    }
}

#[cfg(test)]
mod rule_tests;
#[cfg(test)]
mod tests;
