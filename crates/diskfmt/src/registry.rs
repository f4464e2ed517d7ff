//! The registry: one row per format vmie reads ([`FORMATS`]) and one per container it
//! recognizes but refuses ([`UNREAD`]). Everything that names a format (the command line's
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
use crate::format::{Format, Unread, UnreadKind};
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

/// qcow2 (qemu `docs/interop/qcow2.txt`): "QFI\xfb" at 0, then a version that is not 1
/// (version 1 is the older qcow, a row of [`UNREAD`]).
fn is_qcow2(head: &[u8], _: &[u8]) -> bool {
    head.starts_with(b"QFI\xfb") && head.get(4..8) != Some(&[0, 0, 0, 1][..])
}

/// qcow version 1 (qemu `block/qcow.c`): the qcow2 magic with version 1.
fn is_qcow1(head: &[u8], _: &[u8]) -> bool {
    head.starts_with(b"QFI\xfb") && head.get(4..8) == Some(&[0, 0, 0, 1][..])
}

/// cloop (qemu `block/cloop.c`): a shell script that loads the cloop module, at offset 0.
fn is_cloop(head: &[u8], _: &[u8]) -> bool {
    const MODULE: &[u8] = b"modprobe cloop";
    let script = &head[..head.len().min(128)];
    head.starts_with(b"#!/bin/sh\n") && script.windows(MODULE.len()).any(|w| w == MODULE)
}

/// bzip2: "BZh", a block size digit, then the magic of a block (the digits of pi) or of the
/// end of the stream (those of the square root of pi).
fn is_bzip2(head: &[u8], _: &[u8]) -> bool {
    const BLOCK: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
    const END: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];
    head.starts_with(b"BZh")
        && head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d))
        && head
            .get(4..10)
            .is_some_and(|m| m == BLOCK.as_slice() || m == END.as_slice())
}

/// An OVF descriptor on its own: XML whose root element is an OVF `Envelope` (DSP0243).
fn is_ovf(head: &[u8], _: &[u8]) -> bool {
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = text.iter().position(|b| !b.is_ascii_whitespace());
    let has = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    start.is_some_and(|i| text[i] == b'<')
        && has(b"Envelope")
        && has(b"schemas.dmtf.org/ovf/envelope")
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
        signatures: &[Signature::Test(is_qcow2)],
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

/// One container vmie recognizes and refuses by name.
#[derive(Debug)]
pub struct UnreadEntry {
    /// What it is and what to do instead.
    pub what: Unread,
    /// How it is recognized.
    pub signatures: &'static [Signature],
}

const CONVERT: &str = "convert it to qcow2, VMDK, VHD, VHDX or raw first (for example `qemu-img convert -O qcow2 IN OUT.qcow2`)";
const DECOMPRESS: &str = "decompress it first and upload the disk image it holds";
const EXTRACT: &str = "extract the disk image from the archive first and upload that";
const DECRYPT: &str =
    "decrypt it first and upload the plain disk (vmie encrypts what it stores itself)";

const fn unread(
    name: &'static str,
    kind: UnreadKind,
    title: &'static str,
    advice: &'static str,
    signatures: &'static [Signature],
) -> UnreadEntry {
    UnreadEntry {
        what: Unread {
            name,
            kind,
            title,
            advice,
        },
        signatures,
    }
}

/// Containers vmie recognizes but does not read: disk formats of other hypervisors,
/// encrypted volumes, compressed files and archives, a bare OVF descriptor. A file one of
/// these matches is refused with its name, never taken for raw.
pub const UNREAD: &[UnreadEntry] = &[
    // qemu block/qcow.c: "QFI\xfb", version 1.
    unread(
        "qcow",
        UnreadKind::UnsupportedFormat,
        "a QEMU qcow (version 1) image",
        CONVERT,
        &[Signature::Test(is_qcow1)],
    ),
    // qemu docs/interop/qed_spec.txt: magic "QED\0" at 0.
    unread(
        "qed",
        UnreadKind::UnsupportedFormat,
        "a QEMU QED image",
        CONVERT,
        &[Signature::Bytes(Anchor::Start(0), b"QED\0")],
    ),
    // qemu docs/interop/parallels.txt: "WithoutFreeSpace" (version 1) or "WithouFreSpacExt"
    // (version 2, which may carry a format extension such as a dirty bitmap) at 0.
    unread(
        "parallels",
        UnreadKind::UnsupportedFormat,
        "a Parallels disk image",
        CONVERT,
        &[
            Signature::Bytes(Anchor::Start(0), b"WithoutFreeSpace"),
            Signature::Bytes(Anchor::Start(0), b"WithouFreSpacExt"),
        ],
    ),
    // Bochs (qemu block/bochs.c): "Bochs Virtual HD Image" at 0.
    unread(
        "bochs",
        UnreadKind::UnsupportedFormat,
        "a Bochs disk image",
        CONVERT,
        &[Signature::Bytes(
            Anchor::Start(0),
            b"Bochs Virtual HD Image",
        )],
    ),
    // cloop (qemu block/cloop.c): a shell script header that loads the cloop module.
    unread(
        "cloop",
        UnreadKind::UnsupportedFormat,
        "a compressed loop (cloop) image",
        CONVERT,
        &[Signature::Test(is_cloop)],
    ),
    // Apple UDIF (qemu block/dmg.c): the "koly" trailer in the last 512 bytes.
    unread(
        "dmg",
        UnreadKind::UnsupportedFormat,
        "an Apple disk image (DMG)",
        CONVERT,
        &[Signature::Bytes(Anchor::End(512), b"koly")],
    ),
    // LUKS1 and LUKS2 on-disk format: "LUKS\xba\xbe" at 0.
    unread(
        "luks",
        UnreadKind::Encrypted,
        "a LUKS encrypted volume",
        DECRYPT,
        &[Signature::Bytes(Anchor::Start(0), b"LUKS\xba\xbe")],
    ),
    // BitLocker: "-FVE-FS-" as the OEM name of the volume boot record (a volume image; a
    // whole disk starts with a partition table instead).
    unread(
        "bitlocker",
        UnreadKind::Encrypted,
        "a BitLocker encrypted volume",
        DECRYPT,
        &[Signature::Bytes(Anchor::Start(3), b"-FVE-FS-")],
    ),
    // RFC 1952: 1f 8b, method 8 (deflate).
    unread(
        "gzip",
        UnreadKind::Compressed,
        "a gzip-compressed file",
        DECOMPRESS,
        &[Signature::Bytes(Anchor::Start(0), &[0x1f, 0x8b, 0x08])],
    ),
    // xz file format: stream header magic fd "7zXZ" 00.
    unread(
        "xz",
        UnreadKind::Compressed,
        "an xz-compressed file",
        DECOMPRESS,
        &[Signature::Bytes(
            Anchor::Start(0),
            &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        )],
    ),
    // RFC 8878: zstd frame magic 0xFD2FB528, little-endian.
    unread(
        "zstd",
        UnreadKind::Compressed,
        "a zstd-compressed file",
        DECOMPRESS,
        &[Signature::Bytes(
            Anchor::Start(0),
            &[0x28, 0xb5, 0x2f, 0xfd],
        )],
    ),
    unread(
        "bzip2",
        UnreadKind::Compressed,
        "a bzip2-compressed file",
        DECOMPRESS,
        &[Signature::Test(is_bzip2)],
    ),
    // LZ4 frame format: magic 0x184D2204, little-endian.
    unread(
        "lz4",
        UnreadKind::Compressed,
        "an lz4-compressed file",
        DECOMPRESS,
        &[Signature::Bytes(
            Anchor::Start(0),
            &[0x04, 0x22, 0x4d, 0x18],
        )],
    ),
    // PKWARE APPNOTE: local file header "PK\3\4", or the end record of an empty archive.
    unread(
        "zip",
        UnreadKind::Compressed,
        "a zip archive",
        EXTRACT,
        &[
            Signature::Bytes(Anchor::Start(0), b"PK\x03\x04"),
            Signature::Bytes(Anchor::Start(0), b"PK\x05\x06"),
        ],
    ),
    // 7z format: signature "7z\xbc\xaf\x27\x1c".
    unread(
        "7z",
        UnreadKind::Compressed,
        "a 7z archive",
        EXTRACT,
        &[Signature::Bytes(
            Anchor::Start(0),
            &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c],
        )],
    ),
    // RAR 4 and 5: "Rar!\x1a\x07".
    unread(
        "rar",
        UnreadKind::Compressed,
        "a RAR archive",
        EXTRACT,
        &[Signature::Bytes(Anchor::Start(0), b"Rar!\x1a\x07")],
    ),
    unread(
        "ovf",
        UnreadKind::UnsupportedFormat,
        "an OVF descriptor without its disks",
        "upload the OVA (one tar archive holding the descriptor and its disks), or each disk image on its own",
        &[Signature::Test(is_ovf)],
    ),
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
            .chain(UNREAD.iter().map(|u| u.what.name))
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
