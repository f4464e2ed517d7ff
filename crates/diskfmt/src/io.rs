//! Positioned, shareable reads: the only way parsers touch image bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::limits::check_in_file;

/// A source of bytes that supports reads at any offset from several threads at once.
pub trait ReadAt: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Total size of the source in bytes.
    fn size(&self) -> u64;
    /// The first data region at or after `offset`, as `(start, end)`, or `None` when only a
    /// hole follows. Sources that cannot tell report everything as data.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let size = self.size();
        Ok((offset < size).then_some((offset, size)))
    }
}

/// A shared source, as held by every reader.
pub type Source = Arc<dyn ReadAt>;

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= self.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

/// A file opened once whose size is captured at open time (the size of an upload does not
/// change while we read it; capturing it avoids a `stat` per bounds check).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    /// Opens `path` read-only.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let file = File::open(path)
            .map_err(|e| DiskError::io(format!("opening {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| DiskError::io(format!("reading metadata of {}", path.display()), e))?;
        if meta.is_dir() {
            return Err(DiskError::io(
                format!("opening {}", path.display()),
                io::Error::other("is a directory"),
            ));
        }
        Ok(FileSource {
            file,
            size: meta.len(),
        })
    }
}

impl ReadAt for FileSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.file, buf, offset)
    }
    fn size(&self) -> u64 {
        self.size
    }
    /// Uses `SEEK_DATA` / `SEEK_HOLE`, so holes in sparse files are neither read nor copied.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        use rustix::fs::{SeekFrom, seek};
        if offset >= self.size {
            return Ok(None);
        }
        let start = match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => return Ok(None),
            // Filesystems without hole support: everything is data.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {
                return Ok(Some((offset, self.size)));
            }
            Err(e) => return Err(e.into()),
        };
        if start >= self.size {
            return Ok(None);
        }
        let end = match seek(&self.file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(self.size),
            Err(_) => self.size,
        };
        Ok(Some((start, end.max(start))))
    }
}

/// A window `[start, start + len)` of another source, e.g. one member of an OVA.
pub struct SubSource {
    inner: Source,
    start: u64,
    len: u64,
}

impl SubSource {
    /// A window of `inner`; the window must lie inside it.
    pub fn new(inner: Source, start: u64, len: u64) -> Result<Self> {
        check_in_file(Format::Raw, "window", start, len, inner.size())?;
        Ok(SubSource { inner, start, len })
    }
}

impl ReadAt for SubSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let avail = self.len - offset;
        let n = usize::try_from(avail).map_or(buf.len(), |a| a.min(buf.len()));
        self.inner.read_at(&mut buf[..n], self.start + offset)
    }
    fn size(&self) -> u64 {
        self.len
    }
}

/// Fills `buf` from `src` at `offset`; a short source is an `UnexpectedEof` I/O error.
pub fn read_exact_at(src: &dyn ReadAt, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let n = src.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read at offset {}", offset + done as u64),
            ));
        }
        done += n;
    }
    Ok(())
}

/// Reads `len` bytes of metadata named `what` at `offset`, after checking the range lies in
/// the file (a named [`crate::Refusal::PointerOutOfBounds`] otherwise). `len` must already be
/// bounded by a [`crate::Limits`] check.
pub fn read_checked(
    src: &dyn ReadAt,
    format: Format,
    what: &'static str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    check_in_file(format, what, offset, len as u64, src.size())?;
    let mut buf = vec![0u8; len];
    read_exact_at(src, &mut buf, offset)
        .map_err(|e| DiskError::io(format!("reading {format} {what} at offset {offset}"), e))?;
    Ok(buf)
}

/// Like [`read_checked`] into a caller's buffer.
pub fn read_checked_into(
    src: &dyn ReadAt,
    format: Format,
    what: &'static str,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    check_in_file(format, what, offset, buf.len() as u64, src.size())?;
    read_exact_at(src, buf, offset)
        .map_err(|e| DiskError::io(format!("reading {format} {what} at offset {offset}"), e))
}

/// Little-endian / big-endian field access on header bytes, bounds already known.
pub mod le {
    /// `u16` little-endian at `off`.
    #[must_use]
    pub fn u16(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }
    /// `u32` little-endian at `off`.
    #[must_use]
    pub fn u32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }
    /// `u64` little-endian at `off`.
    #[must_use]
    pub fn u64(b: &[u8], off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[off..off + 8]);
        u64::from_le_bytes(a)
    }
}

/// Big-endian field access.
pub mod be {
    /// `u16` big-endian at `off`.
    #[must_use]
    pub fn u16(b: &[u8], off: usize) -> u16 {
        u16::from_be_bytes([b[off], b[off + 1]])
    }
    /// `u32` big-endian at `off`.
    #[must_use]
    pub fn u32(b: &[u8], off: usize) -> u32 {
        u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }
    /// `u64` big-endian at `off`.
    #[must_use]
    pub fn u64(b: &[u8], off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[off..off + 8]);
        u64::from_be_bytes(a)
    }
}
