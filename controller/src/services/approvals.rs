//! Human approval of changes: a mutating request by a principal that needs approval — its
//! token is marked `requires_approval`, or `require_approval` is on for everyone — is held
//! with its plan, on every surface alike (a REST call answers 202 with the held request; an
//! MCP tool call holds it once confirmed). An admin who is another *person* (another token
//! owner) approves it through REST, and only then does it run, with the requester's own
//! scope. Rejected or expired requests never run. The decision is a conditional update, so a
//! request runs at most once.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::redact::{redact, Clearance};
use super::{rfc3339, Services};
use crate::auth::{Principal, Scope};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::operations::pipeline::{How, Outcome, Surface};
use crate::operations::Arguments;
use crate::store::ApprovalRow;

/// A held request not decided within this expires.
const APPROVAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where a held request is in its life: `pending` until decided or expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// The state as stored; `expired` is never stored (it is `pending` past its deadline).
    fn stored(self) -> &'static str {
        match self {
            Self::Expired => Self::Pending.as_str(),
            other => other.as_str(),
        }
    }

    /// The state of a stored row at `now`.
    fn of(stored: &str, expires_at_ms: i64, now: i64) -> Result<Self> {
        match stored {
            "pending" if expires_at_ms <= now => Ok(Self::Expired),
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "rejected" => Ok(Self::Rejected),
            other => Err(Error::Internal(format!("unknown approval state {other:?}"))),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Approval {
    pub id: String,
    pub state: ApprovalState,
    pub operation: String,
    /// The arguments, redacted for the viewer (see [`super::redact`]).
    pub arguments: Value,
    /// What the request would do (e.g. the diffs of a change), redacted for the viewer.
    pub plan: Value,
    pub requested_by: String,
    pub request_id: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// Once approved: the operation's output (secrets withheld; the approver alone sees them,
    /// once, in the answer to the approval), or its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// How to decide it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_with: Option<String>,
}

impl Approval {
    fn from_row(row: ApprovalRow, now: i64, clearance: Clearance) -> Result<Self> {
        let state = ApprovalState::of(&row.state, row.expires_at_ms, now)?;
        let approve_with = (state == ApprovalState::Pending).then(|| {
            format!(
                "POST /api/v1/approvals/{}/approve (admin, another principal)",
                row.id
            )
        });
        Ok(Self {
            arguments: shown(&row.arguments, clearance),
            plan: shown(&row.preview, clearance),
            result: row.result.as_deref().map(|r| shown(r, clearance)),
            id: row.id,
            state,
            operation: row.operation,
            requested_by: row.requested_by_name,
            request_id: row.request_id,
            created_at: rfc3339(row.created_at_ms),
            expires_at: rfc3339(row.expires_at_ms),
            decided_by: row.decided_by,
            decided_at: row.decided_at_ms.map(rfc3339),
            approve_with,
        })
    }
}

/// A stored JSON text as a viewer with `clearance` may see it.
fn shown(stored: &str, clearance: Clearance) -> Value {
    serde_json::from_str(stored)
        .map(|value| redact(&value, clearance))
        .unwrap_or(Value::Null)
}

impl Services {
    /// Whether a mutation by `ctx`'s principal must wait for another person's approval. The
    /// policy is about the principal and the operation, never the surface. Human decisions
    /// (`holdable: false`: approving, rejecting) and the controller's own actions never wait.
    pub fn needs_approval(&self, ctx: &Ctx, holdable: bool) -> bool {
        holdable
            && !ctx.principal.id.starts_with("system:")
            && (ctx.principal.requires_approval || self.config.require_approval)
    }

    /// Holds a request for a human's decision.
    pub async fn hold_for_approval(
        &self,
        ctx: &Ctx,
        surface: Surface,
        operation: &str,
        arguments: &Arguments,
        plan: Value,
    ) -> Result<Approval> {
        let now = self.now_ms();
        let row = ApprovalRow {
            id: uuid::Uuid::new_v4().to_string(),
            created_at_ms: now,
            expires_at_ms: now + APPROVAL_TTL.as_millis() as i64,
            operation: operation.to_string(),
            arguments: Value::Object(arguments.clone()).to_string(),
            preview: plan.to_string(),
            requested_by: ctx.principal.id.clone(),
            requested_by_name: ctx.principal.name.clone(),
            requested_scope: ctx.principal.scope.as_str().to_string(),
            requested_by_owner: ctx.principal.owner.clone(),
            surface: surface.as_str().to_string(),
            request_id: ctx.request_id.clone(),
            state: "pending".into(),
            decided_by: None,
            decided_at_ms: None,
            result: None,
        };
        self.store.insert_approval(&row).await?;
        tracing::info!(approval = %row.id, operation, "request held for approval");
        Approval::from_row(row, now, Clearance::of(ctx.principal.scope))
    }

    pub async fn list_approvals(
        &self,
        ctx: &Ctx,
        state: Option<ApprovalState>,
        limit: Option<i64>,
    ) -> Result<Vec<Approval>> {
        ctx.principal.require(Scope::Read)?;
        let limit = limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit must be 1..=1000"));
        }
        // Expiry is decided on read, so "pending" in the table may already be expired.
        let now = self.now_ms();
        let mut approvals = Vec::new();
        for row in self
            .store
            .approvals(state.map(ApprovalState::stored), limit)
            .await?
        {
            let approval = Approval::from_row(row, now, Clearance::of(ctx.principal.scope))?;
            if state.is_none_or(|wanted| approval.state == wanted) {
                approvals.push(approval);
            }
        }
        Ok(approvals)
    }

    pub async fn get_approval(&self, ctx: &Ctx, id: &str) -> Result<Approval> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_approval(id).await?;
        Approval::from_row(row, self.now_ms(), Clearance::of(ctx.principal.scope))
    }

    /// Runs the held request with the requester's principal and scope, under this request's
    /// correlation ID.
    pub async fn approve_request(&self, ctx: &Ctx, id: &str) -> Result<Approval> {
        let row = self.decide(ctx, id, "approved").await?;
        let requester = Ctx::new(
            Principal {
                id: row.requested_by.clone(),
                name: row.requested_by_name.clone(),
                scope: Scope::parse(&row.requested_scope)?,
                owner: row.requested_by_owner.clone(),
                // Approved: it runs now, it is not held again.
                requires_approval: false,
            },
            ctx.request_id.clone(),
        );
        let arguments: Arguments = serde_json::from_str(&row.arguments)
            .map_err(|e| Error::Internal(format!("approval {id}: stored arguments: {e}")))?;
        let operation = crate::operations::by_id(&row.operation).ok_or_else(|| {
            Error::Internal(format!("approval {id}: no operation {:?}", row.operation))
        })?;
        let how = How::Approved {
            surface: Surface::parse(&row.surface)?,
        };
        // The pipeline audits the run under the requester, on the surface it came from.
        let result = match operation.call(self, &requester, how, arguments).await {
            Ok(Outcome::Done(value)) => Ok(value),
            // A long operation was queued: the approval records its job.
            Ok(Outcome::Accepted(job)) => Ok(serde_json::json!({ "job": job })),
            Ok(_) => Err(Error::Internal(format!(
                "approval {id}: the request was not run"
            ))),
            Err(error) => Err(error),
        };
        let outcome = match &result {
            Ok(value) => serde_json::json!({"ok": value}),
            Err(error) => serde_json::json!({"error": error.public_message()}),
        };
        // Kept without its secrets (a join token is never stored readable); the approver, whose
        // decision created them, sees the full output in this answer only.
        let stored = redact(&outcome, Clearance::Contents);
        self.store
            .set_approval_result(id, &stored.to_string())
            .await?;
        let mut approval = self.get_approval(ctx, id).await?;
        approval.result = Some(outcome);
        Ok(approval)
    }

    pub async fn reject_request(&self, ctx: &Ctx, id: &str) -> Result<Approval> {
        self.decide(ctx, id, "rejected").await?;
        self.get_approval(ctx, id).await
    }

    /// Moves a pending, unexpired request to `state` on behalf of an admin who is another
    /// person than the requester (not merely another token of the same owner).
    async fn decide(&self, ctx: &Ctx, id: &str, state: &str) -> Result<ApprovalRow> {
        ctx.principal.require(Scope::Admin)?;
        let row = self.require_approval(id).await?;
        let same_owner =
            !row.requested_by_owner.is_empty() && row.requested_by_owner == ctx.principal.owner;
        if row.requested_by == ctx.principal.id || same_owner {
            return Err(Error::Forbidden(
                "a request must be decided by another person than the one that made it".into(),
            ));
        }
        let now = self.now_ms();
        let current = ApprovalState::of(&row.state, row.expires_at_ms, now)?;
        if current != ApprovalState::Pending {
            return Err(Error::Conflict(format!(
                "approval {id} is {}, not pending",
                current.as_str()
            )));
        }
        if !self
            .store
            .decide_approval(id, state, &ctx.principal.name, now)
            .await?
        {
            return Err(Error::Conflict(format!(
                "approval {id} was decided by someone else meanwhile"
            )));
        }
        Ok(row)
    }

    async fn require_approval(&self, id: &str) -> Result<ApprovalRow> {
        self.store
            .approval(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no approval {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn a_held_request_expires_after_a_day_and_can_no_longer_run() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::ControllerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let mut services = crate::server::open_services(&config).await.unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        services.clock = clock.clone();
        let requester = Ctx::new(Principal::token("r", "llm", Scope::Admin, "llm"), "r1");
        let admin = Ctx::new(Principal::token("a", "ops", Scope::Admin, "ops"), "a1");
        let arguments = Arguments::from_iter([("expires_in".into(), "1h".into())]);
        let held = services
            .hold_for_approval(
                &requester,
                Surface::Rest,
                "create_enrollment_token",
                &arguments,
                Value::Null,
            )
            .await
            .unwrap();
        clock.advance(APPROVAL_TTL - Duration::from_secs(1));
        assert_eq!(
            services.get_approval(&admin, &held.id).await.unwrap().state,
            ApprovalState::Pending
        );
        clock.advance(Duration::from_secs(2));
        let expired = services.get_approval(&admin, &held.id).await.unwrap();
        assert_eq!(expired.state, ApprovalState::Expired);
        assert!(expired.approve_with.is_none());
        let refused = services
            .approve_request(&admin, &held.id)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("expired"), "{refused}");
        let listed = services
            .list_approvals(&admin, Some(ApprovalState::Expired), None)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert!(services
            .list_approvals(&admin, Some(ApprovalState::Pending), None)
            .await
            .unwrap()
            .is_empty());
        services.store.close().await;
    }
}
