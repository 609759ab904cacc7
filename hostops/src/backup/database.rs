//! A drill's database half: the restored copy opened in a throwaway engine and checked.
//!
//! - PostgreSQL: a fresh cluster (`initdb`) in the drill's scratch directory, run as the
//!   policy's drill account, listening on no TCP port at all (only a socket in the scratch
//!   directory), so it is isolated from everything; the dump is restored into it with
//!   `pg_restore --exit-on-error`, the invariant queries run, and the cluster is stopped
//!   before the directory goes.
//! - SQLite: `PRAGMA integrity_check` on the restored file, then the invariant queries.
//!
//! "It starts" is part of the verdict: a dump that restores into a cluster that will not
//! start, or will not answer, fails the drill.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BackupPolicy, Invariant};
use crate::checks::CommandRunner;
use crate::command::{self, HostCommand, OwnerKind};
use crate::names::{DatabaseName, ManagedPath};

const QUICK: Duration = Duration::from_secs(60);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// The drill cluster's superuser.
const SUPERUSER: &str = "postgres";

/// What a drill found in the restored database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DatabaseReport {
    /// `postgresql` or `sqlite`.
    pub engine: String,
    /// The engine opened the restored database and answered.
    pub started: bool,
    pub invariants: Vec<InvariantResult>,
    pub problems: Vec<String>,
}

impl DatabaseReport {
    fn new(engine: &str) -> Self {
        Self {
            engine: engine.into(),
            started: false,
            invariants: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn passed(&self) -> bool {
        self.started && self.problems.is_empty() && self.invariants.iter().all(|i| i.passed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InvariantResult {
    pub table: String,
    /// Its row count; `None` when the table could not be read (it does not exist).
    pub rows: Option<u64>,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `table` or `schema.table`, quoted for SQL; only plain identifiers are accepted, so the
/// quoting can never be escaped.
pub fn quoted_table(table: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.len() <= 63
            && p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() > 2 || !parts.iter().all(plain) {
        return Err(format!(
            "table {table:?}: `table` or `schema.table`, letters, digits and '_'"
        ));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

fn judge(invariant: &Invariant, counted: Result<u64, String>) -> InvariantResult {
    let (rows, problem) = match counted {
        Ok(rows) => {
            let low = invariant.min_rows.filter(|min| rows < *min);
            let high = invariant.max_rows.filter(|max| rows > *max);
            let problem = match (low, high) {
                (Some(min), _) => Some(format!("{rows} rows, fewer than {min}")),
                (_, Some(max)) => Some(format!("{rows} rows, more than {max}")),
                _ => None,
            };
            (Some(rows), problem)
        }
        Err(problem) => (None, Some(problem)),
    };
    InvariantResult {
        table: invariant.table.clone(),
        rows,
        passed: problem.is_none(),
        problem,
    }
}

fn count_query(table: &str) -> Result<String, String> {
    Ok(format!("SELECT count(*) FROM {}", quoted_table(table)?))
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no reason given")
        .trim()
        .to_string()
}

/// Checks a restored SQLite file.
pub async fn check_sqlite(
    runner: &impl CommandRunner,
    file: &ManagedPath,
    invariants: &[Invariant],
) -> DatabaseReport {
    let mut report = DatabaseReport::new("sqlite");
    let sqlite =
        |sql: &str| HostCommand::new("sqlite3", ["-readonly", "-batch", file.as_str(), sql]);
    match runner.run(&sqlite("PRAGMA integrity_check"), QUICK).await {
        Ok(out) if out.code == Some(0) && out.stdout.trim() == "ok" => report.started = true,
        Ok(out) => report.problems.push(format!(
            "the integrity check failed: {}",
            first_line(&format!("{}\n{}", out.stdout, out.stderr))
        )),
        Err(e) => report.problems.push(e),
    }
    if !report.started {
        return report;
    }
    for invariant in invariants {
        let counted = match count_query(&invariant.table) {
            Ok(sql) => count(runner, &sqlite(&sql)).await,
            Err(e) => Err(e),
        };
        report.invariants.push(judge(invariant, counted));
    }
    report
}

async fn count(runner: &impl CommandRunner, query: &HostCommand) -> Result<u64, String> {
    let out = runner.run(query, QUICK).await?;
    if out.code != Some(0) {
        return Err(first_line(&out.stderr));
    }
    out.stdout
        .trim()
        .parse()
        .map_err(|_| format!("not a row count: {:?}", out.stdout.trim()))
}

/// The throwaway cluster's places, below the drill's scratch directory.
struct Cluster<'a> {
    policy: &'a BackupPolicy,
    data: ManagedPath,
    socket: ManagedPath,
    /// The drill account's IDs; `None` when the runner already is that account.
    account: Option<(u32, u32)>,
}

impl Cluster<'_> {
    fn bin(&self, program: &str) -> String {
        format!("{}/{program}", self.policy.postgres_bin)
    }

    /// Runs as the drill account (PostgreSQL refuses to run as root).
    fn as_account(&self, command: HostCommand) -> HostCommand {
        match self.account {
            Some((uid, gid)) => command::as_account(uid, gid, &command),
            None => command,
        }
    }

    fn initdb(&self) -> HostCommand {
        self.as_account(HostCommand::new(
            &self.bin("initdb"),
            [
                format!("--pgdata={}", self.data),
                format!("--username={SUPERUSER}"),
                "--auth=trust".into(),
                "--encoding=UTF8".into(),
                "--no-sync".into(),
            ],
        ))
    }

    /// No TCP at all; the socket in the scratch directory only; nothing synced.
    fn settings(&self) -> Vec<u8> {
        format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nport = 5432\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            self.socket
        )
        .into_bytes()
    }

    fn pg_ctl(&self, verb: &str) -> HostCommand {
        let mut args = vec![
            format!("--pgdata={}", self.data),
            "--wait".into(),
            "--timeout=60".into(),
            "--silent".into(),
        ];
        if verb == "start" {
            args.push(format!("--log={}/drill.log", self.data));
        } else {
            args.push("--mode=immediate".into());
        }
        args.push(verb.into());
        self.as_account(HostCommand::new(&self.bin("pg_ctl"), args))
    }

    fn client(&self, program: &str, database: &str, mut rest: Vec<String>) -> HostCommand {
        let mut args = vec![
            format!("--host={}", self.socket),
            "--port=5432".into(),
            format!("--username={SUPERUSER}"),
            "--no-password".into(),
            format!("--dbname={database}"),
        ];
        args.append(&mut rest);
        HostCommand::new(&self.bin(program), args)
    }

    fn restore(&self, dump: &ManagedPath) -> HostCommand {
        let rest = vec![
            "--create".into(),
            "--no-owner".into(),
            "--no-acl".into(),
            "--exit-on-error".into(),
            "--".into(),
            dump.as_str().to_string(),
        ];
        self.client("pg_restore", "postgres", rest)
    }

    fn query(&self, database: &DatabaseName, sql: &str) -> HostCommand {
        let rest = vec![
            "--no-psqlrc".into(),
            "--tuples-only".into(),
            "--no-align".into(),
            "--set=ON_ERROR_STOP=1".into(),
            format!("--command={sql}"),
        ];
        self.client("psql", database.as_str(), rest)
    }
}

/// Restores `dump` into a throwaway cluster under `dir` and checks it. The cluster is
/// always stopped before this returns; `dir` is the caller's to remove.
pub async fn check_postgres(
    runner: &impl CommandRunner,
    policy: &BackupPolicy,
    dir: &ManagedPath,
    dump: &ManagedPath,
    database: &DatabaseName,
    invariants: &[Invariant],
) -> DatabaseReport {
    let mut report = DatabaseReport::new("postgresql");
    let cluster = match prepare(runner, policy, dir).await {
        Ok(cluster) => cluster,
        Err(problem) => {
            report.problems.push(problem);
            return report;
        }
    };
    let started = start(runner, &cluster).await;
    if let Err(problem) = started {
        report.problems.push(problem);
        return report;
    }
    restore_and_query(runner, &cluster, dump, database, invariants, &mut report).await;
    match runner.run(&cluster.pg_ctl("stop"), QUICK).await {
        Ok(out) if out.code == Some(0) => {}
        Ok(out) => report.problems.push(format!(
            "the drill cluster did not stop: {}",
            first_line(&out.stderr)
        )),
        Err(e) => report.problems.push(e),
    }
    report
}

/// The cluster's directories, owned by the drill account, and its IDs.
async fn prepare<'a>(
    runner: &impl CommandRunner,
    policy: &'a BackupPolicy,
    dir: &ManagedPath,
) -> Result<Cluster<'a>, String> {
    let join = |name: &str| dir.join(name).map_err(|e| e.to_string());
    let (data, socket) = (join("pgdata")?, join("socket")?);
    let me = runner.run(&command::user_id(), QUICK).await?;
    let user = runner
        .run(
            &command::resolve_owner(OwnerKind::User, &policy.drill_account),
            QUICK,
        )
        .await?;
    let group = runner
        .run(&command::primary_group(&policy.drill_account), QUICK)
        .await?;
    let (uid, gid) = match (
        user.stdout.trim().parse::<u32>(),
        group.stdout.trim().parse(),
    ) {
        (Ok(uid), Ok(gid)) => (uid, gid),
        _ => {
            return Err(format!(
                "the drill account {} does not exist on this host",
                policy.drill_account
            ))
        }
    };
    let account = (me.stdout.trim() != uid.to_string()).then_some((uid, gid));
    for step in [
        command::chmod(0o711, dir),
        command::make_dir(&data),
        command::make_dir(&socket),
        command::chown(uid, gid, &data),
        command::chown(uid, gid, &socket),
    ] {
        let out = runner.run(&step, QUICK).await?;
        if out.code != Some(0) {
            return Err(format!(
                "preparing the drill cluster: {}",
                first_line(&out.stderr)
            ));
        }
    }
    Ok(Cluster {
        policy,
        data,
        socket,
        account,
    })
}

async fn start(runner: &impl CommandRunner, cluster: &Cluster<'_>) -> Result<(), String> {
    let made = runner.run(&cluster.initdb(), QUICK * 3).await?;
    if made.code != Some(0) {
        return Err(format!(
            "initdb failed: {}",
            first_line(&format!("{}\n{}", made.stderr, made.stdout))
        ));
    }
    let conf = cluster
        .data
        .join("postgresql.auto.conf")
        .map_err(|e| e.to_string())?;
    let written = runner
        .run(&command::write_file(&conf, cluster.settings()), QUICK)
        .await?;
    if written.code != Some(0) {
        return Err(format!(
            "configuring the drill cluster: {}",
            first_line(&written.stderr)
        ));
    }
    let started = runner.run(&cluster.pg_ctl("start"), QUICK * 2).await?;
    if started.code != Some(0) {
        return Err(format!(
            "the drill cluster did not start: {}",
            first_line(&format!("{}\n{}", started.stderr, started.stdout))
        ));
    }
    Ok(())
}

async fn restore_and_query(
    runner: &impl CommandRunner,
    cluster: &Cluster<'_>,
    dump: &ManagedPath,
    database: &DatabaseName,
    invariants: &[Invariant],
    report: &mut DatabaseReport,
) {
    match runner.run(&cluster.restore(dump), RESTORE_TIMEOUT).await {
        Ok(out) if out.code == Some(0) => {}
        Ok(out) => {
            report
                .problems
                .push(format!("pg_restore failed: {}", first_line(&out.stderr)));
            return;
        }
        Err(e) => {
            report.problems.push(e);
            return;
        }
    }
    match count(runner, &cluster.query(database, "SELECT 1")).await {
        Ok(1) => report.started = true,
        Ok(_) | Err(_) => {
            report
                .problems
                .push(format!("the restored database {database} does not answer"));
            return;
        }
    }
    for invariant in invariants {
        let counted = match count_query(&invariant.table) {
            Ok(sql) => count(runner, &cluster.query(database, &sql)).await,
            Err(e) => Err(e),
        };
        report.invariants.push(judge(invariant, counted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_become_table_names() {
        assert_eq!(quoted_table("orders").unwrap(), "\"orders\"");
        assert_eq!(quoted_table("shop.orders").unwrap(), "\"shop\".\"orders\"");
        for bad in ["", "a.b.c", "x\"; DROP TABLE y; --", "1abc", "a b", "a."] {
            assert!(quoted_table(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn row_counts_are_judged_against_both_bounds() {
        let bounded = Invariant {
            table: "orders".into(),
            min_rows: Some(10),
            max_rows: Some(20),
        };
        assert!(judge(&bounded, Ok(15)).passed);
        let low = judge(&bounded, Ok(3));
        assert_eq!(low.problem.as_deref(), Some("3 rows, fewer than 10"));
        assert!(!judge(&bounded, Ok(21)).passed);
        let missing = judge(&bounded, Err("relation \"orders\" does not exist".into()));
        assert_eq!((missing.rows, missing.passed), (None, false));
    }
}
