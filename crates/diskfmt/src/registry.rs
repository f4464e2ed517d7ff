//! The registry: one row per format vmie reads ([`FORMATS`]). Everything that names a format (the command line's
//! `-f`/`-O` values, the EC2 API's `Format` and `DiskImageFormat`), detects it, opens it or
//! writes it is derived from these rows; adding a format is one folder under `formats/` (and
//! `write/`) plus one row here, and one variant of [`Format`].
//!
//! Signatures come from each format's specification (cited on the row). Detection
//! ([`crate::detect`]) collects every row that matches; two different rows matching is a
//! refusal, and a file no row matches is raw.

use std::fmt;

use crate::disk::Disk;
use crate::error::Result;
use crate::format::Format;
use crate::formats::{qcow2, raw, vdi, vhd, vhdx, vmdk};
use crate::io::Source;
use crate::limits::Limits;
use crate::write::{self, Writer};

/// Where a fixed signature sits.
#[derive(Debug, Clone, Copy)]
pub enum Anchor {
    /// At this offset from the start of the file.
    Start(usize),
    /// This many bytes before the end of the file.
    End(usize),
}

/// How a format is recognized.
#[derive(Debug, Clone, Copy)]
pub enum Signature {
    /// These bytes at this place.
    Bytes(Anchor, &'static [u8]),
    /// A test on the head of the file (up to [`crate::detect::PROBE_HEAD`] bytes) and its tail
    /// (up to [`crate::detect::PROBE_TAIL`]), for signatures that are more than fixed bytes.
    Test(fn(head: &[u8], tail: &[u8]) -> bool),
}

impl Signature {
    /// Whether the file whose first bytes are `head` and last bytes `tail` carries it.
    #[must_use]
    pub fn matches(&self, head: &[u8], tail: &[u8]) -> bool {
        match *self {
            Signature::Bytes(Anchor::Start(off), bytes) => {
                off.checked_add(bytes.len())
                    .and_then(|end| head.get(off..end))
                    == Some(bytes)
            }
            Signature::Bytes(Anchor::End(back), bytes) => {
                tail.len()
                    .checked_sub(back)
                    .and_then(|start| tail.get(start..start + bytes.len()))
                    == Some(bytes)
            }
            Signature::Test(test) => test(head, tail),
        }
    }
}

/// Opens a source as one format, running that format's safety inspection.
pub type Opener = fn(Source, &Limits) -> Result<Box<dyn Disk>>;

/// One format vmie reads.
pub struct Entry {
    /// The format.
    pub format: Format,
    /// Its name on the command line and in messages (`qemu-img`'s name where it has one).
    pub name: &'static str,
    /// Other names accepted on the command line (`vpc` for VHD, as qemu-img calls it).
    pub aliases: &'static [&'static str],
    /// Its name in the EC2 API (`DiskContainer.Format`, `DiskImageFormat`); `None` when the
    /// API does not take it.
    pub ec2_name: Option<&'static str>,
    /// File name extension of an exported image.
    pub extension: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
    /// How it is recognized; empty for raw, which is what nothing else matches.
    pub signatures: &'static [Signature],
    /// Its reader; `None` for an appliance, which holds disks rather than being one
    /// ([`crate::ova::Appliance`]).
    pub open: Option<Opener>,
    /// Its writer, when vmie writes it.
    pub writer: Option<&'static dyn Writer>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("format", &self.format)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every format vmie reads, indexed by [`Format`] (`FORMATS[f as usize].format == f`).
pub static FORMATS: [Entry; 8] = [
    Entry {
        format: Format::Raw,
        name: "raw",
        aliases: &["img"],
        ec2_name: Some("RAW"),
        extension: "raw",
        description: "Raw disk",
        signatures: &[],
        open: Some(raw::open),
        writer: Some(&write::raw::RawWriter),
    },
    Entry {
        format: Format::Vmdk,
        name: "vmdk",
        aliases: &[],
        ec2_name: Some("VMDK"),
        extension: "vmdk",
        description: "VMware VMDK",
        // VMware "Virtual Disk Format 1.1": sparse extent magic "KDMV" at 0; the ESX 2.x
        // "COWD" sparse format (named, then refused by the reader); a text descriptor.
        signatures: &[
            Signature::Bytes(Anchor::Start(0), b"KDMV"),
            Signature::Bytes(Anchor::Start(0), b"COWD"),
            Signature::Bytes(Anchor::Start(0), b"# Disk DescriptorFile"),
        ],
        open: Some(vmdk::open),
        writer: Some(&write::vmdk::VmdkWriter),
    },
    Entry {
        format: Format::Vhd,
        name: "vhd",
        aliases: &["vpc"],
        ec2_name: Some("VHD"),
        extension: "vhd",
        description: "Microsoft VHD (`vpc` in qemu-img)",
        // VHD specification: footer cookie "conectix" in the last 512 bytes (fixed and
        // dynamic), and its copy at 0 (dynamic and differencing).
        signatures: &[
            Signature::Bytes(Anchor::End(512), b"conectix"),
            Signature::Bytes(Anchor::Start(0), b"conectix"),
        ],
        open: Some(vhd::open),
        writer: Some(&write::vhd::VhdWriter),
    },
    Entry {
        format: Format::Vhdx,
        name: "vhdx",
        aliases: &[],
        ec2_name: Some("VHDX"),
        extension: "vhdx",
        description: "Microsoft VHDX",
        // MS-VHDX 2.2.1: file type identifier "vhdxfile" at 0.
        signatures: &[Signature::Bytes(Anchor::Start(0), b"vhdxfile")],
        open: Some(vhdx::open),
        writer: Some(&write::vhdx::VhdxWriter),
    },
    Entry {
        format: Format::Qcow2,
        name: "qcow2",
        aliases: &[],
        ec2_name: Some("QCOW2"),
        extension: "qcow2",
        description: "QEMU qcow2",
        // qemu docs/interop/qcow2.txt: "QFI\xfb" at 0.
        signatures: &[Signature::Bytes(Anchor::Start(0), b"QFI\xfb")],
        open: Some(qcow2::open),
        writer: Some(&write::qcow2::Qcow2Writer),
    },
    Entry {
        format: Format::Vdi,
        name: "vdi",
        aliases: &[],
        ec2_name: Some("VDI"),
        extension: "vdi",
        description: "VirtualBox VDI",
        // VirtualBox VDI: signature 0xbeda107f (little-endian) at 0x40.
        signatures: &[Signature::Bytes(
            Anchor::Start(0x40),
            &[0x7f, 0x10, 0xda, 0xbe],
        )],
        open: Some(vdi::open),
        writer: None,
    },
    Entry {
        format: Format::Ova,
        name: "ova",
        aliases: &[],
        ec2_name: Some("OVA"),
        extension: "ova",
        description: "OVA appliance (a tar archive of an OVF descriptor and its disks)",
        // POSIX ustar / GNU tar: "ustar" at byte 257 of the first header block.
        signatures: &[Signature::Bytes(Anchor::Start(257), b"ustar")],
        open: None,
        writer: Some(&write::ova::OvaWriter),
    },
    Entry {
        format: Format::Iso,
        name: "iso",
        aliases: &[],
        ec2_name: None,
        extension: "iso",
        description: "ISO 9660",
        // ECMA-119: primary volume descriptor "CD001" at sector 16 (2048-byte sectors),
        // byte 1.
        signatures: &[Signature::Bytes(Anchor::Start(0x8001), b"CD001")],
        open: Some(raw::open_iso),
        writer: None,
    },
];

/// The row of `format`.
#[must_use]
pub fn entry(format: Format) -> &'static Entry {
    &FORMATS[format as usize]
}

impl Format {
    /// Every format, in registry order.
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

    /// The name `qemu-img` and the command line use for this format.
    #[must_use]
    pub fn name(self) -> &'static str {
        entry(self).name
    }

    /// The format a command-line name or alias names, in any case.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Format> {
        FORMATS
            .iter()
            .find(|e| {
                e.name.eq_ignore_ascii_case(name)
                    || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
            })
            .map(|e| e.format)
    }

    /// The format an EC2 API value (`VMDK`, `raw`, …) names, in any case.
    #[must_use]
    pub fn from_ec2_name(name: &str) -> Option<Format> {
        FORMATS
            .iter()
            .find(|e| e.ec2_name.is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|e| e.format)
    }

    /// Its name in the EC2 API, if the API takes it.
    #[must_use]
    pub fn ec2_name(self) -> Option<&'static str> {
        entry(self).ec2_name
    }

    /// Its writer, if vmie writes it.
    #[must_use]
    pub fn writer(self) -> Option<&'static dyn Writer> {
        entry(self).writer
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The formats an import may name: EC2 name, in registry order.
pub fn importable() -> impl Iterator<Item = &'static Entry> {
    FORMATS.iter().filter(|e| e.ec2_name.is_some())
}

/// The formats vmie reads as one disk (`vmie convert -f`).
pub fn readable() -> impl Iterator<Item = &'static Entry> {
    FORMATS.iter().filter(|e| e.open.is_some())
}

/// The formats vmie writes (`vmie convert -O`, export's `DiskImageFormat`).
pub fn writable() -> impl Iterator<Item = &'static Entry> {
    FORMATS.iter().filter(|e| e.writer.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_registry_rows_are_indexed_by_format() {
        for (i, e) in FORMATS.iter().enumerate() {
            assert_eq!(e.format as usize, i, "row {i} ({})", e.name);
        }
        for f in Format::ALL {
            assert_eq!(entry(f).format, f);
            assert_eq!(Format::from_name(f.name()), Some(f));
        }
    }

    #[test]
    fn test_registry_names_are_unique() {
        let mut names: Vec<&str> = FORMATS
            .iter()
            .flat_map(|e| std::iter::once(e.name).chain(e.aliases.iter().copied()))
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name is used twice");
    }

    #[test]
    fn test_registry_aliases_and_ec2_names() {
        assert_eq!(Format::from_name("VPC"), Some(Format::Vhd));
        assert_eq!(Format::from_ec2_name("vmdk"), Some(Format::Vmdk));
        assert_eq!(Format::from_ec2_name("iso"), None);
        assert!(writable().all(|e| e.ec2_name.is_some()));
    }
}
