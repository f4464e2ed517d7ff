//! The sparse extent header (VMware "Virtual Disk Format 1.1", "Hosted Sparse Extent
//! Header"), the stream-optimized markers and the footer of a streamOptimized file.
//!
//! All fields are little-endian; the header fills one 512-byte sector:
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! |      0 |    4 | magic `"KDMV"`                                           |
//! |      4 |    4 | version (1, 2 or 3)                                      |
//! |      8 |    4 | flags                                                    |
//! |     12 |    8 | capacity (sectors)                                       |
//! |     20 |    8 | grainSize (sectors)                                      |
//! |     28 |    8 | descriptorOffset (sectors)                               |
//! |     36 |    8 | descriptorSize (sectors)                                 |
//! |     44 |    4 | numGTEsPerGT                                             |
//! |     48 |    8 | rgdOffset (sectors)                                      |
//! |     56 |    8 | gdOffset (sectors, or `GD_AT_END`)                       |
//! |     64 |    8 | overHead (sectors)                                       |
//! |     72 |    1 | uncleanShutdown                                          |
//! |     73 |    4 | newline-detection characters `'\n' ' ' '\r' '\n'`        |
//! |     77 |    2 | compressAlgorithm (0 none, 1 deflate)                    |

use super::rules;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::le;

const F: Format = Format::Vmdk;

/// Size of a VMDK sector in bytes (the unit of every offset and size in the header).
pub const SECTOR: u64 = 512;

/// Magic of a hosted sparse extent, `"KDMV"` at byte 0.
pub const MAGIC: &[u8; 4] = b"KDMV";

/// `gdOffset` value of a streamOptimized file whose grain directory is only known from the
/// footer at the end of the file (spec 1.1, "Stream-Optimized Compressed Sparse Extents").
pub const GD_AT_END: u64 = u64::MAX;

/// Flag bit 0: the newline-detection characters are valid.
pub const FLAG_NEWLINE_TEST: u32 = 1;
/// Flag bit 1: a redundant grain directory is kept at `rgdOffset`.
pub const FLAG_REDUNDANT_GT: u32 = 1 << 1;
/// Flag bit 2: a grain table entry of 1 means "zeroed grain" (newer VMware products).
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: the file contains stream-optimized markers.
pub const FLAG_MARKERS: u32 = 1 << 17;

/// Largest grain accepted, in sectors (128 MiB). The spec only requires a power of two
/// greater than 8 sectors (VMware writes 128 sectors = 64 KiB); this bound keeps one grain's
/// decompression buffer and one read small.
pub const MAX_GRAIN_SECTORS: u64 = 128 * 1024 * 1024 / SECTOR;

/// Largest number of grain table entries per grain table. The spec fixes it at 512 and
/// qemu refuses anything larger.
pub const MAX_GTES_PER_GT: u64 = 512;

/// The text-mode newline-detection bytes at offset 73 when [`FLAG_NEWLINE_TEST`] is set.
const NEWLINE_CHARS: [u8; 4] = [b'\n', b' ', b'\r', b'\n'];

/// Compression algorithm: none.
pub const COMPRESSION_NONE: u16 = 0;
/// Compression algorithm: deflate, zlib-wrapped (RFC 1950).
pub const COMPRESSION_DEFLATE: u16 = 1;

/// A parsed sparse extent header. Values are raw (sectors); validation happens in
/// [`SparseHeader::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version, 1..=3.
    pub version: u32,
    /// Flag bits.
    pub flags: u32,
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Grain size in sectors (power of two, at most [`MAX_GRAIN_SECTORS`]).
    pub grain_sectors: u64,
    /// Embedded descriptor offset in sectors (0: none).
    pub descriptor_offset: u64,
    /// Embedded descriptor size in sectors.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u64,
    /// Redundant grain directory, sectors.
    pub rgd_offset: u64,
    /// Grain directory, sectors (or [`GD_AT_END`]).
    pub gd_offset: u64,
    /// Metadata overhead in sectors.
    pub overhead: u64,
    /// The image was not closed cleanly.
    pub unclean_shutdown: bool,
    /// Compression algorithm ([`COMPRESSION_NONE`] or [`COMPRESSION_DEFLATE`]).
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parses and validates one header sector. `what` names it in errors ("header",
    /// "footer header").
    pub fn parse(b: &[u8], what: &str) -> Result<Self> {
        if b.len() < 512 || &b[0..4] != MAGIC {
            return Err(DiskError::invalid(F, format!("{what} has no KDMV magic")));
        }
        let h = SparseHeader {
            version: le::u32(b, 4),
            flags: le::u32(b, 8),
            capacity: le::u64(b, 12),
            grain_sectors: le::u64(b, 20),
            descriptor_offset: le::u64(b, 28),
            descriptor_size: le::u64(b, 36),
            gtes_per_gt: u64::from(le::u32(b, 44)),
            rgd_offset: le::u64(b, 48),
            gd_offset: le::u64(b, 56),
            overhead: le::u64(b, 64),
            unclean_shutdown: b[72] != 0,
            compress_algorithm: le::u16(b, 77),
        };
        h.check(b, what)?;
        Ok(h)
    }

    /// Checks every field of the header sector `b` (named `what` in errors).
    fn check(&self, b: &[u8], what: &str) -> Result<()> {
        let h = self;
        if !(1..=3).contains(&h.version) {
            return Err(DiskError::unsupported(
                F,
                format!(
                    "{what} has version {}; versions 1 to 3 are supported",
                    h.version
                ),
            ));
        }
        if h.flags & FLAG_NEWLINE_TEST != 0 && b[73..77] != NEWLINE_CHARS {
            return Err(DiskError::corrupt_rule(
                F,
                rules::NEWLINES_MANGLED,
                format!(
                    "the newline-detection bytes of the {what} are altered: the file was mangled by a text-mode (ASCII) transfer; transfer it again in binary mode"
                ),
            ));
        }
        if h.grain_sectors == 0
            || !h.grain_sectors.is_power_of_two()
            || h.grain_sectors > MAX_GRAIN_SECTORS
        {
            return Err(DiskError::invalid_rule(
                F,
                rules::GRAIN_SIZE,
                format!(
                    "{what} grain size of {} sectors is not a power of two between 1 and {MAX_GRAIN_SECTORS}",
                    h.grain_sectors
                ),
            ));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES_PER_GT {
            return Err(DiskError::invalid_rule(
                F,
                rules::GTES_PER_GT,
                format!(
                    "{what} has {} entries per grain table; 1 to {MAX_GTES_PER_GT} are valid",
                    h.gtes_per_gt
                ),
            ));
        }
        match h.compress_algorithm {
            COMPRESSION_NONE | COMPRESSION_DEFLATE => {}
            a => {
                return Err(DiskError::unsupported(
                    F,
                    format!("compression algorithm {a} (only deflate is known)"),
                ));
            }
        }
        if h.compressed() != (h.flags & FLAG_COMPRESSED != 0) {
            return Err(DiskError::invalid_rule(
                F,
                rules::COMPRESSION_FLAG,
                format!(
                    "{what}: compression algorithm {} but flag bit 16 (compressed grains) is {}",
                    h.compress_algorithm,
                    if h.flags & FLAG_COMPRESSED != 0 {
                        "set"
                    } else {
                        "clear"
                    }
                ),
            ));
        }
        if (h.descriptor_offset == 0) != (h.descriptor_size == 0) {
            return Err(DiskError::invalid_rule(
                F,
                rules::DESCRIPTOR_LOCATION,
                format!(
                    "{what}: descriptor at sector {} of {} sectors (both or neither must be 0)",
                    h.descriptor_offset, h.descriptor_size
                ),
            ));
        }
        if h.flags & FLAG_REDUNDANT_GT != 0 && h.rgd_offset == 0 {
            return Err(DiskError::invalid_rule(
                F,
                rules::RGD_MISSING,
                format!("{what}: flag bit 1 announces a redundant grain directory at sector 0"),
            ));
        }
        Ok(())
    }

    /// Whether `footer` (the header copy at the end of a stream-optimized file) describes the
    /// same disk in the fields that decide how it is read: capacity, grain size, grain table
    /// size, descriptor, compression and markers, and the grain directory unless this header
    /// defers it to the footer.
    #[must_use]
    pub fn agrees_with(&self, footer: &SparseHeader) -> bool {
        let layout = FLAG_COMPRESSED | FLAG_MARKERS;
        self.flags & layout == footer.flags & layout
            && self.capacity == footer.capacity
            && self.grain_sectors == footer.grain_sectors
            && self.descriptor_offset == footer.descriptor_offset
            && self.descriptor_size == footer.descriptor_size
            && self.gtes_per_gt == footer.gtes_per_gt
            && self.compress_algorithm == footer.compress_algorithm
            && (self.gd_offset == GD_AT_END || self.gd_offset == footer.gd_offset)
    }

    /// Grains are deflate-compressed.
    #[must_use]
    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }

    /// Grain and metadata markers are present.
    #[must_use]
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }
}

/// Size of a grain marker's header: `u64 lba`, `u32 size`, then `size` compressed bytes.
pub const GRAIN_MARKER_LEN: usize = 12;

/// Metadata marker type: end of stream.
pub const MARKER_EOS: u32 = 0;
/// Metadata marker type: footer (followed by a header copy).
pub const MARKER_FOOTER: u32 = 3;

/// A metadata marker sector `{u64 numSectors, u32 size (0), u32 type}`; `None` when `size`
/// is not 0 (then it is a grain marker).
#[must_use]
pub fn metadata_marker_type(b: &[u8]) -> Option<u32> {
    (b.len() >= 16 && le::u32(b, 8) == 0).then(|| le::u32(b, 12))
}

/// Largest compressed grain accepted: deflate can expand incompressible data a little
/// (stored blocks cost 5 bytes per 64 KiB, zlib adds 6), so allow a generous margin over the
/// grain size without letting a marker ask for an unbounded read.
#[must_use]
pub fn max_compressed_grain(grain_bytes: u64) -> u64 {
    grain_bytes + grain_bytes / 16 + 4096
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A valid monolithicSparse header built field by field.
    fn header() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(MAGIC); // magic
        b[4..8].copy_from_slice(&1u32.to_le_bytes()); // version
        b[8..12].copy_from_slice(&3u32.to_le_bytes()); // flags: newline test + redundant GT
        b[12..20].copy_from_slice(&8192u64.to_le_bytes()); // capacity: 4 MiB
        b[20..28].copy_from_slice(&128u64.to_le_bytes()); // grainSize: 64 KiB
        b[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptorOffset
        b[36..44].copy_from_slice(&20u64.to_le_bytes()); // descriptorSize
        b[44..48].copy_from_slice(&512u32.to_le_bytes()); // numGTEsPerGT
        b[48..56].copy_from_slice(&21u64.to_le_bytes()); // rgdOffset
        b[56..64].copy_from_slice(&26u64.to_le_bytes()); // gdOffset
        b[64..72].copy_from_slice(&128u64.to_le_bytes()); // overHead
        b[73..77].copy_from_slice(b"\n \r\n"); // newline detection
        b
    }

    #[test]
    fn test_header_valid_parses() {
        let h = SparseHeader::parse(&header(), "header").unwrap();
        assert_eq!(h.capacity, 8192);
        assert_eq!(h.grain_sectors, 128);
        assert!(!h.compressed());
    }

    #[test]
    fn test_header_text_mode_newlines_corrupt() {
        let mut b = header();
        b[73..77].copy_from_slice(b"\n \n\n");
        let e = SparseHeader::parse(&b, "header").unwrap_err();
        assert!(e.to_string().contains("text-mode"), "{e}");
    }

    #[test]
    fn test_header_bad_grain_invalid() {
        for g in [0u64, 3, MAX_GRAIN_SECTORS * 2] {
            let mut b = header();
            b[20..28].copy_from_slice(&g.to_le_bytes());
            assert_eq!(
                SparseHeader::parse(&b, "header").unwrap_err().reason_code(),
                "invalid-format"
            );
        }
    }

    #[test]
    fn test_header_unknown_compression_unsupported() {
        let mut b = header();
        b[77..79].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            SparseHeader::parse(&b, "header").unwrap_err().reason_code(),
            "unsupported"
        );
    }
}
