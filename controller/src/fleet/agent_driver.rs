//! The driver for hosts with an agent: typed commands down the agent's stream, each with a
//! request ID and a deadline, answered by a `CommandResult`. Offline agents and agents that
//! do not answer in time are clear errors; a timed-out command is cancelled on the agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infrastructor_hostops::change::{CommitReport, PrepareReport};
use infrastructor_hostops::container_ops::ContainerAnswer;
use infrastructor_hostops::container_wire;
use infrastructor_hostops::docker::ContainerInfo;
use infrastructor_proto::v1::command_succeeded::Payload;
use infrastructor_proto::v1::{
    command, command_result, controller_message, Cancel, Command, CommandResult, CommandSucceeded,
    ControllerMessage, ErrorKind,
};
use tokio::sync::{oneshot, watch};

use super::SessionRegistry;
use crate::ctx::Ctx;
use crate::error::{Error, Result};

#[derive(Clone, Default)]
pub struct AgentDriver {
    sessions: Arc<SessionRegistry>,
    /// Commands awaiting an answer: request ID → (the device it was sent to, the waiter).
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    /// Per device, how many rounds of check reports have been recorded: an on-demand run
    /// waits for the count to move instead of polling the database.
    rounds: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

struct Pending {
    device_id: String,
    answer: oneshot::Sender<CommandResult>,
}

impl AgentDriver {
    pub fn new(sessions: Arc<SessionRegistry>) -> Self {
        Self {
            sessions,
            pending: Arc::default(),
            rounds: Arc::default(),
        }
    }

    /// Watches the count of the device's recorded rounds.
    pub fn rounds(&self, device_id: &str) -> watch::Receiver<u64> {
        let mut rounds = lock(&self.rounds);
        rounds
            .entry(device_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Tells whoever watches the device that a round of its reports is stored.
    pub fn round_recorded(&self, device_id: &str) {
        let mut rounds = lock(&self.rounds);
        let sender = rounds
            .entry(device_id.to_string())
            .or_insert_with(|| watch::channel(0).0);
        sender.send_modify(|count| *count += 1);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        lock(&self.pending)
    }

    /// Sends `kind` to the device's agent and waits up to `timeout` for its answer.
    /// `request_id` is the operation's correlation ID, so the agent's logs carry it too.
    pub async fn send(
        &self,
        ctx: &Ctx,
        device_id: &str,
        kind: command::Kind,
        timeout: Duration,
    ) -> Result<String> {
        Ok(self
            .send_for_result(device_id, &ctx.request_id, kind, ctx.bounded(timeout))
            .await?
            .message)
    }

    /// [`send`](Self::send) for commands that answer with a typed report, decoded as `T`.
    pub async fn send_for_payload<T: Answer>(
        &self,
        ctx: &Ctx,
        device_id: &str,
        kind: command::Kind,
        timeout: Duration,
    ) -> Result<T> {
        let timeout = ctx.bounded(timeout);
        let result = self
            .send_for_result(device_id, &ctx.request_id, kind, timeout)
            .await?;
        T::from_payload(result.payload).map_err(|e| {
            Error::Unavailable(format!("device {device_id} sent an unreadable result: {e}"))
        })
    }

    /// Idempotent commands whose link dropped before the answer are sent again once the agent
    /// is back (it reconnects within seconds after a blip); others fail, since they may have
    /// run.
    async fn send_for_result(
        &self,
        device_id: &str,
        request_id: &str,
        kind: command::Kind,
        timeout: Duration,
    ) -> Result<CommandSucceeded> {
        let mut attempt = 0;
        loop {
            match self
                .send_once(device_id, request_id, kind.clone(), timeout)
                .await
            {
                Err(Attempt::LinkDropped(error)) if is_idempotent(&kind) && attempt < RESENDS => {
                    attempt += 1;
                    tracing::warn!(
                        device_id,
                        request_id,
                        attempt,
                        "link dropped during an idempotent command; resending after reconnect"
                    );
                    if !self.await_reconnect(device_id, RECONNECT_WAIT).await {
                        return Err(error);
                    }
                }
                Err(Attempt::LinkDropped(error) | Attempt::Failed(error)) => return Err(error),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    async fn await_reconnect(&self, device_id: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self
                .sessions
                .commands(device_id)
                .is_some_and(|commands| !commands.is_closed())
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn send_once(
        &self,
        device_id: &str,
        request_id: &str,
        kind: command::Kind,
        timeout: Duration,
    ) -> std::result::Result<CommandSucceeded, Attempt> {
        let commands = self.sessions.commands(device_id).ok_or_else(|| {
            Attempt::Failed(Error::Unavailable(format!(
                "device {device_id} is offline: its agent is not connected"
            )))
        })?;
        let request_id = format!("{request_id}:{}", uuid::Uuid::new_v4().simple());
        let (answer, answered) = oneshot::channel();
        self.pending().insert(
            request_id.clone(),
            Pending {
                device_id: device_id.to_string(),
                answer,
            },
        );
        let deadline = crate::services::now_ms() + timeout.as_millis() as i64;
        let message = ControllerMessage {
            body: Some(controller_message::Body::Command(Command {
                request_id: request_id.clone(),
                deadline_unix_ms: deadline,
                kind: Some(kind),
            })),
        };
        if commands.send(message).await.is_err() {
            self.pending().remove(&request_id);
            return Err(Attempt::LinkDropped(Error::Unavailable(format!(
                "device {device_id} disconnected"
            ))));
        }
        let result = tokio::time::timeout(timeout, answered).await;
        self.pending().remove(&request_id);
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                return Err(Attempt::LinkDropped(Error::Unavailable(format!(
                    "device {device_id} disconnected before answering"
                ))))
            }
            Err(_) => {
                let cancel = ControllerMessage {
                    body: Some(controller_message::Body::Cancel(Cancel { request_id })),
                };
                let _ = commands.try_send(cancel);
                return Err(Attempt::Failed(Error::Unavailable(format!(
                    "the agent of device {device_id} did not answer within {}",
                    humantime::format_duration(timeout)
                ))));
            }
        };
        outcome_of(result).map_err(Attempt::Failed)
    }

    /// Hands an answer from `device_id`'s agent to whoever is waiting for it. Unknown IDs
    /// (late or forged answers) are ignored, and so is an answer from any other device than
    /// the one the command was sent to: an agent cannot answer for another.
    pub fn complete(&self, device_id: &str, result: CommandResult) {
        let mut pending = self.pending();
        match pending.get(&result.request_id) {
            Some(waiting) if waiting.device_id == device_id => {
                if let Some(waiting) = pending.remove(&result.request_id) {
                    let _ = waiting.answer.send(result);
                }
            }
            Some(waiting) => tracing::warn!(
                device_id,
                sent_to = %waiting.device_id,
                request_id = %result.request_id,
                "command result from another device than the one asked; ignored"
            ),
            None => {}
        }
    }
}

/// A command's typed answer, decoded (and so validated) from the agent's payload.
pub trait Answer: Sized {
    fn from_payload(payload: Option<Payload>) -> std::result::Result<Self, String>;
}

impl Answer for PrepareReport {
    fn from_payload(payload: Option<Payload>) -> std::result::Result<Self, String> {
        match payload {
            Some(Payload::PrepareReport(report)) => report.try_into().map_err(|e| format!("{e}")),
            _ => Err("expected a prepare report".into()),
        }
    }
}

impl Answer for CommitReport {
    fn from_payload(payload: Option<Payload>) -> std::result::Result<Self, String> {
        match payload {
            Some(Payload::CommitReport(report)) => report.try_into().map_err(|e| format!("{e}")),
            _ => Err("expected a commit report".into()),
        }
    }
}

impl Answer for Vec<ContainerInfo> {
    fn from_payload(payload: Option<Payload>) -> std::result::Result<Self, String> {
        match payload {
            Some(Payload::ContainerList(list)) => {
                Ok(list.containers.into_iter().map(Into::into).collect())
            }
            _ => Err("expected a container list".into()),
        }
    }
}

impl Answer for infrastructor_hostops::backup::BackupAnswer {
    fn from_payload(payload: Option<Payload>) -> std::result::Result<Self, String> {
        payload
            .and_then(infrastructor_hostops::backup::wire::answer_from_payload)
            .ok_or_else(|| "not a backup answer".to_string())
    }
}

impl Answer for ContainerAnswer {
    fn from_payload(payload: Option<Payload>) -> std::result::Result<Self, String> {
        payload
            .and_then(container_wire::answer_from_payload)
            .ok_or_else(|| "expected a container's state, logs or stats".into())
    }
}

/// A poisoned lock still holds consistent maps: every update is a single insert or remove.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Resends of an idempotent command after its link dropped.
const RESENDS: u32 = 2;
/// How long to wait for a dropped agent to reconnect before giving up.
const RECONNECT_WAIT: Duration = Duration::from_secs(5);

enum Attempt {
    /// The stream ended before an answer: the command may or may not have run.
    LinkDropped(Error),
    Failed(Error),
}

/// Commands that may run twice without harm. Change steps are not: each is a state
/// transition the controller must see exactly once.
fn is_idempotent(kind: &command::Kind) -> bool {
    matches!(
        kind,
        command::Kind::CollectNow(_) | command::Kind::RunChecks(_) | command::Kind::SetInterval(_)
    )
}

fn outcome_of(result: CommandResult) -> Result<CommandSucceeded> {
    match result.outcome {
        Some(command_result::Outcome::Succeeded(ok)) => Ok(ok),
        Some(command_result::Outcome::Failed(failed)) => Err(match failed.kind() {
            ErrorKind::InvalidInput => Error::InvalidInput(failed.message),
            ErrorKind::NotFound => Error::NotFound(failed.message),
            ErrorKind::Conflict => Error::Conflict(failed.message),
            ErrorKind::DeadlineExceeded
            | ErrorKind::Failed
            | ErrorKind::Internal
            | ErrorKind::Unspecified => Error::Unavailable(format!("agent: {}", failed.message)),
        }),
        None => Err(Error::Unavailable("agent sent an empty result".into())),
    }
}
