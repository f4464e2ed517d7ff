//! The qcow2 header and its extensions (qemu `docs/interop/qcow2.txt`; all numbers
//! big-endian).
//!
//! ```text
//!   0 magic "QFI\xfb"          4 version (2 or 3)
//!   8 backing_file_offset     16 backing_file_size
//!  20 cluster_bits            24 size (virtual, bytes)
//!  32 crypt_method            36 l1_size (entries)
//!  40 l1_table_offset         48 refcount_table_offset
//!  56 refcount_table_clusters 60 nb_snapshots
//!  64 snapshots_offset
//!  version 3 only:
//!  72 incompatible_features   80 compatible_features
//!  88 autoclear_features      96 refcount_order
//! 100 header_length          104 compression_type (if header_length > 104)
//! ```
//!
//! Header extensions follow the header (at `header_length`; 72 for version 2), each
//! `type: u32, length: u32, data` padded to 8 bytes, until type 0, all inside the first
//! cluster.

use super::rules;
use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::be;
use crate::limits::{Limits, MIB, check_in_file};

const F: Format = Format::Qcow2;

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Smallest cluster: 512 bytes (spec: cluster_bits >= 9).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster: 2 MiB (spec: cluster_bits <= 21, as qemu enforces).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Header length of version 2 images.
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest version 3 header length.
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Header extensions read at most (the spec bounds them by the first cluster; this bounds
/// the loop on hostile input).
pub const MAX_EXTENSIONS: usize = 1024;

/// Incompatible feature bit 0: the image was not closed cleanly (refcounts may be stale;
/// reading is unaffected).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: qemu found the image inconsistent.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is valid.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Every incompatible bit this reader understands.
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Extension: end of the list.
pub const EXT_END: u32 = 0;
/// Extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Extension: full disk encryption header (LUKS).
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// Extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Extension: persistent dirty bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Longest backing file format name (qemu keeps it in 16 bytes with its terminator).
pub const MAX_BACKING_FORMAT: u32 = 15;

/// Autoclear bit 0: the bitmaps extension is consistent with the image.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear bit 1: the external data file is a raw image (needs a data file).
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Largest active or snapshot L1 table: 32 MiB (qemu `QCOW_MAX_L1_SIZE`).
pub const MAX_L1_BYTES: u64 = 32 * MIB;
/// Largest refcount table: 8 MiB (qemu `QCOW_MAX_REFTABLE_SIZE`).
pub const MAX_REFTABLE_BYTES: u64 = 8 * MIB;
/// Most internal snapshots (qemu `QCOW_MAX_SNAPSHOTS`).
pub const MAX_SNAPSHOTS: u32 = 65_536;
/// Largest refcount order: 64-bit refcounts (spec: `refcount_order` <= 6).
pub const MAX_REFCOUNT_ORDER: u32 = 6;
/// Most persistent bitmaps (qemu `QCOW2_MAX_BITMAPS`).
pub const MAX_BITMAPS: u32 = 65_535;
/// Largest bitmap directory: 64 MiB (qemu `QCOW2_MAX_BITMAP_DIRECTORY_SIZE`).
pub const MAX_BITMAP_DIRECTORY: u64 = 64 * MIB;
/// Length of the bitmaps extension's data (spec: 24 bytes).
const BITMAPS_EXT_LEN: u32 = 24;

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (type 0, the default).
    Zlib,
    /// A zstd frame (type 1).
    Zstd,
}

/// The bitmaps header extension (only kept when autoclear bit 0 says it is current).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitmaps {
    /// Number of bitmaps.
    pub count: u32,
    /// Size of the bitmap directory in bytes.
    pub directory_size: u64,
    /// Offset of the bitmap directory.
    pub directory_offset: u64,
}

/// The parsed, checked header.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// L1 entries.
    pub l1_size: u32,
    /// L1 table offset in the file.
    pub l1_table_offset: u64,
    /// Refcount table offset in the file.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Snapshot table offset in the file.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits (4 for version 2).
    pub refcount_order: u32,
    /// Compression of compressed clusters.
    pub compression: Compression,
    /// Header length in bytes.
    pub header_length: u32,
    /// The bitmaps extension, when present and current.
    pub bitmaps: Option<Bitmaps>,
}

fn invalid(rule: &'static str, reason: impl Into<String>) -> DiskError {
    DiskError::invalid_rule(F, rule, reason)
}

impl Header {
    /// Cluster size in bytes.
    #[must_use]
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// Whether L2 entries are 128-bit with a subcluster bitmap.
    #[must_use]
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    /// L1 entries needed to map the virtual size.
    #[must_use]
    pub fn l1_entries_needed(&self) -> u64 {
        let entry_size: u64 = if self.extended_l2() { 16 } else { 8 };
        let per_l2 = self.cluster_size() / entry_size;
        // cluster_bits <= 21: one L1 entry covers at most 2^21 / 8 * 2^21 = 2^39 bytes.
        self.size.div_ceil(per_l2 * self.cluster_size())
    }

    /// Parses and checks the header in `b` (the start of the file, at most one cluster, at
    /// least 72 bytes): the fields, the feature bits, the header extensions and the geometry
    /// of the metadata tables (their places in the file are checked by
    /// [`Header::check_in_file`]). Refuses backing files, encryption, external data files and
    /// unknown incompatible features.
    pub fn parse(b: &[u8], limits: &Limits) -> Result<Header> {
        if b.len() < V2_HEADER_LEN as usize {
            return Err(DiskError::invalid(
                F,
                "the file is shorter than a qcow2 header",
            ));
        }
        if b[..4] != MAGIC {
            return Err(DiskError::invalid(F, "no qcow2 magic"));
        }
        let mut h = Self::version_2_fields(b, limits)?;
        if h.version == 3 {
            h.version_3_fields(b)?;
        }
        h.read_extensions(b)?;
        h.check_tables()?;
        Ok(h)
    }

    /// The fields every version has (bytes 0..72).
    fn version_2_fields(b: &[u8], limits: &Limits) -> Result<Header> {
        let version = be::u32(b, 4);
        if version != 2 && version != 3 {
            return Err(DiskError::unsupported(
                F,
                format!("qcow2 version {version}"),
            ));
        }
        if be::u64(b, 8) != 0 || be::u32(b, 16) != 0 {
            return Err(Refusal::BackingFile { format: F }.into());
        }
        let cluster_bits = be::u32(b, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(invalid(
                rules::CLUSTER_BITS,
                format!(
                    "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
            ));
        }
        let size = limits.check_virtual_size(be::u64(b, 24))?;
        match be::u32(b, 32) {
            0 => {}
            1 | 2 => return Err(Refusal::Encrypted { format: F }.into()),
            m => {
                return Err(invalid(
                    rules::CRYPT_METHOD,
                    format!("crypt_method {m} is neither 0 (none), 1 (AES) nor 2 (LUKS)"),
                ));
            }
        }
        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size: be::u32(b, 36),
            l1_table_offset: be::u64(b, 40),
            refcount_table_offset: be::u64(b, 48),
            refcount_table_clusters: be::u32(b, 56),
            nb_snapshots: be::u32(b, 60),
            snapshots_offset: be::u64(b, 64),
            incompatible: 0,
            autoclear: 0,
            refcount_order: 4,
            compression: Compression::Zlib,
            header_length: V2_HEADER_LEN,
            bitmaps: None,
        })
    }

    /// The version 3 fields (bytes 72..header_length): feature bits, refcount order, header
    /// length and compression type.
    fn version_3_fields(&mut self, b: &[u8]) -> Result<()> {
        if b.len() < V3_MIN_HEADER_LEN as usize {
            return Err(DiskError::invalid(F, "the version 3 header is truncated"));
        }
        self.header_length = be::u32(b, 100);
        let hl = u64::from(self.header_length);
        if self.header_length < V3_MIN_HEADER_LEN
            || !hl.is_multiple_of(8)
            || hl > self.cluster_size()
        {
            return Err(invalid(
                rules::HEADER_LENGTH,
                format!(
                    "header_length {hl} is not a multiple of 8 from {V3_MIN_HEADER_LEN} to the cluster size"
                ),
            ));
        }
        if hl > b.len() as u64 {
            return Err(DiskError::invalid(F, "the header is truncated"));
        }
        self.incompatible = be::u64(b, 72);
        self.autoclear = be::u64(b, 88);
        self.refcount_order = be::u32(b, 96);
        if self.refcount_order > MAX_REFCOUNT_ORDER {
            return Err(invalid(
                rules::REFCOUNT_ORDER,
                format!(
                    "refcount_order {} is above {MAX_REFCOUNT_ORDER} (64-bit refcounts)",
                    self.refcount_order
                ),
            ));
        }
        self.check_incompatible_features()?;
        self.compression = self.compression_type(b)?;
        if self.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 {
            // The data file itself is refused above; the bit alone is a contradiction.
            return Err(invalid(
                rules::DATA_FILE_RAW,
                "autoclear bit 1 (raw external data) is set but there is no external data file",
            ));
        }
        Ok(())
    }

    /// Refuses an external data file, unknown incompatible features and an image qemu marked
    /// corrupt; checks extended L2 entries have subclusters of at least 512 bytes.
    fn check_incompatible_features(&self) -> Result<()> {
        if self.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Refusal::ExternalDataFile.into());
        }
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Refusal::UnknownIncompatibleFeatures {
                format: F,
                bits: unknown,
            }
            .into());
        }
        if self.incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(DiskError::corrupt_rule(
                F,
                rules::MARKED_CORRUPT,
                "qemu marked this image corrupt; repair a copy with `qemu-img check -r all` and import that",
            ));
        }
        if self.extended_l2() && self.cluster_bits < 14 {
            return Err(invalid(
                rules::EXTL2_CLUSTERS,
                "extended L2 entries need clusters of 16 KiB or more",
            ));
        }
        Ok(())
    }

    /// The compression type at byte 104: it must agree with incompatible bit 3 (a type other
    /// than zlib needs the bit; the bit needs the field).
    fn compression_type(&self, b: &[u8]) -> Result<Compression> {
        let has_field = self.header_length > 104;
        let kind = if has_field { b[104] } else { 0 };
        let bit = self.incompatible & INCOMPAT_COMPRESSION != 0;
        if bit && !has_field {
            return Err(invalid(
                rules::COMPRESSION_BIT,
                "compression type bit set without the field",
            ));
        }
        if kind != 0 && !bit {
            return Err(invalid(
                rules::COMPRESSION_BIT,
                "a compression type is set without its feature bit",
            ));
        }
        match kind {
            0 => Ok(Compression::Zlib),
            1 => Ok(Compression::Zstd),
            t => Err(DiskError::unsupported(F, format!("compression type {t}"))),
        }
    }

    /// Walks the header extensions, refusing those that point outside the image itself and
    /// checking the bitmaps extension.
    fn read_extensions(&mut self, b: &[u8]) -> Result<()> {
        let mut off = (self.header_length as usize).next_multiple_of(8);
        for _ in 0..MAX_EXTENSIONS {
            // A header that ends at the cluster end without a terminator is accepted, as qemu
            // does for version 2 images without extensions.
            if off + 8 > b.len() {
                return Ok(());
            }
            let kind = be::u32(b, off);
            let len = be::u32(b, off + 4);
            let data_at = off + 8;
            let next = data_at
                .checked_add((len as usize).next_multiple_of(8))
                .filter(|n| *n <= b.len())
                .ok_or_else(|| {
                    invalid(
                        rules::EXTENSION_PAST_CLUSTER,
                        format!("header extension {kind:#x} runs past the first cluster"),
                    )
                })?;
            match kind {
                EXT_END => return Ok(()),
                EXT_CRYPTO => return Err(Refusal::Encrypted { format: F }.into()),
                EXT_DATA_FILE => return Err(Refusal::ExternalDataFile.into()),
                EXT_BACKING_FORMAT if len > MAX_BACKING_FORMAT => {
                    return Err(invalid(
                        rules::BACKING_FORMAT_LENGTH,
                        format!(
                            "the backing format name is {len} bytes, above {MAX_BACKING_FORMAT}"
                        ),
                    ));
                }
                EXT_BITMAPS => self.bitmaps_extension(&b[data_at..next], len)?,
                _ => {}
            }
            off = next;
        }
        Err(invalid(
            rules::TOO_MANY_EXTENSIONS,
            format!("more than {MAX_EXTENSIONS} header extensions"),
        ))
    }

    /// The bitmaps extension: `nb_bitmaps: u32, reserved: u32, directory size: u64,
    /// directory offset: u64`. Ignored (as the spec says) unless autoclear bit 0 is set.
    fn bitmaps_extension(&mut self, data: &[u8], len: u32) -> Result<()> {
        if self.autoclear & AUTOCLEAR_BITMAPS == 0 {
            return Ok(());
        }
        if len != BITMAPS_EXT_LEN || be::u32(data, 4) != 0 {
            return Err(invalid(
                rules::BITMAPS_EXTENSION,
                format!(
                    "the bitmaps extension is {len} bytes (24 expected) or its reserved field is set"
                ),
            ));
        }
        let count = be::u32(data, 0);
        if count == 0 || count > MAX_BITMAPS {
            return Err(invalid(
                rules::BITMAPS_COUNT,
                format!("the bitmaps extension counts {count} bitmaps (1 to {MAX_BITMAPS})"),
            ));
        }
        let directory_size = be::u64(data, 8);
        if directory_size > MAX_BITMAP_DIRECTORY {
            return Err(invalid(
                rules::BITMAP_DIRECTORY_SIZE,
                format!("the bitmap directory is {directory_size} bytes, above 64 MiB"),
            ));
        }
        let directory_offset = be::u64(data, 16);
        if !directory_offset.is_multiple_of(self.cluster_size()) {
            return Err(invalid(
                rules::BITMAP_DIRECTORY_UNALIGNED,
                format!("the bitmap directory offset {directory_offset:#x} is not cluster aligned"),
            ));
        }
        self.bitmaps = Some(Bitmaps {
            count,
            directory_size,
            directory_offset,
        });
        Ok(())
    }

    /// The geometry of the L1, refcount and snapshot tables and the bitmap directory: sizes
    /// within the specification's (and qemu's) bounds, offsets cluster aligned (checked even
    /// for an empty table, as qemu does), no table in the header cluster.
    fn check_tables(&self) -> Result<()> {
        let cs = self.cluster_size();
        let in_header = |what: &str, offset: u64| -> Result<()> {
            if offset < cs {
                return Err(invalid(
                    rules::TABLE_IN_HEADER,
                    format!("the {what} at offset {offset:#x} lies in the header cluster"),
                ));
            }
            Ok(())
        };
        // L1.
        if !self.l1_table_offset.is_multiple_of(cs) {
            return Err(invalid(
                rules::L1_UNALIGNED,
                format!(
                    "the L1 table offset {:#x} is not cluster aligned",
                    self.l1_table_offset
                ),
            ));
        }
        if u64::from(self.l1_size) * 8 > MAX_L1_BYTES {
            return Err(invalid(
                rules::L1_TOO_LARGE,
                format!("the L1 table has {} entries, above 4 Mi", self.l1_size),
            ));
        }
        let needed = self.l1_entries_needed();
        if u64::from(self.l1_size) < needed {
            return Err(invalid(
                rules::L1_TOO_SMALL,
                format!(
                    "the L1 table has {} entries; {needed} are needed for the virtual size",
                    self.l1_size
                ),
            ));
        }
        if self.l1_size > 0 {
            in_header("L1 table", self.l1_table_offset)?;
        }
        // Refcount table.
        if self.refcount_table_clusters == 0 {
            return Err(invalid(
                rules::REFCOUNT_TABLE_EMPTY,
                "refcount_table_clusters is 0: the image has no refcount table",
            ));
        }
        if u64::from(self.refcount_table_clusters) * cs > MAX_REFTABLE_BYTES {
            return Err(invalid(
                rules::REFCOUNT_TABLE_TOO_LARGE,
                format!(
                    "the refcount table has {} clusters, above 8 MiB",
                    self.refcount_table_clusters
                ),
            ));
        }
        if !self.refcount_table_offset.is_multiple_of(cs) {
            return Err(invalid(
                rules::REFCOUNT_TABLE_UNALIGNED,
                format!(
                    "the refcount table offset {:#x} is not cluster aligned",
                    self.refcount_table_offset
                ),
            ));
        }
        in_header("refcount table", self.refcount_table_offset)?;
        // Snapshot table.
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(invalid(
                rules::TOO_MANY_SNAPSHOTS,
                format!("{} snapshots, above {MAX_SNAPSHOTS}", self.nb_snapshots),
            ));
        }
        if !self.snapshots_offset.is_multiple_of(cs) {
            return Err(invalid(
                rules::SNAPSHOT_TABLE_UNALIGNED,
                format!(
                    "the snapshot table offset {:#x} is not cluster aligned",
                    self.snapshots_offset
                ),
            ));
        }
        if self.nb_snapshots > 0 {
            in_header("snapshot table", self.snapshots_offset)?;
        }
        if let Some(bm) = self.bitmaps {
            in_header("bitmap directory", bm.directory_offset)?;
        }
        Ok(())
    }

    /// Checks the L1 table, the refcount table and the bitmap directory lie inside a file of
    /// `file_size` bytes (the snapshot table is walked entry by entry, see `snapshot`).
    pub fn check_in_file(&self, file_size: u64) -> Result<()> {
        let cs = self.cluster_size();
        check_in_file(
            F,
            "L1 table",
            self.l1_table_offset,
            u64::from(self.l1_size) * 8,
            file_size,
        )?;
        check_in_file(
            F,
            "refcount table",
            self.refcount_table_offset,
            u64::from(self.refcount_table_clusters) * cs,
            file_size,
        )?;
        if let Some(bm) = self.bitmaps {
            check_in_file(
                F,
                "bitmap directory",
                bm.directory_offset,
                bm.directory_size,
                file_size,
            )?;
        }
        Ok(())
    }
}
