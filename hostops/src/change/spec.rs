//! What a configuration change is — files, validators, actions, health checks — and the
//! policy that bounds it on a host: allowlisted roots and allowlisted validator argv.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ChangeError;
use crate::names::{ContainerName, ManagedPath, UnitName};

/// Largest file a change may write: configuration, not data.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most files in one transaction.
pub const MAX_FILES: usize = 64;

/// One transaction's worth of changes, as the controller sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeSet {
    pub files: Vec<FileChange>,
    /// Run against the staged files before anything live is touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorCall>,
    /// Run after the files are swapped in (and again after a rollback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Must all pass after the actions, or the transaction rolls back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
}

/// The desired content of one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileChange {
    pub path: ManagedPath,
    pub content: String,
    /// Octal, e.g. "0644"; default: the current file's mode, or 0644 for a new file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// User name or numeric ID; default: the current file's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A validator from the host's allowlist, run against one staged file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidatorCall {
    /// Name of the validator in the host's policy (e.g. `nginx`).
    pub name: String,
    /// Which file of the change set `{staged}` refers to.
    pub file: ManagedPath,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    ReloadUnit(UnitName),
    RestartUnit(UnitName),
    RestartContainer(ContainerName),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthCheck {
    UnitActive(UnitName),
    /// Running, and healthy when the container has a health check.
    ContainerRunning(ContainerName),
    /// `http://host:port/path` answers 2xx.
    HttpGet(String),
    /// `host:port` accepts a TCP connection.
    TcpConnect(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReloadUnit(unit) => write!(f, "reload unit {unit}"),
            Self::RestartUnit(unit) => write!(f, "restart unit {unit}"),
            Self::RestartContainer(name) => write!(f, "restart container {name}"),
        }
    }
}

impl HealthCheck {
    /// Where a network probe connects: `(host, port)`, or `None` for checks that are not
    /// network probes.
    pub fn probe_target(&self) -> Result<Option<(String, u16)>, String> {
        match self {
            Self::HttpGet(url) => {
                let uri = super::health::parse_http_url(url)?;
                let host = uri.host().unwrap_or_default().to_string();
                Ok(Some((host, uri.port_u16().unwrap_or(80))))
            }
            Self::TcpConnect(address) => {
                let (host, port) = address
                    .rsplit_once(':')
                    .ok_or_else(|| format!("tcp_connect needs host:port, got {address:?}"))?;
                let port = port
                    .parse()
                    .map_err(|_| format!("tcp_connect needs a numeric port, got {address:?}"))?;
                Ok(Some((host.to_string(), port)))
            }
            Self::UnitActive(_) | Self::ContainerRunning(_) => Ok(None),
        }
    }
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnitActive(unit) => write!(f, "unit {unit} active"),
            Self::ContainerRunning(name) => write!(f, "container {name} running"),
            Self::HttpGet(url) => write!(f, "GET {url} returns 2xx"),
            Self::TcpConnect(address) => write!(f, "TCP {address} accepts"),
        }
    }
}

/// A file mode, written in octal ("0644") in JSON and TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl schemars::JsonSchema for FileMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FileMode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string",
            "pattern": "^[0-7]{3,4}$",
            "description": "octal mode, e.g. \"0644\""})
    }
}

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        u32::from_str_radix(&text, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .map(FileMode)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "mode {text:?} is not an octal mode like \"0644\""
                ))
            })
    }
}

/// What a host allows: the roots changes may write under and the validators they may run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePolicy {
    /// Directories under which files may be changed. Empty: configuration changes disabled.
    #[serde(default)]
    pub roots: Vec<ManagedPath>,
    /// Validator name → argv template; `{staged}` is replaced by the staged file's path.
    #[serde(default)]
    pub validators: BTreeMap<String, Vec<String>>,
    /// Whether files may be setuid or setgid (new or kept). Off: such modes are refused.
    #[serde(default)]
    pub allow_setuid: bool,
    /// Health probes (`http_get`, `tcp_connect`) may reach the host's own loopback
    /// (`127.0.0.1`, `::1`, `localhost`) and these `host:port` targets besides; nothing else,
    /// so a change cannot turn the host into a scanner of its network.
    #[serde(default)]
    pub probe_allow: Vec<String>,
    /// The account validators run as: `nobody` by default, so a staged configuration that
    /// includes another file (`include /etc/shadow;`) cannot make a validator read — and echo —
    /// what that account cannot read. `root` runs them with the agent's own privileges
    /// (some validators need it; their output is then only as private as the change view).
    #[serde(default = "default_validator_user")]
    pub validator_user: String,
    /// Loopback ports probes may not reach (the quickstart's agent shares its host with the
    /// controller, whose ports it lists here).
    #[serde(default)]
    pub probe_deny_ports: Vec<u16>,
}

/// How a commit proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitOptions {
    /// Roll back on our own unless confirmed within this; zero confirms at once.
    pub confirm_timeout: Duration,
    /// How long health checks may take to pass after the actions.
    pub health_timeout: Duration,
}

impl Default for CommitOptions {
    fn default() -> Self {
        Self {
            confirm_timeout: Duration::from_secs(60),
            health_timeout: Duration::from_secs(30),
        }
    }
}

fn default_validator_user() -> String {
    "nobody".into()
}

impl Default for ChangePolicy {
    fn default() -> Self {
        Self {
            roots: Vec::new(),
            validators: BTreeMap::new(),
            allow_setuid: false,
            probe_allow: Vec::new(),
            validator_user: default_validator_user(),
            probe_deny_ports: Vec::new(),
        }
    }
}

impl ChangePolicy {
    /// Checks the parts of the policy that do not need the host.
    pub fn validate(&self) -> Result<(), ChangeError> {
        for (name, argv) in &self.validators {
            if argv.is_empty() || !argv.iter().any(|arg| arg.contains("{staged}")) {
                return Err(ChangeError::InvalidInput(format!(
                    "validator {name:?} must be an argv that mentions {{staged}}"
                )));
            }
        }
        Ok(())
    }

    /// Checks a change set against this policy before anything is read or written.
    pub fn check(&self, set: &ChangeSet) -> Result<(), ChangeError> {
        let invalid = |message: String| Err(ChangeError::InvalidInput(message));
        if self.roots.is_empty() {
            return Err(ChangeError::Refused(
                "configuration changes are disabled on this host (no roots allowlisted)".into(),
            ));
        }
        if set.files.is_empty() || set.files.len() > MAX_FILES {
            return invalid(format!(
                "a change set has 1 to {MAX_FILES} files (got {})",
                set.files.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for file in &set.files {
            if !seen.insert(&file.path) {
                return invalid(format!("{} appears twice in the change set", file.path));
            }
            if file.content.len() > MAX_FILE_BYTES {
                return invalid(format!(
                    "{} is larger than {MAX_FILE_BYTES} bytes",
                    file.path
                ));
            }
            self.check_root(&file.path)?;
            if let Some(mode) = file.mode {
                self.check_mode(&file.path, mode.0)?;
            }
        }
        for call in &set.validators {
            if !self.validators.contains_key(&call.name) {
                return Err(ChangeError::Refused(format!(
                    "validator {:?} is not allowlisted on this host",
                    call.name
                )));
            }
            if !seen.contains(&call.file) {
                return invalid(format!(
                    "validator {:?} refers to {}, which is not in the change set",
                    call.name, call.file
                ));
            }
        }
        for check in &set.health_checks {
            if let Some((host, port)) = check.probe_target().map_err(ChangeError::InvalidInput)? {
                self.check_probe(&host, port)?;
            }
        }
        Ok(())
    }

    /// Refuses a probe target outside the host's loopback and `probe_allow`.
    pub fn check_probe(&self, host: &str, port: u16) -> Result<(), ChangeError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = matches!(host, "127.0.0.1" | "::1" | "localhost");
        let listed = self
            .probe_allow
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&format!("{host}:{port}")));
        if (loopback && !self.probe_deny_ports.contains(&port)) || listed {
            Ok(())
        } else {
            Err(ChangeError::Refused(format!(
                "health probe target {host}:{port} is not allowed by this host's policy: probes \
                 reach the host's own loopback (except ports {:?}) and probe_allow ({})",
                self.probe_deny_ports,
                self.probe_allow.join(", ")
            )))
        }
    }

    /// Refuses setuid and setgid modes unless the policy allows them.
    pub fn check_mode(&self, path: &ManagedPath, mode: u32) -> Result<(), ChangeError> {
        if mode & 0o6000 != 0 && !self.allow_setuid {
            return Err(ChangeError::Refused(format!(
                "{path}: mode {mode:04o} is setuid or setgid, which this host's policy does not \
                 allow (allow_setuid)"
            )));
        }
        Ok(())
    }

    /// Refuses a path outside every allowlisted root (by components, before symlinks are
    /// resolved; the engine checks again after resolving them).
    pub fn check_root(&self, path: &ManagedPath) -> Result<(), ChangeError> {
        if self
            .roots
            .iter()
            .any(|root| path.is_within(root) && path != root)
        {
            Ok(())
        } else {
            Err(ChangeError::Refused(format!(
                "{path} is outside the allowlisted roots ({})",
                self.roots
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ChangePolicy {
        ChangePolicy {
            roots: vec![ManagedPath::new("/etc/app").unwrap()],
            validators: BTreeMap::from([(
                "check".to_string(),
                vec!["app".into(), "-t".into(), "{staged}".into()],
            )]),
            ..Default::default()
        }
    }

    fn set(json: serde_json::Value) -> Result<ChangeSet, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn change_sets_parse_from_json() {
        let parsed = set(serde_json::json!({
            "files": [{"path": "/etc/app/a.conf", "content": "x", "mode": "0640"}],
            "validators": [{"name": "check", "file": "/etc/app/a.conf"}],
            "actions": [{"reload_unit": "app.service"}],
            "health_checks": [{"http_get": "http://127.0.0.1:8080/"}, {"tcp_connect": "127.0.0.1:22"}]
        }))
        .unwrap();
        assert_eq!(parsed.files[0].mode, Some(FileMode(0o640)));
        policy().check(&parsed).unwrap();
        let round_trip: ChangeSet =
            serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(round_trip, parsed);
    }

    #[test]
    fn bad_change_sets_are_refused_with_the_reason() {
        let cases = [
            (
                serde_json::json!({"files": [{"path": "/etc/app/../shadow", "content": ""}]}),
                "'..'",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/app/a", "content": "", "mode": "999"}]}),
                "octal",
            ),
            (
                serde_json::json!({"files": [], "actions": [{"reload_unit": "x;reboot"}]}),
                "invalid unit name",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/app/a", "content": "", "extra": 1}]}),
                "unknown field",
            ),
        ];
        for (json, expected) in cases {
            let error = set(json).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
        }
        let refusals = [
            (
                serde_json::json!({"files": [{"path": "/etc/shadow", "content": ""}]}),
                "outside the allowlisted roots",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/application/x", "content": ""}]}),
                "outside the allowlisted roots",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/app", "content": ""}]}),
                "outside the allowlisted roots",
            ),
            (serde_json::json!({"files": []}), "1 to 64 files"),
            (
                serde_json::json!({"files": [{"path": "/etc/app/a", "content": ""},
                    {"path": "/etc/app/a", "content": ""}]}),
                "twice",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/app/a", "content": ""}],
                    "validators": [{"name": "rm", "file": "/etc/app/a"}]}),
                "not allowlisted",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/app/a", "content": ""}],
                    "validators": [{"name": "check", "file": "/etc/app/b"}]}),
                "not in the change set",
            ),
            (
                serde_json::json!({"files": [{"path": "/etc/app/a", "content": ""}],
                    "health_checks": [{"http_get": "ftp://x/"}]}),
                "http://",
            ),
        ];
        for (json, expected) in refusals {
            let error = policy().check(&set(json).unwrap()).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
        }
        let disabled = ChangePolicy::default()
            .check(
                &set(serde_json::json!({"files": [{"path": "/etc/app/a", "content": ""}]}))
                    .unwrap(),
            )
            .unwrap_err();
        assert!(disabled.to_string().contains("disabled"), "{disabled}");
    }
}
