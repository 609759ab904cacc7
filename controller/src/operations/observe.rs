//! Watching hosts: metrics, host checks, capabilities, containers, and diagnoses.

use serde_json::Value;

use super::params::DevicePath;
use super::{Effect, Input, Meta, Method, Nothing, Operation, Tool};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::services::checks::DeviceOverview as Overview;
use crate::services::checks::{Capabilities, CheckHistoryQuery, CheckView};
use crate::services::diagnostics::{DeviceDiagnosis, DiagnoseQuery, InfrastructureDiagnosis};
use crate::services::metrics::{LatestValue, MetricQuery, MetricQueryResult};
use crate::services::Services;

pub struct DeviceOverview;

impl Operation for DeviceOverview {
    const META: Meta = Meta {
        id: "device_overview",
        method: Method::Get,
        path: "/devices/{device}/overview",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "One device at a glance: the device, its capabilities and its check verdicts",
        description: "The device with its status and headline metrics, what the host has \
            (docker, zfs, systemd, journald), and the newest verdict of every check, worst \
            first, without evidence.",
        success: 200,
        tool: Some(Tool::read(
            "get_device",
            "Get one device",
            "Use to look at one host: returns the device (kind, status, addresses, agent \
            version, headline CPU/memory/load), its capabilities, how many checks fail, and \
            every check's newest verdict worst first (status and one-line message; no \
            evidence). Stored state only: use diagnose_device for a fresh look. Example: \
            {\"device\": \"nas\"}",
        )),
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Overview;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .device_overview(ctx, input.path.device.as_str())
            .await
    }
}

pub struct QueryMetrics;

impl Operation for QueryMetrics {
    const META: Meta = Meta {
        id: "query_metrics",
        method: Method::Get,
        path: "/devices/{device}/metrics",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "avg/min/max/count per bucket; raw samples or a rollup chosen by step and range",
        description: "One series (optionally filtered by labels) over a time range, in buckets \
            of `step`. The controller answers from raw samples, 5-minute or 1-hour rollups, \
            whichever covers the range at that step.",
        success: 200,
        tool: Some(Tool::read(
            "query_metrics",
            "Query a metric over time",
            "Use to look at how one series behaved over a time range (a spike, a trend). \
            Returns avg/min/max/count per bucket of `step` for every label set of the series. \
            Keep ranges and steps coarse (e.g. -24h at 1h) for compact answers. Example: \
            {\"device\": \"web-01\", \"series\": \"cpu.usage_percent\", \"from\": \"-6h\", \
            \"step\": \"15m\"}",
        )),
    };
    type Path = DevicePath;
    type Query = MetricQuery;
    type Body = Nothing;
    type Response = MetricQueryResult;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let device = input.path.device.as_str();
        services.query_metrics(ctx, device, input.query).await
    }
}

pub struct LatestMetrics;

impl Operation for LatestMetrics {
    const META: Meta = Meta {
        id: "latest_metrics",
        method: Method::Get,
        path: "/devices/{device}/metrics/latest",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "The newest sample of every series of the device",
        description: "One value per series and label set, with its timestamp.",
        success: 200,
        tool: None,
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Vec<LatestValue>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .latest_metrics(ctx, input.path.device.as_str())
            .await
    }
}

pub struct ListChecks;

impl Operation for ListChecks {
    const META: Meta = Meta {
        id: "list_checks",
        method: Method::Get,
        path: "/devices/{device}/checks",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "The newest report of every host check (docker, zfs, systemd, logs)",
        description: "Status (ok, warning, critical, unknown), message and evidence of each \
            check as last reported.",
        success: 200,
        tool: None,
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Vec<CheckView>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.list_checks(ctx, input.path.device.as_str()).await
    }
}

pub struct RunChecks;

impl Operation for RunChecks {
    const META: Meta = Meta {
        id: "run_checks",
        method: Method::Post,
        path: "/devices/{device}/checks/run",
        scope: Scope::Operate,
        effect: Effect::Probe,
        summary: "Run every applicable check now and return the fresh results",
        description: "Asks the agent (or, for agentless hosts, runs over SSH) every check the \
            host has capabilities for, waits for the round and returns its reports.",
        success: 200,
        tool: Some(Tool {
            name: "run_checks",
            title: "Run a device's checks now",
            description: "Use when stored check reports may be stale and a fresh verdict \
                matters. Runs every check the host has capabilities for (Docker, ZFS, \
                systemd, logs) now and returns the fresh reports; changes nothing on the \
                host. Example: {\"device\": \"web-01\"}",
            destructive: false,
            idempotent: true,
            open_world: true,
            defaults: &[],
        }),
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Vec<CheckView>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.run_checks(ctx, input.path.device.as_str()).await
    }
}

pub struct CheckHistory;

impl Operation for CheckHistory {
    const META: Meta = Meta {
        id: "check_history",
        method: Method::Get,
        path: "/devices/{device}/checks/history",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "Check reports, newest first",
        description: "Past reports of every check, or of one, to see when a status changed.",
        success: 200,
        tool: Some(Tool::read(
            "get_check_history",
            "Check history",
            "Use to learn when a check started failing or how often it flaps. Returns past \
            reports newest first, of one check or all. Example: {\"device\": \"nas\", \
            \"check\": \"zfs.pool:tank\", \"limit\": 20}",
        )),
    };
    type Path = DevicePath;
    type Query = CheckHistoryQuery;
    type Body = Nothing;
    type Response = Vec<CheckView>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let device = input.path.device.as_str();
        services.check_history(ctx, device, input.query).await
    }
}

pub struct DeviceCapabilities;

impl Operation for DeviceCapabilities {
    const META: Meta = Meta {
        id: "device_capabilities",
        method: Method::Get,
        path: "/devices/{device}/capabilities",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "What the host has: docker, zfs, systemd, journald",
        description: "The capabilities the host reported, which decide the checks it runs.",
        success: 200,
        tool: None,
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Capabilities;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .device_capabilities(ctx, input.path.device.as_str())
            .await
    }
}

pub struct ListContainers;

impl Operation for ListContainers {
    const META: Meta = Meta {
        id: "list_containers",
        method: Method::Get,
        path: "/devices/{device}/containers",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "Containers as of the latest Docker check",
        description: "Name, image, state, health and restart count of each container.",
        success: 200,
        tool: Some(Tool::read(
            "list_containers",
            "List a device's containers",
            "Use for questions about Docker workloads on one host. Returns each container's \
            name, image, state, health, restart count and exit code as of the latest Docker \
            check. Example: {\"device\": \"web-01\"}",
        )),
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Vec<Value>;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .list_containers(ctx, input.path.device.as_str())
            .await
    }
}

pub struct DiagnoseDevice;

impl Operation for DiagnoseDevice {
    const META: Meta = Meta {
        id: "diagnose_device",
        method: Method::Post,
        path: "/devices/{device}/diagnose",
        scope: Scope::Operate,
        effect: Effect::Probe,
        summary: "Diagnose one device: fresh checks, liveness, findings, actions, a 0-100 score",
        description: "Runs the device's checks now when its agent is online (stored reports \
            otherwise), looks at liveness and recent log errors, and answers with findings \
            ordered by severity, recommended actions and a health score.",
        success: 200,
        tool: Some(Tool {
            name: "diagnose_device",
            title: "Diagnose one device",
            description: "Use when the operator asks what is wrong with a host, or to check \
                one before a change. Runs the device's checks now when its agent is online, \
                looks at liveness and recent log errors, and returns a status, a 0-100 \
                score, findings worst first and recommended actions. Changes nothing. \
                Example: {\"device\": \"nas\"}",
            destructive: false,
            idempotent: true,
            open_world: true,
            defaults: &[],
        }),
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = DeviceDiagnosis;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .diagnose_device(ctx, input.path.device.as_str())
            .await
    }
}

pub struct DiagnoseInfrastructure;

impl Operation for DiagnoseInfrastructure {
    const META: Meta = Meta {
        id: "diagnose_infrastructure",
        method: Method::Post,
        path: "/diagnose",
        scope: Scope::Operate,
        effect: Effect::Probe,
        summary: "Diagnose every device in parallel plus system checks; status and 0-100 score",
        description: "Diagnoses every device with bounded concurrency and a per-device \
            timeout, adds controller-wide checks (database, cache, stale agents), and answers \
            with an overall status, score and the worst findings first.",
        success: 200,
        tool: Some(Tool {
            name: "diagnose_infrastructure",
            title: "Diagnose the whole fleet",
            description: "Use for \"is everything healthy?\" or to find which hosts need \
                attention. Diagnoses every device in parallel plus the controller's own \
                systems, and returns an overall status and score, then per device its status, \
                score, summary and only the findings that did not pass (detail=summary, the \
                default; detail=full adds every finding with its evidence). Changes nothing. \
                Then use diagnose_device on the worst ones. Example: {}",
            destructive: false,
            idempotent: true,
            open_world: true,
            defaults: &[("detail", "summary")],
        }),
    };
    type Path = Nothing;
    type Query = DiagnoseQuery;
    type Body = Nothing;
    type Response = InfrastructureDiagnosis;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let detail = input.query.detail.unwrap_or_default();
        services.diagnose_infrastructure(ctx, detail).await
    }
}
