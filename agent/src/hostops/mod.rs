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
