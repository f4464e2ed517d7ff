//! Format detection from content, never from the file name.
//!
//! Every signature of the registry ([`crate::registry::FORMATS`]) is tried; every row that
//! matches is collected. Two different rows matching is a refusal (`multiple-formats`: a qcow2
//! header planted in an ISO's system area, say). A file no row matches is raw.

use serde::Serialize;

use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;
use crate::io::{ReadAt, read_exact_at};
use crate::registry::FORMATS;

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

/// Detects the format of `src` from its content. Refuses a file that matches two formats.
pub fn detect(src: &dyn ReadAt) -> Result<Detection> {
    let size = src.size();
    let head_len = usize::try_from(size).map_or(PROBE_HEAD, |s| s.min(PROBE_HEAD));
    let mut head = vec![0u8; head_len];
    read_exact_at(src, &mut head, 0).map_err(|e| DiskError::io("reading the file header", e))?;
    let tail_len = head_len.min(PROBE_TAIL);
    let mut tail = vec![0u8; tail_len];
    read_exact_at(src, &mut tail, size - tail_len as u64)
        .map_err(|e| DiskError::io("reading the file footer", e))?;
    detect_bytes(&head, &tail)
}

/// Detection on the first bytes of a file (`head`, up to [`PROBE_HEAD`]) and its last bytes
/// (`tail`, up to [`PROBE_TAIL`]).
pub fn detect_bytes(head: &[u8], tail: &[u8]) -> Result<Detection> {
    let mut found: Option<Format> = None;
    for e in &FORMATS {
        if !e.signatures.iter().any(|s| s.matches(head, tail)) {
            continue;
        }
        match found {
            None => found = Some(e.format),
            Some(f) => {
                return Err(Refusal::MultipleFormats {
                    first: f.name(),
                    second: e.name,
                }
                .into());
            }
        }
    }
    Ok(Detection {
        format: found.unwrap_or(Format::Raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_detect_empty_is_raw() {
        assert_eq!(detect_bytes(&[], &[]).unwrap().format, Format::Raw);
    }

    #[test]
    fn test_detect_qcow2_in_iso_is_refused() {
        let mut head = vec![0u8; PROBE_HEAD];
        head[..4].copy_from_slice(b"QFI\xfb");
        head[0x8001..0x8006].copy_from_slice(b"CD001");
        let err = detect_bytes(&head, &head[head.len() - 512..]).unwrap_err();
        assert_eq!(err.reason_code(), "multiple-formats");
    }

    #[test]
    fn test_detect_vhd_footer_and_copy_is_one_format() {
        let mut head = vec![0u8; 1024];
        head[..8].copy_from_slice(b"conectix");
        head[512..520].copy_from_slice(b"conectix");
        assert_eq!(
            detect_bytes(&head, &head[512..]).unwrap().format,
            Format::Vhd
        );
    }

    #[test]
    fn test_detect_short_file_no_panic() {
        for n in 0..600 {
            let b = vec![b'c'; n];
            let _ = detect_bytes(&b, &b);
        }
    }
}
