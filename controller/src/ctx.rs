//! The context every service method takes first: who is calling, under which request ID,
//! and until when the work may run.

use std::time::Duration;

use tokio::time::Instant;

use crate::auth::Principal;

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
}

impl Ctx {
    pub fn new(principal: Principal, request_id: impl Into<String>) -> Self {
        Self {
            principal,
            request_id: request_id.into(),
            deadline: Instant::now() + DEFAULT_DEADLINE,
        }
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
