//! The change engine's types in their protocol form and back. Decoding is validation: a name
//! or path that could not have been built here is refused, so what the agent (or the
//! controller, reading an agent's report) gets is as trustworthy as the engine's own types.

use infrastructor_proto::v1 as proto;
use proto::change_action::Kind as ActionKind;
use proto::health_check::Kind as CheckKind;

use super::engine::{CommitReport, FileDiff, PrepareReport, ValidatorOutcome};
use super::health::HealthOutcome;
use super::journal::TxnState;
use super::spec::{Action, ChangeSet, FileChange, FileMode, HealthCheck, ValidatorCall};
use crate::names::{ContainerName, InvalidName, ManagedPath, UnitName};

/// Why a protocol message is not a valid value of the engine's types.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("mode {0:o} is not a permission mode")]
    Mode(u32),
}

impl From<TxnState> for proto::TxnState {
    fn from(state: TxnState) -> Self {
        match state {
            TxnState::Prepared => Self::Prepared,
            TxnState::Committing => Self::Committing,
            TxnState::AwaitingConfirmation => Self::AwaitingConfirmation,
            TxnState::Committed => Self::Committed,
            TxnState::RollingBack => Self::RollingBack,
            TxnState::RolledBack => Self::RolledBack,
            TxnState::Aborted => Self::Aborted,
        }
    }
}

/// A state from the wire; an unknown or unset one is refused.
pub fn txn_state(raw: i32) -> Result<TxnState, WireError> {
    match proto::TxnState::try_from(raw) {
        Ok(proto::TxnState::Prepared) => Ok(TxnState::Prepared),
        Ok(proto::TxnState::Committing) => Ok(TxnState::Committing),
        Ok(proto::TxnState::AwaitingConfirmation) => Ok(TxnState::AwaitingConfirmation),
        Ok(proto::TxnState::Committed) => Ok(TxnState::Committed),
        Ok(proto::TxnState::RollingBack) => Ok(TxnState::RollingBack),
        Ok(proto::TxnState::RolledBack) => Ok(TxnState::RolledBack),
        Ok(proto::TxnState::Aborted) => Ok(TxnState::Aborted),
        Ok(proto::TxnState::Unspecified) | Err(_) => Err(WireError::Missing("the state")),
    }
}

impl From<&ChangeSet> for proto::ChangeSet {
    fn from(set: &ChangeSet) -> Self {
        Self {
            files: set.files.iter().map(file_to_wire).collect(),
            validators: set
                .validators
                .iter()
                .map(|call| proto::ValidatorCall {
                    name: call.name.clone(),
                    file: call.file.to_string(),
                })
                .collect(),
            actions: set.actions.iter().map(action_to_wire).collect(),
            health_checks: set.health_checks.iter().map(check_to_wire).collect(),
        }
    }
}

impl TryFrom<proto::ChangeSet> for ChangeSet {
    type Error = WireError;

    fn try_from(set: proto::ChangeSet) -> Result<Self, WireError> {
        Ok(Self {
            files: set
                .files
                .into_iter()
                .map(file_from_wire)
                .collect::<Result<_, _>>()?,
            validators: set
                .validators
                .into_iter()
                .map(|call| {
                    Ok(ValidatorCall {
                        name: call.name,
                        file: ManagedPath::new(&call.file)?,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            actions: set
                .actions
                .into_iter()
                .map(action_from_wire)
                .collect::<Result<_, _>>()?,
            health_checks: set
                .health_checks
                .into_iter()
                .map(check_from_wire)
                .collect::<Result<_, _>>()?,
        })
    }
}

fn file_to_wire(file: &FileChange) -> proto::FileChange {
    proto::FileChange {
        path: file.path.to_string(),
        content: file.content.clone(),
        mode: file.mode.map(|mode| mode.0),
        owner: file.owner.clone(),
        group: file.group.clone(),
    }
}

fn file_from_wire(file: proto::FileChange) -> Result<FileChange, WireError> {
    let mode = match file.mode {
        Some(mode) if mode > 0o7777 => return Err(WireError::Mode(mode)),
        mode => mode.map(FileMode),
    };
    Ok(FileChange {
        path: ManagedPath::new(&file.path)?,
        content: file.content,
        mode,
        owner: file.owner,
        group: file.group,
    })
}

fn action_to_wire(action: &Action) -> proto::ChangeAction {
    let kind = match action {
        Action::ReloadUnit(unit) => ActionKind::ReloadUnit(unit.to_string()),
        Action::RestartUnit(unit) => ActionKind::RestartUnit(unit.to_string()),
        Action::RestartContainer(name) => ActionKind::RestartContainer(name.to_string()),
    };
    proto::ChangeAction { kind: Some(kind) }
}

fn action_from_wire(action: proto::ChangeAction) -> Result<Action, WireError> {
    Ok(match action.kind.ok_or(WireError::Missing("an action"))? {
        ActionKind::ReloadUnit(unit) => Action::ReloadUnit(UnitName::new(&unit)?),
        ActionKind::RestartUnit(unit) => Action::RestartUnit(UnitName::new(&unit)?),
        ActionKind::RestartContainer(name) => Action::RestartContainer(ContainerName::new(&name)?),
    })
}

fn check_to_wire(check: &HealthCheck) -> proto::HealthCheck {
    let kind = match check {
        HealthCheck::UnitActive(unit) => CheckKind::UnitActive(unit.to_string()),
        HealthCheck::ContainerRunning(name) => CheckKind::ContainerRunning(name.to_string()),
        HealthCheck::HttpGet(url) => CheckKind::HttpGet(url.clone()),
        HealthCheck::TcpConnect(address) => CheckKind::TcpConnect(address.clone()),
    };
    proto::HealthCheck { kind: Some(kind) }
}

fn check_from_wire(check: proto::HealthCheck) -> Result<HealthCheck, WireError> {
    Ok(
        match check.kind.ok_or(WireError::Missing("a health check"))? {
            CheckKind::UnitActive(unit) => HealthCheck::UnitActive(UnitName::new(&unit)?),
            CheckKind::ContainerRunning(name) => {
                HealthCheck::ContainerRunning(ContainerName::new(&name)?)
            }
            CheckKind::HttpGet(url) => HealthCheck::HttpGet(url),
            CheckKind::TcpConnect(address) => HealthCheck::TcpConnect(address),
        },
    )
}

impl From<&PrepareReport> for proto::PrepareReport {
    fn from(report: &PrepareReport) -> Self {
        Self {
            txn_id: report.txn_id.clone(),
            state: proto::TxnState::from(report.state).into(),
            files: report
                .files
                .iter()
                .map(|file| proto::FileDiff {
                    path: file.path.to_string(),
                    existed: file.existed,
                    changed: file.changed,
                    diff: file.diff.clone(),
                })
                .collect(),
            validators: report
                .validators
                .iter()
                .map(|outcome| proto::ValidatorOutcome {
                    name: outcome.name.clone(),
                    file: outcome.file.to_string(),
                    passed: outcome.passed,
                    output: outcome.output.clone(),
                })
                .collect(),
            reason: report.reason.clone(),
        }
    }
}

impl TryFrom<proto::PrepareReport> for PrepareReport {
    type Error = WireError;

    fn try_from(report: proto::PrepareReport) -> Result<Self, WireError> {
        Ok(Self {
            txn_id: report.txn_id,
            state: txn_state(report.state)?,
            files: report
                .files
                .into_iter()
                .map(|file| {
                    Ok(FileDiff {
                        path: ManagedPath::new(&file.path)?,
                        existed: file.existed,
                        changed: file.changed,
                        diff: file.diff,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            validators: report
                .validators
                .into_iter()
                .map(|outcome| {
                    Ok(ValidatorOutcome {
                        name: outcome.name,
                        file: ManagedPath::new(&outcome.file)?,
                        passed: outcome.passed,
                        output: outcome.output,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            reason: report.reason,
        })
    }
}

impl From<&CommitReport> for proto::CommitReport {
    fn from(report: &CommitReport) -> Self {
        Self {
            txn_id: report.txn_id.clone(),
            state: proto::TxnState::from(report.state).into(),
            reason: report.reason.clone(),
            health: report
                .health
                .iter()
                .map(|outcome| proto::HealthOutcome {
                    check: outcome.check.clone(),
                    passed: outcome.passed,
                    detail: outcome.detail.clone(),
                })
                .collect(),
            confirm_deadline_unix_ms: report.confirm_deadline_ms,
        }
    }
}

impl TryFrom<proto::CommitReport> for CommitReport {
    type Error = WireError;

    fn try_from(report: proto::CommitReport) -> Result<Self, WireError> {
        Ok(Self {
            txn_id: report.txn_id,
            state: txn_state(report.state)?,
            reason: report.reason,
            health: report
                .health
                .into_iter()
                .map(|outcome| HealthOutcome {
                    check: outcome.check,
                    passed: outcome.passed,
                    detail: outcome.detail,
                })
                .collect(),
            confirm_deadline_ms: report.confirm_deadline_unix_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_set() -> ChangeSet {
        serde_json::from_value(serde_json::json!({
            "files": [{"path": "/etc/app/app.conf", "content": "a = 1\n", "mode": "0640",
                       "owner": "root"}],
            "validators": [{"name": "nginx", "file": "/etc/app/app.conf"}],
            "actions": [{"reload_unit": "nginx.service"}, {"restart_container": "web"}],
            "health_checks": [{"unit_active": "nginx.service"}, {"container_running": "web"},
                              {"http_get": "http://127.0.0.1:8080/"},
                              {"tcp_connect": "127.0.0.1:22"}]
        }))
        .unwrap()
    }

    #[test]
    fn a_change_set_survives_the_wire_unchanged() {
        let set = sample_set();
        let back = ChangeSet::try_from(proto::ChangeSet::from(&set)).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn names_and_paths_are_validated_as_they_arrive() {
        let mut wire = proto::ChangeSet::from(&sample_set());
        wire.files[0].path = "/etc/../shadow".into();
        assert!(matches!(ChangeSet::try_from(wire), Err(WireError::Name(_))));

        let mut wire = proto::ChangeSet::from(&sample_set());
        wire.actions[0].kind = Some(ActionKind::RestartUnit("nginx; reboot".into()));
        assert!(matches!(ChangeSet::try_from(wire), Err(WireError::Name(_))));

        let mut wire = proto::ChangeSet::from(&sample_set());
        wire.files[0].mode = Some(0o17777);
        assert!(matches!(ChangeSet::try_from(wire), Err(WireError::Mode(_))));

        let mut wire = proto::ChangeSet::from(&sample_set());
        wire.health_checks[0].kind = None;
        assert!(matches!(
            ChangeSet::try_from(wire),
            Err(WireError::Missing(_))
        ));
    }

    #[test]
    fn reports_survive_the_wire_and_need_a_state() {
        let prepare = PrepareReport {
            txn_id: "abc".into(),
            state: TxnState::Aborted,
            files: vec![FileDiff {
                path: ManagedPath::new("/etc/app/app.conf").unwrap(),
                existed: true,
                changed: true,
                diff: "-a\n+b\n".into(),
            }],
            validators: vec![ValidatorOutcome {
                name: "nginx".into(),
                file: ManagedPath::new("/etc/app/app.conf").unwrap(),
                passed: false,
                output: "syntax error".into(),
            }],
            reason: Some("validator nginx failed".into()),
        };
        let back = PrepareReport::try_from(proto::PrepareReport::from(&prepare)).unwrap();
        assert_eq!(back, prepare);

        let commit = CommitReport {
            txn_id: "abc".into(),
            state: TxnState::AwaitingConfirmation,
            reason: None,
            health: vec![HealthOutcome {
                check: "unit nginx.service active".into(),
                passed: true,
                detail: "active".into(),
            }],
            confirm_deadline_ms: Some(1_700_000_000_000),
        };
        let mut wire = proto::CommitReport::from(&commit);
        assert_eq!(CommitReport::try_from(wire.clone()).unwrap(), commit);
        wire.state = 0;
        assert!(CommitReport::try_from(wire).is_err());
    }
}
