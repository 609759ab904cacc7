//! Backup targets: what is backed up (a device's directories, a Docker volume, a database),
//! to which restic repository, how often, what is kept, and the RPO the newest *verified*
//! backup must meet. A backup counts as verified only after a restore drill of it passed.
//! Declarations are versioned like applications; every run is recorded.
//!
//! - [`controller`]: the controller itself as a target (its database, CA and SSH identity).
//! - [`run`]: `manage_backups` — trigger, validate (a rotating `check` and a restore
//!   drill), restore (to a new directory, or in place through the change engine) — and the
//!   schedule that starts them.

pub mod controller;
pub mod run;

use std::time::Duration;

use infrastructor_hostops::backup::{Invariant, SecretFile, Source, TargetSpec};
use infrastructor_hostops::restic::{Keep, Repository, TargetName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::services::{rfc3339, untrusted, Services};
use crate::store::{BackupRunRow, Declared, DeclaredRow};

const DAY: Duration = Duration::from_secs(86_400);
/// A schedule's shortest interval.
const MIN_EVERY: Duration = Duration::from_secs(60);
/// The shortest RPO: far below anything useful, but a drill of a fresh backup can show it.
const MIN_RPO: Duration = Duration::from_secs(10);
const MAX_EVERY: Duration = Duration::from_secs(366 * 86_400);
/// Runs shown with a target.
const RECENT_RUNS: i64 = 20;

/// When a target's work runs on its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// How often a backup runs (`6h`, `1d`); absent: only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_every: Option<String>,
    /// How often the repository is checked and the newest snapshot drilled; absent: only on
    /// demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_every: Option<String>,
}

/// What a target backs up: data on a device, or the controller itself.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TargetSource {
    /// `{"kind": "controller"}`: the controller's database with its CA and SSH identity.
    Controller(controller::ControllerSource),
    /// `paths`, `volume`, `postgres` or `sqlite` on the target's device.
    Host(Source),
}

impl<'de> Deserialize<'de> for TargetSource {
    /// By `kind`, so a mistake is reported by the kind's own fields, not as "no variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let decoded = if value.get("kind").and_then(Value::as_str) == Some("controller") {
            serde_json::from_value(value).map(Self::Controller)
        } else {
            serde_json::from_value(value).map(Self::Host)
        };
        decoded.map_err(serde::de::Error::custom)
    }
}

/// A backup target as declared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupTargetSpec {
    /// The device (ID or name) whose data it is; restic runs there. Absent for the
    /// controller's own target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub source: TargetSource,
    pub repository: Repository,
    /// The repository's password file, a name in the host's password directory (the
    /// password itself never reaches the controller).
    pub password_file: SecretFile,
    #[serde(default)]
    pub schedule: Schedule,
    /// Retention after each backup (`forget --keep-daily/weekly/monthly --prune`).
    #[serde(default)]
    pub keep: Keep,
    /// The newest verified backup may be at most this old (`26h`); a miss raises the
    /// `backup_stale` alert. Absent: no RPO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// Rotating checks read the whole repository's data over this period (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_all_over: Option<String>,
    /// What a drill checks in a restored database: tables and their row-count bounds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invariants: Vec<Invariant>,
    /// An application stopped in dependency order for the backup and started again in
    /// order after it (for data that must not change while it is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<String>,
    /// Refuse the declaration unless the target is at this version (0: new).
    #[serde(default, skip_serializing)]
    pub expected_version: Option<i64>,
}

/// A spec's durations, checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub backup_every: Option<Duration>,
    pub validate_every: Option<Duration>,
    pub rpo: Option<Duration>,
    /// How many rotating checks read the whole repository once.
    pub check_groups: u32,
}

fn every(field: &str, text: Option<&str>) -> Result<Option<Duration>> {
    within(field, text, MIN_EVERY)
}

fn within(field: &str, text: Option<&str>, min: Duration) -> Result<Option<Duration>> {
    let Some(text) = text else { return Ok(None) };
    let value = humantime::parse_duration(text)
        .map_err(|e| Error::invalid(format!("invalid {field} {text:?}: {e} (e.g. 6h, 1d)")))?;
    if !(min..=MAX_EVERY).contains(&value) {
        return Err(Error::invalid(format!(
            "{field} must be between {} and 366d",
            humantime::format_duration(min)
        )));
    }
    Ok(Some(value))
}

impl BackupTargetSpec {
    pub fn timing(&self) -> Result<Timing> {
        let backup_every = every(
            "schedule.backup_every",
            self.schedule.backup_every.as_deref(),
        )?;
        let validate_every = every(
            "schedule.validate_every",
            self.schedule.validate_every.as_deref(),
        )?;
        let rpo = within("rpo", self.rpo.as_deref(), MIN_RPO)?;
        let read_all_over =
            every("read_all_over", self.read_all_over.as_deref())?.unwrap_or(30 * DAY);
        let per_check = validate_every.unwrap_or(DAY);
        let groups = read_all_over.as_secs().div_ceil(per_check.as_secs().max(1));
        Ok(Timing {
            backup_every,
            validate_every,
            rpo,
            check_groups: groups.clamp(1, 1000) as u32,
        })
    }

    /// The device's ID or name; `None` for the controller's own target.
    pub fn device(&self) -> Result<Option<&str>> {
        match (&self.source, &self.device) {
            (TargetSource::Controller(_), None) => Ok(None),
            (TargetSource::Controller(_), Some(_)) => Err(Error::invalid(
                "the controller's own target names no device (restic runs on the controller)",
            )),
            (TargetSource::Host(_), Some(device)) => Ok(Some(device)),
            (TargetSource::Host(_), None) => Err(Error::invalid(
                "a target names the `device` whose data it is",
            )),
        }
    }

    fn database(&self) -> bool {
        matches!(
            self.source,
            TargetSource::Controller(_)
                | TargetSource::Host(Source::Postgres(_) | Source::Sqlite { .. })
        )
    }

    fn check(&self, name: &str) -> Result<Timing> {
        target_name(name)?;
        self.repository
            .checked()
            .map_err(|e| Error::invalid(e.to_string()))?;
        self.device()?;
        if matches!(&self.source, TargetSource::Host(Source::Paths { paths }) if paths.is_empty()) {
            return Err(Error::invalid("source.paths names at least one path"));
        }
        for invariant in &self.invariants {
            infrastructor_hostops::backup::database::quoted_table(&invariant.table)
                .map_err(Error::invalid)?;
        }
        if !self.invariants.is_empty() && !self.database() {
            return Err(Error::invalid(
                "invariants are checked in a restored database: the source is not one",
            ));
        }
        self.timing()
    }
}

pub fn target_name(name: &str) -> Result<TargetName> {
    TargetName::new(name).map_err(|e| Error::invalid(e.to_string()))
}

/// One backup, check, drill or restore of a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunView {
    pub id: String,
    /// backup, check, drill or restore.
    pub kind: String,
    pub passed: bool,
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_at: Option<String>,
    /// A drill's or restore's measured restore time: the target's RTO as observed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the host reported (untrusted text, cleaned).
    pub details: Value,
}

fn run_view(row: &BackupRunRow) -> RunView {
    RunView {
        id: row.id.clone(),
        kind: row.kind.clone(),
        passed: row.passed,
        device_id: row.device_id.clone(),
        job_id: row.job_id.clone(),
        started_at: rfc3339(row.started_at_ms),
        finished_at: rfc3339(row.finished_at_ms),
        snapshot: row.snapshot.clone(),
        snapshot_at: row.snapshot_at_ms.map(rfc3339),
        restore_ms: row.restore_ms,
        error: row.error.clone(),
        details: serde_json::from_str(&row.details).unwrap_or(Value::Null),
    }
}

/// Whether the newest verified backup is within the RPO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RpoState {
    Met,
    /// No verified backup, or the newest is older than the RPO.
    Missed,
    /// The target has no RPO.
    NotSet,
}

/// The newest snapshot a passing drill proved restorable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verified {
    pub snapshot: String,
    pub taken_at: String,
    pub drilled_at: String,
    pub age_seconds: i64,
    /// How long its drill's restore took.
    pub restore_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<RunView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<RunView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<RunView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
    pub rpo: RpoState,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupTargetView {
    pub name: String,
    pub version: i64,
    pub declared_by: String,
    pub declared_at: String,
    pub spec: BackupTargetSpec,
    pub status: BackupStatus,
}

/// A snapshot as the host's repository lists it (untrusted text, cleaned).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotView {
    pub id: String,
    pub time: String,
    pub paths: Vec<String>,
    pub hostname: String,
    /// A passing drill verified it.
    pub verified: bool,
}

/// A target with its recent runs and the snapshots its repository holds now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupTargetDetail {
    #[serde(flatten)]
    pub target: BackupTargetView,
    pub runs: Vec<RunView>,
    pub snapshots: Vec<SnapshotView>,
    /// Why the snapshots could not be listed (the host is unreachable, no repository yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots_error: Option<String>,
}

/// A removed declaration: the version that removed it (the earlier ones are kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Removed {
    pub name: String,
    pub version: i64,
}

/// A declared target, decoded.
pub struct Target {
    pub name: String,
    pub row: DeclaredRow,
    pub spec: BackupTargetSpec,
    pub timing: Timing,
}

impl Services {
    pub async fn declare_backup_target(
        &self,
        ctx: &Ctx,
        name: &str,
        spec: &BackupTargetSpec,
    ) -> Result<BackupTargetView> {
        ctx.principal.require(Scope::Operate)?;
        spec.check(name)?;
        if let Some(device) = spec.device()? {
            self.require_device(device).await?;
        }
        self.host_spec(name, spec)?;
        if let Some(app) = &spec.quiesce {
            self.application_claims(app).await?;
        }
        let json = serde_json::to_string(spec)
            .map_err(|e| Error::Internal(format!("encoding a backup target: {e}")))?;
        let (by, now) = (ctx.principal.name.clone(), self.now_ms());
        let kind = Declared::BackupTarget;
        self.store
            .declare(kind, name, Some(&json), spec.expected_version, &by, now)
            .await?;
        let target = self.backup_target(name).await?;
        self.target_view(&target).await
    }

    /// Removes a target's declaration (its versions and runs stay; its snapshots are not
    /// touched).
    pub async fn remove_backup_target(&self, ctx: &Ctx, name: &str) -> Result<Removed> {
        ctx.principal.require(Scope::Operate)?;
        let target = self.backup_target(name).await?;
        let (by, now) = (ctx.principal.name.clone(), self.now_ms());
        let kind = Declared::BackupTarget;
        let version = self
            .store
            .declare(kind, name, None, Some(target.row.version), &by, now)
            .await?;
        Ok(Removed {
            name: name.to_string(),
            version,
        })
    }

    pub async fn list_backup_targets(&self, ctx: &Ctx) -> Result<Vec<BackupTargetView>> {
        ctx.principal.require(Scope::Read)?;
        let mut views = Vec::new();
        for target in self.backup_targets().await? {
            views.push(self.target_view(&target).await?);
        }
        Ok(views)
    }

    pub async fn get_backup_target(&self, ctx: &Ctx, name: &str) -> Result<BackupTargetDetail> {
        ctx.principal.require(Scope::Read)?;
        let target = self.backup_target(name).await?;
        let view = self.target_view(&target).await?;
        let runs = self.store.backup_runs(name, None, RECENT_RUNS).await?;
        let (snapshots, snapshots_error) = match self.target_snapshots(ctx, &target).await {
            Ok(listed) => (listed, None),
            Err(error) => (Vec::new(), Some(error.public_message())),
        };
        let verified: Vec<&str> = runs
            .iter()
            .filter(|r| r.kind == "drill" && r.passed)
            .filter_map(|r| r.snapshot.as_deref())
            .collect();
        let snapshots = snapshots
            .into_iter()
            .map(|s| SnapshotView {
                verified: verified.contains(&s.id.as_str()),
                id: untrusted::clean(&s.id, 64, untrusted::Lines::Single),
                time: untrusted::clean(&s.time, 64, untrusted::Lines::Single),
                paths: s
                    .paths
                    .iter()
                    .map(|p| {
                        untrusted::clean(p, untrusted::MAX_LINE_CHARS, untrusted::Lines::Single)
                    })
                    .collect(),
                hostname: untrusted::clean(&s.hostname, 255, untrusted::Lines::Single),
            })
            .collect();
        Ok(BackupTargetDetail {
            target: view,
            runs: runs.iter().map(run_view).collect(),
            snapshots,
            snapshots_error,
        })
    }

    /// The target as the host that runs it needs it.
    pub fn host_spec(&self, name: &str, spec: &BackupTargetSpec) -> Result<TargetSpec> {
        let source = match &spec.source {
            TargetSource::Host(source) => source.clone(),
            TargetSource::Controller(own) => self.controller_source(own)?,
        };
        Ok(TargetSpec {
            name: target_name(name)?,
            repository: spec.repository.clone(),
            password: spec.password_file.clone(),
            source,
            invariants: spec.invariants.clone(),
        })
    }

    /// The device ID a target's runs are recorded under (`""` for the controller's own).
    pub async fn target_device_id(&self, target: &Target) -> Result<String> {
        match target.spec.device()? {
            Some(device) => Ok(self.require_device(device).await?.id),
            None => Ok(String::new()),
        }
    }

    /// One request about a target, on the host that has its data.
    pub async fn on_target(
        &self,
        ctx: &Ctx,
        target: &Target,
        request: &infrastructor_hostops::backup::BackupRequest,
    ) -> Result<infrastructor_hostops::backup::BackupAnswer> {
        match target.spec.device()? {
            Some(device) => {
                let device = self.require_device(device).await?;
                self.host(&device).backup(ctx, request).await
            }
            None => self.controller_backup(request).await,
        }
    }

    /// Every declared target, decoded.
    pub async fn backup_targets(&self) -> Result<Vec<Target>> {
        let rows = self.store.declared_all(Declared::BackupTarget).await?;
        rows.into_iter().map(decode_target).collect()
    }

    pub async fn backup_target(&self, name: &str) -> Result<Target> {
        target_name(name)?;
        let row = self
            .store
            .declared(Declared::BackupTarget, name, None)
            .await?;
        match row {
            Some(row) if row.spec.is_some() => decode_target(row),
            Some(_) => Err(Error::NotFound(format!(
                "backup target {name:?} was removed"
            ))),
            None => Err(Error::NotFound(format!("no backup target {name:?}"))),
        }
    }

    async fn target_view(&self, target: &Target) -> Result<BackupTargetView> {
        Ok(BackupTargetView {
            name: target.name.clone(),
            version: target.row.version,
            declared_by: target.row.declared_by.clone(),
            declared_at: rfc3339(target.row.declared_at_ms),
            spec: target.spec.clone(),
            status: self.backup_status(target).await?,
        })
    }

    pub async fn backup_status(&self, target: &Target) -> Result<BackupStatus> {
        let last = |kind: &'static str| async move {
            let rows = self.store.backup_runs(&target.name, Some(kind), 1).await?;
            Ok::<_, Error>(rows.first().map(run_view))
        };
        // The runs first, then what they verified: a drill recorded in between shows as
        // verified a moment before it shows as the last drill, never the other way round.
        let (last_backup, last_check, last_drill) = (
            last("backup").await?,
            last("check").await?,
            last("drill").await?,
        );
        let verified = self.store.newest_verified(&target.name).await?;
        let now = self.now_ms();
        let view = verified.as_ref().and_then(|row| {
            let taken = row.snapshot_at_ms?;
            Some(Verified {
                snapshot: row.snapshot.clone()?,
                taken_at: rfc3339(taken),
                drilled_at: rfc3339(row.finished_at_ms),
                age_seconds: (now - taken).max(0) / 1000,
                restore_ms: row.restore_ms,
            })
        });
        let taken = verified.as_ref().and_then(|v| v.snapshot_at_ms);
        let rpo = match target.timing.rpo {
            None => RpoState::NotSet,
            // The same comparison as the `backup_stale` alert's.
            Some(rpo) => match taken {
                Some(taken) if now - taken <= rpo.as_millis() as i64 => RpoState::Met,
                _ => RpoState::Missed,
            },
        };
        Ok(BackupStatus {
            last_backup,
            last_check,
            last_drill,
            verified: view,
            rpo,
        })
    }
}

fn decode_target(row: DeclaredRow) -> Result<Target> {
    let text = row.spec.as_deref().unwrap_or_default();
    let spec: BackupTargetSpec = serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("stored backup target {}: {e}", row.name)))?;
    let timing = spec.timing()?;
    Ok(Target {
        name: row.name.clone(),
        row,
        spec,
        timing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: Schedule, read_all_over: Option<&str>) -> BackupTargetSpec {
        serde_json::from_value(serde_json::json!({
            "device": "web-1",
            "source": {"kind": "paths", "paths": ["/etc/app"]},
            "repository": {"kind": "local", "path": "/srv/restic"},
            "password_file": "main",
            "schedule": schedule,
            "read_all_over": read_all_over,
        }))
        .unwrap()
    }

    #[test]
    fn rotating_checks_read_everything_over_the_period() {
        let daily = Schedule {
            backup_every: Some("6h".into()),
            validate_every: Some("1d".into()),
        };
        assert_eq!(spec(daily.clone(), None).timing().unwrap().check_groups, 30);
        assert_eq!(spec(daily, Some("7d")).timing().unwrap().check_groups, 7);
        let hourly = Schedule {
            backup_every: None,
            validate_every: Some("1h".into()),
        };
        assert_eq!(spec(hourly, Some("1d")).timing().unwrap().check_groups, 24);
        let too_often = Schedule {
            backup_every: Some("5s".into()),
            validate_every: None,
        };
        assert!(spec(too_often, None).timing().is_err());
    }

    #[test]
    fn invariants_belong_to_database_targets() {
        let mut with = spec(Schedule::default(), None);
        with.invariants = vec![Invariant {
            table: "orders".into(),
            min_rows: Some(1),
            max_rows: None,
        }];
        assert!(with.check("etc").is_err());
        with.source = TargetSource::Host(Source::Sqlite {
            path: infrastructor_hostops::names::ManagedPath::new("/srv/app.db").unwrap(),
            with: Vec::new(),
        });
        assert!(with.check("etc").is_ok());
        let own: TargetSource =
            serde_json::from_value(serde_json::json!({"kind": "controller"})).unwrap();
        with.source = own;
        assert!(
            with.check("etc").is_err(),
            "the controller's target names no device"
        );
        with.device = None;
        assert!(with.check("controller").is_ok());
        let typo = serde_json::from_value::<TargetSource>(serde_json::json!({"kind": "pathz"}));
        assert!(typo.unwrap_err().to_string().contains("pathz"));
        assert!(with.check("no spaces allowed").is_err());
    }
}

#[cfg(test)]
mod roundtrip {
    use super::*;

    #[test]
    fn a_stored_spec_reads_back() {
        let spec: BackupTargetSpec = serde_json::from_value(serde_json::json!({
            "device": "web-1",
            "source": {"kind": "paths", "paths": ["/etc/app"]},
            "repository": {"kind": "local", "path": "/srv/restic"},
            "password_file": "main",
            "rpo": "10s",
        }))
        .unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        let back: std::result::Result<BackupTargetSpec, _> = serde_json::from_str(&text);
        assert!(back.is_ok(), "{text}: {back:?}");
    }
}
