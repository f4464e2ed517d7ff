//! Writers: any [`Disk`] out as raw, VMDK (stream-optimized), VHD, VHDX or qcow2, streaming
//! from the source's extent map (holes are never written as data).

pub mod qcow2;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use std::fs::File;
use std::sync::atomic::AtomicU64;

use crate::convert::{ConvertOptions, convert_to_raw};
use crate::disk::Disk;
use crate::error::Result;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Raw, sparse.
    Raw,
    /// VMDK; stream-optimized by default.
    Vmdk,
    /// VHD (`vpc`); dynamic by default.
    Vhd,
    /// VHDX, dynamic.
    Vhdx,
    /// qcow2 version 3.
    Qcow2,
}

/// Options of a writer (`-o key=value,…` on the command line).
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Variant: `streamOptimized` (VMDK), `fixed` / `dynamic` (VHD).
    pub subformat: Option<String>,
    /// Compression: `zlib` / `zstd` (qcow2); VMDK stream-optimized is always deflate.
    pub compression: Option<String>,
    /// VMDK adapter type: `ide` (default), `lsilogic`, `buslogic`, `legacyESX`.
    pub adapter_type: Option<String>,
    /// Worker threads (compression runs on all of them).
    pub threads: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            subformat: None,
            compression: None,
            adapter_type: None,
            threads: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        }
    }
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Virtual size of the disk written.
    pub virtual_size: u64,
    /// Bytes of the output file.
    pub file_size: u64,
}

/// Writes `disk` to `out` (a new, empty file) in `format`. `progress` grows to the virtual
/// size.
pub fn write_image(
    disk: &dyn Disk,
    out: &File,
    format: OutputFormat,
    opts: &WriteOptions,
    progress: &AtomicU64,
) -> Result<WriteStats> {
    match format {
        OutputFormat::Raw => {
            let c = ConvertOptions {
                threads: opts.threads,
                ..ConvertOptions::default()
            };
            let s = convert_to_raw(disk, out, &c, progress)?;
            Ok(WriteStats {
                virtual_size: s.virtual_size,
                file_size: s.virtual_size,
            })
        }
        OutputFormat::Vmdk => vmdk::write(disk, out, opts, progress),
        OutputFormat::Vhd => vhd::write(disk, out, opts, progress),
        OutputFormat::Vhdx => vhdx::write(disk, out, opts, progress),
        OutputFormat::Qcow2 => qcow2::write(disk, out, opts, progress),
    }
}
