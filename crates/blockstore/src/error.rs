//! Errors of the snapshot store.

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What went wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No committed snapshot by that id.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// A snapshot by that id exists already.
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    /// Stored data failed authentication or does not match its manifest: altered, swapped,
    /// truncated or from another snapshot.
    #[error("snapshot {snapshot}: {what} failed its integrity check: {detail}")]
    Integrity {
        /// Snapshot id.
        snapshot: String,
        /// What failed: "manifest", "chunk 12", …
        what: String,
        /// Why.
        detail: String,
    },
    /// A key could not be used (disabled, deleted, not allowed).
    #[error("snapshot {snapshot}: its encryption key cannot be used: {source}")]
    Key {
        /// Snapshot id.
        snapshot: String,
        /// The KMS error.
        #[source]
        source: kms::KmsError,
    },
    /// A parameter out of range.
    #[error("{0}")]
    Invalid(String),
    /// Reading the source disk failed.
    #[error("reading the source disk: {0}")]
    Source(#[from] diskfmt::DiskError),
    /// The object store failed (after its retries).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A worker task failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl StoreError {
    /// The EC2-style error code for API responses.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "InvalidSnapshot.NotFound",
            StoreError::AlreadyExists(_) => "InvalidSnapshot.Duplicate",
            StoreError::Integrity { .. } => "InvalidSnapshot.Corrupted",
            StoreError::Key { source, .. } => match source {
                kms::KmsError::Disabled(_) => "KMSKeyDisabled",
                kms::KmsError::NotFound(_) => "KMSKeyNotFound",
                kms::KmsError::AccessDenied { .. } => "KMSAccessDenied",
                _ => "KMSInvalidState",
            },
            StoreError::Invalid(_) => "InvalidParameterValue",
            StoreError::Source(e) => e.ec2_code(),
            StoreError::Store(_) | StoreError::Internal(_) => "InternalError",
        }
    }
}
