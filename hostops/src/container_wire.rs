//! Container operations and their answers in their protocol form and back. Decoding a
//! command is validation (the name, the signal), so the agent acts only on what the
//! controller could have built; decoding an answer only reshapes it — its text is the host's
//! and the controller cleans it before storing or showing it.

use infrastructor_proto::v1 as proto;
use proto::container_command::Op;

use crate::change::wire::WireError;
use crate::compose::{ComposeService, Condition, Dependency};
use crate::container_ops::{
    ActionOptions, ContainerAction, ContainerAnswer, ContainerLogs, ContainerOp, ContainerStats,
    LogLine, LogQuery, LogStream, Signal,
};
use crate::docker::ContainerInfo;
use crate::names::ContainerName;

/// The command asking for `op` on `name`.
pub fn command(name: &ContainerName, op: &ContainerOp) -> proto::ContainerCommand {
    let op = match op {
        ContainerOp::Act { action, options } => Op::Act(proto::ContainerAct {
            action: proto::ContainerAction::from(*action) as i32,
            grace_seconds: options.grace_seconds,
            signal: options
                .signal
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        }),
        ContainerOp::Inspect => Op::Inspect(proto::ContainerInspect {}),
        ContainerOp::Logs(query) => Op::Logs(proto::ContainerLogsQuery {
            tail: query.tail,
            since_unix_ms: query.since_ms,
        }),
        ContainerOp::Stats => Op::Stats(proto::ContainerStatsQuery {}),
    };
    proto::ContainerCommand {
        name: name.as_str().to_string(),
        op: Some(op),
    }
}

/// A command from the wire, validated.
pub fn decode_command(
    command: &proto::ContainerCommand,
) -> Result<(ContainerName, ContainerOp), WireError> {
    let name = ContainerName::new(&command.name)?;
    let op = match command.op.as_ref().ok_or(WireError::Missing("operation"))? {
        Op::Act(act) => {
            let action = match proto::ContainerAction::try_from(act.action) {
                Ok(proto::ContainerAction::Start) => ContainerAction::Start,
                Ok(proto::ContainerAction::Stop) => ContainerAction::Stop,
                Ok(proto::ContainerAction::Restart) => ContainerAction::Restart,
                Ok(proto::ContainerAction::Kill) => ContainerAction::Kill,
                _ => return Err(WireError::Missing("action")),
            };
            let signal = match act.signal.as_str() {
                "" => None,
                named => Some(Signal::new(named)?),
            };
            ContainerOp::Act {
                action,
                options: ActionOptions {
                    grace_seconds: act.grace_seconds,
                    signal,
                },
            }
        }
        Op::Inspect(_) => ContainerOp::Inspect,
        Op::Logs(query) => ContainerOp::Logs(LogQuery {
            tail: query.tail,
            since_ms: query.since_unix_ms,
        }),
        Op::Stats(_) => ContainerOp::Stats,
    };
    Ok((name, op))
}

impl From<ContainerAction> for proto::ContainerAction {
    fn from(action: ContainerAction) -> Self {
        match action {
            ContainerAction::Start => Self::Start,
            ContainerAction::Stop => Self::Stop,
            ContainerAction::Restart => Self::Restart,
            ContainerAction::Kill => Self::Kill,
        }
    }
}

impl From<&ContainerInfo> for proto::ContainerState {
    fn from(c: &ContainerInfo) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            state: c.state.clone(),
            health: c.health.clone().unwrap_or_default(),
            restart_count: c.restart_count,
            exit_code: c.exit_code,
            oom_killed: c.oom_killed,
            uptime_seconds: c.uptime_seconds,
            stopped_seconds: c.stopped_seconds,
            started_at_unix_ms: c.started_at_ms,
            finished_at_unix_ms: c.finished_at_ms,
            compose: c.compose.as_ref().map(|compose| proto::ComposeService {
                project: compose.project.clone(),
                service: compose.service.clone(),
                depends_on: compose
                    .depends_on
                    .iter()
                    .map(|d| proto::ComposeDependency {
                        service: d.service.clone(),
                        condition: condition_to_wire(d.condition) as i32,
                        restart: d.restart,
                    })
                    .collect(),
            }),
        }
    }
}

impl From<proto::ContainerState> for ContainerInfo {
    fn from(c: proto::ContainerState) -> Self {
        Self {
            id: c.id,
            name: c.name,
            image: c.image,
            state: c.state,
            health: Some(c.health).filter(|h| !h.is_empty()),
            restart_count: c.restart_count,
            exit_code: c.exit_code,
            oom_killed: c.oom_killed,
            uptime_seconds: c.uptime_seconds,
            stopped_seconds: c.stopped_seconds,
            started_at_ms: c.started_at_unix_ms,
            finished_at_ms: c.finished_at_unix_ms,
            compose: c.compose.map(|compose| ComposeService {
                project: compose.project,
                service: compose.service,
                depends_on: compose
                    .depends_on
                    .into_iter()
                    .map(|d| Dependency {
                        service: d.service,
                        condition: condition_from_wire(d.condition),
                        restart: d.restart,
                    })
                    .collect(),
            }),
        }
    }
}

fn condition_to_wire(condition: Condition) -> proto::DependencyCondition {
    match condition {
        Condition::ServiceStarted => proto::DependencyCondition::ServiceStarted,
        Condition::ServiceHealthy => proto::DependencyCondition::ServiceHealthy,
        Condition::ServiceCompletedSuccessfully => {
            proto::DependencyCondition::ServiceCompletedSuccessfully
        }
    }
}

/// An unknown or unset condition is ordering only, as Compose's unknown names are.
fn condition_from_wire(value: i32) -> Condition {
    match proto::DependencyCondition::try_from(value) {
        Ok(proto::DependencyCondition::ServiceHealthy) => Condition::ServiceHealthy,
        Ok(proto::DependencyCondition::ServiceCompletedSuccessfully) => {
            Condition::ServiceCompletedSuccessfully
        }
        _ => Condition::ServiceStarted,
    }
}

/// The list answer.
pub fn list_payload(containers: &[ContainerInfo]) -> proto::ContainerList {
    proto::ContainerList {
        containers: containers.iter().map(Into::into).collect(),
    }
}

/// An operation's answer as a command payload.
pub fn answer_payload(answer: &ContainerAnswer) -> proto::command_succeeded::Payload {
    use proto::command_succeeded::Payload;
    match answer {
        ContainerAnswer::State(info) => Payload::ContainerState(info.as_ref().into()),
        ContainerAnswer::Logs(logs) => Payload::ContainerLogs(proto::ContainerLogs {
            lines: logs
                .lines
                .iter()
                .map(|l| proto::LogLine {
                    ts_unix_ms: l.ts_ms,
                    stderr: l.stream == LogStream::Stderr,
                    text: l.text.clone(),
                })
                .collect(),
            truncated: logs.truncated,
        }),
        ContainerAnswer::Stats(s) => Payload::ContainerStats(proto::ContainerStats {
            cpu_percent: s.cpu_percent,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            network_rx_bytes: s.network_rx_bytes,
            network_tx_bytes: s.network_tx_bytes,
            block_read_bytes: s.block_read_bytes,
            block_write_bytes: s.block_write_bytes,
            pids: s.pids,
        }),
    }
}

/// A payload as an operation's answer; `None` when it is no container answer.
pub fn answer_from_payload(payload: proto::command_succeeded::Payload) -> Option<ContainerAnswer> {
    use proto::command_succeeded::Payload;
    Some(match payload {
        Payload::ContainerState(state) => ContainerAnswer::State(Box::new(state.into())),
        Payload::ContainerLogs(logs) => ContainerAnswer::Logs(ContainerLogs {
            lines: logs
                .lines
                .into_iter()
                .map(|l| LogLine {
                    ts_ms: l.ts_unix_ms,
                    stream: if l.stderr {
                        LogStream::Stderr
                    } else {
                        LogStream::Stdout
                    },
                    text: l.text,
                })
                .collect(),
            truncated: logs.truncated,
        }),
        Payload::ContainerStats(s) => ContainerAnswer::Stats(ContainerStats {
            cpu_percent: s.cpu_percent,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            network_rx_bytes: s.network_rx_bytes,
            network_tx_bytes: s.network_tx_bytes,
            block_read_bytes: s.block_read_bytes,
            block_write_bytes: s.block_write_bytes,
            pids: s.pids,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_the_wire_and_bad_ones_are_refused() {
        let name = ContainerName::new("web-1").unwrap();
        let op = ContainerOp::Act {
            action: ContainerAction::Kill,
            options: ActionOptions {
                grace_seconds: Some(3),
                signal: Some(Signal::new("SIGHUP").unwrap()),
            },
        };
        let (back_name, back_op) = decode_command(&command(&name, &op)).unwrap();
        assert_eq!((back_name, back_op), (name.clone(), op));
        let logs = ContainerOp::Logs(LogQuery {
            tail: 50,
            since_ms: Some(1_000),
        });
        assert_eq!(decode_command(&command(&name, &logs)).unwrap().1, logs);

        let mut bad = command(&name, &ContainerOp::Inspect);
        bad.name = "../etc".into();
        assert!(decode_command(&bad).is_err());
        let mut bad_signal = command(&name, &ContainerOp::Stats);
        bad_signal.op = Some(Op::Act(proto::ContainerAct {
            action: proto::ContainerAction::Kill as i32,
            grace_seconds: None,
            signal: "TERM; rm".into(),
        }));
        assert!(decode_command(&bad_signal).is_err());
        bad_signal.op = Some(Op::Act(proto::ContainerAct::default()));
        assert!(decode_command(&bad_signal).is_err(), "an unset action");
    }
}
