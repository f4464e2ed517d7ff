//! The named rules of the qcow2 specification (qemu `docs/interop/qcow2.txt`) that vmie checks
//! when it opens an image; a broken one refuses the image with its name. docs/formats.md lists
//! each with the field it is about and what vmie does.

/// `cluster_bits` is outside 9..=21.
pub const CLUSTER_BITS: &str = "cluster-bits-out-of-range";
/// `crypt_method` is neither 0, 1 (AES) nor 2 (LUKS).
pub const CRYPT_METHOD: &str = "crypt-method-unknown";
/// `header_length` is below 104, not a multiple of 8, or larger than a cluster.
pub const HEADER_LENGTH: &str = "header-length-invalid";
/// `refcount_order` is above 6 (refcounts wider than 64 bits).
pub const REFCOUNT_ORDER: &str = "refcount-order-too-large";
/// Incompatible bit 3 (compression type) without the field, or a compression type without it.
pub const COMPRESSION_BIT: &str = "compression-type-mismatch";
/// Extended L2 entries with clusters under 16 KiB (subclusters under 512 bytes).
pub const EXTL2_CLUSTERS: &str = "extended-l2-clusters-too-small";
/// Incompatible bit 1: qemu found the image inconsistent.
pub const MARKED_CORRUPT: &str = "marked-corrupt";
/// Autoclear bit 1 (raw external data) without an external data file.
pub const DATA_FILE_RAW: &str = "data-file-raw-without-data-file";
/// A header extension runs past the first cluster.
pub const EXTENSION_PAST_CLUSTER: &str = "extension-past-cluster";
/// More header extensions than fit in a cluster.
pub const TOO_MANY_EXTENSIONS: &str = "too-many-extensions";
/// The backing file format extension is longer than 15 bytes.
pub const BACKING_FORMAT_LENGTH: &str = "backing-format-too-long";
/// The bitmaps extension has the wrong length or a non-zero reserved field.
pub const BITMAPS_EXTENSION: &str = "bitmaps-extension-invalid";
/// The bitmaps extension counts 0 or more than 65535 bitmaps.
pub const BITMAPS_COUNT: &str = "bitmaps-count-invalid";
/// The bitmap directory is larger than 64 MiB.
pub const BITMAP_DIRECTORY_SIZE: &str = "bitmap-directory-too-large";
/// The bitmap directory is not cluster aligned.
pub const BITMAP_DIRECTORY_UNALIGNED: &str = "bitmap-directory-unaligned";
/// A metadata table (L1, refcount, snapshot, bitmap directory) starts in the header cluster.
pub const TABLE_IN_HEADER: &str = "table-overlaps-header";
/// `l1_size` is smaller than the virtual size needs.
pub const L1_TOO_SMALL: &str = "l1-too-small";
/// `l1_size` is above 4 Mi entries (a 32 MiB table, qemu's limit).
pub const L1_TOO_LARGE: &str = "l1-too-large";
/// `l1_table_offset` is not cluster aligned.
pub const L1_UNALIGNED: &str = "l1-table-unaligned";
/// `refcount_table_clusters` is 0: the image has no refcount table.
pub const REFCOUNT_TABLE_EMPTY: &str = "refcount-table-empty";
/// The refcount table is larger than 8 MiB (qemu's limit).
pub const REFCOUNT_TABLE_TOO_LARGE: &str = "refcount-table-too-large";
/// `refcount_table_offset` is not cluster aligned.
pub const REFCOUNT_TABLE_UNALIGNED: &str = "refcount-table-unaligned";
/// A refcount table entry has reserved bits (0..=8) set.
pub const REFCOUNT_ENTRY_RESERVED: &str = "refcount-table-reserved-bits";
/// A refcount block is not cluster aligned.
pub const REFCOUNT_BLOCK_UNALIGNED: &str = "refcount-block-unaligned";
/// `nb_snapshots` is above 65536.
pub const TOO_MANY_SNAPSHOTS: &str = "too-many-snapshots";
/// `snapshots_offset` is not cluster aligned.
pub const SNAPSHOT_TABLE_UNALIGNED: &str = "snapshot-table-unaligned";
/// The snapshot table is larger than 64 MiB.
pub const SNAPSHOT_TABLE_TOO_LARGE: &str = "snapshot-table-too-large";
/// A snapshot has more than 1024 bytes of extra data.
pub const SNAPSHOT_EXTRA_DATA: &str = "snapshot-extra-data-too-large";
/// A snapshot's L1 table is not cluster aligned.
pub const SNAPSHOT_L1_UNALIGNED: &str = "snapshot-l1-unaligned";
/// A snapshot's L1 table has more than 4 Mi entries.
pub const SNAPSHOT_L1_TOO_LARGE: &str = "snapshot-l1-too-large";
/// An L1 entry has reserved bits (0..=8, 56..=62) set.
pub const L1_ENTRY_RESERVED: &str = "l1-entry-reserved-bits";
/// An L1 entry points at an L2 table that is not cluster aligned.
pub const L2_UNALIGNED: &str = "l2-table-unaligned";
/// A standard L2 entry has reserved bits (1..=8, 56..=61) set.
pub const L2_ENTRY_RESERVED: &str = "l2-entry-reserved-bits";
/// An L2 entry points at a data cluster that is not cluster aligned.
pub const DATA_CLUSTER_UNALIGNED: &str = "data-cluster-unaligned";
/// A compressed cluster's entry has the copied bit (63) set.
pub const COMPRESSED_COPIED: &str = "compressed-cluster-copied";
/// An extended L2 entry marks a subcluster both allocated and zero.
pub const SUBCLUSTER_ALLOCATED_AND_ZERO: &str = "subcluster-allocated-and-zero";
/// An extended L2 entry allocates subclusters without a host cluster.
pub const SUBCLUSTERS_WITHOUT_HOST: &str = "subclusters-without-host-cluster";

/// Every rule, for the documentation test.
pub const ALL: &[&str] = &[
    CLUSTER_BITS,
    CRYPT_METHOD,
    HEADER_LENGTH,
    REFCOUNT_ORDER,
    COMPRESSION_BIT,
    EXTL2_CLUSTERS,
    MARKED_CORRUPT,
    DATA_FILE_RAW,
    EXTENSION_PAST_CLUSTER,
    TOO_MANY_EXTENSIONS,
    BACKING_FORMAT_LENGTH,
    BITMAPS_EXTENSION,
    BITMAPS_COUNT,
    BITMAP_DIRECTORY_SIZE,
    BITMAP_DIRECTORY_UNALIGNED,
    TABLE_IN_HEADER,
    L1_TOO_SMALL,
    L1_TOO_LARGE,
    L1_UNALIGNED,
    REFCOUNT_TABLE_EMPTY,
    REFCOUNT_TABLE_TOO_LARGE,
    REFCOUNT_TABLE_UNALIGNED,
    REFCOUNT_ENTRY_RESERVED,
    REFCOUNT_BLOCK_UNALIGNED,
    TOO_MANY_SNAPSHOTS,
    SNAPSHOT_TABLE_UNALIGNED,
    SNAPSHOT_TABLE_TOO_LARGE,
    SNAPSHOT_EXTRA_DATA,
    SNAPSHOT_L1_UNALIGNED,
    SNAPSHOT_L1_TOO_LARGE,
    L1_ENTRY_RESERVED,
    L2_UNALIGNED,
    L2_ENTRY_RESERVED,
    DATA_CLUSTER_UNALIGNED,
    COMPRESSED_COPIED,
    SUBCLUSTER_ALLOCATED_AND_ZERO,
    SUBCLUSTERS_WITHOUT_HOST,
];
