//! The agent's typed configuration, validated once at start.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{AgentError, Result};

/// Effective agent configuration (defaults < TOML file < environment < flags; the binary does
/// the layering, this type holds the result).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Identity, spool and state live here.
    pub state_dir: PathBuf,
    /// Overrides the controller URL recorded at enrollment.
    pub controller_url: Option<String>,
    /// How often metrics are collected.
    pub interval: Duration,
    /// Upper bound of the on-disk spool of unacknowledged batches.
    pub spool_max_bytes: u64,
    pub heartbeat_interval: Duration,
    /// Reconnect backoff: full jitter between zero and min(max, initial · 2^attempt).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub hostname: String,
    /// Host checks; an interval of zero disables them.
    pub checks: crate::checks::CheckConfig,
    /// Where configuration changes may write and which validators they may run; no roots
    /// disables configuration changes.
    pub changes: crate::change::ChangePolicy,
}

impl AgentConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            controller_url: None,
            interval: Duration::from_secs(10),
            spool_max_bytes: 64 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            hostname: hostname(),
            checks: crate::checks::CheckConfig::default(),
            changes: crate::change::ChangePolicy::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(86_400)
        {
            return Err(AgentError::Config(format!(
                "interval must be between 10ms and 1d (got {})",
                humantime::format_duration(self.interval)
            )));
        }
        if self.spool_max_bytes < 64 * 1024 {
            return Err(AgentError::Config(format!(
                "spool_max_bytes must be at least 65536 (got {})",
                self.spool_max_bytes
            )));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(AgentError::Config(
                "backoff_initial must be > 0 and <= backoff_max".into(),
            ));
        }
        self.changes
            .validate()
            .map_err(|e| AgentError::Config(format!("[changes]: {e}")))
    }
}

/// The `agent.toml` file; every field optional, unknown fields rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub state_dir: Option<PathBuf>,
    pub controller_url: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub interval: Option<Duration>,
    pub spool_max_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    pub heartbeat_interval: Option<Duration>,
    /// How often host checks run ("0s" disables them).
    #[serde(default, with = "humantime_serde_opt")]
    pub check_interval: Option<Duration>,
    /// systemd units whose state is always reported.
    #[serde(default)]
    pub watched_units: Vec<String>,
    pub journal_lines: Option<u32>,
    /// Units whose journal is scanned on its own.
    #[serde(default)]
    pub journal_units: Vec<String>,
    /// Allowlisted log files (absolute paths) scanned with the patterns.
    #[serde(default)]
    pub log_files: Vec<PathBuf>,
    /// Named regular expressions for log scanning; replaces the defaults when given.
    #[serde(default)]
    pub log_patterns: std::collections::BTreeMap<String, String>,
    /// `[changes]`: allowlisted roots and validators for configuration changes.
    #[serde(default)]
    pub changes: crate::change::ChangePolicy,
}

impl AgentFile {
    /// Applies the file's check settings, validating unit names and patterns.
    pub fn apply_checks(&self, checks: &mut crate::checks::CheckConfig) -> Result<()> {
        if let Some(interval) = self.check_interval {
            checks.interval = interval;
        }
        if let Some(lines) = self.journal_lines {
            checks.journal_lines = lines.clamp(1, 10_000);
        }
        checks.watched_units = self
            .watched_units
            .iter()
            .map(|u| {
                crate::hostops::names::UnitName::new(u)
                    .map_err(|e| AgentError::Config(e.to_string()))
            })
            .collect::<Result<_>>()?;
        checks.journal_units = self
            .journal_units
            .iter()
            .map(|u| {
                crate::hostops::names::UnitName::new(u)
                    .map_err(|e| AgentError::Config(e.to_string()))
            })
            .collect::<Result<_>>()?;
        for path in &self.log_files {
            let safe = path.is_absolute()
                && !path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if !safe {
                return Err(AgentError::Config(format!(
                    "log file {} must be an absolute path without '..'",
                    path.display()
                )));
            }
        }
        checks.log_files = self.log_files.clone();
        if !self.log_patterns.is_empty() {
            checks.log_patterns = self
                .log_patterns
                .iter()
                .map(|(name, regex)| {
                    crate::hostops::journal::Pattern::new(name, regex)
                        .map_err(|e| AgentError::Config(format!("log pattern {name:?}: {e}")))
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}

impl AgentFile {
    /// Reads and parses an `agent.toml`.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::io(format!("reading config {}", path.display()), e))?;
        toml::from_str(&text).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))
    }
}

/// Durations in TOML are human strings: "10s", "1m30s".
mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses_and_applies() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
        let file = AgentFile::load(&path).unwrap();
        let mut checks = crate::checks::CheckConfig::default();
        file.apply_checks(&mut checks).unwrap();
        assert_eq!(checks.watched_units[0].as_str(), "nginx.service");
        assert_eq!(file.interval, Some(Duration::from_secs(10)));
        assert_eq!(file.changes.roots[0].as_str(), "/etc/nginx");
        file.changes.validate().unwrap();
    }

    #[test]
    fn bad_check_settings_are_clear_errors() {
        let file: AgentFile = toml::from_str("watched_units = [\"x;reboot\"]").unwrap();
        let error = file
            .apply_checks(&mut crate::checks::CheckConfig::default())
            .unwrap_err();
        assert!(error.to_string().contains("invalid unit name"), "{error}");
        let file: AgentFile = toml::from_str("[log_patterns]\nbroken = \"(\"").unwrap();
        let error = file
            .apply_checks(&mut crate::checks::CheckConfig::default())
            .unwrap_err();
        assert!(
            error.to_string().contains("log pattern \"broken\""),
            "{error}"
        );
        assert!(
            toml::from_str::<AgentFile>("intervall = \"1s\"").is_err(),
            "unknown keys are rejected"
        );
    }
}
