//! The OpenAPI 3.1 document, generated from the registry: every parameter with its type and
//! constraints, request bodies, response schemas, problem+json errors and the bearer scheme.
//! Schemas come from the same types that decode requests and encode responses, so the
//! document cannot say one thing while the server does another.

use schemars::generate::{Contract, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::operations::{Effect, Operation, REGISTRY};
use crate::services::approvals::Approval;
use crate::services::jobs::{JobEvent, JobView};

/// Error statuses every operation may answer, as problem+json.
const PROBLEMS: [(u16, &str); 8] = [
    (
        400,
        "invalid input: a parameter or the body does not match this document",
    ),
    (401, "missing, unknown, expired or revoked bearer token"),
    (403, "the token's scope does not allow this operation"),
    (404, "no such device, change or approval"),
    (
        409,
        "conflicts with the current state (already exists, not pending, …)",
    ),
    (429, "rate limit exceeded; see Retry-After"),
    (
        500,
        "internal error; the request ID finds it in the controller's log",
    ),
    (503, "a backing service or host is unavailable"),
];

fn schema<T: JsonSchema>(contract: Contract) -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
        s.contract = contract;
    });
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Value::Object(fields) = &mut schema {
        fields.remove("title");
        fields.remove("$defs");
    }
    schema
}

/// A request part's schema (as the server decodes it).
fn input<T: JsonSchema>() -> Value {
    schema::<T>(Contract::Deserialize)
}

/// A response's schema (as the server encodes it).
pub fn output<T: JsonSchema>() -> Value {
    schema::<T>(Contract::Serialize)
}

fn properties(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn required(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A parameter's schema without `null`: an absent parameter is how a query says "none".
fn without_null(mut schema: Value) -> Value {
    let Value::Object(fields) = &mut schema else {
        return schema;
    };
    if let Some(Value::Array(types)) = fields.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            fields.insert("type".into(), only);
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = fields.get(key) else {
            continue;
        };
        let kept: Vec<Value> = branches
            .iter()
            .filter(|b| b.get("type") != Some(&json!("null")))
            .cloned()
            .collect();
        if let [only] = kept.as_slice() {
            fields.remove(key);
            if let Value::Object(branch) = only {
                for (name, value) in branch {
                    fields.entry(name.clone()).or_insert(value.clone());
                }
            }
        }
    }
    schema
}

fn parameters<O: Operation>() -> Vec<Value> {
    let mut parameters = Vec::new();
    for (location, schema) in [("path", input::<O::Path>()), ("query", input::<O::Query>())] {
        let needed = required(&schema);
        for (name, property) in properties(&schema) {
            let description = property.get("description").cloned();
            let mut parameter = json!({
                "name": name,
                "in": location,
                "required": location == "path" || needed.contains(&name),
                "schema": without_null(property),
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameters.push(parameter);
        }
    }
    if O::JOB {
        parameters.push(json!({
            "name": "wait",
            "in": "query",
            "required": false,
            "description": "seconds (e.g. 30 or 30s, at most 300) to wait for the job: its \
                result if it ends within them, else 202 with the job",
            "schema": {"type": "string", "pattern": WAIT_PATTERN},
        }));
    }
    parameters
}

/// `?wait=` as the REST adapter accepts it: 0 to 300 seconds, `s` optional.
pub const WAIT_PATTERN: &str = "^([0-9]|[1-9][0-9]|[12][0-9][0-9]|300)s?$";

fn request_body<O: Operation>() -> Option<Value> {
    let body = input::<O::Body>();
    if properties(&body).is_empty() {
        return None;
    }
    Some(json!({
        "required": !required(&body).is_empty(),
        "content": {"application/json": {"schema": body}},
    }))
}

fn responses<O: Operation>() -> Value {
    let meta = &O::META;
    let mut responses = Map::new();
    let success = if meta.success == 204 {
        json!({"description": "done; no body"})
    } else {
        json!({
            "description": "success",
            "content": {"application/json": {"schema": output::<O::Response>()}},
        })
    };
    responses.insert(meta.success.to_string(), success);
    let accepted = match (meta.holdable(), O::JOB) {
        (true, true) => Some((
            "queued as a job, or held for another person's approval; see Location",
            json!({"anyOf": [output::<JobView>(), output::<Approval>()]}),
        )),
        (false, true) => Some(("queued as a job; see Location", output::<JobView>())),
        (true, false) => Some((
            "held for another person's approval; see Location",
            output::<Approval>(),
        )),
        (false, false) => None,
    };
    if let Some((description, schema)) = accepted {
        responses.insert(
            "202".into(),
            json!({
                "description": description,
                "headers": {"Location": {"schema": {"type": "string"},
                    "description": "the job, or the held request"}},
                "content": {"application/json": {"schema": schema}},
            }),
        );
    }
    for (status, _) in PROBLEMS {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{status}")}),
        );
    }
    Value::Object(responses)
}

/// The OpenAPI operation object of `O`.
pub fn operation<O: Operation>() -> Value {
    let meta = &O::META;
    let mut operation = json!({
        "operationId": meta.id,
        "summary": meta.summary,
        "description": meta.description,
        "parameters": parameters::<O>(),
        "security": [{"bearer": []}],
        "x-required-scope": meta.scope.as_str(),
        "x-effect": effect_name(meta.effect),
        "responses": responses::<O>(),
    });
    if let Some(body) = request_body::<O>() {
        operation["requestBody"] = body;
    }
    operation
}

fn effect_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Read => "read",
        Effect::Probe => "probe",
        Effect::DryRun => "dry_run",
        Effect::Mutation => "mutation",
        Effect::Decision => "decision",
    }
}

/// `O`'s arguments in the flat form (path, query and body fields side by side): the input
/// schema of an MCP tool that runs `O`.
pub fn arguments_schema<O: Operation>() -> Value {
    let mut all = Map::new();
    let mut needed: Vec<String> = Vec::new();
    for (schema, is_path) in [
        (input::<O::Path>(), true),
        (input::<O::Query>(), false),
        (input::<O::Body>(), false),
    ] {
        let part_required = required(&schema);
        for (name, property) in properties(&schema) {
            if is_path || part_required.contains(&name) {
                needed.push(name.clone());
            }
            // Path and query parameters are absent rather than null.
            let property = if is_path || !part_required.contains(&name) {
                without_null(property)
            } else {
                property
            };
            all.insert(name, property);
        }
    }
    json!({
        "type": "object",
        "properties": all,
        "required": needed,
        "additionalProperties": false,
    })
}

/// The one route that is not an operation: a job's events as Server-Sent Events.
fn job_events() -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "the job's events, oldest first, then live until the job ends: \
                each has an id (its number), an event name (its kind) and JSON data",
            "content": {"text/event-stream": {"schema": output::<JobEvent>()}},
        }),
    );
    for (status, _) in PROBLEMS {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{status}")}),
        );
    }
    json!({"get": {
        "operationId": "job_events",
        "summary": "A job's events as Server-Sent Events; resumes after Last-Event-ID",
        "description": "Step started and finished, progress n/m, log lines and the final \
            state; the stream ends after the final state.",
        "parameters": [
            {"name": "job", "in": "path", "required": true,
             "schema": {"type": "string", "pattern": crate::operations::params::JobId::PATTERN}},
            {"name": "Last-Event-ID", "in": "header", "required": false,
             "description": "the number of the last event received",
             "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
        ],
        "security": [{"bearer": []}],
        "x-required-scope": "read",
        "x-effect": "read",
        "responses": responses,
    }})
}

/// The other route that is not an operation: a series as an SVG chart.
fn metric_chart() -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "the series' history (min-max band and mean), its trend line, and \
                with a threshold the forecast's likely path inside its interval, up to the \
                crossing",
            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
        }),
    );
    for (status, _) in PROBLEMS {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{status}")}),
        );
    }
    let query = |name: &str, schema: Value, description: &str| {
        json!({"name": name, "in": "query", "required": false, "schema": schema,
            "description": description})
    };
    json!({"get": {
        "operationId": "metric_chart",
        "summary": "A series as an SVG chart: history, trend line and forecast band",
        "description": "Rendered on the controller, without JavaScript, for people and pages.",
        "parameters": [
            {"name": "device", "in": "path", "required": true,
             "schema": {"type": "string", "pattern": crate::operations::params::DeviceRef::PATTERN}},
            {"name": "series", "in": "query", "required": true,
             "description": "one series: a selector picking a single label set",
             "schema": {"type": "string", "pattern": crate::services::metrics::SERIES_SELECTOR}},
            query("window", json!({"type": "string"}), "history shown, e.g. 7d (default 30d)"),
            query("threshold", json!({"type": "number"}),
                "draws the threshold and the forecast to it (default 90 for *_percent series)"),
            query("horizon", json!({"type": "string"}), "how far the forecast reaches (default 30d)"),
        ],
        "security": [{"bearer": []}],
        "x-required-scope": "read",
        "x-effect": "read",
        "responses": responses,
    }})
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "request_id": {"type": "string", "description": "the correlation ID"},
        },
    })
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for entry in REGISTRY {
        let meta = entry.meta();
        let methods = paths
            .entry(format!("/api/v1{}", meta.path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = methods {
            methods.insert(meta.method.as_str().to_string(), entry.openapi());
        }
    }
    paths.insert("/api/v1/jobs/{job}/events".into(), job_events());
    paths.insert(
        "/api/v1/devices/{device}/metrics/chart".into(),
        metric_chart(),
    );
    let mut problems = Map::new();
    for (status, description) in PROBLEMS {
        problems.insert(
            status.to_string(),
            json!({
                "description": description,
                "content": {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}},
            }),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Infrastructor controller API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Fleet manager for Linux hosts. Every operation needs a bearer \
                token whose scope (read < operate < admin) is at least x-required-scope.",
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": problem_schema()},
            "responses": problems,
        },
        "paths": paths,
    })
}
