//! Format detection from content, never from the file name.
//!
//! [`MAGICS`] is the one table of signatures. Every row that matches is collected; if two
//! different formats match, the file is refused as ambiguous (a qcow2 header planted in an ISO's
//! system area, say). A file no row matches is raw.

use std::fmt;

use serde::Serialize;

use crate::error::{DiskError, Refusal, Result};
use crate::io::{ReadAt, read_exact_at};

/// The image formats vmie knows. Every `match` on it is exhaustive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A plain disk, byte for byte.
    Raw,
    /// VMware VMDK (descriptor, monolithicSparse, streamOptimized).
    Vmdk,
    /// Microsoft VHD (fixed, dynamic; differencing refused).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// QEMU qcow2 (v2, v3).
    Qcow2,
    /// VirtualBox VDI.
    Vdi,
    /// Open Virtualization Appliance (a tar archive holding an OVF and its disks).
    Ova,
    /// ISO 9660 optical disc image (importable as raw data).
    Iso,
}

impl Format {
    /// Every format, in table order.
    pub const ALL: [Format; 8] = [
        Format::Raw,
        Format::Vmdk,
        Format::Vhd,
        Format::Vhdx,
        Format::Qcow2,
        Format::Vdi,
        Format::Ova,
        Format::Iso,
    ];

    /// The name `qemu-img` and the EC2 API use for this format.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Qcow2 => "qcow2",
            Format::Vdi => "vdi",
            Format::Ova => "ova",
            Format::Iso => "iso",
        }
    }

    /// Parses a format name (`vpc` is accepted for VHD, as qemu-img calls it).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "raw" | "img" => Some(Format::Raw),
            "vmdk" => Some(Format::Vmdk),
            "vhd" | "vpc" => Some(Format::Vhd),
            "vhdx" => Some(Format::Vhdx),
            "qcow2" => Some(Format::Qcow2),
            "vdi" => Some(Format::Vdi),
            "ova" => Some(Format::Ova),
            "iso" => Some(Format::Iso),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a signature sits.
#[derive(Debug, Clone, Copy)]
pub enum Anchor {
    /// At this offset from the start of the file.
    Start(usize),
    /// This many bytes before the end of the file.
    End(usize),
}

/// One row of the signature table.
#[derive(Debug, Clone, Copy)]
pub struct Magic {
    /// The format this signature identifies.
    pub format: Format,
    /// Where it sits.
    pub anchor: Anchor,
    /// The bytes.
    pub bytes: &'static [u8],
}

/// The one table of signatures. Offsets come from the format specifications.
pub const MAGICS: &[Magic] = &[
    // QEMU qcow2 spec: "QFI\xfb" at byte 0.
    Magic {
        format: Format::Qcow2,
        anchor: Anchor::Start(0),
        bytes: b"QFI\xfb",
    },
    // VMware VMDK 5.0 spec: sparse extent header magic "KDMV" at byte 0.
    Magic {
        format: Format::Vmdk,
        anchor: Anchor::Start(0),
        bytes: b"KDMV",
    },
    // VMware ESX hosted sparse ("COWD"), detected so that it is named, then refused.
    Magic {
        format: Format::Vmdk,
        anchor: Anchor::Start(0),
        bytes: b"COWD",
    },
    // A stand-alone VMDK text descriptor.
    Magic {
        format: Format::Vmdk,
        anchor: Anchor::Start(0),
        bytes: b"# Disk DescriptorFile",
    },
    // MS-VHDX 2.2.1: file type identifier "vhdxfile" at byte 0.
    Magic {
        format: Format::Vhdx,
        anchor: Anchor::Start(0),
        bytes: b"vhdxfile",
    },
    // VHD spec: footer cookie "conectix" in the last 512 bytes (fixed and dynamic) ...
    Magic {
        format: Format::Vhd,
        anchor: Anchor::End(512),
        bytes: b"conectix",
    },
    // ... and its copy at byte 0 (dynamic and differencing).
    Magic {
        format: Format::Vhd,
        anchor: Anchor::Start(0),
        bytes: b"conectix",
    },
    // VirtualBox VDI: signature 0xbeda107f (little-endian) at byte 0x40.
    Magic {
        format: Format::Vdi,
        anchor: Anchor::Start(0x40),
        bytes: &[0x7f, 0x10, 0xda, 0xbe],
    },
    // ECMA-119: primary volume descriptor "CD001" at sector 16 (2048-byte sectors), byte 1.
    Magic {
        format: Format::Iso,
        anchor: Anchor::Start(0x8001),
        bytes: b"CD001",
    },
    // POSIX ustar / GNU tar: "ustar" at byte 257 of the first header block.
    Magic {
        format: Format::Ova,
        anchor: Anchor::Start(257),
        bytes: b"ustar",
    },
];

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
    for m in MAGICS {
        let hit = match m.anchor {
            Anchor::Start(off) => head.get(off..off + m.bytes.len()) == Some(m.bytes),
            Anchor::End(back) => {
                tail.len() >= back
                    && tail.get(tail.len() - back..tail.len() - back + m.bytes.len())
                        == Some(m.bytes)
            }
        };
        if !hit {
            continue;
        }
        match found {
            None => found = Some(m.format),
            Some(f) if f == m.format => {}
            Some(f) => {
                return Err(Refusal::MultipleFormats {
                    first: f,
                    second: m.format,
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
