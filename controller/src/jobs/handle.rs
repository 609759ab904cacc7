//! What a running job's work sees of its job, through its `Ctx`: steps persisted before
//! they are taken and again with their outcome, progress `n/m`, log lines, and whether
//! someone asked to cancel it. Each record is also an event of the job's stream.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::Jobs;
use crate::domain::StepState;
use crate::error::{Error, Result};
use crate::services::now_ms;
use crate::services::untrusted::{self, Lines};
use crate::store::{EventWrite, JobWrite, StepWrite, Store};

/// Event kinds of a job's stream.
pub mod event {
    pub const STATE: &str = "state";
    pub const STEP_STARTED: &str = "step_started";
    pub const STEP_FINISHED: &str = "step_finished";
    pub const PROGRESS: &str = "progress";
    pub const LOG: &str = "log";
}

/// A running job, as its work sees it; cheap to clone.
#[derive(Clone)]
pub struct JobHandle(Arc<Inner>);

struct Inner {
    id: String,
    attempt: i64,
    store: Arc<Store>,
    jobs: Arc<Jobs>,
    /// The next step and event numbers; held across each write, so events are numbered in
    /// the order they are stored.
    next: Mutex<(i64, i64)>,
    cancel: CancellationToken,
    cancel_seen: AtomicBool,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.0.id)
            .field("attempt", &self.0.attempt)
            .finish()
    }
}

impl JobHandle {
    pub(super) async fn open(
        store: Arc<Store>,
        jobs: Arc<Jobs>,
        id: &str,
        attempt: i64,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let next = store.job_sequences(id).await?;
        Ok(Self(Arc::new(Inner {
            id: id.to_string(),
            attempt,
            store,
            jobs,
            next: Mutex::new(next),
            cancel,
            cancel_seen: AtomicBool::new(false),
        })))
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// This run continues one a crash (or a dead replica) interrupted.
    pub fn is_resumed(&self) -> bool {
        self.0.attempt > 1
    }

    /// Someone asked to cancel the job; the work decides what that means at its next safe
    /// point (a deploy rolls back what it committed). Once it has looked, the job ends
    /// `cancelled`.
    pub fn cancel_requested(&self) -> bool {
        let requested = self.0.cancel.is_cancelled();
        if requested {
            self.0.cancel_seen.store(true, Ordering::SeqCst);
        }
        requested
    }

    pub(super) fn cancel_honoured(&self) -> bool {
        self.0.cancel_seen.load(Ordering::SeqCst)
    }

    /// Runs `work` as step `name`: recorded `running` before it starts (a failure to record
    /// it means the step is not taken) and with its outcome after.
    pub async fn step<T>(&self, name: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        let seq = self.record_start(name).await?;
        if self.0.jobs.config.halt_before_step.as_deref() == Some(name) {
            tracing::warn!(job_id = %self.0.id, step = name, "halting here, as configured");
            std::future::pending::<()>().await;
        }
        let started = Instant::now();
        let result = work.await;
        let (state, error) = match &result {
            Ok(_) => (StepState::Succeeded, None),
            Err(error) => (StepState::Failed, Some(error.public_message())),
        };
        let data = json!({
            "step": seq,
            "name": name,
            "state": state,
            "error": error,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        let step = StepWrite::Finished {
            seq,
            state,
            error: error.as_deref(),
        };
        self.write(Some(step), event::STEP_FINISHED, &data, None)
            .await?;
        result
    }

    /// `done` of `total` units (targets, hosts) are through.
    pub async fn progress(&self, done: usize, total: usize) {
        let data = json!({ "done": done, "total": total });
        let progress = Some((done as i64, total as i64));
        if let Err(error) = self.write(None, event::PROGRESS, &data, progress).await {
            tracing::warn!(job_id = %self.0.id, %error, "cannot record progress");
        }
    }

    /// One line of the job's log (cleaned and bounded: it may quote hosts).
    pub async fn log(&self, line: &str) {
        let line = untrusted::clean(line, untrusted::MAX_LINE_CHARS, Lines::Single);
        let data = json!({ "line": line });
        if let Err(error) = self.write(None, event::LOG, &data, None).await {
            tracing::warn!(job_id = %self.0.id, %error, "cannot record a log line");
        }
    }

    async fn record_start(&self, name: &str) -> Result<i64> {
        let mut next = self.0.next.lock().await;
        let (seq, event) = *next;
        let data = json!({ "step": seq, "name": name }).to_string();
        let write = JobWrite {
            step: Some(StepWrite::Started { seq, name }),
            event: Some(EventWrite {
                seq: event,
                kind: event::STEP_STARTED,
                data: &data,
            }),
            progress: None,
        };
        self.commit(&write).await?;
        *next = (seq + 1, event + 1);
        Ok(seq)
    }

    async fn write(
        &self,
        step: Option<StepWrite<'_>>,
        kind: &str,
        data: &Value,
        progress: Option<(i64, i64)>,
    ) -> Result<()> {
        let mut next = self.0.next.lock().await;
        let data = data.to_string();
        let write = JobWrite {
            step,
            event: Some(EventWrite {
                seq: next.1,
                kind,
                data: &data,
            }),
            progress,
        };
        self.commit(&write).await?;
        next.1 += 1;
        Ok(())
    }

    /// Stores one write, retrying what never ran; refuses to go on when the job is no
    /// longer this replica's (its lease was taken over).
    async fn commit(&self, write: &JobWrite<'_>) -> Result<()> {
        let (store, id, owner) = (&self.0.store, &self.0.id, &self.0.jobs.replica);
        let owned = crate::recovery::retry_write("job write", || {
            store.write_job(id, owner, write, now_ms())
        })
        .await?;
        self.0.jobs.notify(id);
        if owned {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "job {id} is no longer run by this controller (its lease was taken over)"
            )))
        }
    }
}
