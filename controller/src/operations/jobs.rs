//! Durable jobs: list, read (steps, progress, result), cancel. A job's event stream is the
//! one route that is not an operation (`GET /jobs/{job}/events`, Server-Sent Events).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::{DeviceRef, JobPath};
use super::{Effect, Input, Meta, Method, Nothing, Operation, Tool};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::domain::JobState;
use crate::error::Result;
use crate::services::jobs::{JobSummary, JobView};
use crate::services::Services;

/// `GET /jobs` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobListQuery {
    /// Only jobs working on this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    /// Only jobs in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// How many jobs, newest first (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

pub struct ListJobs;

impl Operation for ListJobs {
    const META: Meta = Meta {
        id: "list_jobs",
        method: Method::Get,
        path: "/jobs",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "Jobs, newest first",
        description: "Long operations (deploys, rollbacks) with their state and progress; \
            narrowed to a device or a state.",
        success: 200,
        tool: None,
    };
    type Path = Nothing;
    type Query = JobListQuery;
    type Body = Nothing;
    type Response = Vec<JobSummary>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let query = input.query;
        let device = query.device.as_ref().map(DeviceRef::as_str);
        services
            .list_jobs(ctx, device, query.state, query.limit)
            .await
    }
}

pub struct GetJob;

impl Operation for GetJob {
    const META: Meta = Meta {
        id: "get_job",
        method: Method::Get,
        path: "/jobs/{job}",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "One job: state, steps with timings, progress, result or error",
        description: "Everything recorded about a job. Its live events are at \
            /jobs/{job}/events (Server-Sent Events).",
        success: 200,
        tool: Some(Tool::read(
            "get_job",
            "Follow a long-running job",
            "Use after a tool answered with a job instead of its result (a deploy or a \
            rollback that takes longer than the call): returns the job's state (queued, \
            running, succeeded, failed, cancelled), its steps with timings, progress, and \
            once it ended the result or error. Call again until the state is final. \
            Example: {\"job\": \"9c1e...\"}",
        )),
    };
    type Path = JobPath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = JobView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.get_job(ctx, input.path.job.as_str()).await
    }
}

pub struct CancelJob;

impl Operation for CancelJob {
    const META: Meta = Meta {
        id: "cancel_job",
        method: Method::Post,
        path: "/jobs/{job}/cancel",
        scope: Scope::Operate,
        effect: Effect::Mutation,
        summary: "Cancel a job safely: it stops at its next safe point and undoes its work",
        description: "A queued job never starts. A running deploy stops before its next \
            step and rolls back what it had committed (or aborts what it had only \
            prepared); the job ends `cancelled`. A job that already ended is a conflict.",
        success: 200,
        tool: Some(Tool {
            name: "cancel_job",
            title: "Cancel a running job",
            description: "Use when a long job (a deploy) must stop: it stops at its next safe \
                point and undoes what it did, then ends cancelled. Returns the job. Example: \
                {\"job\": \"9c1e...\"}",
            destructive: true,
            idempotent: true,
            open_world: true,
            defaults: &[],
        }),
    };
    type Path = JobPath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = JobView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.cancel_job(ctx, input.path.job.as_str()).await
    }

    async fn preview(services: &Services, ctx: &Ctx, input: &Input<Self>) -> Result<Value> {
        let job = services.get_job(ctx, input.path.job.as_str()).await?;
        Ok(serde_json::to_value(job).unwrap_or(Value::Null))
    }
}
