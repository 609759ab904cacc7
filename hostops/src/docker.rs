//! Docker, through the engine API (bollard) on the local socket: every container with its
//! state, health, restart count, exit code, image and uptime; the container check; and
//! per-container CPU and memory as metric series.

use std::time::{Duration, SystemTime};

use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, StatsOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use infrastructor_proto::v1::Sample;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compose::ComposeService;
use super::container_ops::parse_engine_time;
use super::names::ContainerName;
use super::{CheckReport, CheckStatus, Finding};
use crate::{now_ms, sample};

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker engine unreachable: {0}")]
    Unreachable(String),
    #[error("Docker engine: {0}")]
    Api(#[from] bollard::errors::Error),
}

impl DockerError {
    /// The engine's HTTP status, when it answered with an error (404: no such container,
    /// 409: not in a state that allows it).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(bollard::errors::Error::DockerResponseServerError {
                status_code, ..
            }) => Some(*status_code),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    /// created, running, paused, restarting, removing, exited, dead.
    pub state: String,
    /// starting, healthy, unhealthy — `None` without a health check.
    pub health: Option<String>,
    pub restart_count: i64,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub uptime_seconds: Option<u64>,
    /// How long a container that is not running has been stopped (since it exited, or since
    /// it was created when it never ran).
    pub stopped_seconds: Option<u64>,
    /// When it last started and last stopped (Unix milliseconds; `None`: never).
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    /// Its Compose project and service, when Compose created it.
    #[serde(default)]
    pub compose: Option<ComposeService>,
}

/// Connects to the local engine and checks that it answers.
pub async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| DockerError::Unreachable(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(5), docker.ping())
        .await
        .map_err(|_| DockerError::Unreachable("ping timed out".into()))?
        .map_err(|e| DockerError::Unreachable(e.to_string()))?;
    Ok(docker)
}

/// Every container, running or not.
pub async fn list_containers(docker: &Docker) -> Result<Vec<ContainerInfo>, DockerError> {
    list_containers_named(docker, None).await
}

/// Inspects at once, at most this many per engine.
const INSPECTS_AT_ONCE: usize = 8;

/// The containers named in `only` (every container when `None`), running or not; names the
/// host does not have are left out. Each is inspected, several at once.
pub async fn list_containers_named(
    docker: &Docker,
    only: Option<&[ContainerName]>,
) -> Result<Vec<ContainerInfo>, DockerError> {
    let summaries = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default().all(true).build(),
        ))
        .await?;
    let wanted = |summary: &bollard::models::ContainerSummary| {
        only.is_none_or(|names| {
            summary.names.iter().flatten().any(|listed| {
                let listed = listed.trim_start_matches('/');
                names.iter().any(|name| name.as_str() == listed)
            })
        })
    };
    let ids: Vec<String> = summaries
        .into_iter()
        .filter(|s| wanted(s))
        .filter_map(|s| s.id)
        .collect();
    let inspected: Vec<Result<ContainerInfo, DockerError>> = futures::stream::iter(ids)
        .map(|id| async move { inspect(docker, &id).await })
        .buffered(INSPECTS_AT_ONCE)
        .collect()
        .await;
    let mut containers = Vec::with_capacity(inspected.len());
    for info in inspected {
        match info {
            Ok(info) => containers.push(info),
            // Removed between list and inspect: not an error.
            Err(DockerError::Api(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })) => {}
            Err(error) => return Err(error),
        }
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(containers)
}

/// One container by validated name or ID.
pub async fn inspect_container(
    docker: &Docker,
    name: &ContainerName,
) -> Result<ContainerInfo, DockerError> {
    inspect(docker, name.as_str()).await
}

async fn inspect(docker: &Docker, id: &str) -> Result<ContainerInfo, DockerError> {
    let details = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await?;
    let state = details.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let uptime_seconds = match running {
        true => seconds_since(state.started_at.as_deref()),
        false => None,
    };
    let stopped_seconds = match running {
        true => None,
        // A container that never ran has the zero time as FinishedAt: count from creation.
        false => seconds_since(state.finished_at.as_deref())
            .or_else(|| seconds_since(details.created.as_deref())),
    };
    let compose = details
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(ComposeService::from_labels);
    let started_at_ms = state.started_at.as_deref().and_then(parse_engine_time);
    let finished_at_ms = state.finished_at.as_deref().and_then(parse_engine_time);
    Ok(ContainerInfo {
        id: details.id.unwrap_or_default(),
        name: details
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: details.config.and_then(|c| c.image).unwrap_or_default(),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        restart_count: details.restart_count.unwrap_or(0),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        uptime_seconds,
        stopped_seconds,
        started_at_ms,
        finished_at_ms,
        compose,
    })
}

/// Seconds since an engine timestamp (RFC 3339 with nanoseconds); `None` for the engine's
/// zero time (`0001-01-01T00:00:00Z`) or one in the future.
fn seconds_since(timestamp: Option<&str>) -> Option<u64> {
    let text = timestamp?;
    let whole = text.trim_end_matches('Z').split('.').next().unwrap_or(text);
    let at = humantime::parse_rfc3339_weak(whole).ok()?;
    if at <= SystemTime::UNIX_EPOCH {
        return None;
    }
    SystemTime::now()
        .duration_since(at)
        .ok()
        .map(|d| d.as_secs())
}

/// A container restarted by the engine and up for less than this is flapping.
pub const FLAPPING_UPTIME_SECONDS: u64 = 300;

/// Unhealthy and restarting (or recently restarted: flapping) containers are critical; exited
/// with a non-zero code (or killed for memory) is a warning.
pub fn check_containers(containers: &[ContainerInfo]) -> CheckReport {
    let mut findings: Vec<Finding> = Vec::new();
    for c in containers {
        if c.health.as_deref() == Some("unhealthy") {
            findings.push((CheckStatus::Critical, format!("{} is unhealthy", c.name)));
        }
        let recently_restarted = c.restart_count > 0
            && c.uptime_seconds
                .is_none_or(|up| up < FLAPPING_UPTIME_SECONDS);
        if c.state == "restarting" || recently_restarted {
            findings.push((
                CheckStatus::Critical,
                format!(
                    "{} is restarting (restarted {} times)",
                    c.name, c.restart_count
                ),
            ));
        } else if c.state == "exited" && c.exit_code.unwrap_or(0) != 0 {
            findings.push((
                CheckStatus::Warning,
                format!("{} exited with code {}", c.name, c.exit_code.unwrap_or(0)),
            ));
        }
        if c.oom_killed {
            findings.push((
                CheckStatus::Warning,
                format!("{} was killed for memory", c.name),
            ));
        }
    }
    let running = containers.iter().filter(|c| c.state == "running").count();
    CheckReport::from_findings(
        "docker.containers".into(),
        &findings,
        format!(
            "{} containers, {running} running, none unhealthy",
            containers.len()
        ),
        None,
        serde_json::json!({ "containers": containers }),
    )
}

/// `container.cpu_percent`, `container.memory_bytes` and `container.memory_percent`
/// (labelled `name`) for every running container.
pub async fn container_metrics(docker: &Docker, containers: &[ContainerInfo]) -> Vec<Sample> {
    let running: Vec<&ContainerInfo> = containers.iter().filter(|c| c.state == "running").collect();
    let stats = futures::future::join_all(running.iter().map(|c| async move {
        // Not one-shot: the engine waits for a second reading, so CPU usage has a window.
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(false)
            .build();
        let first = docker.stats(&c.id, Some(options)).next().await;
        (c.name.as_str(), first)
    }))
    .await;
    let ts = now_ms();
    let mut samples = Vec::new();
    for (name, stats) in stats {
        let Some(Ok(stats)) = stats else { continue };
        let labels = [("name", name)];
        samples.push(sample(
            "container.cpu_percent",
            &labels,
            ts,
            cpu_percent(&stats),
        ));
        if let Some(memory) = stats.memory_stats {
            let usage = memory.usage.unwrap_or(0) as f64;
            samples.push(sample("container.memory_bytes", &labels, ts, usage));
            if let Some(limit) = memory.limit.filter(|l| *l > 0) {
                samples.push(sample(
                    "container.memory_percent",
                    &labels,
                    ts,
                    usage / limit as f64 * 100.0,
                ));
            }
        }
    }
    samples
}

/// CPU use over the reading's window, as a share of one core × 100.
pub fn cpu_percent(stats: &bollard::models::ContainerStatsResponse) -> f64 {
    let cpu = stats.cpu_stats.clone().unwrap_or_default();
    let precpu = stats.precpu_stats.clone().unwrap_or_default();
    let total = |s: &bollard::models::ContainerCpuStats| {
        s.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let cpu_delta = total(&cpu).saturating_sub(total(&precpu)) as f64;
    let system_delta = cpu
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(precpu.system_cpu_usage.unwrap_or(0)) as f64;
    let cpus = f64::from(cpu.online_cpus.unwrap_or(1).max(1));
    if system_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    }
}
