//! Filesystem identification from superblock signatures.
//!
//! | kind | where the signature is |
//! |---|---|
//! | ext2/3/4 | `0xEF53` at 1024+56; ext4 with extents/64bit/flex_bg, ext3 with a journal |
//! | XFS | `XFSB` at 0 |
//! | Btrfs | `_BHRfS_M` at 65536+64 |
//! | NTFS | `NTFS    ` at 3 |
//! | FAT12/16/32 | a sane BIOS parameter block; the type from the cluster count |
//! | swap | `SWAPSPACE2` at 4086 |
//! | LVM2 PV | `LABELONE` in sectors 0–3 with `LVM2 001` |
//! | LUKS | `LUKS\xba\xbe` at 0 (reported as encrypted) |
//! | ISO 9660 | `CD001` at 32769 |

use crate::error::Result;
use crate::volume::Volume;

/// Kinds of filesystems and containers recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext2.
    Ext2,
    /// ext3.
    Ext3,
    /// ext4.
    Ext4,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// NTFS.
    Ntfs,
    /// FAT12.
    Fat12,
    /// FAT16.
    Fat16,
    /// FAT32.
    Fat32,
    /// Linux swap.
    Swap,
    /// LVM2 physical volume.
    Lvm2,
    /// LUKS encrypted volume.
    Luks,
    /// ISO 9660.
    Iso9660,
}

/// What lives on a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsInfo {
    /// Kind.
    pub kind: FsKind,
    /// Label, if the superblock holds one.
    pub label: Option<String>,
    /// True for LUKS.
    pub encrypted: bool,
}

fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s: String = String::from_utf8_lossy(&b[..end])
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let s = s.trim().to_string();
    (!s.is_empty() && s != "NO NAME").then_some(s)
}

fn read(vol: &Volume, at: u64, len: usize) -> Option<Vec<u8>> {
    if at.checked_add(len as u64)? > vol.len() {
        return None;
    }
    vol.read_vec(at, len).ok()
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn fat(b: &[u8]) -> Option<FsInfo> {
    if b[510..512] != [0x55, 0xaa] {
        return None;
    }
    let bps = u32::from(u16le(b, 11));
    let spc = u32::from(b[13]);
    let reserved = u32::from(u16le(b, 14));
    let fats = u32::from(b[16]);
    let root_entries = u32::from(u16le(b, 17));
    if !(512..=4096).contains(&bps)
        || !bps.is_power_of_two()
        || spc == 0
        || !spc.is_power_of_two()
        || reserved == 0
        || !(1..=2).contains(&fats)
    {
        return None;
    }
    let total = match u16le(b, 19) {
        0 => u32le(b, 32),
        n => u32::from(n),
    };
    let fat16 = u32::from(u16le(b, 22));
    let fat_size = if fat16 == 0 { u32le(b, 36) } else { fat16 };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data = total.checked_sub(reserved + fats.checked_mul(fat_size)? + root_sectors)?;
    let clusters = data / spc;
    let (kind, lab) = if fat16 == 0 {
        (FsKind::Fat32, &b[71..82])
    } else if clusters < 4085 {
        (FsKind::Fat12, &b[43..54])
    } else {
        (FsKind::Fat16, &b[43..54])
    };
    Some(FsInfo {
        kind,
        label: label(lab),
        encrypted: false,
    })
}

/// Identifies what lives on `vol`; `None` when nothing is recognised.
pub fn probe(vol: &Volume) -> Result<Option<FsInfo>> {
    let info = |kind, label| {
        Some(FsInfo {
            kind,
            label,
            encrypted: kind == FsKind::Luks,
        })
    };
    if let Some(b) = read(vol, 0, 4096) {
        if &b[0..6] == b"LUKS\xba\xbe" {
            return Ok(info(FsKind::Luks, label(&b[24..56]).filter(|_| b[7] == 2)));
        }
        if &b[0..4] == b"XFSB" {
            return Ok(info(FsKind::Xfs, label(&b[108..120])));
        }
        if &b[3..11] == b"NTFS    " {
            return Ok(info(FsKind::Ntfs, None));
        }
        if &b[4086..4096] == b"SWAPSPACE2" || &b[4086..4096] == b"SWAP-SPACE" {
            return Ok(info(FsKind::Swap, label(&b[1052..1068])));
        }
        for s in 0..4 {
            let o = s * 512;
            if &b[o..o + 8] == b"LABELONE" && &b[o + 24..o + 32] == b"LVM2 001" {
                return Ok(info(FsKind::Lvm2, None));
            }
        }
        if let Some(f) = fat(&b[..512]) {
            return Ok(Some(f));
        }
    }
    if let Some(sb) = read(vol, 1024, 1024)
        && u16le(&sb, 56) == 0xef53
    {
        let compat = u32le(&sb, 92);
        let incompat = u32le(&sb, 96);
        // extents (0x40), 64bit (0x80), flex_bg (0x200)
        let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            FsKind::Ext4
        } else if compat & 0x4 != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        };
        return Ok(info(kind, label(&sb[120..136])));
    }
    if let Some(b) = read(vol, 65536, 4096)
        && &b[64..72] == b"_BHRfS_M"
    {
        return Ok(info(FsKind::Btrfs, label(&b[0x12b..0x12b + 256])));
    }
    if let Some(b) = read(vol, 32768, 2048)
        && &b[1..6] == b"CD001"
    {
        return Ok(info(FsKind::Iso9660, label(&b[40..72])));
    }
    Ok(None)
}
