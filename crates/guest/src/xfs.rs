//! A minimal read-only XFS reader: enough to read `/etc/os-release`, `/etc/fstab`, `/boot` and
//! `/lib/modules` from a guest whose root is XFS (RHEL, CentOS, Rocky, Alma, Amazon Linux).
//! No crate reads XFS, so this one is ours.
//!
//! What it understands (from the XFS on-disk format, all fields big-endian):
//! - the primary superblock, versions 4 and 5 (CRC-enabled), any block size 512 B–64 KiB,
//!   inode sizes 256 B–2 KiB, directory blocks larger than filesystem blocks;
//! - inodes versions 1–3, 32- and 64-bit extent counters (`nrext64`);
//! - data forks in local (inline), extent-list and B+tree form;
//! - directories in short form, block form, and leaf/node form (only the data blocks are read:
//!   every entry lives in one, and the hash index is not needed to list or look up);
//! - symbolic links, inline or in remote blocks (with the v5 block header).
//!
//! Everything read from the disk is checked before it is used: block and inode numbers must
//! lie inside their allocation group and the filesystem, counts must fit the structures that
//! hold them, B+trees are at most [`MAX_BTREE_LEVELS`] deep, of at most [`MAX_BTREE_BLOCKS`]
//! blocks and [`MAX_EXTENTS`] records, symbolic links are followed at most 40 times.

use crate::error::{GuestError, Result};
use crate::fs::{Entry, EntryKind, GuestFs, MAX_DIR_ENTRIES};
use crate::volume::Volume;

/// Deepest data-fork B+tree accepted.
pub const MAX_BTREE_LEVELS: u16 = 9;
/// Most extents read for one file.
pub const MAX_EXTENTS: usize = 1 << 20;
/// Most B+tree blocks read for one file (a million extents fill about 4,200 leaves of 4 KiB).
pub const MAX_BTREE_BLOCKS: usize = 1 << 16;
/// Most symbolic links followed while resolving one path.
const MAX_SYMLINKS: u32 = 40;
/// Longest symbolic link target.
const MAX_LINK: u64 = 4096;
/// Directories are read up to this many bytes of data blocks.
const MAX_DIR_BYTES: u64 = 256 << 20;

const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFREG: u16 = 0o100_000;
const S_IFLNK: u16 = 0o120_000;

/// Incompatible v5 features this reader understands: ftype, sparse inodes, meta UUID,
/// big timestamps, needs-repair, 64-bit extent counters, exchange-range, parent pointers.
const KNOWN_INCOMPAT: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn bad(what: &'static str, why: impl Into<String>) -> GuestError {
    GuestError::invalid(what, why)
}

/// The superblock fields the reader needs.
#[derive(Debug, Clone)]
struct Super {
    block_size: u64,
    ag_blocks: u64,
    ag_count: u64,
    ag_blk_log: u32,
    inop_blog: u32,
    inode_size: u64,
    root: u64,
    v5: bool,
    ftype: bool,
    dir_block: u64,
}

/// One mapping of file blocks to filesystem blocks.
#[derive(Debug, Clone, Copy)]
struct Extent {
    /// First file block.
    off: u64,
    /// First filesystem block (AG-encoded).
    block: u64,
    /// Blocks.
    len: u64,
    /// Preallocated, reads as zeros.
    unwritten: bool,
}

/// An inode as read from disk.
#[derive(Debug)]
struct Inode {
    ino: u64,
    mode: u16,
    format: u8,
    size: u64,
    nextents: u64,
    fork: Vec<u8>,
}

impl Inode {
    fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFDIR => EntryKind::Dir,
            S_IFREG => EntryKind::File,
            S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

/// An XFS filesystem opened read-only.
pub struct Xfs {
    vol: Volume,
    sb: Super,
}

impl std::fmt::Debug for Xfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xfs").field("sb", &self.sb).finish()
    }
}

fn log2_exact(v: u64) -> Option<u32> {
    v.is_power_of_two().then(|| v.trailing_zeros())
}

impl Xfs {
    /// Opens the XFS filesystem on `vol`, checking its primary superblock.
    pub fn open(vol: Volume) -> Result<Xfs> {
        const WHAT: &str = "XFS superblock";
        if vol.len() < 512 {
            return Err(bad(WHAT, "the volume is smaller than one sector"));
        }
        let b = vol.read_vec(0, 512)?;
        if &b[0..4] != b"XFSB" {
            return Err(bad(WHAT, "no XFSB magic"));
        }
        let block_size = u64::from(be32(&b, 4));
        let blocks = be64(&b, 8);
        let root = be64(&b, 56);
        let ag_blocks = u64::from(be32(&b, 84));
        let ag_count = u64::from(be32(&b, 88));
        let version = be16(&b, 100) & 0xf;
        let inode_size = u64::from(be16(&b, 104));
        let inop_block = u64::from(be16(&b, 106));
        let (block_log, inode_log, inop_blog, ag_blk_log) = (b[120], b[122], b[123], b[124]);
        let dir_blk_log = u32::from(b[192]);
        let features2 = be32(&b, 200);
        let incompat = be32(&b, 216);
        if !(4..=5).contains(&version) {
            return Err(GuestError::unsupported(WHAT, format!("version {version}")));
        }
        let v5 = version == 5;
        if !(512..=65536).contains(&block_size)
            || log2_exact(block_size) != Some(u32::from(block_log))
        {
            return Err(bad(
                WHAT,
                format!("block size {block_size} / log {block_log}"),
            ));
        }
        if !(256..=2048).contains(&inode_size)
            || log2_exact(inode_size) != Some(u32::from(inode_log))
            || inop_block != block_size / inode_size
            || log2_exact(inop_block) != Some(u32::from(inop_blog))
        {
            return Err(bad(
                WHAT,
                format!("inode size {inode_size}, {inop_block} per block"),
            ));
        }
        if ag_blocks < 5
            || ag_count == 0
            || u32::from(ag_blk_log) != 64 - (ag_blocks - 1).leading_zeros()
            || u32::from(ag_blk_log) + u32::from(inop_blog) > 56
        {
            return Err(bad(
                WHAT,
                format!("{ag_count} allocation groups of {ag_blocks} blocks (log {ag_blk_log})"),
            ));
        }
        let span = ag_blocks
            .checked_mul(ag_count)
            .and_then(|n| n.checked_mul(block_size));
        if blocks == 0 || span.is_none() || blocks > ag_blocks * ag_count {
            return Err(bad(WHAT, format!("{blocks} blocks do not fit the groups")));
        }
        let dir_block = block_size << dir_blk_log.min(16);
        if dir_block > 65536 {
            return Err(bad(WHAT, format!("directory block size {dir_block}")));
        }
        if v5 && incompat & !KNOWN_INCOMPAT != 0 {
            return Err(GuestError::unsupported(
                WHAT,
                format!(
                    "incompatible feature bits {:#x}",
                    incompat & !KNOWN_INCOMPAT
                ),
            ));
        }
        let ftype = if v5 {
            incompat & 1 != 0
        } else {
            features2 & 0x200 != 0
        };
        let sb = Super {
            block_size,
            ag_blocks,
            ag_count,
            ag_blk_log: u32::from(ag_blk_log),
            inop_blog: u32::from(inop_blog),
            inode_size,
            root,
            v5,
            ftype,
            dir_block,
        };
        let fs = Xfs { vol, sb };
        let root = fs.inode(root)?;
        if root.kind() != EntryKind::Dir {
            return Err(bad(WHAT, "the root inode is not a directory"));
        }
        Ok(fs)
    }

    /// Byte offset of filesystem block `fsb` (AG number in the high bits), checked to leave
    /// room for `count` blocks inside its allocation group.
    fn block_offset(&self, fsb: u64, count: u64) -> Result<u64> {
        let sb = &self.sb;
        let ag = fsb >> sb.ag_blk_log;
        let agb = fsb & ((1u64 << sb.ag_blk_log) - 1);
        if ag >= sb.ag_count || agb.checked_add(count).is_none_or(|e| e > sb.ag_blocks) {
            return Err(bad(
                "XFS block map",
                format!("block {ag}/{agb} (+{count}) lies outside the filesystem"),
            ));
        }
        Ok((ag * sb.ag_blocks + agb) * sb.block_size)
    }

    fn read_block(&self, fsb: u64) -> Result<Vec<u8>> {
        let at = self.block_offset(fsb, 1)?;
        let len = usize::try_from(self.sb.block_size).unwrap_or(4096);
        self.vol.read_vec(at, len)
    }

    fn inode(&self, ino: u64) -> Result<Inode> {
        const WHAT: &str = "XFS inode";
        let sb = &self.sb;
        let per_ag = sb.ag_blk_log + sb.inop_blog;
        let ag = ino >> per_ag;
        let agb = (ino >> sb.inop_blog) & ((1u64 << sb.ag_blk_log) - 1);
        let slot = ino & ((1u64 << sb.inop_blog) - 1);
        if ag >= sb.ag_count || agb >= sb.ag_blocks {
            return Err(bad(
                WHAT,
                format!("inode {ino} lies outside the filesystem"),
            ));
        }
        let at = (ag * sb.ag_blocks + agb) * sb.block_size + slot * sb.inode_size;
        let b = self
            .vol
            .read_vec(at, usize::try_from(sb.inode_size).unwrap_or(256))?;
        if be16(&b, 0) != 0x494e {
            return Err(bad(WHAT, format!("inode {ino} has no IN magic")));
        }
        let version = b[4];
        let core = match version {
            1 | 2 if !sb.v5 => 100,
            3 if sb.v5 => 176,
            v => return Err(bad(WHAT, format!("inode {ino} has version {v}"))),
        };
        if version == 3 && be64(&b, 152) != ino {
            return Err(bad(
                WHAT,
                format!("inode {ino} says it is {}", be64(&b, 152)),
            ));
        }
        let nrext64 = version == 3 && be64(&b, 120) & (1 << 4) != 0;
        let nextents = if nrext64 {
            be64(&b, 24)
        } else {
            u64::from(be32(&b, 76))
        };
        let forkoff = usize::from(b[82]) * 8;
        let end = if forkoff == 0 {
            b.len()
        } else {
            core + forkoff
        };
        if end > b.len() {
            return Err(bad(WHAT, format!("inode {ino} has fork offset {forkoff}")));
        }
        Ok(Inode {
            ino,
            mode: be16(&b, 2),
            format: b[5],
            size: be64(&b, 56),
            nextents,
            fork: b[core..end].to_vec(),
        })
    }

    fn extent(rec: &[u8]) -> Extent {
        let l0 = be64(rec, 0);
        let l1 = be64(rec, 8);
        Extent {
            unwritten: l0 >> 63 != 0,
            off: (l0 & ((1u64 << 63) - 1)) >> 9,
            block: ((l0 & 0x1ff) << 43) | (l1 >> 21),
            len: l1 & ((1u64 << 21) - 1),
        }
    }

    /// The data fork's extents, sorted by file offset.
    fn extents(&self, ino: &Inode) -> Result<Vec<Extent>> {
        const WHAT: &str = "XFS extent list";
        let mut out = Vec::new();
        match ino.format {
            2 => {
                let n = usize::try_from(ino.nextents).unwrap_or(usize::MAX);
                if n > ino.fork.len() / 16 {
                    return Err(bad(
                        WHAT,
                        format!("inode {} claims {n} extents in its fork", ino.ino),
                    ));
                }
                out.extend(ino.fork.chunks_exact(16).take(n).map(Self::extent));
            }
            3 => {
                let f = &ino.fork;
                if f.len() < 20 {
                    return Err(bad("XFS B+tree root", "the fork is too small"));
                }
                let level = be16(f, 0);
                let n = usize::from(be16(f, 2));
                let max = (f.len() - 4) / 16;
                if level == 0 || level > MAX_BTREE_LEVELS || n == 0 || n > max {
                    return Err(bad(
                        "XFS B+tree root",
                        format!("level {level} with {n} records (room for {max})"),
                    ));
                }
                let ptrs = 4 + max * 8;
                let mut visited = 0;
                for i in 0..n {
                    self.walk_btree(
                        be64(f, ptrs + i * 8),
                        level - 1,
                        ino.ino,
                        &mut out,
                        &mut visited,
                    )?;
                }
            }
            f => {
                return Err(GuestError::unsupported(
                    WHAT,
                    format!("data fork format {f} of inode {}", ino.ino),
                ));
            }
        }
        out.sort_by_key(|e| e.off);
        Ok(out)
    }

    fn walk_btree(
        &self,
        fsb: u64,
        level: u16,
        owner: u64,
        out: &mut Vec<Extent>,
        visited: &mut usize,
    ) -> Result<()> {
        const WHAT: &str = "XFS B+tree block";
        // Nodes full of pointers to empty leaves would otherwise fan out without bound.
        *visited += 1;
        if *visited > MAX_BTREE_BLOCKS {
            return Err(GuestError::unsupported(
                WHAT,
                format!("a data fork of more than {MAX_BTREE_BLOCKS} B+tree blocks"),
            ));
        }
        let b = self.read_block(fsb)?;
        let (magic, hdr) = if self.sb.v5 {
            (b"BMA3", 72)
        } else {
            (b"BMAP", 24)
        };
        if &b[0..4] != magic {
            return Err(bad(
                WHAT,
                format!(
                    "block {fsb} has no {} magic",
                    String::from_utf8_lossy(magic)
                ),
            ));
        }
        if self.sb.v5 && be64(&b, 56) != owner {
            return Err(bad(
                WHAT,
                format!("block {fsb} belongs to inode {}", be64(&b, 56)),
            ));
        }
        let got = be16(&b, 4);
        let n = usize::from(be16(&b, 6));
        let max = (b.len() - hdr) / 16;
        if got != level || n > max {
            return Err(bad(
                WHAT,
                format!(
                    "block {fsb}: level {got} (expected {level}), {n} records (room for {max})"
                ),
            ));
        }
        if level == 0 {
            if out.len() + n > MAX_EXTENTS {
                return Err(GuestError::unsupported(
                    WHAT,
                    format!("a file of more than {MAX_EXTENTS} extents"),
                ));
            }
            out.extend(b[hdr..hdr + n * 16].chunks_exact(16).map(Self::extent));
        } else {
            let ptrs = hdr + max * 8;
            for i in 0..n {
                self.walk_btree(be64(&b, ptrs + i * 8), level - 1, owner, out, visited)?;
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at file offset `off` of a file whose extents are `ext`; holes and
    /// unwritten extents read as zeros.
    fn read_mapped(&self, ext: &[Extent], off: u64, len: usize) -> Result<Vec<u8>> {
        let bs = self.sb.block_size;
        let mut out = Vec::new();
        out.try_reserve_exact(len)
            .map_err(|_| bad("XFS file", "too large to read"))?;
        out.resize(len, 0);
        let end = off + len as u64;
        // Sorted by file offset: start at the first extent that ends after `off`.
        let first = ext.partition_point(|e| e.off.saturating_add(e.len).saturating_mul(bs) <= off);
        for e in &ext[first..] {
            let (es, ee) = (
                e.off.saturating_mul(bs),
                e.off.saturating_add(e.len).saturating_mul(bs),
            );
            if es >= end {
                break;
            }
            let (s, t) = (es.max(off), ee.min(end));
            if e.unwritten || s >= t {
                continue;
            }
            let base = self.block_offset(e.block, e.len)?;
            let dst = usize::try_from(s - off).unwrap_or(0)..usize::try_from(t - off).unwrap_or(0);
            self.vol.read_at(&mut out[dst], base + (s - es))?;
        }
        Ok(out)
    }

    /// At most `max` bytes of the inode's contents.
    fn contents(&self, ino: &Inode, max: u64) -> Result<Vec<u8>> {
        let len = ino.size.min(max);
        if ino.format == 1 {
            let n = usize::try_from(len).unwrap_or(usize::MAX);
            return ino.fork.get(..n).map(<[u8]>::to_vec).ok_or_else(|| {
                bad(
                    "XFS inline data",
                    format!("inode {} holds {} bytes inline", ino.ino, ino.size),
                )
            });
        }
        let ext = self.extents(ino)?;
        self.read_mapped(&ext, 0, usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn link_target(&self, ino: &Inode) -> Result<String> {
        if ino.size == 0 || ino.size > MAX_LINK {
            return Err(bad(
                "XFS symbolic link",
                format!("inode {} has a {}-byte target", ino.ino, ino.size),
            ));
        }
        let raw = if ino.format == 1 || !self.sb.v5 {
            self.contents(ino, MAX_LINK)?
        } else {
            // v5 remote links: each block starts with a 56-byte XSLM header.
            let ext = self.extents(ino)?;
            let mut raw = Vec::new();
            let bs = self.sb.block_size;
            let blocks = ext
                .iter()
                .map(|e| e.len)
                .sum::<u64>()
                .min(MAX_LINK / 256 + 1);
            for i in 0..blocks {
                let b = self.read_mapped(&ext, i * bs, usize::try_from(bs).unwrap_or(0))?;
                if &b[0..4] != b"XSLM" {
                    return Err(bad(
                        "XFS symbolic link",
                        format!("inode {} block {i} has no XSLM magic", ino.ino),
                    ));
                }
                let n = usize::try_from(be32(&b, 8)).unwrap_or(0).min(b.len() - 56);
                raw.extend_from_slice(&b[56..56 + n]);
            }
            raw.truncate(usize::try_from(ino.size).unwrap_or(0));
            raw
        };
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    /// The entries of a directory inode: (name, inode number, kind if the entry says it).
    fn entries(&self, dir: &Inode) -> Result<Vec<(String, u64, Option<EntryKind>)>> {
        let mut out = Vec::new();
        match dir.format {
            1 => self.short_form(dir, &mut out)?,
            2 | 3 => {
                let ext = self.extents(dir)?;
                let (bs, dbs) = (self.sb.block_size, self.sb.dir_block);
                // Data blocks live below the leaf offset (32 GiB); the index blocks above it.
                let leaf = (32u64 << 30) / bs;
                let limit = MAX_DIR_BYTES.min(32 << 30);
                // Extents are sorted: one pass, each directory block read once even when it
                // spans two extents.
                let mut next = 0u64;
                'extents: for e in ext.iter().filter(|e| !e.unwritten && e.off < leaf) {
                    let mut at = (e.off * bs / dbs * dbs).max(next);
                    let stop = ((e.off + e.len).min(leaf) * bs).min(limit);
                    while at < stop {
                        let b = self.read_mapped(&ext, at, usize::try_from(dbs).unwrap_or(4096))?;
                        self.data_block(&b, dir.ino, &mut out)?;
                        at += dbs;
                        if out.len() > MAX_DIR_ENTRIES {
                            break 'extents;
                        }
                    }
                    next = next.max(at);
                }
            }
            f => {
                return Err(GuestError::unsupported(
                    "XFS directory",
                    format!("data fork format {f} of inode {}", dir.ino),
                ));
            }
        }
        out.retain(|(n, _, _)| n != "." && n != "..");
        out.truncate(MAX_DIR_ENTRIES);
        Ok(out)
    }

    fn ftype(&self, t: u8) -> Option<EntryKind> {
        Some(match t {
            1 => EntryKind::File,
            2 => EntryKind::Dir,
            7 => EntryKind::Symlink,
            _ => EntryKind::Other,
        })
    }

    fn short_form(
        &self,
        dir: &Inode,
        out: &mut Vec<(String, u64, Option<EntryKind>)>,
    ) -> Result<()> {
        const WHAT: &str = "XFS short-form directory";
        let f = &dir.fork;
        let size = usize::try_from(dir.size).unwrap_or(usize::MAX);
        if size < 6 || size > f.len() {
            return Err(bad(
                WHAT,
                format!("inode {} holds {} bytes inline", dir.ino, dir.size),
            ));
        }
        let f = &f[..size];
        let count = usize::from(f[0]);
        let wide = f[1] != 0;
        let ino_len = if wide { 8 } else { 4 };
        let mut p = 2 + ino_len;
        for _ in 0..count {
            let n = usize::from(
                *f.get(p)
                    .ok_or_else(|| bad(WHAT, "entries run past its size"))?,
            );
            let name_at = p + 3;
            let ft = usize::from(self.sb.ftype);
            let ino_at = name_at + n + ft;
            if n == 0 || ino_at + ino_len > f.len() {
                return Err(bad(
                    WHAT,
                    format!("inode {}: entry of {n} bytes runs past its size", dir.ino),
                ));
            }
            let name = String::from_utf8_lossy(&f[name_at..name_at + n]).into_owned();
            let kind = if self.sb.ftype {
                self.ftype(f[name_at + n])
            } else {
                None
            };
            let ino = if wide {
                be64(f, ino_at) & ((1u64 << 56) - 1)
            } else {
                u64::from(be32(f, ino_at))
            };
            out.push((name, ino, kind));
            p = ino_at + ino_len;
        }
        Ok(())
    }

    fn data_block(
        &self,
        b: &[u8],
        dir: u64,
        out: &mut Vec<(String, u64, Option<EntryKind>)>,
    ) -> Result<()> {
        const WHAT: &str = "XFS directory block";
        let magic = &b[0..4];
        let (block_form, hdr) = match (magic, self.sb.v5) {
            (b"XD2B", false) => (true, 16),
            (b"XD2D", false) => (false, 16),
            (b"XDB3", true) => (true, 64),
            (b"XDD3", true) => (false, 64),
            // Free-index and leaf blocks can sit below the leaf offset only when damaged;
            // a hole filled with zeros is skipped.
            _ if magic == [0; 4] => return Ok(()),
            _ => {
                return Err(bad(
                    WHAT,
                    format!("directory {dir} has a block with magic {magic:02x?}"),
                ));
            }
        };
        if self.sb.v5 && be64(b, 40) != dir {
            return Err(bad(
                WHAT,
                format!("directory {dir} holds a block of inode {}", be64(b, 40)),
            ));
        }
        let end = if block_form {
            let count = usize::try_from(be32(b, b.len() - 8)).unwrap_or(usize::MAX);
            count
                .checked_mul(8)
                .and_then(|n| (b.len() - 8).checked_sub(n))
                .filter(|&e| e >= hdr)
                .ok_or_else(|| {
                    bad(
                        WHAT,
                        format!("directory {dir}: {count} leaf entries do not fit"),
                    )
                })?
        } else {
            b.len()
        };
        let ft = usize::from(self.sb.ftype);
        let mut p = hdr;
        while p + 8 <= end {
            if be16(b, p) == 0xffff {
                let len = usize::from(be16(b, p + 2));
                if len < 8 || len % 8 != 0 || p + len > end {
                    return Err(bad(
                        WHAT,
                        format!("directory {dir}: free space of {len} bytes at {p}"),
                    ));
                }
                p += len;
                continue;
            }
            let n = usize::from(b[p + 8]);
            let size = (8 + 1 + n + ft + 2).div_ceil(8) * 8;
            if n == 0 || p + size > end {
                return Err(bad(
                    WHAT,
                    format!("directory {dir}: entry of {n} bytes at {p} runs past the block"),
                ));
            }
            let name = String::from_utf8_lossy(&b[p + 9..p + 9 + n]).into_owned();
            let kind = if self.sb.ftype {
                self.ftype(b[p + 9 + n])
            } else {
                None
            };
            out.push((name, be64(b, p), kind));
            p += size;
        }
        Ok(())
    }

    /// Resolves `path` to an inode, following symbolic links (the last one only when
    /// `follow_last`).
    fn resolve(&self, path: &str, follow_last: bool) -> Result<Inode> {
        let mut parts: std::collections::VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect();
        let mut stack = vec![self.inode(self.sb.root)?];
        let mut links = 0;
        while let Some(part) = parts.pop_front() {
            if part == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let dir = stack.last().ok_or_else(|| bad("XFS path", "empty"))?;
            if dir.kind() != EntryKind::Dir {
                return Err(GuestError::NotFound(path.to_string()));
            }
            let (_, ino, _) = self
                .entries(dir)?
                .into_iter()
                .find(|(n, _, _)| *n == part)
                .ok_or_else(|| GuestError::NotFound(path.to_string()))?;
            let node = self.inode(ino)?;
            if node.kind() == EntryKind::Symlink && (follow_last || !parts.is_empty()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(bad("XFS path", format!("{path}: too many symbolic links")));
                }
                let target = self.link_target(&node)?;
                if target.starts_with('/') {
                    stack.truncate(1);
                }
                for c in target
                    .split('/')
                    .rev()
                    .filter(|c| !c.is_empty() && *c != ".")
                {
                    parts.push_front(c.to_string());
                }
                if parts.len() > 4096 {
                    return Err(bad("XFS path", format!("{path}: too many components")));
                }
                continue;
            }
            stack.push(node);
        }
        stack.pop().ok_or_else(|| bad("XFS path", "empty"))
    }
}

impl GuestFs for Xfs {
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let ino = self.resolve(path, true)?;
        match ino.kind() {
            EntryKind::File => self.contents(&ino, max),
            _ => Err(bad("XFS file", format!("{path} is not a regular file"))),
        }
    }

    fn list_dir(&self, path: &str) -> Result<Vec<Entry>> {
        let dir = self.resolve(path, true)?;
        if dir.kind() != EntryKind::Dir {
            return Err(bad("XFS directory", format!("{path} is not a directory")));
        }
        let mut out = Vec::new();
        for (name, ino, kind) in self.entries(&dir)? {
            let kind = match kind {
                Some(k) => k,
                None => self.inode(ino).map_or(EntryKind::Other, |i| i.kind()),
            };
            out.push(Entry { name, kind });
        }
        Ok(out)
    }

    fn exists(&self, path: &str) -> bool {
        self.resolve(path, true).is_ok()
    }
}
