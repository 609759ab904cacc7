//! One interface to a managed host, however it is reached: [`AgentHost`] sends typed
//! commands down the agent's stream, [`SshHost`] runs the same host operations over SSH. The
//! services resolve a device's host once (`Services::host`) and never ask which it is.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use infrastructor_hostops::backup::BackupRequest;
use infrastructor_hostops::backup::{self, BackupAnswer, BackupError, BackupPolicy};
use infrastructor_hostops::change::{ChangeError, ChangeSet, CommitOptions};
use infrastructor_hostops::change::{CommitReport, PrepareReport, TxnState};
use infrastructor_hostops::checks::{self, CheckConfig, Round};
use infrastructor_hostops::container_ops::{ContainerAnswer, ContainerOp, MAX_GRACE_SECONDS};
use infrastructor_hostops::docker::{ContainerInfo, DockerError};
use infrastructor_hostops::names::{ContainerName, TxnId};
use infrastructor_hostops::{container_ops, container_wire, docker};
use infrastructor_proto::v1::command::Kind;
use infrastructor_proto::v1::{AbortChange, CommitChange, ConfirmChange, PrepareChange};
use infrastructor_proto::v1::{ChangeStatus, ListContainers, RollbackChange, RunChecks};

use super::agent_driver::Answer;
use super::routing::{RoutedCall, Routing};
use super::ssh_changes::{AgentlessChanges, AgentlessEngine};
use super::ssh_driver::SshRunner;
use super::{AgentDriver, SessionRegistry, SshDriver, SshTarget};
use crate::ctx::Ctx;
use crate::domain::ReportedRound;
use crate::error::{Error, Result};

/// How long a host has to acknowledge a command (or answer a probe over SSH).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a round of checks may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
const PREPARE_TIMEOUT: Duration = Duration::from_secs(150);
/// Beyond the health timeout: swaps and actions (restarts may take a while).
const COMMIT_SLACK: Duration = Duration::from_secs(180);
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Beyond a stop's grace period: the engine's own work (and a stats reading's second).
const CONTAINER_SLACK: Duration = Duration::from_secs(30);

/// The host's link, as far as callers care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The agent's stream is up.
    Streaming,
    /// The agent is not connected; it was last seen then, if ever.
    Offline { last_seen_ms: Option<i64> },
    /// Reached when needed (SSH); nothing streams from it.
    OnDemand,
}

/// How a round of checks reached the controller.
#[derive(Debug)]
pub enum CheckRun {
    /// The controller ran it on the host and holds the round: the caller records it.
    Ran(ReportedRound),
    /// The host reported it on its own stream, and it was recorded on arrival.
    Reported,
}

/// A step of a prepared or applied transaction.
#[derive(Clone, Copy, Debug)]
pub enum ChangeStep<'a> {
    Confirm,
    Abort,
    Rollback(&'a str),
    /// Where the transaction is, changing nothing; `NotFound` when the host never had it.
    Status,
}

/// What the controller does on a managed host.
pub trait Host: Send + Sync {
    fn device_id(&self) -> &str;

    fn link(&self) -> Link;

    /// The name of the finding that reports this link in a diagnosis.
    fn link_check(&self) -> &'static str;

    /// Runs every applicable check now.
    fn run_checks<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<CheckRun>>;

    /// Stages, diffs and validates a change set; nothing live changes.
    fn prepare_change<'a>(
        &'a self,
        ctx: &'a Ctx,
        txn_id: &'a TxnId,
        set: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<PrepareReport>>;

    /// Swaps the prepared files in, runs the actions and health checks.
    fn commit_change<'a>(
        &'a self,
        ctx: &'a Ctx,
        txn_id: &'a TxnId,
        options: CommitOptions,
    ) -> BoxFuture<'a, Result<CommitReport>>;

    fn change_step<'a>(
        &'a self,
        ctx: &'a Ctx,
        txn_id: &'a TxnId,
        step: ChangeStep<'a>,
    ) -> BoxFuture<'a, Result<CommitReport>>;

    /// The containers named in `only` (every container when `None`), running or not, read
    /// now; names the host does not have are left out.
    fn containers<'a>(
        &'a self,
        ctx: &'a Ctx,
        only: Option<&'a [ContainerName]>,
    ) -> BoxFuture<'a, Result<Vec<ContainerInfo>>>;

    /// One operation on one container.
    fn container<'a>(
        &'a self,
        ctx: &'a Ctx,
        name: &'a ContainerName,
        op: &'a ContainerOp,
    ) -> BoxFuture<'a, Result<ContainerAnswer>>;

    /// One backup request (a backup, a check, a drill, a restore) about one target, run with
    /// restic on the host under the host's backup policy.
    fn backup<'a>(
        &'a self,
        ctx: &'a Ctx,
        request: &'a BackupRequest,
    ) -> BoxFuture<'a, Result<BackupAnswer>>;
}

/// How long a container operation may take: a stop's grace period, and the engine's own
/// work around it.
fn container_timeout(op: &ContainerOp) -> Duration {
    match op {
        ContainerOp::Act { options, .. } => {
            let grace = options.grace_seconds.unwrap_or(10).min(MAX_GRACE_SECONDS);
            Duration::from_secs(u64::from(grace)) + CONTAINER_SLACK
        }
        _ => CONTAINER_SLACK,
    }
}

/// A host with an agent: typed commands over its stream, answered by the agent's engine.
/// When another controller holds the stream, the same operation is handed to it.
pub struct AgentHost {
    pub device_id: String,
    pub last_seen_ms: Option<i64>,
    pub driver: AgentDriver,
    pub sessions: Arc<SessionRegistry>,
    /// `None`: only this replica's stream is used.
    pub routing: Option<Arc<Routing>>,
}

impl AgentHost {
    /// The call made by the replica that holds the stream, when that is another one; `None`
    /// when this replica holds it (or nobody does: the local attempt says it is offline).
    async fn elsewhere<T: serde::de::DeserializeOwned>(
        &self,
        ctx: &Ctx,
        call: RoutedCall,
        timeout: Duration,
    ) -> Option<Result<T>> {
        let routing = self.routing.as_ref()?;
        if self.sessions.get(&self.device_id).is_some() {
            return None;
        }
        let holder = match routing.holder(&self.device_id).await {
            Ok(holder) => holder?,
            Err(error) => return Some(Err(error)),
        };
        let answer = routing
            .call(ctx, &self.device_id, &holder, &call, timeout)
            .await;
        Some(answer.and_then(|value| {
            serde_json::from_value(value).map_err(|e| {
                Error::Unavailable(format!(
                    "an unreadable answer from controller {holder}: {e}"
                ))
            })
        }))
    }

    async fn checks(&self, ctx: &Ctx) -> Result<CheckRun> {
        let routed = self.elsewhere::<()>(ctx, RoutedCall::RunChecks, ROUND_TIMEOUT);
        if let Some(answer) = routed.await {
            return answer.map(|()| CheckRun::Reported);
        }
        // Watching before asking, so the round cannot be missed.
        let mut rounds = self.driver.rounds(&self.device_id);
        let before = *rounds.borrow_and_update();
        let run = Kind::RunChecks(RunChecks {});
        self.driver
            .send(ctx, &self.device_id, run, COMMAND_TIMEOUT)
            .await?;
        // The agent answers at once and streams the reports when the round is done.
        let recorded = async { rounds.wait_for(|count| *count > before).await.map(|_| ()) };
        match tokio::time::timeout(ctx.bounded(ROUND_TIMEOUT), recorded).await {
            Ok(Ok(_)) => Ok(CheckRun::Reported),
            Ok(Err(_)) => Err(Error::Unavailable("the controller is shutting down".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "checks started on device {} but no report arrived within {}s",
                self.device_id,
                ROUND_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn command<T: Answer>(&self, ctx: &Ctx, kind: Kind, timeout: Duration) -> Result<T> {
        self.driver
            .send_for_payload(ctx, &self.device_id, kind, timeout)
            .await
    }
}

impl Host for AgentHost {
    fn device_id(&self) -> &str {
        &self.device_id
    }

    fn link(&self) -> Link {
        let elsewhere = |routing: &Arc<Routing>| routing.streams_elsewhere(&self.device_id);
        if self.sessions.get(&self.device_id).is_some()
            || self.routing.as_ref().is_some_and(elsewhere)
        {
            return Link::Streaming;
        }
        Link::Offline {
            last_seen_ms: self.last_seen_ms,
        }
    }

    fn link_check(&self) -> &'static str {
        "agent.link"
    }

    fn run_checks<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<CheckRun>> {
        Box::pin(self.checks(ctx))
    }

    fn prepare_change<'a>(
        &'a self,
        ctx: &'a Ctx,
        txn_id: &'a TxnId,
        set: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<PrepareReport>> {
        Box::pin(async move {
            let call = RoutedCall::Prepare {
                txn_id: txn_id.as_str().to_string(),
                set: set.clone(),
            };
            if let Some(answer) = self.elsewhere(ctx, call, PREPARE_TIMEOUT).await {
                return answer;
            }
            let kind = Kind::PrepareChange(PrepareChange {
                txn_id: txn_id.as_str().to_string(),
                change_set: Some(set.into()),
            });
            self.command(ctx, kind, PREPARE_TIMEOUT).await
        })
    }

    fn commit_change<'a>(
        &'a self,
        ctx: &'a Ctx,
        txn_id: &'a TxnId,
        options: CommitOptions,
    ) -> BoxFuture<'a, Result<CommitReport>> {
        Box::pin(async move {
            let timeout = options.health_timeout + COMMIT_SLACK;
            let call = RoutedCall::Commit {
                txn_id: txn_id.as_str().to_string(),
                confirm_timeout_ms: options.confirm_timeout.as_millis() as u64,
                health_timeout_ms: options.health_timeout.as_millis() as u64,
            };
            if let Some(answer) = self.elsewhere(ctx, call, timeout).await {
                return answer;
            }
            let kind = Kind::CommitChange(CommitChange {
                txn_id: txn_id.as_str().to_string(),
                confirm_timeout_seconds: options.confirm_timeout.as_secs() as u32,
                health_timeout_seconds: options.health_timeout.as_secs() as u32,
            });
            self.command(ctx, kind, timeout).await
        })
    }

    fn change_step<'a>(
        &'a self,
        ctx: &'a Ctx,
        txn_id: &'a TxnId,
        step: ChangeStep<'a>,
    ) -> BoxFuture<'a, Result<CommitReport>> {
        let txn_id = txn_id.as_str().to_string();
        Box::pin(async move {
            if let Some(answer) = self
                .elsewhere(ctx, routed(&txn_id, step), STEP_TIMEOUT)
                .await
            {
                return answer;
            }
            let kind = match step {
                ChangeStep::Confirm => Kind::ConfirmChange(ConfirmChange { txn_id }),
                ChangeStep::Abort => Kind::AbortChange(AbortChange { txn_id }),
                ChangeStep::Rollback(reason) => Kind::RollbackChange(RollbackChange {
                    txn_id,
                    reason: reason.to_string(),
                }),
                ChangeStep::Status => Kind::ChangeStatus(ChangeStatus { txn_id }),
            };
            self.command(ctx, kind, STEP_TIMEOUT).await
        })
    }

    fn containers<'a>(
        &'a self,
        ctx: &'a Ctx,
        only: Option<&'a [ContainerName]>,
    ) -> BoxFuture<'a, Result<Vec<ContainerInfo>>> {
        Box::pin(async move {
            let names: Vec<String> = only
                .unwrap_or_default()
                .iter()
                .map(|n| n.as_str().to_string())
                .collect();
            let call = RoutedCall::Containers {
                names: names.clone(),
            };
            if let Some(answer) = self.elsewhere(ctx, call, CONTAINER_SLACK).await {
                return answer;
            }
            let kind = Kind::ListContainers(ListContainers { names });
            self.command(ctx, kind, CONTAINER_SLACK).await
        })
    }

    fn container<'a>(
        &'a self,
        ctx: &'a Ctx,
        name: &'a ContainerName,
        op: &'a ContainerOp,
    ) -> BoxFuture<'a, Result<ContainerAnswer>> {
        Box::pin(async move {
            let timeout = container_timeout(op);
            let call = RoutedCall::Container {
                name: name.as_str().to_string(),
                op: op.clone(),
            };
            if let Some(answer) = self.elsewhere(ctx, call, timeout).await {
                return answer;
            }
            let kind = Kind::Container(container_wire::command(name, op));
            self.command(ctx, kind, timeout).await
        })
    }

    fn backup<'a>(
        &'a self,
        ctx: &'a Ctx,
        request: &'a BackupRequest,
    ) -> BoxFuture<'a, Result<BackupAnswer>> {
        Box::pin(async move {
            let timeout = request.timeout() + COMMAND_TIMEOUT;
            let call = RoutedCall::Backup {
                request: Box::new(request.clone()),
            };
            if let Some(answer) = self.elsewhere(ctx, call, timeout).await {
                return answer;
            }
            let kind = Kind::Backup(backup::wire::command(request));
            self.command(ctx, kind, timeout).await
        })
    }
}

/// A step as another replica is asked to take it.
fn routed(txn_id: &str, step: ChangeStep<'_>) -> RoutedCall {
    let txn_id = txn_id.to_string();
    match step {
        ChangeStep::Confirm => RoutedCall::Confirm { txn_id },
        ChangeStep::Abort => RoutedCall::Abort { txn_id },
        ChangeStep::Rollback(reason) => RoutedCall::Rollback {
            txn_id,
            reason: reason.to_string(),
        },
        ChangeStep::Status => RoutedCall::Status { txn_id },
    }
}

/// A host without an agent: the agent's argv, parsers and change engine, run over SSH with
/// the pinned host key.
pub struct SshHost {
    pub device_id: String,
    /// Absent when the device lacks an address, a user or a pinned key: every operation then
    /// says so.
    pub target: std::result::Result<SshTarget, String>,
    pub driver: Arc<SshDriver>,
    pub changes: Arc<AgentlessChanges>,
    /// What backups may do on agentless hosts.
    pub backups: Arc<BackupPolicy>,
}

impl SshHost {
    fn target(&self) -> Result<&SshTarget> {
        self.target
            .as_ref()
            .map_err(|reason| Error::Unavailable(reason.clone()))
    }

    /// The host's Docker engine through the SSH tunnel to its socket.
    async fn docker(&self) -> Result<bollard::Docker> {
        self.driver
            .docker(self.target()?)
            .await
            .map_err(|e| Error::Unavailable(format!("Docker on device {}: {e}", self.device_id)))
    }

    fn too_slow(&self, timeout: Duration) -> Error {
        Error::Unavailable(format!(
            "Docker on device {} did not answer within {}s",
            self.device_id,
            timeout.as_secs()
        ))
    }

    fn engine(&self) -> Result<Arc<AgentlessEngine>> {
        self.changes
            .engine(&self.device_id, self.target()?.clone())
            .map_err(engine_error)
    }

    /// The command-based checks (ZFS, systemd, journal), then Docker through the engine API
    /// tunnelled over the same SSH trust.
    async fn checks(&self, ctx: &Ctx) -> Result<CheckRun> {
        let target = self.target()?;
        // Probe first, so an unreachable host or a wrong key is one clear error.
        let uname = infrastructor_hostops::command::uname();
        self.driver
            .run(target, &uname, ctx.bounded(COMMAND_TIMEOUT))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let runner = SshRunner {
            driver: &self.driver,
            target,
        };
        let mut round = Round::default();
        let config = CheckConfig::default();
        let commands = checks::run_command_checks(&runner, &config, &mut round);
        tokio::time::timeout(ctx.bounded(ROUND_TIMEOUT), commands)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "checks over SSH did not finish within {}s",
                    ROUND_TIMEOUT.as_secs()
                ))
            })?;
        if let Ok(engine) = self.driver.docker(target).await {
            if tokio::time::timeout(COMMAND_TIMEOUT, engine.ping())
                .await
                .is_ok_and(|pong| pong.is_ok())
            {
                checks::docker_checks(&engine, &mut round).await;
            }
        }
        let now = crate::services::now_ms();
        Ok(CheckRun::Ran(ReportedRound::from_host(&round, now)))
    }
}

impl Host for SshHost {
    fn device_id(&self) -> &str {
        &self.device_id
    }

    fn link(&self) -> Link {
        Link::OnDemand
    }

    fn link_check(&self) -> &'static str {
        "ssh.link"
    }

    fn run_checks<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<CheckRun>> {
        Box::pin(self.checks(ctx))
    }

    fn prepare_change<'a>(
        &'a self,
        _ctx: &'a Ctx,
        txn_id: &'a TxnId,
        set: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<PrepareReport>> {
        Box::pin(async move {
            self.engine()?
                .prepare(txn_id, set)
                .await
                .map_err(engine_error)
        })
    }

    fn commit_change<'a>(
        &'a self,
        _ctx: &'a Ctx,
        txn_id: &'a TxnId,
        options: CommitOptions,
    ) -> BoxFuture<'a, Result<CommitReport>> {
        Box::pin(async move {
            let engine = self.engine()?;
            engine.commit(txn_id, options).await.map_err(engine_error)
        })
    }

    fn change_step<'a>(
        &'a self,
        _ctx: &'a Ctx,
        txn_id: &'a TxnId,
        step: ChangeStep<'a>,
    ) -> BoxFuture<'a, Result<CommitReport>> {
        Box::pin(async move {
            let engine = self.engine()?;
            let taken = match step {
                ChangeStep::Confirm => engine.confirm(txn_id).await,
                ChangeStep::Abort => engine.abort(txn_id).await,
                ChangeStep::Rollback(reason) => engine.rollback(txn_id, reason).await,
                ChangeStep::Status => engine.report(txn_id).await,
            };
            match taken {
                Err(ChangeError::Conflict(message)) => {
                    taken_elsewhere(&engine, txn_id, &step, message).await
                }
                other => other.map_err(engine_error),
            }
        })
    }

    fn containers<'a>(
        &'a self,
        ctx: &'a Ctx,
        only: Option<&'a [ContainerName]>,
    ) -> BoxFuture<'a, Result<Vec<ContainerInfo>>> {
        Box::pin(async move {
            let engine = self.docker().await?;
            let listed = docker::list_containers_named(&engine, only);
            tokio::time::timeout(ctx.bounded(CONTAINER_SLACK), listed)
                .await
                .map_err(|_| self.too_slow(CONTAINER_SLACK))?
                .map_err(docker_error)
        })
    }

    fn container<'a>(
        &'a self,
        ctx: &'a Ctx,
        name: &'a ContainerName,
        op: &'a ContainerOp,
    ) -> BoxFuture<'a, Result<ContainerAnswer>> {
        Box::pin(async move {
            let engine = self.docker().await?;
            let timeout = container_timeout(op);
            tokio::time::timeout(ctx.bounded(timeout), container_ops::run(&engine, name, op))
                .await
                .map_err(|_| self.too_slow(timeout))?
                .map_err(docker_error)
        })
    }

    fn backup<'a>(
        &'a self,
        _ctx: &'a Ctx,
        request: &'a BackupRequest,
    ) -> BoxFuture<'a, Result<BackupAnswer>> {
        Box::pin(async move {
            let runner = SshRunner {
                driver: &self.driver,
                target: self.target()?,
            };
            backup::execute(&runner, &self.backups, request)
                .await
                .map_err(backup_error)
        })
    }
}

/// The host's refusal or failure as the services' error.
pub fn backup_error(error: BackupError) -> Error {
    match error {
        BackupError::Refused(m) => Error::InvalidInput(m),
        BackupError::NotFound(m) => Error::NotFound(m),
        BackupError::Busy(m) => Error::Conflict(m),
        BackupError::Failed(m) => Error::Unavailable(m),
    }
}

/// How long a step another controller is taking on the same transaction is waited for.
const TAKEN_ELSEWHERE_PATIENCE: Duration = Duration::from_secs(30);

/// A step refused as a conflict may have lost a race: another controller (its deadline
/// watch, or its recovery of a stopped one) moved the same transaction first. When that
/// move ends where this step was going, its outcome is this step's answer.
async fn taken_elsewhere(
    engine: &AgentlessEngine,
    txn_id: &TxnId,
    step: &ChangeStep<'_>,
    message: String,
) -> Result<CommitReport> {
    let goal = |state: TxnState| match step {
        ChangeStep::Confirm => state == TxnState::Committed,
        ChangeStep::Abort => state == TxnState::Aborted,
        ChangeStep::Rollback(_) => matches!(state, TxnState::RolledBack | TxnState::Aborted),
        ChangeStep::Status => false,
    };
    let deadline = tokio::time::Instant::now() + TAKEN_ELSEWHERE_PATIENCE;
    loop {
        match engine.report(txn_id).await {
            Ok(report) if goal(report.state) => return Ok(report),
            Ok(report) if report.state == TxnState::RollingBack => {}
            _ => return Err(Error::Conflict(message)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Conflict(message));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The engine's errors as the controller's kinds (the agent sends the same kinds as the
/// proto `ErrorKind`).
pub fn engine_error(error: ChangeError) -> Error {
    match error {
        ChangeError::InvalidInput(m) | ChangeError::Refused(m) => Error::InvalidInput(m),
        ChangeError::Conflict(m) => Error::Conflict(m),
        ChangeError::NotFound(m) => Error::NotFound(m),
        ChangeError::Failed(m) => Error::Unavailable(m),
        other => Error::Internal(other.to_string()),
    }
}

/// The engine's refusal as the services' error: a missing container is not found, one in
/// the wrong state a conflict.
pub fn docker_error(error: DockerError) -> Error {
    match error.status() {
        Some(404) => Error::NotFound(error.to_string()),
        Some(409) => Error::Conflict(error.to_string()),
        Some(400) => Error::invalid(error.to_string()),
        _ => Error::Unavailable(error.to_string()),
    }
}
