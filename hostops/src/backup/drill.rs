//! A restore drill of a snapshot: restore it into a fresh scratch directory, prove
//! the restore is the snapshot, then tear the scratch down. "Proved" means: restic re-reads
//! every restored file and checks it against the repository's content hashes
//! (`restore --verify`), and every file the snapshot's manifest (`ls`) lists is there with its
//! size and nothing else is. How long the restore took is the drill's RTO.
//!
//! The same steps run on an agent host and, through the SSH driver, on an agentless one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::database::{self, DatabaseReport};
use super::{source, BackupError, Checked, Source, TargetSpec};
use crate::checks::CommandRunner;
use crate::command::{self, DRILL_PREFIX};
use crate::names::ManagedPath;
use crate::restic::{self, NodeKind, Repo, SnapshotId};

/// Names listed per kind of discrepancy, at most.
const LISTED: usize = 20;
/// A restore may take this long.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const QUICK: Duration = Duration::from_secs(60);

/// What a drill found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrillReport {
    pub snapshot: String,
    pub passed: bool,
    /// Files the snapshot's manifest lists, and those restored.
    pub files_expected: usize,
    pub files_restored: usize,
    /// Files restic verified against the repository's content hashes.
    pub files_verified: usize,
    pub bytes_restored: u64,
    /// How long the restore took (the RTO of this target, as measured).
    pub restore_ms: u64,
    /// Listed in the manifest, not restored (at most 20).
    pub missing: Vec<String>,
    /// Restored with another size than the manifest's (at most 20).
    pub wrong_size: Vec<String>,
    /// Restored, not in the manifest (at most 20).
    pub unexpected: Vec<String>,
    /// What went wrong, in words.
    pub problems: Vec<String>,
    /// For a database target: the restored database, opened and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseReport>,
}

impl DrillReport {
    fn failed(snapshot: &SnapshotId, problem: String) -> Self {
        Self {
            snapshot: snapshot.as_str().to_string(),
            passed: false,
            files_expected: 0,
            files_restored: 0,
            files_verified: 0,
            bytes_restored: 0,
            restore_ms: 0,
            missing: Vec::new(),
            wrong_size: Vec::new(),
            unexpected: Vec::new(),
            problems: vec![problem],
            database: None,
        }
    }
}

/// A database target's restored copy, and how to open it.
enum Database<'a> {
    Sqlite(ManagedPath),
    Postgres(ManagedPath, &'a source::PostgresSource),
}

/// A restore drill of a target's snapshot: the files, then (for a database) the database.
pub async fn drill(
    runner: &impl CommandRunner,
    checked: &Checked<'_>,
    target: &TargetSpec,
    snapshot: &SnapshotId,
) -> Result<DrillReport, BackupError> {
    let copy = source::database_copy(checked.policy, target)?;
    let database = match (&target.source, copy) {
        (Source::Sqlite { .. }, Some(copy)) => Some(Database::Sqlite(copy)),
        (Source::Postgres(pg), Some(copy)) => Some(Database::Postgres(copy, pg)),
        _ => None,
    };
    let scratch = &checked.policy.scratch;
    let (repo, password) = (&checked.repo, &checked.password);
    let open = |dir: ManagedPath| open_database(runner, checked, target, &database, dir);
    drill_in(runner, repo, password, snapshot, scratch, open)
        .await
        .map_err(BackupError::Failed)
}

/// Opens the restored copy below `dir` (where the restore recreated its absolute path).
async fn open_database(
    runner: &impl CommandRunner,
    checked: &Checked<'_>,
    target: &TargetSpec,
    database: &Option<Database<'_>>,
    dir: ManagedPath,
) -> Option<DatabaseReport> {
    let restored = |copy: &ManagedPath| ManagedPath::new(&format!("{dir}{copy}"));
    let invariants = &target.invariants;
    match database.as_ref()? {
        Database::Sqlite(copy) => match restored(copy) {
            Ok(file) => Some(database::check_sqlite(runner, &file, invariants).await),
            Err(e) => Some(unopened("sqlite", e.to_string())),
        },
        Database::Postgres(copy, pg) => match restored(copy) {
            Ok(dump) => Some(
                database::check_postgres(
                    runner,
                    checked.policy,
                    &dir,
                    &dump,
                    &pg.database,
                    invariants,
                )
                .await,
            ),
            Err(e) => Some(unopened("postgresql", e.to_string())),
        },
    }
}

fn unopened(engine: &str, problem: String) -> DatabaseReport {
    DatabaseReport {
        engine: engine.into(),
        started: false,
        invariants: Vec::new(),
        problems: vec![problem],
    }
}

/// Restores `snapshot` under a fresh directory in `scratch`, checks it, removes it.
pub async fn drill_directory(
    runner: &impl CommandRunner,
    repo: &Repo,
    password: &ManagedPath,
    snapshot: &SnapshotId,
    scratch: &ManagedPath,
) -> Result<DrillReport, String> {
    let nothing = |_: ManagedPath| async { None };
    drill_in(runner, repo, password, snapshot, scratch, nothing).await
}

/// The drill's steps, with `open` checking what the restore put in the scratch directory
/// (a database) before the directory goes.
async fn drill_in<F, Fut>(
    runner: &impl CommandRunner,
    repo: &Repo,
    password: &ManagedPath,
    snapshot: &SnapshotId,
    scratch: &ManagedPath,
    open: F,
) -> Result<DrillReport, String>
where
    F: FnOnce(ManagedPath) -> Fut,
    Fut: std::future::Future<Output = Option<DatabaseReport>>,
{
    let listed = runner
        .run(&restic::ls(repo, password, snapshot), QUICK)
        .await?;
    if listed.code != Some(0) {
        // A snapshot that cannot even be listed fails its drill; it is not an error to retry.
        let problem = format!(
            "the snapshot cannot be listed: {}",
            restic::classify(&listed.stderr)
        );
        return Ok(DrillReport::failed(snapshot, problem));
    }
    let manifest: BTreeMap<String, u64> = restic::parse_ls(&listed.stdout)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|n| n.kind == NodeKind::File)
        .map(|n| (n.path, n.size.unwrap_or(0)))
        .collect();
    let made = runner
        .run(
            &command::make_temp_dir(scratch, DRILL_PREFIX.trim_end_matches('.')),
            QUICK,
        )
        .await?;
    let dir =
        ManagedPath::new(made.stdout.trim()).map_err(|e| format!("the scratch directory: {e}"))?;
    let mut report = restore_and_compare(runner, repo, password, snapshot, &dir, &manifest).await;
    if let Ok(files) = &mut report {
        if files.passed {
            files.database = open(dir.clone()).await;
            let opened = files.database.as_ref().is_none_or(DatabaseReport::passed);
            files.passed &= opened;
        }
    }
    let removed = match command::remove_drill_dir(&dir) {
        Some(remove) => runner.run(&remove, QUICK).await.map(|o| o.code == Some(0)),
        None => Ok(false),
    };
    let mut report = report?;
    if removed != Ok(true) {
        report
            .problems
            .push(format!("the scratch directory {dir} was not removed"));
    }
    Ok(report)
}

async fn restore_and_compare(
    runner: &impl CommandRunner,
    repo: &Repo,
    password: &ManagedPath,
    snapshot: &SnapshotId,
    dir: &ManagedPath,
    manifest: &BTreeMap<String, u64>,
) -> Result<DrillReport, String> {
    let started = Instant::now();
    let restored = runner
        .run(
            &restic::restore_verified(repo, password, snapshot, dir),
            RESTORE_TIMEOUT,
        )
        .await?;
    let restore_ms = started.elapsed().as_millis() as u64;
    let mut problems = Vec::new();
    if restored.code != Some(0) {
        problems.push(format!(
            "the restore failed: {}",
            restic::classify(&restored.stderr)
        ));
    }
    let files_verified = verified_count(&restored.stdout);
    let found = runner.run(&command::list_files(dir), QUICK).await?;
    let on_disk = parse_listing(&found.stdout);
    let mut report = DrillReport {
        snapshot: snapshot.as_str().to_string(),
        passed: false,
        files_expected: manifest.len(),
        files_restored: on_disk.len(),
        files_verified,
        bytes_restored: on_disk.values().sum(),
        restore_ms,
        missing: Vec::new(),
        wrong_size: Vec::new(),
        unexpected: Vec::new(),
        problems,
        database: None,
    };
    for (path, size) in manifest {
        match on_disk.get(path) {
            None => report.missing.push(path.clone()),
            Some(found) if found != size => report.wrong_size.push(path.clone()),
            Some(_) => {}
        }
    }
    report.unexpected = on_disk
        .keys()
        .filter(|p| !manifest.contains_key(*p))
        .cloned()
        .collect();
    for list in [
        &mut report.missing,
        &mut report.wrong_size,
        &mut report.unexpected,
    ] {
        list.truncate(LISTED);
    }
    if files_verified != manifest.len() {
        report.problems.push(format!(
            "restic verified {files_verified} of {} files",
            manifest.len()
        ));
    }
    let lists = [&report.missing, &report.wrong_size, &report.unexpected];
    report.passed = report.problems.is_empty() && lists.iter().all(|l| l.is_empty());
    Ok(report)
}

/// `finished verifying N files in …`.
pub(super) fn verified_count(stdout: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("finished verifying "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `find -printf '%s %P\0'`: path (made absolute, as the manifest has it) → size.
fn parse_listing(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .split('\0')
        .filter_map(|entry| {
            let (size, path) = entry.split_once(' ')?;
            Some((format!("/{path}"), size.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_verification_lines_are_read_as_find_and_restic_print_them() {
        let listing = parse_listing("2000 tmp/rx/src/f2.bin\u{0}13 tmp/rx/src/a b\nc.txt\u{0}");
        assert_eq!(listing["/tmp/rx/src/f2.bin"], 2000);
        assert_eq!(
            listing["/tmp/rx/src/a b\nc.txt"], 13,
            "names may hold newlines"
        );
        let out = "restoring <Snapshot 6dd3af6c of [/tmp/rx/src]> to /tmp/rx/out\n\
                   verifying files in /tmp/rx/out\n\
                   finished verifying 4 files in /tmp/rx/out (took 0s)\n";
        assert_eq!(verified_count(out), 4);
        assert_eq!(verified_count("restoring …\n"), 0);
    }

    #[test]
    fn only_a_drills_own_scratch_directory_can_be_removed() {
        let own = ManagedPath::new("/var/tmp/infrastructor-drill.Ab3dE9kQ2x").unwrap();
        assert!(command::remove_drill_dir(&own).is_some());
        for other in ["/var/tmp", "/etc", "/var/tmp/infrastructor-drill"] {
            let path = ManagedPath::new(other).unwrap();
            assert!(command::remove_drill_dir(&path).is_none(), "{other}");
        }
    }
}
