//! Errors of the `diskfmt` crate.
//!
//! Callers match on [`DiskError`]'s variants (or on [`DiskError::ec2_code`] /
//! [`DiskError::reason_code`]); the messages are written for the person who handed us the
//! image and say what is wrong and, where it helps, what to do.

use std::fmt;
use std::io;

use crate::format::{Format, Unread};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, DiskError>;

/// Why an image was refused by the safety inspection. Each reason has a stable code
/// ([`Refusal::code`]) for machines and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The image refers to a backing (parent) file. vmie never opens a path taken from an image.
    BackingFile {
        /// Format of the image.
        format: Format,
    },
    /// A qcow2 image whose data lives in an external file.
    ExternalDataFile,
    /// Incompatible feature bits this reader does not know.
    UnknownIncompatibleFeatures {
        /// Format of the image.
        format: Format,
        /// The unknown bits.
        bits: u64,
    },
    /// The image is encrypted by its format (qcow2 AES/LUKS).
    Encrypted {
        /// Format of the image.
        format: Format,
    },
    /// A VMDK descriptor names an extent file other than the image itself.
    ExternalExtent {
        /// The extent type and a short, sanitized view of the file name.
        detail: String,
    },
    /// A differencing disk (VHD parent locators, VHDX parent).
    DifferencingDisk {
        /// Format of the image.
        format: Format,
    },
    /// The content is valid as two formats at once.
    MultipleFormats {
        /// Name of the first format (or container) that matched.
        first: &'static str,
        /// Name of the second.
        second: &'static str,
    },
    /// A container vmie recognizes but does not read (Parallels, QED, LUKS, gzip, …); the
    /// reason code comes from its kind (`unsupported-format`, `encrypted`, `compressed`).
    Unread(Unread),
    /// No format was recognized and the file cannot be a raw disk either: it is empty or not
    /// a whole number of 512-byte sectors.
    NotADisk {
        /// Size of the file.
        size: u64,
    },
    /// Virtual size above the configured maximum.
    VirtualSizeTooLarge {
        /// Size stated by the image.
        size: u64,
        /// Configured maximum.
        max: u64,
    },
    /// A table, grain, cluster or block pointer points outside the file.
    PointerOutOfBounds {
        /// Format of the image.
        format: Format,
        /// What points outside (e.g. "L2 table", "grain").
        what: &'static str,
        /// The offset it points at.
        offset: u64,
        /// Size of the file.
        file_size: u64,
    },
    /// An OVA appliance breaks a packaging rule (unsafe member name, link, device file,
    /// duplicate, unreferenced or missing file, oversized descriptor, manifest mismatch).
    Appliance {
        /// Stable reason code, e.g. `ova-unsafe-name`, `ova-manifest-mismatch`.
        code: &'static str,
        /// What was found, with member names sanitized.
        detail: String,
    },
    /// A count, size or table in the image exceeds a configured limit.
    LimitExceeded {
        /// Format of the image.
        format: Format,
        /// What exceeds the limit.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The limit.
        limit: u64,
    },
}

impl Refusal {
    /// Stable machine-readable code for this reason.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BackingFile { .. } => "backing-file",
            Refusal::ExternalDataFile => "external-data-file",
            Refusal::UnknownIncompatibleFeatures { .. } => "unknown-incompatible-features",
            Refusal::Encrypted { .. } => "encrypted",
            Refusal::ExternalExtent { .. } => "external-extent",
            Refusal::DifferencingDisk { .. } => "differencing-disk",
            Refusal::MultipleFormats { .. } => "multiple-formats",
            Refusal::Unread(u) => u.kind.code(),
            Refusal::NotADisk { .. } => "not-a-disk",
            Refusal::VirtualSizeTooLarge { .. } => "virtual-size-too-large",
            Refusal::PointerOutOfBounds { .. } => "pointer-out-of-bounds",
            Refusal::LimitExceeded { .. } => "limit-exceeded",
            Refusal::Appliance { code, .. } => code,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BackingFile { format } => write!(
                f,
                "{format} image refers to a backing file; flatten it first (for example `qemu-img convert` without -B) and upload the standalone image"
            ),
            Refusal::ExternalDataFile => write!(
                f,
                "qcow2 image keeps its data in an external data file; convert it to a self-contained image first"
            ),
            Refusal::UnknownIncompatibleFeatures { format, bits } => write!(
                f,
                "{format} image uses unknown incompatible features (bits {bits:#x}); it cannot be read safely"
            ),
            Refusal::Encrypted { format } => write!(
                f,
                "{format} image is encrypted by its format; decrypt it before import (vmie encrypts what it stores itself)"
            ),
            Refusal::ExternalExtent { detail } => write!(
                f,
                "VMDK descriptor names an extent outside the image ({detail}); only self-contained monolithicSparse or streamOptimized VMDK files are accepted"
            ),
            Refusal::DifferencingDisk { format } => write!(
                f,
                "{format} image is a differencing disk that needs its parent; merge it into a standalone disk first"
            ),
            Refusal::MultipleFormats { first, second } => write!(
                f,
                "the file is valid as both {first} and {second}; ambiguous images are refused"
            ),
            Refusal::Unread(u) => write!(
                f,
                "{}: the file is {}, which vmie does not read; {}",
                u.name, u.title, u.advice
            ),
            Refusal::NotADisk { size: 0 } => {
                write!(f, "the file is empty: there is no disk image in it")
            }
            Refusal::NotADisk { size } => write!(
                f,
                "the file is {size} bytes, not a whole number of 512-byte sectors, and no disk image format was recognized: it is not a disk image (a text file, a truncated upload, or a format vmie does not know)"
            ),
            Refusal::VirtualSizeTooLarge { size, max } => write!(
                f,
                "virtual size {size} bytes is above the maximum of {max} bytes"
            ),
            Refusal::PointerOutOfBounds {
                format,
                what,
                offset,
                file_size,
            } => write!(
                f,
                "{format} {what} at offset {offset} lies outside the file ({file_size} bytes); the image is truncated or corrupt"
            ),
            Refusal::LimitExceeded {
                format,
                what,
                value,
                limit,
            } => write!(f, "{format} {what} is {value}, above the limit of {limit}"),
            Refusal::Appliance { detail, .. } => write!(f, "OVA refused: {detail}"),
        }
    }
}

/// Error of the `diskfmt` crate.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Reading the image (or writing the output) failed.
    #[error("I/O error while {context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The content is not a valid image of the format.
    #[error("Invalid {format} image{}: {reason}", tag(*.rule))]
    InvalidFormat {
        /// Format being parsed.
        format: Format,
        /// The named rule of the format's specification that the image breaks, if the check
        /// is one of those listed in docs/formats.md.
        rule: Option<&'static str>,
        /// What is wrong.
        reason: String,
    },
    /// The header is valid but the content is inconsistent.
    #[error("Corrupt {format} image{}: {reason}", tag(*.rule))]
    Corrupt {
        /// Format being parsed.
        format: Format,
        /// The named rule broken, as for [`DiskError::InvalidFormat`].
        rule: Option<&'static str>,
        /// What is wrong.
        reason: String,
    },
    /// A valid feature of the format that vmie does not implement.
    #[error("Unsupported {format} image{}: {what}", tag(*.rule))]
    Unsupported {
        /// Format being parsed.
        format: Format,
        /// The named rule, as for [`DiskError::InvalidFormat`].
        rule: Option<&'static str>,
        /// The feature.
        what: String,
    },
    /// Refused by the safety inspection.
    #[error("Refused ({code}): {refusal}", code = .0.code(), refusal = .0)]
    Refused(Refusal),
}

impl DiskError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        DiskError::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`DiskError::InvalidFormat`].
    pub fn invalid(format: Format, reason: impl Into<String>) -> Self {
        DiskError::InvalidFormat {
            format,
            rule: None,
            reason: reason.into(),
        }
    }

    /// [`DiskError::InvalidFormat`] for the named rule `rule` of the format's specification.
    pub fn invalid_rule(format: Format, rule: &'static str, reason: impl Into<String>) -> Self {
        DiskError::InvalidFormat {
            format,
            rule: Some(rule),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`DiskError::Corrupt`].
    pub fn corrupt(format: Format, reason: impl Into<String>) -> Self {
        DiskError::Corrupt {
            format,
            rule: None,
            reason: reason.into(),
        }
    }

    /// [`DiskError::Corrupt`] for the named rule `rule` of the format's specification.
    pub fn corrupt_rule(format: Format, rule: &'static str, reason: impl Into<String>) -> Self {
        DiskError::Corrupt {
            format,
            rule: Some(rule),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`DiskError::Unsupported`].
    pub fn unsupported(format: Format, what: impl Into<String>) -> Self {
        DiskError::Unsupported {
            format,
            rule: None,
            what: what.into(),
        }
    }

    /// [`DiskError::Unsupported`] for the named rule `rule`.
    pub fn unsupported_rule(format: Format, rule: &'static str, what: impl Into<String>) -> Self {
        DiskError::Unsupported {
            format,
            rule: Some(rule),
            what: what.into(),
        }
    }

    /// EC2-style error code for this error.
    #[must_use]
    pub fn ec2_code(&self) -> &'static str {
        match self {
            DiskError::Io { .. } => "InternalError",
            DiskError::InvalidFormat { .. } | DiskError::Corrupt { .. } => "InvalidImageFormat",
            DiskError::Unsupported { .. } => "UnsupportedOperation",
            DiskError::Refused(_) => "InvalidParameter",
        }
    }

    /// Stable machine-readable reason code.
    #[must_use]
    pub fn reason_code(&self) -> &'static str {
        match self {
            DiskError::Io { .. } => "io",
            DiskError::InvalidFormat { .. } => "invalid-format",
            DiskError::Corrupt { .. } => "corrupt",
            DiskError::Unsupported { .. } => "unsupported",
            DiskError::Refused(r) => r.code(),
        }
    }

    /// The name of what was found, when there is one beyond the reason code: the rule of the
    /// format's specification that the image breaks (`refcount-table-unaligned`), or the
    /// container recognized but not read (`parallels`, `luks`).
    #[must_use]
    pub fn name(&self) -> Option<&'static str> {
        match self {
            DiskError::InvalidFormat { rule, .. }
            | DiskError::Corrupt { rule, .. }
            | DiskError::Unsupported { rule, .. } => *rule,
            DiskError::Refused(Refusal::Unread(u)) => Some(u.name),
            _ => None,
        }
    }

    /// The refusal, if this error is one.
    #[must_use]
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            DiskError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// ` (rule)` after the format in a message, when the error names a rule.
fn tag(rule: Option<&'static str>) -> String {
    rule.map_or_else(String::new, |r| format!(" ({r})"))
}

impl From<Refusal> for DiskError {
    fn from(r: Refusal) -> Self {
        DiskError::Refused(r)
    }
}
