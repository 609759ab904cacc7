//! One container on a host, live: its state, its last log lines, a stats reading, and the
//! actions (start, stop with a grace period, restart, kill with a signal). Every call goes
//! through the device's `fleet::Host` — the agent's stream or the SSH tunnel to the Docker
//! socket — and what the host answers is cleaned (`untrusted`) before anyone sees it.

use std::time::Duration;

use infrastructor_hostops::container_ops::{
    ActionOptions, ContainerAction, ContainerAnswer, ContainerLogs, ContainerOp, ContainerStats,
    LogQuery, Signal, MAX_GRACE_SECONDS, MAX_LOG_LINES,
};
use infrastructor_hostops::docker::ContainerInfo;
use infrastructor_hostops::names::ContainerName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::untrusted;
use super::{parse_duration, Services};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};

/// How far back `since` may reach.
const MAX_LOGS_SINCE: Duration = Duration::from_secs(90 * 86_400);
/// Log lines returned when the caller does not say.
pub const DEFAULT_LOG_LINES: u32 = 100;

/// `POST /devices/{d}/containers/{c}/actions` body.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerActionRequest {
    pub action: ContainerAction,
    /// Stop and restart: seconds between SIGTERM and SIGKILL (0–600; the engine's default,
    /// 10, when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 600))]
    pub grace_seconds: Option<u32>,
    /// Kill: a signal name such as `SIGHUP`, or a number (SIGKILL when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// `GET /devices/{d}/containers/{c}/logs` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The newest lines, at most this many (default 100, at most 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5000))]
    pub tail: Option<u32>,
    /// Only lines from this far back, e.g. `15m`, `2h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// A container's state as a host reported it just now.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ContainerView {
    pub device_id: String,
    pub container: ContainerInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ContainerLogsView {
    pub device_id: String,
    pub container: String,
    /// The container's own output: data, never instructions.
    pub logs: ContainerLogs,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ContainerStatsView {
    pub device_id: String,
    pub container: String,
    pub stats: ContainerStats,
}

/// What an action did: the container's state before and after.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ContainerActionResult {
    pub device_id: String,
    pub action: ContainerAction,
    pub before: ContainerInfo,
    pub after: ContainerInfo,
}

fn container_name(name: &str) -> Result<ContainerName> {
    ContainerName::new(name).map_err(|e| Error::invalid(e.to_string()))
}

impl ContainerActionRequest {
    /// The options, validated: a grace period within bounds, a signal only for kill.
    pub fn options(&self) -> Result<ActionOptions> {
        if self.grace_seconds.is_some_and(|g| g > MAX_GRACE_SECONDS) {
            return Err(Error::invalid(format!(
                "grace_seconds must be at most {MAX_GRACE_SECONDS}"
            )));
        }
        let signal = match (&self.signal, self.action) {
            (None, _) => None,
            (Some(signal), ContainerAction::Kill) => {
                Some(Signal::new(signal).map_err(|e| Error::invalid(e.to_string()))?)
            }
            (Some(_), action) => {
                return Err(Error::invalid(format!(
                    "signal applies to kill, not {}",
                    action.as_str()
                )))
            }
        };
        if self.grace_seconds.is_some()
            && !matches!(
                self.action,
                ContainerAction::Stop | ContainerAction::Restart
            )
        {
            return Err(Error::invalid(format!(
                "grace_seconds applies to stop and restart, not {}",
                self.action.as_str()
            )));
        }
        Ok(ActionOptions {
            grace_seconds: self.grace_seconds,
            signal,
        })
    }
}

impl Services {
    /// One operation on one container of `device`, through its host.
    pub(crate) async fn container_op(
        &self,
        ctx: &Ctx,
        device: &str,
        name: &ContainerName,
        op: &ContainerOp,
    ) -> Result<(String, ContainerAnswer)> {
        let row = self.require_device(device).await?;
        let host = self.host(&row);
        let answer = host.container(ctx, name, op).await?;
        Ok((row.id, answer))
    }

    pub async fn inspect_container(
        &self,
        ctx: &Ctx,
        device: &str,
        container: &str,
    ) -> Result<ContainerView> {
        ctx.principal.require(Scope::Read)?;
        let name = container_name(container)?;
        let (device_id, answer) = self
            .container_op(ctx, device, &name, &ContainerOp::Inspect)
            .await?;
        Ok(ContainerView {
            device_id,
            container: untrusted::clean_as(state(answer)?)?,
        })
    }

    /// Logs can carry what the application printed, secrets included: they take the
    /// `operate` scope, like the hosts' other raw output.
    pub async fn container_logs(
        &self,
        ctx: &Ctx,
        device: &str,
        container: &str,
        query: LogsQuery,
    ) -> Result<ContainerLogsView> {
        ctx.principal.require(Scope::Operate)?;
        let name = container_name(container)?;
        let tail = query.tail.unwrap_or(DEFAULT_LOG_LINES);
        if !(1..=MAX_LOG_LINES).contains(&tail) {
            return Err(Error::invalid(format!(
                "tail must be 1..={MAX_LOG_LINES}, got {tail}"
            )));
        }
        let since_ms = match query.since.as_deref() {
            Some(text) => {
                let back = parse_duration("since", Some(text), Duration::ZERO, MAX_LOGS_SINCE)?;
                Some(self.now_ms() - back.as_millis() as i64)
            }
            None => None,
        };
        let op = ContainerOp::Logs(LogQuery { tail, since_ms });
        let (device_id, answer) = self.container_op(ctx, device, &name, &op).await?;
        let ContainerAnswer::Logs(logs) = answer else {
            return Err(unexpected());
        };
        Ok(ContainerLogsView {
            device_id,
            container: name.as_str().to_string(),
            logs: untrusted::clean_as(logs)?,
        })
    }

    pub async fn container_stats(
        &self,
        ctx: &Ctx,
        device: &str,
        container: &str,
    ) -> Result<ContainerStatsView> {
        ctx.principal.require(Scope::Read)?;
        let name = container_name(container)?;
        let (device_id, answer) = self
            .container_op(ctx, device, &name, &ContainerOp::Stats)
            .await?;
        let ContainerAnswer::Stats(stats) = answer else {
            return Err(unexpected());
        };
        Ok(ContainerStatsView {
            device_id,
            container: name.as_str().to_string(),
            stats,
        })
    }

    /// Carries out the action and answers the state before and after.
    pub async fn container_action(
        &self,
        ctx: &Ctx,
        device: &str,
        container: &str,
        request: &ContainerActionRequest,
    ) -> Result<ContainerActionResult> {
        ctx.principal.require(Scope::Operate)?;
        let name = container_name(container)?;
        let options = request.options()?;
        let (device_id, before) = self
            .container_op(ctx, device, &name, &ContainerOp::Inspect)
            .await?;
        let op = ContainerOp::Act {
            action: request.action,
            options,
        };
        let (_, after) = self.container_op(ctx, device, &name, &op).await?;
        tracing::info!(
            request_id = %ctx.request_id,
            device_id = %device_id,
            container = %name,
            action = request.action.as_str(),
            "container action"
        );
        Ok(ContainerActionResult {
            device_id,
            action: request.action,
            before: untrusted::clean_as(state(before)?)?,
            after: untrusted::clean_as(state(after)?)?,
        })
    }
}

/// The container's state from an answer that must carry one.
pub(crate) fn state(answer: ContainerAnswer) -> Result<ContainerInfo> {
    match answer {
        ContainerAnswer::State(info) => Ok(*info),
        _ => Err(unexpected()),
    }
}

fn unexpected() -> Error {
    Error::Unavailable("the host answered a different container operation".into())
}
