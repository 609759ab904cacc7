//! Acting on one container through the engine API: start, stop (with a grace period),
//! restart, kill (with a signal), its last log lines, a stats reading, and inspect. The agent
//! runs these on its own socket; the controller runs the same functions over the SSH tunnel
//! to an agentless host's socket. Names are validated before anything reaches the engine.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, LogsOptionsBuilder, RestartContainerOptionsBuilder,
    StartContainerOptions, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::docker::{inspect_container, ContainerInfo, DockerError};
use super::names::{ContainerName, InvalidName};

/// The longest grace period a stop or restart may ask for.
pub const MAX_GRACE_SECONDS: u32 = 600;
/// The most log lines one call returns.
pub const MAX_LOG_LINES: u32 = 5000;
/// Log text kept per call: beyond it the oldest lines are dropped.
pub const MAX_LOG_BYTES: usize = 256 * 1024;
/// One log line's text is cut here.
pub const MAX_LINE_BYTES: usize = 4096;

/// What to do to a container's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerAction {
    Start,
    /// SIGTERM, then SIGKILL after the grace period.
    Stop,
    /// A stop with the grace period, then a start.
    Restart,
    /// The signal at once (SIGKILL unless another is named).
    Kill,
}

impl ContainerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Kill => "kill",
        }
    }
}

/// A signal name for `kill`: `SIGHUP`, `HUP`, `SIGUSR1`… (letters and digits, optionally
/// `SIG`-prefixed), or a number from 1 to 64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Signal(String);

impl Signal {
    pub fn new(value: &str) -> Result<Self, InvalidName> {
        let invalid = || InvalidName {
            kind: "signal",
            value: value.to_string(),
            rule: "a signal name such as SIGTERM or HUP, or a number from 1 to 64",
        };
        let name = value.strip_prefix("SIG").unwrap_or(value);
        let numeric = name.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n));
        let named = !name.is_empty()
            && name.len() <= 8
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && name.starts_with(|c: char| c.is_ascii_uppercase());
        if numeric || named {
            Ok(Self(value.to_string()))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Signal {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Signal> for String {
    fn from(signal: Signal) -> Self {
        signal.0
    }
}

/// How an action is carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ActionOptions {
    /// Stop and restart: seconds between SIGTERM and SIGKILL (the engine's default, 10, when
    /// absent).
    pub grace_seconds: Option<u32>,
    /// Kill: the signal (SIGKILL when absent).
    pub signal: Option<Signal>,
}

/// Which log lines to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogQuery {
    /// The newest lines, at most this many.
    pub tail: u32,
    /// Only lines written at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line a container wrote. Its text is the container's own: untrusted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    pub ts_ms: Option<i64>,
    pub stream: LogStream,
    pub text: String,
}

/// The newest lines, and whether older ones were left out to stay within the bounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerLogs {
    pub lines: Vec<LogLine>,
    pub truncated: bool,
}

/// One reading of a running container's resources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerStats {
    /// Share of one core × 100 (200 = two cores busy), over the engine's one-second window.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub pids: Option<u64>,
}

/// One operation on one container, as a host is asked to carry it out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerOp {
    Act {
        action: ContainerAction,
        options: ActionOptions,
    },
    Inspect,
    Logs(LogQuery),
    Stats,
}

/// What an operation answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerAnswer {
    State(Box<ContainerInfo>),
    Logs(ContainerLogs),
    Stats(ContainerStats),
}

/// Carries out `op` on the container `name`.
pub async fn run(
    docker: &Docker,
    name: &ContainerName,
    op: &ContainerOp,
) -> Result<ContainerAnswer, DockerError> {
    Ok(match op {
        ContainerOp::Act { action, options } => {
            ContainerAnswer::State(Box::new(act(docker, name, *action, options).await?))
        }
        ContainerOp::Inspect => {
            ContainerAnswer::State(Box::new(inspect_container(docker, name).await?))
        }
        ContainerOp::Logs(query) => ContainerAnswer::Logs(logs(docker, name, *query).await?),
        ContainerOp::Stats => ContainerAnswer::Stats(stats(docker, name).await?),
    })
}

/// Carries out `action` and returns the container's state afterwards. Starting a running
/// container or stopping a stopped one is not an error: the engine's 304 is success.
pub async fn act(
    docker: &Docker,
    name: &ContainerName,
    action: ContainerAction,
    options: &ActionOptions,
) -> Result<ContainerInfo, DockerError> {
    let id = name.as_str();
    let grace = options
        .grace_seconds
        .map(|s| s.min(MAX_GRACE_SECONDS) as i32);
    let done = match action {
        ContainerAction::Start => {
            docker
                .start_container(id, None::<StartContainerOptions>)
                .await
        }
        ContainerAction::Stop => {
            let mut builder = StopContainerOptionsBuilder::default();
            if let Some(t) = grace {
                builder = builder.t(t);
            }
            docker.stop_container(id, Some(builder.build())).await
        }
        ContainerAction::Restart => {
            let mut builder = RestartContainerOptionsBuilder::default();
            if let Some(t) = grace {
                builder = builder.t(t);
            }
            docker.restart_container(id, Some(builder.build())).await
        }
        ContainerAction::Kill => {
            let signal = options.signal.as_ref().map_or("SIGKILL", Signal::as_str);
            let options = KillContainerOptionsBuilder::default()
                .signal(signal)
                .build();
            docker.kill_container(id, Some(options)).await
        }
    };
    match done {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(error) => return Err(error.into()),
    }
    inspect_container(docker, name).await
}

/// The newest `query.tail` lines (bounded by [`MAX_LOG_LINES`] and [`MAX_LOG_BYTES`]).
pub async fn logs(
    docker: &Docker,
    name: &ContainerName,
    query: LogQuery,
) -> Result<ContainerLogs, DockerError> {
    let tail = query.tail.clamp(1, MAX_LOG_LINES);
    let mut builder = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .tail(&tail.to_string());
    if let Some(since) = query.since_ms {
        builder = builder.since(i32::try_from(since.max(0) / 1000).unwrap_or(i32::MAX));
    }
    let mut stream = docker.logs(name.as_str(), Some(builder.build()));
    let mut lines = Vec::new();
    while let Some(chunk) = stream.next().await {
        let (stream, bytes) = match chunk? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (LogStream::Stdout, message)
            }
            LogOutput::StdErr { message } => (LogStream::Stderr, message),
            LogOutput::StdIn { .. } => continue,
        };
        for raw in String::from_utf8_lossy(&bytes).lines() {
            lines.push(log_line(stream, raw));
        }
    }
    Ok(bounded(lines, tail as usize))
}

/// A line as the engine sends it with `timestamps`: an RFC 3339 time, a space, the text.
pub fn log_line(stream: LogStream, raw: &str) -> LogLine {
    let (ts_ms, text) = match raw.split_once(' ') {
        Some((stamp, rest)) => match parse_engine_time(stamp) {
            Some(ts) => (Some(ts), rest),
            None => (None, raw),
        },
        None => (None, raw),
    };
    LogLine {
        ts_ms,
        stream,
        text: cut(text, MAX_LINE_BYTES).to_string(),
    }
}

/// The newest lines within the line and byte bounds.
fn bounded(mut lines: Vec<LogLine>, max_lines: usize) -> ContainerLogs {
    let mut truncated = false;
    if lines.len() > max_lines {
        lines.drain(..lines.len() - max_lines);
        truncated = true;
    }
    let mut bytes = 0;
    let keep = lines
        .iter()
        .rev()
        .take_while(|line| {
            bytes += line.text.len();
            bytes <= MAX_LOG_BYTES
        })
        .count();
    if keep < lines.len() {
        lines.drain(..lines.len() - keep);
        truncated = true;
    }
    ContainerLogs { lines, truncated }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// An engine timestamp (`2026-12-03T14:12:20.123456789Z`) in Unix milliseconds.
pub fn parse_engine_time(stamp: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = parsed.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).ok().filter(|ms| *ms > 0)
}

/// One stats reading (the engine waits a second for a CPU window). A stopped container
/// reads as zeros.
pub async fn stats(docker: &Docker, name: &ContainerName) -> Result<ContainerStats, DockerError> {
    let options = StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(false)
        .build();
    let reading = tokio::time::timeout(
        Duration::from_secs(10),
        docker.stats(name.as_str(), Some(options)).next(),
    )
    .await
    .map_err(|_| DockerError::Unreachable("no stats reading within 10 s".into()))?;
    let Some(reading) = reading else {
        return Ok(ContainerStats::default());
    };
    let reading = reading?;
    let memory = reading.memory_stats.clone().unwrap_or_default();
    let (rx, tx) = reading
        .networks
        .iter()
        .flat_map(|n| n.values())
        .fold((0, 0), |(rx, tx), n| {
            (rx + n.rx_bytes.unwrap_or(0), tx + n.tx_bytes.unwrap_or(0))
        });
    let (read, write) = reading
        .blkio_stats
        .iter()
        .flat_map(|b| b.io_service_bytes_recursive.iter().flatten())
        .fold((0, 0), |(read, write), entry| {
            let value = entry.value.unwrap_or(0);
            match entry.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => (read + value, write),
                Some("write") => (read, write + value),
                _ => (read, write),
            }
        });
    Ok(ContainerStats {
        cpu_percent: super::docker::cpu_percent(&reading),
        memory_bytes: memory.usage.unwrap_or(0),
        memory_limit_bytes: memory.limit.filter(|l| *l > 0),
        network_rx_bytes: rx,
        network_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
        pids: reading.pids_stats.and_then(|p| p.current),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_names_or_numbers() {
        for good in ["SIGTERM", "HUP", "SIGUSR1", "9", "SIGRTMIN"] {
            Signal::new(good).unwrap();
        }
        for bad in [
            "",
            "SIG",
            "sigterm",
            "0",
            "65",
            "TERM;ls",
            "SIG TERM",
            "SIGVERYLONGNAME",
        ] {
            assert!(Signal::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_lines_carry_the_engine_time_and_are_bounded() {
        let line = log_line(
            LogStream::Stderr,
            "2026-12-03T14:12:20.123456789Z listening on :8080",
        );
        assert_eq!(line.ts_ms, Some(1_796_307_140_123));
        assert_eq!(line.text, "listening on :8080");
        let bare = log_line(LogStream::Stdout, "no stamp here");
        assert_eq!((bare.ts_ms, bare.text.as_str()), (None, "no stamp here"));
        let long = "é".repeat(MAX_LINE_BYTES);
        assert!(log_line(LogStream::Stdout, &long).text.len() <= MAX_LINE_BYTES);

        let many: Vec<LogLine> = (0..10)
            .map(|i| log_line(LogStream::Stdout, &format!("line {i}")))
            .collect();
        let kept = bounded(many, 3);
        assert!(kept.truncated);
        let texts: Vec<&str> = kept.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["line 7", "line 8", "line 9"]);
    }
}
