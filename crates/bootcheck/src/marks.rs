//! Mount marks: where a filesystem records that it was mounted, so a write there means the
//! guest's kernel mounted its root filesystem read-write.
//!
//! - ext2/3/4: the superblock (1024 bytes at 1024): a read-write mount increments
//!   `s_mnt_count` (offset 0x34) and sets `s_mtime` (0x2C).
//! - XFS: the internal log (`sb_logstart`, `sb_logblocks` in the superblock at 0): a
//!   read-write mount writes log records.
//! - NTFS: the `$LogFile` (MFT record 2, its unnamed `$DATA` runs): Windows writes it when it
//!   mounts the volume.
//!
//! Everything is read from the disk under test and bounded: at most [`MAX_RUNS`] runs, one
//! MFT record of at most 4 KiB.

use crate::Region;
use crate::overlay::Overlay;
use crate::source::DiskSource;

/// Most `$LogFile` runs followed.
pub const MAX_RUNS: usize = 64;

/// The root filesystem, as far as its mount marks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootFs {
    /// ext2/3/4 (`kind` says which) with its superblock.
    Ext {
        /// `ext2`, `ext3` or `ext4`.
        kind: &'static str,
        /// The superblock.
        superblock: Region,
    },
    /// XFS with an internal log.
    Xfs {
        /// The log.
        log: Region,
    },
    /// NTFS.
    Ntfs {
        /// The `$LogFile`'s runs.
        logfile: Vec<Region>,
    },
    /// Something else (Btrfs, LVM, an external XFS log, …): any write inside the root
    /// partition counts.
    Unknown,
}

impl RootFs {
    /// The regions whose writes are the mount mark.
    #[must_use]
    pub fn regions(&self) -> Vec<Region> {
        match self {
            RootFs::Ext { superblock, .. } => vec![*superblock],
            RootFs::Xfs { log } => vec![*log],
            RootFs::Ntfs { logfile } => logfile.clone(),
            RootFs::Unknown => Vec::new(),
        }
    }
}

fn read(src: &dyn DiskSource, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    if offset.checked_add(len as u64)? > src.size() {
        return None;
    }
    src.read_exact_at(&mut b, offset).ok()?;
    Some(b)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// A region inside `root`, or `None` when it leaves it.
fn inside(root: Region, offset: u64, len: u64) -> Option<Region> {
    let start = root.start.checked_add(offset)?;
    let end = start.checked_add(len)?;
    (len > 0 && end <= root.end()).then_some(Region { start, len })
}

/// Finds the filesystem in `root` and its mount marks.
#[must_use]
pub fn probe(src: &dyn DiskSource, root: Region) -> RootFs {
    if let Some(fs) = probe_ext(src, root)
        .or_else(|| probe_xfs(src, root))
        .or_else(|| probe_ntfs(src, root))
    {
        return fs;
    }
    RootFs::Unknown
}

fn probe_ext(src: &dyn DiskSource, root: Region) -> Option<RootFs> {
    let sb = read(src, root.start.checked_add(1024)?, 1024)?;
    if le16(&sb, 0x38) != 0xEF53 {
        return None;
    }
    let compat = le32(&sb, 0x5C);
    let incompat = le32(&sb, 0x60);
    let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(RootFs::Ext {
        kind,
        superblock: inside(root, 1024, 1024)?,
    })
}

fn probe_xfs(src: &dyn DiskSource, root: Region) -> Option<RootFs> {
    let sb = read(src, root.start, 512)?;
    if &sb[0..4] != b"XFSB" {
        return None;
    }
    let blocksize = u64::from(be32(&sb, 4));
    let logstart = be64(&sb, 48);
    let agblocks = u64::from(be32(&sb, 84));
    let logblocks = u64::from(be32(&sb, 96));
    let agblklog = u32::from(sb[124]);
    if !(512..=65536).contains(&blocksize) || logstart == 0 || agblklog >= 32 {
        // An external log (logstart 0) is on another device: no mark on this one.
        return None;
    }
    let agno = logstart >> agblklog;
    let agbno = logstart & ((1u64 << agblklog) - 1);
    let block = agno.checked_mul(agblocks)?.checked_add(agbno)?;
    let log = inside(
        root,
        block.checked_mul(blocksize)?,
        logblocks.checked_mul(blocksize)?,
    )?;
    Some(RootFs::Xfs { log })
}

fn probe_ntfs(src: &dyn DiskSource, root: Region) -> Option<RootFs> {
    let boot = read(src, root.start, 512)?;
    if &boot[3..11] != b"NTFS    " {
        return None;
    }
    let sector = u64::from(le16(&boot, 0x0B));
    let spc = boot[0x0D];
    if !sector.is_power_of_two() || !(256..=4096).contains(&sector) {
        return None;
    }
    // Sectors per cluster: a count, or (from 0xF4 on) a negative power of two.
    let cluster = if spc <= 0x80 {
        sector.checked_mul(u64::from(spc))?
    } else {
        sector.checked_shl(256 - u32::from(spc))?
    };
    if cluster == 0 || cluster > 2 << 20 {
        return None;
    }
    let mft_lcn = u64::from_le_bytes(boot[0x30..0x38].try_into().ok()?);
    let per = boot[0x40].cast_signed();
    let record = if per > 0 {
        cluster.checked_mul(u64::try_from(per).ok()?)?
    } else {
        1u64.checked_shl(u32::from(per.unsigned_abs()))?
    };
    if !(512..=4096).contains(&record) {
        return None;
    }
    let rec_off = mft_lcn.checked_mul(cluster)?.checked_add(2 * record)?;
    let mut rec = read(
        src,
        root.start.checked_add(rec_off)?,
        usize::try_from(record).ok()?,
    )?;
    if &rec[0..4] != b"FILE" {
        return None;
    }
    apply_fixups(&mut rec, usize::try_from(sector).ok()?)?;
    let runs = logfile_runs(&rec)?;
    let logfile: Vec<Region> = runs
        .into_iter()
        .filter_map(|(lcn, len)| inside(root, lcn.checked_mul(cluster)?, len.checked_mul(cluster)?))
        .collect();
    (!logfile.is_empty()).then_some(RootFs::Ntfs { logfile })
}

/// Applies an MFT record's update sequence array: the last two bytes of each sector were
/// replaced by the sequence number and are restored from the array.
fn apply_fixups(rec: &mut [u8], sector: usize) -> Option<()> {
    let off = usize::from(le16(rec, 4));
    let count = usize::from(le16(rec, 6));
    if count < 2 || (count - 1) * sector > rec.len() || off + 2 * count > rec.len() {
        return None;
    }
    let usn = [rec[off], rec[off + 1]];
    for i in 1..count {
        let end = i * sector;
        if rec[end - 2..end] != usn {
            return None;
        }
        rec[end - 2] = rec[off + 2 * i];
        rec[end - 1] = rec[off + 2 * i + 1];
    }
    Some(())
}

/// The unnamed, non-resident `$DATA` attribute's runs as (LCN, clusters).
fn logfile_runs(rec: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut at = usize::from(le16(rec, 0x14));
    for _ in 0..32 {
        let h = rec.get(at..at + 16)?;
        let kind = le32(h, 0);
        if kind == 0xFFFF_FFFF {
            return None;
        }
        let len = usize::try_from(le32(h, 4)).ok()?;
        if len < 16 {
            return None;
        }
        let a = rec.get(at..at.checked_add(len)?)?;
        if kind == 0x80 && a[8] == 1 && a[9] == 0 {
            let runs_at = usize::from(le16(a, 0x20));
            return parse_runs(a.get(runs_at..)?);
        }
        at += len;
    }
    None
}

/// Decodes an NTFS run list (header byte: low nibble the length's size, high nibble the
/// signed relative LCN's size; 0 ends it). Sparse runs are skipped.
fn parse_runs(mut b: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut lcn: i64 = 0;
    while let Some(&h) = b.first() {
        if h == 0 || out.len() >= MAX_RUNS {
            break;
        }
        let (ls, os) = (usize::from(h & 0x0F), usize::from(h >> 4));
        if ls == 0 || ls > 8 || os > 8 {
            return None;
        }
        let len_bytes = b.get(1..1 + ls)?;
        let mut len = 0u64;
        for (i, &x) in len_bytes.iter().enumerate() {
            len |= u64::from(x) << (8 * i);
        }
        if os > 0 {
            let off_bytes = b.get(1 + ls..1 + ls + os)?;
            let mut delta = 0i64;
            for (i, &x) in off_bytes.iter().enumerate() {
                delta |= i64::from(x) << (8 * i);
            }
            // Sign-extend from the top byte given.
            let shift = 64 - 8 * u32::try_from(os).ok()?;
            delta = (delta << shift) >> shift;
            lcn = lcn.checked_add(delta)?;
            out.push((u64::try_from(lcn).ok()?, len));
        }
        b = &b[1 + ls + os..];
    }
    Some(out)
}

/// Whether the overlay shows the mount mark of `fs`; the signal in words when it does.
#[must_use]
pub fn mounted(fs: &RootFs, base: &dyn DiskSource, overlay: &Overlay) -> Option<String> {
    let watches = overlay.watches();
    let hit = |r: &Region| watches.iter().any(|w| w.region == *r && w.writes > 0);
    match fs {
        RootFs::Ext { kind, superblock } => {
            if !hit(superblock) {
                return None;
            }
            let before = read(base, superblock.start, 1024)?;
            let mut after = vec![0u8; 1024];
            overlay.read_at(&mut after, superblock.start).ok()?;
            let (c0, c1) = (le16(&before, 0x34), le16(&after, 0x34));
            let (t0, t1) = (le32(&before, 0x2C), le32(&after, 0x2C));
            if c0 != c1 {
                Some(format!(
                    "{kind} root filesystem mounted read-write (mount count {c0} → {c1})"
                ))
            } else if t0 != t1 {
                Some(format!(
                    "{kind} root filesystem mounted read-write (mount time changed)"
                ))
            } else {
                None
            }
        }
        RootFs::Xfs { log } => hit(log)
            .then(|| "XFS root filesystem mounted read-write (its log was written)".to_string()),
        RootFs::Ntfs { logfile } => logfile
            .iter()
            .any(hit)
            .then(|| "NTFS system volume mounted (its $LogFile was written)".to_string()),
        RootFs::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use super::*;
    use std::io;

    struct Mem(Vec<u8>);
    impl DiskSource for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn test_marks_ext4_superblock_and_xfs_log() {
        let root = Region {
            start: 1 << 20,
            len: 8 << 20,
        };
        let mut d = vec![0u8; 10 << 20];
        let sb = (1 << 20) + 1024;
        d[sb + 0x38..sb + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        d[sb + 0x60..sb + 0x64].copy_from_slice(&0x40u32.to_le_bytes());
        d[sb + 0x34..sb + 0x36].copy_from_slice(&3u16.to_le_bytes());
        let src: std::sync::Arc<dyn DiskSource> = std::sync::Arc::new(Mem(d.clone()));
        let fs = probe(&*src, root);
        assert_eq!(
            fs,
            RootFs::Ext {
                kind: "ext4",
                superblock: Region {
                    start: (1 << 20) + 1024,
                    len: 1024
                }
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let ov = Overlay::create(dir.path(), "m", src.clone(), 1 << 20, &fs.regions()).unwrap();
        assert_eq!(mounted(&fs, &*src, &ov), None);
        // A write that does not change the mount count or time is not a mount.
        ov.write_at(&[0u8; 4], sb as u64 + 0x100).unwrap();
        assert_eq!(mounted(&fs, &*src, &ov), None);
        ov.write_at(&4u16.to_le_bytes(), sb as u64 + 0x34).unwrap();
        assert!(
            mounted(&fs, &*src, &ov)
                .unwrap()
                .contains("mount count 3 → 4")
        );

        // XFS: 4 KiB blocks, 2 AGs of 1024 blocks (agblklog 10), log at AG 1 block 5.
        let mut x = vec![0u8; 10 << 20];
        let s = 1 << 20;
        x[s..s + 4].copy_from_slice(b"XFSB");
        x[s + 4..s + 8].copy_from_slice(&4096u32.to_be_bytes());
        x[s + 48..s + 56].copy_from_slice(&((1u64 << 10) | 5).to_be_bytes());
        x[s + 84..s + 88].copy_from_slice(&512u32.to_be_bytes());
        x[s + 96..s + 100].copy_from_slice(&64u32.to_be_bytes());
        x[s + 124] = 10;
        let fs = probe(&Mem(x), root);
        assert_eq!(
            fs,
            RootFs::Xfs {
                log: Region {
                    start: (1 << 20) + (512 + 5) * 4096,
                    len: 64 * 4096
                }
            }
        );
        assert_eq!(probe(&Mem(vec![0u8; 4 << 20]), root), RootFs::Unknown);
    }

    #[test]
    fn test_marks_ntfs_logfile_from_mft_record_with_fixups() {
        let root = Region {
            start: 0,
            len: 64 << 20,
        };
        let mut d = vec![0u8; 64 << 20];
        // Boot sector: 512-byte sectors, 8 per cluster, MFT at cluster 100, 1 KiB records.
        d[3..11].copy_from_slice(b"NTFS    ");
        d[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        d[0x0D] = 8;
        d[0x30..0x38].copy_from_slice(&100u64.to_le_bytes());
        d[0x40] = 0xF6; // -10: 2^10 = 1024-byte records
        let rec = 100 * 4096 + 2 * 1024;
        let r = &mut d[rec..rec + 1024];
        r[0..4].copy_from_slice(b"FILE");
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes()); // update sequence at 0x30
        r[6..8].copy_from_slice(&3u16.to_le_bytes()); // 1 + 2 sectors
        r[0x30..0x32].copy_from_slice(&7u16.to_le_bytes()); // sequence number
        r[0x32..0x34].copy_from_slice(&0u16.to_le_bytes()); // saved bytes of sector 1
        r[0x34..0x36].copy_from_slice(&0u16.to_le_bytes()); // saved bytes of sector 2
        r[510..512].copy_from_slice(&7u16.to_le_bytes());
        r[1022..1024].copy_from_slice(&7u16.to_le_bytes());
        r[0x14..0x16].copy_from_slice(&0x38u16.to_le_bytes()); // first attribute
        // $STANDARD_INFORMATION (resident, 0x18 bytes), then $DATA non-resident.
        let a = 0x38;
        r[a..a + 4].copy_from_slice(&0x10u32.to_le_bytes());
        r[a + 4..a + 8].copy_from_slice(&0x18u32.to_le_bytes());
        let a = a + 0x18;
        r[a..a + 4].copy_from_slice(&0x80u32.to_le_bytes());
        r[a + 4..a + 8].copy_from_slice(&0x48u32.to_le_bytes());
        r[a + 8] = 1;
        r[a + 0x20..a + 0x22].copy_from_slice(&0x40u16.to_le_bytes());
        // Runs: 16 clusters at LCN 0x200, then 8 clusters at -0x100 relative (LCN 0x100).
        r[a + 0x40..a + 0x48].copy_from_slice(&[0x21, 0x10, 0x00, 0x02, 0x21, 0x08, 0x00, 0xFF]);
        let fs = probe(&Mem(d), root);
        assert_eq!(
            fs,
            RootFs::Ntfs {
                logfile: vec![
                    Region {
                        start: 0x200 * 4096,
                        len: 16 * 4096
                    },
                    Region {
                        start: 0x100 * 4096,
                        len: 8 * 4096
                    }
                ]
            }
        );
        // Hostile run lists end cleanly.
        assert_eq!(parse_runs(&[0x09]), None);
        assert_eq!(parse_runs(&[0x21, 0x10]), None);
        assert_eq!(parse_runs(&[0x11, 0x01, 0x80]), None);
        assert_eq!(parse_runs(&[0x11; 1000]).map(|r| r.len()), Some(MAX_RUNS));
    }
}
