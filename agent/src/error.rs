//! The agent's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "this agent is not enrolled (no identity in {0}); run `infrastructor-agent enroll` first"
    )]
    NotEnrolled(PathBuf),
    #[error("this agent is already enrolled as device {0}; pass --force to enroll again")]
    AlreadyEnrolled(String),
    #[error("invalid CA fingerprint {0:?}: expected 64 hex digits (SHA-256 of the controller's CA certificate)")]
    BadFingerprint(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach controller at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("controller refused: {}", .0.message())]
    Refused(#[from] tonic::Status),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("configuration change: {0}")]
    Change(#[from] infrastructor_hostops::change::ChangeError),
}

impl AgentError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<rcgen::Error> for AgentError {
    fn from(error: rcgen::Error) -> Self {
        Self::Certificate(error.to_string())
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
