//! The controller's configuration: one declaration of every setting with its default
//! ([`ControllerConfig`]), layered by figment — TOML file < `INFRASTRUCTOR_*` environment <
//! flags < `--set` — and validated once at start, then passed down typed. Durations are
//! humantime strings (`90d`, `5m`). `Display` prints a redacted copy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use infrastructor_hostops::change::ChangePolicy;
use serde::{Deserialize, Serialize};

use crate::connections::ConnectionLimits;
use crate::notify::channels::NotificationsConfig;
use crate::ratelimit::RateLimit;
use crate::services::alerts::rules::AlertsConfig;
use crate::services::analytics::waste::rules::WasteConfig;
use crate::store::redact_url;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where the configuration comes from, and the flags. Every setting — nested ones included —
/// can also be given as `INFRASTRUCTOR_<KEY>` (nested keys joined by `__`, e.g.
/// `INFRASTRUCTOR_RATE_LIMIT__PER_SECOND`) or as `--set key.path=value`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "INFRASTRUCTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite database, CA, keys).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL; prefer `--database-url-file` or the environment, which `ps` does not show.
    #[arg(long)]
    pub database_url: Option<String>,
    /// A file holding the PostgreSQL URL.
    #[arg(long, env = "INFRASTRUCTOR_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// REST and MCP listen address.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Agent gateway (gRPC, mTLS) listen address.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// The https:// URL agents dial, when it is not the gateway's own address.
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// known_hosts file for agentless hosts registered without a pinned key.
    #[arg(long)]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Redis URL for the shared cache and rate limits.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Any setting by its key path, e.g. `--set rate_limit.per_second=50` or
    /// `--set retention.raw=14d`; repeatable, applied last.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The flags that were given, as settings.
    fn flags(&self) -> Result<Vec<(String, figment::value::Value)>, ConfigError> {
        let mut flags = Vec::new();
        let mut flag = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                flags.push((key.to_string(), figment::value::Value::from(value)));
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        flag("data_dir", path(&self.data_dir));
        flag("database_url", self.database_url.clone());
        flag("http_listen", self.http_listen.map(|a| a.to_string()));
        flag("grpc_listen", self.grpc_listen.map(|a| a.to_string()));
        flag("advertise_url", self.advertise_url.clone());
        flag("ssh_known_hosts", path(&self.ssh_known_hosts));
        flag("redis_url", self.redis_url.clone());
        for set in &self.set {
            let Some((key, value)) = set.split_once('=') else {
                return Err(ConfigError::Invalid(format!(
                    "--set {set:?}: expected KEY=VALUE, e.g. rate_limit.per_second=50"
                )));
            };
            // Parsed like an environment value: numbers, booleans, [arrays], {tables}.
            let value = value.parse().unwrap_or_else(|never| match never {});
            flags.push((key.trim().to_string(), value));
        }
        Ok(flags)
    }
}

/// How long samples are kept at each resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    #[serde(with = "humantime_serde")]
    pub raw: Duration,
    #[serde(with = "humantime_serde")]
    pub rollup_5m: Duration,
    #[serde(with = "humantime_serde")]
    pub rollup_1h: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: Duration::from_secs(7 * DAY),
            rollup_5m: Duration::from_secs(90 * DAY),
            rollup_1h: Duration::from_secs(730 * DAY),
        }
    }
}

/// The job runner: how many jobs run at once here, and how long a job's lease lasts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs this controller runs at once; more wait, queued, in order.
    pub parallelism: usize,
    /// How long a controller owns a job without renewing it (it renews every third of
    /// this). A job whose lease ran out is taken over by another controller on the same
    /// database, or by this one when it restarts, and reconciled from the hosts.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// For crash tests only (never read from configuration): a job halts for good right
    /// after recording the start of the step of this name, so the test can kill the
    /// controller exactly there.
    #[serde(skip)]
    pub halt_before_step: Option<String>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            parallelism: 8,
            lease: Duration::from_secs(15),
            halt_before_step: None,
        }
    }
}

/// The effective configuration. Each setting is declared once, here, with its default; the
/// file, the environment and the flags are layers over it (figment), in that order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    /// PostgreSQL; `None` is SQLite under `data_dir`.
    pub database_url: Option<String>,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub advertise_url: Option<String>,
    /// known_hosts for agentless hosts registered without a pinned key.
    pub ssh_known_hosts: Option<PathBuf>,
    /// Extra names for the gateway's server certificate.
    pub server_names: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub certificate_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub join_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    pub retention: Retention,
    /// What agentless hosts allow configuration changes to touch.
    pub agentless_changes: ChangePolicy,
    /// A directory of DR plans (`*.yaml`), loaded at start: a changed file becomes a new
    /// revision of its plan.
    pub dr_plans_dir: Option<PathBuf>,
    /// The controller's own backups (a `{"kind": "controller"}` target): the password
    /// directory, scratch and drill settings; its data directory is always a source.
    pub controller_backups: infrastructor_hostops::backup::BackupPolicy,
    /// What backups may read and write on agentless hosts (an agent has its own).
    pub agentless_backups: infrastructor_hostops::backup::BackupPolicy,
    /// Browser origins allowed to reach `/mcp`.
    pub mcp_allowed_origins: Vec<String>,
    /// How long a long MCP tool waits for its job before it answers with the job instead.
    #[serde(with = "humantime_serde")]
    pub mcp_job_wait: Duration,
    /// Every principal's mutations wait for another person's approval.
    #[serde(alias = "mcp_require_approval")]
    pub require_approval: bool,
    pub redis_url: Option<String>,
    pub redis_key_prefix: String,
    /// Requests per principal, on every surface.
    pub rate_limit: RateLimit,
    /// Connection caps, header timeout and the failed-authentication budget per peer.
    pub connections: ConnectionLimits,
    pub jobs: JobsConfig,
    /// The waste report's thresholds and prices.
    pub waste: WasteConfig,
    /// Alert rules (the built-in ones included) and evaluation.
    pub alerts: AlertsConfig,
    /// Notification channels, routes and delivery.
    pub notifications: NotificationsConfig,
}

const DAY: u64 = 86_400;
const ENV_PREFIX: &str = "INFRASTRUCTOR_";
/// Settings' earlier names, still read (the file's are serde aliases).
const ALIASES: [(&str, &str); 1] = [("mcp_require_approval", "require_approval")];

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".infrastructor"),
            database_url: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            advertise_url: None,
            ssh_known_hosts: None,
            server_names: Vec::new(),
            certificate_lifetime: Duration::from_secs(DAY),
            join_token_ttl: Duration::from_secs(3600),
            maintenance_interval: Duration::from_secs(60),
            retention: Retention::default(),
            agentless_changes: ChangePolicy::default(),
            dr_plans_dir: None,
            agentless_backups: Default::default(),
            controller_backups: Default::default(),
            mcp_allowed_origins: Vec::new(),
            mcp_job_wait: Duration::from_secs(50),
            require_approval: false,
            redis_url: None,
            redis_key_prefix: "infrastructor".into(),
            rate_limit: RateLimit::default(),
            connections: ConnectionLimits::default(),
            jobs: JobsConfig::default(),
            waste: WasteConfig::default(),
            alerts: AlertsConfig::default(),
            notifications: NotificationsConfig::default(),
        }
    }
}

/// The top-level setting names, from the one declaration above: only `INFRASTRUCTOR_*`
/// variables naming one of them are configuration (others, like `INFRASTRUCTOR_LOG`, are not).
fn setting_names() -> Vec<String> {
    match serde_json::to_value(ControllerConfig::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// "retention.raw (line 2: `raw = \"forever\"`): unknown time unit" — naming the setting and
/// the line, for errors the file's own parse finds.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error.message().to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line_number = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_number - 1).unwrap_or_default().trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find_map(|l| l.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
    let key = line.split('=').next().unwrap_or_default().trim();
    let setting = match table {
        Some(table) if !key.is_empty() && !line.starts_with('[') => format!("{table}.{key}: "),
        _ => String::new(),
    };
    format!(
        "{setting}line {line_number} (`{line}`): {}",
        error.message()
    )
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl ControllerConfig {
    /// Builds the effective configuration — defaults < TOML file < database URL file <
    /// `INFRASTRUCTOR_*` environment < flags < `--set` — and validates it.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut layers = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = &args.config {
            let text = read(path)?;
            // Parsed on its own first, so a mistake is reported with its line.
            toml::from_str::<Self>(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: describe_toml_error(&text, &e),
            })?;
            layers = layers.merge(Toml::string(&text));
        }
        if let Some(path) = &args.database_url_file {
            let url = read(path)?.trim().to_string();
            layers = layers.merge(Serialized::global("database_url", url));
        }
        let names = setting_names();
        let environment = Env::prefixed(ENV_PREFIX)
            .split("__")
            .filter_map(move |key| {
                let key = ALIASES
                    .iter()
                    .find(|(old, _)| key.as_str().eq_ignore_ascii_case(old))
                    .map_or(key.as_str(), |(_, new)| new);
                let top = key.split('.').next().unwrap_or_default();
                names
                    .iter()
                    .any(|name| name.eq_ignore_ascii_case(top))
                    .then(|| key.to_string().into())
            });
        layers = layers.merge(environment);
        for (key, value) in args.flags()? {
            layers = layers.merge(Serialized::global(&key, value));
        }
        let config: Self = layers
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config
            .agentless_changes
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[agentless_changes]: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(format!(
                    "database_url must be a postgres:// URL (got {:?}); leave it unset for SQLite",
                    redact_url(url)
                ));
            }
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return invalid(format!(
                    "redis_url must be a redis:// or rediss:// URL (got {:?})",
                    redact_url(url)
                ));
            }
        }
        if self.redis_key_prefix.is_empty()
            || self.redis_key_prefix.len() > 64
            || !self
                .redis_key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid(format!(
                "redis_key_prefix must be 1-64 characters of A-Z a-z 0-9 - _ . (got {:?})",
                self.redis_key_prefix
            ));
        }
        if let Err(message) = self.connections.validate() {
            return invalid(message);
        }
        if let Err(message) = self.rate_limit.validate() {
            return invalid(message);
        }
        if let Some(url) = &self.advertise_url {
            if !url.starts_with("https://") {
                return invalid(format!(
                    "advertise_url must start with https:// (got {url:?})"
                ));
            }
        }
        if self.certificate_lifetime < Duration::from_secs(300) {
            return invalid("certificate_lifetime must be at least 5m".into());
        }
        if self.join_token_ttl < Duration::from_secs(60)
            || self.join_token_ttl > Duration::from_secs(30 * DAY)
        {
            return invalid("join_token_ttl must be between 1m and 30d".into());
        }
        if self.maintenance_interval < Duration::from_secs(1) {
            return invalid("maintenance_interval must be at least 1s".into());
        }
        let r = self.retention;
        if r.raw < Duration::from_secs(3600) || r.rollup_5m < r.raw || r.rollup_1h < r.rollup_5m {
            return invalid("retention must satisfy 1h <= raw <= rollup_5m <= rollup_1h".into());
        }
        if self.mcp_job_wait < Duration::from_secs(1)
            || self.mcp_job_wait > Duration::from_secs(300)
        {
            return invalid("mcp_job_wait must be between 1s and 5m".into());
        }
        if let Err(message) = self.waste.validate() {
            return invalid(message);
        }
        if let Err(message) = self.alerts.validate() {
            return invalid(message);
        }
        let n = &self.notifications;
        if n.max_attempts == 0 || n.max_attempts > 100 {
            return invalid("notifications.max_attempts must be 1..=100".into());
        }
        if n.retry_after.is_zero() || n.retry_max < n.retry_after {
            return invalid("notifications: 0 < retry_after <= retry_max".into());
        }
        if n.timeout < Duration::from_secs(1) || n.timeout > Duration::from_secs(120) {
            return invalid("notifications.timeout must be between 1s and 2m".into());
        }
        if !(1..=256).contains(&self.jobs.parallelism) {
            return invalid("jobs.parallelism must be 1..=256".into());
        }
        if self.jobs.lease < Duration::from_secs(3) || self.jobs.lease > Duration::from_secs(600) {
            return invalid("jobs.lease must be between 3s and 10m".into());
        }
        Ok(())
    }

    /// The gateway URL agents dial.
    pub fn gateway_url(&self, bound: SocketAddr) -> String {
        self.advertise_url.clone().unwrap_or_else(|| {
            let host = if bound.ip().is_unspecified() {
                infrastructor_hostops::hostname()
            } else {
                bound.ip().to_string()
            };
            match bound {
                SocketAddr::V6(_) if !bound.ip().is_unspecified() => {
                    format!("https://[{host}]:{}", bound.port())
                }
                _ => format!("https://{host}:{}", bound.port()),
            }
        })
    }

    /// Names the gateway's server certificate must carry.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            infrastructor_hostops::hostname(),
        ];
        if !self.grpc_listen.ip().is_unspecified() {
            names.push(self.grpc_listen.ip().to_string());
        }
        if let Some(host) = self
            .advertise_url
            .as_deref()
            .and_then(|u| u.parse::<tonic::transport::Uri>().ok())
            .and_then(|u| {
                u.host()
                    .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string())
            })
        {
            names.push(host);
        }
        names.extend(self.server_names.iter().cloned());
        names.sort();
        names.dedup();
        names
    }
}

impl std::fmt::Display for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        write!(
            f,
            "data_dir={} database={} cache={} rate_limit={}/s burst {} http_listen={} \
             grpc_listen={} advertise_url={} certificate_lifetime={} \
             join_token_ttl={} retention(raw={}, 5m={}, 1h={}) maintenance_interval={}",
            self.data_dir.display(),
            self.database_url
                .as_deref()
                .map(redact_url)
                .unwrap_or_else(|| "sqlite".into()),
            self.redis_url
                .as_deref()
                .map(redact_url)
                .unwrap_or_else(|| "in-process".into()),
            self.rate_limit.per_second,
            self.rate_limit.burst,
            self.http_listen,
            self.grpc_listen,
            self.advertise_url
                .as_deref()
                .unwrap_or("(from grpc_listen)"),
            fmt(self.certificate_lifetime),
            fmt(self.join_token_ttl),
            fmt(self.retention.raw),
            fmt(self.retention.rollup_5m),
            fmt(self.retention.rollup_1h),
            fmt(self.maintenance_interval),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    // figment's own error type is what its test jail returns.
    #[allow(clippy::result_large_err)]
    fn layers_apply_in_order() {
        // In a jail: another test's environment must not leak into this one.
        figment::Jail::expect_with(|_| {
            let file = write(
                "data_dir = \"/from/file\"\nhttp_listen = \"127.0.0.1:9000\"\n[retention]\nraw = \"2d\"\n\
                 [alerts.rules.disk_space]\nenabled = false\n",
            );
            let args = ConfigArgs {
                config: Some(file.path().to_path_buf()),
                http_listen: Some("127.0.0.1:9100".parse().unwrap()),
                ..Default::default()
            };
            let config = ControllerConfig::load(&args).unwrap();
            assert_eq!(config.data_dir, PathBuf::from("/from/file"));
            assert_eq!(config.http_listen.port(), 9100, "flag/env beats file");
            assert_eq!(config.retention.raw, Duration::from_secs(2 * DAY));
            assert_eq!(config.retention.rollup_5m, Duration::from_secs(90 * DAY));
            // A built-in rule is tuned by naming it; the rest of it stays.
            let disk = &config.alerts.rules["disk_space"];
            assert!(!disk.enabled && disk.when.is_some());
            assert!(config.alerts.rules["agent_offline"].enabled);
            Ok(())
        });
    }

    #[test]
    // figment's own error type is what its test jail returns.
    #[allow(clippy::result_large_err)]
    fn every_setting_comes_from_file_environment_or_flag_in_that_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "controller.toml",
                "require_approval = false\nmaintenance_interval = \"2m\"\n\
                 [rate_limit]\nper_second = 5.0\n[retention]\nraw = \"2d\"\n",
            )?;
            // Nested settings by environment, joined with `__`; the old name still works.
            jail.set_env("INFRASTRUCTOR_RATE_LIMIT__BURST", "7");
            jail.set_env("INFRASTRUCTOR_MCP_REQUIRE_APPROVAL", "true");
            jail.set_env("INFRASTRUCTOR_CONNECTIONS__HTTP_MAX", "64");
            jail.set_env("INFRASTRUCTOR_RETENTION__RAW", "3d");
            // Not settings: ignored rather than refused.
            jail.set_env("INFRASTRUCTOR_LOG", "debug");
            let args = ConfigArgs {
                config: Some("controller.toml".into()),
                set: vec!["retention.raw=4d".into(), "rate_limit.per_second=9".into()],
                ..Default::default()
            };
            let config = ControllerConfig::load(&args).map_err(|e| e.to_string())?;
            assert_eq!(
                config.maintenance_interval,
                Duration::from_secs(120),
                "file"
            );
            assert_eq!(config.rate_limit.burst, 7, "environment, nested");
            assert_eq!(config.connections.http_max, 64);
            assert!(config.require_approval, "environment beats file; alias");
            assert_eq!(
                config.retention.raw,
                Duration::from_secs(4 * DAY),
                "--set beats env"
            );
            assert_eq!(config.rate_limit.per_second, 9.0, "--set beats file");
            assert_eq!(
                config.retention.rollup_5m,
                Duration::from_secs(90 * DAY),
                "default"
            );

            jail.set_env("INFRASTRUCTOR_HTTP_LISTEN", "127.0.0.1:9200");
            let from_env =
                ControllerConfig::load(&ConfigArgs::default()).map_err(|e| e.to_string())?;
            assert_eq!(from_env.http_listen.port(), 9200);
            let flag = ConfigArgs {
                http_listen: Some("127.0.0.1:9300".parse().unwrap()),
                ..Default::default()
            };
            let from_flag = ControllerConfig::load(&flag).map_err(|e| e.to_string())?;
            assert_eq!(from_flag.http_listen.port(), 9300, "flag beats environment");

            jail.set_env("INFRASTRUCTOR_RATE_LIMIT__PER_SECONDS", "1");
            let typo = ControllerConfig::load(&ConfigArgs::default()).unwrap_err();
            assert!(typo.to_string().contains("per_seconds"), "{typo}");
            Ok(())
        });
    }

    #[test]
    fn a_set_flag_must_be_a_key_and_a_value() {
        let error = ControllerConfig::load(&ConfigArgs {
            set: vec!["rate_limit.per_second".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("KEY=VALUE"), "{error}");
        let error = ControllerConfig::load(&ConfigArgs {
            set: vec!["retention.raw=soon".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("raw"), "{error}");
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let unknown = write("dta_dir = \"x\"\n");
        let error = ControllerConfig::load(&ConfigArgs {
            config: Some(unknown.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("dta_dir"), "{error}");
        assert!(error.to_string().contains("line 1"), "{error}");

        let bad_duration = write("[retention]\nraw = \"forever\"\n");
        let error = ControllerConfig::load(&ConfigArgs {
            config: Some(bad_duration.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("retention.raw"), "{error}");

        let error = ControllerConfig::load(&ConfigArgs {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("postgres://"), "{error}");
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/controller.example.toml");
        let config = ControllerConfig::load(&ConfigArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            config.advertise_url.as_deref(),
            Some("https://controller.example.net:8443")
        );
        assert!(config
            .certificate_names()
            .contains(&"controller.example.net".to_string()));
        assert_eq!(config.agentless_changes.roots[0].as_str(), "/etc/nginx");
        assert!(config.alerts.rules["api_down"].enabled);
        assert!(
            config.alerts.rules["agent_offline"].enabled,
            "built-ins stay"
        );
        assert_eq!(config.notifications.channels.len(), 2);
        assert_eq!(config.notifications.routes[0].channels, ["mail"]);
    }

    #[test]
    fn display_redacts_the_database_password() {
        let config = ControllerConfig {
            database_url: Some("postgres://app:hunter2@db/infra".into()),
            ..Default::default()
        };
        let shown = config.to_string();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("app:***@db"));
    }
}
