//! Runs jobs: [`spawn`] a queued job (within the parallelism bound), run its operation from
//! the registry with the requester's principal and a [`JobHandle`], and record how it
//! ended. [`supervise`] renews this replica's leases, passes cancel requests to the work, and
//! takes over jobs whose owner died — a crashed controller's own, after it restarts — which
//! then run the operation's `resume`.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::handle::event;
use super::{JobHandle, JOB_DEADLINE};
use crate::auth::{Principal, Scope};
use crate::ctx::Ctx;
use crate::domain::JobState;
use crate::error::{Error, Result};
use crate::operations::registry::JobOutcome;
use crate::operations::{self, Arguments};
use crate::recovery::retry_write;
use crate::services::audit::AuditOutcome;
use crate::services::{now_ms, Services};
use crate::store::{Backend, EventWrite, JobEnd, JobRow};

/// Runs job `id` on its own task; a client that goes away changes nothing.
pub fn spawn(services: Services, id: String) {
    tokio::spawn(async move { run(services, id).await });
}

async fn run(services: Services, id: String) {
    let jobs = services.jobs.clone();
    let Some(cancel) = jobs.register(&id) else {
        return;
    };
    // A job cancelled while it waits for a slot goes straight on (to end cancelled).
    let _slot = tokio::select! {
        slot = jobs.slots.clone().acquire_owned() => slot.ok(),
        _ = cancel.cancelled() => None,
    };
    execute(&services, &id, cancel).await;
    jobs.unregister(&id);
    jobs.notify(&id);
}

async fn execute(services: &Services, id: &str, cancel: CancellationToken) {
    let (store, jobs) = (&services.store, &services.jobs);
    let now = now_ms();
    let row = match store
        .start_job(id, &jobs.replica, jobs.lease_until(now), now)
        .await
    {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(error) => {
            // Its lease runs out and it is taken over, by this replica or another.
            tracing::error!(job_id = id, %error, "cannot start job; left for a takeover");
            return;
        }
    };
    if row.cancel_requested_at_ms.is_some() {
        cancel.cancel();
    }
    let handle = match JobHandle::open(
        store.clone(),
        jobs.clone(),
        id,
        row.attempts,
        cancel.clone(),
    )
    .await
    {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(job_id = id, %error, "cannot open job; left for a takeover");
            return;
        }
    };
    let ctx = match requester(&row) {
        Ok(ctx) => ctx.with_job(handle.clone()),
        Err(error) => return finish(services, &row, &handle, Err(error)).await,
    };
    tracing::info!(job_id = id, operation = %row.operation, attempt = row.attempts,
        request_id = %ctx.request_id, "job running");
    let outcome = if row.attempts == 1 && handle.cancel_requested() {
        Err(Error::Conflict("cancelled before it started".into()))
    } else {
        AssertUnwindSafe(work(services, &ctx, &row))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(Error::Internal("the job's work panicked".into())))
    };
    finish(services, &row, &handle, outcome).await;
}

async fn work(services: &Services, ctx: &Ctx, row: &JobRow) -> Result<JobOutcome> {
    let entry = operations::by_id(&row.operation)
        .ok_or_else(|| Error::Internal(format!("job for unknown operation {:?}", row.operation)))?;
    let arguments: Arguments = serde_json::from_str(&row.arguments)
        .map_err(|e| Error::Internal(format!("stored job arguments: {e}")))?;
    entry.run_job(services, ctx, arguments).await
}

/// The requester's context: the job acts with the principal that asked for it.
fn requester(row: &JobRow) -> Result<Ctx> {
    let principal = Principal {
        id: row.requested_by.clone(),
        name: row.requested_by_name.clone(),
        scope: Scope::parse(&row.requested_scope)?,
        owner: row.requested_owner.clone(),
        requires_approval: false,
    };
    let deadline = tokio::time::Instant::now() + JOB_DEADLINE;
    Ok(Ctx::new(principal, row.request_id.clone()).with_deadline(deadline))
}

async fn finish(
    services: &Services,
    row: &JobRow,
    handle: &JobHandle,
    outcome: Result<JobOutcome>,
) {
    // A job that failed after looking at a cancel request ended because of it.
    let unsuccessful = if handle.cancel_honoured() {
        JobState::Cancelled
    } else {
        JobState::Failed
    };
    let (state, result, error, kind) = match outcome {
        Ok(JobOutcome {
            result,
            failure: None,
        }) => (JobState::Succeeded, Some(result), None, None),
        Ok(JobOutcome {
            result,
            failure: Some(failure),
        }) => (unsuccessful, Some(result), Some(failure), None),
        Err(error) => {
            if error.kind() == crate::error::ErrorKind::Internal {
                tracing::error!(job_id = %row.id, %error, "job failed");
            }
            let kind = Some(error.kind().as_str());
            (unsuccessful, None, Some(error.public_message()), kind)
        }
    };
    let result = result.map(|value| value.to_string());
    let (_, event_seq) = match services.store.job_sequences(&row.id).await {
        Ok(next) => next,
        Err(error) => {
            tracing::error!(job_id = %row.id, %error, "cannot end job; left for a takeover");
            return;
        }
    };
    let data = json!({ "state": state, "error": error }).to_string();
    let end = JobEnd {
        state,
        result: result.as_deref(),
        error: error.as_deref(),
        error_kind: kind,
        event: EventWrite {
            seq: event_seq,
            kind: event::STATE,
            data: &data,
        },
    };
    let (store, owner) = (&services.store, &services.jobs.replica);
    let ended = retry_write("job end", || {
        store.finish_job(&row.id, owner, &end, now_ms())
    })
    .await;
    match ended {
        Ok(true) => {
            tracing::info!(job_id = %row.id, state = state.as_str(), error = ?error, "job ended");
            let ctx = requester(row).unwrap_or_else(|_| Ctx::system("jobs"));
            let arguments = serde_json::from_str(&row.arguments).unwrap_or_default();
            let kind = kind.and_then(crate::error::ErrorKind::parse);
            let outcome = AuditOutcome::job_ended(&row.id, state, error.as_deref(), kind);
            services
                .audit(&ctx, &row.surface, &row.operation, &arguments, outcome)
                .await;
        }
        Ok(false) => {
            tracing::warn!(job_id = %row.id, "job was taken over before it ended here; its new owner ends it")
        }
        Err(error) => {
            tracing::error!(job_id = %row.id, %error, "cannot record the job's end; left for a takeover")
        }
    }
}

/// This replica's part in keeping jobs owned: renew its leases, hand cancel requests to its
/// work, and take over orphaned jobs (all live ones at the first pass on SQLite, where a
/// starting controller is the only one).
pub async fn supervise(services: Services, stop: CancellationToken) {
    let jobs = services.jobs.clone();
    let period = jobs.config.lease / 3;
    let mut first = true;
    loop {
        let now = now_ms();
        match services
            .store
            .renew_job_leases(&jobs.replica, jobs.lease_until(now))
            .await
        {
            Ok(owned) => {
                for (id, cancel) in owned {
                    if cancel {
                        jobs.cancel_local(&id);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot renew job leases; will retry"),
        }
        let all = first && services.store.backend() == Backend::Sqlite;
        take_over(&services, all).await;
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => break,
        }
    }
}

async fn take_over(services: &Services, all: bool) {
    let (store, jobs) = (&services.store, &services.jobs);
    let now = now_ms();
    let orphans = match store.orphaned_jobs(now, all).await {
        Ok(orphans) => orphans,
        Err(error) => {
            tracing::warn!(%error, "cannot look for orphaned jobs; will retry");
            return;
        }
    };
    for id in orphans {
        match store
            .take_over_job(&id, &jobs.replica, jobs.lease_until(now), now, all)
            .await
        {
            Ok(true) => {
                tracing::warn!(job_id = %id, "took over a job whose owner stopped; reconciling");
                spawn(services.clone(), id);
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(job_id = %id, %error, "cannot take over job"),
        }
    }
}
