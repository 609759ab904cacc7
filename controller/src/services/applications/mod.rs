//! Applications: several containers, possibly across hosts, started and stopped in
//! dependency order. Found on the hosts from Compose labels, or declared through the API
//! (stored and versioned); a declaration wins over a discovered project of the same name.
//!
//! - `graph`: the checked graph (cycles refused with their path) and its levels.
//! - `plan`: the exact plan of an action — steps, gates, groups — for dry runs and MCP plans.
//! - `discover`: Compose projects from the labels in the hosts' container reports.
//! - `run`: the eager, health-gated execution, halting on the first failure.

mod discover;
pub mod graph;
pub mod plan;
pub mod run;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::future::join_all;
use infrastructor_hostops::docker::ContainerInfo;
use infrastructor_hostops::names::ContainerName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use self::discover::{discover, DeviceContainers};
use self::graph::{Graph, MemberSpec};
use self::plan::{AppAction, Plan, StepKind};
use self::run::{run_phase, MemberOutcome, MemberResult, RunOptions, Target};
use super::jobs::JobClaims;
use super::{rfc3339, untrusted, Services};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::store::{ApplicationRow, DeviceRow, JobLock};

/// How long a gate waits when the caller does not say.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 120;
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;
pub const MAX_SETTLE_DELAY_MS: u64 = 60_000;
/// Members an application may have.
pub const MAX_MEMBERS: usize = 200;

/// Application, member and Compose names: what a container name may be.
pub fn valid_member_name(name: &str) -> bool {
    ContainerName::new(name).is_ok()
}

/// `PUT /applications/{app}` body.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSpec {
    pub members: Vec<MemberSpec>,
    /// The version this declaration replaces (0: a new application); a different latest
    /// version is a conflict, so nobody declares over a change they have not seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<i64>,
}

/// Where an application comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    Declared {
        version: i64,
        declared_by: String,
        declared_at: String,
    },
    /// A Compose project on the hosts, as of their latest container reports.
    Discovered,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationSummary {
    pub name: String,
    pub source: Source,
    pub members: usize,
    pub devices: Vec<String>,
}

/// One member as its host reports it now.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct MemberView {
    #[serde(flatten)]
    pub spec: MemberSpec,
    pub device_id: Option<String>,
    /// `None`: the host did not answer, or has no such container (see `problem`).
    pub state: Option<ContainerInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationView {
    pub name: String,
    pub source: Source,
    pub members: Vec<MemberView>,
    /// What `start` and `stop` would do (`restart` is the stop, then the start).
    pub start: Plan,
    pub stop: Plan,
}

/// `POST /applications/{app}/actions` body.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManageRequest {
    pub action: AppAction,
    /// Answer the exact plan and touch nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Seconds a member may take to become healthy or complete when a dependant waits for
    /// it (default 120, at most 3600); a stop's grace period is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u64>,
    /// Milliseconds after a member starts before its dependants count it started (0–60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 60000))]
    pub settle_delay_ms: Option<u64>,
    /// Stop and restart: seconds between SIGTERM and SIGKILL (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 600))]
    pub grace_seconds: Option<u32>,
    /// When the run fails, put every member it changed back as it was.
    #[serde(default)]
    pub restore_on_failure: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    /// A dry run or a status: nothing was touched.
    NotRun,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Failure {
    pub member: String,
    pub reason: String,
}

/// What an action did.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationRun {
    pub application: String,
    pub action: AppAction,
    pub outcome: RunOutcome,
    pub plan: Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failure>,
    /// Every member, with what happened to it and its state at the end.
    pub members: Vec<MemberOutcome>,
    /// The members it had changed were put back (`restore_on_failure`).
    pub restored: bool,
    pub duration_ms: u64,
}

impl ManageRequest {
    fn options(&self) -> Result<RunOptions> {
        let timeout = self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout) {
            return Err(Error::invalid(format!(
                "timeout_seconds must be 1..={MAX_TIMEOUT_SECONDS}"
            )));
        }
        let settle = self.settle_delay_ms.unwrap_or(0);
        if settle > MAX_SETTLE_DELAY_MS {
            return Err(Error::invalid(format!(
                "settle_delay_ms must be at most {MAX_SETTLE_DELAY_MS}"
            )));
        }
        if self.grace_seconds.is_some_and(|g| g > 600) {
            return Err(Error::invalid("grace_seconds must be at most 600"));
        }
        Ok(RunOptions {
            timeout: Duration::from_secs(timeout),
            settle_delay: Duration::from_millis(settle),
            grace_seconds: self.grace_seconds,
        })
    }
}

/// An application resolved to its graph.
struct Resolved {
    name: String,
    source: Source,
    graph: Graph,
}

fn check_app_name(name: &str) -> Result<()> {
    if valid_member_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid application name {name:?}: letters, digits, '_', '-', '.', starting \
             with a letter or digit, at most 128"
        )))
    }
}

fn check_spec(spec: &ApplicationSpec) -> Result<Graph> {
    if spec.members.len() > MAX_MEMBERS {
        return Err(Error::invalid(format!(
            "an application has at most {MAX_MEMBERS} members"
        )));
    }
    for member in &spec.members {
        for (what, value) in [
            ("member", member.name.as_str()),
            ("container", member.container.as_str()),
        ] {
            if !valid_member_name(value) {
                return Err(Error::invalid(format!("invalid {what} name {value:?}")));
            }
        }
        if member.device.is_empty() || member.device.len() > 128 {
            return Err(Error::invalid(format!(
                "member {:?} needs a device ID or name",
                member.name
            )));
        }
    }
    Graph::new(spec.members.clone())
}

fn declared_source(row: &ApplicationRow) -> Source {
    Source::Declared {
        version: row.version,
        declared_by: row.declared_by.clone(),
        declared_at: rfc3339(row.declared_at_ms),
    }
}

impl Services {
    /// Every declared application, then every Compose project found in the hosts' latest
    /// container reports that no declaration shadows.
    pub async fn list_applications(&self, ctx: &Ctx) -> Result<Vec<ApplicationSummary>> {
        ctx.principal.require(Scope::Read)?;
        let mut summaries = Vec::new();
        let mut names = BTreeSet::new();
        for row in self.store.applications().await? {
            let Some(spec) = row.spec.as_deref() else {
                continue;
            };
            let members: Vec<MemberSpec> = serde_json::from_str(spec)
                .map_err(|e| Error::Internal(format!("stored application: {e}")))?;
            names.insert(row.name.clone());
            summaries.push(summary(row.name.clone(), declared_source(&row), &members));
        }
        for (project, members) in self.discovered().await? {
            if !names.contains(&project) {
                summaries.push(summary(project, Source::Discovered, &members));
            }
        }
        Ok(summaries)
    }

    /// The graph, each member's host, state and health now (one list per host), and the
    /// plans a start and a stop would take.
    pub async fn get_application(&self, ctx: &Ctx, name: &str) -> Result<ApplicationView> {
        ctx.principal.require(Scope::Read)?;
        let app = self.resolve_application(name).await?;
        let members = self.member_states(ctx, &app.graph).await?;
        Ok(ApplicationView {
            start: plan::plan(&app.graph, AppAction::Start, DEFAULT_TIMEOUT_SECONDS, 0),
            stop: plan::plan(&app.graph, AppAction::Stop, DEFAULT_TIMEOUT_SECONDS, 0),
            name: app.name,
            source: app.source,
            members,
        })
    }

    pub async fn declare_application(
        &self,
        ctx: &Ctx,
        name: &str,
        spec: &ApplicationSpec,
    ) -> Result<ApplicationSummary> {
        ctx.principal.require(Scope::Operate)?;
        check_app_name(name)?;
        let graph = check_spec(spec)?;
        for member in &graph.members {
            self.require_device(&member.device).await?;
        }
        let json = serde_json::to_string(&graph.members)
            .map_err(|e| Error::Internal(format!("encoding an application: {e}")))?;
        let by = ctx.principal.name.clone();
        let now = self.now_ms();
        let version = self
            .store
            .declare_application(name, Some(&json), spec.expected_version, &by, now)
            .await?;
        let source = Source::Declared {
            version,
            declared_by: by,
            declared_at: rfc3339(now),
        };
        Ok(summary(name.to_string(), source, &graph.members))
    }

    /// Removes a declaration (a new version without a spec: the history stays).
    pub async fn remove_application(&self, ctx: &Ctx, name: &str) -> Result<ApplicationSummary> {
        ctx.principal.require(Scope::Operate)?;
        check_app_name(name)?;
        let Some(row) = self.store.application(name, None).await? else {
            return Err(Error::NotFound(format!("no declared application {name:?}")));
        };
        if row.spec.is_none() {
            return Err(Error::NotFound(format!(
                "application {name:?} was removed already"
            )));
        }
        let by = ctx.principal.name.clone();
        let now = self.now_ms();
        let version = self
            .store
            .declare_application(name, None, Some(row.version), &by, now)
            .await?;
        let source = Source::Declared {
            version,
            declared_by: by,
            declared_at: rfc3339(now),
        };
        Ok(ApplicationSummary {
            name: name.to_string(),
            source,
            members: 0,
            devices: Vec::new(),
        })
    }

    /// The plan `request` would take, checked, without touching anything.
    pub async fn application_plan(&self, name: &str, request: &ManageRequest) -> Result<Plan> {
        let options = request.options()?;
        let app = self.resolve_application(name).await?;
        Ok(plan::plan(
            &app.graph,
            request.action,
            options.timeout.as_secs(),
            options.settle_delay.as_millis() as u64,
        ))
    }

    /// What a manage job holds: every member's device, and its container there.
    pub async fn application_claims(&self, name: &str) -> Result<JobClaims> {
        let app = self.resolve_application(name).await?;
        let mut devices = BTreeSet::new();
        let mut locks = Vec::new();
        for member in &app.graph.members {
            let id = self.require_device(&member.device).await?.id;
            locks.push(JobLock {
                device_id: id.clone(),
                resource: format!("container {}", member.container),
            });
            devices.insert(id);
        }
        Ok(JobClaims {
            devices: devices.into_iter().collect(),
            locks,
        })
    }

    /// Carries out `request` (as a job: each member's start or stop is a step, progress per
    /// member). Every start and stop is idempotent, so a run taken over after a crash simply
    /// runs again from what the hosts say.
    pub async fn manage_application(
        &self,
        ctx: &Ctx,
        name: &str,
        request: &ManageRequest,
    ) -> Result<ApplicationRun> {
        ctx.principal.require(Scope::Operate)?;
        let options = request.options()?;
        let app = self.resolve_application(name).await?;
        let plan = plan::plan(
            &app.graph,
            request.action,
            options.timeout.as_secs(),
            options.settle_delay.as_millis() as u64,
        );
        let began = Instant::now();
        let targets = self.targets(&app.graph).await?;
        if request.dry_run || request.action == AppAction::Status {
            let members = self.unchanged(ctx, &app.graph, &targets).await;
            return Ok(ApplicationRun {
                application: app.name,
                action: request.action,
                outcome: RunOutcome::NotRun,
                plan,
                failed: None,
                members,
                restored: false,
                duration_ms: began.elapsed().as_millis() as u64,
            });
        }
        let phases: &[StepKind] = match request.action {
            AppAction::Start => &[StepKind::Start],
            AppAction::Stop => &[StepKind::Stop],
            _ => &[StepKind::Stop, StepKind::Start],
        };
        let mut outcomes: Vec<MemberOutcome> = Vec::new();
        let mut failed = None;
        let mut changed: Vec<(StepKind, Vec<usize>)> = Vec::new();
        for kind in phases {
            let phase = run_phase(ctx, &app.graph, &targets, *kind, options, None).await;
            changed.push((*kind, phase.changed));
            merge(&mut outcomes, phase.outcomes);
            if let Some((member, reason)) = phase.failed {
                failed = Some(Failure { member, reason });
                break;
            }
        }
        let mut restored = false;
        if failed.is_some() && request.restore_on_failure {
            restored = true;
            let back = restore(ctx, &app.graph, &targets, options, &changed).await;
            for outcome in back {
                if let Some(slot) = outcomes.iter_mut().find(|o| o.member == outcome.member) {
                    let reason = match outcome.result {
                        MemberResult::Failed => outcome.reason.clone(),
                        _ => Some(format!("put back after {:?}", slot.result).to_lowercase()),
                    };
                    *slot = MemberOutcome {
                        result: match outcome.result {
                            MemberResult::Failed => MemberResult::Failed,
                            _ => MemberResult::Restored,
                        },
                        reason,
                        ..outcome
                    };
                    restored &= slot.result == MemberResult::Restored;
                }
            }
        }
        Ok(ApplicationRun {
            application: app.name,
            action: request.action,
            outcome: match failed {
                Some(_) => RunOutcome::Failed,
                None => RunOutcome::Succeeded,
            },
            plan,
            failed,
            members: outcomes,
            restored,
            duration_ms: began.elapsed().as_millis() as u64,
        })
    }

    /// A declared application, else a discovered Compose project of that name.
    async fn resolve_application(&self, name: &str) -> Result<Resolved> {
        check_app_name(name)?;
        if let Some(row) = self.store.application(name, None).await? {
            if let Some(spec) = row.spec.as_deref() {
                let members: Vec<MemberSpec> = serde_json::from_str(spec)
                    .map_err(|e| Error::Internal(format!("stored application: {e}")))?;
                return Ok(Resolved {
                    name: name.to_string(),
                    source: declared_source(&row),
                    graph: Graph::new(members)?,
                });
            }
        }
        let Some(members) = self.discovered().await?.remove(name) else {
            return Err(Error::NotFound(format!(
                "no application {name:?}: none is declared, and no host reports a Compose \
                 project of that name"
            )));
        };
        Ok(Resolved {
            name: name.to_string(),
            source: Source::Discovered,
            graph: Graph::new(members)?,
        })
    }

    /// Compose projects in every device's latest container report.
    async fn discovered(&self) -> Result<BTreeMap<String, Vec<MemberSpec>>> {
        let devices = self.store.list_devices().await?;
        let mut reported: Vec<(String, Vec<ContainerInfo>)> = Vec::new();
        for device in &devices {
            let latest = self
                .store
                .check_history(&device.id, Some("docker.containers"), 1)
                .await?;
            let Some(report) = latest.into_iter().next() else {
                continue;
            };
            let evidence: serde_json::Value =
                serde_json::from_str(&report.evidence).unwrap_or_default();
            let containers: Vec<ContainerInfo> =
                serde_json::from_value(evidence["containers"].clone()).unwrap_or_default();
            reported.push((device.name.clone(), containers));
        }
        let views: Vec<DeviceContainers<'_>> = reported
            .iter()
            .map(|(device, containers)| DeviceContainers { device, containers })
            .collect();
        Ok(discover(&views))
    }

    async fn targets(&self, graph: &Graph) -> Result<Vec<Target>> {
        let mut rows: HashMap<String, DeviceRow> = HashMap::new();
        let mut targets = Vec::with_capacity(graph.len());
        for member in &graph.members {
            if !rows.contains_key(&member.device) {
                let row = self.require_device(&member.device).await?;
                rows.insert(member.device.clone(), row);
            }
            let row = &rows[&member.device];
            let container =
                ContainerName::new(&member.container).map_err(|e| Error::invalid(e.to_string()))?;
            targets.push(Target {
                host: self.host(row),
                device_id: row.id.clone(),
                container,
            });
        }
        Ok(targets)
    }

    /// Each member's state, from one container list per host, asked of all hosts at once.
    async fn member_states(&self, ctx: &Ctx, graph: &Graph) -> Result<Vec<MemberView>> {
        let mut by_device: BTreeMap<&str, Option<DeviceRow>> = BTreeMap::new();
        let mut wanted: BTreeMap<&str, Vec<ContainerName>> = BTreeMap::new();
        for member in &graph.members {
            if !by_device.contains_key(member.device.as_str()) {
                let row = self.require_device(&member.device).await.ok();
                by_device.insert(member.device.as_str(), row);
            }
            if let Ok(name) = ContainerName::new(&member.container) {
                wanted.entry(member.device.as_str()).or_default().push(name);
            }
        }
        let wanted = &wanted;
        let lists = join_all(by_device.iter().map(|(device, row)| async move {
            let only = wanted.get(device).map(Vec::as_slice).unwrap_or_default();
            let listed = match row {
                Some(row) => self
                    .host(row)
                    .containers(ctx, Some(only))
                    .await
                    .and_then(untrusted::clean_as)
                    .map_err(|e| e.to_string()),
                None => Err(format!("no device {device:?}")),
            };
            (*device, listed)
        }))
        .await;
        let lists: HashMap<&str, std::result::Result<Vec<ContainerInfo>, String>> =
            lists.into_iter().collect();
        Ok(graph
            .members
            .iter()
            .map(|member| {
                let device_id = by_device[member.device.as_str()]
                    .as_ref()
                    .map(|r| r.id.clone());
                let (state, problem) = match &lists[member.device.as_str()] {
                    Ok(list) => match list.iter().find(|c| c.name == member.container) {
                        Some(c) => (Some(c.clone()), None),
                        None => (None, Some("no such container on the device".to_string())),
                    },
                    Err(error) => (None, Some(error.clone())),
                };
                MemberView {
                    spec: member.clone(),
                    device_id,
                    state,
                    problem,
                }
            })
            .collect())
    }

    async fn unchanged(&self, ctx: &Ctx, graph: &Graph, targets: &[Target]) -> Vec<MemberOutcome> {
        let states = self.member_states(ctx, graph).await.unwrap_or_default();
        targets
            .iter()
            .zip(&graph.members)
            .map(|(target, member)| {
                let view = states.iter().find(|v| v.spec.name == member.name);
                MemberOutcome {
                    member: member.name.clone(),
                    device_id: target.device_id.clone(),
                    container: target.container.as_str().to_string(),
                    result: MemberResult::Unchanged,
                    reason: view.and_then(|v| v.problem.clone()),
                    waited_ms: 0,
                    own_ms: 0,
                    state: view.and_then(|v| v.state.clone()),
                }
            })
            .collect()
    }
}

fn summary(name: String, source: Source, members: &[MemberSpec]) -> ApplicationSummary {
    let devices: BTreeSet<String> = members.iter().map(|m| m.device.clone()).collect();
    ApplicationSummary {
        name,
        source,
        members: members.len(),
        devices: devices.into_iter().collect(),
    }
}

/// A later phase's outcome replaces an earlier one's for the same member (a restart's
/// start after its stop), except that a member the later phase skipped keeps what the
/// earlier phase did to it.
fn merge(outcomes: &mut Vec<MemberOutcome>, later: Vec<MemberOutcome>) {
    for outcome in later {
        match outcomes.iter_mut().find(|o| o.member == outcome.member) {
            Some(slot) if outcome.result != MemberResult::Skipped => *slot = outcome,
            Some(_) => {}
            None => outcomes.push(outcome),
        }
    }
}

/// Puts back what the failed run changed: the members it stopped are started again (in
/// dependency order), the members it started are stopped (in reverse).
async fn restore(
    ctx: &Ctx,
    graph: &Graph,
    targets: &[Target],
    options: RunOptions,
    changed: &[(StepKind, Vec<usize>)],
) -> Vec<MemberOutcome> {
    let stopped: BTreeSet<usize> = changed
        .iter()
        .filter(|(k, _)| *k == StepKind::Stop)
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    let started: BTreeSet<usize> = changed
        .iter()
        .filter(|(k, _)| *k == StepKind::Start)
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    // A restart's member that was stopped and started again is back where it was.
    let to_start: Vec<usize> = stopped.difference(&started).copied().collect();
    let to_stop: Vec<usize> = started.difference(&stopped).copied().collect();
    let mut outcomes = Vec::new();
    if !to_stop.is_empty() {
        ctx.log("putting back: stopping what the run started").await;
        let phase = run_phase(ctx, graph, targets, StepKind::Stop, options, Some(&to_stop)).await;
        outcomes.extend(phase.outcomes);
    }
    if !to_start.is_empty() {
        ctx.log("putting back: starting what the run stopped").await;
        let phase = run_phase(
            ctx,
            graph,
            targets,
            StepKind::Start,
            options,
            Some(&to_start),
        )
        .await;
        outcomes.extend(phase.outcomes);
    }
    outcomes
}
