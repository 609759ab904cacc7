//! Runs any operation from JSON arguments (path and query parameters plus the body's fields,
//! flat), the way MCP tools and approved requests call them. Each arm converts the arguments
//! and calls the service method the REST handler calls; unknown or extra arguments are
//! refused, as with REST.

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::services::audit::AuditQuery;
use crate::services::checks::CheckHistoryQuery;
use crate::services::metrics::MetricQuery;
use crate::services::Services;

pub type Arguments = Map<String, Value>;

/// Runs operation `id` with `arguments`.
pub async fn invoke(
    services: &Services,
    ctx: &Ctx,
    id: &str,
    arguments: Arguments,
) -> Result<Value> {
    let mut args = Args(arguments);
    let value = match id {
        "list_devices" => {
            args.done()?;
            to_json(services.list_devices(ctx).await?)
        }
        "create_agentless_device" => {
            to_json(services.create_agentless_device(ctx, args.body()?).await?)
        }
        "get_device" => to_json(services.get_device(ctx, &args.only("device")?).await?),
        "delete_device" => {
            let device = args.only("device")?;
            services.delete_device(ctx, &device).await?;
            json!({"deleted": device})
        }
        "query_metrics" => {
            let device = args.required("device")?;
            let query = MetricQuery {
                series: args.optional("series")?,
                from: args.optional("from")?,
                to: args.optional("to")?,
                step: args.optional("step")?,
            };
            args.done()?;
            to_json(services.query_metrics(ctx, &device, query).await?)
        }
        "latest_metrics" => to_json(services.latest_metrics(ctx, &args.only("device")?).await?),
        "list_checks" => to_json(services.list_checks(ctx, &args.only("device")?).await?),
        "run_checks" => to_json(services.run_checks(ctx, &args.only("device")?).await?),
        "check_history" => {
            let device = args.required("device")?;
            let query = CheckHistoryQuery {
                check: args.optional("check")?,
                limit: args.optional("limit")?,
            };
            args.done()?;
            to_json(services.check_history(ctx, &device, query).await?)
        }
        "device_capabilities" => to_json(
            services
                .device_capabilities(ctx, &args.only("device")?)
                .await?,
        ),
        "list_containers" => to_json(services.list_containers(ctx, &args.only("device")?).await?),
        "diagnose_device" => to_json(services.diagnose_device(ctx, &args.only("device")?).await?),
        "diagnose_infrastructure" => {
            args.done()?;
            to_json(services.diagnose_infrastructure(ctx).await?)
        }
        "ssh_public_key" => {
            args.done()?;
            to_json(services.ssh_public_key(ctx)?)
        }
        "create_enrollment_token" => {
            to_json(services.create_enrollment_token(ctx, args.body()?).await?)
        }
        "plan_change" => to_json(services.plan_change(ctx, args.body()?).await?),
        "deploy_change" => to_json(services.deploy_change(ctx, args.body()?).await?),
        "list_changes" => {
            let device = args.optional("device")?;
            let limit = args.number("limit")?;
            args.done()?;
            to_json(services.list_changes(ctx, device.as_deref(), limit).await?)
        }
        "get_change" => to_json(services.get_change(ctx, &args.only("change")?).await?),
        "confirm_change" => to_json(services.confirm_change(ctx, &args.only("change")?).await?),
        "rollback_change" => to_json(services.rollback_change(ctx, &args.only("change")?).await?),
        "list_audit" => {
            let query = AuditQuery {
                principal: args.optional("principal")?,
                operation: args.optional("operation")?,
                request_id: args.optional("request_id")?,
                before_id: args.number("before_id")?,
                limit: args.number("limit")?,
            };
            args.done()?;
            to_json(services.list_audit(ctx, query).await?)
        }
        "performance_summary" => {
            let window = args.optional("window")?;
            args.done()?;
            to_json(services.performance_summary(ctx, window.as_deref()).await?)
        }
        "list_approvals" => {
            let state = args.optional("state")?;
            let limit = args.number("limit")?;
            args.done()?;
            to_json(
                services
                    .list_approvals(ctx, state.as_deref(), limit)
                    .await?,
            )
        }
        "get_approval" => to_json(services.get_approval(ctx, &args.only("approval")?).await?),
        "approve_request" => {
            to_json(Box::pin(services.approve_request(ctx, &args.only("approval")?)).await?)
        }
        "reject_request" => to_json(
            services
                .reject_request(ctx, &args.only("approval")?)
                .await?,
        ),
        other => return Err(Error::NotFound(format!("no operation {other:?}"))),
    };
    Ok(value)
}

/// What a mutating call would do, shown before it runs: the dry run for a change deployment,
/// the current state of what would be deleted or rolled back, the checked arguments otherwise.
pub async fn preview(
    services: &Services,
    ctx: &Ctx,
    id: &str,
    arguments: &Arguments,
) -> Result<Value> {
    let mut args = Args(arguments.clone());
    Ok(match id {
        "deploy_change" => to_json(services.plan_change(ctx, args.body()?).await?),
        "delete_device" => to_json(services.get_device(ctx, &args.only("device")?).await?),
        "confirm_change" | "rollback_change" => {
            to_json(services.get_change(ctx, &args.only("change")?).await?)
        }
        "create_agentless_device" => {
            let _: crate::services::devices::CreateAgentlessDevice = args.body()?;
            Value::Object(arguments.clone())
        }
        "create_enrollment_token" => {
            let _: crate::services::enrollment::CreateEnrollmentToken = args.body()?;
            Value::Object(arguments.clone())
        }
        _ => Value::Object(arguments.clone()),
    })
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Arguments, taken one by one; anything left over is an error.
struct Args(Arguments);

impl Args {
    fn optional(&mut self, name: &str) -> Result<Option<String>> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(Error::invalid(format!("argument {name} must be a string"))),
        }
    }

    fn number(&mut self, name: &str) -> Result<Option<i64>> {
        match self.optional(name)? {
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| Error::invalid(format!("argument {name} must be a number"))),
            None => Ok(None),
        }
    }

    fn required(&mut self, name: &str) -> Result<String> {
        self.optional(name)?
            .ok_or_else(|| Error::invalid(format!("argument {name} is required")))
    }

    /// The one required argument `name`, and nothing else.
    fn only(&mut self, name: &str) -> Result<String> {
        let value = self.required(name)?;
        self.done()?;
        Ok(value)
    }

    fn done(&self) -> Result<()> {
        match self.0.keys().next() {
            Some(extra) => Err(Error::invalid(format!("unknown argument {extra:?}"))),
            None => Ok(()),
        }
    }

    /// Everything left, as the operation's request body.
    fn body<T: DeserializeOwned>(&mut self) -> Result<T> {
        let body = Value::Object(std::mem::take(&mut self.0));
        serde_json::from_value(body).map_err(|e| Error::invalid(format!("invalid arguments: {e}")))
    }
}
