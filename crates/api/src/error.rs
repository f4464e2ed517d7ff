//! The one error type of the endpoint: an HTTP status, the service's error code and a
//! message a person can act on. Engine and catalog errors map onto it in one place; a fault
//! of the service itself is answered with a generic 500 whose cause stays in the service log.

use catalog::CatalogError;
use engine::EngineError;

use crate::query::ParamError;

/// An error answered with the service's error document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Error code (`InvalidParameterValue`, `UnauthorizedOperation`, …).
    pub code: String,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// A 400 with `code`.
    #[must_use]
    pub fn client(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A 500 whose cause is logged (`what` failed) and not answered.
    #[must_use]
    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        ApiError {
            status: 500,
            code: "InternalError".into(),
            message: "an internal error occurred; the request may be retried".into(),
        }
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::client(e.code, e.message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        if e.is_client() {
            ApiError::client(e.code(), e.to_string())
        } else {
            ApiError::internal("internal error", &e)
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        EngineError::from(e).into()
    }
}
