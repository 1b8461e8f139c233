//! The hub's one error type and its single mapping to a gRPC `Status`.
//!
//! Owns: what can go wrong and what a client is told about it. Storage and I/O
//! details are logged here, never sent to clients.

use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is wrong: which field, what is wrong, what is expected.
    #[error("{field}: {problem}; expected {expected}")]
    InvalidArgument {
        field: String,
        problem: String,
        expected: String,
    },
    /// The caller's organisation is not allowed to do this; says which rule.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller presented no usable identity.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// A position beyond what the hub holds (e.g. resuming past its head).
    #[error("{0}")]
    OutOfRange(String),
    /// The hub is shutting down or its writer has stopped.
    #[error("{0}")]
    Unavailable(String),
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("state store: {0}")]
    StateStore(#[from] fjall::Error),
    #[error("log record {sequence} is corrupt: {problem}")]
    Corrupt { sequence: u64, problem: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn invalid(
        field: impl Into<String>,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
            expected: expected.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Storage(_)
            | Error::StateStore(_)
            | Error::Corrupt { .. }
            | Error::Config(_)
            | Error::Tls(_)
            | Error::Certificate(_)
            | Error::Io { .. } => {
                tracing::error!(error = %error, "internal error");
                return Status::internal("internal error in the hub; it has been logged");
            }
        };
        Status::new(code, error.to_string())
    }
}
