//! What a backend operation returns when it cannot do what was asked: a
//! kind the plugin can act on and a message for the operator.

use std::path::Path;

/// Why an operation did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Outside the grants, or refused by the system.
    Denied,
    /// The path, service, update or key does not exist.
    NotFound,
    /// An argument was malformed.
    InvalidArgument,
    /// This backend cannot do this on this system.
    Unsupported,
    /// The system is in a state where this cannot be done.
    Conflict,
    /// The operation did not finish within its timeout.
    Timeout,
    /// The operation was attempted and failed.
    Failed,
}

impl ErrorKind {
    /// The kind as the contract and the audit journal spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::NotFound => "not-found",
            Self::InvalidArgument => "invalid-argument",
            Self::Unsupported => "unsupported",
            Self::Conflict => "conflict",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation's failure, as the plugin will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Result of a backend operation.
pub type OpResult<T> = Result<T, BackendError>;

/// Map an I/O error on `path` to the error a plugin sees.
pub fn io_error(path: &Path, error: &std::io::Error) -> BackendError {
    let kind = match error.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
        std::io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        std::io::ErrorKind::Unsupported => ErrorKind::Unsupported,
        _ => ErrorKind::Failed,
    };
    BackendError::new(kind, format!("{}: {error}", path.display()))
}
