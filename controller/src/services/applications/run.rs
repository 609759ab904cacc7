//! Carrying an action out, member by member, as soon as each may go: a start waits only for
//! its own dependencies' conditions (started, healthy, completed), a stop only for its own
//! dependants to have stopped, so independent branches run in parallel and nobody waits for
//! the slowest member of a wave. The first failure halts what has not begun; the report says
//! who failed and why and where every member is; on request, what was changed is put back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use infrastructor_hostops::compose::Condition;
use infrastructor_hostops::container_ops::{ActionOptions, ContainerAction, ContainerOp};
use infrastructor_hostops::docker::ContainerInfo;
use infrastructor_hostops::names::ContainerName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::graph::Graph;
use super::plan::{gate_for_dependants, StepKind};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::fleet::Host;
use crate::services::{containers, untrusted};

/// How often a gate looks at a member's state again.
const POLL: Duration = Duration::from_millis(200);

/// Where one member is, as the run sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reached {
    Pending,
    Started,
    Healthy,
    Completed,
    Stopped,
    /// Failed, skipped or halted: nothing waiting on it will be met.
    Gone,
}

impl Reached {
    fn meets(self, condition: Condition) -> bool {
        match condition {
            Condition::ServiceStarted => {
                matches!(self, Self::Started | Self::Healthy | Self::Completed)
            }
            Condition::ServiceHealthy => self == Self::Healthy,
            Condition::ServiceCompletedSuccessfully => self == Self::Completed,
        }
    }
}

/// A member as the run reaches it.
pub struct Target {
    pub host: Arc<dyn Host>,
    pub device_id: String,
    pub container: ContainerName,
}

#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Per gate: how long a dependency may take to become healthy or complete; per stop:
    /// the grace period is at most this.
    pub timeout: Duration,
    /// After a member starts, this long before its dependants may count it started.
    pub settle_delay: Duration,
    pub grace_seconds: Option<u32>,
}

/// What happened to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberResult {
    Started,
    /// Running already: left as it was.
    AlreadyRunning,
    Stopped,
    AlreadyStopped,
    /// Not acted on: the run halted, or a required dependency was not met.
    Skipped,
    Failed,
    /// Put back as it was after the run failed.
    Restored,
    /// Status only.
    Unchanged,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct MemberOutcome {
    pub member: String,
    pub device_id: String,
    pub container: String,
    pub result: MemberResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Waiting for its gates (dependencies or dependants), in milliseconds.
    pub waited_ms: u64,
    /// Its own work: the engine's start or stop, and its health gate.
    pub own_ms: u64,
    /// Its state at the end, as its host reported it (`None`: the host did not answer).
    pub state: Option<ContainerInfo>,
}

/// One phase's results, in member order.
pub struct Phase {
    pub outcomes: Vec<MemberOutcome>,
    pub failed: Option<(String, String)>,
    /// Members this phase changed (started or stopped).
    pub changed: Vec<usize>,
}

/// Runs `kind` over the members `only` selects (all when `None`); the others count as
/// already where they need to be.
pub async fn run_phase(
    ctx: &Ctx,
    graph: &Graph,
    targets: &[Target],
    kind: StepKind,
    options: RunOptions,
    only: Option<&[usize]>,
) -> Phase {
    let included = |i: usize| only.is_none_or(|set| set.contains(&i));
    let channels: Vec<watch::Sender<Reached>> = (0..graph.len())
        .map(|i| {
            let start = match (included(i), kind) {
                (true, _) => Reached::Pending,
                (false, StepKind::Start) => Reached::Healthy,
                (false, StepKind::Stop) => Reached::Stopped,
            };
            watch::channel(start).0
        })
        .collect();
    let halt = CancellationToken::new();
    let total = (0..graph.len()).filter(|i| included(*i)).count();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let (halt, done, channels) = (&halt, &done, &channels);
    let runs = (0..graph.len()).filter(|i| included(*i)).map(|i| {
        let member = Member {
            ctx,
            graph,
            targets,
            channels,
            halt,
            options,
            i,
        };
        async move {
            let outcome = match kind {
                StepKind::Start => member.start().await,
                StepKind::Stop => member.stop().await,
            };
            if matches!(outcome.result, MemberResult::Failed) {
                halt.cancel();
            }
            let finished = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            ctx.progress(finished, total).await;
            (i, outcome)
        }
    });
    let mut results = join_all(runs).await;
    results.sort_by_key(|(i, _)| *i);
    let failed = results.iter().find_map(|(_, o)| {
        (o.result == MemberResult::Failed)
            .then(|| (o.member.clone(), o.reason.clone().unwrap_or_default()))
    });
    let changed = results
        .iter()
        .filter(|(_, o)| matches!(o.result, MemberResult::Started | MemberResult::Stopped))
        .map(|(i, _)| *i)
        .collect();
    Phase {
        outcomes: results.into_iter().map(|(_, o)| o).collect(),
        failed,
        changed,
    }
}

struct Member<'a> {
    ctx: &'a Ctx,
    graph: &'a Graph,
    targets: &'a [Target],
    channels: &'a [watch::Sender<Reached>],
    halt: &'a CancellationToken,
    options: RunOptions,
    i: usize,
}

impl Member<'_> {
    fn name(&self) -> &str {
        self.graph.name(self.i)
    }

    fn target(&self) -> &Target {
        &self.targets[self.i]
    }

    fn outcome(&self, result: MemberResult, reason: Option<String>) -> MemberOutcome {
        MemberOutcome {
            member: self.name().to_string(),
            device_id: self.target().device_id.clone(),
            container: self.target().container.as_str().to_string(),
            result,
            reason,
            waited_ms: 0,
            own_ms: 0,
            state: None,
        }
    }

    fn publish(&self, reached: Reached) {
        self.channels[self.i].send_replace(reached);
    }

    async fn op(&self, op: ContainerOp) -> Result<ContainerInfo> {
        let target = self.target();
        let answer = target
            .host
            .container(self.ctx, &target.container, &op)
            .await?;
        untrusted::clean_as(containers::state(answer)?)
    }

    /// Waits until member `on` reaches what `ready` accepts; false when it never will or the
    /// run halts. (Its own gates bound how long a member can keep another waiting.)
    async fn wait_for(&self, on: usize, ready: impl Fn(Reached) -> bool) -> bool {
        let mut watch = self.channels[on].subscribe();
        let met = watch.wait_for(|r| ready(*r) || *r == Reached::Gone);
        tokio::select! {
            reached = met => reached.is_ok_and(|r| ready(*r)),
            () = self.halt.cancelled() => false,
        }
    }

    async fn start(&self) -> MemberOutcome {
        let waiting = Instant::now();
        for edge in &self.graph.deps[self.i] {
            let met = self.wait_for(edge.on, |r| r.meets(edge.condition)).await;
            if !met && (edge.required || self.halt.is_cancelled()) {
                self.publish(Reached::Gone);
                let why = if self.halt.is_cancelled() {
                    "the run halted".to_string()
                } else {
                    format!(
                        "{} did not reach {}",
                        self.graph.name(edge.on),
                        edge.condition.as_str()
                    )
                };
                let mut outcome = self.outcome(MemberResult::Skipped, Some(why));
                outcome.waited_ms = waiting.elapsed().as_millis() as u64;
                outcome.state = self.op(ContainerOp::Inspect).await.ok();
                return outcome;
            }
        }
        let waited_ms = waiting.elapsed().as_millis() as u64;
        let working = Instant::now();
        let step = format!("start {}", self.name());
        let result = self.ctx.step(&step, self.start_and_gate()).await;
        let (result, reason, state) = match result {
            Ok((result, state)) => (result, None, Some(state)),
            Err(error) => {
                self.publish(Reached::Gone);
                let state = self.op(ContainerOp::Inspect).await.ok();
                (MemberResult::Failed, Some(error.to_string()), state)
            }
        };
        let mut outcome = self.outcome(result, reason);
        outcome.waited_ms = waited_ms;
        outcome.own_ms = working.elapsed().as_millis() as u64;
        outcome.state = state;
        if result != MemberResult::Failed {
            self.ctx
                .log(&format!("{} {}", self.name(), result_word(result)))
                .await;
        }
        outcome
    }

    /// Starts the member (unless it runs already), lets it settle, then holds it to the
    /// gate its dependants ask for.
    async fn start_and_gate(&self) -> Result<(MemberResult, ContainerInfo)> {
        let before = self.op(ContainerOp::Inspect).await?;
        let (result, mut state) = if before.state == "running" {
            (MemberResult::AlreadyRunning, before)
        } else {
            let op = ContainerOp::Act {
                action: ContainerAction::Start,
                options: ActionOptions::default(),
            };
            (MemberResult::Started, self.op(op).await?)
        };
        if !self.options.settle_delay.is_zero() {
            tokio::time::sleep(self.options.settle_delay).await;
        }
        let gate = gate_for_dependants(self.graph, self.i);
        if gate != Some(Condition::ServiceCompletedSuccessfully) {
            if state.state != "running" && state.state != "exited" {
                return Err(Error::Conflict(format!(
                    "{} is {} after starting",
                    self.name(),
                    state.state
                )));
            }
            self.publish(Reached::Started);
        }
        match gate {
            Some(Condition::ServiceHealthy) => {
                state = self.until_healthy(state).await?;
                self.publish(Reached::Healthy);
            }
            Some(Condition::ServiceCompletedSuccessfully) => {
                state = self.until_completed(state).await?;
                self.publish(Reached::Completed);
            }
            _ => {}
        }
        Ok((result, state))
    }

    async fn until_healthy(&self, mut state: ContainerInfo) -> Result<ContainerInfo> {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            match state.health.as_deref() {
                Some("healthy") => return Ok(state),
                None => {
                    return Err(Error::Conflict(format!(
                        "{} has no health check, and a dependant waits for it to be healthy",
                        self.name()
                    )))
                }
                _ if state.state == "exited" || state.state == "dead" => {
                    return Err(Error::Conflict(format!(
                        "{} stopped (exit code {}) before it was healthy",
                        self.name(),
                        state.exit_code.unwrap_or_default()
                    )))
                }
                health => {
                    if Instant::now() >= deadline {
                        return Err(Error::Unavailable(format!(
                            "{} was not healthy within {}s (health: {})",
                            self.name(),
                            self.options.timeout.as_secs(),
                            health.unwrap_or("none")
                        )));
                    }
                }
            }
            tokio::time::sleep(POLL).await;
            state = self.op(ContainerOp::Inspect).await?;
        }
    }

    async fn until_completed(&self, mut state: ContainerInfo) -> Result<ContainerInfo> {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            if state.state == "exited" {
                return match state.exit_code {
                    Some(0) => Ok(state),
                    code => Err(Error::Conflict(format!(
                        "{} exited with code {}",
                        self.name(),
                        code.unwrap_or_default()
                    ))),
                };
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "{} did not complete within {}s",
                    self.name(),
                    self.options.timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
            state = self.op(ContainerOp::Inspect).await?;
        }
    }

    async fn stop(&self) -> MemberOutcome {
        let waiting = Instant::now();
        for dependant in &self.graph.dependants[self.i] {
            if !self.wait_for(*dependant, |r| r == Reached::Stopped).await {
                self.publish(Reached::Gone);
                let why = format!("{} did not stop", self.graph.name(*dependant));
                let mut outcome = self.outcome(MemberResult::Skipped, Some(why));
                outcome.state = self.op(ContainerOp::Inspect).await.ok();
                return outcome;
            }
        }
        let waited_ms = waiting.elapsed().as_millis() as u64;
        let working = Instant::now();
        let step = format!("stop {}", self.name());
        let result = self.ctx.step(&step, self.stop_member()).await;
        let mut outcome = match result {
            Ok((result, state)) => {
                self.publish(Reached::Stopped);
                let mut outcome = self.outcome(result, None);
                outcome.state = Some(state);
                outcome
            }
            Err(error) => {
                self.publish(Reached::Gone);
                let mut outcome = self.outcome(MemberResult::Failed, Some(error.to_string()));
                outcome.state = self.op(ContainerOp::Inspect).await.ok();
                outcome
            }
        };
        outcome.waited_ms = waited_ms;
        outcome.own_ms = working.elapsed().as_millis() as u64;
        outcome
    }

    async fn stop_member(&self) -> Result<(MemberResult, ContainerInfo)> {
        let before = self.op(ContainerOp::Inspect).await?;
        if before.state != "running" && before.state != "restarting" && before.state != "paused" {
            return Ok((MemberResult::AlreadyStopped, before));
        }
        let limit = self.options.timeout.as_secs().min(u64::from(u32::MAX)) as u32;
        let op = ContainerOp::Act {
            action: ContainerAction::Stop,
            options: ActionOptions {
                grace_seconds: Some(self.options.grace_seconds.unwrap_or(10).min(limit)),
                signal: None,
            },
        };
        let after = self.op(op).await?;
        if after.state == "running" {
            return Err(Error::Conflict(format!("{} still runs", self.name())));
        }
        Ok((MemberResult::Stopped, after))
    }
}

fn result_word(result: MemberResult) -> &'static str {
    match result {
        MemberResult::Started => "started",
        MemberResult::AlreadyRunning => "was running",
        MemberResult::Stopped => "stopped",
        MemberResult::AlreadyStopped => "was stopped",
        MemberResult::Skipped => "skipped",
        MemberResult::Failed => "failed",
        MemberResult::Restored => "restored",
        MemberResult::Unchanged => "unchanged",
    }
}
