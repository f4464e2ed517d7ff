//! VMware VMDK (VMware "Virtual Disk Format 1.1").
//!
//! A VMDK disk is a text descriptor plus one or more extents. vmie reads the two layouts
//! that are a single self-contained file:
//!
//! - **monolithicSparse**: a hosted sparse extent. Sector 0 holds the [`header`]; the
//!   descriptor is embedded a few sectors later; then the redundant and primary grain
//!   directories with their grain tables ([`grains`]); then the grains themselves.
//! - **streamOptimized**: the same, with every grain deflate-compressed behind a grain
//!   marker and metadata preceded by markers. When written as a stream the header's
//!   `gdOffset` is `GD_AT_END` and the real header is the copy in the footer: a footer
//!   marker, the header copy and an end-of-stream marker in the last three sectors.
//!
//! A grain table entry of 1 reads as zeros (the "zeroed grain" of newer VMware products)
//! whether or not header flag bit 2 announces it: sector 1 is always inside the header and
//! descriptor, never a grain.
//!
//! Every other layout (flat extents, split files, VMFS, raw devices) lives in several files
//! named by a [`descriptor`]; such descriptors, and any descriptor naming a parent, are
//! refused without opening any path they name.

pub mod descriptor;
pub mod grains;
pub mod header;
pub mod rules;

#[cfg(test)]
mod rule_tests;
use crate::codec::inflate_zlib;
use crate::disk::{Disk, Extent, ExtentKind, ExtentList, ImageInfo, check_read, clip_end};
use crate::error::{DiskError, Refusal, Result};
use crate::format::{Format, Unread, UnreadKind};
use crate::io::{Source, read_checked, read_checked_into};
use crate::limits::{Limits, mul, to_usize};

use descriptor::Descriptor;
use grains::{Grain, GrainMap};
use header::{
    GD_AT_END, GRAIN_MARKER_LEN, MARKER_EOS, MARKER_FOOTER, SECTOR, SparseHeader,
    max_compressed_grain, metadata_marker_type,
};

const F: Format = Format::Vmdk;

/// A sparse extent without a descriptor: one extent of a multi-file VMDK.
pub const SPLIT_EXTENT: Unread = Unread {
    name: "vmdk-extent",
    kind: UnreadKind::UnsupportedFormat,
    title: "one extent of a split (multi-file) VMDK, with no descriptor of its own",
    advice: "join the descriptor and all its extents into one file first (for example `qemu-img convert -O vmdk -o subformat=streamOptimized DISK.vmdk OUT.vmdk`) and upload that",
};

/// Largest span of the file read at once for a run of adjacent compressed grains.
const MAX_COMPRESSED_RUN: u64 = 8 << 20;

/// Opens a VMDK file: a sparse extent with its embedded descriptor, or a stand-alone text
/// descriptor (always refused: it names other files).
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    let file_size = src.size();
    let head_len = to_usize(F, "header", file_size.min(SECTOR))?;
    let head = read_checked(&*src, F, "header", 0, head_len)?;
    if head.starts_with(header::MAGIC) {
        return Ok(Box::new(VmdkDisk::open(src, &head, limits)?));
    }
    if head.starts_with(b"COWD") {
        return Err(DiskError::unsupported(
            F,
            "the ESX 2.x / VMware 3 \"COWD\" sparse format; convert it with a current VMware tool first",
        ));
    }
    // A stand-alone text descriptor: read (a bounded prefix of) it only to explain the
    // refusal.
    let len = to_usize(F, "descriptor", file_size.min(limits.max_descriptor_size))?;
    let text = read_checked(&*src, F, "descriptor", 0, len)?;
    let d = descriptor::parse(&text, limits)?;
    if d.extents.is_empty() {
        d.check_no_parent()?;
        if text.starts_with(b"# Disk DescriptorFile") || d.create_type.is_some() {
            return Err(DiskError::invalid_rule(
                F,
                rules::NO_EXTENT,
                "the descriptor has no extent line",
            ));
        }
        return Err(DiskError::invalid(
            F,
            "neither a sparse extent (no KDMV magic) nor a text descriptor",
        ));
    }
    Err(d.standalone_refusal())
}

/// An opened monolithicSparse or streamOptimized VMDK.
pub struct VmdkDisk {
    src: Source,
    virtual_size: u64,
    map: GrainMap,
    subformat: String,
    details: Vec<(String, String)>,
}

impl VmdkDisk {
    /// Opens a sparse extent: its header (or the footer's copy), its embedded descriptor, then
    /// every grain table and grain pointer.
    fn open(src: Source, head: &[u8], limits: &Limits) -> Result<Self> {
        let (h, footer) = header_and_footer(&src, head)?;
        if h.compressed() && !h.has_markers() {
            return Err(DiskError::unsupported(
                F,
                "compressed grains without grain markers",
            ));
        }
        let virtual_size = limits.check_virtual_size(mul(F, "capacity", h.capacity, SECTOR)?)?;
        let desc = embedded_descriptor(&src, &h, limits)?;
        let map = GrainMap::open(&src, &h, virtual_size, limits)?;
        Ok(VmdkDisk {
            src,
            virtual_size,
            map,
            subformat: desc
                .create_type
                .clone()
                .unwrap_or_else(|| "monolithicSparse".into()),
            details: details(&h, &desc, footer),
        })
    }

    /// Fills `buf` (virtual bytes `[offset, offset + buf.len())`) from the grains of the
    /// list `grains` (`(first grain, count, grain)` in order), uncompressed layout.
    fn read_plain(&self, buf: &mut [u8], offset: u64, grains: &[(u64, u64, Grain)]) -> Result<()> {
        let gb = self.map.grain_bytes;
        let end = offset + buf.len() as u64;
        let mut i = 0usize;
        while i < grains.len() {
            let (g, count, grain) = grains[i];
            let s = (g * gb).max(offset);
            let mut e = ((g + count) * gb).min(end);
            let Grain::Data(host) = grain else {
                buf[to_usize(F, "offset", s - offset)?..to_usize(F, "offset", e - offset)?].fill(0);
                i += 1;
                continue;
            };
            // Extend over grains stored back to back in the file.
            let mut prev = host;
            let mut j = i + 1;
            while let Some(&(g2, _, Grain::Data(h2))) = grains.get(j) {
                if h2 != prev + gb {
                    break;
                }
                prev = h2;
                e = ((g2 + 1) * gb).min(end);
                j += 1;
            }
            let file_off = host + (s - g * gb);
            let dst =
                &mut buf[to_usize(F, "offset", s - offset)?..to_usize(F, "offset", e - offset)?];
            read_checked_into(&*self.src, F, "grain", file_off, dst)?;
            i = j;
        }
        Ok(())
    }

    /// Like [`Self::read_plain`] for compressed grains: the compressed bytes of adjacent
    /// grains are read at once and each grain inflates straight into `buf`.
    fn read_compressed(
        &self,
        buf: &mut [u8],
        offset: u64,
        grains: &[(u64, u64, Grain)],
    ) -> Result<()> {
        let gb = self.map.grain_bytes;
        let gb_usize = to_usize(F, "grain size", gb)?;
        let max_step = max_compressed_grain(gb) + GRAIN_MARKER_LEN as u64 + SECTOR;
        let end = offset + buf.len() as u64;
        let mut scratch: Vec<u8> = Vec::new();
        let mut grain_buf: Vec<u8> = Vec::new();
        let mut i = 0usize;
        while i < grains.len() {
            let (g, count, grain) = grains[i];
            let Grain::Data(first_host) = grain else {
                let s = (g * gb).max(offset);
                let e = ((g + count) * gb).min(end);
                buf[to_usize(F, "offset", s - offset)?..to_usize(F, "offset", e - offset)?].fill(0);
                i += 1;
                continue;
            };
            // The run of grains whose compressed data follows one another in the file.
            let mut last = first_host;
            let mut j = i + 1;
            while let Some(&(_, _, Grain::Data(h2))) = grains.get(j) {
                if h2 <= last || h2 - last > max_step || h2 - first_host > MAX_COMPRESSED_RUN {
                    break;
                }
                last = h2;
                j += 1;
            }
            let last_size = self.map.compressed_size(&self.src, last)?;
            let span = last - first_host + GRAIN_MARKER_LEN as u64 + last_size;
            scratch.resize(to_usize(F, "compressed run", span)?, 0);
            read_checked_into(&*self.src, F, "compressed grain", first_host, &mut scratch)?;
            for &(g, _, grain) in &grains[i..j] {
                let Grain::Data(host) = grain else { continue };
                let rel = to_usize(F, "offset", host - first_host)?;
                let bad = || {
                    DiskError::corrupt(
                        F,
                        format!("the compressed grain at offset {host} is truncated"),
                    )
                };
                let marker = scratch.get(rel..rel + GRAIN_MARKER_LEN).ok_or_else(bad)?;
                let size = to_usize(F, "grain", u64::from(crate::io::le::u32(marker, 8)))?;
                let data_start = rel + GRAIN_MARKER_LEN;
                let data = scratch
                    .get(data_start..data_start.saturating_add(size))
                    .ok_or_else(bad)?;
                let gs = g * gb;
                let s = gs.max(offset);
                let e = (gs + gb).min(end);
                let dst = &mut buf
                    [to_usize(F, "offset", s - offset)?..to_usize(F, "offset", e - offset)?];
                if s == gs && e == gs + gb {
                    let n = inflate_zlib(F, data, dst)?;
                    if n != gb_usize {
                        return Err(DiskError::corrupt(
                            F,
                            format!("the grain at offset {host} inflates to {n} bytes, not {gb}"),
                        ));
                    }
                } else {
                    grain_buf.resize(gb_usize, 0);
                    let n = inflate_zlib(F, data, &mut grain_buf)?;
                    let a = to_usize(F, "offset", s - gs)?;
                    let b = to_usize(F, "offset", e - gs)?;
                    if n < b {
                        return Err(DiskError::corrupt(
                            F,
                            format!(
                                "the grain at offset {host} inflates to {n} bytes, fewer than the {b} needed"
                            ),
                        ));
                    }
                    dst.copy_from_slice(&grain_buf[a..b]);
                }
            }
            i = j;
        }
        Ok(())
    }
}

/// The header that describes the disk, and whether it came from a footer. A stream-optimized
/// file written as a stream defers the grain directory to the footer (`gdOffset` is
/// `GD_AT_END`): the footer is then required. Any footer present must agree with the header.
fn header_and_footer(src: &Source, head: &[u8]) -> Result<(SparseHeader, bool)> {
    let h = SparseHeader::parse(head, "header")?;
    let deferred = h.gd_offset == GD_AT_END;
    let footer = if deferred || h.has_markers() {
        read_footer(src, deferred)?
    } else {
        None
    };
    match footer {
        Some(f) if !h.agrees_with(&f) => Err(DiskError::invalid_rule(
            F,
            rules::FOOTER_MISMATCH,
            "the footer's copy of the header describes another disk (capacity, grains, grain tables, descriptor or compression differ)",
        )),
        Some(f) if deferred => Ok((f, true)),
        _ => Ok((h, false)),
    }
}

/// Reads the footer of a stream-optimized file: footer marker, header copy and end-of-stream
/// marker in the last three sectors. When `required` (the header defers the grain directory to
/// it) a missing footer means a truncated file; otherwise a file without one is `None`.
fn read_footer(src: &Source, required: bool) -> Result<Option<SparseHeader>> {
    let missing = || {
        DiskError::corrupt(
            F,
            "the streamOptimized footer is missing: the file is truncated (an interrupted download or upload?)",
        )
    };
    let Some(start) = src.size().checked_sub(3 * SECTOR) else {
        return if required { Err(missing()) } else { Ok(None) };
    };
    let tail = read_checked(&**src, F, "footer", start, 3 * 512)?;
    if metadata_marker_type(&tail[..512]) != Some(MARKER_FOOTER)
        || metadata_marker_type(&tail[1024..]) != Some(MARKER_EOS)
    {
        return if required { Err(missing()) } else { Ok(None) };
    }
    let h = SparseHeader::parse(&tail[512..1024], "footer header")?;
    if h.gd_offset == GD_AT_END {
        return Err(DiskError::corrupt(
            F,
            "the footer header does not say where the grain directory is",
        ));
    }
    Ok(Some(h))
}

/// Reads and checks the descriptor embedded in the sparse extent. A sparse extent with no
/// descriptor (an empty one) is one extent of a split or snapshot VMDK: a piece of a disk.
fn embedded_descriptor(src: &Source, h: &SparseHeader, limits: &Limits) -> Result<Descriptor> {
    let mut desc = Descriptor::default();
    if h.descriptor_offset != 0 {
        let len =
            limits.check_descriptor(F, mul(F, "descriptor size", h.descriptor_size, SECTOR)?)?;
        let off = mul(F, "descriptor offset", h.descriptor_offset, SECTOR)?;
        let text = read_checked(&**src, F, "embedded descriptor", off, len)?;
        desc = descriptor::parse(&text, limits)?;
    }
    if desc == Descriptor::default() {
        return Err(Refusal::Unread(SPLIT_EXTENT).into());
    }
    desc.check_embedded(h.capacity, h.compressed() && h.has_markers())?;
    Ok(desc)
}

/// What `vmie info` shows beyond the sizes.
fn details(h: &SparseHeader, desc: &Descriptor, footer: bool) -> Vec<(String, String)> {
    let mut details = vec![
        ("version".to_string(), h.version.to_string()),
        ("compressed".to_string(), h.compressed().to_string()),
    ];
    let shown = [
        ("adapter_type", &desc.adapter_type),
        ("cid", &desc.cid),
        ("descriptor_version", &desc.version),
        ("geometry", &desc.geometry),
    ];
    for (k, v) in shown {
        if let Some(v) = v {
            details.push((k.into(), descriptor::sanitize(v)));
        }
    }
    if footer {
        details.push(("footer".into(), "true".into()));
    }
    if h.unclean_shutdown {
        details.push(("unclean_shutdown".into(), "true".into()));
    }
    details
}

impl Disk for VmdkDisk {
    fn info(&self) -> ImageInfo {
        ImageInfo {
            format: F,
            subformat: Some(self.subformat.clone()),
            virtual_size: self.virtual_size,
            cluster_size: Some(self.map.grain_bytes),
            details: self.details.clone(),
        }
    }

    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_read(F, offset, buf.len(), self.virtual_size)?;
        if buf.is_empty() {
            return Ok(());
        }
        let gb = self.map.grain_bytes;
        let first = offset / gb;
        let end = (offset + buf.len() as u64).div_ceil(gb);
        let mut grains = Vec::new();
        self.map.walk(&self.src, first, end, |g, n, grain| {
            grains.push((g, n, grain));
            Ok(())
        })?;
        if self.map.compressed() {
            self.read_compressed(buf, offset, &grains)
        } else {
            self.read_plain(buf, offset, &grains)
        }
    }

    fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let end = clip_end(offset, length, self.virtual_size);
        let mut list = ExtentList::new();
        if end <= offset {
            return Ok(list.into_vec());
        }
        let gb = self.map.grain_bytes;
        self.map
            .walk(&self.src, offset / gb, end.div_ceil(gb), |g, n, grain| {
                let s = (g * gb).max(offset);
                let e = ((g + n) * gb).min(end);
                let kind = match grain {
                    Grain::Zero => ExtentKind::Zero,
                    Grain::Data(_) => ExtentKind::Data,
                };
                list.push(s, e - s, kind);
                Ok(())
            })?;
        Ok(list.into_vec())
    }
}

#[cfg(test)]
mod tests;
