//! Every operation the controller offers, as data. One table feeds the REST router, the
//! OpenAPI document and the MCP tool list, so the surfaces cannot drift apart; [`invoke`]
//! runs any of them from JSON arguments (MCP tools, approved requests).

pub mod invoke;

use serde_json::{json, Value};

use crate::auth::Scope;
use crate::services::changes::ChangeRequest;
use crate::services::devices::CreateAgentlessDevice;
use crate::services::enrollment::CreateEnrollmentToken;

/// The JSON Schema of `T`, for request bodies.
fn schema<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_else(|_| json!({"type": "object"}))
}

pub struct Operation {
    pub id: &'static str,
    pub method: &'static str,
    /// axum path syntax under `/api/v1`, e.g. `/devices/{device}`.
    pub path: &'static str,
    pub scope: Scope,
    pub summary: &'static str,
    pub query: &'static [(&'static str, &'static str)],
    /// JSON Schema of the request body, for operations that take one.
    pub body: Option<fn() -> Value>,
    /// Changes state (devices, tokens, files on hosts): audited, and plan → confirm over MCP.
    pub mutating: bool,
    /// Recorded in the audit log: every mutation, and privileged reads — a dry run of a
    /// change runs validators as root on hosts.
    pub audited: bool,
    /// Offered as an MCP tool. Only a human's decisions (approvals) are REST-only: an MCP
    /// client must not approve its own request.
    pub mcp: bool,
}

pub const OPERATIONS: &[Operation] = &[
    Operation {
        id: "list_devices",
        method: "get",
        path: "/devices",
        scope: Scope::Read,
        summary: "List devices with status and headline metrics",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "create_agentless_device",
        method: "post",
        path: "/devices",
        scope: Scope::Operate,
        summary: "Register an agentless device reached over SSH: {name, ssh_address, ssh_user, ssh_host_key}",
        query: &[],
        body: Some(schema::<CreateAgentlessDevice>),
        mutating: true,
        audited: true,
        mcp: true,
    },
    Operation {
        id: "get_device",
        method: "get",
        path: "/devices/{device}",
        scope: Scope::Read,
        summary: "One device by ID or name",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "delete_device",
        method: "delete",
        path: "/devices/{device}",
        scope: Scope::Admin,
        summary: "Delete a device; revokes its certificate and ends its stream",
        query: &[],
        body: None,
        mutating: true,
        audited: true,
        mcp: true,
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
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "latest_metrics",
        method: "get",
        path: "/devices/{device}/metrics/latest",
        scope: Scope::Read,
        summary: "The newest sample of every series of the device",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "list_checks",
        method: "get",
        path: "/devices/{device}/checks",
        scope: Scope::Read,
        summary: "The newest report of every host check (docker, zfs, systemd, logs)",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "run_checks",
        method: "post",
        path: "/devices/{device}/checks/run",
        scope: Scope::Operate,
        summary: "Run every applicable check now (through the agent) and return the fresh results",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
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
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "device_capabilities",
        method: "get",
        path: "/devices/{device}/capabilities",
        scope: Scope::Read,
        summary: "What the host has: docker, zfs, systemd, journald",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "list_containers",
        method: "get",
        path: "/devices/{device}/containers",
        scope: Scope::Read,
        summary: "Containers as of the latest Docker check",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "diagnose_device",
        method: "post",
        path: "/devices/{device}/diagnose",
        scope: Scope::Operate,
        summary: "Diagnose one device: fresh checks (when its agent is \
        online), liveness, findings, recommended actions, a 0-100 \
        score",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "diagnose_infrastructure",
        method: "post",
        path: "/diagnose",
        scope: Scope::Operate,
        summary: "Diagnose every device in parallel (bounded, per-device \
        timeout) plus system checks; overall status and 0-100 score",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "ssh_public_key",
        method: "get",
        path: "/ssh-public-key",
        scope: Scope::Read,
        summary: "The controller's SSH public key, for authorized_keys on \
        agentless hosts",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "create_enrollment_token",
        method: "post",
        path: "/enrollment-tokens",
        scope: Scope::Admin,
        summary:
            "Create a single-use join token: {expires_in?: \"1h\"}; returns the enroll command",
        query: &[],
        body: Some(schema::<CreateEnrollmentToken>),
        mutating: true,
        audited: true,
        mcp: true,
    },
    Operation {
        id: "plan_change",
        method: "post",
        path: "/changes/plan",
        scope: Scope::Operate,
        summary: "Dry run of a configuration change: {devices, change: \
        {files, validators, actions, health_checks}}; per-device \
        unified diffs and validator output, nothing live touched",
        query: &[],
        body: Some(schema::<ChangeRequest>),
        mutating: false,
        audited: true,
        mcp: true,
    },
    Operation {
        id: "deploy_change",
        method: "post",
        path: "/changes",
        scope: Scope::Operate,
        summary: "Apply a configuration change: prepare on every device (any \
        failure aborts all), commit all at once or rolling \
        (options.max_parallel), confirm once every health check \
        passed, otherwise roll back",
        query: &[],
        body: Some(schema::<ChangeRequest>),
        mutating: true,
        audited: true,
        mcp: true,
    },
    Operation {
        id: "list_changes",
        method: "get",
        path: "/changes",
        scope: Scope::Read,
        summary: "Change history, newest first",
        query: &[("device", "only changes that targeted this device"), ("limit", "1 to 1000 (default 50)")],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "get_change",
        method: "get",
        path: "/changes/{change}",
        scope: Scope::Read,
        summary: "One change: state, who asked and when, per-device state, \
        diffs, validator and health results",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "confirm_change",
        method: "post",
        path: "/changes/{change}/confirm",
        scope: Scope::Operate,
        summary: "Keep a change deployed with auto_confirm=false (before its \
        confirmation deadline)",
        query: &[],
        body: None,
        mutating: true,
        audited: true,
        mcp: true,
    },
    Operation {
        id: "rollback_change",
        method: "post",
        path: "/changes/{change}/rollback",
        scope: Scope::Operate,
        summary: "Roll an applied change back on every device: originals \
        restored, actions re-run",
        query: &[],
        body: None,
        mutating: true,
        audited: true,
        mcp: true,
    },
    Operation {
        id: "list_audit",
        method: "get",
        path: "/audit",
        scope: Scope::Admin,
        summary: "Audit log of every mutation from any surface, newest first: \
        principal, surface, correlation ID, redacted arguments, \
        outcome",
        query: &[("principal", "only this principal, e.g. token:<id>"),
            ("operation", "only this operation ID"),
            ("request_id", "only this correlation ID"),
            ("before_id", "records older than this ID (paging)"),
            ("limit", "1 to 1000 (default 100)")],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "performance_summary",
        method: "get",
        path: "/performance/summary",
        scope: Scope::Read,
        summary: "Per operation and surface over a window: count, error rate, \
        mean and p50/p95/p99 latency",
        query: &[("window", "how far back, like 15m, 1h, 7d (default 1h)")],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "list_approvals",
        method: "get",
        path: "/approvals",
        scope: Scope::Read,
        summary: "Requests held for another person's approval (from REST or \
        MCP), newest first",
        query: &[("state", "pending, approved, rejected or expired"), ("limit", "1 to 1000 (default 50)")],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "get_approval",
        method: "get",
        path: "/approvals/{approval}",
        scope: Scope::Read,
        summary: "One held request: its plan, state and, once decided, the \
        outcome",
        query: &[],
        body: None,
        mutating: false,
        audited: false,
        mcp: true,
    },
    Operation {
        id: "approve_request",
        method: "post",
        path: "/approvals/{approval}/approve",
        scope: Scope::Admin,
        summary: "Approve a held request: it runs now, with the requester's \
        scope; the approver must be another person",
        query: &[],
        body: None,
        mutating: true,
        audited: true,
        mcp: false,
    },
    Operation {
        id: "reject_request",
        method: "post",
        path: "/approvals/{approval}/reject",
        scope: Scope::Admin,
        summary: "Reject a held request; it never runs",
        query: &[],
        body: None,
        mutating: true,
        audited: true,
        mcp: false,
    },
];

/// The operation served at `route` (an axum route template, with or without the `/api/v1`
/// prefix) for `method`.
pub fn by_route(method: &str, route: &str) -> Option<&'static Operation> {
    let path = route.strip_prefix("/api/v1").unwrap_or(route);
    OPERATIONS
        .iter()
        .find(|o| o.path == path && o.method.eq_ignore_ascii_case(method))
}

impl Operation {
    /// Whether a request for it may be held for approval: every mutation except a human's
    /// decisions themselves (approve, reject).
    pub fn holdable(&self) -> bool {
        self.mutating && self.mcp
    }
}

pub fn by_id(id: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.id == id)
}
