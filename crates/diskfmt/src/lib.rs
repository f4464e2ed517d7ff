//! # diskfmt — virtual disk image formats for vmie
//!
//! Detection, safety inspection and readers for the disk images people export from VMware,
//! Hyper-V, VirtualBox and KVM. Everything here takes bytes from strangers: every number read
//! from an image passes [`Limits`] and checked arithmetic before it allocates, seeks or loops,
//! and nothing inside an image can make us open another file.
//!
//! Where to start:
//! - [`detect::detect`] and the one table of signatures, [`detect::MAGICS`];
//! - [`open`] / [`open_as`]: detect, inspect and return a [`Disk`];
//! - [`Disk`]: virtual size, positioned reads and the extent map;
//! - [`convert::convert_to_raw`]: sparse, parallel, constant-memory conversion;
//! - `formats/<fmt>`: one module per format.
//!
//! The crate is synchronous and knows nothing of networks, databases or tasks.

pub mod cache;
pub mod codec;
pub mod convert;
pub mod detect;
pub mod disk;
pub mod error;
pub mod formats;
pub mod io;
pub mod limits;
pub mod ova;
#[cfg(test)]
pub mod testutil;
pub mod write;

use serde::Serialize;

pub use detect::{Detection, Format, detect};
pub use disk::{Disk, Extent, ExtentKind, ImageInfo, allocated_bytes};
pub use error::{DiskError, Refusal, Result};
pub use formats::open_as;
pub use io::{FileSource, ReadAt, Source};
pub use limits::Limits;

/// Detects the format of `src`, runs the safety inspection and opens a reader.
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    let d = detect(&*src)?;
    open_as(src, d.format, limits)
}

/// Opens `src` as `format` when given (still refusing a file whose content is ambiguous or
/// is another format: a caller's word never overrides what the bytes say), else detects it.
pub fn open_with(src: Source, format: Option<Format>, limits: &Limits) -> Result<Box<dyn Disk>> {
    let detected = detect(&*src)?.format;
    match format {
        Some(f) if f != detected && !(f == Format::Raw && detected == Format::Iso) => {
            Err(DiskError::invalid(
                f,
                format!(
                    "the content is a {detected} image, not {f}; leave out the format or name {detected}"
                ),
            ))
        }
        _ => open_as(src, detected, limits),
    }
}

/// What the safety inspection found, for `vmie info`.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// Detected format, if detection itself succeeded.
    pub format: Option<Format>,
    /// Size of the file in bytes.
    pub file_size: u64,
    /// Facts about the image, when it opened.
    pub info: Option<ImageInfo>,
    /// Bytes of the virtual disk holding data, when it opened.
    pub allocated: Option<u64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Safety verdict.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Verdict {
    /// The image passed every check and can be read.
    Ok,
    /// The image was refused or could not be parsed.
    Refused {
        /// Stable reason code (`backing-file`, `pointer-out-of-bounds`, `corrupt`, …).
        reason: String,
        /// EC2-style error code.
        code: String,
        /// A message for people.
        message: String,
    },
}

/// Detects and inspects `src` without reading its payload. I/O errors are returned as `Err`;
/// refusals and parse errors become a [`Verdict::Refused`].
pub fn inspect(src: Source, limits: &Limits) -> Result<Inspection> {
    let file_size = src.size();
    let refused = |e: &DiskError| Verdict::Refused {
        reason: e.reason_code().to_string(),
        code: e.ec2_code().to_string(),
        message: e.to_string(),
    };
    let format = match detect(&*src) {
        Ok(d) => d.format,
        Err(e @ DiskError::Io { .. }) => return Err(e),
        Err(e) => {
            return Ok(Inspection {
                format: None,
                file_size,
                info: None,
                allocated: None,
                verdict: refused(&e),
            });
        }
    };
    let opened = open_as(src, format, limits).and_then(|d| {
        let alloc = allocated_bytes(&*d)?;
        Ok((d.info(), alloc))
    });
    Ok(match opened {
        Ok((info, alloc)) => Inspection {
            format: Some(format),
            file_size,
            info: Some(info),
            allocated: Some(alloc),
            verdict: Verdict::Ok,
        },
        Err(e @ DiskError::Io { .. }) => return Err(e),
        Err(e) => Inspection {
            format: Some(format),
            file_size,
            info: None,
            allocated: None,
            verdict: refused(&e),
        },
    })
}
