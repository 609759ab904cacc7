//! Requests held for another person's approval, and the decisions on them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::params::ApprovalPath;
use super::{Effect, Input, Meta, Method, Nothing, Operation, Tool};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::services::approvals::{Approval, ApprovalState};
use crate::services::Services;

/// `GET /approvals` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// Only requests in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ApprovalState>,
    /// How many, newest first (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

pub struct ListApprovals;

impl Operation for ListApprovals {
    const META: Meta = Meta {
        id: "list_approvals",
        method: Method::Get,
        path: "/approvals",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "Requests held for another person's approval, newest first",
        description: "Held mutations from REST or MCP with their plan and state.",
        success: 200,
        tool: Some(Tool::read(
            "list_approvals",
            "List held requests",
            "Use to see requests waiting for a person's approval (yours included, when your \
            token's changes need approval). Returns them newest first with their plan and \
            state. Approving is for people, over REST. Example: {\"state\": \"pending\"}",
        )),
    };
    type Path = Nothing;
    type Query = ApprovalsQuery;
    type Body = Nothing;
    type Response = Vec<Approval>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let query = input.query;
        services.list_approvals(ctx, query.state, query.limit).await
    }
}

pub struct GetApproval;

impl Operation for GetApproval {
    const META: Meta = Meta {
        id: "get_approval",
        method: Method::Get,
        path: "/approvals/{approval}",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "One held request: its plan, state and, once decided, the outcome",
        description: "Poll it after a 202 to learn whether the request was approved and ran.",
        success: 200,
        tool: Some(Tool::read(
            "get_approval",
            "Get a held request",
            "Use after a mutation answered with a held request: returns its state (pending, \
            approved, rejected, expired) and, once approved, the outcome. Example: \
            {\"approval\": \"0f8e5c2a-...\"}",
        )),
    };
    type Path = ApprovalPath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Approval;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .get_approval(ctx, input.path.approval.as_str())
            .await
    }
}

pub struct ApproveRequest;

impl Operation for ApproveRequest {
    const META: Meta = Meta {
        id: "approve_request",
        method: Method::Post,
        path: "/approvals/{approval}/approve",
        scope: Scope::Admin,
        effect: Effect::Decision,
        summary: "Approve a held request: it runs now, with the requester's scope",
        description: "The approver must be another person than the requester. The request \
            runs once, under this call's correlation ID; the answer holds its outcome.",
        success: 200,
        tool: None,
    };
    type Path = ApprovalPath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Approval;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let approval = input.path.approval.as_str();
        Box::pin(services.approve_request(ctx, approval)).await
    }
}

pub struct RejectRequest;

impl Operation for RejectRequest {
    const META: Meta = Meta {
        id: "reject_request",
        method: Method::Post,
        path: "/approvals/{approval}/reject",
        scope: Scope::Admin,
        effect: Effect::Decision,
        summary: "Reject a held request; it never runs",
        description: "The decider must be another person than the requester.",
        success: 200,
        tool: None,
    };
    type Path = ApprovalPath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Approval;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .reject_request(ctx, input.path.approval.as_str())
            .await
    }
}
