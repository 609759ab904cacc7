//! Host operations, shared by the agent (run on its own host) and the controller (run over
//! SSH on agentless hosts): validated names, argv builders, output parsers and the verdicts
//! drawn from them, the checks, and the two-phase change engine. No parser exists twice: both
//! sides call these, and neither links the other.
//!
//! - [`checks`]: capability detection and one round of the checks that apply, generic over
//!   where commands run ([`checks::CommandRunner`]).
//! - [`change`]: two-phase configuration changes, crash-safe through an on-disk journal.
//! - [`fsutil`]: crash-safe writes that never follow a planted link; private files.
//! - [`process`]: what every binary does at start and exit (logging, signals, exit code).
//! - [`names`]: strict patterns for every name that can reach an argv.
//! - [`docker`]: containers through the engine API, the container check, container metrics.
//! - [`compose`]: a container's Compose project, service and dependencies, from its labels.
//! - [`container_ops`]: acting on one container: start, stop, restart, kill, logs, stats;
//!   [`container_wire`] is their protocol form.
//! - [`command`]: argv-only command descriptions (never a shell string), `--` before
//!   positionals, bounded output.
//! - [`zfs`]: `zpool status` / `zpool list -Hp` parsers and the pool check.
//! - [`systemd`]: `systemctl` parsers and the unit check.
//! - [`journal`]: `journalctl -o json` parsing and pattern scanning.

pub mod backup;
pub mod change;
pub mod checks;
pub mod command;
pub mod compose;
pub mod container_ops;
pub mod container_wire;
pub mod docker;
pub mod docker_disk;
pub mod fsutil;
pub mod journal;
pub mod names;
pub mod process;
pub mod restic;
pub mod systemd;
pub mod zfs;

use std::time::{SystemTime, UNIX_EPOCH};

use infrastructor_proto::v1::Sample;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Builds one sample; `labels` are `(key, value)` pairs.
pub fn sample(series: &str, labels: &[(&str, &str)], timestamp_ms: i64, value: f64) -> Sample {
    Sample {
        series: series.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        timestamp_ms,
        value,
    }
}

/// This host's name, as the kernel has it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Severity of a check result, ordered: `Ok < Warning < Critical`. The agent's parsers, the
/// protocol and the controller's store and API all speak this one enum.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warning,
    Critical,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn passed(self) -> bool {
        self == Self::Ok
    }

    /// From the protocol; a report without a status says nothing and is dropped.
    pub fn from_proto(status: infrastructor_proto::v1::CheckStatus) -> Option<Self> {
        use infrastructor_proto::v1::CheckStatus as Proto;
        match status {
            Proto::Ok => Some(Self::Ok),
            Proto::Warning => Some(Self::Warning),
            Proto::Critical => Some(Self::Critical),
            Proto::Unspecified => None,
        }
    }
}

impl From<CheckStatus> for infrastructor_proto::v1::CheckStatus {
    fn from(status: CheckStatus) -> Self {
        match status {
            CheckStatus::Ok => Self::Ok,
            CheckStatus::Warning => Self::Warning,
            CheckStatus::Critical => Self::Critical,
        }
    }
}

impl TryFrom<String> for CheckStatus {
    type Error = String;

    /// By name, as the controller stores it.
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        match stored.as_str() {
            "ok" => Ok(Self::Ok),
            "warning" => Ok(Self::Warning),
            "critical" => Ok(Self::Critical),
            other => Err(format!("unknown check status {other:?}")),
        }
    }
}

/// What a check concluded: a status, one line for humans, and structured evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub check: String,
    pub status: CheckStatus,
    pub message: String,
    pub evidence: serde_json::Value,
}

/// One reason a check is not ok.
pub type Finding = (CheckStatus, String);

impl CheckReport {
    /// The report for a set of findings: the worst status, and a message listing every
    /// finding (after `prefix`, e.g. "pool tank"), or `healthy` when there are none.
    pub fn from_findings(
        check: String,
        findings: &[Finding],
        healthy: String,
        prefix: Option<&str>,
        evidence: serde_json::Value,
    ) -> Self {
        let status = findings
            .iter()
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(CheckStatus::Ok);
        let message = if findings.is_empty() {
            healthy
        } else {
            let listed = findings
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            match prefix {
                Some(prefix) => format!("{prefix}: {listed}"),
                None => listed,
            }
        };
        Self {
            check,
            status,
            message,
            evidence,
        }
    }
}
