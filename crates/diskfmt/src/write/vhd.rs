//! Placeholder during development: replaced by the real writer.

use std::fs::File;
use std::sync::atomic::AtomicU64;

use super::{WriteOptions, WriteStats};
use crate::detect::Format;
use crate::disk::Disk;
use crate::error::{DiskError, Result};

/// Writes `disk` to `out`.
pub fn write(
    _disk: &dyn Disk,
    _out: &File,
    _opts: &WriteOptions,
    _progress: &AtomicU64,
) -> Result<WriteStats> {
    Err(DiskError::unsupported(Format::Vhd, "writer not built yet"))
}
