//! Configuration changes across devices: plan (a dry run), deploy (prepare everywhere → commit
//! all at once or rolling → confirm once every target is healthy, otherwise roll back the
//! committed ones), confirm, status, history and a later rollback.
//!
//! Hosts with an agent run the change engine themselves (typed commands over their stream);
//! agentless hosts run the very same engine from the controller over SSH. Either way a target
//! answers with the engine's `PrepareReport` / `CommitReport`.
//!
//! - here: the requests and views, plan / confirm / rollback / reads, and the per-target
//!   steps every phase shares (prepare, abort, confirm, roll back, record);
//! - `deploy`: a deploy as it runs, phase by phase, as the steps of its job;
//! - `recovery`: finishing what was interrupted, from what the hosts say.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use infrastructor_hostops::change::health::HealthOutcome;
use infrastructor_hostops::change::{
    ChangeSet, CommitOptions, CommitReport, FileDiff, PrepareReport, TxnState, ValidatorOutcome,
};
use serde::{Deserialize, Serialize};

use super::redact::{redact_as, Clearance};
use super::untrusted::{self, Lines};
use super::{now_ms, rfc3339, Services};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::domain::{ChangeState, TargetState};
use crate::error::{Error, Result};
use crate::fleet::{ChangeStep, Host, Link};
use crate::services::jobs::JobClaims;
use crate::store::{ChangeRow, ChangeTargetRow, JobLock, TargetUpdate};
use infrastructor_hostops::names::TxnId;

/// Most devices one change may target.
const MAX_TARGETS: usize = 500;
/// Targets prepared (or confirmed, rolled back) at once.
const FAN_OUT: usize = 16;
/// How long past its confirmation deadline a waiting change is asked about: hosts report
/// their own deadline rollbacks, and this only catches reports that were lost.
const RECONCILE_GRACE_MS: i64 = 30_000;
/// How long a resumed job waits for a host's agent to reconnect before acting on what was
/// recorded.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// Device IDs or names.
    #[schemars(
        length(min = 1, max = 500),
        inner(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"))
    )]
    pub devices: Vec<String>,
    pub change: ChangeSet,
    #[serde(default)]
    pub options: DeployOptions,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeployOptions {
    /// Targets committed at a time (rolling); absent: all at once.
    #[schemars(range(min = 1))]
    pub max_parallel: Option<usize>,
    /// Each target rolls back on its own unless confirmed within this.
    #[schemars(range(min = 5, max = 86_400))]
    pub confirm_timeout_seconds: u32,
    /// How long a target's health checks may take to pass after its actions.
    #[schemars(range(min = 1, max = 3600))]
    pub health_timeout_seconds: u32,
    /// Confirm as soon as every target is healthy. `false` leaves the change awaiting
    /// `POST /changes/{id}/confirm` — and the targets roll back by themselves at the deadline.
    pub auto_confirm: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            max_parallel: None,
            confirm_timeout_seconds: 120,
            health_timeout_seconds: 30,
            auto_confirm: true,
        }
    }
}

impl DeployOptions {
    pub fn validate(&self) -> Result<()> {
        if self.max_parallel == Some(0) {
            return Err(Error::invalid("max_parallel must be at least 1"));
        }
        if !(5..=86_400).contains(&self.confirm_timeout_seconds) {
            return Err(Error::invalid("confirm_timeout_seconds must be 5..=86400"));
        }
        if !(1..=3600).contains(&self.health_timeout_seconds) {
            return Err(Error::invalid("health_timeout_seconds must be 1..=3600"));
        }
        Ok(())
    }

    fn commit_options(&self) -> CommitOptions {
        CommitOptions {
            confirm_timeout: Duration::from_secs(u64::from(self.confirm_timeout_seconds)),
            health_timeout: Duration::from_secs(u64::from(self.health_timeout_seconds)),
        }
    }
}

/// A host changed a transaction on its own (rolled back at the confirmation deadline, or while
/// recovering after a restart).
#[derive(Clone, Debug, PartialEq)]
pub struct TxnEvent {
    pub txn_id: String,
    pub state: TxnState,
    /// Untrusted text from the host.
    pub reason: String,
}

/// A change transaction with every device's part in it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ChangeView {
    pub id: String,
    /// `plan` or `deploy`.
    pub kind: String,
    pub state: ChangeState,
    pub requested_by: String,
    pub request_id: String,
    pub created_at: String,
    pub updated_at: String,
    pub error: Option<String>,
    pub change: serde_json::Value,
    pub options: serde_json::Value,
    pub targets: Vec<TargetView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct TargetView {
    pub device_id: String,
    pub state: TargetState,
    pub error: Option<String>,
    pub files: Vec<FileDiff>,
    pub validators: Vec<ValidatorOutcome>,
    pub health: Vec<HealthOutcome>,
    pub updated_at: String,
}

/// One line of change history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ChangeSummary {
    pub id: String,
    pub kind: String,
    pub state: ChangeState,
    pub requested_by: String,
    pub created_at: String,
    pub error: Option<String>,
}

/// A device taking part in a change.
type Target = Arc<dyn Host>;

mod deploy;
mod recovery;

impl Services {
    /// Dry run: every target stages the files, diffs them and runs the validators; nothing
    /// live changes. The plan is stored like any transaction.
    pub async fn plan_change(&self, ctx: &Ctx, request: ChangeRequest) -> Result<ChangeView> {
        ctx.principal.require(Scope::Operate)?;
        let (id, targets) = self.begin_change(ctx, &request, "plan").await?;
        let ready = self
            .prepare_all(ctx, &id, &targets, &request.change)
            .await?;
        self.abort_all(ctx, &id, &targets, TargetState::Planned)
            .await;
        let state = if ready {
            ChangeState::Planned
        } else {
            ChangeState::Invalid
        };
        self.move_change(&id, state, None).await?;
        self.change_view(ctx, &id).await
    }

    /// Keeps a deployed change that was left awaiting confirmation.
    pub async fn confirm_change(&self, ctx: &Ctx, id: &str) -> Result<ChangeView> {
        ctx.principal.require(Scope::Operate)?;
        let (row, _) = self.require_change(id).await?;
        if row.state != ChangeState::AwaitingConfirmation {
            return Err(Error::Conflict(format!(
                "change {id} is {}; only a change awaiting confirmation can be confirmed",
                row.state.as_str()
            )));
        }
        if !self
            .store
            .set_change_state(id, ChangeState::Confirming, None, now_ms())
            .await?
        {
            return Err(Error::Conflict(format!(
                "change {id} moved on meanwhile; only a change awaiting confirmation can be \
                 confirmed"
            )));
        }
        let targets = self.targets_of(id).await?;
        self.confirm_targets(ctx, id, &targets).await?;
        self.change_view(ctx, id).await
    }

    /// Rolls a deployed change back on every target where it is applied.
    pub async fn rollback_change(&self, ctx: &Ctx, id: &str) -> Result<ChangeView> {
        ctx.principal.require(Scope::Operate)?;
        let (row, rows) = self.require_change(id).await?;
        if !row.state.is_applied() {
            return Err(Error::Conflict(format!(
                "change {id} is {}; only an applied change can be rolled back",
                row.state.as_str()
            )));
        }
        let applied: Vec<String> = rows
            .iter()
            .filter(|t| t.state.may_be_applied())
            .map(|t| t.device_id.clone())
            .collect();
        let targets = self.resolve_targets(&applied).await?;
        let total = targets.len();
        let failed = ctx
            .step("rollback", async {
                let failed = self
                    .roll_back_targets(ctx, id, &targets, "rollback requested")
                    .await;
                ctx.progress(total, total).await;
                Ok(failed)
            })
            .await?;
        let state = if failed.is_empty() {
            ChangeState::RolledBack
        } else {
            ChangeState::RollbackFailed
        };
        let error = (!failed.is_empty()).then(|| failed.join("; "));
        self.move_change(id, state, error.as_deref()).await?;
        self.change_view(ctx, id).await
    }

    /// What a deploy job will hold while it is live: on each device, every file it writes
    /// and every unit or container it restarts.
    pub async fn deploy_claims(&self, request: &ChangeRequest) -> Result<JobClaims> {
        request.options.validate()?;
        check_device_count(request)?;
        let mut devices = Vec::with_capacity(request.devices.len());
        for device in &request.devices {
            devices.push(self.require_device(device).await?.id);
        }
        Ok(claims_on(check_listed_once(devices)?, &request.change))
    }

    /// What a rollback job holds: the change's devices and resources.
    pub async fn rollback_claims(&self, id: &str) -> Result<JobClaims> {
        let (row, targets) = self.require_change(id).await?;
        let set: ChangeSet = serde_json::from_str(&row.change_set)
            .map_err(|e| Error::Internal(format!("stored change set: {e}")))?;
        let devices = targets.into_iter().map(|t| t.device_id).collect();
        Ok(claims_on(devices, &set))
    }

    pub async fn get_change(&self, ctx: &Ctx, id: &str) -> Result<ChangeView> {
        ctx.principal.require(Scope::Read)?;
        self.require_change(id).await?;
        self.change_view(ctx, id).await
    }

    /// Newest first; `device` narrows to changes that targeted it.
    pub async fn list_changes(
        &self,
        ctx: &Ctx,
        device: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<ChangeSummary>> {
        ctx.principal.require(Scope::Read)?;
        let device_id = self.device_filter(device).await?;
        let limit = super::validate::list_limit(limit)?;
        let rows = self.store.changes(device_id.as_deref(), limit).await?;
        Ok(rows
            .into_iter()
            .map(|row| ChangeSummary {
                id: row.id,
                kind: row.kind,
                state: row.state,
                requested_by: row.requested_by,
                created_at: rfc3339(row.created_at_ms),
                error: row.error,
            })
            .collect())
    }

    async fn begin_change(
        &self,
        ctx: &Ctx,
        request: &ChangeRequest,
        kind: &str,
    ) -> Result<(String, Vec<Target>)> {
        check_device_count(request)?;
        let targets = self.resolve_targets(&request.devices).await?;
        let ids: Vec<String> = targets.iter().map(|t| t.device_id().to_string()).collect();
        check_listed_once(ids)?;
        // As a job, the change is the job: one ID for the job, the change and every host's
        // transaction, so a restarted controller finds all three from the job alone.
        let id = match &ctx.job {
            Some(job) => job.id().to_string(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let now = now_ms();
        let row = ChangeRow {
            id: id.clone(),
            kind: kind.to_string(),
            state: ChangeState::Preparing,
            requested_by: ctx.principal.name.clone(),
            request_id: ctx.request_id.clone(),
            change_set: serde_json::to_string(&request.change)
                .map_err(|e| Error::Internal(e.to_string()))?,
            options: serde_json::to_string(&request.options)
                .map_err(|e| Error::Internal(e.to_string()))?,
            error: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let device_ids: Vec<String> = targets.iter().map(|t| t.device_id().to_string()).collect();
        self.store.insert_change(&row, &device_ids).await?;
        tracing::info!(change_id = %id,
            kind,
            devices = device_ids.len(),
            requested_by = %ctx.principal.name,
            "configuration change started");
        Ok((id, targets))
    }

    async fn resolve_targets(&self, devices: &[String]) -> Result<Vec<Target>> {
        let mut targets = Vec::with_capacity(devices.len());
        for device in devices {
            targets.push(self.host(&self.require_device(device).await?));
        }
        Ok(targets)
    }

    async fn targets_of(&self, id: &str) -> Result<Vec<Target>> {
        let (_, rows) = self.require_change(id).await?;
        let devices: Vec<String> = rows.into_iter().map(|t| t.device_id).collect();
        self.resolve_targets(&devices).await
    }

    /// Prepares everywhere (bounded fan-out); true when every target is ready to commit.
    async fn prepare_all(
        &self,
        ctx: &Ctx,
        id: &str,
        targets: &[Target],
        set: &ChangeSet,
    ) -> Result<bool> {
        let mut ready = true;
        let mut done = 0;
        for chunk in targets.chunks(FAN_OUT) {
            let results =
                join_all(chunk.iter().map(|t| self.target_prepare(ctx, t, id, set))).await;
            for (target, result) in chunk.iter().zip(results) {
                match result {
                    Ok(report) => {
                        let json = serde_json::to_string(&report)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        ready &= report.state == TxnState::Prepared;
                        let update = TargetUpdate {
                            state: report.state.into(),
                            prepare_report: Some(&json),
                            error: report.reason.as_deref(),
                            ..Default::default()
                        };
                        self.update_target(id, target.device_id(), update).await?;
                    }
                    Err(error) => {
                        ready = false;
                        self.record_target(id, target.device_id(), TargetState::Failed, &error)
                            .await?;
                    }
                }
            }
            done += chunk.len();
            ctx.progress(done, targets.len()).await;
        }
        Ok(ready)
    }

    /// Drops the transaction wherever it is only prepared (or may be: a prepare whose
    /// answer was lost); those targets end as `done_state` (`planned` after a dry run,
    /// `aborted` otherwise). A host that never had it is aborted too.
    async fn abort_all(&self, ctx: &Ctx, id: &str, targets: &[Target], done_state: TargetState) {
        let Ok(Some((_, rows))) = self.store.change(id).await else {
            return;
        };
        let prepared: Vec<&Target> = targets
            .iter()
            .filter(|t| {
                rows.iter().any(|r| {
                    r.device_id == t.device_id()
                        && matches!(r.state, TargetState::Prepared | TargetState::Failed)
                })
            })
            .collect();
        let results = join_all(
            prepared
                .iter()
                .map(|t| self.target_step(ctx, t, id, ChangeStep::Abort)),
        )
        .await;
        for (target, result) in prepared.into_iter().zip(results) {
            let (state, error) = match &result {
                Ok(report) if report.state == TxnState::Aborted => (done_state, None),
                // Applied after all (an answer that was lost): the caller's rollback covers it.
                Ok(report) => (report.state.into(), None),
                Err(error) if error.kind() == crate::error::ErrorKind::NotFound => {
                    (done_state, None)
                }
                Err(error) => (TargetState::Prepared, Some(error.public_message())),
            };
            let update = TargetUpdate {
                state,
                error: error.as_deref(),
                ..Default::default()
            };
            if let Err(error) = self.update_target(id, target.device_id(), update).await {
                tracing::error!(change_id = id, %error, "cannot record an abort");
            }
        }
    }

    /// Confirms every target. All or nothing: a target that cannot be confirmed rolls back
    /// by its deadline, so the others are rolled back now.
    async fn confirm_targets(&self, ctx: &Ctx, id: &str, targets: &[Target]) -> Result<()> {
        let results = join_all(
            targets
                .iter()
                .map(|t| self.target_step(ctx, t, id, ChangeStep::Confirm)),
        )
        .await;
        let mut failure = None;
        for (target, result) in targets.iter().zip(results) {
            match result {
                Ok(report) => self.record_commit(id, target, &report, None).await?,
                Err(error) => {
                    failure = Some(format!(
                        "confirming on {}: {}",
                        target.device_id(),
                        error.public_message()
                    ));
                    self.record_target(id, target.device_id(), TargetState::Failed, &error)
                        .await?;
                }
            }
        }
        let Some(failure) = failure else {
            self.move_change(id, ChangeState::Committed, None).await?;
            return Ok(());
        };
        let failed = self
            .roll_back_targets(ctx, id, targets, "another target could not be confirmed")
            .await;
        if failed.is_empty() {
            self.move_change(id, ChangeState::RolledBack, Some(&failure))
                .await?;
        } else {
            let error = format!("{failure}; rollback failed on {}", failed.join("; "));
            self.move_change(id, ChangeState::RollbackFailed, Some(&error))
                .await?;
        }
        Ok(())
    }

    /// Rolls back each target; returns the failures (a target already rolled back, or never
    /// committed, is fine: the engine answers `rolled_back` or `aborted`).
    async fn roll_back_targets(
        &self,
        ctx: &Ctx,
        id: &str,
        targets: &[Target],
        reason: &str,
    ) -> Vec<String> {
        let results = join_all(
            targets
                .iter()
                .map(|t| self.target_step(ctx, t, id, ChangeStep::Rollback(reason))),
        )
        .await;
        let mut failures = Vec::new();
        for (target, result) in targets.iter().zip(results) {
            match result {
                Ok(report) => {
                    let _ = self
                        .record_commit(id, target, &report, report.reason.as_deref())
                        .await;
                }
                // A target never committed answers `aborted`: its prepared transaction is
                // dropped, nothing was undone. One that never had it has nothing to undo.
                Err(error) if error.kind() == crate::error::ErrorKind::NotFound => {
                    let reason = Some("the transaction never reached this host");
                    let _ = self
                        .set_target(id, target.device_id(), TargetState::Aborted, reason)
                        .await;
                }
                Err(error) => {
                    failures.push(format!(
                        "{}: {}",
                        target.device_id(),
                        error.public_message()
                    ));
                    let _ = self
                        .record_target(id, target.device_id(), TargetState::RollbackFailed, &error)
                        .await;
                }
            }
        }
        failures
    }

    async fn target_prepare(
        &self,
        ctx: &Ctx,
        target: &Target,
        id: &str,
        set: &ChangeSet,
    ) -> Result<PrepareReport> {
        let report = target.prepare_change(ctx, &txn_id(id)?, set).await?;
        untrusted::clean_as(report)
    }

    async fn target_commit(
        &self,
        ctx: &Ctx,
        target: &Target,
        id: &str,
        options: CommitOptions,
    ) -> Result<CommitReport> {
        let report = target.commit_change(ctx, &txn_id(id)?, options).await?;
        untrusted::clean_as(report)
    }

    async fn target_step(
        &self,
        ctx: &Ctx,
        target: &Target,
        id: &str,
        step: ChangeStep<'_>,
    ) -> Result<CommitReport> {
        let report = target.change_step(ctx, &txn_id(id)?, step).await?;
        untrusted::clean_as(report)
    }

    async fn record_commit(
        &self,
        id: &str,
        target: &Target,
        report: &CommitReport,
        error: Option<&str>,
    ) -> Result<()> {
        let json = serde_json::to_string(report).map_err(|e| Error::Internal(e.to_string()))?;
        let update = TargetUpdate {
            state: report.state.into(),
            commit_report: Some(&json),
            error,
            ..Default::default()
        };
        self.update_target(id, target.device_id(), update).await
    }

    async fn record_target(
        &self,
        id: &str,
        device_id: &str,
        state: TargetState,
        error: &Error,
    ) -> Result<()> {
        let message = error.public_message();
        self.set_target(id, device_id, state, Some(&message)).await
    }

    async fn set_target(
        &self,
        id: &str,
        device_id: &str,
        state: TargetState,
        error: Option<&str>,
    ) -> Result<()> {
        let update = TargetUpdate {
            state,
            error,
            ..Default::default()
        };
        self.update_target(id, device_id, update).await
    }

    /// Moves a target along [`TargetState::predecessors`]; a target that already moved on
    /// (a host's own rollback, a final state) keeps its state.
    async fn update_target(
        &self,
        id: &str,
        device_id: &str,
        update: TargetUpdate<'_>,
    ) -> Result<()> {
        let state = update.state;
        if !self
            .store
            .update_change_target(id, device_id, update, now_ms())
            .await?
        {
            tracing::info!(
                change_id = id,
                device_id,
                to = state.as_str(),
                "target had moved on; kept"
            );
        }
        Ok(())
    }

    async fn failed_targets_summary(&self, id: &str) -> Result<String> {
        let (_, rows) = self.require_change(id).await?;
        Ok(rows
            .iter()
            .filter(|t| {
                matches!(t.state, TargetState::Failed | TargetState::Aborted) && t.error.is_some()
            })
            .map(|t| {
                format!(
                    "{}: {}",
                    t.device_id,
                    t.error.as_deref().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// Moves change `id` to `state` along [`ChangeState::predecessors`]. A change someone
    /// else moved first (an agent's deadline rollback, a concurrent decision) keeps its state.
    async fn move_change(&self, id: &str, state: ChangeState, error: Option<&str>) -> Result<()> {
        if !self
            .store
            .set_change_state(id, state, error, now_ms())
            .await?
        {
            tracing::warn!(
                change_id = id,
                to = state.as_str(),
                "change was moved concurrently; kept"
            );
        }
        Ok(())
    }

    async fn require_change(&self, id: &str) -> Result<(ChangeRow, Vec<ChangeTargetRow>)> {
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::invalid("a change ID is 1-64 letters and digits"));
        }
        self.store
            .change(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("change {id} not found")))
    }

    /// The change as the caller may see it: file contents, diffs and validator output need
    /// `operate` (see [`super::redact`]).
    async fn change_view(&self, ctx: &Ctx, id: &str) -> Result<ChangeView> {
        let (row, targets) = self.require_change(id).await?;
        let json = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        let view = ChangeView {
            change: json(&row.change_set),
            options: json(&row.options),
            targets: targets.into_iter().map(target_view).collect(),
            id: row.id,
            kind: row.kind,
            state: row.state,
            requested_by: row.requested_by,
            request_id: row.request_id,
            created_at: rfc3339(row.created_at_ms),
            updated_at: rfc3339(row.updated_at_ms),
            error: row.error,
        };
        redact_as(&view, Clearance::of(ctx.principal.scope))
    }
}

fn check_device_count(request: &ChangeRequest) -> Result<()> {
    if request.devices.is_empty() || request.devices.len() > MAX_TARGETS {
        return Err(Error::invalid(format!(
            "devices must list 1 to {MAX_TARGETS} devices"
        )));
    }
    Ok(())
}

/// Device IDs as resolved, refused when one device is named twice (by ID and by name).
fn check_listed_once(ids: Vec<String>) -> Result<Vec<String>> {
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(Error::invalid("a device is listed twice"));
    }
    Ok(ids)
}

fn claims_on(devices: Vec<String>, set: &ChangeSet) -> JobClaims {
    use infrastructor_hostops::change::spec::Action;
    let mut resources: Vec<String> = set
        .files
        .iter()
        .map(|file| format!("file {}", file.path))
        .collect();
    resources.extend(set.actions.iter().map(|action| match action {
        Action::ReloadUnit(unit) | Action::RestartUnit(unit) => format!("unit {unit}"),
        Action::RestartContainer(container) => format!("container {container}"),
    }));
    let locks = devices
        .iter()
        .flat_map(|device| {
            resources.iter().map(|resource| JobLock {
                device_id: device.clone(),
                resource: resource.clone(),
            })
        })
        .collect();
    JobClaims { devices, locks }
}

/// A change's ID is its transaction's ID on every host.
fn txn_id(change_id: &str) -> Result<TxnId> {
    TxnId::new(change_id).map_err(|e| Error::Internal(e.to_string()))
}

fn target_view(row: ChangeTargetRow) -> TargetView {
    let prepared: Option<PrepareReport> = row
        .prepare_report
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok());
    let committed: Option<CommitReport> = row
        .commit_report
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok());
    let (files, validators) = prepared
        .map(|p| (p.files, p.validators))
        .unwrap_or_default();
    TargetView {
        device_id: row.device_id,
        state: row.state,
        error: row.error,
        files,
        validators,
        health: committed.map(|c| c.health).unwrap_or_default(),
        updated_at: rfc3339(row.updated_at_ms),
    }
}
