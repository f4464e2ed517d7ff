//! Raw disks and ISO 9660 images: the file is the disk.

use crate::disk::{Disk, Extent, ExtentKind, ExtentList, ImageInfo, check_read, clip_end};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{Source, read_exact_at};
use crate::limits::Limits;
use crate::text::printable;

/// Opens a raw disk (the registry's reader for raw).
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    Ok(Box::new(RawDisk::open(src, limits)?))
}

/// Opens an ISO 9660 image (the registry's reader for ISO).
pub fn open_iso(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    Ok(Box::new(RawDisk::open_iso(src, limits)?))
}

/// A raw (or ISO 9660) image.
pub struct RawDisk {
    src: Source,
    size: u64,
    format: Format,
    details: Vec<(String, String)>,
}

impl RawDisk {
    /// Opens `src` as a raw disk.
    pub fn open(src: Source, limits: &Limits) -> Result<Self> {
        Self::open_as(src, Format::Raw, limits)
    }

    /// Opens `src` as an ISO 9660 image (read as raw data, with its volume label reported).
    pub fn open_iso(src: Source, limits: &Limits) -> Result<Self> {
        let mut pvd = [0u8; 2048];
        read_exact_at(&*src, &mut pvd, 0x8000)
            .map_err(|e| DiskError::io("reading the ISO 9660 volume descriptor", e))?;
        if &pvd[1..6] != b"CD001" {
            return Err(DiskError::invalid(
                Format::Iso,
                "no CD001 volume descriptor at sector 16",
            ));
        }
        // An ISO hybrid (isohybrid, xorriso --protective-msdos-label or an appended GPT)
        // also carries a partition table in the 32 KiB system area, so that it boots from a
        // disk too: it is still read as raw data, and reported.
        let mut lba01 = [0u8; 1024];
        read_exact_at(&*src, &mut lba01, 0)
            .map_err(|e| DiskError::io("reading the ISO 9660 system area", e))?;
        let hybrid = match (&lba01[510..512], &lba01[512..520]) {
            ([0x55, 0xaa], b"EFI PART") => Some("gpt"),
            ([0x55, 0xaa], _) => Some("mbr"),
            _ => None,
        };
        let mut disk = Self::open_as(src, Format::Iso, limits)?;
        if let Some(table) = hybrid {
            disk.details.push(("hybrid".into(), table.into()));
        }
        // ECMA-119 8.4.6: volume identifier, 32 d-characters at byte 40 of the PVD.
        if pvd[0] == 1 {
            let label = printable(&pvd[40..72]);
            disk.details
                .push(("volume_id".into(), label.trim_end().to_string()));
        }
        Ok(disk)
    }

    fn open_as(src: Source, format: Format, limits: &Limits) -> Result<Self> {
        let size = limits.check_virtual_size(src.size())?;
        Ok(RawDisk {
            src,
            size,
            format,
            details: Vec::new(),
        })
    }
}

impl Disk for RawDisk {
    fn info(&self) -> ImageInfo {
        ImageInfo {
            format: self.format,
            subformat: (self.format == Format::Iso).then(|| "iso9660".to_string()),
            virtual_size: self.size,
            cluster_size: None,
            details: self.details.clone(),
        }
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_read(self.format, offset, buf.len(), self.size)?;
        read_exact_at(&*self.src, buf, offset).map_err(|e| {
            DiskError::io(
                format!("reading {} data at offset {offset}", self.format),
                e,
            )
        })
    }

    fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, length, self.size);
        if end <= offset {
            return Ok(Vec::new());
        }
        // Holes of a sparse file read as zeros: report them, so they are never copied.
        let mut list = ExtentList::new();
        let mut at = offset;
        while at < end {
            let next = self.src.next_data(at).map_err(|e| {
                DiskError::io(
                    format!("finding data in the {} file at {at}", self.format),
                    e,
                )
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
        Ok(list.into_vec())
    }
}
