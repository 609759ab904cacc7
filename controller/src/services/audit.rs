//! The audit trail: every mutation from any surface is recorded with its principal, surface,
//! correlation ID, redacted arguments and outcome, and read back at `GET /api/v1/audit`.
//!
//! Arguments are stored redacted at [`Clearance::Summary`] (see [`super::redact`]): secrets
//! are replaced, and file contents by their size and SHA-256, which still proves what was
//! deployed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::redact::{redact, Clearance};
use super::{now_ms, rfc3339, Services};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::recovery::retry_write;
use crate::store::{AuditFilter, AuditRow};

/// How a mutation ended.
#[derive(Clone, Debug)]
pub struct AuditOutcome {
    /// `ok`, `error`, `planned` (a dry run shown as an MCP plan), `pending_approval`,
    /// `accepted` (queued as a job), and for a job's end `cancelled` or `failed`.
    pub outcome: &'static str,
    /// The HTTP status of the outcome (also for MCP, so both read alike).
    pub status: u16,
    pub detail: Option<String>,
}

impl AuditOutcome {
    pub fn of<T>(result: &Result<T>) -> Self {
        match result {
            Ok(_) => Self::ok(),
            Err(error) => Self::error(error),
        }
    }

    pub fn ok() -> Self {
        Self::ok_with_status(200)
    }

    /// Succeeded with this HTTP status (201 created, 204 no content).
    pub fn ok_with_status(status: u16) -> Self {
        Self {
            outcome: "ok",
            status,
            detail: None,
        }
    }

    /// An MCP mutation's plan that was itself a dry run on hosts; nothing was applied.
    pub fn planned() -> Self {
        Self {
            outcome: "planned",
            status: 200,
            detail: None,
        }
    }

    /// Held for a human's approval (`202 Accepted`).
    pub fn pending_approval() -> Self {
        Self {
            outcome: "pending_approval",
            status: 202,
            detail: None,
        }
    }

    /// Queued as job `job_id` (`202 Accepted`); the job's end is audited again.
    pub fn accepted(job_id: &str) -> Self {
        Self {
            outcome: "accepted",
            status: 202,
            detail: Some(format!("job {job_id}")),
        }
    }

    /// How job `job_id` ended: `ok`, `cancelled`, `failed` (its operation answered, and
    /// the answer is a failure: a deploy that was rolled back) or `error` (with the status
    /// of the error's kind).
    pub fn job_ended(
        job_id: &str,
        state: crate::domain::JobState,
        error: Option<&str>,
        kind: Option<crate::error::ErrorKind>,
    ) -> Self {
        use crate::domain::JobState;
        let (outcome, status) = match (state, kind) {
            (JobState::Succeeded, _) => ("ok", 200),
            (JobState::Cancelled, _) => ("cancelled", 200),
            (_, Some(kind)) => ("error", crate::rest::problem::status_for(kind).as_u16()),
            (_, None) => ("failed", 200),
        };
        let detail = match error {
            Some(error) => format!("job {job_id}: {error}"),
            None => format!("job {job_id}"),
        };
        Self {
            outcome,
            status,
            detail: Some(detail),
        }
    }

    pub fn error(error: &Error) -> Self {
        Self {
            outcome: "error",
            status: crate::rest::problem::status_for(error.kind()).as_u16(),
            detail: Some(error.public_message()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: String,
    pub principal: String,
    pub principal_name: String,
    pub surface: String,
    pub request_id: String,
    pub operation: String,
    pub arguments: Value,
    pub outcome: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this principal, e.g. `token:<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Only this operation ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Only this correlation ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Records older than this ID (paging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_id: Option<i64>,
    /// How many records, newest first (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

impl Services {
    /// Records one mutation. An audit record must not be lost: transient database failures
    /// are retried, and a record that still cannot be stored is logged in full.
    pub async fn audit(
        &self,
        ctx: &Ctx,
        surface: &str,
        operation: &str,
        arguments: &Value,
        outcome: AuditOutcome,
    ) {
        let record = AuditRow {
            id: 0,
            at_ms: now_ms(),
            principal: ctx.principal.id.clone(),
            principal_name: ctx.principal.name.clone(),
            surface: surface.to_string(),
            request_id: ctx.request_id.clone(),
            operation: operation.to_string(),
            arguments: redact(arguments, Clearance::Summary).to_string(),
            outcome: outcome.outcome.to_string(),
            status: i32::from(outcome.status),
            detail: outcome.detail,
        };
        let stored = retry_write("audit", || self.store.append_audit(&record)).await;
        if let Err(error) = stored {
            tracing::error!(
                %error,
                request_id = %record.request_id,
                principal = %record.principal,
                surface = %record.surface,
                operation = %record.operation,
                arguments = %record.arguments,
                outcome = %record.outcome,
                "AUDIT RECORD NOT STORED"
            );
        }
    }

    pub async fn list_audit(&self, ctx: &Ctx, query: AuditQuery) -> Result<Vec<AuditRecord>> {
        ctx.principal.require(Scope::Admin)?;
        let limit = query.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit must be 1..=1000"));
        }
        let filter = AuditFilter {
            principal: query.principal.as_deref(),
            operation: query.operation.as_deref(),
            request_id: query.request_id.as_deref(),
            before_id: query.before_id,
            limit,
        };
        let rows = self.store.audit_records(&filter).await?;
        Ok(rows
            .into_iter()
            .map(|row| AuditRecord {
                id: row.id,
                at: rfc3339(row.at_ms),
                principal: row.principal,
                principal_name: row.principal_name,
                surface: row.surface,
                request_id: row.request_id,
                operation: row.operation,
                arguments: serde_json::from_str(&row.arguments).unwrap_or(Value::Null),
                outcome: row.outcome,
                status: row.status.clamp(0, 999) as u16,
                detail: row.detail,
            })
            .collect())
    }
}
