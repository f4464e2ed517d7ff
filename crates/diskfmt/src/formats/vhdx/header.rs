//! The header section ([MS-VHDX] 2.2): file type identifier at 0 and two 4 KiB headers at
//! 64 KiB and 128 KiB, of which the valid one with the highest sequence number is current.

use super::rules;
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::{ReadAt, le, read_checked};
use crate::limits::{MIB, check_in_file};

const F: Format = Format::Vhdx;

/// Offsets of the two headers ([MS-VHDX] 2.2.2: 64 KiB and 128 KiB).
pub const HEADER_OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
/// Bytes of a header covered by its checksum ([MS-VHDX] 2.2.2: 4 KiB).
pub const HEADER_SIZE: usize = 4096;

/// A 16-byte GUID kept in its on-disk (mixed-endian) byte order.
pub type Guid = [u8; 16];

/// Builds the on-disk form of a GUID written as `{d1}-{d2}-{d3}-{d4[0..2]}-{d4[2..8]}`:
/// the first three groups little-endian, the last eight bytes as written.
#[must_use]
pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// Reads a GUID at `off` of `b` (bounds known).
#[must_use]
pub fn guid_at(b: &[u8], off: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[off..off + 16]);
    g
}

/// CRC-32C of `buf` with the 4-byte checksum field at `at` taken as zero ([MS-VHDX] 2.2.2,
/// 2.2.3, 2.3.1.1).
#[must_use]
pub fn crc_with_zeroed(buf: &[u8], at: usize) -> u32 {
    let c = crc32c::crc32c(&buf[..at]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &buf[at + 4..])
}

/// The fields of the current header that the reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Sequence number (the highest valid one wins).
    pub sequence: u64,
    /// Non-zero when the log holds entries that must be replayed.
    pub log_guid: Guid,
    /// Length of the log in bytes (multiple of 1 MiB).
    pub log_length: u64,
    /// File offset of the log (multiple of 1 MiB).
    pub log_offset: u64,
}

impl Header {
    /// True when the log must be replayed before the image is read ([MS-VHDX] 2.3.2).
    #[must_use]
    pub fn log_active(&self) -> bool {
        self.log_guid != [0u8; 16]
    }
}

/// Parses one 4 KiB header; `Err` explains why it is not valid.
pub fn parse_header(b: &[u8]) -> std::result::Result<Header, String> {
    if b.len() < HEADER_SIZE {
        return Err("header is short".into());
    }
    let b = &b[..HEADER_SIZE];
    // 0: signature "head".
    if &b[0..4] != b"head" {
        return Err("no \"head\" signature".into());
    }
    // 4: CRC-32C over the 4 KiB header with this field zeroed.
    let stored = le::u32(b, 4);
    let computed = crc_with_zeroed(b, 4);
    if stored != computed {
        return Err(format!(
            "checksum {stored:#010x} does not match the computed {computed:#010x}"
        ));
    }
    // 8: sequence number; 16 FileWriteGuid; 32 DataWriteGuid; 48 LogGuid.
    let sequence = le::u64(b, 8);
    let log_guid = guid_at(b, 48);
    // 64: LogVersion (0); 66: Version (1).
    let log_version = le::u16(b, 64);
    if log_version != 0 {
        return Err(format!("log version {log_version} is not 0"));
    }
    let version = le::u16(b, 66);
    if version != 1 {
        return Err(format!("version {version} is not 1"));
    }
    // 68: LogLength (u32, multiple of 1 MiB); 72: LogOffset (u64, multiple of 1 MiB).
    let log_length = u64::from(le::u32(b, 68));
    let log_offset = le::u64(b, 72);
    if !log_length.is_multiple_of(MIB) || !log_offset.is_multiple_of(MIB) {
        return Err(format!(
            "log at {log_offset} of {log_length} bytes is not 1 MiB aligned"
        ));
    }
    Ok(Header {
        sequence,
        log_guid,
        log_length,
        log_offset,
    })
}

/// Checks the file type identifier and returns the current header: the valid one with the
/// highest sequence number. Two valid headers with one sequence number must be identical (as
/// Disk2VHD writes them); the log must lie past the header section.
pub fn read_current(src: &dyn ReadAt) -> Result<Header> {
    let id = read_checked(src, F, "file type identifier", 0, 8)?;
    if &id[..] != b"vhdxfile" {
        return Err(DiskError::invalid(
            F,
            "no \"vhdxfile\" identifier at offset 0",
        ));
    }
    let mut valid: Vec<(Header, Vec<u8>)> = Vec::new();
    let mut why = Vec::new();
    for (i, &off) in HEADER_OFFSETS.iter().enumerate() {
        let b = read_checked(src, F, "header", off, HEADER_SIZE)?;
        match parse_header(&b) {
            Ok(h) => valid.push((h, b)),
            Err(e) => why.push(format!("header {} at {off}: {e}", i + 1)),
        }
    }
    let mut valid = valid.into_iter();
    let current = match (valid.next(), valid.next()) {
        (None, _) => {
            return Err(DiskError::corrupt_rule(
                F,
                rules::HEADERS_INVALID,
                format!("no valid header ({})", why.join("; ")),
            ));
        }
        (Some((h, _)), None) => h,
        (Some((a, ab)), Some((b, bb))) => {
            if a.sequence == b.sequence && ab != bb {
                return Err(DiskError::corrupt_rule(
                    F,
                    rules::HEADERS_SAME_SEQUENCE,
                    format!(
                        "both headers have sequence number {} but differ: which is current cannot be told",
                        a.sequence
                    ),
                ));
            }
            if b.sequence > a.sequence { b } else { a }
        }
    };
    if current.log_length > 0 {
        if current.log_offset < MIB {
            return Err(DiskError::corrupt_rule(
                F,
                rules::LOG_LOCATION,
                format!(
                    "the log at offset {} lies in the header section",
                    current.log_offset
                ),
            ));
        }
        check_in_file(F, "log", current.log_offset, current.log_length, src.size())?;
    }
    Ok(current)
}
