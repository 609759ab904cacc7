//! Administration: join tokens, the audit log and the controller's own performance.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Effect, Input, Meta, Method, Nothing, Operation, Tool};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::performance::PerformanceSummary;
use crate::services::audit::{AuditQuery, AuditRecord};
use crate::services::enrollment::{CreateEnrollmentToken as NewJoinToken, EnrollmentToken};
use crate::services::Services;

pub struct CreateEnrollmentToken;

impl Operation for CreateEnrollmentToken {
    const META: Meta = Meta {
        id: "create_enrollment_token",
        method: Method::Post,
        path: "/enrollment-tokens",
        scope: Scope::Admin,
        effect: Effect::Mutation,
        summary: "Create a single-use join token; returns the enroll command",
        description: "A token an agent presents once to enroll and receive its certificate. \
            The answer holds the token (shown once, stored only as a hash) and the command to \
            paste on the host.",
        success: 201,
        tool: None,
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = NewJoinToken;
    type Response = EnrollmentToken;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.create_enrollment_token(ctx, input.body).await
    }
}

pub struct ListAudit;

impl Operation for ListAudit {
    const META: Meta = Meta {
        id: "list_audit",
        method: Method::Get,
        path: "/audit",
        scope: Scope::Admin,
        effect: Effect::Read,
        summary: "Audit log of every mutation from any surface, newest first",
        description: "Principal, surface, correlation ID, redacted arguments and outcome of \
            each mutation; page with before_id.",
        success: 200,
        tool: None,
    };
    type Path = Nothing;
    type Query = AuditQuery;
    type Body = Nothing;
    type Response = Vec<AuditRecord>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.list_audit(ctx, input.query).await
    }
}

/// `GET /performance/summary` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// How far back, like `15m`, `1h`, `7d` (default 1h, at most 90d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

pub struct GetPerformanceSummary;

impl Operation for GetPerformanceSummary {
    const META: Meta = Meta {
        id: "performance_summary",
        method: Method::Get,
        path: "/performance/summary",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "Per operation and surface over a window: count, error rate, mean and \
            p50/p95/p99 latency",
        description: "How the controller's own operations performed recently.",
        success: 200,
        tool: Some(Tool::read(
            "get_controller_performance",
            "Controller performance",
            "Use when the controller itself seems slow or failing. Returns per operation and \
            surface the count, error rate and p50/p95/p99 latency over a window. Example: \
            {\"window\": \"1h\"}",
        )),
    };
    type Path = Nothing;
    type Query = WindowQuery;
    type Body = Nothing;
    type Response = PerformanceSummary;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let window = input.query.window.as_deref();
        services.performance_summary(ctx, window).await
    }
}
