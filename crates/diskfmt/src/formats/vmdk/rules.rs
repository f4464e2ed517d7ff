//! The named rules of the VMDK specification (VMware "Virtual Disk Format 1.1") that vmie
//! checks when it opens an image; a broken one refuses the image with its name.
//! docs/formats.md lists each with the field it is about and what vmie does.

/// The newline-detection bytes were changed by a text-mode transfer.
pub const NEWLINES_MANGLED: &str = "newline-characters-mangled";
/// `grainSize` is not a power of two, or is 0 or above the limit.
pub const GRAIN_SIZE: &str = "grain-size-invalid";
/// `numGTEsPerGT` is 0 or above 512.
pub const GTES_PER_GT: &str = "gtes-per-gt-invalid";
/// Compression algorithm deflate without flag bit 16, or the flag without the algorithm.
pub const COMPRESSION_FLAG: &str = "compression-flag-mismatch";
/// One of `descriptorOffset` / `descriptorSize` is 0 and the other is not.
pub const DESCRIPTOR_LOCATION: &str = "descriptor-location-invalid";
/// `gdOffset` is 0 although the disk has grain tables.
pub const GD_OFFSET_ZERO: &str = "gd-offset-zero";
/// Flag bit 1 (redundant grain directory) with `rgdOffset` 0.
pub const RGD_MISSING: &str = "redundant-gd-missing";
/// The footer of a stream-optimized file disagrees with its header.
pub const FOOTER_MISMATCH: &str = "footer-header-mismatch";
/// More grain tables than fit in the file (the grain directory is corrupt).
pub const GRAIN_TABLES_OVERLAP: &str = "grain-tables-overlap";
/// A grain starts inside the metadata (before `overHead`).
pub const GRAIN_BEFORE_OVERHEAD: &str = "grain-before-overhead";
/// A grain marker names another grain's sector.
pub const MARKER_LBA: &str = "grain-marker-lba-mismatch";
/// A grain marker's compressed size is 0 or above what one grain can compress to.
pub const MARKER_SIZE: &str = "grain-marker-size-invalid";
/// A descriptor line that is not a comment, a `key=value` or a well-formed extent line.
pub const DESCRIPTOR_LINE: &str = "descriptor-line-invalid";
/// An extent line whose access is not RW, RDONLY or NOACCESS.
pub const EXTENT_ACCESS: &str = "extent-access-unknown";
/// An extent line whose type is not one the specification defines.
pub const EXTENT_TYPE: &str = "extent-type-unknown";
/// An extent line whose file name is missing, unquoted or unterminated.
pub const EXTENT_NAME: &str = "extent-name-invalid";
/// A descriptor with no extent line.
pub const NO_EXTENT: &str = "descriptor-no-extent";
/// An embedded descriptor without `createType`.
pub const CREATE_TYPE_MISSING: &str = "create-type-missing";
/// `createType` disagrees with the header (streamOptimized needs compressed grains with
/// markers, monolithicSparse needs neither).
pub const CREATE_TYPE_MISMATCH: &str = "create-type-mismatch";
/// The sparse extent's size differs from the header's capacity.
pub const EXTENT_SIZE: &str = "extent-size-mismatch";
/// The image's own extent is NOACCESS.
pub const EXTENT_NOACCESS: &str = "extent-noaccess";
/// `version` of the descriptor is not 1, 2 or 3.
pub const DESCRIPTOR_VERSION: &str = "descriptor-version-invalid";
/// `CID` or `parentCID` is not 8 hexadecimal digits.
pub const CID: &str = "descriptor-cid-invalid";

/// Every rule, for the documentation test.
pub const ALL: &[&str] = &[
    NEWLINES_MANGLED,
    GRAIN_SIZE,
    GTES_PER_GT,
    COMPRESSION_FLAG,
    DESCRIPTOR_LOCATION,
    GD_OFFSET_ZERO,
    RGD_MISSING,
    FOOTER_MISMATCH,
    GRAIN_TABLES_OVERLAP,
    GRAIN_BEFORE_OVERHEAD,
    MARKER_LBA,
    MARKER_SIZE,
    DESCRIPTOR_LINE,
    EXTENT_ACCESS,
    EXTENT_TYPE,
    EXTENT_NAME,
    NO_EXTENT,
    CREATE_TYPE_MISSING,
    CREATE_TYPE_MISMATCH,
    EXTENT_SIZE,
    EXTENT_NOACCESS,
    DESCRIPTOR_VERSION,
    CID,
];
