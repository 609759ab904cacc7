//! The agent's one stream to the controller: hello → welcome (resume point) → spooled batches
//! in order with a bounded in-flight window, acks, heartbeats and typed commands; reconnects
//! with exponential backoff and full jitter.

use std::time::Duration;

use infrastructor_hostops::change::{
    ChangeEngine, ChangeError, ChangeSet, CommitOptions, LocalHost,
};
use infrastructor_hostops::names::TxnId;
use infrastructor_proto::v1::agent_gateway_client::AgentGatewayClient;
use infrastructor_proto::v1::command_succeeded::Payload;
use infrastructor_proto::v1::{
    agent_message, command, command_result, controller_message, AgentMessage, Command,
    CommandFailed, CommandResult, CommandSucceeded, ErrorKind, Heartbeat, Hello,
};
use infrastructor_proto::MAX_MESSAGE_BYTES;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::containers::{self, ContainerRequest};
use crate::daemon::Shared;
use crate::error::{AgentError, Result};
use crate::metrics::now_ms;
use crate::tls;

/// Batches sent but not yet acknowledged, at most.
const IN_FLIGHT_WINDOW: u64 = 32;
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);

/// Keeps a stream open until shutdown, reconnecting after every failure.
pub(crate) async fn run_link(shared: &Shared, shutdown: &CancellationToken) {
    let mut attempt: u32 = 0;
    loop {
        let mut welcomed = false;
        match run_session(shared, shutdown, &mut welcomed).await {
            Ok(()) => return,
            Err(error) => {
                shared.set_connected(false);
                tracing::warn!(%error, "link to controller lost");
            }
        }
        if welcomed {
            attempt = 0;
        }
        let delay = backoff_delay(
            shared.config.backoff_initial,
            shared.config.backoff_max,
            attempt,
            &mut rand::thread_rng(),
        );
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Full jitter: uniform in [0, min(max, initial · 2^attempt)], so a fleet reconnecting after a
/// controller restart spreads out instead of arriving at once.
pub fn backoff_delay(
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: &mut impl Rng,
) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    let ceiling = initial.saturating_mul(factor).min(max);
    Duration::from_millis(rng.gen_range(0..=ceiling.as_millis() as u64))
}

async fn run_session(
    shared: &Shared,
    shutdown: &CancellationToken,
    welcomed: &mut bool,
) -> Result<()> {
    let identity = shared.identity();
    let url = shared
        .config
        .controller_url
        .clone()
        .unwrap_or_else(|| identity.meta.controller_url.clone());
    let channel = tls::connect(&url, tls::mutual_tls_config(&identity)?).await?;
    let mut client = AgentGatewayClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (outbound, outbound_rx) = mpsc::channel::<AgentMessage>(IN_FLIGHT_WINDOW as usize * 2);
    let last_assigned_seq = shared.spool.lock().await.state().last_assigned_seq;
    send(
        &outbound,
        agent_message::Body::Hello(Hello {
            device_id: identity.meta.device_id.clone(),
            agent_version: crate::VERSION.to_string(),
            hostname: shared.config.hostname.clone(),
            capabilities: vec!["metrics".to_string()],
            last_assigned_seq,
        }),
    )
    .await?;
    let mut inbound = client
        .connect(ReceiverStream::new(outbound_rx))
        .await?
        .into_inner();

    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(message))) => match message.body {
            Some(controller_message::Body::Welcome(welcome)) => welcome,
            other => {
                return Err(AgentError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )))
            }
        },
        Ok(Ok(None)) => return Err(AgentError::Protocol("stream closed before welcome".into())),
        Ok(Err(status)) => return Err(status.into()),
        Err(_) => return Err(AgentError::Protocol("no welcome from controller".into())),
    };
    let mut last_acked = welcome.high_water_mark;
    {
        let mut spool = shared.spool.lock().await;
        spool.acknowledge_through(last_acked)?;
        spool.advance_to(last_acked)?;
    }
    *welcomed = true;
    shared.set_connected(true);
    // The controller may have missed rounds while the link was down: report afresh.
    shared.run_checks.notify_one();
    tracing::info!(%url, resume_after = last_acked, "connected to controller");

    let mut last_sent = last_acked;
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat_interval);
    heartbeat.tick().await;
    // Check reports queued while disconnected are sent now; only this session reads them.
    let mut outbox = shared.outbox.lock().await;
    loop {
        last_sent = send_pending(shared, &outbound, last_sent, last_acked).await?;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = shared.new_batch.notified() => {}
            Some(queued) = outbox.recv() => {
                outbound
                    .send(queued)
                    .await
                    .map_err(|_| AgentError::Protocol("stream to controller closed".into()))?;
            }
            _ = heartbeat.tick() => {
                send(&outbound, agent_message::Body::Heartbeat(Heartbeat { sent_at_unix_ms: now_ms() })).await?;
            }
            message = inbound.message() => {
                let body = match message {
                    Ok(Some(message)) => message.body,
                    Ok(None) => return Err(AgentError::Protocol("controller closed the stream".into())),
                    Err(status) => return Err(status.into()),
                };
                match body {
                    Some(controller_message::Body::Ack(ack)) => {
                        if ack.seq > last_acked {
                            last_acked = ack.seq;
                            shared.spool.lock().await.acknowledge_through(ack.seq)?;
                        }
                    }
                    Some(controller_message::Body::Command(command)) => {
                        if let Some(result) = handle_command(shared, command) {
                            send(&outbound, agent_message::Body::CommandResult(result)).await?;
                        }
                    }
                    // Every command today completes at once, so there is nothing to cancel.
                    Some(controller_message::Body::Cancel(_)) | None => {}
                    Some(controller_message::Body::Welcome(_)) => {
                        return Err(AgentError::Protocol("unexpected second welcome".into()));
                    }
                }
            }
        }
    }
}

/// Sends spooled batches after `last_sent` while the in-flight window has room.
async fn send_pending(
    shared: &Shared,
    outbound: &mpsc::Sender<AgentMessage>,
    mut last_sent: u64,
    last_acked: u64,
) -> Result<u64> {
    let in_flight = last_sent.saturating_sub(last_acked);
    if in_flight >= IN_FLIGHT_WINDOW {
        return Ok(last_sent);
    }
    let batches = {
        let spool = shared.spool.lock().await;
        let pending = spool.pending_after(last_sent, (IN_FLIGHT_WINDOW - in_flight) as usize);
        pending
            .into_iter()
            .map(|seq| spool.read(seq))
            .collect::<Result<Vec<_>>>()?
    };
    for batch in batches {
        last_sent = batch.seq;
        send(outbound, agent_message::Body::Metrics(batch)).await?;
    }
    Ok(last_sent)
}

async fn send(outbound: &mpsc::Sender<AgentMessage>, body: agent_message::Body) -> Result<()> {
    outbound
        .send(AgentMessage { body: Some(body) })
        .await
        .map_err(|_| AgentError::Protocol("stream to controller closed".into()))
}

/// Answers at once, or returns `None` when the command runs on its own task and answers
/// through the outbox (configuration changes).
fn handle_command(shared: &Shared, command: Command) -> Option<CommandResult> {
    // The request ID starts with the operation's correlation ID, so one ID follows an
    // operation from the client through the controller to this host's log.
    tracing::info!(
        request_id = %command.request_id,
        command = command_name(command.kind.as_ref()),
        "command received"
    );
    let outcome = if command.deadline_unix_ms > 0 && command.deadline_unix_ms < now_ms() {
        Err((
            ErrorKind::DeadlineExceeded,
            "command arrived after its deadline".to_string(),
        ))
    } else {
        match command.kind {
            Some(command::Kind::CollectNow(_)) => {
                shared.collect_now.notify_one();
                Ok("collection triggered".to_string())
            }
            Some(command::Kind::RunChecks(_)) if shared.config.checks.interval.is_zero() => Err((
                ErrorKind::Conflict,
                "host checks are disabled in this agent's configuration".to_string(),
            )),
            Some(command::Kind::RunChecks(_)) => {
                shared.run_checks.notify_one();
                Ok("checks triggered".to_string())
            }
            Some(command::Kind::SetInterval(set)) => {
                let seconds = set.interval_seconds;
                if (1..=86_400).contains(&seconds) {
                    shared
                        .interval
                        .send_replace(Duration::from_secs(u64::from(seconds)));
                    Ok(format!("interval set to {seconds}s"))
                } else {
                    Err((
                        ErrorKind::InvalidInput,
                        format!("interval_seconds must be 1..=86400, got {seconds}"),
                    ))
                }
            }
            Some(
                kind @ (command::Kind::PrepareChange(_)
                | command::Kind::CommitChange(_)
                | command::Kind::ConfirmChange(_)
                | command::Kind::RollbackChange(_)
                | command::Kind::AbortChange(_)
                | command::Kind::ChangeStatus(_)),
            ) => match spawn_change(shared, command.request_id.clone(), kind) {
                Ok(()) => return None,
                Err(message) => Err((ErrorKind::InvalidInput, message)),
            },
            Some(command::Kind::ListContainers(list)) => {
                let outbox = shared.outbox_sender.clone();
                let request = ContainerRequest::List(list.names);
                containers::spawn(outbox, command.request_id, request);
                return None;
            }
            Some(command::Kind::Container(one)) => {
                let outbox = shared.outbox_sender.clone();
                containers::spawn(outbox, command.request_id, ContainerRequest::One(one));
                return None;
            }
            Some(command::Kind::Backup(backup)) => {
                let outbox = shared.outbox_sender.clone();
                let policy = shared.config.backups.clone();
                crate::backups::spawn(outbox, policy, command.request_id, backup);
                return None;
            }
            None => Err((ErrorKind::InvalidInput, "unknown command".to_string())),
        }
    };
    let outcome = match outcome {
        Ok(message) => command_result::Outcome::Succeeded(CommandSucceeded {
            message,
            payload: None,
        }),
        Err((kind, message)) => command_result::Outcome::Failed(CommandFailed {
            kind: kind.into(),
            message,
        }),
    };
    Some(CommandResult {
        request_id: command.request_id,
        outcome: Some(outcome),
    })
}

fn command_name(kind: Option<&command::Kind>) -> &'static str {
    match kind {
        Some(command::Kind::CollectNow(_)) => "collect_now",
        Some(command::Kind::SetInterval(_)) => "set_interval",
        Some(command::Kind::RunChecks(_)) => "run_checks",
        Some(command::Kind::PrepareChange(_)) => "prepare_change",
        Some(command::Kind::CommitChange(_)) => "commit_change",
        Some(command::Kind::ConfirmChange(_)) => "confirm_change",
        Some(command::Kind::RollbackChange(_)) => "rollback_change",
        Some(command::Kind::AbortChange(_)) => "abort_change",
        Some(command::Kind::ChangeStatus(_)) => "change_status",
        Some(command::Kind::ListContainers(_)) => "list_containers",
        Some(command::Kind::Container(_)) => "container",
        Some(command::Kind::Backup(_)) => "backup",
        None => "unknown",
    }
}

/// Configuration changes take a while (validators, restarts, health checks), so they run on
/// their own task and answer through the outbox; the stream keeps flowing meanwhile.
fn spawn_change(
    shared: &Shared,
    request_id: String,
    kind: command::Kind,
) -> std::result::Result<(), String> {
    let engine = shared.changes.clone().ok_or_else(|| {
        "configuration changes are disabled on this host (no [changes] roots in its config)"
            .to_string()
    })?;
    let outbox = shared.outbox_sender.clone();
    let deadline_armed = shared.change_deadline_armed.clone();
    let span = tracing::info_span!("change", %request_id);
    tokio::spawn(
        async move {
            let outcome = run_change(&engine, kind).await;
            deadline_armed.notify_one();
            let outcome = match outcome {
                Ok((message, payload)) => command_result::Outcome::Succeeded(CommandSucceeded {
                    message,
                    payload: Some(payload),
                }),
                Err(error) => {
                    tracing::warn!(%error, "configuration change step failed");
                    command_result::Outcome::Failed(CommandFailed {
                        kind: error.kind().into(),
                        message: error.to_string(),
                    })
                }
            };
            answer(&outbox, request_id, outcome).await;
        }
        .instrument(span),
    );
    Ok(())
}

/// Sends the answer to a command that ran on its own task, through the outbox.
pub(crate) async fn answer(
    outbox: &mpsc::Sender<AgentMessage>,
    request_id: String,
    outcome: command_result::Outcome,
) {
    let result = CommandResult {
        request_id,
        outcome: Some(outcome),
    };
    let message = AgentMessage {
        body: Some(agent_message::Body::CommandResult(result)),
    };
    // The outbox closes only when the agent stops; the controller resends what it needs.
    let _ = outbox.send(message).await;
}

fn txn_id(id: &str) -> std::result::Result<TxnId, ChangeError> {
    TxnId::new(id).map_err(|e| ChangeError::InvalidInput(e.to_string()))
}

/// Runs one change command; its answer is the state's name and the engine's typed report.
async fn run_change(
    engine: &ChangeEngine<LocalHost>,
    kind: command::Kind,
) -> std::result::Result<(String, Payload), ChangeError> {
    let seconds = |s: u32| Duration::from_secs(u64::from(s));
    let report = match kind {
        command::Kind::PrepareChange(prepare) => {
            let set = prepare
                .change_set
                .ok_or_else(|| ChangeError::InvalidInput("the change set is missing".into()))?;
            let set = ChangeSet::try_from(set)
                .map_err(|e| ChangeError::InvalidInput(format!("change set: {e}")))?;
            let report = engine.prepare(&txn_id(&prepare.txn_id)?, &set).await?;
            let state = report.state.as_str().to_string();
            return Ok((state, Payload::PrepareReport((&report).into())));
        }
        command::Kind::CommitChange(commit) => {
            let defaults = CommitOptions::default();
            let options = CommitOptions {
                confirm_timeout: seconds(commit.confirm_timeout_seconds),
                health_timeout: match commit.health_timeout_seconds {
                    0 => defaults.health_timeout,
                    s => seconds(s),
                },
            };
            engine.commit(&txn_id(&commit.txn_id)?, options).await?
        }
        command::Kind::ConfirmChange(confirm) => engine.confirm(&txn_id(&confirm.txn_id)?).await?,
        command::Kind::RollbackChange(rollback) => {
            let reason = match rollback.reason.as_str() {
                "" => "rollback requested by the controller",
                reason => reason,
            };
            engine.rollback(&txn_id(&rollback.txn_id)?, reason).await?
        }
        command::Kind::AbortChange(abort) => engine.abort(&txn_id(&abort.txn_id)?).await?,
        command::Kind::ChangeStatus(status) => engine.report(&txn_id(&status.txn_id)?).await?,
        _ => return Err(ChangeError::InvalidInput("not a change command".into())),
    };
    let state = report.state.as_str().to_string();
    Ok((state, Payload::CommitReport((&report).into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let ceiling = initial
                .saturating_mul(2u32.saturating_pow(attempt.min(20)))
                .min(max);
            let delay = backoff_delay(initial, max, attempt, &mut rng);
            assert!(
                delay <= ceiling,
                "attempt {attempt}: {delay:?} > {ceiling:?}"
            );
        }
        let delays: std::collections::HashSet<_> = (0..50)
            .map(|_| backoff_delay(initial, max, 10, &mut rng))
            .collect();
        assert!(delays.len() > 10, "delays are spread, not synchronized");
    }
}
