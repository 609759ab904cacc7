//! MCP tools: one per operation, named by its ID. The input schema comes from the operation
//! table (path and query parameters, the body's JSON Schema); each dispatcher arm converts the
//! arguments and calls the service method the REST handler calls.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::confirm::Confirmations;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::operations::{Operation, OPERATIONS};
use crate::services::checks::CheckHistoryQuery;
use crate::services::metrics::MetricQuery;
use crate::services::Services;

/// Every operation as a tool.
pub fn catalog() -> Vec<Tool> {
    OPERATIONS.iter().map(tool).collect()
}

fn tool(operation: &Operation) -> Tool {
    let annotations = ToolAnnotations::new()
        .read_only(!operation.mutating && operation.method == "get")
        .destructive(operation.mutating);
    let mut description = operation.summary.to_string();
    if operation.mutating {
        description.push_str(
            ". Two steps: the first call returns the plan and a confirmation_id; call again with \
             the same arguments plus confirmation_id to execute.",
        );
    }
    let mut tool = Tool::new(operation.id, description, Arc::new(input_schema(operation)));
    tool.annotations = Some(annotations);
    tool
}

/// The tool's input: the body's schema (if any) plus path and query parameters.
pub fn input_schema(operation: &Operation) -> JsonObject {
    let mut schema = match operation.body.map(|body| body()) {
        Some(Value::Object(schema)) => schema,
        _ => JsonObject::new(),
    };
    schema.remove("$schema");
    schema.remove("title");
    schema.insert("type".into(), json!("object"));
    let mut properties = match schema.remove("properties") {
        Some(Value::Object(properties)) => properties,
        _ => JsonObject::new(),
    };
    let mut required: Vec<Value> = match schema.remove("required") {
        Some(Value::Array(required)) => required,
        _ => Vec::new(),
    };
    for (param, description) in path_params(operation) {
        properties.insert(
            param.into(),
            json!({"type": "string", "description": description}),
        );
        required.push(json!(param));
    }
    for (name, description) in operation.query {
        properties.insert(
            (*name).into(),
            json!({"type": "string", "description": description}),
        );
    }
    if operation.id == "query_metrics" {
        required.push(json!("series"));
    }
    if operation.mutating {
        properties.insert(
            "confirmation_id".into(),
            json!({"type": "string", "description": "from the plan returned by the first call; omit it to get the plan"}),
        );
    }
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("required".into(), Value::Array(required));
    schema.insert("additionalProperties".into(), json!(false));
    schema
}

fn path_params(operation: &Operation) -> Vec<(&'static str, &'static str)> {
    let mut params = Vec::new();
    if operation.path.contains("{device}") {
        params.push(("device", "device ID or name"));
    }
    if operation.path.contains("{change}") {
        params.push(("change", "change ID"));
    }
    params
}

/// Runs tool `name`. Mutating tools go through plan → confirm first.
pub async fn call(
    services: &Services,
    confirmations: &Confirmations,
    ctx: &Ctx,
    name: &str,
    mut arguments: JsonObject,
) -> Result<Value> {
    let operation = OPERATIONS
        .iter()
        .find(|o| o.id == name)
        .ok_or_else(|| Error::NotFound(format!("no tool {name:?}; see tools/list")))?;
    if operation.mutating {
        let confirmation = match arguments.remove("confirmation_id") {
            None => None,
            Some(Value::String(id)) => Some(id),
            Some(_) => return Err(Error::invalid("confirmation_id must be a string")),
        };
        match confirmation {
            None => {
                let preview = preview(services, ctx, name, &arguments).await?;
                return Ok(confirmations.plan(ctx, name, &arguments, preview));
            }
            Some(id) => confirmations.redeem(ctx, &id, name, &arguments)?,
        }
    }
    let mut args = Args(arguments);
    let value = match name {
        "list_devices" => to_json(services.list_devices(ctx).await?),
        "create_agentless_device" => {
            to_json(services.create_agentless_device(ctx, args.body()?).await?)
        }
        "get_device" => to_json(services.get_device(ctx, &args.only("device")?).await?),
        "delete_device" => {
            let device = args.required("device")?;
            args.done()?;
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
            let limit = match args.optional("limit")? {
                Some(limit) => Some(
                    limit
                        .parse()
                        .map_err(|_| Error::invalid("limit must be a number"))?,
                ),
                None => None,
            };
            args.done()?;
            to_json(services.list_changes(ctx, device.as_deref(), limit).await?)
        }
        "get_change" => to_json(services.get_change(ctx, &args.only("change")?).await?),
        "confirm_change" => to_json(services.confirm_change(ctx, &args.only("change")?).await?),
        "rollback_change" => to_json(services.rollback_change(ctx, &args.only("change")?).await?),
        other => return Err(Error::Internal(format!("tool {other} has no adapter"))),
    };
    Ok(value)
}

/// What a mutating call would do, shown before it is confirmed: the dry run for a change
/// deployment, the current state of what would be deleted or rolled back.
async fn preview(
    services: &Services,
    ctx: &Ctx,
    name: &str,
    arguments: &JsonObject,
) -> Result<Value> {
    let mut args = Args(arguments.clone());
    Ok(match name {
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

/// Tool arguments, taken one by one; anything left over is an error, as with REST.
struct Args(JsonObject);

impl Args {
    fn optional(&mut self, name: &str) -> Result<Option<String>> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(Error::invalid(format!("argument {name} must be a string"))),
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
