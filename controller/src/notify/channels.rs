//! The configured channels (`[notifications.channels.<name>]`) and sending one notification
//! through one of them: a signed generic webhook, ntfy, Gotify, Slack- and Discord-compatible
//! webhooks over HTTPS (no redirects followed), and email over SMTP with STARTTLS (lettre).
//!
//! Secrets — the webhook's signing key, ntfy and Gotify tokens, the SMTP password, and URLs
//! that carry their own token (Slack, Discord) — are read from a file or an environment
//! variable when the controller starts, and never appear in a view, an error or a log: views
//! show a URL's origin only, and HTTP errors are reported without their URL.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::payload::{self, Notification, SIGNATURE_HEADER};
use super::routing::Route;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Tried in order; none: every channel gets every notification.
    pub routes: Vec<Route>,
    /// The first retry's wait; each next one doubles, up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts before a notification becomes a dead letter.
    pub max_attempts: u32,
    /// One attempt's time limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            channels: BTreeMap::new(),
            routes: Vec::new(),
            retry_after: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            max_attempts: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Webhook,
    Ntfy,
    Gotify,
    Slack,
    Discord,
    Email,
}

/// How an email channel reaches its server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a server on loopback, and never with a password.
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub kind: ChannelKind,
    /// The endpoint (HTTP kinds): ntfy's `https://ntfy.sh/<topic>`, Gotify's server, the
    /// webhook's URL. One of `url`, `url_file`, `url_env`; Slack and Discord URLs are
    /// secrets, so prefer the file or the environment for them.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub url_env: Option<String>,
    /// The webhook's signing key, or ntfy's / Gotify's access token.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Email: the server, its port (default: 587, or 465 for `tls`), how it is secured.
    #[serde(default)]
    pub smtp_host: Option<String>,
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    /// A PEM file of extra roots to trust for the SMTP server (a private CA).
    #[serde(default)]
    pub smtp_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Notifications per minute at most; more wait their turn.
    #[serde(default = "per_minute")]
    pub per_minute: u32,
}

fn per_minute() -> u32 {
    30
}

/// A secret's value; never printed.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The receiver refused it for good (a 4xx other than 408 and 429, a bad address).
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

enum Target {
    Http {
        url: reqwest::Url,
        secret: Option<Secret>,
    },
    Email {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        to: Vec<Mailbox>,
        server: String,
    },
}

struct Channel {
    kind: ChannelKind,
    target: Target,
    per_minute: u32,
    limiter: DefaultDirectRateLimiter,
}

/// A channel as views show it: no secret, no URL path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelView {
    pub name: String,
    pub kind: ChannelKind,
    /// `https://ntfy.example.net`, `smtp://mail.example.net:587`: where it goes, not the
    /// path or token.
    pub destination: String,
    /// Whether a signing key or token is configured.
    pub authenticated: bool,
    pub per_minute: u32,
}

/// Every configured channel, ready to send.
pub struct Channels {
    http: reqwest::Client,
    channels: BTreeMap<String, Channel>,
    pub routes: Vec<Route>,
}

impl Channels {
    /// Reads every channel's secrets and checks its settings; the error names the channel.
    pub fn new(config: &NotificationsConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("infrastructor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("notifications: HTTP client: {e}"))?;
        let mut channels = BTreeMap::new();
        for (name, channel) in &config.channels {
            let valid = name.len() <= 64
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(format!(
                    "notifications.channels.{name}: a channel name is a letter or digit, then \
                     letters, digits, '_', '.' or '-' (at most 64)"
                ));
            }
            let built = build(channel, config.timeout)
                .map_err(|e| format!("notifications.channels.{name}: {e}"))?;
            channels.insert(name.clone(), built);
        }
        for (i, route) in config.routes.iter().enumerate() {
            if let Some(unknown) = route.channels.iter().find(|c| !channels.contains_key(*c)) {
                return Err(format!(
                    "notifications.routes[{i}]: no channel named {unknown:?}"
                ));
            }
        }
        Ok(Self {
            http,
            channels,
            routes: config.routes.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    pub fn views(&self) -> Vec<ChannelView> {
        self.channels
            .iter()
            .map(|(name, channel)| ChannelView {
                name: name.clone(),
                kind: channel.kind,
                destination: match &channel.target {
                    Target::Http { url, .. } => url.origin().ascii_serialization(),
                    Target::Email { server, .. } => server.clone(),
                },
                authenticated: match &channel.target {
                    Target::Http { secret, .. } => secret.is_some(),
                    Target::Email { .. } => true,
                },
                per_minute: channel.per_minute,
            })
            .collect()
    }

    /// How long the channel's rate limit holds the next send back (zero: send now, and
    /// the send is counted).
    pub fn wait(&self, name: &str) -> Duration {
        let Some(channel) = self.channels.get(name) else {
            return Duration::ZERO;
        };
        match channel.limiter.check() {
            Ok(()) => Duration::ZERO,
            Err(not_until) => not_until.wait_time_from(DefaultClock::default().now()),
        }
    }

    /// Sends `notification` through channel `name`, once.
    pub async fn send(
        &self,
        name: &str,
        notification: &Notification,
        now_ms: i64,
    ) -> Result<(), SendError> {
        let channel = self
            .channels
            .get(name)
            .ok_or_else(|| SendError::Permanent(format!("no channel named {name:?} any more")))?;
        match &channel.target {
            Target::Http { url, secret } => {
                let request =
                    http_request(&self.http, channel.kind, url, secret, notification, now_ms);
                let response = request.send().await.map_err(|e| {
                    // Without the URL: a Slack or Discord URL is the secret.
                    SendError::Transient(format!("cannot reach the receiver: {}", e.without_url()))
                })?;
                classify(response.status())
            }
            Target::Email {
                transport,
                from,
                to,
                ..
            } => {
                let (subject, body) = payload::email(notification);
                let mut message = Message::builder().from(from.clone()).subject(subject);
                for address in to {
                    message = message.to(address.clone());
                }
                let message = message
                    .body(body)
                    .map_err(|e| SendError::Permanent(format!("cannot build the email: {e}")))?;
                transport.send(message).await.map(|_| ()).map_err(|e| {
                    let text = format!("SMTP: {e}");
                    if e.is_permanent() {
                        SendError::Permanent(text)
                    } else {
                        SendError::Transient(text)
                    }
                })
            }
        }
    }
}

fn http_request(
    http: &reqwest::Client,
    kind: ChannelKind,
    url: &reqwest::Url,
    secret: &Option<Secret>,
    notification: &Notification,
    now_ms: i64,
) -> reqwest::RequestBuilder {
    let bearer = |request: reqwest::RequestBuilder| match secret {
        Some(Secret(token)) => request.bearer_auth(token),
        None => request,
    };
    match kind {
        ChannelKind::Webhook => {
            let body = payload::webhook_body(notification).to_string();
            let mut request = http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            if let Some(Secret(key)) = secret {
                let signed = payload::signature(key.as_bytes(), now_ms / 1000, body.as_bytes());
                request = request.header(SIGNATURE_HEADER, signed);
            }
            request.body(body)
        }
        ChannelKind::Ntfy => {
            let (headers, text) = payload::ntfy(notification);
            let mut request = bearer(http.post(url.clone()));
            for (name, value) in headers {
                // Header values must be visible ASCII; ntfy reads RFC 2047 for the rest.
                request = request.header(name, ascii_header(&value));
            }
            request.body(text)
        }
        ChannelKind::Gotify => {
            let mut message = url.clone();
            message.set_path(&format!("{}/message", url.path().trim_end_matches('/')));
            let request = http.post(message).json(&payload::gotify(notification));
            match secret {
                Some(Secret(token)) => request.header("X-Gotify-Key", token),
                None => request,
            }
        }
        ChannelKind::Slack => http.post(url.clone()).json(&payload::slack(notification)),
        ChannelKind::Discord => http.post(url.clone()).json(&payload::discord(notification)),
        ChannelKind::Email => http.post(url.clone()),
    }
}

fn ascii_header(value: &str) -> String {
    value
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

fn classify(status: reqwest::StatusCode) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let text = format!("the receiver answered {status}");
    let retry = status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
    Err(if retry {
        SendError::Transient(text)
    } else {
        SendError::Permanent(text)
    })
}

/// A value given inline, in a file, or in an environment variable (one of them).
fn one_of(
    what: &str,
    inline: Option<&String>,
    file: Option<&PathBuf>,
    env: Option<&String>,
) -> Result<Option<Secret>, String> {
    match (inline, file, env) {
        (None, None, None) => Ok(None),
        (Some(value), None, None) => Ok(Some(Secret(value.clone()))),
        (None, Some(path), None) => std::fs::read_to_string(path)
            .map(|text| Some(Secret(text.trim().to_string())))
            .map_err(|e| format!("cannot read {what} file {}: {e}", path.display())),
        (None, None, Some(var)) => std::env::var(var)
            .map(|text| Some(Secret(text.trim().to_string())))
            .map_err(|_| format!("{what} environment variable {var} is not set")),
        _ => Err(format!("give {what} one way only")),
    }
}

fn build(config: &ChannelConfig, timeout: Duration) -> Result<Channel, String> {
    let per_minute = NonZeroU32::new(config.per_minute)
        .filter(|n| n.get() <= 6000)
        .ok_or("per_minute must be 1..=6000")?;
    let secret = one_of(
        "the secret",
        None,
        config.secret_file.as_ref(),
        config.secret_env.as_ref(),
    )?;
    let target = match config.kind {
        ChannelKind::Email => email_target(config, timeout)?,
        kind => {
            let url = one_of(
                "the URL",
                config.url.as_ref(),
                config.url_file.as_ref(),
                config.url_env.as_ref(),
            )?
            .ok_or("an HTTP channel needs `url`, `url_file` or `url_env`")?;
            let url = reqwest::Url::parse(&url.0).map_err(|e| format!("invalid URL: {e}"))?;
            let loopback = url.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err("the URL must be https:// (http:// only to loopback)".into());
            }
            if kind == ChannelKind::Gotify && secret.is_none() {
                return Err(
                    "Gotify needs its application token (`secret_file` or `secret_env`)".into(),
                );
            }
            Target::Http { url, secret }
        }
    };
    Ok(Channel {
        kind: config.kind,
        target,
        per_minute: per_minute.get(),
        limiter: RateLimiter::direct(Quota::per_minute(per_minute)),
    })
}

fn email_target(config: &ChannelConfig, timeout: Duration) -> Result<Target, String> {
    let host = config.smtp_host.clone().ok_or("email needs `smtp_host`")?;
    let port = config.smtp_port.unwrap_or(match config.smtp_tls {
        SmtpTls::Tls => 465,
        _ => 587,
    });
    let mailbox = |text: &str| {
        text.parse::<Mailbox>()
            .map_err(|e| format!("invalid address {text:?}: {e}"))
    };
    let from = mailbox(config.from.as_deref().ok_or("email needs `from`")?)?;
    if config.to.is_empty() {
        return Err("email needs at least one `to` address".into());
    }
    let to = config
        .to
        .iter()
        .map(|t| mailbox(t))
        .collect::<Result<Vec<_>, _>>()?;
    let password = one_of(
        "the password",
        None,
        config.password_file.as_ref(),
        config.password_env.as_ref(),
    )?;
    let tls = || {
        let mut builder = TlsParameters::builder(host.clone());
        if let Some(path) = &config.smtp_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read smtp_ca_file {}: {e}", path.display()))?;
            let root = Certificate::from_pem(&pem)
                .map_err(|e| format!("smtp_ca_file {}: {e}", path.display()))?;
            builder = builder.add_root_certificate(root);
        }
        builder.build_rustls().map_err(|e| format!("TLS: {e}"))
    };
    let tls = match config.smtp_tls {
        SmtpTls::Starttls => Tls::Required(tls()?),
        SmtpTls::Tls => Tls::Wrapper(tls()?),
        SmtpTls::None => {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback || password.is_some() {
                return Err(
                    "smtp_tls = \"none\" is only for a server on loopback, without a password"
                        .into(),
                );
            }
            Tls::None
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(port)
        .tls(tls)
        .timeout(Some(timeout));
    match (&config.username, password) {
        (Some(user), Some(Secret(password))) => {
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        (None, None) => {}
        _ => return Err("give both `username` and a password, or neither".into()),
    }
    Ok(Target::Email {
        transport: builder.build(),
        from,
        to,
        server: format!("smtp://{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(toml_text: &str) -> Result<Channels, String> {
        let config: NotificationsConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Channels::new(&config)
    }

    #[test]
    fn views_show_where_a_channel_goes_never_its_secret_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "hush\n").unwrap();
        let channels = channel(&format!(
            "[channels.hook]\nkind = \"webhook\"\nurl = \"https://hooks.example.net/T0/B0/XXXX\"\n\
             secret_file = \"{}\"\n",
            key.display()
        ))
        .unwrap();
        let views = channels.views();
        assert_eq!(views[0].destination, "https://hooks.example.net");
        assert!(views[0].authenticated);
        let shown = serde_json::to_string(&views).unwrap();
        assert!(
            !shown.contains("XXXX") && !shown.contains("hush"),
            "{shown}"
        );
    }

    #[test]
    fn bad_channels_are_refused_with_their_name_and_reason() {
        let error = |text: &str| channel(text).err().unwrap_or_default();
        assert!(
            error("[channels.a]\nkind = \"ntfy\"\nurl = \"http://ntfy.example.net/t\"\n")
                .contains("https://")
        );
        assert!(
            error("[channels.a]\nkind = \"gotify\"\nurl = \"https://g.example.net\"\n")
                .contains("token")
        );
        assert!(error(
            "[channels.a]\nkind = \"webhook\"\nurl = \"https://x.example.net\"\n\
             secret_env = \"INFRASTRUCTOR_TEST_UNSET_SECRET\"\n"
        )
        .contains("INFRASTRUCTOR_TEST_UNSET_SECRET is not set"));
        let plain = error(
            "[channels.mail]\nkind = \"email\"\nsmtp_host = \"mail.example.net\"\n\
             smtp_tls = \"none\"\nfrom = \"a@example.net\"\nto = [\"b@example.net\"]\n",
        );
        assert!(
            plain.starts_with("notifications.channels.mail: smtp_tls"),
            "{plain}"
        );
        let routed = error(
            "[channels.a]\nkind = \"slack\"\nurl = \"https://hooks.example.net/x\"\n\
             [[routes]]\nchannels = [\"b\"]\n",
        );
        assert!(routed.contains("no channel named \"b\""), "{routed}");
    }

    #[test]
    fn receivers_refusing_for_good_are_told_apart_from_those_that_may_recover() {
        use reqwest::StatusCode;
        assert_eq!(classify(StatusCode::NO_CONTENT), Ok(()));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY),
            Err(SendError::Transient(_))
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Err(SendError::Transient(_))
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND),
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            classify(StatusCode::MOVED_PERMANENTLY),
            Err(SendError::Permanent(_))
        ));
    }
}
