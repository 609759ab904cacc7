//! The list of operations. Each surface iterates [`REGISTRY`]: the REST router adds each
//! entry's route, the OpenAPI document describes each, MCP offers each allowed one as a
//! tool, and approved requests are run by their entry. Adding an operation is its type, its
//! service method and one line here.

use std::marker::PhantomData;

use axum::Router;
use futures::future::BoxFuture;
use serde_json::Value;

use super::observe;
use super::pipeline::{execute, How, Outcome};
use super::{
    admin, alerts, analytics, applications, approvals, backups, changes, containers, devices, dr,
    jobs,
};
use super::{Arguments, Input, Meta, Operation};
use crate::ctx::Ctx;
use crate::error::Result;
use crate::services::Services;

/// An operation with its type erased, so one list can hold them all.
pub trait Registered: Sync {
    fn meta(&self) -> &'static Meta;

    /// Runs as a durable job ([`Operation::JOB`]).
    fn is_job(&self) -> bool;

    /// Adds the operation's REST route.
    fn route(&self, router: Router<Services>) -> Router<Services>;

    /// Its OpenAPI operation object, with schemas inlined.
    fn openapi(&self) -> Value;

    /// Its arguments in the flat form (path, query and body fields side by side), as JSON
    /// Schema: the MCP tool's input.
    fn arguments_schema(&self) -> Value;

    /// The JSON Schema of its response, as encoded.
    fn response_schema(&self) -> Value;

    /// Runs it as job `ctx.job` from the arguments the pipeline checked and stored:
    /// `resume` after a crash, `run` otherwise.
    fn run_job<'a>(
        &'a self,
        services: &'a Services,
        ctx: &'a Ctx,
        arguments: Arguments,
    ) -> BoxFuture<'a, Result<JobOutcome>>;

    /// What it would do with these flat arguments, changing nothing: the request decoded,
    /// its claims resolved, and its preview (a mutation's plan). A DR plan's dry run.
    fn plan<'a>(
        &'a self,
        services: &'a Services,
        ctx: &'a Ctx,
        arguments: Arguments,
    ) -> BoxFuture<'a, Result<Value>>;

    /// Runs it from flat arguments through the pipeline.
    fn call<'a>(
        &'a self,
        services: &'a Services,
        ctx: &'a Ctx,
        how: How,
        arguments: Arguments,
    ) -> BoxFuture<'a, Result<Outcome<Value>>>;
}

/// What a job's operation answered, and why the job failed if it did (a deploy that was
/// rolled back answers its change, and failed).
#[derive(Debug)]
pub struct JobOutcome {
    pub result: Value,
    pub failure: Option<String>,
}

/// The registry entry of operation `O`.
pub struct Entry<O>(PhantomData<O>);

impl<O> Entry<O> {
    pub const NEW: Self = Self(PhantomData);
}

impl<O: Operation> Registered for Entry<O> {
    fn meta(&self) -> &'static Meta {
        const { &O::META }
    }

    fn is_job(&self) -> bool {
        O::JOB
    }

    fn route(&self, router: Router<Services>) -> Router<Services> {
        crate::rest::route::<O>(router)
    }

    fn openapi(&self) -> Value {
        crate::rest::openapi::operation::<O>()
    }

    fn arguments_schema(&self) -> Value {
        crate::rest::openapi::arguments_schema::<O>()
    }

    fn response_schema(&self) -> Value {
        crate::rest::openapi::output::<O::Response>()
    }

    fn run_job<'a>(
        &'a self,
        services: &'a Services,
        ctx: &'a Ctx,
        arguments: Arguments,
    ) -> BoxFuture<'a, Result<JobOutcome>> {
        Box::pin(async move {
            let input = Input::<O>::from_arguments(arguments)?;
            let response = if ctx.is_resumed() {
                O::resume(services, ctx, input).await?
            } else {
                O::run(services, ctx, input).await?
            };
            let failure = O::failure(&response);
            let result = serde_json::to_value(response)
                .map_err(|e| crate::error::Error::Internal(format!("job result: {e}")))?;
            Ok(JobOutcome { result, failure })
        })
    }

    fn plan<'a>(
        &'a self,
        services: &'a Services,
        ctx: &'a Ctx,
        arguments: Arguments,
    ) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            ctx.principal.require(O::META.scope)?;
            let input = Input::<O>::from_arguments(arguments)?;
            if O::JOB {
                O::claims(services, ctx, &input).await?;
            }
            O::preview(services, ctx, &input).await
        })
    }

    fn call<'a>(
        &'a self,
        services: &'a Services,
        ctx: &'a Ctx,
        how: How,
        arguments: Arguments,
    ) -> BoxFuture<'a, Result<Outcome<Value>>> {
        Box::pin(async move {
            let decode = async move { (Input::<O>::from_arguments(arguments.clone()), arguments) };
            Ok(execute::<O>(services, ctx, how, decode).await?.into_json())
        })
    }
}

pub static REGISTRY: &[&dyn Registered] = &[
    &Entry::<devices::ListDevices>::NEW,
    &Entry::<devices::CreateAgentlessDevice>::NEW,
    &Entry::<devices::GetDevice>::NEW,
    &Entry::<devices::DeleteDevice>::NEW,
    &Entry::<observe::DeviceOverview>::NEW,
    &Entry::<observe::QueryMetrics>::NEW,
    &Entry::<observe::LatestMetrics>::NEW,
    &Entry::<observe::ListChecks>::NEW,
    &Entry::<observe::RunChecks>::NEW,
    &Entry::<observe::CheckHistory>::NEW,
    &Entry::<observe::DeviceCapabilities>::NEW,
    &Entry::<observe::ListContainers>::NEW,
    &Entry::<containers::InspectContainer>::NEW,
    &Entry::<containers::ContainerLogs>::NEW,
    &Entry::<containers::ContainerStats>::NEW,
    &Entry::<containers::ContainerAction>::NEW,
    &Entry::<applications::ListApplications>::NEW,
    &Entry::<applications::GetApplication>::NEW,
    &Entry::<applications::DeclareApplication>::NEW,
    &Entry::<applications::ManageApplication>::NEW,
    &Entry::<applications::RemoveApplication>::NEW,
    &Entry::<backups::ListBackups>::NEW,
    &Entry::<backups::GetBackupTarget>::NEW,
    &Entry::<backups::DeclareBackupTarget>::NEW,
    &Entry::<backups::ManageBackups>::NEW,
    &Entry::<backups::RemoveBackupTarget>::NEW,
    &Entry::<dr::ListDrPlans>::NEW,
    &Entry::<dr::GetDrPlan>::NEW,
    &Entry::<dr::DeclareDrPlan>::NEW,
    &Entry::<dr::ExecuteDrPlan>::NEW,
    &Entry::<alerts::SetMaintenanceMode>::NEW,
    &Entry::<alerts::ListAlerts>::NEW,
    &Entry::<alerts::ListAlertRules>::NEW,
    &Entry::<alerts::ListSilences>::NEW,
    &Entry::<alerts::CreateSilence>::NEW,
    &Entry::<alerts::EndSilence>::NEW,
    &Entry::<alerts::ListChannels>::NEW,
    &Entry::<alerts::TestChannel>::NEW,
    &Entry::<alerts::ListNotifications>::NEW,
    &Entry::<alerts::RetryNotification>::NEW,
    &Entry::<observe::DiagnoseDevice>::NEW,
    &Entry::<observe::DiagnoseInfrastructure>::NEW,
    &Entry::<analytics::AnalyzePerformanceTrends>::NEW,
    &Entry::<analytics::PredictCapacity>::NEW,
    &Entry::<analytics::AnalyzeCostOptimization>::NEW,
    &Entry::<devices::GetSshPublicKey>::NEW,
    &Entry::<admin::CreateEnrollmentToken>::NEW,
    &Entry::<changes::PlanChange>::NEW,
    &Entry::<changes::DeployChange>::NEW,
    &Entry::<changes::ListChanges>::NEW,
    &Entry::<changes::GetChange>::NEW,
    &Entry::<changes::ConfirmChange>::NEW,
    &Entry::<changes::RollbackChange>::NEW,
    &Entry::<jobs::ListJobs>::NEW,
    &Entry::<jobs::GetJob>::NEW,
    &Entry::<jobs::CancelJob>::NEW,
    &Entry::<admin::ListAudit>::NEW,
    &Entry::<admin::GetPerformanceSummary>::NEW,
    &Entry::<approvals::ListApprovals>::NEW,
    &Entry::<approvals::GetApproval>::NEW,
    &Entry::<approvals::ApproveRequest>::NEW,
    &Entry::<approvals::RejectRequest>::NEW,
];

pub fn by_id(id: &str) -> Option<&'static dyn Registered> {
    REGISTRY.iter().copied().find(|entry| entry.meta().id == id)
}

/// The operation offered to models as MCP tool `name`.
pub fn by_tool(name: &str) -> Option<(&'static dyn Registered, &'static super::Tool)> {
    REGISTRY.iter().copied().find_map(|entry| {
        let tool = entry.meta().tool.as_ref()?;
        (tool.name == name).then_some((entry, tool))
    })
}

/// The operation served at `route` (an axum route template, with or without the `/api/v1`
/// prefix) for `method`.
pub fn by_route(method: &str, route: &str) -> Option<&'static dyn Registered> {
    let path = route.strip_prefix("/api/v1").unwrap_or(route);
    REGISTRY.iter().copied().find(|entry| {
        let meta = entry.meta();
        meta.path == path && meta.method.as_str().eq_ignore_ascii_case(method)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_routes_are_unique() {
        let mut ids: Vec<&str> = REGISTRY.iter().map(|e| e.meta().id).collect();
        let mut routes: Vec<String> = REGISTRY
            .iter()
            .map(|e| format!("{} {}", e.meta().method.as_str(), e.meta().path))
            .collect();
        let mut tools: Vec<&str> = REGISTRY
            .iter()
            .filter_map(|e| e.meta().tool.as_ref().map(|t| t.name))
            .collect();
        let offered = tools.len();
        tools.sort_unstable();
        tools.dedup();
        assert_eq!(tools.len(), offered, "tool names are unique");
        ids.sort_unstable();
        ids.dedup();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(ids.len(), REGISTRY.len());
        assert_eq!(routes.len(), REGISTRY.len());
    }
}
