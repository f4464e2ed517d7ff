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

use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::be;
use crate::limits::Limits;

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

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (type 0, the default).
    Zlib,
    /// A zstd frame (type 1).
    Zstd,
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
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compression of compressed clusters.
    pub compression: Compression,
    /// Header length in bytes.
    pub header_length: u32,
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

    /// Parses and checks the header in `b` (the start of the file, at most one cluster, at
    /// least 72 bytes), refusing backing files, encryption, external data files and unknown
    /// incompatible features.
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
        let version = be::u32(b, 4);
        if version != 2 && version != 3 {
            return Err(DiskError::unsupported(
                F,
                format!("qcow2 version {version}"),
            ));
        }
        let backing_offset = be::u64(b, 8);
        let backing_size = be::u32(b, 16);
        if backing_offset != 0 || backing_size != 0 {
            return Err(Refusal::BackingFile { format: F }.into());
        }
        let cluster_bits = be::u32(b, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(DiskError::invalid(
                F,
                format!(
                    "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
            ));
        }
        let size = limits.check_virtual_size(be::u64(b, 24))?;
        if be::u32(b, 32) != 0 {
            return Err(Refusal::Encrypted { format: F }.into());
        }
        let l1_size = be::u32(b, 36);
        let l1_table_offset = be::u64(b, 40);

        let (mut incompatible, mut header_length, mut compression) =
            (0u64, V2_HEADER_LEN, Compression::Zlib);
        if version == 3 {
            if b.len() < V3_MIN_HEADER_LEN as usize {
                return Err(DiskError::invalid(F, "the version 3 header is truncated"));
            }
            incompatible = be::u64(b, 72);
            header_length = be::u32(b, 100);
            if header_length < V3_MIN_HEADER_LEN
                || header_length as usize > b.len()
                || !header_length.is_multiple_of(8)
            {
                return Err(DiskError::invalid(
                    F,
                    format!("header_length {header_length} is invalid"),
                ));
            }
            if incompatible & INCOMPAT_DATA_FILE != 0 {
                return Err(Refusal::ExternalDataFile.into());
            }
            let unknown = incompatible & !INCOMPAT_KNOWN;
            if unknown != 0 {
                return Err(Refusal::UnknownIncompatibleFeatures {
                    format: F,
                    bits: unknown,
                }
                .into());
            }
            if incompatible & INCOMPAT_CORRUPT != 0 {
                return Err(DiskError::corrupt(
                    F,
                    "qemu marked this image corrupt; repair a copy with `qemu-img check -r all` and import that",
                ));
            }
            if incompatible & INCOMPAT_COMPRESSION != 0 {
                if header_length <= 104 {
                    return Err(DiskError::invalid(
                        F,
                        "compression type bit set without the field",
                    ));
                }
                compression = match b[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => return Err(DiskError::unsupported(F, format!("compression type {t}"))),
                };
            } else if header_length > 104 && b[104] != 0 {
                return Err(DiskError::invalid(
                    F,
                    "a compression type is set without its feature bit",
                ));
            }
            if incompatible & INCOMPAT_EXTL2 != 0 && cluster_bits < 14 {
                return Err(DiskError::invalid(
                    F,
                    "extended L2 entries need clusters of 16 KiB or more",
                ));
            }
        }
        let h = Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            incompatible,
            compression,
            header_length,
        };
        h.check_extensions(b)?;
        Ok(h)
    }

    /// Walks the header extensions, refusing those that point outside the image itself.
    fn check_extensions(&self, b: &[u8]) -> Result<()> {
        let mut off = if self.version == 2 {
            V2_HEADER_LEN as usize
        } else {
            (self.header_length as usize).next_multiple_of(8)
        };
        for _ in 0..MAX_EXTENSIONS {
            // A header that ends at the cluster end without a terminator is accepted, as qemu
            // does for version 2 images without extensions.
            if off + 8 > b.len() {
                return Ok(());
            }
            let kind = be::u32(b, off);
            let len = be::u32(b, off + 4) as usize;
            match kind {
                EXT_END => return Ok(()),
                EXT_CRYPTO => return Err(Refusal::Encrypted { format: F }.into()),
                EXT_DATA_FILE => return Err(Refusal::ExternalDataFile.into()),
                _ => {}
            }
            let next = off
                .checked_add(8)
                .and_then(|o| o.checked_add(len.next_multiple_of(8)))
                .filter(|n| *n <= b.len())
                .ok_or_else(|| {
                    DiskError::invalid(
                        F,
                        format!("header extension {kind:#x} runs past the first cluster"),
                    )
                })?;
            off = next;
        }
        Err(DiskError::invalid(F, "too many header extensions"))
    }
}
