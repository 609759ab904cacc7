//! The change engine: prepare (stage, diff, validate) → commit (swap atomically, act,
//! health-check) → confirm, or roll back. Every state change is journaled durably before the
//! step it announces, so [`ChangeEngine::recover`] can finish whatever a crash interrupted.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::health::{self, HealthOutcome};
use super::host::{original_name, staged_name, ChangeHost, LiveFile};
use super::journal::{FileMeta, Journal, JournalFile, JournalStore, Journals, Original, TxnState};
use super::spec::{ChangePolicy, ChangeSet, CommitOptions, FileChange};
use super::{failpoint, ChangeError};
use crate::command::{self, OwnerKind};
use crate::names::{AccountName, ManagedPath, TxnId};
use crate::now_ms;

const VALIDATOR_TIMEOUT: Duration = Duration::from_secs(60);
/// A prepared transaction nobody committed is dropped after this.
const PREPARED_TTL: Duration = Duration::from_secs(3600);
/// Finished transactions kept for status queries and later rollbacks.
const KEEP_FINISHED: usize = 100;
/// Validator output kept in a report.
const MAX_VALIDATOR_OUTPUT: usize = 16 * 1024;

/// What prepare found: a diff per file and each validator's verdict. `state` is `prepared`,
/// or `aborted` when a validator failed (nothing live was touched either way).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareReport {
    pub txn_id: String,
    pub state: TxnState,
    pub files: Vec<FileDiff>,
    pub validators: Vec<ValidatorOutcome>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileDiff {
    pub path: ManagedPath,
    pub existed: bool,
    pub changed: bool,
    /// Unified diff of the live file against the staged one.
    pub diff: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ValidatorOutcome {
    pub name: String,
    pub file: ManagedPath,
    pub passed: bool,
    pub output: String,
}

/// What commit (or a rollback) ended with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitReport {
    pub txn_id: String,
    /// `awaiting_confirmation`, `committed` or `rolled_back`.
    pub state: TxnState,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub health: Vec<HealthOutcome>,
    #[serde(default)]
    pub confirm_deadline_ms: Option<i64>,
}

impl CommitReport {
    fn of(journal: &Journal, health: Vec<HealthOutcome>) -> Self {
        Self {
            txn_id: journal.txn_id.clone(),
            state: journal.state,
            reason: journal.reason.clone(),
            health,
            confirm_deadline_ms: journal.confirm_deadline_ms,
        }
    }
}

pub struct ChangeEngine<H, J = Journals> {
    host: H,
    policy: ChangePolicy,
    journals: J,
    /// One state change at a time in this process (a shared store also refuses a save over
    /// a state another process moved on).
    busy: tokio::sync::Mutex<()>,
}

impl<H: ChangeHost> ChangeEngine<H> {
    /// An engine journaling in files under `dir` (created, and locked for the engine's life).
    pub fn open(host: H, policy: ChangePolicy, dir: &Path) -> Result<Self, ChangeError> {
        policy.validate()?;
        Self::with_journals(host, policy, Journals::open(dir)?)
    }
}

impl<H: ChangeHost, J: JournalStore> ChangeEngine<H, J> {
    /// An engine journaling in `journals`.
    pub fn with_journals(host: H, policy: ChangePolicy, journals: J) -> Result<Self, ChangeError> {
        policy.validate()?;
        Ok(Self {
            host,
            policy,
            journals,
            busy: tokio::sync::Mutex::new(()),
        })
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    /// Stages the files, diffs them against the live ones and runs the validators. Nothing
    /// live is touched; a failed validator leaves the transaction `aborted`.
    pub async fn prepare(
        &self,
        txn_id: &TxnId,
        set: &ChangeSet,
    ) -> Result<PrepareReport, ChangeError> {
        let txn_id = txn_id.as_str();
        self.policy.check(set)?;
        let _busy = self.busy.lock().await;
        let mut targets = Vec::with_capacity(set.files.len());
        for file in &set.files {
            targets.push(self.resolve(file).await?);
        }
        self.refuse_held_files(targets.iter().map(|(path, _)| path), None)
            .await?;
        self.prune_finished().await;

        let now = now_ms();
        let mut journal = Journal {
            txn_id: txn_id.to_string(),
            state: TxnState::Prepared,
            created_ms: now,
            updated_ms: now,
            files: Vec::with_capacity(targets.len()),
            actions: set.actions.clone(),
            health_checks: set.health_checks.clone(),
            confirm_deadline_ms: None,
            reason: None,
        };
        self.journals.create(txn_id).await?;
        let mut diffs = Vec::with_capacity(targets.len());
        for (index, (file, (path, live))) in set.files.iter().zip(&targets).enumerate() {
            let new_meta = self.new_meta(file, live).await?;
            let original = match live {
                LiveFile::Absent => Original::Absent,
                LiveFile::Regular { content, meta, .. } => {
                    self.journals
                        .write_blob(txn_id, &original_name(index), content)
                        .await?;
                    Original::Present {
                        meta: *meta,
                        sha256: sha256(content),
                    }
                }
            };
            self.journals
                .write_blob(txn_id, &staged_name(index), file.content.as_bytes())
                .await?;
            diffs.push(diff(path, live, &file.content));
            journal.files.push(JournalFile {
                path: path.clone(),
                original,
                new_meta,
                new_sha256: sha256(file.content.as_bytes()),
            });
        }
        failpoint("prepare.staged");

        let validators = self.run_validators(txn_id, set, &journal).await;
        if let Some(failed) = validators.iter().find(|v| !v.passed) {
            journal.state = TxnState::Aborted;
            journal.reason = Some(format!("validator {} failed", failed.name));
        }
        journal.updated_ms = now_ms();
        self.journals.save(&journal, None).await?;
        tracing::info!(
            txn_id,
            state = journal.state.as_str(),
            files = journal.files.len(),
            "prepared"
        );
        Ok(PrepareReport {
            txn_id: txn_id.to_string(),
            state: journal.state,
            files: diffs,
            validators,
            reason: journal.reason,
        })
    }

    /// Swaps every file in atomically, runs the actions and the health checks. Any failure
    /// restores every file and re-runs the actions. On success the transaction awaits
    /// confirmation until the deadline (or is committed at once with a zero timeout).
    pub async fn commit(
        &self,
        txn_id: &TxnId,
        options: CommitOptions,
    ) -> Result<CommitReport, ChangeError> {
        let txn_id = txn_id.as_str();
        let _busy = self.busy.lock().await;
        let mut journal = self.journals.load(txn_id).await?;
        if journal.state != TxnState::Prepared {
            return Err(ChangeError::Conflict(format!(
                "transaction {txn_id} is {}, not prepared",
                journal.state.as_str()
            )));
        }
        if let Err(error) = self.unchanged_since_prepare(&journal).await {
            self.finish(&mut journal, TxnState::Aborted, Some(error.to_string()))
                .await?;
            return Err(error);
        }
        self.finish(&mut journal, TxnState::Committing, None)
            .await?;
        failpoint("commit.journaled");

        for (index, file) in journal.files.iter().enumerate() {
            let installed = async {
                let content = self.journals.read_blob(txn_id, &staged_name(index)).await?;
                self.host.install(&file.path, &content, file.new_meta).await
            };
            if let Err(error) = installed.await {
                let reason = format!("installing {} failed: {error}", file.path);
                return self.roll_back(journal, reason, Vec::new()).await;
            }
            failpoint(&format!("commit.installed_{}", index + 1));
        }
        if let Err(reason) = health::run_actions(&self.host, &journal.actions).await {
            return self.roll_back(journal, reason, Vec::new()).await;
        }
        failpoint("commit.actions_done");
        let outcomes =
            health::run_health_checks(&self.host, &journal.health_checks, options.health_timeout)
                .await;
        if let Some(failed) = outcomes.iter().find(|o| !o.passed) {
            let reason = format!("health check failed: {} ({})", failed.check, failed.detail);
            return self.roll_back(journal, reason, outcomes).await;
        }
        if options.confirm_timeout.is_zero() {
            self.finish(&mut journal, TxnState::Committed, None).await?;
        } else {
            journal.confirm_deadline_ms =
                Some(now_ms() + options.confirm_timeout.as_millis() as i64);
            self.finish(&mut journal, TxnState::AwaitingConfirmation, None)
                .await?;
        }
        failpoint("commit.awaiting");
        tracing::info!(txn_id, state = journal.state.as_str(), "committed");
        Ok(CommitReport::of(&journal, outcomes))
    }

    /// The controller saw every target healthy: keep the change.
    pub async fn confirm(&self, txn_id: &TxnId) -> Result<CommitReport, ChangeError> {
        let txn_id = txn_id.as_str();
        let _busy = self.busy.lock().await;
        let mut journal = self.journals.load(txn_id).await?;
        match journal.state {
            TxnState::AwaitingConfirmation => {
                journal.confirm_deadline_ms = None;
                self.finish(&mut journal, TxnState::Committed, None).await?;
                tracing::info!(txn_id, "confirmed");
            }
            TxnState::Committed => {}
            other => {
                return Err(ChangeError::Conflict(format!(
                    "transaction {txn_id} is {}; it can no longer be confirmed",
                    other.as_str()
                )))
            }
        }
        Ok(CommitReport::of(&journal, Vec::new()))
    }

    /// Drops a prepared transaction (nothing live was touched).
    pub async fn abort(&self, txn_id: &TxnId) -> Result<CommitReport, ChangeError> {
        let txn_id = txn_id.as_str();
        let _busy = self.busy.lock().await;
        let mut journal = self.journals.load(txn_id).await?;
        match journal.state {
            TxnState::Prepared => {
                self.finish(&mut journal, TxnState::Aborted, Some("aborted".into()))
                    .await?
            }
            TxnState::Aborted => {}
            other => {
                return Err(ChangeError::Conflict(format!(
                    "transaction {txn_id} is {}; only a prepared transaction can be aborted",
                    other.as_str()
                )))
            }
        }
        Ok(CommitReport::of(&journal, Vec::new()))
    }

    /// Restores the originals of a committed (or still unconfirmed) transaction and re-runs
    /// its actions. A committed one is only rolled back while its files are still exactly as
    /// it left them and no other transaction holds them. A transaction that was never
    /// applied has nothing to undo: a prepared one is dropped, and both end `aborted`.
    pub async fn rollback(
        &self,
        txn_id: &TxnId,
        reason: &str,
    ) -> Result<CommitReport, ChangeError> {
        let txn_id = txn_id.as_str();
        let _busy = self.busy.lock().await;
        let mut journal = self.journals.load(txn_id).await?;
        match journal.state {
            TxnState::AwaitingConfirmation | TxnState::Committing | TxnState::RollingBack => {
                self.roll_back(journal, reason.to_string(), Vec::new())
                    .await
            }
            TxnState::Committed => {
                self.refuse_held_files(journal.files.iter().map(|f| &f.path), Some(txn_id))
                    .await?;
                self.unchanged_since_commit(&journal).await?;
                self.roll_back(journal, reason.to_string(), Vec::new())
                    .await
            }
            TxnState::RolledBack | TxnState::Aborted => Ok(CommitReport::of(&journal, Vec::new())),
            TxnState::Prepared => {
                let reason = format!("{reason}; never applied, so dropped");
                self.finish(&mut journal, TxnState::Aborted, Some(reason))
                    .await?;
                Ok(CommitReport::of(&journal, Vec::new()))
            }
        }
    }

    /// After a crash: finishes every rollback it interrupted and rolls back every transaction
    /// it left mid-commit (of those the store says were orphaned). Transactions awaiting
    /// confirmation keep waiting (their deadline still applies). Returns what it rolled back.
    pub async fn recover(&self) -> Result<Vec<CommitReport>, ChangeError> {
        let _busy = self.busy.lock().await;
        let mut resolved = Vec::new();
        for journal in self.journals.orphaned().await? {
            if matches!(journal.state, TxnState::Committing | TxnState::RollingBack) {
                let reason = format!("restarted while {}: rolled back", journal.state.as_str());
                tracing::warn!(txn_id = %journal.txn_id, %reason, "recovering transaction");
                resolved.push(self.roll_back(journal, reason, Vec::new()).await?);
            }
        }
        Ok(resolved)
    }

    /// Rolls back every transaction whose confirmation deadline has passed and drops stale
    /// prepared ones. Returns what it rolled back.
    pub async fn expire(&self) -> Result<Vec<CommitReport>, ChangeError> {
        let _busy = self.busy.lock().await;
        let now = now_ms();
        let mut expired = Vec::new();
        for mut journal in self.journals.load_all().await? {
            match journal.state {
                TxnState::AwaitingConfirmation
                    if journal.confirm_deadline_ms.is_some_and(|d| d <= now) =>
                {
                    let reason = "not confirmed by the deadline: rolled back".to_string();
                    tracing::warn!(txn_id = %journal.txn_id, "confirmation deadline passed");
                    expired.push(self.roll_back(journal, reason, Vec::new()).await?);
                }
                TxnState::Prepared
                    if now - journal.created_ms > PREPARED_TTL.as_millis() as i64 =>
                {
                    self.finish(
                        &mut journal,
                        TxnState::Aborted,
                        Some("never committed".into()),
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(expired)
    }

    /// The earliest confirmation deadline, if any transaction awaits one.
    pub async fn next_deadline_ms(&self) -> Option<i64> {
        self.journals
            .load_all()
            .await
            .ok()?
            .iter()
            .filter(|j| j.state == TxnState::AwaitingConfirmation)
            .filter_map(|j| j.confirm_deadline_ms)
            .min()
    }

    /// Where a transaction is, as a report (changes nothing); `NotFound` when this host
    /// never had it.
    pub async fn report(&self, txn_id: &TxnId) -> Result<CommitReport, ChangeError> {
        let journal = self.journals.load(txn_id.as_str()).await?;
        Ok(CommitReport::of(&journal, Vec::new()))
    }

    pub async fn status(&self, txn_id: &TxnId) -> Result<Journal, ChangeError> {
        self.journals.load(txn_id.as_str()).await
    }

    pub async fn list(&self) -> Result<Vec<Journal>, ChangeError> {
        self.journals.load_all().await
    }

    /// The resolved path (directory symlinks followed, still inside a root) and what is there.
    async fn resolve(&self, file: &FileChange) -> Result<(ManagedPath, LiveFile), ChangeError> {
        let dir = self.host.canonical_dir(&file.path.parent()).await?;
        let path = dir
            .join(file.path.file_name())
            .map_err(|e| ChangeError::Refused(e.to_string()))?;
        let mut inside = false;
        for root in &self.policy.roots {
            if let Ok(root) = self.host.canonical_dir(root).await {
                inside |= path.is_within(&root) && path != root;
            }
        }
        if !inside {
            return Err(ChangeError::Refused(format!(
                "{} resolves to {path}, outside the allowlisted roots (symlink escape)",
                file.path
            )));
        }
        let live = self.host.read(&path).await?;
        if let LiveFile::Regular { links, meta, .. } = &live {
            if *links > 1 {
                return Err(ChangeError::Refused(format!(
                    "{path} has {links} hard links; only files with one name are managed (another \
                     name may lie outside the allowlisted roots)"
                )));
            }
            self.policy.check_mode(&path, meta.mode)?;
        }
        Ok((path, live))
    }

    /// One transaction per file: refuses paths a live transaction (other than `except`) holds.
    async fn refuse_held_files<'a>(
        &self,
        mut paths: impl Iterator<Item = &'a ManagedPath>,
        except: Option<&str>,
    ) -> Result<(), ChangeError> {
        let held: Vec<Journal> = self
            .journals
            .load_all()
            .await?
            .into_iter()
            .filter(|j| j.state.holds_files() && Some(j.txn_id.as_str()) != except)
            .collect();
        paths.try_for_each(|path| {
            match held
                .iter()
                .find(|j| j.files.iter().any(|f| &f.path == path))
            {
                Some(holder) => Err(ChangeError::Conflict(format!(
                    "{path} is part of transaction {} ({}); one transaction per file at a time",
                    holder.txn_id,
                    holder.state.as_str()
                ))),
                None => Ok(()),
            }
        })
    }

    async fn new_meta(&self, file: &FileChange, live: &LiveFile) -> Result<FileMeta, ChangeError> {
        let current = match live {
            LiveFile::Regular { meta, .. } => Some(*meta),
            LiveFile::Absent => None,
        };
        let mode = file
            .mode
            .map(|m| m.0)
            .or(current.map(|m| m.mode))
            .unwrap_or(0o644);
        let uid = self
            .owner_id(file.owner.as_deref(), OwnerKind::User)
            .await?;
        let gid = self
            .owner_id(file.group.as_deref(), OwnerKind::Group)
            .await?;
        let current_owner = current.and_then(|m| m.owner);
        let owner = match (uid, gid) {
            (None, None) => current_owner,
            (uid, gid) => Some((
                uid.or(current_owner.map(|o| o.0)).unwrap_or(0),
                gid.or(current_owner.map(|o| o.1)).unwrap_or(0),
            )),
        };
        self.policy.check_mode(&file.path, mode)?;
        Ok(FileMeta { mode, owner })
    }

    async fn owner_id(
        &self,
        name: Option<&str>,
        kind: OwnerKind,
    ) -> Result<Option<u32>, ChangeError> {
        let Some(name) = name else { return Ok(None) };
        if let Ok(id) = name.parse::<u32>() {
            return Ok(Some(id));
        }
        let account =
            AccountName::new(name).map_err(|e| ChangeError::InvalidInput(e.to_string()))?;
        let output = self
            .host
            .run(
                &command::resolve_owner(kind, &account),
                Duration::from_secs(10),
            )
            .await
            .map_err(ChangeError::Failed)?;
        let id = match kind {
            OwnerKind::User => output.stdout.trim().parse().ok(),
            OwnerKind::Group => command::parse_group_id(&output.stdout),
        };
        match (output.code, id) {
            (Some(0), Some(id)) => Ok(Some(id)),
            _ => Err(ChangeError::InvalidInput(
                format!("no such {kind:?} {name:?} on the host").to_lowercase(),
            )),
        }
    }

    async fn run_validators(
        &self,
        txn_id: &str,
        set: &ChangeSet,
        journal: &Journal,
    ) -> Vec<ValidatorOutcome> {
        let mut outcomes = Vec::with_capacity(set.validators.len());
        if set.validators.is_empty() {
            return outcomes;
        }
        let account = match self.validator_account().await {
            Ok(account) => account,
            Err(error) => {
                let reason = format!("validator account: {error}");
                return set
                    .validators
                    .iter()
                    .map(|call| ValidatorOutcome {
                        name: call.name.clone(),
                        file: call.file.clone(),
                        passed: false,
                        output: reason.clone(),
                    })
                    .collect();
            }
        };
        let local_dir = self.journals.local_dir(txn_id);
        let mut staged = Vec::with_capacity(set.files.len());
        for (index, file) in set.files.iter().enumerate() {
            let local = local_dir.as_ref().map(|dir| dir.join(staged_name(index)));
            staged.push(
                self.host
                    .stage(
                        txn_id,
                        index,
                        local.as_deref(),
                        file.content.as_bytes(),
                        account,
                    )
                    .await,
            );
        }
        for call in &set.validators {
            let index = set
                .files
                .iter()
                .position(|f| f.path == call.file)
                .unwrap_or_default();
            let result = match (&staged[index], self.policy.validators.get(&call.name)) {
                (Ok(path), Some(template)) => match command::validator(template, path) {
                    Some(command) => {
                        let command = match account {
                            Some((uid, gid)) => command::as_account(uid, gid, &command),
                            None => command,
                        };
                        self.host.run(&command, VALIDATOR_TIMEOUT).await
                    }
                    None => Err("empty validator".to_string()),
                },
                (Err(error), _) => Err(format!("staging failed: {error}")),
                (_, None) => Err("not allowlisted".to_string()),
            };
            let (passed, output) = match result {
                Ok(output) => (
                    output.code == Some(0),
                    bounded(format!("{}{}", output.stdout, output.stderr)),
                ),
                Err(error) => (false, error),
            };
            tracing::info!(txn_id, validator = %call.name, file = %journal.files[index].path, passed, "validator ran");
            outcomes.push(ValidatorOutcome {
                name: call.name.clone(),
                file: call.file.clone(),
                passed,
                output,
            });
        }
        self.host.unstage(txn_id, local_dir.as_deref()).await;
        outcomes
    }

    /// The `(uid, gid)` validators run as, or `None` to run them as we run: when the policy
    /// says `root`, or when we are not root ourselves (then we are unprivileged already).
    async fn validator_account(&self) -> Result<Option<(u32, u32)>, ChangeError> {
        let user = self.policy.validator_user.as_str();
        if user == "root" {
            return Ok(None);
        }
        let me = self
            .host
            .run(&command::user_id(), Duration::from_secs(10))
            .await
            .map_err(ChangeError::Failed)?;
        if me.stdout.trim() != "0" {
            return Ok(None);
        }
        let uid = self
            .owner_id(Some(user), OwnerKind::User)
            .await?
            .unwrap_or_default();
        let gid = match user.parse::<u32>() {
            Ok(numeric) => numeric,
            Err(_) => {
                let account =
                    AccountName::new(user).map_err(|e| ChangeError::InvalidInput(e.to_string()))?;
                let output = self
                    .host
                    .run(&command::primary_group(&account), Duration::from_secs(10))
                    .await
                    .map_err(ChangeError::Failed)?;
                output.stdout.trim().parse().map_err(|_| {
                    ChangeError::Failed(format!("no primary group for validator_user {user:?}"))
                })?
            }
        };
        if uid == 0 {
            return Ok(None);
        }
        Ok(Some((uid, gid)))
    }

    /// Refuses to commit over a file someone changed between prepare and commit.
    async fn unchanged_since_prepare(&self, journal: &Journal) -> Result<(), ChangeError> {
        for file in &journal.files {
            let live = self.host.read(&file.path).await?;
            let same = match (&file.original, &live) {
                (Original::Absent, LiveFile::Absent) => true,
                (Original::Present { sha256: want, .. }, LiveFile::Regular { content, .. }) => {
                    &sha256(content) == want
                }
                _ => false,
            };
            if !same {
                return Err(ChangeError::Conflict(format!(
                    "{} changed since the transaction was prepared; nothing was applied",
                    file.path
                )));
            }
        }
        Ok(())
    }

    /// Refuses to roll back over a file changed after the transaction committed.
    async fn unchanged_since_commit(&self, journal: &Journal) -> Result<(), ChangeError> {
        for file in &journal.files {
            let same = match self.host.read(&file.path).await? {
                LiveFile::Regular { content, .. } => sha256(&content) == file.new_sha256,
                LiveFile::Absent => false,
            };
            if !same {
                return Err(ChangeError::Conflict(format!(
                    "{} was changed after transaction {} committed; refusing to overwrite it",
                    file.path, journal.txn_id
                )));
            }
        }
        Ok(())
    }

    /// Restores every original (idempotent, so a crash mid-way is finished on restart), then
    /// re-runs the actions so services pick the old files up again.
    async fn roll_back(
        &self,
        mut journal: Journal,
        reason: String,
        health: Vec<HealthOutcome>,
    ) -> Result<CommitReport, ChangeError> {
        tracing::warn!(txn_id = %journal.txn_id, %reason, "rolling back");
        self.finish(&mut journal, TxnState::RollingBack, Some(reason))
            .await?;
        for (index, file) in journal.files.iter().enumerate().rev() {
            // A file that is still (or again) its original is left alone, so a rollback
            // that never needs to write succeeds even where nothing can be written (the
            // commit failed before it replaced the file on a read-only filesystem).
            let live = self.host.read(&file.path).await.ok();
            match &file.original {
                Original::Absent if matches!(live, Some(LiveFile::Absent)) => {}
                Original::Absent => self.host.remove(&file.path).await?,
                Original::Present { meta, .. } => {
                    let content = self
                        .journals
                        .read_blob(&journal.txn_id, &original_name(index))
                        .await?;
                    if !is_exactly(live.as_ref(), &content, *meta) {
                        self.host.install(&file.path, &content, *meta).await?;
                    }
                }
            }
            failpoint("rollback.restored_1");
        }
        let mut reason = journal.reason.clone().unwrap_or_default();
        if let Err(error) = health::run_actions(&self.host, &journal.actions).await {
            reason.push_str(&format!("; after restoring the files, {error}"));
        }
        journal.confirm_deadline_ms = None;
        self.finish(&mut journal, TxnState::RolledBack, Some(reason))
            .await?;
        Ok(CommitReport::of(&journal, health))
    }

    async fn finish(
        &self,
        journal: &mut Journal,
        state: TxnState,
        reason: Option<String>,
    ) -> Result<(), ChangeError> {
        let from = journal.state;
        if !journal.state.may_become(state) {
            return Err(ChangeError::Internal(format!(
                "transaction {} cannot go from {} to {}",
                journal.txn_id,
                journal.state.as_str(),
                state.as_str()
            )));
        }
        journal.state = state;
        if reason.is_some() {
            journal.reason = reason;
        }
        journal.updated_ms = now_ms();
        self.journals.save(journal, Some(from)).await
    }

    /// Keeps the newest finished transactions (for status and later rollback), drops older.
    async fn prune_finished(&self) {
        let Ok(journals) = self.journals.load_all().await else {
            return;
        };
        let finished: Vec<_> = journals.iter().filter(|j| !j.state.holds_files()).collect();
        let excess = finished.len().saturating_sub(KEEP_FINISHED);
        for journal in finished.into_iter().take(excess) {
            self.journals.remove(&journal.txn_id).await;
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn diff(path: &ManagedPath, live: &LiveFile, new: &str) -> FileDiff {
    let (existed, old) = match live {
        LiveFile::Absent => (false, String::new()),
        LiveFile::Regular { content, .. } => (true, String::from_utf8_lossy(content).into_owned()),
    };
    let old_label = if existed {
        format!("a{path}")
    } else {
        "/dev/null".to_string()
    };
    let text = similar::TextDiff::from_lines(old.as_str(), new)
        .unified_diff()
        .context_radius(3)
        .header(&old_label, &format!("b{path}"))
        .to_string();
    FileDiff {
        path: path.clone(),
        existed,
        changed: !existed || old != new,
        diff: text,
    }
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_VALIDATOR_OUTPUT {
        let mut cut = MAX_VALIDATOR_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[output truncated]");
    }
    text
}

/// `live` is a single-linked regular file with exactly this content and mode (and owner,
/// when the original had one recorded).
fn is_exactly(live: Option<&LiveFile>, content: &[u8], meta: FileMeta) -> bool {
    matches!(live, Some(LiveFile::Regular { content: live, meta: live_meta, links: 1 })
        if live.as_slice() == content
            && live_meta.mode == meta.mode
            && (meta.owner.is_none() || live_meta.owner == meta.owner))
}
