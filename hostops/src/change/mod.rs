//! Two-phase configuration changes: staged, validated, swapped atomically, health-checked,
//! and rolled back automatically when anything fails or the controller does not confirm in
//! time. A file is always either its old or its new version, whatever crashes when.
//!
//! - [`spec`]: the change set and the host's policy (allowlisted roots and validators).
//! - [`journal`]: the journaled state machine that makes every step crash-safe, and where
//!   it is kept (files on the agent, the database for agentless hosts).
//! - [`host`]: the primitives a change needs ([`host::LocalHost`] here; the controller
//!   implements them over SSH for agentless hosts).
//! - [`health`]: commit actions and health checks.
//! - [`engine`]: prepare / commit / confirm / rollback / recover.
//! - [`wire`]: the change set and the engine's reports in their protocol form, validated as
//!   they are decoded.

pub mod engine;
pub mod health;
pub mod host;
pub mod journal;
pub mod spec;
pub mod wire;

pub use engine::{ChangeEngine, CommitReport, FileDiff, PrepareReport, ValidatorOutcome};
pub use host::{ChangeHost, LiveFile, LocalHost};
pub use journal::{Journal, JournalStore, Journals, TxnState};
pub use spec::{ChangePolicy, ChangeSet, CommitOptions};

use std::path::Path;

use infrastructor_proto::v1::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    InvalidInput(String),
    /// The host's policy or the file's nature forbids it (outside roots, symlink, device).
    #[error("{0}")]
    Refused(String),
    /// Another transaction holds the file, or the state does not allow the step.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// A step failed on the host (validator, action, Docker unreachable).
    #[error("{0}")]
    Failed(String),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl ChangeError {
    pub fn io(context: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            context,
            path: path.display().to_string(),
            source,
        }
    }

    /// The error kind carried in a `CommandFailed`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidInput(_) | Self::Refused(_) => ErrorKind::InvalidInput,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Failed(_) => ErrorKind::Failed,
            Self::Io { .. } | Self::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Crash-test hook: when `INFRASTRUCTOR_FAILPOINTS` (comma-separated) names `name`, the process
/// is killed with SIGKILL right here — no destructors, no flushing, exactly like `kill -9`.
pub fn failpoint(name: &str) {
    static ARMED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("INFRASTRUCTOR_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if armed.iter().any(|armed| armed == name) {
        tracing::warn!(failpoint = name, "failpoint hit: killing this process");
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &pid])
            .status();
        // SIGKILL is asynchronous: never continue past the failpoint.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
