//! Domain enums shared by the store and the services, in place of strings: what can be named
//! is spelled once, and a typo is a compile error rather than a branch never taken.

use serde::{Deserialize, Serialize};

/// How the controller reaches a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// An enrolled agent streams to the controller.
    Agent,
    /// The controller reaches it over SSH.
    Agentless,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Agentless => "agentless",
        }
    }
}

impl TryFrom<String> for DeviceKind {
    type Error = String;

    /// As stored: the store reads the `kind` column through this.
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        match stored.as_str() {
            "agent" => Ok(Self::Agent),
            "agentless" => Ok(Self::Agentless),
            other => Err(format!("unknown device kind {other:?}")),
        }
    }
}

/// A host check's verdict: the one severity enum, shared with the agent (and its parsers).
pub use infrastructor_hostops::CheckStatus;

/// A device's (or the fleet's) health in a diagnosis: its worst check verdict, or
/// `unreachable` when nothing could be learned.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Warning,
    Critical,
    Unreachable,
}

impl Health {
    /// The health a set of verdicts amounts to: the worst of them (`ok` for none).
    pub fn worst(statuses: impl IntoIterator<Item = Health>) -> Self {
        statuses.into_iter().max().unwrap_or(Self::Ok)
    }
}

impl From<CheckStatus> for Health {
    fn from(status: CheckStatus) -> Self {
        match status {
            CheckStatus::Ok => Self::Ok,
            CheckStatus::Warning => Self::Warning,
            CheckStatus::Critical => Self::Critical,
        }
    }
}

/// Where a configuration change is in its life. Plans end `planned` or `invalid`; a
/// deployment goes `preparing` → `committing` → `confirming` → `committed` (or
/// `committing` → `awaiting_confirmation` → `confirming` → `committed`), or ends `aborted`
/// (nothing was applied) or `rolled_back`; `rollback_failed` is retried by a later rollback.
///
/// `confirming` is the decision record: once it is stored, a controller that restarts
/// finishes the confirmation; before it, a restart rolls the change back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    Preparing,
    Planned,
    Invalid,
    Aborted,
    Committing,
    Confirming,
    AwaitingConfirmation,
    Committed,
    RolledBack,
    RollbackFailed,
}

impl ChangeState {
    pub const ALL: [Self; 10] = [
        Self::Preparing,
        Self::Planned,
        Self::Invalid,
        Self::Aborted,
        Self::Committing,
        Self::Confirming,
        Self::AwaitingConfirmation,
        Self::Committed,
        Self::RolledBack,
        Self::RollbackFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Planned => "planned",
            Self::Invalid => "invalid",
            Self::Aborted => "aborted",
            Self::Committing => "committing",
            Self::Confirming => "confirming",
            Self::AwaitingConfirmation => "awaiting_confirmation",
            Self::Committed => "committed",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
        }
    }

    /// The states a change may move to `self` from: the store updates a change only from one
    /// of them, so two decisions racing (a confirmation and a rollback) cannot both apply.
    pub fn predecessors(self) -> &'static [Self] {
        use ChangeState::*;
        match self {
            Preparing => &[],
            Planned | Invalid | Committing => &[Preparing],
            // Committing with nothing applied yet (cancelled, or a restart, before any host
            // committed).
            Aborted => &[Preparing, Committing],
            AwaitingConfirmation => &[Committing],
            Confirming => &[Committing, AwaitingConfirmation],
            Committed => &[Confirming],
            RolledBack | RollbackFailed => &[
                Committing,
                Confirming,
                AwaitingConfirmation,
                Committed,
                RollbackFailed,
            ],
        }
    }

    /// No step of its own is left: only a later rollback moves it (from `committed` or
    /// `rollback_failed`).
    pub fn is_settled(self) -> bool {
        !matches!(
            self,
            Self::Preparing | Self::Committing | Self::Confirming | Self::AwaitingConfirmation
        )
    }

    pub fn may_become(self, next: Self) -> bool {
        next.predecessors().contains(&self)
    }

    /// Applied on some device, so a rollback has something to undo.
    pub fn is_applied(self) -> bool {
        matches!(
            self,
            Self::Committed | Self::AwaitingConfirmation | Self::RollbackFailed
        )
    }
}

impl TryFrom<String> for ChangeState {
    type Error = String;

    /// As stored in `change_transactions.state`.
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == stored)
            .ok_or_else(|| format!("unknown change state {stored:?}"))
    }
}

/// Where one device's part of a change is: the agent's or the SSH engine's transaction
/// state (`prepared` … `rolled_back`), or the controller's own view around it — `pending`
/// before the device answered, `planned` after a dry run, `failed` when a step's outcome is
/// unknown or failed, `rollback_failed` when its rollback did not complete.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    #[default]
    Pending,
    Prepared,
    Planned,
    Aborted,
    Failed,
    Committing,
    AwaitingConfirmation,
    Committed,
    RollingBack,
    RolledBack,
    RollbackFailed,
}

impl TargetState {
    pub const ALL: [Self; 11] = [
        Self::Pending,
        Self::Prepared,
        Self::Planned,
        Self::Aborted,
        Self::Failed,
        Self::Committing,
        Self::AwaitingConfirmation,
        Self::Committed,
        Self::RollingBack,
        Self::RolledBack,
        Self::RollbackFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Prepared => "prepared",
            Self::Planned => "planned",
            Self::Aborted => "aborted",
            Self::Failed => "failed",
            Self::Committing => "committing",
            Self::AwaitingConfirmation => "awaiting_confirmation",
            Self::Committed => "committed",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
        }
    }

    /// Possibly applied on the device, so a rollback must cover it.
    pub fn may_be_applied(self) -> bool {
        matches!(
            self,
            Self::Committing
                | Self::Committed
                | Self::AwaitingConfirmation
                | Self::Failed
                | Self::RollingBack
                | Self::RollbackFailed
        )
    }

    /// Nothing of the change is live on the device, and nothing will be.
    pub fn is_undone(self) -> bool {
        matches!(self, Self::Aborted | Self::RolledBack | Self::Planned)
    }

    /// The states a target may move to `self` from (besides `self`: a repeated answer). The
    /// store updates a target only from one of them, so a late answer or a host's own
    /// report cannot move a finished target back (`aborted`, `planned` and `rolled_back` are
    /// final). `failed` is an unknown outcome: what the host later says replaces it.
    pub fn predecessors(self) -> &'static [Self] {
        use TargetState::*;
        match self {
            Pending => &[],
            Prepared => &[Pending, Failed],
            Planned => &[Prepared],
            Aborted => &[Pending, Prepared, Failed],
            Failed => &[
                Pending,
                Prepared,
                Committing,
                AwaitingConfirmation,
                Committed,
            ],
            Committing => &[Prepared, Failed],
            AwaitingConfirmation => &[Prepared, Committing, Failed],
            Committed => &[Prepared, Committing, AwaitingConfirmation, Failed],
            RollingBack => &[
                Committing,
                AwaitingConfirmation,
                Committed,
                Failed,
                RollbackFailed,
            ],
            RolledBack => &[
                Prepared,
                Committing,
                AwaitingConfirmation,
                Committed,
                RollingBack,
                Failed,
                RollbackFailed,
            ],
            RollbackFailed => &[
                Committing,
                AwaitingConfirmation,
                Committed,
                RollingBack,
                Failed,
            ],
        }
    }

    pub fn may_become(self, next: Self) -> bool {
        self == next || next.predecessors().contains(&self)
    }
}

impl From<infrastructor_hostops::change::TxnState> for TargetState {
    fn from(state: infrastructor_hostops::change::TxnState) -> Self {
        use infrastructor_hostops::change::TxnState as Txn;
        match state {
            Txn::Prepared => Self::Prepared,
            Txn::Committing => Self::Committing,
            Txn::AwaitingConfirmation => Self::AwaitingConfirmation,
            Txn::Committed => Self::Committed,
            Txn::RollingBack => Self::RollingBack,
            Txn::RolledBack => Self::RolledBack,
            Txn::Aborted => Self::Aborted,
        }
    }
}

impl TryFrom<String> for TargetState {
    type Error = String;

    /// As stored in `change_targets.state`.
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == stored)
            .ok_or_else(|| format!("unknown target state {stored:?}"))
    }
}

/// Where a job is: `queued` (waiting for a slot), `running`, then one of the final three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];
    /// A job in one of these has work left and an owner that is doing it.
    pub const LIVE: [Self; 2] = [Self::Queued, Self::Running];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        !Self::LIVE.contains(&self)
    }
}

impl TryFrom<String> for JobState {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == stored)
            .ok_or_else(|| format!("unknown job state {stored:?}"))
    }
}

/// A job step: written `running` before it is taken, then with its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Running,
    Succeeded,
    Failed,
}

impl StepState {
    pub const ALL: [Self; 3] = [Self::Running, Self::Succeeded, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl TryFrom<String> for StepState {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == stored)
            .ok_or_else(|| format!("unknown step state {stored:?}"))
    }
}

/// One round of check reports as a host sent it, still untrusted: the gateway converts an
/// agent's message into it, the SSH driver a round run over SSH.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportedRound {
    pub capabilities: Vec<String>,
    pub reports: Vec<ReportedCheck>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReportedCheck {
    pub check: String,
    pub status: CheckStatus,
    pub message: String,
    /// JSON as sent; bounded and cleaned when recorded.
    pub evidence_json: String,
    pub checked_at_ms: i64,
}

impl ReportedRound {
    /// A round the controller ran itself (over SSH), at `now`.
    pub fn from_host(round: &infrastructor_hostops::checks::Round, now: i64) -> Self {
        Self {
            capabilities: round.capabilities.clone(),
            reports: round
                .reports
                .iter()
                .map(|report| ReportedCheck {
                    check: report.check.clone(),
                    status: report.status,
                    message: report.message.clone(),
                    evidence_json: report.evidence.to_string(),
                    checked_at_ms: now,
                })
                .collect(),
        }
    }
}

/// One metric batch as an agent sent it, still untrusted: the gateway moves the protocol's
/// batch into it, and the services validate every sample before anything is stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportedBatch {
    /// Assigned by the agent, strictly increasing per device.
    pub seq: u64,
    pub samples: Vec<ReportedSample>,
    /// Cumulative batches and samples the agent dropped because its spool was full.
    pub spool_dropped_batches: u64,
    pub spool_dropped_samples: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReportedSample {
    pub series: String,
    pub labels: std::collections::HashMap<String, String>,
    pub timestamp_ms: i64,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        for kind in [DeviceKind::Agent, DeviceKind::Agentless] {
            assert_eq!(DeviceKind::try_from(kind.as_str().to_string()), Ok(kind));
        }
        assert!(DeviceKind::try_from("router".to_string()).is_err());
    }

    #[test]
    fn change_states_move_only_forward() {
        use ChangeState::*;
        for state in ChangeState::ALL {
            assert_eq!(ChangeState::try_from(state.as_str().to_string()), Ok(state));
        }
        assert!(Preparing.may_become(Committing) && Committing.may_become(AwaitingConfirmation));
        assert!(AwaitingConfirmation.may_become(Confirming) && Confirming.may_become(Committed));
        assert!(
            !AwaitingConfirmation.may_become(Committed),
            "confirmed only through the decision record"
        );
        assert!(
            RollbackFailed.may_become(RolledBack),
            "a rollback is retried"
        );
        for terminal in [Planned, Invalid, Aborted, RolledBack] {
            assert!(
                ChangeState::ALL
                    .iter()
                    .all(|next| !terminal.may_become(*next)),
                "{terminal:?} is final"
            );
        }
        assert!(!Committed.may_become(AwaitingConfirmation));
        assert!(
            !Preparing.may_become(Committed),
            "never committed without committing"
        );
    }

    #[test]
    fn finished_targets_are_never_moved_back() {
        use TargetState::*;
        for last in [Aborted, Planned, RolledBack] {
            for next in TargetState::ALL.into_iter().filter(|n| *n != last) {
                assert!(!last.may_become(next), "{last:?} -> {next:?}");
            }
        }
        assert!(
            Failed.may_become(Committed),
            "the host's word replaces an unknown outcome"
        );
        assert!(!Committed.may_become(Prepared));
        assert!(!Pending.may_become(Committed), "never committed unprepared");
        assert!(Committed.may_become(Committed), "a repeated answer");
    }

    #[test]
    fn target_states_round_trip_and_keep_the_engines_names() {
        use infrastructor_hostops::change::TxnState;
        for state in TargetState::ALL {
            assert_eq!(TargetState::try_from(state.as_str().to_string()), Ok(state));
        }
        for txn in [
            TxnState::Prepared,
            TxnState::AwaitingConfirmation,
            TxnState::RolledBack,
        ] {
            assert_eq!(TargetState::from(txn).as_str(), txn.as_str());
        }
    }

    #[test]
    fn statuses_round_trip_and_order_by_severity() {
        for status in [CheckStatus::Ok, CheckStatus::Warning, CheckStatus::Critical] {
            assert_eq!(
                CheckStatus::try_from(status.as_str().to_string()),
                Ok(status)
            );
        }
        assert!(CheckStatus::try_from("fine".to_string()).is_err());
        let statuses = [CheckStatus::Warning, CheckStatus::Ok].map(Health::from);
        assert_eq!(Health::worst(statuses), Health::Warning);
        assert_eq!(Health::worst([]), Health::Ok);
        assert!(Health::Unreachable > Health::Critical);
    }
}
