//! Backup requests and answers in their protocol form and back. Decoding a request is
//! validation (every name, path and repository setting), so the agent acts only on what the
//! controller could have built; decoding an answer only reshapes it — its text is the host's.

use infrastructor_proto::v1 as proto;
use proto::backup_command::Action;
use proto::backup_target::{Repository as WireRepository, Source as WireSource};

use super::database::{DatabaseReport, InvariantResult};
use super::source::PostgresSource;
use super::{BackupAnswer, BackupDone, BackupRequest, DrillReport, DumpedFile, Invariant};
use super::{RestoreDone, SecretFile, Source, TargetSpec};
use crate::change::wire::WireError;
use crate::names::{AccountName, DatabaseName, ManagedPath, VolumeName};
use crate::restic::{BackupSummary, CheckVerdict, ForgetSummary, Keep, Repository, Snapshot};
use crate::restic::{SnapshotId, TargetName};

/// The command asking for `request`.
pub fn command(request: &BackupRequest) -> proto::BackupCommand {
    let action = match request {
        BackupRequest::Backup { keep, .. } => Action::Backup(proto::BackupRun {
            keep: keep.map(|k| proto::Retention {
                daily: k.daily,
                weekly: k.weekly,
                monthly: k.monthly,
            }),
        }),
        BackupRequest::Snapshots { .. } => Action::Snapshots(proto::BackupSnapshots {}),
        BackupRequest::Check { group, groups, .. } => Action::Check(proto::BackupCheck {
            group: *group,
            groups: *groups,
        }),
        BackupRequest::Drill { snapshot, .. } => Action::Drill(proto::BackupDrill {
            snapshot: snapshot.as_str().to_string(),
        }),
        BackupRequest::Restore { snapshot, into, .. } => Action::Restore(proto::BackupRestore {
            snapshot: snapshot.as_str().to_string(),
            into: into
                .as_ref()
                .map_or(String::new(), |p| p.as_str().to_string()),
        }),
        BackupRequest::Dump {
            snapshot, files, ..
        } => Action::Dump(proto::BackupDump {
            snapshot: snapshot.as_str().to_string(),
            files: files.iter().map(|f| f.as_str().to_string()).collect(),
        }),
    };
    proto::BackupCommand {
        target: Some(target(request.target())),
        action: Some(action),
    }
}

fn target(spec: &TargetSpec) -> proto::BackupTarget {
    let repository = match &spec.repository {
        Repository::Local { path } => WireRepository::LocalPath(path.clone()),
        Repository::Sftp {
            user,
            host,
            port,
            path,
            identity,
            known_hosts,
        } => WireRepository::Sftp(proto::SftpRepository {
            user: user.clone(),
            host: host.clone(),
            port: u32::from(*port),
            path: path.clone(),
            identity: identity.clone(),
            known_hosts: known_hosts.clone(),
        }),
        Repository::Rest { url } => WireRepository::RestUrl(url.clone()),
    };
    let source = match &spec.source {
        Source::Paths { paths } => WireSource::Paths(proto::BackupPaths {
            paths: paths.iter().map(|p| p.as_str().to_string()).collect(),
        }),
        Source::Volume { volume } => WireSource::Volume(volume.as_str().to_string()),
        Source::Postgres(pg) => WireSource::Postgres(proto::PostgresSource {
            host: pg.host.clone(),
            port: u32::from(pg.port),
            user: pg.user.as_str().to_string(),
            database: pg.database.as_str().to_string(),
            passfile: pg.passfile.as_ref().map(|f| f.as_str().to_string()),
            with: strings(&pg.with),
        }),
        Source::Sqlite { path, with } => WireSource::Sqlite(proto::SqliteSource {
            path: path.as_str().to_string(),
            with: strings(with),
        }),
    };
    proto::BackupTarget {
        name: spec.name.as_str().to_string(),
        repository: Some(repository),
        password_file: spec.password.as_str().to_string(),
        source: Some(source),
        invariants: spec
            .invariants
            .iter()
            .map(|i| proto::TableInvariant {
                table: i.table.clone(),
                min_rows: i.min_rows,
                max_rows: i.max_rows,
            })
            .collect(),
    }
}

fn strings(paths: &[ManagedPath]) -> Vec<String> {
    paths.iter().map(|p| p.as_str().to_string()).collect()
}

fn paths(wire: &[String]) -> Result<Vec<ManagedPath>, WireError> {
    wire.iter()
        .map(|p| ManagedPath::new(p).map_err(WireError::from))
        .collect()
}

fn port(value: u32) -> Result<u16, WireError> {
    u16::try_from(value).map_err(|_| WireError::Missing("a port below 65536"))
}

/// A command from the wire, validated.
pub fn decode_command(command: &proto::BackupCommand) -> Result<BackupRequest, WireError> {
    let target = decode_target(
        command
            .target
            .as_ref()
            .ok_or(WireError::Missing("target"))?,
    )?;
    let snapshot = |id: &str| SnapshotId::new(id);
    let request = match command
        .action
        .as_ref()
        .ok_or(WireError::Missing("action"))?
    {
        Action::Backup(run) => BackupRequest::Backup {
            target,
            keep: run.keep.map(|k| Keep {
                daily: k.daily,
                weekly: k.weekly,
                monthly: k.monthly,
            }),
        },
        Action::Snapshots(_) => BackupRequest::Snapshots { target },
        Action::Check(check) => BackupRequest::Check {
            target,
            group: check.group,
            groups: check.groups,
        },
        Action::Drill(drill) => BackupRequest::Drill {
            target,
            snapshot: snapshot(&drill.snapshot)?,
        },
        Action::Restore(restore) => BackupRequest::Restore {
            target,
            snapshot: snapshot(&restore.snapshot)?,
            into: match restore.into.as_str() {
                "" => None,
                into => Some(ManagedPath::new(into)?),
            },
        },
        Action::Dump(dump) => BackupRequest::Dump {
            target,
            snapshot: snapshot(&dump.snapshot)?,
            files: dump
                .files
                .iter()
                .map(|f| ManagedPath::new(f))
                .collect::<Result<_, _>>()?,
        },
    };
    Ok(request)
}

fn decode_target(wire: &proto::BackupTarget) -> Result<TargetSpec, WireError> {
    let repository = match wire
        .repository
        .as_ref()
        .ok_or(WireError::Missing("repository"))?
    {
        WireRepository::LocalPath(path) => Repository::Local { path: path.clone() },
        WireRepository::Sftp(sftp) => Repository::Sftp {
            user: sftp.user.clone(),
            host: sftp.host.clone(),
            port: port(sftp.port)?,
            path: sftp.path.clone(),
            identity: sftp.identity.clone(),
            known_hosts: sftp.known_hosts.clone(),
        },
        WireRepository::RestUrl(url) => Repository::Rest { url: url.clone() },
    };
    let source = match wire.source.as_ref().ok_or(WireError::Missing("source"))? {
        WireSource::Paths(paths) => Source::Paths {
            paths: paths
                .paths
                .iter()
                .map(|p| ManagedPath::new(p))
                .collect::<Result<_, _>>()?,
        },
        WireSource::Volume(volume) => Source::Volume {
            volume: VolumeName::new(volume)?,
        },
        WireSource::Postgres(pg) => Source::Postgres(PostgresSource {
            host: pg.host.clone(),
            port: port(pg.port)?,
            user: AccountName::new(&pg.user)?,
            database: DatabaseName::new(&pg.database)?,
            passfile: pg.passfile.as_deref().map(SecretFile::new).transpose()?,
            with: paths(&pg.with)?,
        }),
        WireSource::Sqlite(sqlite) => Source::Sqlite {
            path: ManagedPath::new(&sqlite.path)?,
            with: paths(&sqlite.with)?,
        },
    };
    Ok(TargetSpec {
        name: TargetName::new(&wire.name)?,
        repository,
        password: SecretFile::new(&wire.password_file)?,
        source,
        invariants: wire
            .invariants
            .iter()
            .map(|i| Invariant {
                table: i.table.clone(),
                min_rows: i.min_rows,
                max_rows: i.max_rows,
            })
            .collect(),
    })
}

/// The answer as the agent sends it.
pub fn answer_payload(answer: BackupAnswer) -> proto::command_succeeded::Payload {
    use proto::command_succeeded::Payload;
    match answer {
        BackupAnswer::Backup(done) => Payload::BackupResult(backup_result(done)),
        BackupAnswer::Snapshots { snapshots } => Payload::SnapshotList(proto::SnapshotList {
            snapshots: snapshots
                .into_iter()
                .map(|s| proto::SnapshotInfo {
                    id: s.id,
                    short_id: s.short_id,
                    time: s.time,
                    paths: s.paths,
                    tags: s.tags,
                    hostname: s.hostname,
                })
                .collect(),
        }),
        BackupAnswer::Check(verdict) => Payload::RepositoryCheck(proto::RepositoryCheck {
            ok: verdict.ok,
            problems: verdict.problems,
        }),
        BackupAnswer::Drill(report) => Payload::DrillResult(drill_result(report)),
        BackupAnswer::Restore(done) => Payload::RestoreResult(proto::RestoreResult {
            snapshot: done.snapshot,
            into: done.into,
            files_verified: done.files_verified as u64,
            restore_ms: done.restore_ms,
        }),
        BackupAnswer::Dump { files } => Payload::DumpedFiles(proto::DumpedFiles {
            files: files
                .into_iter()
                .map(|f| proto::DumpedFile {
                    path: f.path,
                    content: f.content,
                })
                .collect(),
        }),
    }
}

fn backup_result(done: BackupDone) -> proto::BackupResult {
    let s = done.summary;
    proto::BackupResult {
        snapshot_id: s.snapshot_id,
        files_new: s.files_new,
        files_changed: s.files_changed,
        files_unmodified: s.files_unmodified,
        data_added: s.data_added,
        total_files_processed: s.total_files_processed,
        total_bytes_processed: s.total_bytes_processed,
        total_duration: s.total_duration,
        initialized: done.initialized,
        forgot: done.forgot.map(|f| proto::ForgetResult {
            kept: f.kept as u64,
            removed: f.removed as u64,
        }),
    }
}

fn drill_result(report: DrillReport) -> proto::DrillResult {
    proto::DrillResult {
        snapshot: report.snapshot,
        passed: report.passed,
        files_expected: report.files_expected as u64,
        files_restored: report.files_restored as u64,
        files_verified: report.files_verified as u64,
        bytes_restored: report.bytes_restored,
        restore_ms: report.restore_ms,
        missing: report.missing,
        wrong_size: report.wrong_size,
        unexpected: report.unexpected,
        problems: report.problems,
        database: report.database.map(|d| proto::DatabaseDrill {
            engine: d.engine,
            started: d.started,
            invariants: d
                .invariants
                .into_iter()
                .map(|i| proto::InvariantOutcome {
                    table: i.table,
                    rows: i.rows,
                    passed: i.passed,
                    problem: i.problem,
                })
                .collect(),
            problems: d.problems,
        }),
    }
}

/// The agent's answer, reshaped; `None` when the payload is not a backup answer.
pub fn answer_from_payload(payload: proto::command_succeeded::Payload) -> Option<BackupAnswer> {
    use proto::command_succeeded::Payload;
    let answer = match payload {
        Payload::BackupResult(r) => BackupAnswer::Backup(BackupDone {
            summary: BackupSummary {
                snapshot_id: r.snapshot_id,
                files_new: r.files_new,
                files_changed: r.files_changed,
                files_unmodified: r.files_unmodified,
                data_added: r.data_added,
                total_files_processed: r.total_files_processed,
                total_bytes_processed: r.total_bytes_processed,
                total_duration: r.total_duration,
            },
            initialized: r.initialized,
            forgot: r.forgot.map(|f| ForgetSummary {
                kept: f.kept as usize,
                removed: f.removed as usize,
            }),
        }),
        Payload::SnapshotList(list) => BackupAnswer::Snapshots {
            snapshots: list
                .snapshots
                .into_iter()
                .map(|s| Snapshot {
                    id: s.id,
                    short_id: s.short_id,
                    time: s.time,
                    paths: s.paths,
                    tags: s.tags,
                    hostname: s.hostname,
                })
                .collect(),
        },
        Payload::RepositoryCheck(check) => BackupAnswer::Check(CheckVerdict {
            ok: check.ok,
            problems: check.problems,
        }),
        Payload::DrillResult(d) => BackupAnswer::Drill(DrillReport {
            snapshot: d.snapshot,
            passed: d.passed,
            files_expected: d.files_expected as usize,
            files_restored: d.files_restored as usize,
            files_verified: d.files_verified as usize,
            bytes_restored: d.bytes_restored,
            restore_ms: d.restore_ms,
            missing: d.missing,
            wrong_size: d.wrong_size,
            unexpected: d.unexpected,
            problems: d.problems,
            database: d.database.map(|db| DatabaseReport {
                engine: db.engine,
                started: db.started,
                invariants: db
                    .invariants
                    .into_iter()
                    .map(|i| InvariantResult {
                        table: i.table,
                        rows: i.rows,
                        passed: i.passed,
                        problem: i.problem,
                    })
                    .collect(),
                problems: db.problems,
            }),
        }),
        Payload::RestoreResult(r) => BackupAnswer::Restore(RestoreDone {
            snapshot: r.snapshot,
            into: r.into,
            files_verified: r.files_verified as usize,
            restore_ms: r.restore_ms,
        }),
        Payload::DumpedFiles(files) => BackupAnswer::Dump {
            files: files
                .files
                .into_iter()
                .map(|f| DumpedFile {
                    path: f.path,
                    content: f.content,
                })
                .collect(),
        },
        _ => return None,
    };
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_survives_the_wire_and_bad_names_are_refused() {
        let spec = TargetSpec {
            name: TargetName::new("shop-db").unwrap(),
            repository: Repository::Sftp {
                user: "backup".into(),
                host: "vault.lan".into(),
                port: 2222,
                path: "/srv/restic".into(),
                identity: Some("/root/.ssh/id_ed25519".into()),
                known_hosts: "/etc/infrastructor/known_hosts".into(),
            },
            password: SecretFile::new("shop").unwrap(),
            source: Source::Postgres(PostgresSource {
                host: "/var/run/postgresql".into(),
                port: 5432,
                user: AccountName::new("shop").unwrap(),
                database: DatabaseName::new("shop").unwrap(),
                passfile: None,
                with: vec![ManagedPath::new("/etc/shop/keys").unwrap()],
            }),
            invariants: vec![Invariant {
                table: "public.orders".into(),
                min_rows: Some(1),
                max_rows: None,
            }],
        };
        let requests = [
            BackupRequest::Backup {
                target: spec.clone(),
                keep: Some(Keep::default()),
            },
            BackupRequest::Check {
                target: spec.clone(),
                group: 3,
                groups: 30,
            },
            BackupRequest::Restore {
                target: spec.clone(),
                snapshot: SnapshotId::new("latest").unwrap(),
                into: Some(ManagedPath::new("/srv/restores/shop").unwrap()),
            },
        ];
        for request in requests {
            assert_eq!(decode_command(&command(&request)).unwrap(), request);
        }
        let mut wire = command(&BackupRequest::Snapshots { target: spec });
        if let Some(target) = wire.target.as_mut() {
            target.password_file = "../../etc/shadow".into();
        }
        assert!(decode_command(&wire).is_err());
    }
}
