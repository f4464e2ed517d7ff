//! The crate's entry points, one step above the registry: open an image (detect it, run its
//! format's safety inspection, return a reader), inspect it for `vmie info`, write one.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::detect::detect;
use crate::disk::{Disk, ImageInfo, allocated_bytes};
use crate::error::{DiskError, Result};
use crate::format::Format;
use crate::io::Source;
use crate::limits::Limits;
use crate::registry::entry;
use crate::write::{WriteOptions, WriteStats};

/// Detects the format of `src`, runs the safety inspection and opens a reader.
pub fn open(src: Source, limits: &Limits) -> Result<Box<dyn Disk>> {
    let d = detect(&*src)?;
    open_as(src, d.format, limits)
}

/// Opens `src` with the reader for `format`. Opening parses and checks every header and
/// metadata table (the safety inspection) before any payload is read. The caller vouches for
/// the format: no detection runs (a raw source of any size is read as it is).
pub fn open_as(src: Source, format: Format, limits: &Limits) -> Result<Box<dyn Disk>> {
    match entry(format).open {
        Some(open) => open(src, limits),
        None => Err(DiskError::unsupported(
            format,
            "an OVA is an appliance holding several files, not a single disk; import it as an appliance (OVA import reads its OVF and disks)",
        )),
    }
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

/// Writes `disk` to `out` (a new, empty file) as `format`, with that format's writer.
/// `progress` grows to the virtual size.
pub fn write_image(
    disk: &dyn Disk,
    out: &dyn crate::write::Output,
    format: Format,
    opts: &WriteOptions,
    progress: &AtomicU64,
) -> Result<WriteStats> {
    let writer = format.writer().ok_or_else(|| {
        DiskError::unsupported(format, "vmie reads this format but does not write it")
    })?;
    match opts.compression.as_deref() {
        None | Some("none") => {}
        Some(c) => writer.check_compression(c)?,
    }
    writer.write(disk, out, opts, progress)
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
        /// The rule broken or the container recognized (`refcount-table-unaligned`,
        /// `parallels`), when the reason has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// EC2-style error code.
        code: String,
        /// A message for people.
        message: String,
    },
}

impl Verdict {
    fn refused(e: &DiskError) -> Verdict {
        Verdict::Refused {
            reason: e.reason_code().to_string(),
            name: e.name().map(str::to_string),
            code: e.ec2_code().to_string(),
            message: e.to_string(),
        }
    }
}

/// Detects and inspects `src` without reading its payload. I/O errors are returned as `Err`;
/// refusals and parse errors become a [`Verdict::Refused`].
pub fn inspect(src: Source, limits: &Limits) -> Result<Inspection> {
    let file_size = src.size();
    let format = match detect(&*src) {
        Ok(d) => d.format,
        Err(e @ DiskError::Io { .. }) => return Err(e),
        Err(e) => {
            return Ok(Inspection {
                format: None,
                file_size,
                info: None,
                allocated: None,
                verdict: Verdict::refused(&e),
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
            verdict: Verdict::refused(&e),
        },
    })
}
