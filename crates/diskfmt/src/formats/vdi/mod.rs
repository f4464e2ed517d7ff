//! Placeholder during development: replaced by the real reader.

use crate::detect::Format;
use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::io::Source;
use crate::limits::Limits;

/// Opens the image.
pub fn open(_src: Source, _limits: &Limits) -> Result<Box<dyn Disk>> {
    Err(DiskError::unsupported(Format::Vdi, "reader not built yet"))
}
