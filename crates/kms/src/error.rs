//! Errors of the key management service, each with the AWS KMS exception name clients expect.

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, KmsError>;

/// What went wrong with a key operation.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// No key or alias by that name.
    #[error("key {0} does not exist")]
    NotFound(String),
    /// An alias or key with that name exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The key is disabled.
    #[error("key {0} is disabled; enable it before using it")]
    Disabled(String),
    /// The key is scheduled for deletion.
    #[error(
        "key {key} is pending deletion (scheduled for {date}); cancel the deletion to use it again"
    )]
    PendingDeletion {
        /// Key id.
        key: String,
        /// Deletion date, seconds since the Unix epoch.
        date: u64,
    },
    /// The key was deleted; whatever it protected can no longer be decrypted.
    #[error("key {0} has been deleted; data encrypted under it cannot be decrypted")]
    Deleted(String),
    /// The key policy does not allow the caller this action.
    #[error("{principal} is not authorized to perform {action} on key {key}")]
    AccessDenied {
        /// ARN of the caller.
        principal: String,
        /// The KMS action, e.g. `kms:Decrypt`.
        action: String,
        /// Key id.
        key: String,
    },
    /// A ciphertext that is malformed, altered, or bound to another encryption context.
    #[error("invalid ciphertext: {0}")]
    InvalidCiphertext(String),
    /// A parameter out of range or malformed.
    #[error("{0}")]
    Validation(String),
    /// Tags beyond the limits or with a reserved key.
    #[error("{0}")]
    Tag(String),
    /// A key policy document that does not parse or uses what vmie does not evaluate.
    #[error("malformed key policy: {0}")]
    MalformedPolicy(String),
    /// The root key is missing, malformed or not protected.
    #[error("root key: {0}")]
    RootKey(String),
    /// Sealed key material does not open with this root key.
    #[error(
        "key material of {0} does not open with this root key (a different VMIE_ROOT_KEY, or the key record was altered)"
    )]
    Unseal(String),
    /// A stored key record does not parse.
    #[error("key record {0} is malformed: {1}")]
    Record(String, String),
    /// The object store holding key records failed.
    #[error("key store: {0}")]
    Store(#[from] object_store::Error),
}

impl KmsError {
    /// The AWS KMS exception name for this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::PendingDeletion { .. } | KmsError::Deleted(_) => "KMSInvalidStateException",
            KmsError::AccessDenied { .. } => "AccessDeniedException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::Tag(_) => "TagException",
            KmsError::MalformedPolicy(_) => "MalformedPolicyDocumentException",
            KmsError::RootKey(_) | KmsError::Unseal(_) | KmsError::Record(..) => {
                "KMSInternalException"
            }
            KmsError::Store(_) => "DependencyTimeoutException",
        }
    }
}
