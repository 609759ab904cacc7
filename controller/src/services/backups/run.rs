//! `manage_backups`: a target's backup (its application quiesced in dependency order when
//! declared), its validation (a rotating `restic check` and a restore drill of a snapshot;
//! a passing drill is what makes a backup *verified*), and its restore — to a new directory
//! by default, or in place through the two-phase change engine. Each is a job; every host
//! action is recorded as a run. The schedule starts the same jobs on its own.

use std::time::Instant;

use infrastructor_hostops::backup::{BackupAnswer, BackupDone, BackupRequest, DrillReport};
use infrastructor_hostops::backup::{RestoreDone, TargetSpec};
use infrastructor_hostops::change::spec::FileChange;
use infrastructor_hostops::change::{ChangeSet, FileDiff};
use infrastructor_hostops::names::ManagedPath;
use infrastructor_hostops::restic::{CheckVerdict, Snapshot, SnapshotId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Target, TargetSource};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::services::applications::plan::AppAction;
use crate::services::applications::{ManageRequest, RunOutcome as AppOutcome};
use crate::services::changes::{ChangeRequest, DeployOptions};
use crate::services::jobs::JobClaims;
use crate::services::{untrusted, Services};
use crate::store::{BackupRunRow, JobLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupAction {
    /// Back the target up now (then apply its retention).
    Trigger,
    /// Check the repository (the next rotating subset of its data) and drill a snapshot.
    Validate,
    /// Restore a snapshot.
    Restore,
}

impl BackupAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Validate => "validate",
            Self::Restore => "restore",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManageBackupsRequest {
    pub action: BackupAction,
    /// validate, restore: the snapshot (default: the target's newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    /// restore: a new directory below one of the host's restore roots (default: one made in
    /// the first, named `<target>-<snapshot>-<time>`); the snapshot's paths are recreated
    /// below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<ManagedPath>,
    /// restore: put the snapshot's files back where they were, through the two-phase change
    /// engine (atomic, rolled back if its health checks fail); paths targets only, text
    /// files, at most 64.
    #[serde(default)]
    pub in_place: bool,
    /// Answer the plan (for an in-place restore: the exact diffs) and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// A dry run: nothing was done.
    Planned,
}

/// What a run would do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupPlan {
    pub target: String,
    pub device_id: String,
    pub action: BackupAction,
    /// What is read: `paths`, `volume`, `postgres`, `sqlite` or `controller`.
    pub source: String,
    /// Where the snapshots are (no credentials are ever part of it).
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
    /// The application stopped for the backup and started after it, in dependency order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<String>,
    /// In words, in order.
    pub steps: Vec<String>,
    /// An in-place restore's diffs against the live files (host text, cleaned).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileDiff>,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupRun {
    pub target: String,
    pub action: BackupAction,
    pub outcome: Outcome,
    pub plan: BackupPlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupDone>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckVerdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreDone>,
    /// An in-place restore's configuration change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// The drilled snapshot is now verified.
    pub verified: bool,
    pub problems: Vec<String>,
    pub duration_ms: u64,
}

impl BackupRun {
    fn new(target: &Target, action: BackupAction, plan: BackupPlan) -> Self {
        Self {
            target: target.name.clone(),
            action,
            outcome: Outcome::Succeeded,
            plan,
            backup: None,
            check: None,
            drill: None,
            restore: None,
            change_id: None,
            verified: false,
            problems: Vec::new(),
            duration_ms: 0,
        }
    }

    fn fail(&mut self, problem: String) {
        self.outcome = Outcome::Failed;
        self.problems.push(problem);
    }
}

/// A run's record, built as it goes.
struct Record<'a> {
    target: &'a Target,
    device_id: &'a str,
    job_id: Option<String>,
    started_at_ms: i64,
}

impl Services {
    /// What a manage job holds: the target's device, the target itself (so two runs of one
    /// target never overlap, whoever starts them), and a quiesced application's members.
    /// The request is checked here, so a bad one is refused before a job is queued.
    pub async fn backup_claims(
        &self,
        name: &str,
        request: &ManageBackupsRequest,
    ) -> Result<JobClaims> {
        let target = self.backup_target(name).await?;
        check_request(&target, request)?;
        let device_id = self.target_device_id(&target).await?;
        let mut claims = match &target.spec.quiesce {
            Some(app) => self.application_claims(app).await?,
            None => JobClaims::default(),
        };
        if !device_id.is_empty() {
            claims.devices.push(device_id.clone());
        }
        claims.locks.push(JobLock {
            device_id,
            resource: format!("backup target {name}"),
        });
        Ok(claims)
    }

    /// The plan a request would take, checked (an in-place restore's diffs come from the
    /// host: the files are read from the snapshot and staged by the change engine).
    pub async fn backup_plan(
        &self,
        ctx: &Ctx,
        name: &str,
        request: &ManageBackupsRequest,
    ) -> Result<BackupPlan> {
        let target = self.backup_target(name).await?;
        let mut plan = self.plan_for(&target, request).await?;
        if request.action == BackupAction::Restore && request.in_place {
            let change = self.in_place_change(ctx, &target, request).await?;
            let planned = self.plan_change(ctx, change).await?;
            plan.files = planned.targets.into_iter().flat_map(|t| t.files).collect();
        }
        Ok(plan)
    }

    async fn plan_for(
        &self,
        target: &Target,
        request: &ManageBackupsRequest,
    ) -> Result<BackupPlan> {
        check_request(target, request)?;
        let device_id = self.target_device_id(target).await?;
        target
            .spec
            .repository
            .checked()
            .map_err(|e| Error::invalid(e.to_string()))?;
        let snapshot = request.snapshot.as_ref().map_or("newest", |s| s.as_str());
        let quiesce = target.spec.quiesce.clone();
        let steps = match request.action {
            BackupAction::Trigger => {
                let mut steps = Vec::new();
                if let Some(app) = &quiesce {
                    steps.push(format!("stop application {app} in dependency order"));
                }
                steps.push(format!("back up the {} source", source_kind(target)));
                let keep = target.spec.keep;
                steps.push(format!(
                    "forget all but {} daily, {} weekly, {} monthly snapshots, and prune",
                    keep.daily, keep.weekly, keep.monthly
                ));
                if let Some(app) = &quiesce {
                    steps.push(format!("start application {app} in dependency order"));
                }
                steps
            }
            BackupAction::Validate => vec![
                format!(
                    "check the repository, reading the next 1/{} of its data",
                    target.timing.check_groups
                ),
                format!(
                    "drill the {snapshot} snapshot: restore it into a throwaway place, \
                         compare it with its manifest, open its database, tear it down"
                ),
            ],
            BackupAction::Restore if request.in_place => vec![format!(
                "restore the {snapshot} snapshot's files in place as one configuration change"
            )],
            BackupAction::Restore => vec![format!(
                "restore the {snapshot} snapshot below {}",
                request
                    .into
                    .as_ref()
                    .map_or("a new directory in the host's first restore root", |p| p
                        .as_str())
            )],
        };
        Ok(BackupPlan {
            target: target.name.clone(),
            device_id,
            action: request.action,
            source: source_kind(target).into(),
            repository: repository_label(&target.spec.repository),
            snapshot: request.snapshot.as_ref().map(|s| s.as_str().to_string()),
            into: request.into.as_ref().map(|p| p.as_str().to_string()),
            quiesce: (request.action == BackupAction::Trigger)
                .then_some(quiesce)
                .flatten(),
            steps,
            files: Vec::new(),
        })
    }

    /// Carries out `request` (as a job: each host action is a step).
    pub async fn manage_backups(
        &self,
        ctx: &Ctx,
        name: &str,
        request: &ManageBackupsRequest,
    ) -> Result<BackupRun> {
        ctx.principal.require(Scope::Operate)?;
        let began = Instant::now();
        let target = self.backup_target(name).await?;
        if request.dry_run {
            let plan = self.backup_plan(ctx, name, request).await?;
            let mut run = BackupRun::new(&target, request.action, plan);
            run.outcome = Outcome::Planned;
            return Ok(run);
        }
        // The change engine stages an in-place restore itself; no separate plan is made.
        let plan = self.plan_for(&target, request).await?;
        let mut run = BackupRun::new(&target, request.action, plan);
        let device_id = run.plan.device_id.clone();
        let record = Record {
            target: &target,
            device_id: &device_id,
            job_id: ctx.job.as_ref().map(|j| j.id().to_string()),
            started_at_ms: self.now_ms(),
        };
        let total = run.plan.steps.len();
        ctx.progress(0, total).await;
        match request.action {
            BackupAction::Trigger => self.trigger(ctx, &record, &mut run).await?,
            BackupAction::Validate => self.validate(ctx, &record, request, &mut run).await?,
            BackupAction::Restore => self.restore(ctx, &record, request, &mut run).await?,
        }
        ctx.progress(total, total).await;
        run.duration_ms = began.elapsed().as_millis() as u64;
        Ok(run)
    }

    async fn trigger(&self, ctx: &Ctx, record: &Record<'_>, run: &mut BackupRun) -> Result<()> {
        let target = record.target;
        let spec = self.host_spec(&target.name, &target.spec)?;
        let quiesce = target.spec.quiesce.as_deref();
        if let Some(app) = quiesce {
            let stopped = self.app_step(ctx, app, AppAction::Stop).await;
            if let Err(problem) = stopped {
                run.fail(problem);
                // What did stop is started again.
                if let Err(problem) = self.app_step(ctx, app, AppAction::Start).await {
                    run.fail(problem);
                }
                return self.record_failure(record, "backup", run).await;
            }
        }
        let request = BackupRequest::Backup {
            target: spec,
            keep: Some(target.spec.keep),
        };
        let answer = ctx
            .step("backup", self.on_host(ctx, record, &request))
            .await;
        if let Some(app) = quiesce {
            if let Err(problem) = self.app_step(ctx, app, AppAction::Start).await {
                run.fail(problem);
            }
        }
        match answer {
            Ok(BackupAnswer::Backup(done)) => {
                let done = untrusted::clean_as(done)?;
                let row = record.row(self, "backup", true, Some(&done.summary.snapshot_id));
                let mut row = row.with_details(&done)?;
                row.snapshot_at_ms = Some(record.started_at_ms);
                self.store.record_backup_run(&row).await?;
                run.backup = Some(done);
                Ok(())
            }
            Ok(_) => Err(unexpected()),
            Err(error) => {
                self.failed(record, "backup", run, error.public_message())
                    .await
            }
        }
    }

    async fn validate(
        &self,
        ctx: &Ctx,
        record: &Record<'_>,
        request: &ManageBackupsRequest,
        run: &mut BackupRun,
    ) -> Result<()> {
        let target = record.target;
        let spec = self.host_spec(&target.name, &target.spec)?;
        let done = self.store.count_backup_runs(&target.name, "check").await?;
        let groups = target.timing.check_groups;
        let group = (done.rem_euclid(i64::from(groups)) + 1) as u32;
        let check = BackupRequest::Check {
            target: spec.clone(),
            group,
            groups,
        };
        match ctx.step("check", self.on_host(ctx, record, &check)).await {
            Ok(BackupAnswer::Check(verdict)) => {
                let verdict = untrusted::clean_as(verdict)?;
                if !verdict.ok {
                    run.fail(format!(
                        "the repository check found problems (data group {group}/{groups})"
                    ));
                }
                let row = record
                    .row(self, "check", verdict.ok, None)
                    .with_details(&verdict)?;
                self.store.record_backup_run(&row).await?;
                run.check = Some(verdict);
            }
            Ok(_) => return Err(unexpected()),
            Err(error) => {
                let problem = format!("the repository check: {}", error.public_message());
                self.failed(record, "check", run, problem).await?;
            }
        }
        ctx.progress(1, 2).await;
        let snapshot = match self.pick_snapshot(ctx, record, &spec, request).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let problem = format!("no snapshot to drill: {}", error.public_message());
                return self.failed(record, "drill", run, problem).await;
            }
        };
        let snapshot_at = snapshot.time_ms();
        let id = SnapshotId::new(&snapshot.id).map_err(|e| Error::Unavailable(e.to_string()))?;
        let drill = BackupRequest::Drill {
            target: spec,
            snapshot: id,
        };
        match ctx.step("drill", self.on_host(ctx, record, &drill)).await {
            Ok(BackupAnswer::Drill(report)) => {
                let report = untrusted::clean_as(report)?;
                if !report.passed {
                    run.fail(format!("the restore drill of {} failed", snapshot.short_id));
                }
                let mut row = record
                    .row(self, "drill", report.passed, Some(&snapshot.id))
                    .with_details(&report)?;
                row.snapshot_at_ms = snapshot_at;
                row.restore_ms = Some(report.restore_ms as i64);
                self.store.record_backup_run(&row).await?;
                run.verified = report.passed;
                run.drill = Some(report);
                Ok(())
            }
            Ok(_) => Err(unexpected()),
            Err(error) => {
                let problem = format!("the restore drill: {}", error.public_message());
                self.failed(record, "drill", run, problem).await
            }
        }
    }

    /// The snapshot asked for, or the target's newest, with its time.
    async fn pick_snapshot(
        &self,
        ctx: &Ctx,
        record: &Record<'_>,
        spec: &TargetSpec,
        request: &ManageBackupsRequest,
    ) -> Result<Snapshot> {
        let list = BackupRequest::Snapshots {
            target: spec.clone(),
        };
        let BackupAnswer::Snapshots { snapshots } = self.on_host(ctx, record, &list).await? else {
            return Err(unexpected());
        };
        let wanted = request.snapshot.as_ref().filter(|s| s.as_str() != "latest");
        let found = match wanted {
            Some(id) => snapshots
                .into_iter()
                .find(|s| s.id.starts_with(id.as_str()) || s.short_id == id.as_str()),
            None => snapshots.into_iter().max_by_key(|s| s.time_ms()),
        };
        found.ok_or_else(|| match wanted {
            Some(id) => Error::NotFound(format!(
                "target {} has no snapshot {}",
                record.target.name,
                id.as_str()
            )),
            None => Error::NotFound(format!("target {} has no snapshot yet", record.target.name)),
        })
    }

    async fn restore(
        &self,
        ctx: &Ctx,
        record: &Record<'_>,
        request: &ManageBackupsRequest,
        run: &mut BackupRun,
    ) -> Result<()> {
        let target = record.target;
        if request.in_place {
            let change = self.in_place_change(ctx, target, request).await?;
            let view = ctx
                .step("restore in place", self.deploy_change(ctx, change))
                .await?;
            run.change_id = Some(view.id.clone());
            let applied = view.state.is_applied();
            if !applied {
                let reason = view
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", view.state));
                run.fail(format!("the in-place restore did not apply: {reason}"));
            }
            let details = serde_json::json!({"change_id": view.id, "state": view.state});
            let mut row = record.row(
                self,
                "restore",
                applied,
                request.snapshot.as_ref().map(|s| s.as_str()),
            );
            row.details = details.to_string();
            return self.store.record_backup_run(&row).await.map_err(Into::into);
        }
        let into = request.into.clone();
        let snapshot = request.snapshot.clone().unwrap_or_else(SnapshotId::latest);
        let restore = BackupRequest::Restore {
            target: self.host_spec(&target.name, &target.spec)?,
            snapshot,
            into,
        };
        match ctx
            .step("restore", self.on_host(ctx, record, &restore))
            .await
        {
            Ok(BackupAnswer::Restore(done)) => {
                let done = untrusted::clean_as(done)?;
                let mut row = record
                    .row(self, "restore", true, Some(&done.snapshot))
                    .with_details(&done)?;
                row.restore_ms = Some(done.restore_ms as i64);
                self.store.record_backup_run(&row).await?;
                run.restore = Some(done);
                Ok(())
            }
            Ok(_) => Err(unexpected()),
            Err(error) => Err(error),
        }
    }

    /// The snapshot's files as one change set for the target's device.
    async fn in_place_change(
        &self,
        ctx: &Ctx,
        target: &Target,
        request: &ManageBackupsRequest,
    ) -> Result<ChangeRequest> {
        let device_id = self.target_device_id(target).await?;
        let snapshot = request.snapshot.clone().unwrap_or_else(SnapshotId::latest);
        let dump = BackupRequest::Dump {
            target: self.host_spec(&target.name, &target.spec)?,
            snapshot,
            files: Vec::new(),
        };
        let BackupAnswer::Dump { files } = self.on_target(ctx, target, &dump).await? else {
            return Err(unexpected());
        };
        if files.is_empty() {
            return Err(Error::NotFound("the snapshot holds no files".into()));
        }
        let files = files
            .into_iter()
            .map(|f| {
                Ok(FileChange {
                    path: ManagedPath::new(&f.path)
                        .map_err(|e| Error::Unavailable(e.to_string()))?,
                    content: f.content,
                    mode: None,
                    owner: None,
                    group: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ChangeRequest {
            devices: vec![device_id],
            change: ChangeSet {
                files,
                validators: Vec::new(),
                actions: Vec::new(),
                health_checks: Vec::new(),
            },
            options: DeployOptions::default(),
        })
    }

    /// The target's snapshots, asked of its host now.
    pub(super) async fn target_snapshots(
        &self,
        ctx: &Ctx,
        target: &Target,
    ) -> Result<Vec<Snapshot>> {
        let list = BackupRequest::Snapshots {
            target: self.host_spec(&target.name, &target.spec)?,
        };
        match self.on_target(ctx, target, &list).await? {
            BackupAnswer::Snapshots { snapshots } => Ok(snapshots),
            _ => Err(unexpected()),
        }
    }

    /// One request on the host that has the target's data.
    async fn on_host(
        &self,
        ctx: &Ctx,
        record: &Record<'_>,
        request: &BackupRequest,
    ) -> Result<BackupAnswer> {
        self.on_target(ctx, record.target, request).await
    }

    /// The application stopped or started in dependency order; why not, when it was not.
    async fn app_step(
        &self,
        ctx: &Ctx,
        app: &str,
        action: AppAction,
    ) -> std::result::Result<(), String> {
        let request = ManageRequest {
            action,
            dry_run: false,
            timeout_seconds: None,
            settle_delay_ms: None,
            grace_seconds: None,
            restore_on_failure: false,
        };
        let verb = if action == AppAction::Stop {
            "stop"
        } else {
            "start"
        };
        match self.manage_application(ctx, app, &request).await {
            Ok(run) if run.outcome != AppOutcome::Failed => Ok(()),
            Ok(run) => Err(format!(
                "application {app} did not {verb}: {}",
                run.failed.map_or("a member failed".into(), |f| format!(
                    "{}: {}",
                    f.member, f.reason
                ))
            )),
            Err(error) => Err(format!(
                "application {app} did not {verb}: {}",
                error.public_message()
            )),
        }
    }

    /// The run failed at `kind` for `problem`: said in the answer and recorded.
    async fn failed(
        &self,
        record: &Record<'_>,
        kind: &str,
        run: &mut BackupRun,
        problem: String,
    ) -> Result<()> {
        run.fail(problem);
        self.record_failure(record, kind, run).await
    }

    async fn record_failure(&self, record: &Record<'_>, kind: &str, run: &BackupRun) -> Result<()> {
        let mut row = record.row(self, kind, false, None);
        row.error = run.problems.last().cloned();
        self.store.record_backup_run(&row).await?;
        Ok(())
    }
}

impl Record<'_> {
    fn row(
        &self,
        services: &Services,
        kind: &str,
        passed: bool,
        snapshot: Option<&str>,
    ) -> BackupRunRow {
        BackupRunRow {
            id: uuid::Uuid::new_v4().simple().to_string(),
            target: self.target.name.clone(),
            kind: kind.into(),
            device_id: self.device_id.to_string(),
            job_id: self.job_id.clone(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: services.now_ms(),
            passed,
            snapshot: snapshot.map(str::to_string),
            snapshot_at_ms: None,
            restore_ms: None,
            details: "{}".into(),
            error: None,
        }
    }
}

trait WithDetails: Sized {
    fn with_details(self, details: &impl Serialize) -> Result<Self>;
}

impl WithDetails for BackupRunRow {
    fn with_details(mut self, details: &impl Serialize) -> Result<Self> {
        self.details = serde_json::to_string(details)
            .map_err(|e| Error::Internal(format!("encoding a backup run: {e}")))?;
        Ok(self)
    }
}

fn check_request(target: &Target, request: &ManageBackupsRequest) -> Result<()> {
    let restore = request.action == BackupAction::Restore;
    if !restore && (request.into.is_some() || request.in_place) {
        return Err(Error::invalid(
            "`into` and `in_place` are for action restore",
        ));
    }
    if request.action == BackupAction::Trigger && request.snapshot.is_some() {
        return Err(Error::invalid(
            "a backup makes a snapshot: `snapshot` is for validate and restore",
        ));
    }
    if request.in_place && request.into.is_some() {
        return Err(Error::invalid(
            "a restore goes to a new directory (`into`, or one made in the host's first \
             restore root) or in place (`in_place: true`), not both",
        ));
    }
    let paths = matches!(
        target.spec.source,
        TargetSource::Host(infrastructor_hostops::backup::Source::Paths { .. })
    );
    if request.in_place && !paths {
        return Err(Error::invalid(
            "only a paths target restores in place (configuration files); restore the others to a new directory",
        ));
    }
    Ok(())
}

fn source_kind(target: &Target) -> &'static str {
    use infrastructor_hostops::backup::Source;
    match &target.spec.source {
        TargetSource::Controller(_) => "controller",
        TargetSource::Host(Source::Paths { .. }) => "paths",
        TargetSource::Host(Source::Volume { .. }) => "volume",
        TargetSource::Host(Source::Postgres(_)) => "postgres",
        TargetSource::Host(Source::Sqlite { .. }) => "sqlite",
    }
}

fn repository_label(repository: &infrastructor_hostops::restic::Repository) -> String {
    use infrastructor_hostops::restic::Repository;
    match repository {
        Repository::Local { path } => format!("local:{path}"),
        Repository::Sftp {
            user,
            host,
            port,
            path,
            ..
        } => format!("sftp:{user}@{host}:{port}{path}"),
        Repository::Rest { url } => format!("rest:{url}"),
    }
}

fn unexpected() -> Error {
    Error::Unavailable("the host answered another kind of backup answer".into())
}

/// The actions a schedule starts when they are due.
impl Services {
    /// Starts the jobs the targets' schedules call for: a backup when the last one is older
    /// than `backup_every`, a validation when the last is older than `validate_every` (and
    /// there is something to validate). A target's lock makes a second start a no-op, so
    /// this may run as often as it likes.
    pub(crate) async fn start_due_backups(&self, now: i64) -> Result<()> {
        for target in self.backup_targets().await? {
            let due = |every: Option<std::time::Duration>, last: Option<i64>| match every {
                Some(every) => last.is_none_or(|at| at + every.as_millis() as i64 <= now),
                None => false,
            };
            let last_of = |kind: &'static str| {
                let name = target.name.clone();
                async move {
                    let rows = self.store.backup_runs(&name, Some(kind), 1).await?;
                    Ok::<_, Error>(rows.first().map(|r| r.finished_at_ms))
                }
            };
            let last_backup = last_of("backup").await?;
            if due(target.timing.backup_every, last_backup) {
                self.start_scheduled(&target, BackupAction::Trigger).await;
            } else if last_backup.is_some()
                && due(target.timing.validate_every, last_of("drill").await?)
            {
                self.start_scheduled(&target, BackupAction::Validate).await;
            }
        }
        Ok(())
    }

    async fn start_scheduled(&self, target: &Target, action: BackupAction) {
        let ctx = Ctx::system("backup schedule");
        let started = async {
            let request = ManageBackupsRequest {
                action,
                snapshot: None,
                into: None,
                in_place: false,
                dry_run: false,
            };
            let claims = self.backup_claims(&target.name, &request).await?;
            let mut arguments = crate::operations::Arguments::new();
            arguments.insert("target".into(), target.name.clone().into());
            arguments.insert("action".into(), action.as_str().into());
            self.submit_job(&ctx, "schedule", "manage_backups", &arguments, claims)
                .await
        };
        match started.await {
            Ok(job) => {
                let (action, name) = (action.as_str(), &target.name);
                let job_id = &job.id;
                tracing::info!(backup_target = %name, action, %job_id, "scheduled work started");
                crate::jobs::runner::spawn(self.clone(), job.id);
            }
            // Already running (its lock is held): nothing to do.
            Err(Error::Conflict(_)) => {}
            Err(error) => {
                let name = &target.name;
                tracing::warn!(backup_target = %name, %error, "cannot start scheduled work")
            }
        }
    }
}
