//! One module per format; [`open_as`] is the one entry point that picks the reader.

pub mod qcow2;
pub mod raw;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use crate::detect::Format;
use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::io::Source;
use crate::limits::Limits;

/// Opens `src` with the reader for `format`. Opening parses and checks every header and
/// metadata table (the safety inspection) before any payload is read.
pub fn open_as(src: Source, format: Format, limits: &Limits) -> Result<Box<dyn Disk>> {
    Ok(match format {
        Format::Raw => Box::new(raw::RawDisk::open(src, limits)?),
        Format::Iso => Box::new(raw::RawDisk::open_iso(src, limits)?),
        Format::Qcow2 => qcow2::open(src, limits)?,
        Format::Vmdk => vmdk::open(src, limits)?,
        Format::Vhd => vhd::open(src, limits)?,
        Format::Vhdx => vhdx::open(src, limits)?,
        Format::Vdi => vdi::open(src, limits)?,
        Format::Ova => {
            return Err(DiskError::unsupported(
                Format::Ova,
                "an OVA is an appliance holding several files, not a single disk; import it as an appliance (OVA import reads its OVF and disks)",
            ));
        }
    })
}
