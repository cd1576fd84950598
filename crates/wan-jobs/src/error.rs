//! The one error type of the job manager.
//!
//! Each variant corresponds to exactly one HTTP status, so the server can map it with an exhaustive
//! `match` and never has to guess from a message; `code()` gives the stable machine-readable code
//! for the `{"error", "code"}` body.

/// Everything a call on [`crate::JobManager`] can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is out of bounds (400). `message` names the limit and the value given.
    #[error("invalid {field}: {message}")]
    Validation { field: String, message: String },

    /// No job with this id (404).
    #[error("job {0} not found")]
    NotFound(String),

    /// Admission refused: the pending + processing limit is reached (429 with `Retry-After`).
    #[error("Too many concurrent requests ({active} pending or processing, limit {limit}). Please try again in {retry_after_s} s.")]
    Overloaded { retry_after_s: u64, active: usize, limit: usize },

    /// No model can serve the request (503).
    #[error("Model not loaded: {0}")]
    NotReady(String),

    /// The manager stopped admitting because the server is stopping (503).
    #[error("the server is shutting down and accepts no new jobs")]
    ShuttingDown,

    /// The operation does not apply to the job's current state, e.g. cancelling a finished job (409).
    #[error("{0}")]
    Conflict(String),

    /// A fault of the server itself (500): the store failed, a file could not be written, ...
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A stable `snake_case` code for the error body; clients may match on it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "invalid_request",
            Error::NotFound(_) => "job_not_found",
            Error::Overloaded { .. } => "too_many_requests",
            Error::NotReady(_) => "model_not_loaded",
            Error::ShuttingDown => "shutting_down",
            Error::Conflict(_) => "conflict",
            Error::Internal(_) => "internal_error",
        }
    }

    pub(crate) fn validation(field: &str, message: impl Into<String>) -> Self {
        Error::Validation { field: field.to_string(), message: message.into() }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::Internal(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
