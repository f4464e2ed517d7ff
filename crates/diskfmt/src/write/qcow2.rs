//! qcow2 version 3 writer, uncompressed or compressed (`compression=zlib|zstd`).
//!
//! ```text
//! cluster 0        header (v3, 112 bytes, no extensions but the end marker)
//! clusters 1..     L1 table
//! then             data clusters in disk order; each L2 table (8192 entries, 512 MiB of
//!                  disk) follows the clusters it maps, written once it is complete
//! at the end       refcount blocks covering every cluster of the file (themselves
//!                  included), then the refcount table
//! ```
//!
//! Clusters are 64 KiB and refcounts 16 bits, as qemu-img makes them. Zero clusters stay
//! unallocated. Compressed clusters are packed byte after byte as qemu packs them; each host
//! cluster's refcount counts the compressed clusters touching it, so `qemu-img check` finds
//! the image consistent. zlib data is raw deflate with a 4 KiB window (qemu inflates with
//! `windowBits = -12`); a cluster that does not shrink is stored uncompressed. Memory is one L2
//! table plus one 16-bit refcount per cluster of output (32 KiB per GiB written).

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;

use super::behind::WriteBehind;
use super::{Output, WriteOptions, WriteStats, Writer, ordered_grains};
use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::formats::qcow2::header::{INCOMPAT_COMPRESSION, MAGIC};

const F: Format = Format::Qcow2;
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Entries of an L2 table (one cluster of 8-byte entries).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcounts per refcount block (16-bit refcounts).
const REFS_PER_BLOCK: u64 = CLUSTER / 2;
const HEADER_LEN: u32 = 112;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// Bit where the sector count of a compressed cluster descriptor starts: 62 - (bits - 8).
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
/// zstd level (qemu uses the library default).
const ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Zlib,
    Zstd,
}

thread_local! {
    static DEFLATE: RefCell<Option<flate2::Compress>> = const { RefCell::new(None) };
}

fn deflate(cluster: &[u8]) -> Result<Vec<u8>> {
    DEFLATE.with(|c| {
        let mut c = c.borrow_mut();
        let comp = c.get_or_insert_with(|| {
            flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, 12)
        });
        comp.reset();
        let mut out = Vec::with_capacity(cluster.len());
        let status = comp
            .compress_vec(cluster, &mut out, flate2::FlushCompress::Finish)
            .map_err(|e| DiskError::invalid(F, format!("compressing a cluster failed: {e}")))?;
        // Output space runs out only when the data does not shrink: store it as it is.
        if status != flate2::Status::StreamEnd {
            return Ok(cluster.to_vec());
        }
        Ok(out)
    })
}

/// The stored form of a cluster: `None` when it is stored as it is.
fn compress(kind: Compression, cluster: &[u8]) -> Result<Option<Vec<u8>>> {
    let out = match kind {
        Compression::None => return Ok(None),
        Compression::Zlib => deflate(cluster)?,
        Compression::Zstd => zstd::bulk::compress(cluster, ZSTD_LEVEL)
            .map_err(|e| DiskError::invalid(F, format!("compressing a cluster failed: {e}")))?,
    };
    Ok((out.len() < cluster.len()).then_some(out))
}

fn io(e: std::io::Error) -> DiskError {
    DiskError::io("writing the qcow2 image", e)
}

/// The header cluster: version 3, 64 KiB clusters, the L1 table in cluster 1, the refcount
/// table of `table` clusters at `table_at`, 16-bit refcounts, the compression type.
fn header(
    size: u64,
    l1_size: u32,
    table_at: u64,
    table: u64,
    kind: Compression,
) -> Result<Vec<u8>> {
    let mut h = vec![0u8; usize_of(CLUSTER)?];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[36..40].copy_from_slice(&l1_size.to_be_bytes());
    h[40..48].copy_from_slice(&CLUSTER.to_be_bytes());
    h[48..56].copy_from_slice(&table_at.to_be_bytes());
    let table_u32 = u32::try_from(table).map_err(|_| DiskError::invalid(F, "refcount table"))?;
    h[56..60].copy_from_slice(&table_u32.to_be_bytes());
    let incompat = if kind == Compression::Zstd {
        INCOMPAT_COMPRESSION
    } else {
        0
    };
    h[72..80].copy_from_slice(&incompat.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount order: 16-bit
    h[100..104].copy_from_slice(&HEADER_LEN.to_be_bytes());
    h[104] = u8::from(kind == Compression::Zstd); // compression type
    // Header extensions end right after the header (type 0, length 0: already zero).
    Ok(h)
}

/// Refcount blocks and table clusters needed to cover `used` clusters and themselves.
fn refcount_sizes(used: u64) -> (u64, u64) {
    let (mut blocks, mut table) = (1u64, 1u64);
    loop {
        let total = used + blocks + table;
        let b = total.div_ceil(REFS_PER_BLOCK);
        let t = (b * 8).div_ceil(CLUSTER);
        if b <= blocks && t <= table {
            return (blocks, table);
        }
        blocks = blocks.max(b);
        table = table.max(t);
    }
}

fn usize_of(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| DiskError::invalid(F, "table too large for memory"))
}

/// The file being appended to: position, refcounts per host cluster and the current L2 table.
struct Out {
    w: WriteBehind,
    pos: u64,
    refs: Vec<u16>,
    l1: Vec<u64>,
    l2: Vec<u64>,
    l2_index: Option<u64>,
}

impl Out {
    /// Appends the refcount blocks, then the refcount table, covering every cluster written
    /// and themselves; returns the table's offset and size in clusters.
    fn write_refcounts(&mut self) -> Result<(u64, u64)> {
        let used = self.pos / CLUSTER;
        let (blocks, table) = refcount_sizes(used);
        let blocks_at = self.pos;
        let table_at = blocks_at + blocks * CLUSTER;
        for c in used..used + blocks + table {
            self.add_ref(c)?;
        }
        let mut refs = self.refs.iter();
        let mut block = Vec::with_capacity(usize_of(CLUSTER)?);
        for _ in 0..blocks {
            block.clear();
            for _ in 0..REFS_PER_BLOCK {
                block.extend_from_slice(&refs.next().copied().unwrap_or(0).to_be_bytes());
            }
            self.w.write_all(&block).map_err(io)?;
        }
        let mut t = Vec::with_capacity(usize_of(table * CLUSTER)?);
        for i in 0..blocks {
            t.extend_from_slice(&(blocks_at + i * CLUSTER).to_be_bytes());
        }
        t.resize(usize_of(table * CLUSTER)?, 0);
        self.w.write_all(&t).map_err(io)?;
        Ok((table_at, table))
    }

    fn add_ref(&mut self, cluster: u64) -> Result<()> {
        let i = usize_of(cluster)?;
        if self.refs.len() <= i {
            self.refs.resize(i + 1, 0);
        }
        self.refs[i] = self.refs[i]
            .checked_add(1)
            .ok_or_else(|| DiskError::invalid(F, "refcount overflow"))?;
        Ok(())
    }

    fn align(&mut self) -> Result<()> {
        let aligned = self.pos.div_ceil(CLUSTER) * CLUSTER;
        if aligned != self.pos {
            let pad = usize_of(aligned - self.pos)?;
            self.w.write_all(&vec![0u8; pad]).map_err(io)?;
            self.pos = aligned;
        }
        Ok(())
    }

    /// Appends whole clusters of `data` (a multiple of the cluster size) at a cluster boundary
    /// and returns their offset; each gets refcount 1.
    fn append_clusters(&mut self, data: &[u8]) -> Result<u64> {
        self.align()?;
        let at = self.pos;
        self.w.write_all(data).map_err(io)?;
        self.pos += data.len() as u64;
        for c in at / CLUSTER..self.pos.div_ceil(CLUSTER) {
            self.add_ref(c)?;
        }
        Ok(at)
    }

    /// Writes the current L2 table, if any, and records it in L1.
    fn flush_l2(&mut self) -> Result<()> {
        let Some(idx) = self.l2_index.take() else {
            return Ok(());
        };
        let mut b = Vec::with_capacity(usize_of(CLUSTER)?);
        for e in &self.l2 {
            b.extend_from_slice(&e.to_be_bytes());
        }
        let at = self.append_clusters(&b)?;
        self.l1[usize_of(idx)?] = at | COPIED;
        self.l2.iter_mut().for_each(|e| *e = 0);
        Ok(())
    }

    fn put(&mut self, ci: u64, data: &[u8]) -> Result<()> {
        let idx = ci / L2_ENTRIES;
        if self.l2_index != Some(idx) {
            self.flush_l2()?;
            self.l2_index = Some(idx);
        }
        let entry = if data.len() as u64 == CLUSTER {
            self.append_clusters(data)? | COPIED
        } else {
            // Compressed: packed right after the previous bytes, refcounted per host cluster
            // it touches (qemu counts one reference per compressed cluster).
            let at = self.pos;
            self.w.write_all(data).map_err(io)?;
            self.pos += data.len() as u64;
            let end = at + data.len() as u64;
            for c in at / CLUSTER..end.div_ceil(CLUSTER) {
                self.add_ref(c)?;
            }
            let extra_sectors = ((end - 1) >> 9) - (at >> 9);
            COMPRESSED | (extra_sectors << CSIZE_SHIFT) | at
        };
        self.l2[usize_of(ci % L2_ENTRIES)?] = entry;
        Ok(())
    }
}

/// The compression asked for (`-o compression=`).
fn compression_of(asked: Option<&str>) -> Result<Compression> {
    match asked {
        None | Some("none") => Ok(Compression::None),
        Some("zlib" | "deflate") => Ok(Compression::Zlib),
        Some("zstd") => Ok(Compression::Zstd),
        Some(other) => Err(DiskError::unsupported(
            F,
            format!("compression {other:?}; use zlib, zstd or none"),
        )),
    }
}

/// The qcow2 version 3 writer.
#[derive(Debug, Clone, Copy)]
pub struct Qcow2Writer;

impl Writer for Qcow2Writer {
    fn description(&self) -> &'static str {
        "QEMU qcow2 v3 (`-o compression=zlib|zstd` to compress)"
    }

    fn check_compression(&self, compression: &str) -> Result<()> {
        compression_of(Some(compression)).map(|_| ())
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

/// Writes `disk` as a qcow2 v3 image.
pub fn write(
    disk: &dyn Disk,
    out: &dyn Output,
    opts: &WriteOptions,
    progress: &AtomicU64,
) -> Result<WriteStats> {
    let kind = compression_of(opts.compression.as_deref())?;
    if let Some(s) = opts.subformat.as_deref() {
        return Err(DiskError::unsupported(
            F,
            format!("subformat {s:?}: qcow2 has none (version 3 is written)"),
        ));
    }
    let size = disk.virtual_size();
    let clusters = size.div_ceil(CLUSTER);
    let l1_entries = clusters.div_ceil(L2_ENTRIES);
    let l1_size =
        u32::try_from(l1_entries).map_err(|_| DiskError::unsupported(F, "a disk this large"))?;
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);

    let mut o = Out {
        // Clusters are gathered into 2 MiB writes (one syscall per cluster costs more than
        // the copy), written by I/O threads of their own while the clusters go on.
        w: WriteBehind::new(out, CLUSTER * (1 + l1_clusters)).map_err(io)?,
        pos: 0,
        refs: Vec::new(),
        l1: vec![0; usize_of(l1_entries)?],
        l2: vec![0; usize_of(L2_ENTRIES)?],
        l2_index: None,
    };
    o.pos = CLUSTER * (1 + l1_clusters);
    for c in 0..1 + l1_clusters {
        o.add_ref(c)?;
    }

    ordered_grains(
        disk,
        CLUSTER,
        opts.threads,
        progress,
        &move |c: &[u8]| compress(kind, c),
        &mut |ci, data| o.put(ci, data),
    )?;
    o.flush_l2()?;
    o.align()?;

    let (table_at, table) = o.write_refcounts()?;
    let end = table_at + table * CLUSTER;
    let l1 =
        o.l1.iter()
            .flat_map(|e| e.to_be_bytes())
            .collect::<Vec<u8>>();
    o.w.finish().map_err(io)?;
    // The header and the L1 table last: a file cut short before here is not a valid image.
    let h = header(size, l1_size, table_at, table, kind)?;
    out.put_at(&l1, CLUSTER).map_err(io)?;
    out.put_at(&h, 0).map_err(io)?;
    out.set_size(end).map_err(io)?;
    Ok(WriteStats {
        virtual_size: size,
        file_size: end,
    })
}
