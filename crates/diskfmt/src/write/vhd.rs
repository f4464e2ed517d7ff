//! VHD writer (Microsoft "Virtual Hard Disk Image Format Specification"), dynamic (default) or
//! fixed (`subformat=fixed`).
//!
//! Dynamic: footer copy at 0, dynamic header at 512, BAT at 1536, then one 2 MiB block per
//! non-zero block (a sector bitmap of all ones, then the data), and the footer at the end.
//! Fixed: the raw disk (sparse) followed by the footer.
//!
//! The creator application is `vmie`, so qemu-img (and our reader) size the disk by the
//! footer's current size, not the CHS geometry: the virtual size survives a round trip.

use std::sync::atomic::AtomicU64;

use super::{Output, WriteOptions, WriteStats, Writer, no_compression, ordered_grains};
use crate::convert::{ConvertOptions, convert_to_raw};
use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::formats::vhd::header::{
    DYN_COOKIE, DYN_HEADER_SIZE, FOOTER_COOKIE, FOOTER_SIZE, MAX_GEOMETRY_SECTORS, MAX_SECTORS,
    SECTOR, TYPE_DYNAMIC, TYPE_FIXED, checksum,
};

const F: Format = Format::Vhd;
/// Block size of dynamic disks: 2 MiB, what Hyper-V, Virtual PC and qemu use.
const BLOCK: u64 = 2 << 20;
/// Seconds from the Unix epoch to 2000-01-01, the VHD timestamp origin.
const VHD_EPOCH: u64 = 946_684_800;

/// The spec's CHS algorithm ("Appendix: CHS Calculation").
fn geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / SECTOR).min(MAX_GEOMETRY_SECTORS);
    let (mut spt, mut heads, mut cth);
    if total >= 65_535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        spt = 17;
        cth = total / spt;
        heads = cth.div_ceil(1024);
        if heads < 4 {
            heads = 4;
        }
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
    }
    let cyl = u16::try_from(cth / heads).unwrap_or(u16::MAX);
    (
        cyl,
        u8::try_from(heads).unwrap_or(16),
        u8::try_from(spt).unwrap_or(255),
    )
}

fn footer(size: u64, disk_type: u32, data_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    f[0..8].copy_from_slice(FOOTER_COOKIE);
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ts = u32::try_from(now.saturating_sub(VHD_EPOCH)).unwrap_or(0);
    f[24..28].copy_from_slice(&ts.to_be_bytes());
    f[28..32].copy_from_slice(b"vmie"); // creator application
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // creator version
    f[36..40].copy_from_slice(b"Wi2k"); // creator host OS
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    let (c, h, s) = geometry(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    let mut uuid = [0u8; 16];
    super::random_id(&mut uuid);
    f[68..84].copy_from_slice(&uuid);
    let sum = checksum(&f, 64);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

fn io(e: std::io::Error) -> DiskError {
    DiskError::io("writing the VHD", e)
}

/// The VHD writer (dynamic, or fixed with `subformat=fixed`).
#[derive(Debug, Clone, Copy)]
pub struct VhdWriter;

impl Writer for VhdWriter {
    fn description(&self) -> &'static str {
        "Microsoft VHD, dynamic (`-o subformat=fixed` for fixed)"
    }

    fn check_compression(&self, compression: &str) -> Result<()> {
        Err(no_compression(F, compression, "VHD has no compression"))
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

/// Writes `disk` as a VHD.
pub fn write(
    disk: &dyn Disk,
    out: &dyn Output,
    opts: &WriteOptions,
    progress: &AtomicU64,
) -> Result<WriteStats> {
    let size = disk.virtual_size().div_ceil(SECTOR) * SECTOR;
    if size / SECTOR > MAX_SECTORS {
        return Err(DiskError::unsupported(
            F,
            format!("a {size}-byte disk: VHD holds at most 2040 GiB; use VHDX"),
        ));
    }
    match opts.subformat.as_deref().unwrap_or("dynamic") {
        "fixed" => {
            let c = ConvertOptions {
                threads: opts.threads,
                ..ConvertOptions::default()
            };
            convert_to_raw(disk, out, &c, progress)?;
            out.set_size(size).map_err(io)?;
            out.put_at(&footer(size, TYPE_FIXED, u64::MAX), size)
                .map_err(io)?;
            Ok(WriteStats {
                virtual_size: size,
                file_size: size + SECTOR,
            })
        }
        "dynamic" => write_dynamic(disk, out, size, opts, progress),
        other => Err(DiskError::unsupported(
            F,
            format!("subformat {other:?}; use dynamic or fixed"),
        )),
    }
}

fn write_dynamic(
    disk: &dyn Disk,
    out: &dyn Output,
    size: u64,
    opts: &WriteOptions,
    progress: &AtomicU64,
) -> Result<WriteStats> {
    let blocks = size.div_ceil(BLOCK);
    let bat_offset = SECTOR + DYN_HEADER_SIZE as u64;
    let bat_bytes = (blocks * 4).div_ceil(SECTOR) * SECTOR;
    let mut bat = vec![0xffu8; usize::try_from(bat_bytes).unwrap_or(0)];

    let foot = footer(size, TYPE_DYNAMIC, SECTOR);
    let mut dh = [0u8; DYN_HEADER_SIZE];
    dh[0..8].copy_from_slice(DYN_COOKIE);
    dh[8..16].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: unused
    dh[16..24].copy_from_slice(&bat_offset.to_be_bytes());
    dh[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    dh[28..32].copy_from_slice(&u32::try_from(blocks).unwrap_or(u32::MAX).to_be_bytes());
    dh[32..36].copy_from_slice(&u32::try_from(BLOCK).unwrap_or(0).to_be_bytes());
    let sum = checksum(&dh, 36);
    dh[36..40].copy_from_slice(&sum.to_be_bytes());

    out.put_at(&foot, 0).map_err(io)?;
    out.put_at(&dh, SECTOR).map_err(io)?;
    let mut pos = bat_offset + bat_bytes;
    let bitmap = [0xffu8; 512];
    let mut sink = |bi: u64, data: &[u8]| -> Result<()> {
        let sector = u32::try_from(pos / SECTOR)
            .map_err(|_| DiskError::invalid(F, "the VHD grew past 2 TiB"))?;
        let i = usize::try_from(bi).unwrap_or(usize::MAX) * 4;
        if let Some(slot) = bat.get_mut(i..i + 4) {
            slot.copy_from_slice(&sector.to_be_bytes());
        }
        out.put_at(&bitmap, pos).map_err(io)?;
        // Zero 4 KiB runs inside a block stay holes in the file.
        for (a, b) in crate::convert::nonzero_runs(data, 4096) {
            out.put_at(&data[a..b], pos + SECTOR + a as u64)
                .map_err(io)?;
        }
        pos += SECTOR + data.len() as u64;
        Ok(())
    };
    ordered_grains(
        disk,
        BLOCK,
        opts.threads,
        progress,
        &|_: &[u8]| Ok(None),
        &mut sink,
    )?;
    out.put_at(&foot, pos).map_err(io)?;
    out.put_at(&bat, bat_offset).map_err(io)?;
    let end = pos + SECTOR;
    Ok(WriteStats {
        virtual_size: size,
        file_size: end,
    })
}
