//! The agent's typed configuration, validated once at start.

use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

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
    pub checks: infrastructor_hostops::checks::CheckConfig,
    /// Where configuration changes may write and which validators they may run; no roots
    /// disables configuration changes.
    pub changes: infrastructor_hostops::change::ChangePolicy,
    /// What backups may read and where restores and drills may write; no sources and no
    /// volumes allow only PostgreSQL dumps.
    pub backups: infrastructor_hostops::backup::BackupPolicy,
}

impl AgentConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            backups: backup_policy(&state_dir),
            state_dir,
            controller_url: None,
            interval: Duration::from_secs(10),
            spool_max_bytes: 64 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            hostname: hostname(),
            checks: infrastructor_hostops::checks::CheckConfig::default(),
            changes: infrastructor_hostops::change::ChangePolicy::default(),
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

/// Every agent setting, declared once with its default, as `agent.toml` spells it; layered
/// by figment: defaults < TOML file < `INFRASTRUCTOR_AGENT_*` environment (nested keys joined
/// by `__`, e.g. `INFRASTRUCTOR_AGENT_CHANGES__VALIDATOR_USER`) < flags < `--set`. Unknown keys
/// are rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    pub state_dir: PathBuf,
    pub controller_url: Option<String>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub spool_max_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often host checks run ("0s" disables them).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// systemd units whose state is always reported.
    pub watched_units: Vec<String>,
    pub journal_lines: u32,
    /// Units whose journal is scanned on its own.
    pub journal_units: Vec<String>,
    /// Allowlisted log files (absolute paths) scanned with the patterns.
    pub log_files: Vec<PathBuf>,
    /// Named regular expressions for log scanning; replaces the defaults when given.
    pub log_patterns: std::collections::BTreeMap<String, String>,
    /// `[changes]`: allowlisted roots and validators for configuration changes.
    pub changes: infrastructor_hostops::change::ChangePolicy,
    /// `[backups]`: backup sources, restore roots, the password directory, drill settings.
    pub backups: infrastructor_hostops::backup::BackupPolicy,
}

impl Default for AgentSettings {
    fn default() -> Self {
        let config = AgentConfig::new(PathBuf::from("/var/lib/infrastructor-agent"));
        Self {
            state_dir: config.state_dir,
            controller_url: None,
            interval: config.interval,
            spool_max_bytes: config.spool_max_bytes,
            heartbeat_interval: config.heartbeat_interval,
            check_interval: config.checks.interval,
            watched_units: Vec::new(),
            journal_lines: config.checks.journal_lines,
            journal_units: Vec::new(),
            log_files: Vec::new(),
            log_patterns: Default::default(),
            changes: config.changes,
            backups: config.backups,
        }
    }
}

/// The default policy, its dumps staged in the state directory.
fn backup_policy(state_dir: &std::path::Path) -> infrastructor_hostops::backup::BackupPolicy {
    let mut policy = infrastructor_hostops::backup::BackupPolicy::default();
    let staging = state_dir.join("backup-staging");
    if let Some(staging) = staging
        .to_str()
        .and_then(|s| infrastructor_hostops::names::ManagedPath::new(s).ok())
    {
        policy.staging = staging;
    }
    policy
}

const ENV_PREFIX: &str = "INFRASTRUCTOR_AGENT_";
/// Read besides the prefixed names: the controller's URL, as the enroll command sets it.
const CONTROLLER_URL_ENV: &str = "INFRASTRUCTOR_CONTROLLER_URL";

impl AgentSettings {
    /// The layers: `file` (if any), the environment, then `flags` (key path → value, applied
    /// in order; values parse like TOML scalars).
    pub fn load(file: Option<&std::path::Path>, flags: &[(String, String)]) -> Result<Self> {
        let mut layers = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AgentError::io(format!("reading config {}", path.display()), e))?;
            toml::from_str::<Self>(&text)
                .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
            layers = layers.merge(Toml::string(&text));
        }
        let names = setting_names();
        let environment = Env::prefixed(ENV_PREFIX).split("__").filter(move |key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            names.iter().any(|name| name.eq_ignore_ascii_case(top))
        });
        layers = layers
            .merge(
                Env::raw()
                    .only(&[CONTROLLER_URL_ENV])
                    .map(|_| "controller_url".into()),
            )
            .merge(environment);
        for (key, value) in flags {
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            layers = layers.merge(Serialized::global(key, value));
        }
        layers
            .extract()
            .map_err(|e| AgentError::Config(e.to_string()))
    }

    /// The typed configuration, with unit names, log paths and patterns checked.
    pub fn into_config(self) -> Result<AgentConfig> {
        let mut config = AgentConfig::new(self.state_dir.clone());
        config.controller_url = self.controller_url.clone();
        config.interval = self.interval;
        config.spool_max_bytes = self.spool_max_bytes;
        config.heartbeat_interval = self.heartbeat_interval;
        self.apply_checks(&mut config.checks)?;
        config.changes = self.changes;
        // The staging directory follows the state directory unless it was set.
        let defaults = backup_policy(std::path::Path::new("/var/lib/infrastructor-agent"));
        let mut backups = self.backups;
        if backups.staging == defaults.staging {
            backups.staging = config.backups.staging.clone();
        }
        config.backups = backups;
        Ok(config)
    }

    /// Applies the check settings, validating unit names and patterns.
    pub fn apply_checks(
        &self,
        checks: &mut infrastructor_hostops::checks::CheckConfig,
    ) -> Result<()> {
        checks.interval = self.check_interval;
        checks.journal_lines = self.journal_lines.clamp(1, 10_000);
        checks.watched_units = self
            .watched_units
            .iter()
            .map(|u| {
                infrastructor_hostops::names::UnitName::new(u)
                    .map_err(|e| AgentError::Config(e.to_string()))
            })
            .collect::<Result<_>>()?;
        checks.journal_units = self
            .journal_units
            .iter()
            .map(|u| {
                infrastructor_hostops::names::UnitName::new(u)
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
                    infrastructor_hostops::journal::Pattern::new(name, regex)
                        .map_err(|e| AgentError::Config(format!("log pattern {name:?}: {e}")))
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}

/// The top-level setting names, from the one declaration: only `INFRASTRUCTOR_AGENT_*`
/// variables naming one are configuration (`INFRASTRUCTOR_AGENT_CONFIG` is the file's path).
fn setting_names() -> Vec<String> {
    match toml::Value::try_from(AgentSettings::default()) {
        Ok(toml::Value::Table(fields)) => {
            let mut names: Vec<String> = fields.keys().cloned().collect();
            names.push("controller_url".into());
            names
        }
        _ => Vec::new(),
    }
}

pub use infrastructor_hostops::hostname;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses_and_applies() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
        let file = AgentSettings::load(Some(&path), &[]).unwrap();
        let mut checks = infrastructor_hostops::checks::CheckConfig::default();
        file.apply_checks(&mut checks).unwrap();
        assert_eq!(checks.watched_units[0].as_str(), "nginx.service");
        assert_eq!(file.interval, Duration::from_secs(10));
        assert_eq!(file.changes.roots[0].as_str(), "/etc/nginx");
        file.changes.validate().unwrap();
    }

    #[test]
    // figment's own error type is what its test jail returns.
    #[allow(clippy::result_large_err)]
    fn settings_come_from_file_environment_and_flags_in_that_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "agent.toml",
                "interval = \"20s\"\nspool_max_bytes = 1048576\n[changes]\nroots = [\"/etc/app\"]\n",
            )?;
            jail.set_env("INFRASTRUCTOR_AGENT_SPOOL_MAX_BYTES", "2097152");
            jail.set_env("INFRASTRUCTOR_AGENT_CHANGES__VALIDATOR_USER", "root");
            jail.set_env(
                "INFRASTRUCTOR_CONTROLLER_URL",
                "https://controller.example:8443",
            );
            jail.set_env("INFRASTRUCTOR_AGENT_CONFIG", "agent.toml");
            let flags = [("check_interval".to_string(), "5m".to_string())];
            let settings = AgentSettings::load(Some("agent.toml".as_ref()), &flags)
                .map_err(|e| e.to_string())?;
            assert_eq!(settings.interval, Duration::from_secs(20), "file");
            assert_eq!(
                settings.spool_max_bytes,
                2 * 1024 * 1024,
                "environment beats file"
            );
            assert_eq!(
                settings.changes.validator_user, "root",
                "nested, by environment"
            );
            assert_eq!(settings.changes.roots[0].as_str(), "/etc/app");
            assert_eq!(
                settings.controller_url.as_deref(),
                Some("https://controller.example:8443")
            );
            assert_eq!(settings.check_interval, Duration::from_secs(300), "flag");
            let flags = [("spool_max_bytes".to_string(), "4194304".to_string())];
            let settings = AgentSettings::load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(
                settings.spool_max_bytes,
                4 * 1024 * 1024,
                "flag beats environment"
            );
            let config = settings.into_config().map_err(|e| e.to_string())?;
            assert_eq!(config.checks.interval, Duration::from_secs(60), "default");
            Ok(())
        });
    }

    #[test]
    fn bad_check_settings_are_clear_errors() {
        let file: AgentSettings = toml::from_str("watched_units = [\"x;reboot\"]").unwrap();
        let error = file
            .apply_checks(&mut infrastructor_hostops::checks::CheckConfig::default())
            .unwrap_err();
        assert!(error.to_string().contains("invalid unit name"), "{error}");
        let file: AgentSettings = toml::from_str("[log_patterns]\nbroken = \"(\"").unwrap();
        let error = file
            .apply_checks(&mut infrastructor_hostops::checks::CheckConfig::default())
            .unwrap_err();
        assert!(
            error.to_string().contains("log pattern \"broken\""),
            "{error}"
        );
        assert!(
            toml::from_str::<AgentSettings>("intervall = \"1s\"").is_err(),
            "unknown keys are rejected"
        );
    }
}
