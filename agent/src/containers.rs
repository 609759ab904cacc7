//! Container commands from the controller: the live list, and one operation on one
//! container, through the local Docker engine. A stop may wait out its grace period, so each
//! command runs on its own task and answers through the outbox; the stream keeps flowing.

use infrastructor_hostops::container_ops;
use infrastructor_hostops::container_wire;
use infrastructor_hostops::docker::{self, DockerError};
use infrastructor_hostops::names::ContainerName;
use infrastructor_proto::v1::command_succeeded::Payload;
use infrastructor_proto::v1::{
    command_result, AgentMessage, CommandFailed, CommandSucceeded, ContainerCommand, ErrorKind,
};
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the controller asked for.
pub(crate) enum ContainerRequest {
    /// These containers (every one when empty).
    List(Vec<String>),
    One(ContainerCommand),
}

/// Runs `request` on its own task; the answer goes to `outbox` under `request_id`.
pub(crate) fn spawn(
    outbox: mpsc::Sender<AgentMessage>,
    request_id: String,
    request: ContainerRequest,
) {
    let span = tracing::info_span!("container", %request_id);
    tokio::spawn(
        async move {
            let outcome = match run(request).await {
                Ok((message, payload)) => command_result::Outcome::Succeeded(CommandSucceeded {
                    message,
                    payload: Some(payload),
                }),
                Err((kind, message)) => {
                    tracing::warn!(%message, "container command failed");
                    command_result::Outcome::Failed(CommandFailed {
                        kind: kind.into(),
                        message,
                    })
                }
            };
            crate::link::answer(&outbox, request_id, outcome).await;
        }
        .instrument(span),
    );
}

async fn run(request: ContainerRequest) -> Result<(String, Payload), (ErrorKind, String)> {
    let engine = docker::connect().await.map_err(failure)?;
    match request {
        ContainerRequest::List(names) => {
            let names = names
                .iter()
                .map(|n| ContainerName::new(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| (ErrorKind::InvalidInput, e.to_string()))?;
            let only = (!names.is_empty()).then_some(names.as_slice());
            let containers = docker::list_containers_named(&engine, only)
                .await
                .map_err(failure)?;
            let message = format!("{} containers", containers.len());
            Ok((
                message,
                Payload::ContainerList(container_wire::list_payload(&containers)),
            ))
        }
        ContainerRequest::One(command) => {
            let (name, op) = container_wire::decode_command(&command)
                .map_err(|e| (ErrorKind::InvalidInput, e.to_string()))?;
            let answer = container_ops::run(&engine, &name, &op)
                .await
                .map_err(failure)?;
            Ok((
                format!("{name}: done"),
                container_wire::answer_payload(&answer),
            ))
        }
    }
}

/// The engine's refusal as the controller maps it.
fn failure(error: DockerError) -> (ErrorKind, String) {
    let kind = match error.status() {
        Some(404) => ErrorKind::NotFound,
        Some(409) => ErrorKind::Conflict,
        Some(400) => ErrorKind::InvalidInput,
        None if matches!(error, DockerError::Unreachable(_)) => ErrorKind::Conflict,
        _ => ErrorKind::Failed,
    };
    (kind, error.to_string())
}
