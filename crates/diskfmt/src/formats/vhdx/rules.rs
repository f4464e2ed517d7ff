//! The named rules of [MS-VHDX] that vmie checks when it opens an image; a broken one refuses
//! the image with its name. docs/formats.md lists each with the field it is about and what
//! vmie does.

/// Neither header is valid (signature, checksum, versions, log alignment).
pub const HEADERS_INVALID: &str = "headers-invalid";
/// Both headers are valid with one sequence number but different contents.
pub const HEADERS_SAME_SEQUENCE: &str = "headers-same-sequence";
/// The log lies in the header section.
pub const LOG_LOCATION: &str = "log-location-invalid";
/// The log overlaps the BAT or the metadata region.
pub const LOG_OVER_REGION: &str = "log-overlaps-region";
/// Neither region table is valid (signature, checksum, entry count, alignment, overlap,
/// duplicates, the BAT and metadata regions present).
pub const REGION_TABLES_INVALID: &str = "region-tables-invalid";
/// A region the reader does not know is marked required.
pub const REGION_REQUIRED_UNKNOWN: &str = "region-required-unknown";
/// The metadata table has no `metadata` signature.
pub const METADATA_SIGNATURE: &str = "metadata-signature-missing";
/// The metadata region is smaller than its table, or the table lists more than 2047 entries.
pub const METADATA_TABLE: &str = "metadata-table-invalid";
/// A metadata item is listed twice.
pub const METADATA_DUPLICATE: &str = "metadata-item-duplicate";
/// A metadata item lies outside the metadata region or in its table.
pub const METADATA_OUT_OF_REGION: &str = "metadata-item-out-of-region";
/// Two metadata items overlap.
pub const METADATA_OVERLAP: &str = "metadata-items-overlap";
/// An unknown metadata item is marked required.
pub const METADATA_REQUIRED_UNKNOWN: &str = "metadata-required-unknown";
/// A required metadata item is missing.
pub const METADATA_MISSING: &str = "metadata-item-missing";
/// A metadata item has the wrong length.
pub const METADATA_SIZE: &str = "metadata-item-size";
/// The block size is not a power of two from 1 MiB to 256 MiB.
pub const BLOCK_SIZE: &str = "block-size-invalid";
/// A sector size is neither 512 nor 4096.
pub const SECTOR_SIZE: &str = "sector-size-invalid";
/// The virtual size is not a multiple of the logical sector size.
pub const VIRTUAL_SIZE_UNALIGNED: &str = "virtual-size-unaligned";
/// The BAT region is smaller than the BAT the virtual size needs.
pub const BAT_REGION_SMALL: &str = "bat-region-too-small";
/// A payload BAT entry has an undefined state.
pub const BAT_STATE: &str = "bat-entry-state-invalid";
/// A BAT entry has reserved bits (3..19) set.
pub const BAT_RESERVED: &str = "bat-entry-reserved-bits";
/// A sector bitmap BAT entry is neither not-present (0) nor present (6).
pub const SECTOR_BITMAP_STATE: &str = "sector-bitmap-state-invalid";
/// A block lies in the header section, the log, the BAT or the metadata region.
pub const BLOCK_OVER_METADATA: &str = "block-overlaps-metadata";
/// Two blocks overlap.
pub const BLOCKS_OVERLAP: &str = "blocks-overlap";

/// Every rule, for the documentation test.
pub const ALL: &[&str] = &[
    HEADERS_INVALID,
    HEADERS_SAME_SEQUENCE,
    LOG_LOCATION,
    LOG_OVER_REGION,
    REGION_TABLES_INVALID,
    REGION_REQUIRED_UNKNOWN,
    METADATA_SIGNATURE,
    METADATA_TABLE,
    METADATA_DUPLICATE,
    METADATA_OUT_OF_REGION,
    METADATA_OVERLAP,
    METADATA_REQUIRED_UNKNOWN,
    METADATA_MISSING,
    METADATA_SIZE,
    BLOCK_SIZE,
    SECTOR_SIZE,
    VIRTUAL_SIZE_UNALIGNED,
    BAT_REGION_SMALL,
    BAT_STATE,
    BAT_RESERVED,
    SECTOR_BITMAP_STATE,
    BLOCK_OVER_METADATA,
    BLOCKS_OVERLAP,
];
