//! The controller's configuration: defaults < TOML file < `INFRASTRUCTOR_*` environment <
//! flags, validated once at start and passed down typed. `Display` prints a redacted copy.

use infrastructor_agent::change::ChangePolicy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connections::ConnectionLimits;
use crate::ratelimit::RateLimit;
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

/// Flags (each also read from its `INFRASTRUCTOR_*` variable by clap).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "INFRASTRUCTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, the CA and other state [default: ./.infrastructor].
    #[arg(long, env = "INFRASTRUCTOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL; default is SQLite in the data directory.
    #[arg(long, env = "INFRASTRUCTOR_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the database URL (keeps the password out of the environment).
    #[arg(long, env = "INFRASTRUCTOR_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// REST API listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "INFRASTRUCTOR_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Agent gateway (gRPC, mTLS) listen address [default: 127.0.0.1:8443].
    #[arg(long, env = "INFRASTRUCTOR_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Gateway URL agents should dial, e.g. https://ctl.example:8443 [default: from --grpc-listen].
    #[arg(long, env = "INFRASTRUCTOR_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// OpenSSH known_hosts file consulted when an agentless device is registered without a key.
    #[arg(long, env = "INFRASTRUCTOR_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// redis://… for the shared cache and rate limits; default is in process.
    #[arg(long, env = "INFRASTRUCTOR_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    http_listen: Option<SocketAddr>,
    grpc_listen: Option<SocketAddr>,
    advertise_url: Option<String>,
    ssh_known_hosts: Option<PathBuf>,
    #[serde(default)]
    server_names: Vec<String>,
    certificate_lifetime: Option<String>,
    join_token_ttl: Option<String>,
    maintenance_interval: Option<String>,
    #[serde(default)]
    retention: FileRetention,
    agentless_changes: Option<ChangePolicy>,
    #[serde(default)]
    mcp_allowed_origins: Vec<String>,
    #[serde(alias = "mcp_require_approval")]
    require_approval: Option<bool>,
    redis_url: Option<String>,
    redis_key_prefix: Option<String>,
    rate_limit: Option<RateLimit>,
    connections: Option<ConnectionLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    raw: Option<String>,
    rollup_5m: Option<String>,
    rollup_1h: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub raw: Duration,
    pub rollup_5m: Duration,
    pub rollup_1h: Duration,
}

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    /// `None`: SQLite at `<data_dir>/infrastructor.db`.
    pub database_url: Option<String>,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub advertise_url: Option<String>,
    /// known_hosts file for pinning agentless hosts registered without a key.
    pub ssh_known_hosts: Option<PathBuf>,
    /// Extra DNS names / IPs for the gateway's server certificate.
    pub server_names: Vec<String>,
    pub certificate_lifetime: Duration,
    pub join_token_ttl: Duration,
    pub maintenance_interval: Duration,
    pub retention: Retention,
    /// Roots and validators for configuration changes on agentless hosts (over SSH); hosts
    /// with an agent use the agent's own `[changes]` policy.
    pub agentless_changes: ChangePolicy,
    /// Browser origins (`scheme://host[:port]`) allowed to call `/mcp`; requests with any
    /// other `Origin` header are refused.
    pub mcp_allowed_origins: Vec<String>,
    /// Every token's mutations, on every surface, wait for another person's approval
    /// ("four eyes"). Tokens can also be marked one by one (`requires_approval`).
    pub require_approval: bool,
    /// `None`: cache and rate-limit buckets in process (one controller).
    pub redis_url: Option<String>,
    /// Redis keys start with `<prefix>:`; fleets sharing one Redis need different prefixes.
    pub redis_key_prefix: String,
    /// Requests per principal, on every surface.
    pub rate_limit: RateLimit,
    /// Connection caps, header timeout and the failed-authentication budget per peer.
    pub connections: ConnectionLimits,
}

const DAY: u64 = 86_400;

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
            retention: Retention {
                raw: Duration::from_secs(7 * DAY),
                rollup_5m: Duration::from_secs(90 * DAY),
                rollup_1h: Duration::from_secs(730 * DAY),
            },
            agentless_changes: ChangePolicy::default(),
            mcp_allowed_origins: Vec::new(),
            require_approval: false,
            redis_url: None,
            redis_key_prefix: "infrastructor".into(),
            rate_limit: RateLimit::default(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// "line 3 (`http_listen = \"nope\"`): invalid socket address syntax" — one line naming the place.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => {
            let line_number = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_number - 1).unwrap_or_default().trim();
            format!("line {line_number} (`{line}`): {}", error.message())
        }
        None => error.message().to_string(),
    }
}

fn duration(
    path: &Path,
    field: &str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("{field} = {text:?}: {e}"),
        }),
    }
}

impl ControllerConfig {
    /// Builds the effective configuration from the layers and validates it.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(path) = &args.config {
            config.apply_file(path)?;
        }
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(path) = &args.database_url_file {
            let url = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            config.database_url = Some(url.trim().to_string());
        }
        if let Some(url) = &args.database_url {
            config.database_url = Some(url.clone());
        }
        if let Some(addr) = args.http_listen {
            config.http_listen = addr;
        }
        if let Some(addr) = args.grpc_listen {
            config.grpc_listen = addr;
        }
        if let Some(url) = &args.advertise_url {
            config.advertise_url = Some(url.clone());
        }
        if let Some(path) = &args.ssh_known_hosts {
            config.ssh_known_hosts = Some(path.clone());
        }
        if let Some(url) = &args.redis_url {
            config.redis_url = Some(url.clone());
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(&text, &e),
        })?;
        if let Some(dir) = file.data_dir {
            self.data_dir = dir;
        }
        self.database_url = file.database_url.or(self.database_url.take());
        self.http_listen = file.http_listen.unwrap_or(self.http_listen);
        self.grpc_listen = file.grpc_listen.unwrap_or(self.grpc_listen);
        self.advertise_url = file.advertise_url.or(self.advertise_url.take());
        self.ssh_known_hosts = file.ssh_known_hosts.or(self.ssh_known_hosts.take());
        self.server_names.extend(file.server_names);
        self.mcp_allowed_origins.extend(file.mcp_allowed_origins);
        self.require_approval = file.require_approval.unwrap_or(self.require_approval);
        self.redis_url = file.redis_url.or(self.redis_url.take());
        if let Some(prefix) = file.redis_key_prefix {
            self.redis_key_prefix = prefix;
        }
        self.rate_limit = file.rate_limit.unwrap_or(self.rate_limit);
        self.connections = file.connections.unwrap_or(self.connections);
        if let Some(policy) = file.agentless_changes {
            policy.validate().map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("[agentless_changes]: {e}"),
            })?;
            self.agentless_changes = policy;
        }
        self.certificate_lifetime = duration(
            path,
            "certificate_lifetime",
            file.certificate_lifetime,
            self.certificate_lifetime,
        )?;
        self.join_token_ttl = duration(
            path,
            "join_token_ttl",
            file.join_token_ttl,
            self.join_token_ttl,
        )?;
        self.maintenance_interval = duration(
            path,
            "maintenance_interval",
            file.maintenance_interval,
            self.maintenance_interval,
        )?;
        self.retention.raw = duration(
            path,
            "retention.raw",
            file.retention.raw,
            self.retention.raw,
        )?;
        self.retention.rollup_5m = duration(
            path,
            "retention.rollup_5m",
            file.retention.rollup_5m,
            self.retention.rollup_5m,
        )?;
        self.retention.rollup_1h = duration(
            path,
            "retention.rollup_1h",
            file.retention.rollup_1h,
            self.retention.rollup_1h,
        )?;
        Ok(())
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
        Ok(())
    }

    /// The gateway URL agents dial.
    pub fn gateway_url(&self, bound: SocketAddr) -> String {
        self.advertise_url.clone().unwrap_or_else(|| {
            let host = if bound.ip().is_unspecified() {
                infrastructor_agent::config::hostname()
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
            infrastructor_agent::config::hostname(),
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
    fn layers_apply_in_order() {
        let file = write(
            "data_dir = \"/from/file\"\nhttp_listen = \"127.0.0.1:9000\"\n[retention]\nraw = \"2d\"\n",
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
