//! Commands as argv, never as shell strings. Only the builders below create a
//! [`HostCommand`], each from a fixed program and validated names, with `--` before
//! positionals; output is bounded and the process is killed on timeout.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::names::{PoolName, UnitName};

/// Output kept per stream; anything beyond is dropped and flagged.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCommand {
    program: &'static str,
    args: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{program} is not installed")]
    NotFound { program: &'static str },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout {
        program: &'static str,
        timeout: Duration,
    },
}

impl HostCommand {
    fn new(program: &'static str, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            program,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The full argv, for logs and for the SSH driver (which sends it as an exec request).
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program)
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }

    pub fn program(&self) -> &'static str {
        self.program
    }

    /// Runs the command locally (no shell), with stdin closed and a deadline.
    pub async fn run(&self, timeout: Duration) -> Result<CommandOutput, CommandError> {
        let program = self.program;
        let mut child = tokio::process::Command::new(program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => CommandError::NotFound { program },
                _ => CommandError::Spawn { program, source },
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let collect = async {
            let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = tokio::time::timeout(timeout, collect)
            .await
            .map_err(|_| CommandError::Timeout { program, timeout })?;
        let status = status.map_err(|source| CommandError::Spawn { program, source })?;
        Ok(CommandOutput {
            code: status.code(),
            truncated: out.1 || err.1,
            stdout: out.0,
            stderr: err.0,
        })
    }
}

async fn read_bounded(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> (String, bool) {
    let Some(stream) = stream else {
        return (String::new(), false);
    };
    let mut buffer = Vec::new();
    let mut limited = stream.take(MAX_OUTPUT_BYTES as u64 + 1);
    let _ = limited.read_to_end(&mut buffer).await;
    let truncated = buffer.len() > MAX_OUTPUT_BYTES;
    buffer.truncate(MAX_OUTPUT_BYTES);
    // Drain the rest so the child does not block on a full pipe.
    let mut rest = limited.into_inner();
    let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    (String::from_utf8_lossy(&buffer).into_owned(), truncated)
}

/// `uname -srm`: kernel name, release and machine — a harmless probe of a host.
pub fn uname() -> HostCommand {
    HostCommand::new("uname", ["-srm"])
}

/// `test -d /run/systemd/system`: succeeds when systemd is the running init.
pub fn systemd_booted() -> HostCommand {
    HostCommand::new("test", ["-d", "/run/systemd/system"])
}

/// `zpool status [-- POOL]`
pub fn zpool_status(pool: Option<&PoolName>) -> HostCommand {
    let mut args = vec!["status".to_string()];
    if let Some(pool) = pool {
        args.push("--".into());
        args.push(pool.to_string());
    }
    HostCommand::new("zpool", args)
}

/// `zpool list -Hp -o name,size,alloc,free,frag,cap,health` — exact bytes, fixed columns.
pub fn zpool_list() -> HostCommand {
    HostCommand::new(
        "zpool",
        ["list", "-Hp", "-o", "name,size,alloc,free,frag,cap,health"],
    )
}

/// Every failed unit, one per line, no decoration.
pub fn systemctl_failed_units() -> HostCommand {
    HostCommand::new(
        "systemctl",
        [
            "list-units",
            "--state=failed",
            "--no-legend",
            "--plain",
            "--full",
            "--no-pager",
        ],
    )
}

/// State of the named units as `key=value` blocks.
pub fn systemctl_show(units: &[UnitName]) -> HostCommand {
    let mut args: Vec<String> = [
        "show",
        "--no-pager",
        "--property=Id,LoadState,ActiveState,SubState,Result",
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(units.iter().map(ToString::to_string));
    HostCommand::new("systemctl", args)
}

/// The last `lines` journal entries as JSON, optionally of one unit.
pub fn journal_tail(lines: u32, unit: Option<&UnitName>) -> HostCommand {
    let mut args = vec![
        "--output=json".to_string(),
        "--no-pager".into(),
        format!("--lines={}", lines.clamp(1, 10_000)),
    ];
    if let Some(unit) = unit {
        args.push(format!("--unit={unit}"));
    }
    HostCommand::new("journalctl", args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_put_names_after_a_double_dash() {
        let pool = PoolName::new("tank").unwrap();
        assert_eq!(
            zpool_status(Some(&pool)).argv(),
            ["zpool", "status", "--", "tank"]
        );
        let unit = UnitName::new("nginx.service").unwrap();
        let show = systemctl_show(std::slice::from_ref(&unit));
        assert_eq!(show.argv().last(), Some(&"nginx.service"));
        assert_eq!(show.argv()[show.argv().len() - 2], "--");
        assert_eq!(
            journal_tail(50, Some(&unit)).argv().last(),
            Some(&"--unit=nginx.service")
        );
        assert_eq!(journal_tail(0, None).argv()[3], "--lines=1");
    }

    #[tokio::test]
    async fn arguments_are_never_interpreted_by_a_shell() {
        let echo = HostCommand::new("echo", ["$(id)", "`id`", "a;b", "&&", "|"]);
        let output = echo.run(Duration::from_secs(5)).await.unwrap();
        assert_eq!(output.stdout, "$(id) `id` a;b && |\n");
        assert_eq!(output.code, Some(0));
    }

    #[tokio::test]
    async fn missing_programs_timeouts_and_huge_output_are_handled() {
        let missing = HostCommand::new("infrastructor-no-such-program", Vec::<String>::new());
        assert!(matches!(
            missing.run(Duration::from_secs(5)).await,
            Err(CommandError::NotFound { .. })
        ));
        let slow = HostCommand::new("sleep", ["10"]);
        assert!(matches!(
            slow.run(Duration::from_millis(100)).await,
            Err(CommandError::Timeout { .. })
        ));
        let flood = HostCommand::new("head", ["-c", "3000000", "/dev/zero"]);
        let output = flood.run(Duration::from_secs(10)).await.unwrap();
        assert!(output.truncated);
        assert_eq!(output.stdout.len(), MAX_OUTPUT_BYTES);
    }
}
