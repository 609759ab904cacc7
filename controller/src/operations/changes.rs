//! Configuration changes across devices: dry run, two-phase deploy, confirm, roll back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::{ChangePath, DeviceRef};
use super::{Effect, Input, Meta, Method, Nothing, Operation, Tool};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::domain::ChangeState;
use crate::error::Result;
use crate::services::changes::{ChangeRequest, ChangeSummary, ChangeView};
use crate::services::jobs::JobClaims;
use crate::services::Services;

fn to_value(view: impl Serialize) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// A job's failure when its change ended in none of `wanted`: the state and the error.
fn ended_otherwise(change: &ChangeView, wanted: &[ChangeState]) -> Option<String> {
    if wanted.contains(&change.state) {
        return None;
    }
    let error = change.error.as_deref().unwrap_or("no reason recorded");
    Some(format!(
        "change {} ended {}: {error}",
        change.id,
        change.state.as_str()
    ))
}

/// The plan of confirming or rolling back a change: the change as it stands.
async fn current(services: &Services, ctx: &Ctx, path: &ChangePath) -> Result<Value> {
    Ok(to_value(
        services.get_change(ctx, path.change.as_str()).await?,
    ))
}

pub struct PlanChange;

impl Operation for PlanChange {
    const META: Meta = Meta {
        id: "plan_change",
        method: Method::Post,
        path: "/changes/plan",
        scope: Scope::Operate,
        effect: Effect::DryRun,
        summary: "Dry run of a configuration change: per-device diffs and validator output",
        description: "Prepares the change on every device without touching anything live: \
            unified diffs of each file, validator output, and whether every device is ready. \
            The plan is recorded as a change in state `planned`.",
        success: 200,
        tool: None,
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = ChangeRequest;
    type Response = ChangeView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.plan_change(ctx, input.body).await
    }
}

pub struct DeployChange;

impl Operation for DeployChange {
    const META: Meta = Meta {
        id: "deploy_change",
        method: Method::Post,
        path: "/changes",
        scope: Scope::Operate,
        effect: Effect::Mutation,
        summary: "Apply a configuration change: prepare everywhere, commit, health-check, \
            confirm or roll back",
        description: "Prepares on every device (any failure aborts all), commits all at once \
            or rolling (options.max_parallel), and confirms once every health check passed; \
            otherwise every committed device rolls back. With options.auto_confirm=false the \
            change awaits confirm_change and rolls back by itself at its deadline.",
        success: 200,
        tool: Some(Tool {
            name: "deploy_configuration_change",
            title: "Deploy a configuration change",
            description: "Use to change files on one or more hosts safely. The first call is \
                the dry run: every device's unified diff and validator output, nothing live \
                touched, and a confirmation_id. Show the diffs to the operator; only if they \
                agree, call again with the same arguments plus confirmation_id: the change is \
                staged everywhere (any failure aborts all), committed, health-checked, and \
                confirmed, or rolled back on every device. Example: {\"devices\": \
                [\"web-01\"], \"change\": {\"files\": [{\"path\": \
                \"/etc/app/app.conf\", \"content\": \"workers=4\\n\"}], \
                \"actions\": [{\"restart_unit\": \"app.service\"}]}}",
            destructive: true,
            idempotent: false,
            open_world: true,
            defaults: &[],
        }),
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = ChangeRequest;
    type Response = ChangeView;
    const PLAN_IS_DRY_RUN: bool = true;
    const JOB: bool = true;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.deploy_change(ctx, input.body).await
    }

    async fn claims(services: &Services, _: &Ctx, input: &Input<Self>) -> Result<JobClaims> {
        services.deploy_claims(&input.body).await
    }

    async fn resume(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.resume_deploy(ctx, input.body).await
    }

    fn failure(change: &ChangeView) -> Option<String> {
        ended_otherwise(
            change,
            &[ChangeState::Committed, ChangeState::AwaitingConfirmation],
        )
    }

    async fn preview(services: &Services, ctx: &Ctx, input: &Input<Self>) -> Result<Value> {
        Ok(to_value(
            services.plan_change(ctx, input.body.clone()).await?,
        ))
    }
}

/// `GET /changes` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeHistoryQuery {
    /// Only changes that targeted this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    /// How many changes, newest first (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

pub struct ListChanges;

impl Operation for ListChanges {
    const META: Meta = Meta {
        id: "list_changes",
        method: Method::Get,
        path: "/changes",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "Change history, newest first",
        description: "Plans and deployments with their state, who asked and when.",
        success: 200,
        tool: Some(Tool::read(
            "list_changes",
            "List configuration changes",
            "Use to see what was changed recently, by whom, and how it ended. Returns changes \
            newest first with their state. Example: {\"device\": \"web-01\", \"limit\": 10}",
        )),
    };
    type Path = Nothing;
    type Query = ChangeHistoryQuery;
    type Body = Nothing;
    type Response = Vec<ChangeSummary>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let device = input.query.device.as_ref().map(DeviceRef::as_str);
        services.list_changes(ctx, device, input.query.limit).await
    }
}

pub struct GetChange;

impl Operation for GetChange {
    const META: Meta = Meta {
        id: "get_change",
        method: Method::Get,
        path: "/changes/{change}",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "One change: state, requester, per-device state, diffs, validator and health \
            results",
        description: "Everything recorded about a change, per device.",
        success: 200,
        tool: Some(Tool::read(
            "get_change",
            "Get one configuration change",
            "Use to inspect one change: its state, who asked, and per device the diffs, \
            validator output and health results. Example: {\"change\": \"3f2a...\"}",
        )),
    };
    type Path = ChangePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = ChangeView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.get_change(ctx, input.path.change.as_str()).await
    }
}

pub struct ConfirmChange;

impl Operation for ConfirmChange {
    const META: Meta = Meta {
        id: "confirm_change",
        method: Method::Post,
        path: "/changes/{change}/confirm",
        scope: Scope::Operate,
        effect: Effect::Mutation,
        summary: "Keep a change deployed with auto_confirm=false, before its deadline",
        description: "Confirms every device of a change awaiting confirmation; without it \
            they roll back by themselves at the confirmation deadline.",
        success: 200,
        tool: Some(Tool {
            name: "confirm_change",
            title: "Confirm a deployed change",
            description: "Use when a change was deployed with options.auto_confirm=false and \
                the operator has checked it works: keeps it. Without confirmation every \
                device rolls back at the deadline. Plan → confirm like every mutation. \
                Example: {\"change\": \"3f2a...\"}",
            destructive: false,
            idempotent: true,
            open_world: true,
            defaults: &[],
        }),
    };
    type Path = ChangePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = ChangeView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .confirm_change(ctx, input.path.change.as_str())
            .await
    }

    async fn preview(services: &Services, ctx: &Ctx, input: &Input<Self>) -> Result<Value> {
        current(services, ctx, &input.path).await
    }
}

pub struct RollbackChange;

impl Operation for RollbackChange {
    const META: Meta = Meta {
        id: "rollback_change",
        method: Method::Post,
        path: "/changes/{change}/rollback",
        scope: Scope::Operate,
        effect: Effect::Mutation,
        summary: "Roll an applied change back on every device",
        description: "Restores the original files on every device where the change is \
            applied and re-runs its actions.",
        success: 200,
        tool: Some(Tool {
            name: "rollback_change",
            title: "Roll a change back",
            description: "Use when an applied change must be undone: restores the original \
                files on every device and re-runs its actions. Plan → confirm like every \
                mutation. Example: {\"change\": \"3f2a...\"}",
            destructive: true,
            idempotent: true,
            open_world: true,
            defaults: &[],
        }),
    };
    type Path = ChangePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = ChangeView;

    const JOB: bool = true;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .rollback_change(ctx, input.path.change.as_str())
            .await
    }

    async fn claims(services: &Services, _: &Ctx, input: &Input<Self>) -> Result<JobClaims> {
        services.rollback_claims(input.path.change.as_str()).await
    }

    fn failure(change: &ChangeView) -> Option<String> {
        ended_otherwise(change, &[ChangeState::RolledBack])
    }

    async fn preview(services: &Services, ctx: &Ctx, input: &Input<Self>) -> Result<Value> {
        current(services, ctx, &input.path).await
    }
}
