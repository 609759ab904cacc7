//! The journal that drives a transaction's state machine: its state, its files' staged and
//! original contents, and where they are kept ([`JournalStore`]). On disk ([`Journals`]) each
//! transaction has a directory holding `journal.json` and the contents; every write is atomic
//! and fsynced, so after a crash the journal says exactly what to finish.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{Action, HealthCheck};
use super::ChangeError;
use crate::fsutil;
use crate::names::{ManagedPath, TxnId};

/// prepared → committing → awaiting_confirmation → committed | rolled_back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    /// Staged and validated; nothing live touched.
    Prepared,
    /// Files are being swapped; a crash here means "roll back".
    Committing,
    /// Swapped, actions run, healthy; rolls back unless confirmed by the deadline.
    AwaitingConfirmation,
    Committed,
    /// Originals are being restored; a crash here means "finish the rollback".
    RollingBack,
    RolledBack,
    /// Dropped before commit (validation failed, aborted, or expired).
    Aborted,
}

impl TxnState {
    /// Whether the transaction still owns its files: no other may touch them.
    pub fn holds_files(self) -> bool {
        matches!(
            self,
            Self::Prepared | Self::Committing | Self::AwaitingConfirmation | Self::RollingBack
        )
    }

    /// Whether the engine may move a transaction from `self` to `next`. A rollback that a
    /// crash interrupted is started again, so `rolling_back` may repeat; `rolled_back`,
    /// `aborted` and `committed` (except for a later rollback) are final.
    pub fn may_become(self, next: Self) -> bool {
        use TxnState::*;
        matches!(
            (self, next),
            (Prepared, Committing | Aborted)
                | (Committing, AwaitingConfirmation | Committed | RollingBack)
                | (AwaitingConfirmation, Committed | RollingBack)
                | (Committed, RollingBack)
                | (RollingBack, RollingBack | RolledBack)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::Committing => "committing",
            Self::AwaitingConfirmation => "awaiting_confirmation",
            Self::Committed => "committed",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::Aborted => "aborted",
        }
    }
}

/// Mode and ownership of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub mode: u32,
    /// `None`: leave ownership as the writer creates it.
    pub owner: Option<(u32, u32)>,
}

/// What was there before the transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Original {
    /// The file did not exist: rollback removes it.
    Absent,
    /// Content is kept in the transaction directory as `original-N`.
    Present { meta: FileMeta, sha256: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalFile {
    /// With every directory symlink resolved.
    pub path: ManagedPath,
    pub original: Original,
    pub new_meta: FileMeta,
    pub new_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub txn_id: String,
    pub state: TxnState,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub files: Vec<JournalFile>,
    pub actions: Vec<Action>,
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub confirm_deadline_ms: Option<i64>,
    /// Why it ended the way it did (failed validator, failed health check, deadline, ...).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a transaction's journal and its files' contents are kept. The agent keeps them in
/// files on its own host ([`Journals`]); the controller keeps an agentless host's in its
/// database, so whichever replica is alive can finish what another started.
pub trait JournalStore: Send + Sync {
    /// Reserves `txn_id`; `Conflict` when it exists already.
    fn create(&self, txn_id: &str) -> impl Future<Output = Result<(), ChangeError>> + Send;

    fn write_blob(
        &self,
        txn_id: &str,
        name: &str,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), ChangeError>> + Send;

    fn read_blob(
        &self,
        txn_id: &str,
        name: &str,
    ) -> impl Future<Output = Result<Vec<u8>, ChangeError>> + Send;

    /// Persists the journal durably; the state it names is what a restart will act on.
    /// `from` is the state it was read in (`None` for a new one): a store several processes
    /// share refuses with `Conflict` when another moved the transaction on meanwhile.
    fn save(
        &self,
        journal: &Journal,
        from: Option<TxnState>,
    ) -> impl Future<Output = Result<(), ChangeError>> + Send;

    /// `NotFound` when this host never had the transaction.
    fn load(&self, txn_id: &str) -> impl Future<Output = Result<Journal, ChangeError>> + Send;

    /// Every transaction with a journal, oldest first.
    fn load_all(&self) -> impl Future<Output = Result<Vec<Journal>, ChangeError>> + Send;

    /// The transactions a crash left for this engine to finish: every one where the engine
    /// is the store's only user, only those whose owner stopped where several share it.
    fn orphaned(&self) -> impl Future<Output = Result<Vec<Journal>, ChangeError>> + Send;

    fn remove(&self, txn_id: &str) -> impl Future<Output = ()> + Send;

    /// The transaction's directory when its journal is on this host's disk (the local host
    /// stages validators' copies from it); `None` for a journal kept elsewhere.
    fn local_dir(&self, txn_id: &str) -> Option<PathBuf>;
}

/// Journals in files: `<root>/<txn_id>/`, every write atomic and fsynced. The directory is
/// locked for the store's life: one engine per directory, never two processes.
pub struct Journals {
    root: PathBuf,
    _lock: fs::File,
}

/// Transaction IDs become directory names: short, and only letters, digits and `-`.
pub fn check_txn_id(txn_id: &str) -> Result<(), ChangeError> {
    TxnId::new(txn_id)
        .map(drop)
        .map_err(|e| ChangeError::InvalidInput(e.to_string()))
}

impl Journals {
    /// Opens (creating) the directory and takes its lock.
    pub fn open(root: &Path) -> Result<Self, ChangeError> {
        fsutil::create_private_dir(root).map_err(|e| ChangeError::io("creating", root, e))?;
        let lock_path = root.join("engine.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ChangeError::io("opening", &lock_path, e))?;
        lock.try_lock().map_err(|_| {
            ChangeError::Conflict(format!(
                "another process is applying changes from {}",
                root.display()
            ))
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, txn_id: &str) -> PathBuf {
        self.root.join(txn_id)
    }

    fn blob_path(&self, txn_id: &str, name: &str) -> PathBuf {
        self.dir(txn_id).join(name)
    }

    fn load_file(&self, txn_id: &str) -> Result<Journal, ChangeError> {
        check_txn_id(txn_id)?;
        let path = self.blob_path(txn_id, "journal.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ChangeError::NotFound(format!(
                    "no transaction {txn_id} on this host"
                )))
            }
            Err(e) => return Err(ChangeError::io("reading", &path, e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| ChangeError::Internal(format!("{}: {e}", path.display())))
    }

    fn remove_dir(&self, txn_id: &str) {
        let dir = self.dir(txn_id);
        if let Err(error) = fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "cannot remove transaction directory");
        }
    }

    /// A directory without a journal was never prepared (crash while staging): removed.
    fn load_dir(&self) -> Result<Vec<Journal>, ChangeError> {
        let entries =
            fs::read_dir(&self.root).map_err(|e| ChangeError::io("listing", &self.root, e))?;
        let mut journals = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_txn_id(&name).is_err() || !entry.path().is_dir() {
                continue;
            }
            match self.load_file(&name) {
                Ok(journal) => journals.push(journal),
                Err(ChangeError::NotFound(_)) => self.remove_dir(&name),
                Err(error) => return Err(error),
            }
        }
        journals.sort_by_key(|j| (j.created_ms, j.txn_id.clone()));
        Ok(journals)
    }
}

impl JournalStore for Journals {
    async fn create(&self, txn_id: &str) -> Result<(), ChangeError> {
        let dir = self.dir(txn_id);
        if dir.exists() {
            return Err(ChangeError::Conflict(format!(
                "transaction {txn_id} already exists"
            )));
        }
        fsutil::create_private_dir(&dir).map_err(|e| ChangeError::io("creating", &dir, e))?;
        fsutil::sync_dir(&self.root).map_err(|e| ChangeError::io("syncing", &self.root, e))
    }

    async fn write_blob(&self, txn_id: &str, name: &str, bytes: &[u8]) -> Result<(), ChangeError> {
        let path = self.blob_path(txn_id, name);
        fsutil::write_atomic(&path, bytes, 0o600).map_err(|e| ChangeError::io("writing", &path, e))
    }

    async fn read_blob(&self, txn_id: &str, name: &str) -> Result<Vec<u8>, ChangeError> {
        let path = self.blob_path(txn_id, name);
        fs::read(&path).map_err(|e| ChangeError::io("reading", &path, e))
    }

    /// The directory's lock makes this engine its only writer, so `from` needs no check.
    async fn save(&self, journal: &Journal, _from: Option<TxnState>) -> Result<(), ChangeError> {
        let path = self.blob_path(&journal.txn_id, "journal.json");
        let bytes = serde_json::to_vec_pretty(journal)
            .map_err(|e| ChangeError::Internal(format!("encoding journal: {e}")))?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(|e| ChangeError::io("writing", &path, e))
    }

    async fn load(&self, txn_id: &str) -> Result<Journal, ChangeError> {
        self.load_file(txn_id)
    }

    async fn load_all(&self) -> Result<Vec<Journal>, ChangeError> {
        self.load_dir()
    }

    async fn orphaned(&self) -> Result<Vec<Journal>, ChangeError> {
        self.load_dir()
    }

    async fn remove(&self, txn_id: &str) {
        self.remove_dir(txn_id)
    }

    fn local_dir(&self, txn_id: &str) -> Option<PathBuf> {
        Some(self.dir(txn_id))
    }
}

#[cfg(test)]
mod tests {
    use super::TxnState::{self, *};

    const ALL: [TxnState; 7] = [
        Prepared,
        Committing,
        AwaitingConfirmation,
        Committed,
        RollingBack,
        RolledBack,
        Aborted,
    ];

    #[test]
    fn final_states_go_nowhere_and_only_applied_ones_roll_back() {
        for next in ALL {
            assert!(!RolledBack.may_become(next), "rolled_back → {next:?}");
            assert!(!Aborted.may_become(next), "aborted → {next:?}");
        }
        for from in ALL {
            let applied = matches!(
                from,
                Committing | AwaitingConfirmation | Committed | RollingBack
            );
            assert_eq!(
                from.may_become(RollingBack),
                applied,
                "{from:?} → rolling_back"
            );
            assert_eq!(from.may_become(RolledBack), from == RollingBack, "{from:?}");
        }
        assert!(Prepared.may_become(Committing));
        assert!(
            !Prepared.may_become(Committed),
            "a commit is journaled first"
        );
        assert!(!Committed.may_become(AwaitingConfirmation));
    }
}
