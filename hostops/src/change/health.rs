//! Actions run on commit (and again on rollback) and the health checks that decide whether a
//! committed change stays.

use std::time::{Duration, Instant};

use bollard::query_parameters::{InspectContainerOptions, RestartContainerOptions};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use super::host::ChangeHost;
use super::spec::{Action, HealthCheck};
use crate::command::{self, UnitVerb};

const ACTION_TIMEOUT: Duration = Duration::from_secs(90);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The result of one health check, for the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthOutcome {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

/// Runs the actions in order; stops at the first failure.
pub async fn run_actions(host: &impl ChangeHost, actions: &[Action]) -> Result<(), String> {
    for action in actions {
        run_action(host, action)
            .await
            .map_err(|e| format!("{action} failed: {e}"))?;
        tracing::info!(%action, "action done");
    }
    Ok(())
}

async fn run_action(host: &impl ChangeHost, action: &Action) -> Result<(), String> {
    match action {
        Action::ReloadUnit(unit) => {
            systemctl(host, command::systemctl_unit_action(UnitVerb::Reload, unit)).await
        }
        Action::RestartUnit(unit) => {
            systemctl(
                host,
                command::systemctl_unit_action(UnitVerb::Restart, unit),
            )
            .await
        }
        Action::RestartContainer(name) => {
            let docker = host.docker().await.map_err(|e| e.to_string())?;
            // The container's own stop timeout applies, as with `docker restart`.
            docker
                .restart_container(name.as_str(), None::<RestartContainerOptions>)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

async fn systemctl(host: &impl ChangeHost, command: command::HostCommand) -> Result<(), String> {
    let output = host.run(&command, ACTION_TIMEOUT).await?;
    if output.code == Some(0) {
        Ok(())
    } else {
        Err(output.stderr.trim().to_string())
    }
}

/// Retries every check until all pass or `timeout` elapses; services take a moment to come up
/// after a restart. Returns the last outcome of each check.
pub async fn run_health_checks(
    host: &impl ChangeHost,
    checks: &[HealthCheck],
    timeout: Duration,
) -> Vec<HealthOutcome> {
    let started = Instant::now();
    loop {
        let mut outcomes = Vec::with_capacity(checks.len());
        for check in checks {
            let result = probe(host, check).await;
            outcomes.push(HealthOutcome {
                check: check.to_string(),
                passed: result.is_ok(),
                detail: result.unwrap_or_else(|e| e),
            });
        }
        if outcomes.iter().all(|o| o.passed) || started.elapsed() >= timeout {
            return outcomes;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

async fn probe(host: &impl ChangeHost, check: &HealthCheck) -> Result<String, String> {
    match check {
        HealthCheck::UnitActive(unit) => {
            let output = host
                .run(&command::systemctl_is_active(unit), PROBE_TIMEOUT)
                .await?;
            if output.code == Some(0) {
                Ok("active".into())
            } else {
                Err(format!("{unit} is not active"))
            }
        }
        HealthCheck::ContainerRunning(name) => {
            let docker = host.docker().await.map_err(|e| e.to_string())?;
            let inspect = docker
                .inspect_container(name.as_str(), None::<InspectContainerOptions>)
                .await
                .map_err(|e| e.to_string())?;
            let state = inspect.state.unwrap_or_default();
            let health = state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none");
            match (state.running, health.as_deref()) {
                (Some(true), None | Some("healthy")) => Ok("running".into()),
                (Some(true), Some(other)) => Err(format!("{name} is running but {other}")),
                _ => Err(format!("{name} is not running")),
            }
        }
        HealthCheck::HttpGet(url) => http_get(host, url).await,
        HealthCheck::TcpConnect(address) => {
            let (target, port) = check
                .probe_target()?
                .ok_or_else(|| format!("{address}: not a network probe"))?;
            tokio::time::timeout(PROBE_TIMEOUT, host.connect_tcp(&target, port))
                .await
                .map_err(|_| format!("{address}: connect timed out"))?
                .map_err(|e| format!("{address}: {e}"))?;
            Ok("accepted".into())
        }
    }
}

/// Only plain `http://` to an explicit host: health URLs point at the service being changed,
/// usually on loopback.
pub fn parse_http_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("health check URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "health check URL {url:?} must be http://host[:port]/path"
        ));
    }
    Ok(uri)
}

/// `GET url` over a connection the host opens (see [`ChangeHost::connect_tcp`]).
async fn http_get(on: &impl ChangeHost, url: &str) -> Result<String, String> {
    let uri = parse_http_url(url)?;
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(80);
    let request = async {
        let stream = on
            .connect_tcp(host.trim_start_matches('[').trim_end_matches(']'), port)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        tokio::spawn(connection);
        // Origin form ("GET /path"), as a browser sends it to a server directly.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host.as_str())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok::<_, String>(response.status())
    };
    let status = tokio::time::timeout(PROBE_TIMEOUT, request)
        .await
        .map_err(|_| format!("{url}: no answer within {PROBE_TIMEOUT:?}"))??;
    if status.is_success() {
        Ok(format!("HTTP {}", status.as_u16()))
    } else {
        Err(format!("{url} answered HTTP {}", status.as_u16()))
    }
}
