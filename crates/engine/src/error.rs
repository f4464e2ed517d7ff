//! Errors of the engine: refusals of a request (with their EC2 error code) and failures of
//! the services it stands on.

use catalog::CatalogError;

/// Errors returned to whoever submits, cancels or looks up a task.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is refused; `code` is the EC2 error code.
    #[error("{message}")]
    Request {
        /// EC2 error code (`InvalidParameterValue`, `InvalidParameter`, …).
        code: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The snapshot store failed.
    #[error("snapshot store: {0}")]
    Store(#[from] blockstore::StoreError),
    /// Something else in the service failed.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// The EC2 error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Request { code, .. } => code,
            EngineError::Catalog(CatalogError::IdempotentParameterMismatch { .. }) => {
                "IdempotentParameterMismatch"
            }
            EngineError::Catalog(CatalogError::NotFound(id)) => not_found_code(id),
            EngineError::Catalog(CatalogError::Conflict(_)) => "IncorrectState",
            EngineError::Store(e) => e.code(),
            EngineError::Catalog(_) | EngineError::Internal(_) => "InternalError",
        }
    }

    /// Whether the fault is the caller's (HTTP 400) rather than the service's (500).
    #[must_use]
    pub fn is_client(&self) -> bool {
        self.code() != "InternalError"
    }
}

/// The EC2 "not found" code for an id.
#[must_use]
pub fn not_found_code(id: &str) -> &'static str {
    if id.starts_with("ami-") {
        "InvalidAMIID.NotFound"
    } else if id.starts_with("snap-") {
        "InvalidSnapshot.NotFound"
    } else {
        "InvalidConversionTaskId"
    }
}

/// Why a task failed: the `StatusMessage` it ends with, in the EC2 service's style
/// (`ClientError: …` for the caller's input, `ServerError: …` for ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The input cannot be imported or exported as asked.
    Client(String),
    /// The service failed; retrying later may work.
    Server(String),
    /// The task was cancelled.
    Cancelled,
    /// This worker lost the task's lease (another worker holds it now): stop quietly.
    LeaseLost,
}

impl Failure {
    /// The final `StatusMessage`.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Failure::Client(m) => format!("ClientError: {m}"),
            Failure::Server(m) => format!("ServerError: {m}"),
            Failure::Cancelled => "Task cancelled by user (CancelImportTask)".into(),
            Failure::LeaseLost => "lease lost".into(),
        }
    }
}

impl From<CatalogError> for Failure {
    fn from(e: CatalogError) -> Self {
        Failure::Server(format!("the catalog failed: {e}"))
    }
}

impl From<blockstore::StoreError> for Failure {
    fn from(e: blockstore::StoreError) -> Self {
        let mut m = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            m.push_str(": ");
            m.push_str(&s.to_string());
            src = s.source();
        }
        match e {
            blockstore::StoreError::Key { .. } => Failure::Client(format!(
                "the KMS key could not be used: {m}; check that the key exists, is enabled and that its policy lets this account use it"
            )),
            _ => Failure::Server(format!("the snapshot store failed: {m}")),
        }
    }
}

impl From<crate::scratch::ScratchError> for Failure {
    fn from(e: crate::scratch::ScratchError) -> Self {
        Failure::Server(e.to_string())
    }
}
