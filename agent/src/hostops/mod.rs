//! Host operations shared by the agent (run locally) and the controller's SSH driver (run
//! remotely): validated names, argv builders, output parsers and the verdicts drawn from them.
//! No parser exists twice: both sides call these.
//!
//! - [`names`]: strict patterns for every name that can reach an argv.
//! - [`docker`]: containers through the engine API, the container check, container metrics.
//! - [`command`]: argv-only command descriptions (never a shell string), `--` before
//!   positionals, bounded output.
//! - [`zfs`]: `zpool status` / `zpool list -Hp` parsers and the pool check.
//! - [`systemd`]: `systemctl` parsers and the unit check.
//! - [`journal`]: `journalctl -o json` parsing and pattern scanning.

pub mod command;
pub mod docker;
pub mod journal;
pub mod names;
pub mod systemd;
pub mod zfs;

use serde::{Deserialize, Serialize};

/// Severity of a check result, ordered: `Ok < Warning < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warning,
    Critical,
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
