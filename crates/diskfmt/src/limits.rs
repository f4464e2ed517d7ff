//! Every size, count and offset taken from an untrusted image passes through one [`Limits`]
//! value before it is used to allocate, seek or loop.

use crate::error::{DiskError, Refusal, Result};
use crate::format::Format;

/// 1 KiB.
pub const KIB: u64 = 1024;
/// 1 MiB.
pub const MIB: u64 = 1024 * KIB;
/// 1 GiB.
pub const GIB: u64 = 1024 * MIB;
/// 1 TiB.
pub const TIB: u64 = 1024 * GIB;

/// Bounds applied to every untrusted number read from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest virtual disk size accepted (default 16 TiB).
    pub max_virtual_size: u64,
    /// Largest text descriptor read (VMDK descriptor, OVF), default 1 MiB.
    pub max_descriptor_size: u64,
    /// Largest single metadata table loaded whole into memory (BAT, L1, grain directory,
    /// block map), default 256 MiB.
    pub max_table_size: u64,
    /// Largest number of entries in a header-extension, region or metadata list, default 2048.
    pub max_table_entries: u64,
    /// Largest VHDX log replayed in memory, default 256 MiB.
    pub max_log_size: u64,
    /// Largest total of metadata tables cached in memory by one reader, default 64 MiB.
    pub max_cache_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_virtual_size: 16 * TIB,
            max_descriptor_size: MIB,
            max_table_size: 256 * MIB,
            max_table_entries: 2048,
            max_log_size: 256 * MIB,
            max_cache_size: 64 * MIB,
        }
    }
}

impl Limits {
    /// Refuses a virtual size above [`Limits::max_virtual_size`].
    pub fn check_virtual_size(&self, size: u64) -> Result<u64> {
        if size > self.max_virtual_size {
            return Err(Refusal::VirtualSizeTooLarge {
                size,
                max: self.max_virtual_size,
            }
            .into());
        }
        Ok(size)
    }

    /// Refuses a table (in bytes) above [`Limits::max_table_size`]; returns it as `usize`.
    pub fn check_table(&self, format: Format, what: &'static str, bytes: u64) -> Result<usize> {
        self.check(format, what, bytes, self.max_table_size)
    }

    /// Refuses a descriptor above [`Limits::max_descriptor_size`]; returns it as `usize`.
    pub fn check_descriptor(&self, format: Format, bytes: u64) -> Result<usize> {
        self.check(format, "descriptor size", bytes, self.max_descriptor_size)
    }

    /// Refuses an entry count above [`Limits::max_table_entries`]; returns it as `usize`.
    pub fn check_entries(&self, format: Format, what: &'static str, count: u64) -> Result<usize> {
        self.check(format, what, count, self.max_table_entries)
    }

    /// Refuses `value` above `limit` with a [`Refusal::LimitExceeded`]; returns it as `usize`.
    pub fn check(
        &self,
        format: Format,
        what: &'static str,
        value: u64,
        limit: u64,
    ) -> Result<usize> {
        if value > limit {
            return Err(Refusal::LimitExceeded {
                format,
                what,
                value,
                limit,
            }
            .into());
        }
        to_usize(format, what, value)
    }
}

/// Converts an untrusted `u64` to `usize`, failing with a named error instead of truncating.
pub fn to_usize(format: Format, what: &'static str, value: u64) -> Result<usize> {
    usize::try_from(value)
        .map_err(|_| DiskError::invalid(format, format!("{what} {value} does not fit in memory")))
}

/// Checks that `[offset, offset + len)` lies inside a file of `file_size` bytes.
pub fn check_in_file(
    format: Format,
    what: &'static str,
    offset: u64,
    len: u64,
    file_size: u64,
) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        _ => Err(Refusal::PointerOutOfBounds {
            format,
            what,
            offset,
            file_size,
        }
        .into()),
    }
}

/// `a * b` or a named error on overflow.
pub fn mul(format: Format, what: &'static str, a: u64, b: u64) -> Result<u64> {
    a.checked_mul(b)
        .ok_or_else(|| DiskError::invalid(format, format!("{what} overflows ({a} * {b})")))
}

/// `a + b` or a named error on overflow.
pub fn add(format: Format, what: &'static str, a: u64, b: u64) -> Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| DiskError::invalid(format, format!("{what} overflows ({a} + {b})")))
}

/// `ceil(a / b)`, `b` must be non-zero.
#[must_use]
pub fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}
