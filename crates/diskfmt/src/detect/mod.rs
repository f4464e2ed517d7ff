//! Format detection from content, never from the file name.
//!
//! Every signature of the registry ([`crate::registry::FORMATS`] and
//! [`crate::registry::UNREAD`]) is tried; every row that matches is collected. Two different
//! rows matching is a refusal (`multiple-formats`: a qcow2 header planted in an ISO's system
//! area, say); a container vmie does not read is refused by name (`unsupported-format:
//! parallels`, `encrypted: luks`, `compressed: gzip`). A file no row matches is raw, if it can
//! be a disk at all: an empty file or one that is not a whole number of 512-byte sectors is
//! refused as `not-a-disk` (a 10-byte text file is not a disk image).

use serde::Serialize;

use crate::error::{DiskError, Refusal, Result};
use crate::format::{Format, Unread};
use crate::io::{ReadAt, read_exact_at};
use crate::registry::{FORMATS, UNREAD};

/// Sector size every disk read as raw is a whole number of.
pub const SECTOR: u64 = 512;

/// How many bytes at the head of a file detection looks at.
pub const PROBE_HEAD: usize = 64 * 1024;
/// How many bytes at the tail of a file detection looks at.
pub const PROBE_TAIL: usize = 512;

/// The outcome of detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The format of the file.
    pub format: Format,
}

/// Detects the format of `src` from its content; refuses a file that matches two formats,
/// one vmie recognizes but does not read, or one that cannot be a disk.
pub fn detect(src: &dyn ReadAt) -> Result<Detection> {
    let size = src.size();
    let head_len = usize::try_from(size).map_or(PROBE_HEAD, |s| s.min(PROBE_HEAD));
    let mut head = vec![0u8; head_len];
    read_exact_at(src, &mut head, 0).map_err(|e| DiskError::io("reading the file header", e))?;
    let tail_len = head_len.min(PROBE_TAIL);
    let mut tail = vec![0u8; tail_len];
    read_exact_at(src, &mut tail, size - tail_len as u64)
        .map_err(|e| DiskError::io("reading the file footer", e))?;
    let d = detect_bytes(&head, &tail)?;
    // Raw and ISO 9660 are read byte for byte: the file itself must have the shape of a disk.
    if matches!(d.format, Format::Raw | Format::Iso) && (size == 0 || !size.is_multiple_of(SECTOR))
    {
        return Err(Refusal::NotADisk { size }.into());
    }
    Ok(d)
}

/// What one signature row names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    Read(Format),
    Unread(Unread),
}

impl Found {
    fn name(self) -> &'static str {
        match self {
            Found::Read(f) => f.name(),
            Found::Unread(u) => u.name,
        }
    }
}

/// Detection on the first bytes of a file (`head`, up to [`PROBE_HEAD`]) and its last bytes
/// (`tail`, up to [`PROBE_TAIL`]); the size rule of [`detect`] is not applied.
pub fn detect_bytes(head: &[u8], tail: &[u8]) -> Result<Detection> {
    let read = FORMATS
        .iter()
        .filter(|e| e.signatures.iter().any(|s| s.matches(head, tail)))
        .map(|e| Found::Read(e.format));
    let unread = UNREAD
        .iter()
        .filter(|u| u.signatures.iter().any(|s| s.matches(head, tail)))
        .map(|u| Found::Unread(u.what));
    let mut found: Option<Found> = None;
    for hit in read.chain(unread) {
        match found {
            None => found = Some(hit),
            Some(f) if f == hit => {}
            Some(f) => {
                return Err(Refusal::MultipleFormats {
                    first: f.name(),
                    second: hit.name(),
                }
                .into());
            }
        }
    }
    match found {
        None => Ok(Detection {
            format: Format::Raw,
        }),
        Some(Found::Read(format)) => Ok(Detection { format }),
        Some(Found::Unread(u)) => Err(Refusal::Unread(u).into()),
    }
}

#[cfg(test)]
mod tests;
