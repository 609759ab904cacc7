//! The one execution pipeline every call passes, whatever its surface: scope check (before
//! the request is decoded, so a read token's large POST is a 403, not a 400) → decoding →
//! plan → confirm (MCP mutations) → approval hold → run (or, for a long-running operation,
//! queue a job) → audit → timing. REST, MCP and the runner of approved requests are adapters
//! over [`execute`]; the job runner calls the operation's `run` itself.

use std::future::Future;
use std::time::Instant;

use serde_json::Value;

use super::{Arguments, Input, Operation};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::services::approvals::Approval;
use crate::services::audit::AuditOutcome;
use crate::services::jobs::JobView;
use crate::services::Services;

/// The surface a call came from, as the audit log and timings name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Rest,
    Mcp,
    /// A step of a DR plan run.
    DrPlan,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Mcp => "mcp",
            Self::DrPlan => "dr_plan",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "rest" => Ok(Self::Rest),
            "mcp" => Ok(Self::Mcp),
            "dr_plan" => Ok(Self::DrPlan),
            other => Err(Error::Internal(format!("unknown surface {other:?}"))),
        }
    }
}

/// How a call arrived, which decides the steps it passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    Rest,
    /// Through the MCP tool `tool`: mutations run only with the confirmation ID of their plan.
    Mcp {
        tool: &'static str,
        confirmation: Option<String>,
    },
    /// A held request a human approved: it is neither confirmed nor held again.
    Approved {
        surface: Surface,
    },
    /// A step of a DR plan whose run was itself confirmed (and approved, where the caller
    /// needs approval): neither confirmed nor held again.
    PlanStep,
}

impl How {
    pub fn surface(&self) -> Surface {
        match self {
            Self::Rest => Surface::Rest,
            Self::Mcp { .. } => Surface::Mcp,
            Self::Approved { surface } => *surface,
            Self::PlanStep => Surface::DrPlan,
        }
    }
}

/// What a call ended in.
#[derive(Debug)]
pub enum Outcome<R> {
    Done(R),
    /// Held for another person's approval.
    Held(Box<Approval>),
    /// An MCP mutation's first call: its plan and confirmation ID.
    Planned(Value),
    /// Queued as a durable job.
    Accepted(Box<JobView>),
}

impl<R: serde::Serialize> Outcome<R> {
    pub fn into_json(self) -> Outcome<Value> {
        match self {
            Self::Done(response) => {
                Outcome::Done(serde_json::to_value(response).unwrap_or(Value::Null))
            }
            Self::Held(approval) => Outcome::Held(approval),
            Self::Planned(plan) => Outcome::Planned(plan),
            Self::Accepted(job) => Outcome::Accepted(job),
        }
    }
}

/// A decoded request, or why it could not be, with the arguments as the caller sent them
/// (for the audit of a refused mutation).
pub type Decoded<O> = (Result<Input<O>>, Arguments);

/// Runs operation `O` for `ctx`. `decode` runs only once the caller's scope allows `O`.
pub async fn execute<O: Operation>(
    services: &Services,
    ctx: &Ctx,
    how: How,
    decode: impl Future<Output = Decoded<O>> + Send,
) -> Result<Outcome<O::Response>> {
    let started = Instant::now();
    let surface = how.surface();
    let result = steps::<O>(services, ctx, how, decode).await;
    let failed = result
        .as_ref()
        .is_err_and(|e| crate::rest::problem::status_for(e.kind()).is_server_error());
    services.record_operation(surface.as_str(), O::META.id, started.elapsed(), failed);
    result
}

async fn steps<O: Operation>(
    services: &Services,
    ctx: &Ctx,
    how: How,
    decode: impl Future<Output = Decoded<O>> + Send,
) -> Result<Outcome<O::Response>> {
    let meta = &O::META;
    let surface = how.surface();
    let audit = |arguments: Arguments, outcome: AuditOutcome| async move {
        if meta.audited() {
            let arguments = Value::Object(arguments);
            services
                .audit(ctx, surface.as_str(), meta.id, &arguments, outcome)
                .await;
        }
    };
    // No plan, confirmation or held request is ever handed to a caller who could not run
    // the operation.
    if let Err(error) = ctx.principal.require(meta.scope) {
        audit(Arguments::new(), AuditOutcome::error(&error)).await;
        return Err(error);
    }
    let (decoded, sent) = decode.await;
    let input = match decoded {
        Ok(input) => input,
        Err(error) => {
            audit(sent, AuditOutcome::error(&error)).await;
            return Err(error);
        }
    };
    let arguments = input.to_arguments();
    if let How::Mcp { tool, confirmation } = &how {
        let first_call = confirm::<O>(
            services,
            ctx,
            tool,
            confirmation.as_deref(),
            &input,
            &arguments,
        );
        if let Some(plan) = first_call.await? {
            return Ok(Outcome::Planned(plan));
        }
    }
    let may_hold = meta.holdable() && !matches!(how, How::Approved { .. } | How::PlanStep);
    if services.needs_approval(ctx, may_hold) {
        let held = async {
            let plan = O::preview(services, ctx, &input).await?;
            services
                .hold_for_approval(ctx, surface, meta.id, &arguments, plan)
                .await
        }
        .await;
        let outcome = match &held {
            Ok(_) => AuditOutcome::pending_approval(),
            Err(error) => AuditOutcome::error(error),
        };
        audit(arguments, outcome).await;
        return held.map(|approval| Outcome::Held(Box::new(approval)));
    }
    if O::JOB {
        let queued = async {
            let claims = O::claims(services, ctx, &input).await?;
            services
                .submit_job(ctx, surface.as_str(), meta.id, &arguments, claims)
                .await
        }
        .await;
        let outcome = match &queued {
            Ok(job) => AuditOutcome::accepted(&job.id),
            Err(error) => AuditOutcome::error(error),
        };
        audit(arguments, outcome).await;
        let job = queued?;
        crate::jobs::runner::spawn(services.clone(), job.id.clone());
        return Ok(Outcome::Accepted(Box::new(job)));
    }
    let result = match tokio::time::timeout_at(ctx.deadline, O::run(services, ctx, input)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Unavailable(format!(
            "{} did not finish before its deadline",
            meta.id
        ))),
    };
    let outcome = match (&result, &how) {
        (Ok(_), How::Rest) => AuditOutcome::ok_with_status(meta.success),
        _ => AuditOutcome::of(&result),
    };
    audit(arguments, outcome).await;
    result.map(Outcome::Done)
}

/// MCP's plan → confirm. A mutation's first call answers with its plan (`Some`); a call with
/// the plan's confirmation ID, or a call that changes nothing, goes on (`None`).
async fn confirm<O: Operation>(
    services: &Services,
    ctx: &Ctx,
    tool: &str,
    confirmation: Option<&str>,
    input: &Input<O>,
    arguments: &Arguments,
) -> Result<Option<Value>> {
    let meta = &O::META;
    match (meta.mutating(), confirmation) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(Error::invalid(
            "unknown argument \"confirmation_id\": this tool changes nothing",
        )),
        (true, Some(id)) => {
            services.confirmations.redeem(ctx, id, meta.id, arguments)?;
            Ok(None)
        }
        (true, None) => {
            let plan = O::preview(services, ctx, input).await;
            if O::PLAN_IS_DRY_RUN {
                let outcome = match &plan {
                    Ok(_) => AuditOutcome::planned(),
                    Err(error) => AuditOutcome::error(error),
                };
                let sent = Value::Object(arguments.clone());
                let surface = Surface::Mcp.as_str();
                services.audit(ctx, surface, meta.id, &sent, outcome).await;
            }
            let planned = services
                .confirmations
                .plan(ctx, tool, meta.id, arguments, plan?)?;
            Ok(Some(planned))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::{Principal, Scope};
    use crate::operations::{Effect, Meta, Method, Nothing};

    /// An operation that would take an hour.
    struct Slow;

    impl Operation for Slow {
        const META: Meta = Meta {
            id: "slow",
            method: Method::Get,
            path: "/slow",
            scope: Scope::Read,
            effect: Effect::Read,
            summary: "takes an hour",
            description: "takes an hour",
            success: 200,
            tool: None,
        };
        type Path = Nothing;
        type Query = Nothing;
        type Body = Nothing;
        type Response = Nothing;

        async fn run(_: &Services, _: &Ctx, _: Input<Self>) -> Result<Nothing> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Nothing {})
        }
    }

    #[tokio::test]
    async fn an_operation_past_its_deadline_is_stopped_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::ControllerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let services = crate::server::open_services(&config).await.unwrap();
        // Paused once the database is open (its pool's own timeouts run on real time).
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let ctx = Ctx::new(Principal::token("t", "t", Scope::Read, "t"), "r")
            .with_deadline(started + Duration::from_secs(5));
        let decode = async {
            (
                Input::<Slow>::from_arguments(Arguments::new()),
                Arguments::new(),
            )
        };
        let error = execute::<Slow>(&services, &ctx, How::Rest, decode)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("deadline"), "{error}");
        assert_eq!(error.kind(), crate::error::ErrorKind::Unavailable);
        // Stopped at the deadline, not after the hour.
        let stopped = started.elapsed();
        assert!(
            stopped >= Duration::from_secs(5) && stopped < Duration::from_secs(6),
            "{stopped:?}"
        );
        tokio::time::resume();
        services.store.close().await;
    }
}
