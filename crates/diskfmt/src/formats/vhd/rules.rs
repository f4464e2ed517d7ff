//! The named rules of the VHD specification ("Virtual Hard Disk Image Format Specification",
//! Microsoft, 2006) that vmie checks when it opens an image; a broken one refuses the image
//! with its name. docs/formats.md lists each with the field it is about and what vmie does.

/// The footer's checksum does not match its bytes.
pub const FOOTER_CHECKSUM: &str = "footer-checksum-mismatch";
/// The footer's features field has bits the specification reserves (above bit 1).
pub const FEATURES: &str = "footer-features-unknown";
/// The file format version's major number is not 1.
pub const VERSION: &str = "version-unsupported";
/// The disk type is not 2 (fixed), 3 (dynamic) or 4 (differencing).
pub const DISK_TYPE: &str = "disk-type-invalid";
/// The saved-state byte is neither 0 nor 1.
pub const SAVED_STATE: &str = "saved-state-invalid";
/// A fixed disk's data before the footer is longer than its current size.
pub const FIXED_SIZE: &str = "fixed-size-mismatch";
/// The footer copy at the start of a dynamic disk describes another disk than the footer.
pub const FOOTER_COPY: &str = "footer-copy-mismatch";
/// The dynamic disk header lacks its `cxsparse` cookie.
pub const DYNAMIC_COOKIE: &str = "dynamic-header-cookie-missing";
/// The dynamic disk header's checksum does not match its bytes.
pub const DYNAMIC_CHECKSUM: &str = "dynamic-header-checksum-mismatch";
/// The dynamic disk header's version is not 1.x.
pub const DYNAMIC_VERSION: &str = "dynamic-header-version-unsupported";
/// The block size is not a power of two from 512 bytes to 256 MiB.
pub const BLOCK_SIZE: &str = "block-size-invalid";
/// The BAT is not sector aligned.
pub const BAT_UNALIGNED: &str = "bat-unaligned";
/// The BAT has fewer entries than the virtual size needs.
pub const BAT_TOO_SMALL: &str = "bat-too-small";
/// A block overlaps the footer copy, the dynamic header or the BAT.
pub const BLOCK_OVER_METADATA: &str = "block-overlaps-metadata";
/// Two blocks overlap.
pub const BLOCKS_OVERLAP: &str = "blocks-overlap";

/// Every rule, for the documentation test.
pub const ALL: &[&str] = &[
    FOOTER_CHECKSUM,
    FEATURES,
    VERSION,
    DISK_TYPE,
    SAVED_STATE,
    FIXED_SIZE,
    FOOTER_COPY,
    DYNAMIC_COOKIE,
    DYNAMIC_CHECKSUM,
    DYNAMIC_VERSION,
    BLOCK_SIZE,
    BAT_UNALIGNED,
    BAT_TOO_SMALL,
    BLOCK_OVER_METADATA,
    BLOCKS_OVERLAP,
];
