//! VMDK stream-optimized writer: the format VMware exports and the EC2 export produces.
//!
//! ```text
//! sector 0        sparse extent header (gdOffset = GD_AT_END)
//! sectors 1..=20  embedded descriptor (createType "streamOptimized")
//! sector 128…     for each non-zero 64 KiB grain, in order: grain marker {lba, size} and the
//!                 zlib-compressed grain, padded to a sector; after the grains of each grain
//!                 table's 32 MiB: a GT marker and the grain table (512 entries)
//! then            GD marker and grain directory, footer marker and a copy of the header with
//!                 the real gdOffset, end-of-stream marker
//! ```
//!
//! Grains are compressed on every worker thread; one thread appends them in order, so memory
//! stays bounded whatever the disk size. Zero grains are not written (unallocated).

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;

use super::behind::WriteBehind;
use super::{Output, WriteOptions, WriteStats, Writer, no_compression, ordered_grains};
use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::format::Format;

const F: Format = Format::Vmdk;
const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB), as VMware and qemu write.
const GRAIN_SECTORS: u64 = 128;
/// Grain table entries (spec: 512).
const GTES: u64 = 512;
/// [`GTES`] as stored in the header and as a table length.
const GTES_U32: u32 = 512;
const GTES_USIZE: usize = 512;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain.
const OVERHEAD: u64 = 128;
const GD_AT_END: u64 = u64::MAX;
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// zlib level: libdeflate's 6 compresses better than zlib's default at several times its speed.
const LEVEL: i32 = 6;

thread_local! {
    static COMPRESSOR: RefCell<Option<libdeflater::Compressor>> = const { RefCell::new(None) };
}

fn compress(grain: &[u8]) -> Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let comp = match c.as_mut() {
            Some(comp) => comp,
            None => {
                let lvl = libdeflater::CompressionLvl::new(LEVEL)
                    .map_err(|_| DiskError::invalid(F, "compression level"))?;
                c.insert(libdeflater::Compressor::new(lvl))
            }
        };
        let mut out = vec![0u8; comp.zlib_compress_bound(grain.len())];
        let n = comp
            .zlib_compress(grain, &mut out)
            .map_err(|e| DiskError::invalid(F, format!("compressing a grain failed: {e}")))?;
        out.truncate(n);
        Ok(out)
    })
}

/// Geometry as VMware and qemu report it: 16 heads for IDE, 255 for SCSI adapters; 63 sectors.
fn geometry(sectors: u64, adapter: &str) -> (u64, u64, u64) {
    let heads = if adapter == "ide" { 16 } else { 255 };
    let cylinders = (sectors / (heads * 63)).min(16383);
    (cylinders, heads, 63)
}

fn descriptor(sectors: u64, adapter: &str, name: &str) -> Result<Vec<u8>> {
    let mut cid = [0u8; 4];
    getrandom_cid(&mut cid);
    let (c, h, s) = geometry(sectors, adapter);
    let text = format!(
        "# Disk DescriptorFile\nversion=1\nCID={:08x}\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n\
         # Extent description\nRW {sectors} SPARSE \"{name}\"\n\n\
         # The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{c}\"\nddb.geometry.heads = \"{h}\"\n\
         ddb.geometry.sectors = \"{s}\"\nddb.adapterType = \"{adapter}\"\n",
        u32::from_le_bytes(cid)
    );
    let mut b = text.into_bytes();
    let room = usize::try_from(DESCRIPTOR_SECTORS * SECTOR).unwrap_or(0);
    if b.len() > room {
        return Err(DiskError::invalid(
            F,
            "the descriptor does not fit its sectors",
        ));
    }
    b.resize(room, 0);
    Ok(b)
}

/// A CID that differs between images (time and address entropy; it is an identifier, not a
/// secret).
fn getrandom_cid(out: &mut [u8; 4]) {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let v = h.finish();
    out.copy_from_slice(&v.to_le_bytes()[..4]);
}

fn header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes()); // version
    let flags: u32 = 1 | (1 << 16) | (1 << 17); // newline test, compressed grains, markers
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&GTES_U32.to_le_bytes());
    h[48..56].copy_from_slice(&0u64.to_le_bytes()); // no redundant GD
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    h[72] = 0; // clean
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&1u16.to_le_bytes()); // deflate
    h
}

fn marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

struct Out {
    w: WriteBehind,
    sector: u64,
}

impl Out {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w
            .write_all(b)
            .map_err(|e| DiskError::io("writing the VMDK", e))?;
        let pad = (SECTOR - b.len() as u64 % SECTOR) % SECTOR;
        if pad > 0 {
            let zeros = [0u8; 512];
            self.w
                .write_all(&zeros[..usize::try_from(pad).unwrap_or(0)])
                .map_err(|e| DiskError::io("writing the VMDK", e))?;
        }
        self.sector += (b.len() as u64).div_ceil(SECTOR);
        Ok(())
    }

    fn table(&mut self, kind: u32, entries: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.put(&marker((bytes.len() as u64).div_ceil(SECTOR), kind))?;
        self.put(&bytes)
    }
}

fn sector_u32(sector: u64) -> Result<u32> {
    u32::try_from(sector).map_err(|_| {
        DiskError::invalid(
            F,
            "the stream-optimized VMDK would exceed 2 TiB of compressed data",
        )
    })
}

/// The stream-optimized VMDK writer.
#[derive(Debug, Clone, Copy)]
pub struct VmdkWriter;

impl Writer for VmdkWriter {
    fn description(&self) -> &'static str {
        "VMware VMDK, stream-optimized (what VMware and the EC2 export produce)"
    }

    fn check_compression(&self, compression: &str) -> Result<()> {
        match compression {
            "zlib" | "deflate" => Ok(()),
            c => Err(no_compression(
                F,
                c,
                "stream-optimized VMDK is always deflate-compressed",
            )),
        }
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

/// Writes `disk` as a stream-optimized VMDK.
pub fn write(
    disk: &dyn Disk,
    out: &dyn Output,
    opts: &WriteOptions,
    progress: &AtomicU64,
) -> Result<WriteStats> {
    if let Some(sub) = opts.subformat.as_deref()
        && sub != "streamOptimized"
    {
        return Err(DiskError::unsupported(
            F,
            format!("writing subformat {sub:?}; vmie writes streamOptimized VMDKs"),
        ));
    }
    let adapter = opts.adapter_type.as_deref().unwrap_or("ide");
    if !matches!(adapter, "ide" | "lsilogic" | "buslogic" | "legacyESX") {
        return Err(DiskError::unsupported(
            F,
            format!("adapter type {adapter:?}"),
        ));
    }
    let name = opts
        .name
        .as_deref()
        .map(|n| {
            n.chars()
                .filter(|c| c.is_ascii_graphic() && !matches!(c, '"' | '/' | '\\'))
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "disk.vmdk".to_string());
    let size = disk.virtual_size();
    let capacity = size.div_ceil(SECTOR);
    let grain = GRAIN_SECTORS * SECTOR;
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let gts = grains.div_ceil(GTES);
    let mut gd: Vec<u32> =
        vec![0; usize::try_from(gts).map_err(|_| DiskError::invalid(F, "too many grain tables"))?];

    // The grains are written by I/O threads of their own while the next ones are compressed.
    let mut o = Out {
        w: WriteBehind::new(out, 0).map_err(|e| DiskError::io("writing the VMDK", e))?,
        sector: 0,
    };
    o.put(&header(capacity, GD_AT_END))?;
    o.put(&descriptor(capacity, adapter, &name)?)?;
    let zeros = vec![0u8; usize::try_from((OVERHEAD - o.sector) * SECTOR).unwrap_or(0)];
    o.put(&zeros)?;

    let mut gt: Vec<u32> = vec![0; GTES_USIZE];
    let mut gt_index: Option<u64> = None;
    let mut sink = |gi: u64, data: &[u8]| -> Result<()> {
        let t = gi / GTES;
        if gt_index != Some(t) {
            if let Some(prev) = gt_index {
                write_gt(&mut o, &mut gt, prev, &mut gd)?;
            }
            gt_index = Some(t);
        }
        let at = sector_u32(o.sector)?;
        let mut m = Vec::with_capacity(12 + data.len());
        m.extend_from_slice(&(gi * GRAIN_SECTORS).to_le_bytes());
        m.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        m.extend_from_slice(data);
        o.put(&m)?;
        gt[usize::try_from(gi % GTES).unwrap_or(0)] = at;
        Ok(())
    };
    ordered_grains(
        disk,
        grain,
        opts.threads,
        progress,
        &|g: &[u8]| compress(g).map(Some),
        &mut sink,
    )?;
    if let Some(prev) = gt_index {
        write_gt(&mut o, &mut gt, prev, &mut gd)?;
    }
    o.table(MARKER_GD, &gd)?;
    let gd_sector = o.sector - (gd.len() as u64 * 4).div_ceil(SECTOR);
    o.put(&marker(1, MARKER_FOOTER))?;
    o.put(&header(capacity, gd_sector))?;
    o.put(&marker(0, MARKER_EOS))?;
    o.w.finish()
        .map_err(|e| DiskError::io("writing the VMDK", e))?;
    Ok(WriteStats {
        virtual_size: capacity * SECTOR,
        file_size: o.sector * SECTOR,
    })
}

/// Appends grain table `idx` (with its marker) and records it in the grain directory.
fn write_gt(o: &mut Out, gt: &mut [u32], idx: u64, gd: &mut [u32]) -> Result<()> {
    o.put(&marker(GTES * 4 / SECTOR, MARKER_GT))?;
    let at = sector_u32(o.sector)?;
    let bytes: Vec<u8> = gt.iter().flat_map(|e| e.to_le_bytes()).collect();
    o.put(&bytes)?;
    if let Some(slot) = gd.get_mut(usize::try_from(idx).unwrap_or(usize::MAX)) {
        *slot = at;
    }
    gt.iter_mut().for_each(|e| *e = 0);
    Ok(())
}
