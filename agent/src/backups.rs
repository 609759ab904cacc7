//! Backup commands from the controller: a backup, a repository check, a restore drill, a
//! restore, run with restic's argv against this host's own [`BackupPolicy`] (what may be
//! read, where restores may write, where the passwords are). They take minutes to hours, so
//! each runs on its own task and answers through the outbox; the stream keeps flowing.

use infrastructor_hostops::backup::{self, wire, BackupError, BackupPolicy};
use infrastructor_hostops::checks::LocalRunner;
use infrastructor_proto::v1::{
    command_result, AgentMessage, BackupCommand, CommandFailed, CommandSucceeded, ErrorKind,
};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Runs `command` on its own task; the answer goes to `outbox` under `request_id`.
pub(crate) fn spawn(
    outbox: mpsc::Sender<AgentMessage>,
    policy: BackupPolicy,
    request_id: String,
    command: BackupCommand,
) {
    let span = tracing::info_span!("backup", %request_id);
    tokio::spawn(
        async move {
            let outcome = match run(&policy, &command).await {
                Ok(payload) => command_result::Outcome::Succeeded(CommandSucceeded {
                    message: "done".into(),
                    payload: Some(payload),
                }),
                Err((kind, message)) => {
                    tracing::warn!(%message, "backup command failed");
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

async fn run(
    policy: &BackupPolicy,
    command: &BackupCommand,
) -> Result<infrastructor_proto::v1::command_succeeded::Payload, (ErrorKind, String)> {
    let request =
        wire::decode_command(command).map_err(|e| (ErrorKind::InvalidInput, e.to_string()))?;
    tracing::info!(
        backup_target = request.target().name.as_str(),
        action = action(&request),
        "backup command"
    );
    let answer = backup::execute(&LocalRunner, policy, &request)
        .await
        .map_err(|error| (kind(&error), error.to_string()))?;
    Ok(wire::answer_payload(answer))
}

fn action(request: &backup::BackupRequest) -> &'static str {
    match request {
        backup::BackupRequest::Backup { .. } => "backup",
        backup::BackupRequest::Snapshots { .. } => "snapshots",
        backup::BackupRequest::Check { .. } => "check",
        backup::BackupRequest::Drill { .. } => "drill",
        backup::BackupRequest::Restore { .. } => "restore",
        backup::BackupRequest::Dump { .. } => "dump",
    }
}

fn kind(error: &BackupError) -> ErrorKind {
    match error {
        BackupError::Refused(_) => ErrorKind::InvalidInput,
        BackupError::NotFound(_) => ErrorKind::NotFound,
        BackupError::Busy(_) => ErrorKind::Conflict,
        BackupError::Failed(_) => ErrorKind::Failed,
    }
}
