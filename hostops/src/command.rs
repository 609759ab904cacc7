//! Commands as argv, never as shell strings. Only the builders below create a
//! [`HostCommand`], each from a fixed program and validated names, with `--` before
//! positionals; output is bounded and the process is killed on timeout.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::names::{AccountName, ManagedPath, PoolName, UnitName};

/// Output kept per stream; anything beyond is dropped and flagged.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCommand {
    program: String,
    args: Vec<String>,
    /// Bytes fed to the process's stdin (file content for a remote write); closed otherwise.
    stdin: Option<Vec<u8>>,
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
    NotFound { program: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
}

impl HostCommand {
    pub(crate) fn new(program: &str, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
        }
    }

    fn with_stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// What the process reads on stdin, if anything.
    pub fn stdin(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// The full argv, for logs and for the SSH driver (which sends it as an exec request).
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect()
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// Runs the command locally (no shell), with stdin closed and a deadline.
    pub async fn run(&self, timeout: Duration) -> Result<CommandOutput, CommandError> {
        let program = || self.program.clone();
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => CommandError::NotFound { program: program() },
                _ => CommandError::Spawn {
                    program: program(),
                    source,
                },
            })?;
        let feed = feed_stdin(child.stdin.take(), self.stdin.clone());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let collect = async {
            let (out, err, ()) = tokio::join!(read_bounded(stdout), read_bounded(stderr), feed);
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) =
            tokio::time::timeout(timeout, collect)
                .await
                .map_err(|_| CommandError::Timeout {
                    program: program(),
                    timeout,
                })?;
        let status = status.map_err(|source| CommandError::Spawn {
            program: program(),
            source,
        })?;
        Ok(CommandOutput {
            code: status.code(),
            truncated: out.1 || err.1,
            stdout: out.0,
            stderr: err.0,
        })
    }
}

async fn feed_stdin(pipe: Option<tokio::process::ChildStdin>, bytes: Option<Vec<u8>>) {
    use tokio::io::AsyncWriteExt;
    if let (Some(mut pipe), Some(bytes)) = (pipe, bytes) {
        // A process that exits without reading all of it reports that through its status.
        let _ = pipe.write_all(&bytes).await;
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

/// `systemctl reload|restart -- UNIT`
pub fn systemctl_unit_action(verb: UnitVerb, unit: &UnitName) -> HostCommand {
    HostCommand::new("systemctl", [verb.as_str(), "--", unit.as_str()])
}

/// What a configuration change may do to a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitVerb {
    Reload,
    Restart,
}

impl UnitVerb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Reload => "reload",
            Self::Restart => "restart",
        }
    }
}

/// `systemctl is-active --quiet -- UNIT`: exit 0 when active.
pub fn systemctl_is_active(unit: &UnitName) -> HostCommand {
    HostCommand::new("systemctl", ["is-active", "--quiet", "--", unit.as_str()])
}

/// `command` run as the account `uid`:`gid` with no supplementary groups, through util-linux
/// `setpriv` (the same argv locally and over SSH).
pub fn as_account(uid: u32, gid: u32, command: &HostCommand) -> HostCommand {
    let mut args = vec![
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".to_string(),
        "--".into(),
        command.program.clone(),
    ];
    args.extend(command.args.iter().cloned());
    let mut wrapped = HostCommand::new("setpriv", args);
    wrapped.stdin = command.stdin.clone();
    wrapped
}

/// `id -g -- USER`: the user's primary group.
pub fn primary_group(name: &AccountName) -> HostCommand {
    HostCommand::new("id", ["-g", "--", name.as_str()])
}

/// A validator from the agent's allowlist: `template` comes from the operator's config, and
/// `{staged}` is replaced by the staged file's path, as one argv element.
pub fn validator(template: &[String], staged: &ManagedPath) -> Option<HostCommand> {
    let (program, args) = template.split_first()?;
    let args = args
        .iter()
        .map(|arg| arg.replace("{staged}", staged.as_str()));
    Some(HostCommand::new(program, args.collect::<Vec<_>>()))
}

/// `stat -c '%F|%a|%u|%g|%h' -- PATH…`: type, octal mode, owner, group and link count of
/// each path, one line each, without following a final symlink. Parsed by [`parse_stat`].
pub fn stat(paths: &[&ManagedPath]) -> HostCommand {
    let mut args = vec!["-c".to_string(), "%F|%a|%u|%g|%h".into(), "--".into()];
    args.extend(paths.iter().map(|p| p.to_string()));
    HostCommand::new("stat", args)
}

/// `id -u`: the user commands run as.
pub fn user_id() -> HostCommand {
    HostCommand::new("id", ["-u"])
}

/// `mktemp -d -p PARENT -- PREFIX.XXXXXXXXXX`: a fresh directory (0700, ours) with an
/// unpredictable name; its path on stdout.
pub fn make_temp_dir(parent: &ManagedPath, prefix: &str) -> HostCommand {
    HostCommand::new(
        "mktemp",
        [
            "-d".to_string(),
            "-p".into(),
            parent.to_string(),
            "--".into(),
            format!("{prefix}.XXXXXXXXXX"),
        ],
    )
}

/// `mktemp -p DIR -- PREFIX.XXXXXXXXXX`: a fresh empty file (0600, created exclusively, so
/// never through a planted link) with an unpredictable name; its path on stdout.
pub fn make_temp_file(dir: &ManagedPath, prefix: &str) -> HostCommand {
    HostCommand::new(
        "mktemp",
        [
            "-p".to_string(),
            dir.to_string(),
            "--".into(),
            format!("{prefix}.XXXXXXXXXX"),
        ],
    )
}

/// `mkdir -m 0700 -- DIR`: a new directory; an existing one (or a link) is refused.
pub fn make_dir(dir: &ManagedPath) -> HostCommand {
    HostCommand::new("mkdir", ["-m", "0700", "--", dir.as_str()])
}

/// `mkdir -p -m 0700 -- DIR`: the directory and its missing parents.
pub fn make_dirs(dir: &ManagedPath) -> HostCommand {
    HostCommand::new("mkdir", ["-p", "-m", "0700", "--", dir.as_str()])
}

/// `find DIR -type f -printf '%s %P\0'`: every regular file below DIR with its size, NUL
/// separated (names may hold newlines). DIR is absolute, so find cannot take it for an option.
pub fn list_files(dir: &ManagedPath) -> HostCommand {
    HostCommand::new("find", [dir.as_str(), "-type", "f", "-printf", "%s %P\\0"])
}

/// `rm -rf --one-file-system -- DIR`, only for a restore drill's own scratch directory
/// (made by [`make_temp_dir`] with the drill's prefix), never anything else.
pub fn remove_drill_dir(dir: &ManagedPath) -> Option<HostCommand> {
    let name = dir.as_path().file_name()?.to_str()?;
    name.starts_with(DRILL_PREFIX)
        .then(|| HostCommand::new("rm", ["-rf", "--one-file-system", "--", dir.as_str()]))
}

/// The prefix of a restore drill's scratch directory.
pub const DRILL_PREFIX: &str = "infrastructor-drill.";

/// `realpath -e -- DIR`: the directory with every symlink resolved.
pub fn realpath(dir: &ManagedPath) -> HostCommand {
    HostCommand::new("realpath", ["-e", "--", dir.as_str()])
}

/// `cat -- PATH`
pub fn read_file(path: &ManagedPath) -> HostCommand {
    HostCommand::new("cat", ["--", path.as_str()])
}

/// `dd of=PATH oflag=nofollow conv=fsync status=none` fed with `content`: writes and fsyncs
/// a file, refusing to open it through a symlink.
pub fn write_file(path: &ManagedPath, content: Vec<u8>) -> HostCommand {
    HostCommand::new(
        "dd",
        [
            format!("of={}", path.as_str()),
            "oflag=nofollow".into(),
            "conv=fsync".into(),
            "status=none".into(),
        ],
    )
    .with_stdin(content)
}

/// `chmod MODE -- PATH` (octal).
pub fn chmod(mode: u32, path: &ManagedPath) -> HostCommand {
    HostCommand::new(
        "chmod",
        [
            format!("{:o}", mode & 0o7777),
            "--".into(),
            path.to_string(),
        ],
    )
}

/// `chown -h UID:GID -- PATH` (numeric; a symlink itself, never its target).
pub fn chown(uid: u32, gid: u32, path: &ManagedPath) -> HostCommand {
    HostCommand::new(
        "chown",
        [
            "-h".to_string(),
            format!("{uid}:{gid}"),
            "--".into(),
            path.to_string(),
        ],
    )
}

/// `mv -f -T -- FROM TO`: an atomic rename within one directory.
pub fn rename(from: &ManagedPath, to: &ManagedPath) -> HostCommand {
    HostCommand::new("mv", ["-f", "-T", "--", from.as_str(), to.as_str()])
}

/// `sync -- PATH`: fsync a file or a directory.
pub fn sync(path: &ManagedPath) -> HostCommand {
    HostCommand::new("sync", ["--", path.as_str()])
}

/// `rm -f -- PATH`
pub fn remove_file(path: &ManagedPath) -> HostCommand {
    HostCommand::new("rm", ["-f", "--", path.as_str()])
}

/// `rm -rf -- DIR`: only ever used on a staging directory the engine created.
pub fn remove_dir(dir: &ManagedPath) -> HostCommand {
    HostCommand::new("rm", ["-rf", "--", dir.as_str()])
}

/// `id -u -- USER` / `getent group -- GROUP`: resolve an owner name to its number.
pub fn resolve_owner(kind: OwnerKind, name: &AccountName) -> HostCommand {
    match kind {
        OwnerKind::User => HostCommand::new("id", ["-u", "--", name.as_str()]),
        OwnerKind::Group => HostCommand::new("getent", ["group", "--", name.as_str()]),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    User,
    Group,
}

/// What `stat` reported about a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatLine {
    /// `regular file`, `regular empty file`, `directory`, `symbolic link`, ...
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub links: u64,
}

impl StatLine {
    pub fn is_regular(&self) -> bool {
        self.kind == "regular file" || self.kind == "regular empty file"
    }

    /// Whether someone other than the owner may create, rename or remove entries (a
    /// directory writable by its group or by others, without the sticky bit).
    pub fn writable_by_others(&self) -> bool {
        self.mode & 0o022 != 0 && self.mode & 0o1000 == 0
    }
}

/// Parses the output of [`stat`].
pub fn parse_stat(output: &str) -> Option<StatLine> {
    let mut fields = output.trim_end().split('|');
    let kind = fields.next()?.to_string();
    let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let links = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some(StatLine {
        kind,
        mode,
        uid,
        gid,
        links,
    })
}

/// Parses `getent group` output (`name:x:GID:members`) to the GID.
pub fn parse_group_id(output: &str) -> Option<u32> {
    output.trim_end().split(':').nth(2)?.parse().ok()
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
