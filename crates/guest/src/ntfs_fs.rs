//! NTFS, read-only, through the `ntfs` crate: file lookup is case-insensitive through the
//! volume's `$UpCase` table, as Windows does it; only the unnamed `$DATA` stream of a file is
//! read; DOS 8.3 aliases are left out of listings.

use std::io::Read;

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsFileNamespace;
use ntfs::{NtfsError, NtfsFile};

use crate::error::{GuestError, Result};
use crate::fs::{Entry, EntryKind, GuestFs, MAX_DIR_ENTRIES, ReadOnlyDevice};
use crate::regf::ReadSeek;
use crate::volume::Volume;

/// Deepest path looked up.
const MAX_DEPTH: usize = 64;

/// An NTFS filesystem.
pub struct Ntfs {
    vol: Volume,
    fs: ntfs::Ntfs,
}

fn err(path: &str, e: &NtfsError) -> GuestError {
    GuestError::invalid("NTFS", format!("{path}: {e}"))
}

impl Ntfs {
    /// Opens the NTFS filesystem on `vol` and reads its `$UpCase` table.
    pub fn open(vol: Volume) -> Result<Ntfs> {
        let mut dev = ReadOnlyDevice::new(vol.clone());
        let mut fs = ntfs::Ntfs::new(&mut dev).map_err(|e| err("boot sector", &e))?;
        fs.read_upcase_table(&mut dev)
            .map_err(|e| err("$UpCase", &e))?;
        Ok(Ntfs { vol, fs })
    }

    fn lookup<'n>(&'n self, dev: &mut ReadOnlyDevice, path: &str) -> Result<NtfsFile<'n>> {
        let mut cur = self
            .fs
            .root_directory(dev)
            .map_err(|e| err("root directory", &e))?;
        for (depth, part) in path
            .split(['/', '\\'])
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            if depth >= MAX_DEPTH {
                return Err(GuestError::invalid("NTFS", format!("{path}: too deep")));
            }
            if !cur.is_directory() {
                return Err(GuestError::NotFound(path.to_string()));
            }
            let next = {
                let index = cur.directory_index(dev).map_err(|e| err(path, &e))?;
                let mut finder = index.finder();
                let entry = NtfsFileNameIndex::find(&mut finder, &self.fs, dev, part)
                    .ok_or_else(|| GuestError::NotFound(path.to_string()))?
                    .map_err(|e| err(path, &e))?;
                entry.to_file(&self.fs, dev).map_err(|e| err(path, &e))?
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Calls `f` with a reader of the file at `path` (its unnamed data stream) and its length.
    pub fn with_file<R>(
        &self,
        path: &str,
        f: impl FnOnce(&mut dyn ReadSeek, u64) -> Result<R>,
    ) -> Result<R> {
        let mut dev = ReadOnlyDevice::new(self.vol.clone());
        let file = self.lookup(&mut dev, path)?;
        if file.is_directory() {
            return Err(GuestError::invalid(
                "NTFS",
                format!("{path} is a directory"),
            ));
        }
        let item = file
            .data(&mut dev, "")
            .ok_or_else(|| GuestError::invalid("NTFS", format!("{path} has no data stream")))?
            .map_err(|e| err(path, &e))?;
        let attr = item.to_attribute().map_err(|e| err(path, &e))?;
        let value = attr.value(&mut dev).map_err(|e| err(path, &e))?;
        let len = value.len();
        let mut reader = value.attach(&mut dev);
        f(&mut reader, len)
    }
}

impl GuestFs for Ntfs {
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        self.with_file(path, |r, len| {
            let mut out = Vec::new();
            let cap = usize::try_from(len.min(max)).unwrap_or(0);
            out.try_reserve(cap)
                .map_err(|_| GuestError::invalid("NTFS", format!("{path} is too large to read")))?;
            r.take(max)
                .read_to_end(&mut out)
                .map_err(|e| GuestError::invalid("NTFS", format!("{path}: {e}")))?;
            Ok(out)
        })
    }

    fn list_dir(&self, path: &str) -> Result<Vec<Entry>> {
        let mut dev = ReadOnlyDevice::new(self.vol.clone());
        let dir = self.lookup(&mut dev, path)?;
        let index = dir.directory_index(&mut dev).map_err(|e| err(path, &e))?;
        let mut iter = index.entries();
        let mut out = Vec::new();
        let mut seen = 0usize;
        while let Some(entry) = iter.next(&mut dev) {
            seen += 1;
            if seen > MAX_DIR_ENTRIES * 2 || out.len() >= MAX_DIR_ENTRIES {
                break;
            }
            let entry = entry.map_err(|e| err(path, &e))?;
            let Some(key) = entry.key() else { continue };
            let key = key.map_err(|e| err(path, &e))?;
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            out.push(Entry {
                name: key.name().to_string_lossy(),
                kind: if key.is_directory() {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
            });
        }
        Ok(out)
    }

    fn exists(&self, path: &str) -> bool {
        let mut dev = ReadOnlyDevice::new(self.vol.clone());
        self.lookup(&mut dev, path).is_ok()
    }
}
