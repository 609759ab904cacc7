//! The REST operations as data: one table feeds the OpenAPI document and the route parity
//! test, so documentation and routing cannot drift apart.

use serde_json::{json, Map, Value};

use crate::auth::Scope;

pub struct Operation {
    pub id: &'static str,
    pub method: &'static str,
    /// axum path syntax under `/api/v1`, e.g. `/devices/{device}`.
    pub path: &'static str,
    pub scope: Scope,
    pub summary: &'static str,
    pub query: &'static [(&'static str, &'static str)],
}

pub const OPERATIONS: &[Operation] = &[
    Operation {
        id: "list_devices",
        method: "get",
        path: "/devices",
        scope: Scope::Read,
        summary: "List devices with status and headline metrics",
        query: &[],
    },
    Operation {
        id: "create_agentless_device",
        method: "post",
        path: "/devices",
        scope: Scope::Operate,
        summary: "Register an agentless device reached over SSH: {name, ssh_address, ssh_user, ssh_host_key}",
        query: &[],
    },
    Operation {
        id: "get_device",
        method: "get",
        path: "/devices/{device}",
        scope: Scope::Read,
        summary: "One device by ID or name",
        query: &[],
    },
    Operation {
        id: "delete_device",
        method: "delete",
        path: "/devices/{device}",
        scope: Scope::Admin,
        summary: "Delete a device; revokes its certificate and ends its stream",
        query: &[],
    },
    Operation {
        id: "query_metrics",
        method: "get",
        path: "/devices/{device}/metrics",
        scope: Scope::Read,
        summary: "avg/min/max/count per bucket; raw samples or a rollup chosen by step and range",
        query: &[
            ("series", "name or name{label=value,...} (required)"),
            (
                "from",
                "RFC 3339, Unix ms, 'now' or relative like -1h (default: to - 1h)",
            ),
            ("to", "same forms (default: now)"),
            (
                "step",
                "bucket width like 30s, 5m, 1h (default: range / 240)",
            ),
        ],
    },
    Operation {
        id: "latest_metrics",
        method: "get",
        path: "/devices/{device}/metrics/latest",
        scope: Scope::Read,
        summary: "The newest sample of every series of the device",
        query: &[],
    },
    Operation {
        id: "list_checks",
        method: "get",
        path: "/devices/{device}/checks",
        scope: Scope::Read,
        summary: "The newest report of every host check (docker, zfs, systemd, logs)",
        query: &[],
    },
    Operation {
        id: "run_checks",
        method: "post",
        path: "/devices/{device}/checks/run",
        scope: Scope::Operate,
        summary: "Run every applicable check now (through the agent) and return the fresh results",
        query: &[],
    },
    Operation {
        id: "check_history",
        method: "get",
        path: "/devices/{device}/checks/history",
        scope: Scope::Read,
        summary: "Check reports, newest first",
        query: &[
            ("check", "only this check, e.g. zfs.pool:tank"),
            ("limit", "1 to 1000 (default 100)"),
        ],
    },
    Operation {
        id: "device_capabilities",
        method: "get",
        path: "/devices/{device}/capabilities",
        scope: Scope::Read,
        summary: "What the host has: docker, zfs, systemd, journald",
        query: &[],
    },
    Operation {
        id: "list_containers",
        method: "get",
        path: "/devices/{device}/containers",
        scope: Scope::Read,
        summary: "Containers as of the latest Docker check",
        query: &[],
    },
    Operation { id: "diagnose_device", method: "post", path: "/devices/{device}/diagnose", scope: Scope::Operate, summary: "Diagnose one device: fresh checks (when its agent is online), liveness, findings, recommended actions, a 0-100 score", query: &[] },
    Operation { id: "diagnose_infrastructure", method: "post", path: "/diagnose", scope: Scope::Operate, summary: "Diagnose every device in parallel (bounded, per-device timeout) plus system checks; overall status and 0-100 score", query: &[] },
    Operation { id: "ssh_public_key", method: "get", path: "/ssh-public-key", scope: Scope::Read, summary: "The controller's SSH public key, for authorized_keys on agentless hosts", query: &[] },
    Operation {
        id: "create_enrollment_token",
        method: "post",
        path: "/enrollment-tokens",
        scope: Scope::Admin,
        summary:
            "Create a single-use join token: {expires_in?: \"1h\"}; returns the enroll command",
        query: &[],
    },
    Operation { id: "plan_change", method: "post", path: "/changes/plan", scope: Scope::Operate, summary: "Dry run of a configuration change: {devices, change: {files, validators, actions, health_checks}}; per-device unified diffs and validator output, nothing live touched", query: &[] },
    Operation { id: "deploy_change", method: "post", path: "/changes", scope: Scope::Operate, summary: "Apply a configuration change: prepare on every device (any failure aborts all), commit all at once or rolling (options.max_parallel), confirm once every health check passed, otherwise roll back", query: &[] },
    Operation { id: "list_changes", method: "get", path: "/changes", scope: Scope::Read, summary: "Change history, newest first", query: &[("device", "only changes that targeted this device"), ("limit", "1 to 1000 (default 50)")] },
    Operation { id: "get_change", method: "get", path: "/changes/{change}", scope: Scope::Read, summary: "One change: state, who asked and when, per-device state, diffs, validator and health results", query: &[] },
    Operation { id: "confirm_change", method: "post", path: "/changes/{change}/confirm", scope: Scope::Operate, summary: "Keep a change deployed with auto_confirm=false (before its confirmation deadline)", query: &[] },
    Operation { id: "rollback_change", method: "post", path: "/changes/{change}/rollback", scope: Scope::Operate, summary: "Roll an applied change back on every device: originals restored, actions re-run", query: &[] },
];

pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let mut parameters: Vec<Value> = Vec::new();
        if operation.path.contains("{device}") {
            parameters.push(json!({"name": "device", "in": "path", "required": true, "description": "device ID or name", "schema": {"type": "string"}}));
        }
        if operation.path.contains("{change}") {
            parameters.push(json!({"name": "change", "in": "path", "required": true, "description": "change ID", "schema": {"type": "string"}}));
        }
        for (name, description) in operation.query {
            parameters.push(json!({"name": name, "in": "query", "required": operation.id == "query_metrics" && *name == "series", "description": description, "schema": {"type": "string"}}));
        }
        let entry = paths
            .entry(format!("/api/v1{}", operation.path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(
                operation.method.to_string(),
                json!({
                    "operationId": operation.id,
                    "summary": operation.summary,
                    "parameters": parameters,
                    "security": [{"bearer": []}],
                    "x-required-scope": operation.scope.as_str(),
                    "responses": {
                        "200": {"description": "success"},
                        "400": {"description": "invalid input", "content": {"application/problem+json": {}}},
                        "401": {"description": "missing or invalid token"},
                        "403": {"description": "token lacks the required scope"},
                        "404": {"description": "not found"}
                    }
                }),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Infrastructor controller API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}
