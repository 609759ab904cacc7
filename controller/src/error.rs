//! The service layer's error type. Each surface maps [`ErrorKind`] once: REST to
//! problem+json, gRPC to a status. Internal details are logged, never sent to clients.

use crate::store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidInput,
    Conflict,
    Unauthorized,
    Forbidden,
    /// Too many requests from this principal; retry after the given time.
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub const ALL: [Self; 8] = [
        Self::NotFound,
        Self::InvalidInput,
        Self::Conflict,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
    ];

    /// As a job stores it, so a finished job's error answers like the call would have.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::InvalidInput => "invalid_input",
            Self::Conflict => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == stored)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("rate limit exceeded: retry after {}s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: std::time::Duration },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::InvalidInput(_) => ErrorKind::InvalidInput,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Unauthorized(_) => ErrorKind::Unauthorized,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Store(error) => error.kind(),
        }
    }

    /// What a client may see: the message for client errors, a generic line otherwise.
    pub fn public_message(&self) -> String {
        match self.kind() {
            ErrorKind::Internal => "internal error".to_string(),
            ErrorKind::Unavailable => match self {
                Self::Unavailable(message) => message.clone(),
                _ => "a backing service is unavailable".to_string(),
            },
            _ => self.to_string(),
        }
    }

    /// Whole seconds to wait before retrying, for `Retry-After` (rounded up).
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => {
                Some(retry_after.as_millis().div_ceil(1000).max(1) as u64)
            }
            _ => None,
        }
    }

    /// An error of `kind` with a message already fit for a client (a finished job's).
    pub fn of_kind(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::NotFound => Self::NotFound(message),
            ErrorKind::InvalidInput => Self::InvalidInput(message),
            ErrorKind::Conflict => Self::Conflict(message),
            ErrorKind::Unauthorized => Self::Unauthorized(message),
            ErrorKind::Forbidden => Self::Forbidden(message),
            ErrorKind::Unavailable | ErrorKind::RateLimited => Self::Unavailable(message),
            ErrorKind::Internal => Self::Internal(message),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
