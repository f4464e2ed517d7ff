//! The internal snapshot table (qemu `docs/interop/qcow2.txt`, "Snapshots"): `nb_snapshots`
//! entries from `snapshots_offset`, each 8-byte aligned:
//!
//! ```text
//!  0 l1_table_offset u64   8 l1_size u32   12 id_str_size u16   14 name_size u16
//! 16 date_sec u32         20 date_nsec u32 24 vm_clock_nsec u64 32 vm_state_size u32
//! 36 extra_data_size u32  40 extra data, then the id string, then the name
//! ```
//!
//! vmie reads the active disk only, but a snapshot's table is part of the file: an entry out
//! of bounds or a snapshot L1 table that qemu would refuse makes the whole image invalid.

use super::header::{Header, MAX_L1_BYTES};
use super::rules;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{ReadAt, be, read_checked};
use crate::limits::{MIB, add, check_in_file};

const F: Format = Format::Qcow2;
/// Size of the fixed part of an entry.
const ENTRY_HEADER: u64 = 40;
/// Most extra data per snapshot (qemu `QCOW_MAX_SNAPSHOT_EXTRA_DATA`).
pub const MAX_EXTRA_DATA: u64 = 1024;
/// Largest snapshot table (qemu `QCOW_MAX_SNAPSHOTS_SIZE`: 1 KiB per snapshot).
pub const MAX_TABLE_BYTES: u64 = 64 * MIB;

/// Walks the snapshot table and checks every entry and the place of its L1 table.
pub fn check_table(src: &dyn ReadAt, h: &Header) -> Result<()> {
    let file_size = src.size();
    let cs = h.cluster_size();
    let mut at = h.snapshots_offset;
    let mut table_len = 0u64;
    for i in 0..h.nb_snapshots {
        at = add(F, "snapshot table", at, 7)? & !7;
        let e = read_checked(src, F, "snapshot table", at, 40)?;
        let l1_offset = be::u64(&e, 0);
        let l1_size = u64::from(be::u32(&e, 8));
        let id_len = u64::from(be::u16(&e, 12));
        let name_len = u64::from(be::u16(&e, 14));
        let extra = u64::from(be::u32(&e, 36));
        if extra > MAX_EXTRA_DATA {
            return Err(DiskError::invalid_rule(
                F,
                rules::SNAPSHOT_EXTRA_DATA,
                format!("snapshot {i} has {extra} bytes of extra data, above {MAX_EXTRA_DATA}"),
            ));
        }
        // extra <= 1 KiB and the strings are under 64 KiB each: no overflow.
        let len = ENTRY_HEADER + extra + id_len + name_len;
        check_in_file(F, "snapshot table", at, len, file_size)?;
        table_len = table_len.next_multiple_of(8) + len;
        if table_len > MAX_TABLE_BYTES {
            return Err(DiskError::invalid_rule(
                F,
                rules::SNAPSHOT_TABLE_TOO_LARGE,
                "the snapshot table is larger than 64 MiB",
            ));
        }
        check_l1(i, l1_offset, l1_size, cs, file_size)?;
        at += len;
    }
    Ok(())
}

/// A snapshot's L1 table: aligned, bounded as the active one, inside the file.
fn check_l1(i: u32, offset: u64, entries: u64, cs: u64, file_size: u64) -> Result<()> {
    if !offset.is_multiple_of(cs) {
        return Err(DiskError::invalid_rule(
            F,
            rules::SNAPSHOT_L1_UNALIGNED,
            format!("snapshot {i}'s L1 table offset {offset:#x} is not cluster aligned"),
        ));
    }
    if entries * 8 > MAX_L1_BYTES {
        return Err(DiskError::invalid_rule(
            F,
            rules::SNAPSHOT_L1_TOO_LARGE,
            format!("snapshot {i}'s L1 table has {entries} entries, above 4 Mi"),
        ));
    }
    if entries > 0 && offset < cs {
        return Err(DiskError::invalid_rule(
            F,
            rules::TABLE_IN_HEADER,
            format!("snapshot {i}'s L1 table lies in the header cluster"),
        ));
    }
    check_in_file(F, "snapshot L1 table", offset, entries * 8, file_size)
}
