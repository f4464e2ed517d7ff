//! What a file can be: the formats vmie reads ([`Format`]) and the containers it recognizes
//! but does not read ([`Unread`]).
//!
//! This module only names them, so that every other module can speak of a format without
//! depending on the readers. Everything else about a format (its names, signatures, reader and
//! writer) is one line of the registry, [`crate::registry`].

use serde::Serialize;

/// The image formats vmie reads. Every `match` on it is exhaustive; each variant has exactly
/// one row in [`crate::registry::FORMATS`].
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

/// Why vmie does not read a container it recognizes; decides the refusal's reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnreadKind {
    /// A disk image format vmie does not read (`unsupported-format`).
    UnsupportedFormat,
    /// An encrypted volume: its bytes are ciphertext, not a disk (`encrypted`).
    Encrypted,
    /// A compressed file or archive holding (presumably) a disk image (`compressed`).
    Compressed,
}

impl UnreadKind {
    /// The reason code of a refusal of this kind.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            UnreadKind::UnsupportedFormat => "unsupported-format",
            UnreadKind::Encrypted => "encrypted",
            UnreadKind::Compressed => "compressed",
        }
    }
}

/// A container vmie recognizes by its signature but does not read: named, then refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unread {
    /// Short stable name (`parallels`, `luks`, `gzip`, …), shown after the reason code.
    pub name: &'static str,
    /// Why it is not read.
    pub kind: UnreadKind,
    /// What the file is, for people (`a Parallels disk image`).
    pub title: &'static str,
    /// What to do instead.
    pub advice: &'static str,
}
