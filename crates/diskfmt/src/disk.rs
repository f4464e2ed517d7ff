//! The disk view every reader exposes: virtual size, positioned reads and an extent map.

use serde::Serialize;

use crate::error::Result;
use crate::format::Format;

/// What a range of the virtual disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Allocated data (which may still happen to be zero bytes).
    Data,
    /// Known to read as zeros: unallocated, or allocated as a zero cluster.
    Zero,
}

/// A range of the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Start, in bytes from the start of the virtual disk.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// What it holds.
    pub kind: ExtentKind,
}

impl Extent {
    /// End offset (exclusive).
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Collects extents in order, merging neighbours of the same kind.
#[derive(Debug, Default)]
pub struct ExtentList {
    extents: Vec<Extent>,
}

impl ExtentList {
    /// An empty list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `[offset, offset + length)` of `kind`; it must start where the last one ended.
    pub fn push(&mut self, offset: u64, length: u64, kind: ExtentKind) {
        if length == 0 {
            return;
        }
        if let Some(last) = self.extents.last_mut()
            && last.kind == kind
            && last.end() == offset
        {
            last.length += length;
            return;
        }
        self.extents.push(Extent {
            offset,
            length,
            kind,
        });
    }

    /// The merged extents.
    #[must_use]
    pub fn into_vec(self) -> Vec<Extent> {
        self.extents
    }
}

/// Facts about an opened image, as `qemu-img info` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    /// Container format.
    pub format: Format,
    /// Variant of the format: `monolithicSparse`, `streamOptimized`, `fixed`, `dynamic`,
    /// `v2`, `v3`, `static`, …
    pub subformat: Option<String>,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Allocation unit (cluster, grain, block) in bytes, if the format has one.
    pub cluster_size: Option<u64>,
    /// Further format-specific facts (`compression`, `extended_l2`, `log_replayed`, …).
    pub details: Vec<(String, String)>,
}

/// A readable virtual disk. Readers are `Send + Sync`: converters read different ranges from
/// several threads at once.
pub trait Disk: Send + Sync {
    /// Facts about the image.
    fn info(&self) -> ImageInfo;

    /// Size of the virtual disk in bytes.
    fn virtual_size(&self) -> u64;

    /// Fills `buf` with the virtual disk's bytes at `offset`. The range must lie inside the
    /// virtual disk; unallocated ranges read as zeros.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The extent map of `[offset, offset + length)`, clipped to the virtual size: ordered,
    /// contiguous, merged extents that cover exactly that range.
    fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>>;
}

/// Clips `[offset, offset + length)` to `[0, size)`; returns the clipped end.
#[must_use]
pub fn clip_end(offset: u64, length: u64, size: u64) -> u64 {
    offset.saturating_add(length).min(size)
}

/// Checks that a read of `len` bytes at `offset` lies inside a disk of `size` bytes.
pub fn check_read(format: Format, offset: u64, len: usize, size: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(crate::error::DiskError::invalid(
            format,
            format!("read of {len} bytes at offset {offset} is past the virtual size {size}"),
        )),
    }
}

/// Total bytes of [`ExtentKind::Data`] in the whole disk, walked in bounded windows.
pub fn allocated_bytes(disk: &dyn Disk) -> Result<u64> {
    const WINDOW: u64 = 1 << 36;
    let size = disk.virtual_size();
    let mut off = 0u64;
    let mut total = 0u64;
    while off < size {
        let len = WINDOW.min(size - off);
        for e in disk.extents(off, len)? {
            if e.kind == ExtentKind::Data {
                total += e.length;
            }
        }
        off += len;
    }
    Ok(total)
}

/// The part of `buf` (which holds the disk from `offset` on) that covers `[at, at + len)`:
/// how readers place the runs they walk into the caller's buffer.
pub fn run_slice(
    format: Format,
    buf: &mut [u8],
    offset: u64,
    at: u64,
    len: u64,
) -> Result<&mut [u8]> {
    let lo = at.checked_sub(offset).and_then(|d| usize::try_from(d).ok());
    let hi = lo.and_then(|lo| usize::try_from(len).ok().and_then(|l| lo.checked_add(l)));
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi <= buf.len() => Ok(&mut buf[lo..hi]),
        _ => Err(crate::error::DiskError::invalid(
            format,
            "read run outside the buffer",
        )),
    }
}
