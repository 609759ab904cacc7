//! Watching hosts: metrics, host checks, capabilities, containers, and diagnoses.

use serde_json::Value;

use super::params::DevicePath;
use super::{Effect, Input, Meta, Method, Nothing, Operation};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::services::checks::{Capabilities, CheckHistoryQuery, CheckView};
use crate::services::diagnostics::{DeviceDiagnosis, InfrastructureDiagnosis};
use crate::services::metrics::{LatestValue, MetricQuery, MetricQueryResult};
use crate::services::Services;

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
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = Nothing;
    type Response = InfrastructureDiagnosis;

    async fn run(services: &Services, ctx: &Ctx, _: Input<Self>) -> Result<Self::Response> {
        services.diagnose_infrastructure(ctx).await
    }
}
