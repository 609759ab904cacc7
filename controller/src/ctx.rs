//! The context every service method takes first: who is calling, under which request ID,
//! and until when the work may run.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::Principal;
use crate::error::Result;
use crate::jobs::JobHandle;

/// How long a request may run unless its surface says otherwise; long work belongs in jobs.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct Ctx {
    pub principal: Principal,
    /// Correlation ID: from `x-request-id` or generated; logged with every line of the operation.
    pub request_id: String,
    /// When the work must be done: the pipeline stops an operation past it, and commands to
    /// agents carry it (tokio's clock, so tests control it with paused time).
    pub deadline: Instant,
    /// Set when the work runs as a durable job: its steps, progress and log go there.
    pub job: Option<JobHandle>,
}

impl Ctx {
    pub fn new(principal: Principal, request_id: impl Into<String>) -> Self {
        Self {
            principal,
            request_id: request_id.into(),
            deadline: Instant::now() + DEFAULT_DEADLINE,
            job: None,
        }
    }

    /// The same caller under another correlation ID (work done for another replica's request).
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.request_id = request_id.to_string();
        self
    }

    /// The same caller, working as job `job`.
    pub fn with_job(mut self, job: JobHandle) -> Self {
        self.job = Some(job);
        self
    }

    /// Runs `work` as a step of the job, recorded before and after; outside a job, just
    /// runs it.
    pub async fn step<T>(&self, name: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        match &self.job {
            Some(job) => job.step(name, work).await,
            None => work.await,
        }
    }

    pub async fn progress(&self, done: usize, total: usize) {
        if let Some(job) = &self.job {
            job.progress(done, total).await;
        }
    }

    pub async fn log(&self, line: &str) {
        if let Some(job) = &self.job {
            job.log(line).await;
        }
    }

    /// Someone asked to cancel the job this work runs as.
    pub fn cancel_requested(&self) -> bool {
        self.job.as_ref().is_some_and(JobHandle::cancel_requested)
    }

    /// This work continues a job a crash interrupted.
    pub fn is_resumed(&self) -> bool {
        self.job.as_ref().is_some_and(JobHandle::is_resumed)
    }

    /// The same caller with another deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = deadline;
        self
    }

    /// Time left before the deadline (zero once past).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// `timeout`, shortened to what is left of the deadline.
    pub fn bounded(&self, timeout: Duration) -> Duration {
        timeout.min(self.remaining())
    }

    /// For what an agent's stream reports, under the stream's ID (its log lines carry it).
    pub fn agent(device_id: &str, stream_id: &str) -> Self {
        Self::new(Principal::device(device_id), stream_id)
    }

    /// For the controller's own work (CLI, bootstrap, background jobs).
    pub fn system(what: &str) -> Self {
        Self::new(Principal::system(what), uuid::Uuid::new_v4().to_string())
    }
}
