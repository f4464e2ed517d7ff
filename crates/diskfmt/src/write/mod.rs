//! Writers: any [`Disk`] out as raw, VMDK (stream-optimized), VHD, VHDX, qcow2 or OVA,
//! streaming from the source's extent map (holes are never written as data).
//!
//! Each format's writer is a unit struct implementing [`Writer`], named in the format's row of
//! [`crate::registry::FORMATS`]; [`crate::write_image`] picks it from there. The grain-based
//! writers share one ordered, parallel pipeline, [`ordered_grains`].

mod behind;
mod output;
pub mod ova;
mod pipeline;
pub mod qcow2;
pub mod raw;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicU64;

use crate::disk::Disk;
use crate::error::{DiskError, Result};
use crate::format::Format;

pub(crate) use output::OutputReader;
pub use output::{Appender, Output, TempOutputs, temp_file_in};
pub(crate) use pipeline::ordered_grains;

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
    /// File name of the output (a VMDK names its own extent in its descriptor; an OVA names
    /// its virtual machine and members after it).
    pub name: Option<String>,
    /// How temporary outputs are made (OVA: the VMDK made before the archive); default:
    /// unnamed files in the system's temporary folder.
    pub temp: Option<TempOutputs>,
    /// OVA: virtual CPUs to declare (default 1).
    pub cpus: Option<u32>,
    /// OVA: memory in MiB to declare (default 1024).
    pub memory_mib: Option<u64>,
    /// OVA: VMware guest OS type to declare (default `otherGuest64`).
    pub os_type: Option<String>,
}

impl WriteOptions {
    /// How this writer makes temporary outputs.
    #[must_use]
    pub fn temp_outputs(&self) -> TempOutputs {
        self.temp
            .clone()
            .unwrap_or_else(|| TempOutputs::files_in(std::env::temp_dir()))
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            subformat: None,
            compression: None,
            adapter_type: None,
            name: None,
            temp: None,
            cpus: None,
            memory_mib: None,
            os_type: None,
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

/// A format's writer. Implementations are unit structs listed in the registry.
pub trait Writer: Sync {
    /// One line describing the output, for `vmie convert --help`.
    fn description(&self) -> &'static str;

    /// Refuses a compression this writer cannot produce (`none` never reaches it).
    fn check_compression(&self, compression: &str) -> Result<()>;

    /// Writes `disk` to `out` (new and empty). `progress` grows to the virtual size.
    fn write(
        &self,
        disk: &dyn Disk,
        out: &dyn Output,
        opts: &WriteOptions,
        progress: &AtomicU64,
    ) -> Result<WriteStats>;
}

/// The refusal of a compression a format cannot hold, with why.
pub(crate) fn no_compression(format: Format, compression: &str, why: &str) -> DiskError {
    DiskError::unsupported(format, format!("compression {compression:?}: {why}"))
}

/// A disk identifier that differs between images (not a secret).
pub(crate) fn random_id(out: &mut [u8; 16]) {
    use std::hash::{BuildHasher, Hasher};
    for (i, part) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        part.copy_from_slice(&h.finish().to_le_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40; // version 4
    out[8] = (out[8] & 0x3f) | 0x80; // variant
}
