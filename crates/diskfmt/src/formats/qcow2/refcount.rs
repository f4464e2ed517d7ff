//! The refcount table (qemu `docs/interop/qcow2.txt`, "Host cluster management"): one `u64`
//! per refcount block, bits 9..63 its offset (cluster aligned), bits 0..8 reserved.
//!
//! vmie does not need refcounts to read an image, but the table is metadata like any other:
//! it is read once at open (at most 8 MiB, bounded by the header check) and every entry must
//! be well formed and point inside the file.

use super::header::Header;
use super::rules;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{ReadAt, read_checked};
use crate::limits::{Limits, check_in_file};

const F: Format = Format::Qcow2;
/// Reserved bits of a refcount table entry (qemu `REFT_RESERVED_MASK`).
const RESERVED: u64 = 0x1ff;

/// Reads the refcount table and checks every entry.
pub fn check_table(src: &dyn ReadAt, h: &Header, limits: &Limits) -> Result<()> {
    let cs = h.cluster_size();
    let bytes = u64::from(h.refcount_table_clusters) * cs;
    let len = limits.check_table(F, "refcount table", bytes)?;
    let raw = read_checked(src, F, "refcount table", h.refcount_table_offset, len)?;
    for (i, c) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if e & RESERVED != 0 {
            return Err(DiskError::corrupt_rule(
                F,
                rules::REFCOUNT_ENTRY_RESERVED,
                format!("refcount table entry {i} has reserved bits set ({e:#x})"),
            ));
        }
        if e == 0 {
            continue;
        }
        if !e.is_multiple_of(cs) {
            return Err(DiskError::corrupt_rule(
                F,
                rules::REFCOUNT_BLOCK_UNALIGNED,
                format!("refcount block {i} at {e:#x} is not cluster aligned"),
            ));
        }
        check_in_file(F, "refcount block", e, cs, src.size())?;
    }
    Ok(())
}
