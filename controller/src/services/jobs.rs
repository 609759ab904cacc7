//! Jobs as callers see them: submitting one (the pipeline does, for a long-running
//! operation), listing, reading with steps and result, waiting for the end, reading its event
//! stream, and cancelling. The runner that does the work is [`crate::jobs::runner`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::redact::{redact, redact_as, Clearance};
use super::{now_ms, rfc3339, Services};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::domain::{JobState, StepState};
use crate::error::{Error, ErrorKind, Result};
use crate::operations::Arguments;
use crate::store::{JobEventRow, JobLock, JobRow, JobStepRow};

/// Longest `?wait=` (and MCP wait) a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How often a waiter looks at the store when no local wake-up came (the job may run on
/// another replica).
const POLL: Duration = Duration::from_millis(500);

/// What a job will work on, declared before it is queued: the devices (for the device view)
/// and the resources it changes on them (locked while it is live).
#[derive(Clone, Debug, Default)]
pub struct JobClaims {
    pub devices: Vec<String>,
    pub locks: Vec<JobLock>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct JobProgress {
    pub done: i64,
    pub total: i64,
}

/// A job with its steps and, once it ended, its result or error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct JobView {
    pub id: String,
    /// The operation it runs, e.g. `deploy_change`.
    pub operation: String,
    pub state: JobState,
    pub requested_by: String,
    pub request_id: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    pub progress: JobProgress,
    pub cancel_requested: bool,
    /// Runs so far: more than 1 after a controller crash or takeover.
    pub attempts: i64,
    /// The operation's arguments (file contents withheld from `read` callers).
    pub arguments: Value,
    pub steps: Vec<StepView>,
    /// The operation's answer, once it ended with one (a deploy's change, also when it was
    /// rolled back).
    pub result: Option<Value>,
    pub error: Option<String>,
    /// Where its event stream is (Server-Sent Events).
    pub events: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct StepView {
    pub seq: i64,
    pub name: String,
    pub state: StepState,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

/// One line of a job listing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct JobSummary {
    pub id: String,
    pub operation: String,
    pub state: JobState,
    pub requested_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub progress: JobProgress,
    pub error: Option<String>,
}

/// One event of a job's stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct JobEvent {
    /// Numbered from 1 per job; `Last-Event-ID` resumes after it.
    pub seq: i64,
    pub at: String,
    /// `state`, `step_started`, `step_finished`, `progress` or `log`.
    pub kind: String,
    pub data: Value,
}

impl Services {
    /// Queues a job for operation `operation` with the caller's (already checked)
    /// arguments, owned by this replica. Refused with a conflict naming the holder when
    /// another live job holds one of its locks.
    pub async fn submit_job(
        &self,
        ctx: &Ctx,
        surface: &str,
        operation: &str,
        arguments: &Arguments,
        claims: JobClaims,
    ) -> Result<JobView> {
        let now = now_ms();
        let principal = &ctx.principal;
        let row = JobRow {
            id: uuid::Uuid::new_v4().simple().to_string(),
            operation: operation.to_string(),
            state: JobState::Queued,
            surface: surface.to_string(),
            requested_by: principal.id.clone(),
            requested_by_name: principal.name.clone(),
            requested_scope: principal.scope.as_str().to_string(),
            requested_owner: principal.owner.clone(),
            request_id: ctx.request_id.clone(),
            arguments: Value::Object(arguments.clone()).to_string(),
            result: None,
            error: None,
            error_kind: None,
            progress_done: 0,
            progress_total: 0,
            cancel_requested_at_ms: None,
            owner: Some(self.jobs.replica.clone()),
            lease_expires_ms: Some(self.jobs.lease_until(now)),
            attempts: 0,
            created_at_ms: now,
            started_at_ms: None,
            finished_at_ms: None,
            updated_at_ms: now,
        };
        let mut devices = claims.devices;
        devices.sort_unstable();
        devices.dedup();
        let mut locks = claims.locks;
        locks.sort_unstable();
        locks.dedup();
        self.store.insert_job(&row, &devices, &locks).await?;
        tracing::info!(job_id = %row.id, operation, requested_by = %principal.name, "job queued");
        self.job_view(ctx, &row.id).await
    }

    pub async fn get_job(&self, ctx: &Ctx, id: &str) -> Result<JobView> {
        ctx.principal.require(Scope::Read)?;
        self.job_view(ctx, id).await
    }

    /// Newest first; narrowed to the jobs working on `device`, or in `state`.
    pub async fn list_jobs(
        &self,
        ctx: &Ctx,
        device: Option<&str>,
        state: Option<JobState>,
        limit: Option<i64>,
    ) -> Result<Vec<JobSummary>> {
        ctx.principal.require(Scope::Read)?;
        let device_id = self.device_filter(device).await?;
        let limit = super::validate::list_limit(limit)?;
        let rows = self.store.jobs(device_id.as_deref(), state, limit).await?;
        Ok(rows.into_iter().map(summary).collect())
    }

    /// Asks the job's owner to cancel it. The work stops at its next safe point and undoes
    /// what it must (a deploy rolls back what it committed); a queued job never starts.
    pub async fn cancel_job(&self, ctx: &Ctx, id: &str) -> Result<JobView> {
        ctx.principal.require(Scope::Operate)?;
        let row = self.require_job(id).await?;
        if row.state.is_final() {
            return Err(Error::Conflict(format!(
                "job {id} is {}; there is nothing left to cancel",
                row.state.as_str()
            )));
        }
        if !self.store.request_job_cancel(id, now_ms()).await? {
            return Err(Error::Conflict(format!(
                "job {id} ended meanwhile; there is nothing left to cancel"
            )));
        }
        // The owner's heartbeat sees the request within a third of the lease if it runs
        // elsewhere.
        self.jobs.cancel_local(id);
        tracing::info!(job_id = id, by = %ctx.principal.name, "job cancel requested");
        self.job_view(ctx, id).await
    }

    /// Waits up to `wait` for job `id` to end; the job as it is then.
    pub async fn wait_for_job(&self, id: &str, wait: Duration) -> Result<JobRow> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let mut changed = self.jobs.subscribe();
        loop {
            let row = self.require_job(id).await?;
            if row.state.is_final() {
                return Ok(row);
            }
            let woken = crate::jobs::changed(&mut changed, id);
            let sleep = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL));
            tokio::select! {
                _ = woken => {}
                _ = sleep => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.require_job(id).await;
            }
        }
    }

    /// The job's events after `after` (at most `limit`), and whether the job has ended.
    pub async fn job_events(
        &self,
        ctx: &Ctx,
        id: &str,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<JobEvent>, bool)> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_job(id).await?;
        let events = self.store.job_events(id, after, limit).await?;
        let clearance = Clearance::of(ctx.principal.scope);
        let events = events
            .into_iter()
            .map(|event| event_view(event, clearance))
            .collect();
        Ok((events, row.state.is_final()))
    }

    /// A finished job's outcome as its operation would have answered it: the result, or
    /// the error.
    pub fn job_outcome(&self, ctx: &Ctx, row: &JobRow) -> Result<Value> {
        if let Some(result) = &row.result {
            let value: Value = serde_json::from_str(result)
                .map_err(|e| Error::Internal(format!("stored job result: {e}")))?;
            return Ok(redact(&value, Clearance::of(ctx.principal.scope)));
        }
        let kind = row
            .error_kind
            .as_deref()
            .and_then(ErrorKind::parse)
            .unwrap_or(ErrorKind::Internal);
        let message = row.error.clone().unwrap_or_else(|| "job failed".into());
        Err(Error::of_kind(kind, message))
    }

    pub(crate) async fn require_job(&self, id: &str) -> Result<JobRow> {
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::invalid("a job ID is 1-64 letters and digits"));
        }
        self.store
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {id} not found")))
    }

    /// The job as the caller may see it (file contents need `operate`).
    pub async fn job_view(&self, ctx: &Ctx, id: &str) -> Result<JobView> {
        let row = self.require_job(id).await?;
        let steps = self.store.job_steps(id).await?;
        let json = |text: &str| serde_json::from_str(text).unwrap_or(Value::Null);
        let view = JobView {
            events: format!("/api/v1/jobs/{}/events", row.id),
            operation: row.operation,
            state: row.state,
            requested_by: row.requested_by_name,
            request_id: row.request_id,
            created_at: rfc3339(row.created_at_ms),
            started_at: row.started_at_ms.map(rfc3339),
            finished_at: row.finished_at_ms.map(rfc3339),
            updated_at: rfc3339(row.updated_at_ms),
            progress: JobProgress {
                done: row.progress_done,
                total: row.progress_total,
            },
            cancel_requested: row.cancel_requested_at_ms.is_some(),
            attempts: row.attempts,
            arguments: json(&row.arguments),
            steps: steps.into_iter().map(step_view).collect(),
            result: row.result.as_deref().map(json),
            error: row.error,
            id: row.id,
        };
        redact_as(&view, Clearance::of(ctx.principal.scope))
    }
}

pub(crate) fn summary(row: JobRow) -> JobSummary {
    JobSummary {
        id: row.id,
        operation: row.operation,
        state: row.state,
        requested_by: row.requested_by_name,
        created_at: rfc3339(row.created_at_ms),
        finished_at: row.finished_at_ms.map(rfc3339),
        progress: JobProgress {
            done: row.progress_done,
            total: row.progress_total,
        },
        error: row.error,
    }
}

fn step_view(row: JobStepRow) -> StepView {
    StepView {
        seq: row.seq,
        name: row.name,
        state: row.state,
        error: row.error,
        started_at: rfc3339(row.started_at_ms),
        finished_at: row.finished_at_ms.map(rfc3339),
        duration_ms: row.finished_at_ms.map(|end| end - row.started_at_ms),
    }
}

fn event_view(row: JobEventRow, clearance: Clearance) -> JobEvent {
    let data = serde_json::from_str(&row.data).unwrap_or(Value::Null);
    JobEvent {
        seq: row.seq,
        at: rfc3339(row.at_ms),
        kind: row.kind,
        data: redact(&data, clearance),
    }
}
