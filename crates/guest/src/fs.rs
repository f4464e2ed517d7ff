//! Read-only access to files inside a guest's filesystems, through one small interface.
//!
//! - ext2/3/4 through the `ext4-view` crate (read-only by design, checks metadata checksums);
//! - FAT12/16/32 (the EFI system partition) through the `fatfs` crate, given a device that
//!   refuses every write;
//! - NTFS through the `ntfs` crate (see [`crate::ntfs_fs`]);
//! - XFS through our own reader (see [`crate::xfs`]).
//!
//! Every read is bounded by the caller's `max`; paths are absolute, `/`-separated.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::error::{GuestError, Result};
use crate::volume::Volume;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name within its directory.
    pub name: String,
    /// Kind.
    pub kind: EntryKind,
}

/// Most entries read from one directory.
pub const MAX_DIR_ENTRIES: usize = 100_000;

/// A guest filesystem opened read-only.
pub trait GuestFs {
    /// Reads at most `max` bytes of the file at `path` (symbolic links followed).
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>>;
    /// Lists the directory at `path` (symbolic links followed), at most [`MAX_DIR_ENTRIES`].
    fn list_dir(&self, path: &str) -> Result<Vec<Entry>>;
    /// True when `path` exists (symbolic links followed).
    fn exists(&self, path: &str) -> bool {
        self.read_file(path, 0).is_ok() || self.list_dir(path).is_ok()
    }
}

/// Reads a volume for `ext4-view`.
struct ExtReader(Volume);

impl ext4_view::Ext4Read for ExtReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0
            .read_at(dst, start_byte)
            .map_err(|e| e.to_string().into())
    }
}

/// An ext2/3/4 filesystem.
pub struct Ext4 {
    fs: ext4_view::Ext4,
}

fn ext_err(path: &str, e: &ext4_view::Ext4Error) -> GuestError {
    match e {
        ext4_view::Ext4Error::NotFound => GuestError::NotFound(path.to_string()),
        other => GuestError::invalid("ext4 filesystem", format!("{path}: {other}")),
    }
}

impl Ext4 {
    /// Opens the ext2/3/4 filesystem on `vol`.
    pub fn open(vol: Volume) -> Result<Ext4> {
        let fs = ext4_view::Ext4::load(Box::new(ExtReader(vol)))
            .map_err(|e| GuestError::invalid("ext4 superblock", e.to_string()))?;
        Ok(Ext4 { fs })
    }
}

impl GuestFs for Ext4 {
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let mut f = self.fs.open(path).map_err(|e| ext_err(path, &e))?;
        let mut out = Vec::new();
        let cap = usize::try_from(max.min(f.metadata().len())).unwrap_or(0);
        out.try_reserve(cap)
            .map_err(|_| GuestError::invalid("ext4 file", "too large to read"))?;
        (&mut f)
            .take(max)
            .read_to_end(&mut out)
            .map_err(|e| GuestError::invalid("ext4 file", format!("{path}: {e}")))?;
        Ok(out)
    }

    fn list_dir(&self, path: &str) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for e in self.fs.read_dir(path).map_err(|e| ext_err(path, &e))? {
            let e = e.map_err(|e| ext_err(path, &e))?;
            let name = e.file_name().display().to_string();
            if name == "." || name == ".." {
                continue;
            }
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => EntryKind::Dir,
                Ok(t) if t.is_regular_file() => EntryKind::File,
                Ok(t) if t.is_symlink() => EntryKind::Symlink,
                _ => EntryKind::Other,
            };
            if out.len() >= MAX_DIR_ENTRIES {
                break;
            }
            out.push(Entry { name, kind });
        }
        Ok(out)
    }

    fn exists(&self, path: &str) -> bool {
        self.fs.exists(path).unwrap_or(false)
    }
}

/// A volume as a seekable device that refuses writes (for `fatfs` and `ntfs`).
pub(crate) struct ReadOnlyDevice {
    vol: Volume,
    pos: u64,
}

impl ReadOnlyDevice {
    pub(crate) fn new(vol: Volume) -> Self {
        ReadOnlyDevice { vol, pos: 0 }
    }
}

impl Read for ReadOnlyDevice {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.vol.len().saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        self.vol
            .read_at(&mut buf[..n], self.pos)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for ReadOnlyDevice {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "guest filesystems are read-only",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for ReadOnlyDevice {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.vol.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = base.ok_or_else(|| std::io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

/// A FAT12/16/32 filesystem.
pub struct Fat {
    fs: fatfs::FileSystem<ReadOnlyDevice>,
}

fn fat_err(path: &str, e: &std::io::Error) -> GuestError {
    if e.kind() == std::io::ErrorKind::NotFound {
        GuestError::NotFound(path.to_string())
    } else {
        GuestError::invalid("FAT filesystem", format!("{path}: {e}"))
    }
}

impl Fat {
    /// Opens the FAT filesystem on `vol`.
    pub fn open(vol: Volume) -> Result<Fat> {
        let dev = ReadOnlyDevice::new(vol);
        let fs = fatfs::FileSystem::new(dev, fatfs::FsOptions::new())
            .map_err(|e| GuestError::invalid("FAT boot sector", e.to_string()))?;
        Ok(Fat { fs })
    }
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl GuestFs for Fat {
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let mut f = self
            .fs
            .root_dir()
            .open_file(rel(path))
            .map_err(|e| fat_err(path, &e))?;
        let mut out = Vec::new();
        (&mut f)
            .take(max)
            .read_to_end(&mut out)
            .map_err(|e| fat_err(path, &e))?;
        Ok(out)
    }

    fn list_dir(&self, path: &str) -> Result<Vec<Entry>> {
        let root = self.fs.root_dir();
        let dir = if rel(path).is_empty() {
            root
        } else {
            root.open_dir(rel(path)).map_err(|e| fat_err(path, &e))?
        };
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|e| fat_err(path, &e))?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            if out.len() >= MAX_DIR_ENTRIES {
                break;
            }
            out.push(Entry {
                name,
                kind: if e.is_dir() {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
            });
        }
        Ok(out)
    }
}
