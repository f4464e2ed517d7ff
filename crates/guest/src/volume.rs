//! A byte range of a disk (a whole disk or one partition), read with positioned reads.

use std::sync::Arc;

use diskfmt::Disk;

use crate::error::{GuestError, Result};

/// A readable range of bytes: a whole disk or a partition of it.
#[derive(Clone)]
pub struct Volume {
    disk: Arc<dyn Disk>,
    start: u64,
    len: u64,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl Volume {
    /// The whole disk.
    pub fn whole(disk: Arc<dyn Disk>) -> Self {
        let len = disk.virtual_size();
        Volume {
            disk,
            start: 0,
            len,
        }
    }

    /// `len` bytes from `start` of this volume; refused when it does not fit.
    pub fn slice(&self, start: u64, len: u64) -> Result<Volume> {
        match start.checked_add(len) {
            Some(end) if end <= self.len => Ok(Volume {
                disk: self.disk.clone(),
                start: self.start + start,
                len,
            }),
            _ => Err(GuestError::invalid(
                "partition",
                format!(
                    "range {start}+{len} lies outside the {}-byte disk",
                    self.len
                ),
            )),
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the volume holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the volume on its disk.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Fills `buf` from `offset`; reading past the end is an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= self.len => Ok(self.disk.read_at(buf, self.start + offset)?),
            _ => Err(GuestError::invalid(
                "read",
                format!(
                    "{} bytes at {offset} lie past the end of a {}-byte volume",
                    buf.len(),
                    self.len
                ),
            )),
        }
    }

    /// Reads `len` bytes at `offset` into a new buffer (`len` is bounded by the caller).
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read_at(&mut v, offset)?;
        Ok(v)
    }
}
