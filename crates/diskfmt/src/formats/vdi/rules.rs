//! The named rules of the VirtualBox VDI format (header version 1.1, as VirtualBox and qemu
//! write it) that vmie checks when it opens an image; a broken one refuses the image with its
//! name. docs/formats.md lists each with the field it is about and what vmie does.

/// The header version is not 1.1.
pub const VERSION: &str = "version-unsupported";
/// The header size is below the version 1.1 header's.
pub const HEADER_SIZE: &str = "header-size-invalid";
/// The image type is not 1 (normal), 2 (fixed), 3 (undo) or 4 (differencing).
pub const IMAGE_TYPE: &str = "image-type-invalid";
/// The sector size is not 512.
pub const SECTOR_SIZE: &str = "sector-size-unsupported";
/// The block map or data offset is not sector aligned.
pub const UNALIGNED: &str = "offset-unaligned";
/// The block map starts inside the header.
pub const MAP_OVER_HEADER: &str = "block-map-overlaps-header";
/// The data area starts inside the block map.
pub const DATA_OVER_MAP: &str = "data-overlaps-block-map";
/// The block size is not a power of two from 512 bytes to 64 MiB.
pub const BLOCK_SIZE: &str = "block-size-invalid";
/// The extra data per block is above 1 MiB or not a whole number of sectors.
pub const BLOCK_EXTRA: &str = "block-extra-invalid";
/// The blocks of the map cover less than the disk size.
pub const MAP_TOO_SMALL: &str = "block-map-too-small";
/// More blocks allocated than the image has.
pub const ALLOCATED_COUNT: &str = "allocated-count-invalid";
/// The allocated block count disagrees with the block map.
pub const ALLOCATED_MISMATCH: &str = "allocated-count-mismatch";
/// A block map entry names a data block past the image's blocks.
pub const INDEX_OUT_OF_RANGE: &str = "block-index-out-of-range";
/// Two block map entries name one data block.
pub const BLOCK_USED_TWICE: &str = "block-used-twice";

/// Every rule, for the documentation test.
pub const ALL: &[&str] = &[
    VERSION,
    HEADER_SIZE,
    IMAGE_TYPE,
    SECTOR_SIZE,
    UNALIGNED,
    MAP_OVER_HEADER,
    DATA_OVER_MAP,
    BLOCK_SIZE,
    BLOCK_EXTRA,
    MAP_TOO_SMALL,
    ALLOCATED_COUNT,
    ALLOCATED_MISMATCH,
    INDEX_OUT_OF_RANGE,
    BLOCK_USED_TWICE,
];
