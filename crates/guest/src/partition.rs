//! Partition tables: MBR (with extended and logical partitions) and GPT (header and entry
//! array CRCs checked, backup header used when the primary is damaged; protective and hybrid
//! MBRs told apart).
//!
//! Everything is bounded: at most 128 logical partitions are followed along an EBR chain
//! (each EBR must lie inside the extended partition and be visited once), a GPT entry array is
//! at most 1 MiB, and entries that point outside the disk are skipped with a warning.

use crate::error::{GuestError, Result};
use crate::volume::Volume;

const SECTOR: u64 = 512;
const MAX_LOGICAL: usize = 128;
const MAX_GPT_ARRAY: u64 = 1 << 20;

/// GPT type of the EFI system partition.
pub const GPT_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// GPT type of the BIOS boot partition (GRUB's core image on a GPT disk).
pub const GPT_BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";

/// Partitioning scheme of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// No partition table: the filesystem (if any) spans the disk.
    None,
    /// MBR (DOS) partition table.
    Mbr,
    /// GUID partition table.
    Gpt,
}

/// A partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Partition {
    /// Number as Linux counts (1–4 primary, 5… logical; GPT entries from 1).
    pub number: u32,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// MBR type (`0x83`) or GPT type GUID (lowercase).
    pub kind: String,
    /// A readable name of the type, where known.
    pub type_name: Option<&'static str>,
    /// GPT partition name.
    pub name: Option<String>,
    /// MBR active flag.
    pub bootable: bool,
    /// The partition's bytes.
    #[serde(skip)]
    pub volume: Volume,
}

/// A disk's partition table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionTable {
    /// Scheme.
    pub scheme: Scheme,
    /// Partitions in table order.
    pub partitions: Vec<Partition>,
    /// The first 440 bytes of the MBR hold boot code (not all zeros).
    pub mbr_boot_code: bool,
    /// A GPT disk whose MBR lists partitions besides the protective one.
    pub hybrid_mbr: bool,
    /// Problems found and worked around.
    pub warnings: Vec<String>,
}

fn mbr_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x01 | 0x04 | 0x06 | 0x0e => "FAT16",
        0x0b | 0x0c => "FAT32",
        0x07 => "NTFS/exFAT",
        0x05 | 0x0f | 0x85 => "Extended",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xfd => "Linux RAID",
        0xee => "GPT protective",
        0xef => "EFI System",
        0x27 => "Windows recovery",
        _ => return None,
    })
}

fn gpt_type_name(g: &str) -> Option<&'static str> {
    Some(match g {
        GPT_ESP => "EFI System",
        GPT_BIOS_BOOT => "BIOS boot",
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux filesystem",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
        "e6d6d379-f507-44c2-a23c-238f2a3df928" => "Linux LVM",
        "a19d880f-05fc-4d3b-a006-743f0f84911e" => "Linux RAID",
        "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
        "b921b045-1df0-41c3-af44-4c6f280d3fae" => "Linux root (ARM64)",
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" => "Microsoft basic data",
        "e3c9e316-0b5c-4db8-817d-f92df00215ae" => "Microsoft reserved",
        "de94bba4-06d1-4d40-a16a-bfd50179d6ac" => "Windows recovery",
        _ => return None,
    })
}

/// Formats a GUID stored in GPT's mixed-endian layout.
#[must_use]
pub fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads the partition table of `disk`.
pub fn read_partitions(disk: &Volume) -> Result<PartitionTable> {
    let mut t = PartitionTable {
        scheme: Scheme::None,
        partitions: Vec::new(),
        mbr_boot_code: false,
        hybrid_mbr: false,
        warnings: Vec::new(),
    };
    if disk.len() < SECTOR * 2 {
        return Ok(t);
    }
    let mbr = disk.read_vec(0, 512)?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Ok(t);
    }
    let entries: Vec<(u8, u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = 446 + i * 16;
            (
                mbr[e],
                mbr[e + 4],
                u64::from(le32(&mbr, e + 8)),
                u64::from(le32(&mbr, e + 12)),
            )
        })
        .collect();
    // A FAT or NTFS boot sector also ends in 55 AA: a table needs sane entries.
    let sane = entries
        .iter()
        .all(|&(flag, ty, _, n)| (flag == 0 || flag == 0x80) && (ty == 0 || n > 0));
    if !sane || entries.iter().all(|&(_, ty, _, _)| ty == 0) {
        return Ok(t);
    }
    t.mbr_boot_code = mbr[..440].iter().any(|&b| b != 0);
    if entries.iter().any(|&(_, ty, _, _)| ty == 0xee) {
        t.scheme = Scheme::Gpt;
        t.hybrid_mbr = entries.iter().any(|&(_, ty, _, _)| ty != 0 && ty != 0xee);
        read_gpt(disk, &mut t)?;
        return Ok(t);
    }
    t.scheme = Scheme::Mbr;
    for (i, &(flag, ty, lba, n)) in entries.iter().enumerate() {
        if ty == 0 {
            continue;
        }
        let number = u32::try_from(i + 1).unwrap_or(0);
        let Some(p) = make(disk, &mut t.warnings, number, lba, n, ty, flag == 0x80) else {
            continue;
        };
        let ext = matches!(ty, 0x05 | 0x0f | 0x85);
        t.partitions.push(p);
        if ext {
            read_logical(disk, &mut t, lba, n)?;
        }
    }
    Ok(t)
}

fn make(
    disk: &Volume,
    warnings: &mut Vec<String>,
    number: u32,
    lba: u64,
    sectors: u64,
    ty: u8,
    bootable: bool,
) -> Option<Partition> {
    let (start, size) = (lba * SECTOR, sectors * SECTOR);
    match disk.slice(start, size) {
        Ok(volume) => Some(Partition {
            number,
            start,
            size,
            kind: format!("{ty:#04x}"),
            type_name: mbr_type_name(ty),
            name: None,
            bootable,
            volume,
        }),
        Err(_) => {
            warnings.push(format!(
                "partition {number} ({start}+{size} bytes) lies outside the disk; skipped"
            ));
            None
        }
    }
}

fn read_logical(disk: &Volume, t: &mut PartitionTable, ext_lba: u64, ext_len: u64) -> Result<()> {
    let mut ebr_rel = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut number = 5u32;
    loop {
        if !seen.insert(ebr_rel) || seen.len() > MAX_LOGICAL {
            t.warnings
                .push("the extended partition's EBR chain loops or is too long; stopped".into());
            return Ok(());
        }
        if ebr_rel >= ext_len {
            t.warnings
                .push("an EBR lies outside the extended partition; stopped".into());
            return Ok(());
        }
        let ebr = disk.read_vec((ext_lba + ebr_rel) * SECTOR, 512)?;
        if ebr[510..512] != [0x55, 0xaa] {
            t.warnings.push("an EBR has no signature; stopped".into());
            return Ok(());
        }
        let ty = ebr[446 + 4];
        if ty != 0 {
            let lba = ext_lba + ebr_rel + u64::from(le32(&ebr, 446 + 8));
            let n = u64::from(le32(&ebr, 446 + 12));
            if let Some(p) = make(disk, &mut t.warnings, number, lba, n, ty, ebr[446] == 0x80) {
                t.partitions.push(p);
            }
            number += 1;
        }
        let next_ty = ebr[462 + 4];
        if next_ty == 0 {
            return Ok(());
        }
        ebr_rel = u64::from(le32(&ebr, 462 + 8));
    }
}

/// A GPT header that passed its checks: (entry array LBA, entries, entry size).
fn gpt_header(disk: &Volume, lba: u64) -> std::result::Result<(u64, u64, u64), String> {
    let h = disk
        .read_vec(lba * SECTOR, 512)
        .map_err(|e| e.to_string())?;
    if &h[0..8] != b"EFI PART" {
        return Err("no EFI PART signature".into());
    }
    let size = usize::try_from(le32(&h, 12)).unwrap_or(0);
    if !(92..=512).contains(&size) {
        return Err(format!("header size {size} out of range"));
    }
    let mut c = h[..size].to_vec();
    c[16..20].fill(0);
    if crc32fast::hash(&c) != le32(&h, 16) {
        return Err("header CRC mismatch".into());
    }
    if le64(&h, 24) != lba {
        return Err("header does not name its own LBA".into());
    }
    let (array, count, esize) = (
        le64(&h, 72),
        u64::from(le32(&h, 80)),
        u64::from(le32(&h, 84)),
    );
    if esize < 128 || esize % 8 != 0 || count.saturating_mul(esize) > MAX_GPT_ARRAY {
        return Err(format!("{count} entries of {esize} bytes out of range"));
    }
    let bytes = count * esize;
    let arr = disk
        .read_vec(
            array.checked_mul(SECTOR).ok_or("array LBA overflows")?,
            usize::try_from(bytes).map_err(|_| "array too large")?,
        )
        .map_err(|e| e.to_string())?;
    if crc32fast::hash(&arr) != le32(&h, 88) {
        return Err("entry array CRC mismatch".into());
    }
    Ok((array, count, esize))
}

fn read_gpt(disk: &Volume, t: &mut PartitionTable) -> Result<()> {
    let last = disk.len() / SECTOR - 1;
    let (array, count, esize) = match gpt_header(disk, 1) {
        Ok(h) => h,
        Err(primary) => match gpt_header(disk, last) {
            Ok(h) => {
                t.warnings.push(format!(
                    "primary GPT header damaged ({primary}); used the backup"
                ));
                h
            }
            Err(backup) => {
                return Err(GuestError::invalid(
                    "GPT",
                    format!("primary header: {primary}; backup header: {backup}"),
                ));
            }
        },
    };
    let arr = disk.read_vec(array * SECTOR, usize::try_from(count * esize).unwrap_or(0))?;
    let esize = usize::try_from(esize).unwrap_or(128);
    for (i, e) in arr.chunks_exact(esize).enumerate() {
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&e[0..16]);
        if ty == [0u8; 16] {
            continue;
        }
        let (first, last_lba) = (le64(e, 32), le64(e, 40));
        let number = u32::try_from(i + 1).unwrap_or(0);
        if last_lba < first {
            t.warnings
                .push(format!("GPT entry {number} ends before it starts; skipped"));
            continue;
        }
        let (start, size) = (
            first.saturating_mul(SECTOR),
            (last_lba - first + 1).saturating_mul(SECTOR),
        );
        let Ok(volume) = disk.slice(start, size) else {
            t.warnings
                .push(format!("GPT entry {number} lies outside the disk; skipped"));
            continue;
        };
        let name: String = char::decode_utf16(
            e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .filter(|c| !c.is_control())
        .collect();
        let kind = guid_text(&ty);
        t.partitions.push(Partition {
            number,
            start,
            size,
            type_name: gpt_type_name(&kind),
            kind,
            name: (!name.is_empty()).then_some(name),
            bootable: false,
            volume,
        });
    }
    Ok(())
}
