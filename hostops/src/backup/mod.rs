//! Backups on a host, as one typed request the agent answers on its own host and the
//! controller runs over SSH on an agentless one: what a target is (its source, repository
//! and drill checks), what the host allows (its [`BackupPolicy`]), and [`execute`], which
//! turns a request into restic's argv and the answer into types.
//!
//! - [`source`]: what a backup reads — directories, a Docker volume's data, a PostgreSQL
//!   dump (`pg_dump -Fc`), an SQLite online backup — staged where restic can read it.
//! - [`drill`]: a restore drill: the snapshot restored into a throwaway directory and
//!   proved to be the snapshot, file by file.
//! - [`database`]: a drill's database half: the restored dump or file opened in a throwaway
//!   engine (a fresh PostgreSQL cluster on a private socket; SQLite's integrity check) and
//!   the target's invariant queries run against it.

pub mod database;
pub mod drill;
pub mod source;
pub mod wire;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use drill::{drill_directory, DrillReport};

use crate::checks::CommandRunner;
use crate::command::{self, CommandOutput};
use crate::names::{AccountName, InvalidName, ManagedPath};
use crate::restic::{self, CheckVerdict, ForgetSummary, Keep, Repo, Repository, ResticError};
use crate::restic::{BackupSummary, Snapshot, SnapshotId, TargetName};

/// A backup may take this long.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
const QUICK: Duration = Duration::from_secs(60);
/// A file restored in place is read into a change set: bounded, like a change's files.
pub const MAX_DUMPED_BYTES: usize = 1024 * 1024;

/// What a host lets backups read and write. The agent reads it from its own configuration
/// (`[backups]`); for agentless hosts the controller's configuration holds one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupPolicy {
    /// Directories (and SQLite files) below these may be backed up; none: only volumes and
    /// PostgreSQL, when allowed.
    pub sources: Vec<ManagedPath>,
    /// Whether Docker volumes may be backed up.
    pub volumes: bool,
    /// Where a restore to a new location may write.
    pub restore_roots: Vec<ManagedPath>,
    /// Where repository passwords (and PostgreSQL passfiles) are: a target names a file in it.
    pub password_dir: ManagedPath,
    /// Where drills make their throwaway directories.
    pub scratch: ManagedPath,
    /// Where database dumps wait for restic.
    pub staging: ManagedPath,
    /// The PostgreSQL server binaries a database drill runs (`initdb`, `pg_ctl`, …).
    pub postgres_bin: ManagedPath,
    /// The account a drill's throwaway PostgreSQL cluster runs as (never root).
    pub drill_account: AccountName,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        let path = ManagedPath::literal;
        Self {
            sources: Vec::new(),
            volumes: false,
            restore_roots: Vec::new(),
            password_dir: path("/etc/infrastructor/restic"),
            scratch: path("/var/tmp"),
            staging: path("/var/lib/infrastructor-agent/backup-staging"),
            postgres_bin: path("/usr/lib/postgresql/15/bin"),
            drill_account: AccountName::literal("postgres"),
        }
    }
}

/// A file in the host's password directory: a plain name, no path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct SecretFile(String);

impl SecretFile {
    pub fn new(value: &str) -> Result<Self, InvalidName> {
        TargetName::new(value)
            .map(|_| Self(value.to_string()))
            .map_err(|_| InvalidName {
                kind: "password file name",
                value: value.to_string(),
                rule: "a file name in the host's password directory: 1-64 letters, digits, \
                       '_', '-', '.', starting with a letter or digit",
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretFile {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<SecretFile> for String {
    fn from(value: SecretFile) -> Self {
        value.0
    }
}

/// What a target backs up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// Directories or files, as they are.
    Paths { paths: Vec<ManagedPath> },
    /// A Docker volume's data.
    Volume { volume: source::VolumeName },
    /// One PostgreSQL database, dumped in pg_dump's custom format.
    Postgres(source::PostgresSource),
    /// One SQLite database, copied by SQLite's online backup (never the live file).
    Sqlite {
        path: ManagedPath,
        /// Files backed up with the database (a service's keys beside its data).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        with: Vec<ManagedPath>,
    },
}

/// A table a drill checks in the restored database, with bounds on its row count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Invariant {
    /// `table` or `schema.table`: letters, digits and '_'.
    pub table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
}

/// A target as the host needs it for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub name: TargetName,
    pub repository: Repository,
    /// The repository's password file, in the host's password directory.
    pub password: SecretFile,
    pub source: Source,
    /// What a drill checks in a restored database.
    #[serde(default)]
    pub invariants: Vec<Invariant>,
}

/// One thing to do with a target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackupRequest {
    /// Back the source up (making the repository first when there is none), then apply the
    /// retention when given.
    Backup {
        target: TargetSpec,
        keep: Option<Keep>,
    },
    /// The target's snapshots, oldest first.
    Snapshots { target: TargetSpec },
    /// `restic check`, reading data group `group` of `groups`.
    Check {
        target: TargetSpec,
        group: u32,
        groups: u32,
    },
    /// A restore drill of one snapshot.
    Drill {
        target: TargetSpec,
        snapshot: SnapshotId,
    },
    /// A snapshot restored below `into`, a new directory in one of the restore roots
    /// (default: `<first restore root>/<target>-<snapshot>-<unix time>`).
    Restore {
        target: TargetSpec,
        snapshot: SnapshotId,
        into: Option<ManagedPath>,
    },
    /// The bytes of some of a snapshot's files (every file when `files` is empty; text,
    /// bounded), for an in-place restore through the change engine.
    Dump {
        target: TargetSpec,
        snapshot: SnapshotId,
        files: Vec<ManagedPath>,
    },
}

impl BackupRequest {
    pub fn target(&self) -> &TargetSpec {
        match self {
            Self::Backup { target, .. }
            | Self::Snapshots { target }
            | Self::Check { target, .. }
            | Self::Drill { target, .. }
            | Self::Restore { target, .. }
            | Self::Dump { target, .. } => target,
        }
    }

    /// How long the host may take.
    pub fn timeout(&self) -> Duration {
        match self {
            Self::Snapshots { .. } | Self::Dump { .. } => Duration::from_secs(120),
            _ => BACKUP_TIMEOUT,
        }
    }
}

/// What a backup did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackupDone {
    pub summary: BackupSummary,
    /// The repository did not exist and was made first.
    pub initialized: bool,
    pub forgot: Option<ForgetSummary>,
}

/// What a restore to a new location did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RestoreDone {
    pub snapshot: String,
    pub into: String,
    pub files_verified: usize,
    pub restore_ms: u64,
}

/// One file of a snapshot, as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpedFile {
    pub path: String,
    pub content: String,
}

/// The host's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum BackupAnswer {
    Backup(BackupDone),
    Snapshots { snapshots: Vec<Snapshot> },
    Check(CheckVerdict),
    Drill(DrillReport),
    Restore(RestoreDone),
    Dump { files: Vec<DumpedFile> },
}

/// Why a request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// The request is malformed or the host's policy refuses it.
    #[error("{0}")]
    Refused(String),
    /// Something it names is not there (a snapshot, a volume, a file).
    #[error("{0}")]
    NotFound(String),
    /// The repository is busy (locked by another restic).
    #[error("{0}")]
    Busy(String),
    /// The work failed on the host.
    #[error("{0}")]
    Failed(String),
}

impl From<ResticError> for BackupError {
    fn from(error: ResticError) -> Self {
        match error {
            ResticError::NoRepository => Self::NotFound(error.to_string()),
            ResticError::Locked(_) => Self::Busy(error.to_string()),
            _ => Self::Failed(error.to_string()),
        }
    }
}

fn ran(result: Result<CommandOutput, String>) -> Result<CommandOutput, BackupError> {
    result.map_err(BackupError::Failed)
}

/// restic's output when it exited 0, else its failure, classified.
fn succeeded(output: CommandOutput) -> Result<CommandOutput, BackupError> {
    if output.code == Some(0) {
        Ok(output)
    } else {
        Err(restic::classify(&output.stderr).into())
    }
}

/// Checks what a request names against the policy, before anything runs.
pub struct Checked<'a> {
    pub policy: &'a BackupPolicy,
    pub repo: Repo,
    pub password: ManagedPath,
}

impl<'a> Checked<'a> {
    pub fn new(policy: &'a BackupPolicy, target: &TargetSpec) -> Result<Self, BackupError> {
        let repo = target
            .repository
            .checked()
            .map_err(|e| BackupError::Refused(e.to_string()))?;
        let password = secret(policy, &target.password)?;
        source::allowed(policy, &target.source)?;
        Ok(Self {
            policy,
            repo,
            password,
        })
    }
}

/// A file of the password directory.
pub fn secret(policy: &BackupPolicy, file: &SecretFile) -> Result<ManagedPath, BackupError> {
    policy
        .password_dir
        .join(file.as_str())
        .map_err(|e| BackupError::Refused(e.to_string()))
}

/// Carries out one request on the host `runner` reaches.
pub async fn execute(
    runner: &impl CommandRunner,
    policy: &BackupPolicy,
    request: &BackupRequest,
) -> Result<BackupAnswer, BackupError> {
    let target = request.target();
    let checked = Checked::new(policy, target)?;
    match request {
        BackupRequest::Backup { keep, .. } => backup(runner, &checked, target, *keep)
            .await
            .map(BackupAnswer::Backup),
        BackupRequest::Snapshots { .. } => {
            let listed = run(
                runner,
                &restic::snapshots(&checked.repo, &checked.password, &target.name),
                QUICK,
            )
            .await?;
            let snapshots = restic::parse_snapshots(&listed.stdout)?;
            Ok(BackupAnswer::Snapshots { snapshots })
        }
        BackupRequest::Check { group, groups, .. } => {
            let check = restic::check(&checked.repo, &checked.password, *group, *groups);
            let output = ran(runner.run(&check, BACKUP_TIMEOUT).await)?;
            if output.code != Some(0) && output.stdout.trim().is_empty() {
                // It never reached the data: no repository, a wrong password, a lock.
                return Err(restic::classify(&output.stderr).into());
            }
            let text = format!("{}\n{}", output.stdout, output.stderr);
            Ok(BackupAnswer::Check(restic::parse_check(&text, output.code)))
        }
        BackupRequest::Drill { snapshot, .. } => {
            let snapshot = resolve(runner, &checked, target, snapshot).await?;
            let report = drill::drill(runner, &checked, target, &snapshot).await?;
            Ok(BackupAnswer::Drill(report))
        }
        BackupRequest::Restore { snapshot, into, .. } => {
            let snapshot = resolve(runner, &checked, target, snapshot).await?;
            let into = match into {
                Some(into) => into.clone(),
                None => default_into(policy, target, &snapshot)?,
            };
            restore(runner, &checked, &snapshot, &into)
                .await
                .map(BackupAnswer::Restore)
        }
        BackupRequest::Dump {
            snapshot, files, ..
        } => {
            let snapshot = resolve(runner, &checked, target, snapshot).await?;
            dump(runner, &checked, &snapshot, files)
                .await
                .map(|files| BackupAnswer::Dump { files })
        }
    }
}

/// `latest` as this target's newest snapshot (restic's own `latest` is the repository's,
/// which may belong to another target).
async fn resolve(
    runner: &impl CommandRunner,
    checked: &Checked<'_>,
    target: &TargetSpec,
    snapshot: &SnapshotId,
) -> Result<SnapshotId, BackupError> {
    if snapshot.as_str() != "latest" {
        return Ok(snapshot.clone());
    }
    let list = restic::snapshots(&checked.repo, &checked.password, &target.name);
    let listed = run(runner, &list, QUICK).await?;
    let newest = restic::parse_snapshots(&listed.stdout)?
        .into_iter()
        .max_by_key(|s| s.time_ms());
    let newest = newest.ok_or_else(|| {
        BackupError::NotFound(format!(
            "target {} has no snapshot yet",
            target.name.as_str()
        ))
    })?;
    SnapshotId::new(&newest.id).map_err(|e| BackupError::Failed(e.to_string()))
}

async fn run(
    runner: &impl CommandRunner,
    command: &command::HostCommand,
    timeout: Duration,
) -> Result<CommandOutput, BackupError> {
    succeeded(ran(runner.run(command, timeout).await)?)
}

async fn backup(
    runner: &impl CommandRunner,
    checked: &Checked<'_>,
    target: &TargetSpec,
    keep: Option<Keep>,
) -> Result<BackupDone, BackupError> {
    let (repo, password) = (&checked.repo, &checked.password);
    let staged = source::stage(runner, checked.policy, target).await?;
    let backed = run(
        runner,
        &restic::backup(repo, password, &target.name, &staged.paths),
        BACKUP_TIMEOUT,
    )
    .await;
    let (backed, initialized) = match backed {
        Err(BackupError::NotFound(_)) => {
            run(runner, &restic::init(repo, password), QUICK).await?;
            let again = restic::backup(repo, password, &target.name, &staged.paths);
            (run(runner, &again, BACKUP_TIMEOUT).await, true)
        }
        other => (other, false),
    };
    staged.clean(runner).await;
    let summary = restic::parse_backup(&backed?.stdout)?;
    let forgot = match keep {
        Some(keep) => {
            let forget = restic::forget(repo, password, &target.name, keep);
            let output = run(runner, &forget, BACKUP_TIMEOUT).await?;
            Some(restic::parse_forget(&output.stdout)?)
        }
        None => None,
    };
    Ok(BackupDone {
        summary,
        initialized,
        forgot,
    })
}

async fn restore(
    runner: &impl CommandRunner,
    checked: &Checked<'_>,
    snapshot: &SnapshotId,
    into: &ManagedPath,
) -> Result<RestoreDone, BackupError> {
    let roots = &checked.policy.restore_roots;
    if !roots
        .iter()
        .any(|root| into.is_within(root) && into != root)
    {
        return Err(BackupError::Refused(format!(
            "{into} is not below one of this host's restore roots ({})",
            list(roots)
        )));
    }
    // A new directory, made here: never an existing one, never through a planted link.
    let made = ran(runner.run(&command::make_dir(into), QUICK).await)?;
    if made.code != Some(0) {
        return Err(BackupError::Refused(format!(
            "cannot make {into} (a restore goes to a new directory): {}",
            made.stderr.trim()
        )));
    }
    let started = Instant::now();
    let restore = restic::restore_verified(&checked.repo, &checked.password, snapshot, into);
    let output = run(runner, &restore, BACKUP_TIMEOUT).await?;
    Ok(RestoreDone {
        snapshot: snapshot.as_str().to_string(),
        into: into.as_str().to_string(),
        files_verified: drill::verified_count(&output.stdout),
        restore_ms: started.elapsed().as_millis() as u64,
    })
}

async fn dump(
    runner: &impl CommandRunner,
    checked: &Checked<'_>,
    snapshot: &SnapshotId,
    files: &[ManagedPath],
) -> Result<Vec<DumpedFile>, BackupError> {
    let listed;
    let files = if files.is_empty() {
        listed = snapshot_files(runner, checked, snapshot).await?;
        listed.as_slice()
    } else {
        files
    };
    let mut dumped = Vec::with_capacity(files.len());
    for file in files {
        let command = restic::dump(&checked.repo, &checked.password, snapshot, file);
        let output = ran(runner.run(&command, QUICK).await)?;
        if output.code != Some(0) {
            return Err(BackupError::NotFound(format!(
                "{file} in snapshot {}: {}",
                snapshot.as_str(),
                restic::classify(&output.stderr)
            )));
        }
        if output.truncated || output.stdout.len() > MAX_DUMPED_BYTES {
            return Err(BackupError::Refused(format!(
                "{file} is larger than {MAX_DUMPED_BYTES} bytes: restore it to a new location"
            )));
        }
        if output.stdout.contains('\u{FFFD}') {
            return Err(BackupError::Refused(format!(
                "{file} is not UTF-8 text: restore it to a new location"
            )));
        }
        dumped.push(DumpedFile {
            path: file.as_str().to_string(),
            content: output.stdout,
        });
    }
    Ok(dumped)
}

/// A fresh directory in the first restore root, named for what it holds.
fn default_into(
    policy: &BackupPolicy,
    target: &TargetSpec,
    snapshot: &SnapshotId,
) -> Result<ManagedPath, BackupError> {
    let root = policy.restore_roots.first().ok_or_else(|| {
        BackupError::Refused("this host has no restore roots ([backups] restore_roots)".into())
    })?;
    let short: String = snapshot.as_str().chars().take(8).collect();
    let name = format!(
        "{}-{short}-{}",
        target.name.as_str(),
        crate::now_ms() / 1000
    );
    root.join(&name)
        .map_err(|e| BackupError::Refused(e.to_string()))
}

/// Every regular file of a snapshot (at most a change set's worth).
async fn snapshot_files(
    runner: &impl CommandRunner,
    checked: &Checked<'_>,
    snapshot: &SnapshotId,
) -> Result<Vec<ManagedPath>, BackupError> {
    let listed = run(
        runner,
        &restic::ls(&checked.repo, &checked.password, snapshot),
        QUICK,
    )
    .await?;
    let files: Vec<ManagedPath> = restic::parse_ls(&listed.stdout)?
        .into_iter()
        .filter(|n| n.kind == restic::NodeKind::File)
        .filter_map(|n| ManagedPath::new(&n.path).ok())
        .collect();
    if files.len() > crate::change::spec::MAX_FILES {
        return Err(BackupError::Refused(format!(
            "the snapshot holds {} files, more than {} restored in place at once: restore it \
             to a new location",
            files.len(),
            crate::change::spec::MAX_FILES
        )));
    }
    Ok(files)
}

fn list(paths: &[ManagedPath]) -> String {
    if paths.is_empty() {
        return "none configured".into();
    }
    paths
        .iter()
        .map(ManagedPath::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
