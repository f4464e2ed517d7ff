//! Where a writer puts an image: [`Output`], positional writes and reads like a file's.
//!
//! A plain [`File`] is one (`vmie convert`, an export into a local bucket: the file written
//! is the file published). The service's exports into S3 or into encrypted buckets write into
//! an encrypted temporary volume instead (the engine's `SealedTemp`), so an image on its way
//! out is never in plaintext on disk; the writers cannot tell the difference.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Positional output of a writer. Writes at different offsets may come from several threads
/// at once (a writer's I/O threads), never two at once over the same bytes.
pub trait Output: Send + Sync {
    /// Writes all of `buf` at `offset` (the output grows as needed; a gap reads as zeros).
    fn put_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset` (an OVA reads its VMDK back).
    fn get_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Sets the size: cuts what lies beyond `len`, or extends with zeros.
    fn set_size(&self, len: u64) -> io::Result<()>;

    /// The current size.
    fn size(&self) -> io::Result<u64>;

    /// Another handle on the same output, for a thread of its own.
    fn share(&self) -> io::Result<Arc<dyn Output>>;

    /// Bytes per block the output stores (a power of two; 1 for a file): a write covering
    /// part of a block costs reading the rest, so writers that skip zero ranges skip only
    /// whole blocks of this size.
    fn granularity(&self) -> usize {
        1
    }
}

impl Output for File {
    fn put_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn get_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn set_size(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn share(&self) -> io::Result<Arc<dyn Output>> {
        Ok(Arc::new(self.try_clone()?))
    }
}

/// Makes the temporary outputs a writer needs (an OVA makes its VMDK in one before the
/// archive, whose descriptor states the VMDK's size).
#[derive(Clone)]
pub struct TempOutputs(Arc<dyn Fn() -> io::Result<Box<dyn Output>> + Send + Sync>);

impl TempOutputs {
    /// Temporary outputs made by `make`.
    pub fn new(make: impl Fn() -> io::Result<Box<dyn Output>> + Send + Sync + 'static) -> Self {
        TempOutputs(Arc::new(make))
    }

    /// Unnamed temporary files in `dir` (removed by the system when closed, even after a
    /// crash).
    #[must_use]
    pub fn files_in(dir: PathBuf) -> Self {
        TempOutputs::new(move || Ok(Box::new(temp_file_in(&dir)?) as Box<dyn Output>))
    }

    /// A new, empty temporary output.
    pub fn make(&self) -> io::Result<Box<dyn Output>> {
        (self.0)()
    }
}

/// An unnamed temporary file in `dir` (`O_TMPFILE`: no path opens it, and the system removes
/// it when it is closed, even after a crash); the error names the folder.
pub fn temp_file_in(dir: &Path) -> io::Result<File> {
    tempfile::tempfile_in(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("creating a temporary file in {}: {e}", dir.display()),
        )
    })
}

impl std::fmt::Debug for TempOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TempOutputs")
    }
}

/// Appends to an [`Output`] from `at` on, as a [`io::Write`] (an OVA's tar members, a sealed
/// export's stream); `at` is where the next byte goes.
pub struct Appender<'a> {
    /// The output.
    pub out: &'a dyn Output,
    /// Where the next byte goes.
    pub at: u64,
}

impl io::Write for Appender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.put_at(buf, self.at)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads an [`Output`]'s first `len` bytes in order, as an [`io::Read`].
pub(crate) struct OutputReader<'a> {
    pub(crate) src: &'a dyn Output,
    pub(crate) at: u64,
    pub(crate) len: u64,
}

impl io::Read for OutputReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n =
            usize::try_from(self.len.saturating_sub(self.at).min(buf.len() as u64)).unwrap_or(0);
        self.src.get_at(&mut buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
