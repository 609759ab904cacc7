//! What a backup reads, and where restic finds it. Directories are read as they are; a
//! Docker volume through its mountpoint; a database is first copied consistently into the
//! target's staging directory (PostgreSQL by `pg_dump` in its custom format, SQLite by its
//! online backup, never by copying a live file) and the copy is backed up, then removed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{secret, BackupError, BackupPolicy, SecretFile, Source, TargetSpec};
use crate::checks::CommandRunner;
use crate::command::{self, HostCommand};
use crate::names::ManagedPath;
pub use crate::names::{AccountName, DatabaseName, VolumeName};

/// A dump may take this long.
const DUMP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const QUICK: Duration = Duration::from_secs(60);

/// One PostgreSQL database to dump. The password, when the server asks for one, is in a
/// passfile in the host's password directory (never in an argv or the environment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// A host name or address, or the absolute directory of the server's socket.
    #[serde(default = "local_socket")]
    pub host: String,
    #[serde(default = "postgres_port")]
    pub port: u16,
    pub user: AccountName,
    pub database: DatabaseName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passfile: Option<SecretFile>,
    /// Files backed up with the dump (a service's keys beside its data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<ManagedPath>,
}

fn local_socket() -> String {
    "/var/run/postgresql".into()
}

fn postgres_port() -> u16 {
    5432
}

/// A value of a libpq connection string that needs no quoting.
fn conninfo_value(what: &str, value: &str) -> Result<(), BackupError> {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if plain {
        Ok(())
    } else {
        Err(BackupError::Refused(format!(
            "PostgreSQL {what} {value:?}: letters, digits, '_', '-', '.', ':', '/'"
        )))
    }
}

/// A path given to sqlite3's `.backup`, which splits its argument on spaces and quotes.
fn plain_path(path: &ManagedPath) -> Result<(), BackupError> {
    if path
        .as_str()
        .chars()
        .any(|c| c.is_whitespace() || "'\"\\".contains(c))
    {
        return Err(BackupError::Refused(format!(
            "SQLite path {path}: no spaces, quotes or backslashes"
        )));
    }
    Ok(())
}

/// Whether the policy lets this source be read.
pub fn allowed(policy: &BackupPolicy, source: &Source) -> Result<(), BackupError> {
    let within = |path: &ManagedPath| {
        if policy.sources.iter().any(|root| path.is_within(root)) {
            Ok(())
        } else {
            Err(BackupError::Refused(format!(
                "{path} is not below one of this host's backup sources ({})",
                super::list(&policy.sources)
            )))
        }
    };
    match source {
        Source::Paths { paths } if paths.is_empty() => Err(BackupError::Refused(
            "a paths source names at least one path".into(),
        )),
        Source::Paths { paths } => paths.iter().try_for_each(within),
        Source::Volume { .. } if !policy.volumes => Err(BackupError::Refused(
            "this host does not allow backups of Docker volumes ([backups] volumes = true)".into(),
        )),
        Source::Volume { .. } => Ok(()),
        Source::Postgres(pg) => {
            conninfo_value("host", &pg.host)?;
            if let Some(file) = &pg.passfile {
                secret(policy, file)?;
            }
            pg.with.iter().try_for_each(within)
        }
        Source::Sqlite { path, with } => {
            plain_path(path)?;
            within(path)?;
            with.iter().try_for_each(within)
        }
    }
}

/// What restic is to read, and what to remove after it has.
pub struct Staged {
    pub paths: Vec<ManagedPath>,
    copy: Option<ManagedPath>,
}

impl Staged {
    /// Removes the staged database copy (a failure leaves it for the next run to replace).
    pub async fn clean(&self, runner: &impl CommandRunner) {
        if let Some(copy) = &self.copy {
            let _ = runner.run(&command::remove_file(copy), QUICK).await;
        }
    }
}

/// The directory a target's database copies are staged in (and so, restored from).
pub fn staging_dir(policy: &BackupPolicy, target: &TargetSpec) -> Result<ManagedPath, BackupError> {
    policy
        .staging
        .join(target.name.as_str())
        .map_err(|e| BackupError::Refused(e.to_string()))
}

/// The file a database target's copy has, in its staging directory and in its snapshots.
pub fn database_copy(
    policy: &BackupPolicy,
    target: &TargetSpec,
) -> Result<Option<ManagedPath>, BackupError> {
    let name = match &target.source {
        Source::Postgres(pg) => format!("{}.dump", pg.database),
        Source::Sqlite { path, .. } => path.file_name().to_string(),
        Source::Paths { .. } | Source::Volume { .. } => return Ok(None),
    };
    staging_dir(policy, target)?
        .join(&name)
        .map(Some)
        .map_err(|e| BackupError::Refused(e.to_string()))
}

/// Makes the source readable by restic: resolves a volume, dumps a database.
pub async fn stage(
    runner: &impl CommandRunner,
    policy: &BackupPolicy,
    target: &TargetSpec,
) -> Result<Staged, BackupError> {
    let with = match &target.source {
        Source::Postgres(pg) => pg.with.clone(),
        Source::Sqlite { with, .. } => with.clone(),
        _ => Vec::new(),
    };
    let database = match &target.source {
        Source::Paths { paths } => {
            return Ok(Staged {
                paths: paths.clone(),
                copy: None,
            })
        }
        Source::Volume { volume } => {
            return Ok(Staged {
                paths: vec![volume_mountpoint(runner, volume).await?],
                copy: None,
            })
        }
        Source::Postgres(pg) => pg_dump(policy, pg)?,
        Source::Sqlite { path, .. } => sqlite_backup(path),
    };
    let dir = staging_dir(policy, target)?;
    let made = run(runner, &command::make_dirs(&dir), QUICK).await?;
    if made.code != Some(0) {
        return Err(BackupError::Failed(format!(
            "cannot make the staging directory {dir}: {}",
            made.stderr.trim()
        )));
    }
    let copy = database_copy(policy, target)?
        .ok_or_else(|| BackupError::Failed("a database target without a copy".into()))?;
    let dumped = run(runner, &database(&copy), DUMP_TIMEOUT).await?;
    if dumped.code != Some(0) {
        let _ = runner.run(&command::remove_file(&copy), QUICK).await;
        return Err(BackupError::Failed(format!(
            "the database copy failed: {}",
            first_line(&dumped.stderr)
        )));
    }
    let mut paths = vec![dir];
    paths.extend(with);
    Ok(Staged {
        paths,
        copy: Some(copy),
    })
}

type CopyCommand = Box<dyn Fn(&ManagedPath) -> HostCommand + Send + Sync>;

/// `pg_dump --format=custom` to the copy, connecting with a connection string whose every
/// value is checked (libpq reads the password from the passfile itself).
fn pg_dump(policy: &BackupPolicy, pg: &PostgresSource) -> Result<CopyCommand, BackupError> {
    conninfo_value("host", &pg.host)?;
    let mut conninfo = format!(
        "host={} port={} user={} dbname={} connect_timeout=10",
        pg.host, pg.port, pg.user, pg.database
    );
    if let Some(file) = &pg.passfile {
        let passfile = secret(policy, file)?;
        conninfo_value("passfile", passfile.as_str())?;
        conninfo += &format!(" passfile={passfile}");
    }
    Ok(Box::new(move |copy: &ManagedPath| {
        HostCommand::new(
            "pg_dump",
            [
                "--format=custom".to_string(),
                "--no-password".into(),
                format!("--file={copy}"),
                format!("--dbname={conninfo}"),
            ],
        )
    }))
}

/// `sqlite3 SOURCE ".backup COPY"`: SQLite's online backup, consistent while the database
/// is in use. sqlite3 takes no `--`; the source is absolute, so never an option.
fn sqlite_backup(source: &ManagedPath) -> CopyCommand {
    let source = source.clone();
    Box::new(move |copy: &ManagedPath| {
        HostCommand::new(
            "sqlite3",
            [source.as_str().to_string(), format!(".backup {copy}")],
        )
    })
}

/// `docker volume inspect -- NAME`: where the engine keeps the volume's data.
async fn volume_mountpoint(
    runner: &impl CommandRunner,
    volume: &VolumeName,
) -> Result<ManagedPath, BackupError> {
    let inspect = HostCommand::new("docker", ["volume", "inspect", "--", volume.as_str()]);
    let output = run(runner, &inspect, QUICK).await?;
    if output.code != Some(0) {
        return Err(BackupError::NotFound(format!(
            "volume {volume}: {}",
            first_line(&output.stderr)
        )));
    }
    parse_mountpoint(&output.stdout)
        .ok_or_else(|| BackupError::Failed(format!("volume {volume}: no readable mountpoint")))
}

/// The `Mountpoint` of `docker volume inspect`'s one volume.
fn parse_mountpoint(stdout: &str) -> Option<ManagedPath> {
    #[derive(Deserialize)]
    struct Volume {
        #[serde(rename = "Mountpoint")]
        mountpoint: String,
    }
    let volumes: Vec<Volume> = serde_json::from_str(stdout).ok()?;
    ManagedPath::new(&volumes.first()?.mountpoint).ok()
}

async fn run(
    runner: &impl CommandRunner,
    command: &HostCommand,
    timeout: Duration,
) -> Result<command::CommandOutput, BackupError> {
    runner
        .run(command, timeout)
        .await
        .map_err(BackupError::Failed)
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no reason given")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restic::{Repository, TargetName};

    fn target(source: Source) -> TargetSpec {
        TargetSpec {
            name: TargetName::new("db").unwrap(),
            repository: Repository::Local {
                path: "/srv/restic".into(),
            },
            password: SecretFile::new("main").unwrap(),
            source,
            invariants: Vec::new(),
        }
    }

    #[test]
    fn a_dump_connects_with_checked_values_and_the_password_stays_in_its_file() {
        let policy = BackupPolicy::default();
        let pg = PostgresSource {
            host: "127.0.0.1".into(),
            port: 5433,
            user: AccountName::new("app").unwrap(),
            database: DatabaseName::new("shop").unwrap(),
            passfile: Some(SecretFile::new("shop.pgpass").unwrap()),
            with: Vec::new(),
        };
        let copy = database_copy(&policy, &target(Source::Postgres(pg.clone())))
            .unwrap()
            .unwrap();
        assert_eq!(
            copy.as_str(),
            "/var/lib/infrastructor-agent/backup-staging/db/shop.dump"
        );
        let dump = pg_dump(&policy, &pg).unwrap()(&copy);
        assert_eq!(
            dump.argv().last().copied(),
            Some(
                "--dbname=host=127.0.0.1 port=5433 user=app dbname=shop connect_timeout=10 \
                 passfile=/etc/infrastructor/restic/shop.pgpass"
            )
        );
        let sneaky = PostgresSource {
            host: "db host=evil".into(),
            ..pg
        };
        assert!(pg_dump(&policy, &sneaky).is_err());
    }

    #[test]
    fn the_default_policy_holds_valid_names() {
        let policy = BackupPolicy::default();
        for path in [
            &policy.password_dir,
            &policy.scratch,
            &policy.staging,
            &policy.postgres_bin,
        ] {
            assert!(ManagedPath::new(path.as_str()).is_ok(), "{path}");
        }
        assert!(AccountName::new(policy.drill_account.as_str()).is_ok());
        assert_eq!(
            crate::restic::SnapshotId::latest(),
            crate::restic::SnapshotId::new("latest").unwrap()
        );
    }

    #[test]
    fn sources_outside_the_policy_are_refused() {
        let mut policy = BackupPolicy::default();
        let path = |p: &str| ManagedPath::new(p).unwrap();
        let dir = Source::Paths {
            paths: vec![path("/srv/app/config")],
        };
        assert!(allowed(&policy, &dir).is_err(), "no sources configured");
        policy.sources = vec![path("/srv/app")];
        assert!(allowed(&policy, &dir).is_ok());
        let volume = Source::Volume {
            volume: VolumeName::new("data").unwrap(),
        };
        assert!(allowed(&policy, &volume).is_err());
        let spaced = Source::Sqlite {
            path: path("/srv/app/my db.sqlite"),
            with: Vec::new(),
        };
        assert!(allowed(&policy, &spaced).is_err());
        let keys_elsewhere = Source::Sqlite {
            path: path("/srv/app/app.db"),
            with: vec![path("/etc/ssl/private")],
        };
        assert!(
            allowed(&policy, &keys_elsewhere).is_err(),
            "every file with it is checked"
        );
        assert!(allowed(&policy, &spaced).is_err());
    }

    #[test]
    fn a_volume_mountpoint_is_read_from_docker_volume_inspect() {
        let captured = r#"[
    {
        "CreatedAt": "2026-12-04T02:10:11Z",
        "Driver": "local",
        "Labels": {},
        "Mountpoint": "/var/lib/docker/volumes/shop-data/_data",
        "Name": "shop-data",
        "Options": {},
        "Scope": "local"
    }
]"#;
        assert_eq!(
            parse_mountpoint(captured).unwrap().as_str(),
            "/var/lib/docker/volumes/shop-data/_data"
        );
        assert!(parse_mountpoint("[]").is_none());
    }
}
