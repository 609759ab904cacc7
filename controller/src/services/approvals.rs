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

use super::audit::AuditOutcome;
use super::redact::{redact, Clearance};
use super::{now_ms, rfc3339, Services};
use crate::auth::{Principal, Scope};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::operations::invoke::{invoke, Arguments};
use crate::store::ApprovalRow;

/// A held request not decided within this expires.
const APPROVAL_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    pub id: String,
    /// pending, approved, rejected or expired.
    pub state: String,
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
    fn from_row(row: ApprovalRow, now: i64, clearance: Clearance) -> Self {
        let state = if row.state == "pending" && row.expires_at_ms <= now {
            "expired".to_string()
        } else {
            row.state
        };
        let approve_with = (state == "pending").then(|| {
            format!(
                "POST /api/v1/approvals/{}/approve (admin, another principal)",
                row.id
            )
        });
        Self {
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
        }
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
        surface: &str,
        operation: &str,
        arguments: &Arguments,
        plan: Value,
    ) -> Result<Approval> {
        let now = now_ms();
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
            surface: surface.to_string(),
            request_id: ctx.request_id.clone(),
            state: "pending".into(),
            decided_by: None,
            decided_at_ms: None,
            result: None,
        };
        self.store.insert_approval(&row).await?;
        tracing::info!(approval = %row.id, operation, "request held for approval");
        Ok(Approval::from_row(
            row,
            now,
            Clearance::of(ctx.principal.scope),
        ))
    }

    pub async fn list_approvals(
        &self,
        ctx: &Ctx,
        state: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<Approval>> {
        ctx.principal.require(Scope::Read)?;
        if let Some(state) = state {
            if !["pending", "approved", "rejected", "expired"].contains(&state) {
                return Err(Error::invalid(format!(
                    "unknown state {state:?}: expected pending, approved, rejected or expired"
                )));
            }
        }
        let limit = limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit must be 1..=1000"));
        }
        // Expiry is decided on read, so "pending" in the table may already be expired.
        let stored_state = state.map(|s| if s == "expired" { "pending" } else { s });
        let now = now_ms();
        Ok(self
            .store
            .approvals(stored_state, limit)
            .await?
            .into_iter()
            .map(|row| Approval::from_row(row, now, Clearance::of(ctx.principal.scope)))
            .filter(|approval| state.is_none_or(|wanted| approval.state == wanted))
            .collect())
    }

    pub async fn get_approval(&self, ctx: &Ctx, id: &str) -> Result<Approval> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_approval(id).await?;
        Ok(Approval::from_row(
            row,
            now_ms(),
            Clearance::of(ctx.principal.scope),
        ))
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
        let audited = Value::Object(arguments.clone());
        let result = invoke(self, &requester, &row.operation, arguments).await;
        self.audit(
            &requester,
            &row.surface,
            &row.operation,
            &audited,
            AuditOutcome::of(&result),
        )
        .await;
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
        let now = now_ms();
        let current = Approval::from_row(row.clone(), now, Clearance::Summary);
        if current.state != "pending" {
            return Err(Error::Conflict(format!(
                "approval {id} is {}, not pending",
                current.state
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
