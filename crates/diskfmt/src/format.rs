//! The formats vmie reads ([`Format`]).
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
