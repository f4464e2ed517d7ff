//! Errors of the `guest` crate.

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, GuestError>;

/// What went wrong while inspecting a guest. Structures found damaged are reported with what
/// was being read and why it was refused; nothing here panics on hostile bytes.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Reading the disk failed.
    #[error("reading the disk: {0}")]
    Disk(#[from] diskfmt::DiskError),
    /// A structure is damaged or out of bounds.
    #[error("{what}: {why}")]
    Invalid {
        /// The structure (e.g. "GPT header", "XFS superblock").
        what: &'static str,
        /// Why it was refused.
        why: String,
    },
    /// A file or directory does not exist in the guest filesystem.
    #[error("{0}: not found")]
    NotFound(String),
    /// A structure uses a feature this reader does not handle.
    #[error("{what}: {why} is not supported")]
    Unsupported {
        /// The structure.
        what: &'static str,
        /// The feature.
        why: String,
    },
}

impl GuestError {
    /// A damaged structure.
    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        GuestError::Invalid {
            what,
            why: why.into(),
        }
    }
    /// An unsupported feature.
    pub fn unsupported(what: &'static str, why: impl Into<String>) -> Self {
        GuestError::Unsupported {
            what,
            why: why.into(),
        }
    }
}
