//! restic, run with an argv: the repositories a backup may go to (a local path, SFTP through
//! the host's SSH, a REST server), the commands (init, backup, snapshots, ls, dump, restore,
//! check, forget, stats), and parsers of their output. The same argv runs on an agent host
//! and, through the SSH driver, on an agentless one.
//!
//! The repository password is always a file restic reads itself (`--password-file`): it is
//! never in an argv, in the environment, or in anything these functions return. A REST URL
//! may not carry credentials, since an argv is visible to every user of the host.

use serde::{Deserialize, Serialize};

use crate::command::HostCommand;
use crate::names::{AccountName, InvalidName, ManagedPath};

const PROGRAM: &str = "restic";
/// The tag on every snapshot this project makes, beside `target=<name>`.
pub const TAG: &str = "infrastructor";

/// Where snapshots go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Repository {
    /// A directory on the host itself (or a mounted disk).
    Local { path: String },
    /// A directory on another host, through the host's own `ssh` with a pinned host key.
    Sftp {
        user: String,
        host: String,
        #[serde(default = "ssh_port")]
        port: u16,
        path: String,
        /// The private key `ssh` uses (default: the account's own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// The known_hosts file holding the server's key; unknown keys are refused.
        known_hosts: String,
    },
    /// A restic REST server, `https://host:8000/repo` (`http://` only to loopback).
    Rest { url: String },
}

fn ssh_port() -> u16 {
    22
}

/// A repository checked once, ready for argv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    location: String,
    /// Extra options (`-o sftp.command=…`).
    options: Vec<String>,
}

/// A backup target's name, as it appears in the `target=<name>` tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct TargetName(String);

impl TargetName {
    pub fn new(value: &str) -> Result<Self, InvalidName> {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if valid {
            Ok(Self(value.to_string()))
        } else {
            Err(InvalidName {
                kind: "backup target name",
                value: value.to_string(),
                rule: "1-64 letters, digits, '_', '-', '.', starting with a letter or digit",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn tag(&self) -> String {
        format!("target={}", self.0)
    }
}

impl TryFrom<String> for TargetName {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<TargetName> for String {
    fn from(value: TargetName) -> Self {
        value.0
    }
}

/// A snapshot ID as restic prints it (8 to 64 hex digits), or `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// The target's newest snapshot.
    pub fn latest() -> Self {
        Self("latest".into())
    }

    pub fn new(value: &str) -> Result<Self, InvalidName> {
        let hex = (8..=64).contains(&value.len()) && value.chars().all(|c| c.is_ascii_hexdigit());
        if hex || value == "latest" {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(InvalidName {
                kind: "snapshot ID",
                value: value.to_string(),
                rule: "8-64 hexadecimal digits, or latest",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<SnapshotId> for String {
    fn from(value: SnapshotId) -> Self {
        value.0
    }
}

/// What is wrong with a repository's settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repository: {0}")]
pub struct InvalidRepository(pub String);

/// A token of `ssh`'s command line as restic splits it: no space, quote or backslash.
fn ssh_token(what: &str, value: &str) -> Result<(), InvalidRepository> {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"'\"\\`$;&|<>".contains(c));
    if plain {
        Ok(())
    } else {
        Err(InvalidRepository(format!(
            "{what} {value:?} may not contain spaces, quotes or shell characters"
        )))
    }
}

fn host_name(host: &str) -> Result<(), InvalidRepository> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.starts_with(|c: char| c.is_ascii_alphanumeric())
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    if valid {
        Ok(())
    } else {
        Err(InvalidRepository(format!(
            "host {host:?}: a name or address (letters, digits, '-', '.', ':')"
        )))
    }
}

fn path(what: &str, value: &str) -> Result<ManagedPath, InvalidRepository> {
    ManagedPath::new(value).map_err(|e| InvalidRepository(format!("{what}: {e}")))
}

impl Repository {
    /// Checks the settings and builds the arguments that name the repository.
    pub fn checked(&self) -> Result<Repo, InvalidRepository> {
        match self {
            Self::Local { path: dir } => Ok(Repo {
                location: path("path", dir)?.as_str().to_string(),
                options: Vec::new(),
            }),
            Self::Sftp {
                user,
                host,
                port,
                path: dir,
                identity,
                known_hosts,
            } => {
                AccountName::new(user).map_err(|e| InvalidRepository(e.to_string()))?;
                host_name(host)?;
                let dir = path("path", dir)?;
                let known_hosts = path("known_hosts", known_hosts)?;
                ssh_token("known_hosts", known_hosts.as_str())?;
                // restic runs this itself, splitting it on spaces: every part is checked above.
                let mut ssh = format!(
                    "ssh -p {port} -o BatchMode=yes -o StrictHostKeyChecking=yes \
                     -o UserKnownHostsFile={}",
                    known_hosts.as_str()
                );
                if let Some(identity) = identity {
                    let identity = path("identity", identity)?;
                    ssh_token("identity", identity.as_str())?;
                    ssh += &format!(" -o IdentitiesOnly=yes -i {}", identity.as_str());
                }
                ssh += &format!(" {user}@{host} -s sftp");
                Ok(Repo {
                    location: format!("sftp:{user}@{host}:{}", dir.as_str()),
                    options: vec!["-o".into(), format!("sftp.command={ssh}")],
                })
            }
            Self::Rest { url } => {
                let (scheme, rest) = url
                    .split_once("://")
                    .ok_or_else(|| InvalidRepository(format!("{url:?} is not a URL")))?;
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.contains('@') {
                    return Err(InvalidRepository(
                        "a REST URL may not carry credentials: an argv is visible to every \
                         user of the host"
                            .into(),
                    ));
                }
                let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
                let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
                if !(scheme == "https" || (scheme == "http" && loopback)) {
                    return Err(InvalidRepository(
                        "a REST URL is https:// (http:// only to loopback)".into(),
                    ));
                }
                ssh_token("URL", url)?;
                Ok(Repo {
                    location: format!("rest:{url}"),
                    options: Vec::new(),
                })
            }
        }
    }
}

/// How many snapshots `forget` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Keep {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Default for Keep {
    fn default() -> Self {
        Self {
            daily: 7,
            weekly: 4,
            monthly: 12,
        }
    }
}

fn restic(repo: &Repo, password_file: &ManagedPath, args: Vec<String>) -> HostCommand {
    let mut argv: Vec<String> = vec![
        "--repo".into(),
        repo.location.clone(),
        "--password-file".into(),
        password_file.as_str().to_string(),
        "--no-cache".into(),
    ];
    argv.extend(repo.options.iter().cloned());
    argv.extend(args);
    HostCommand::new(PROGRAM, argv)
}

fn strings<const N: usize>(parts: [&str; N]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn init(repo: &Repo, password_file: &ManagedPath) -> HostCommand {
    restic(repo, password_file, strings(["init"]))
}

/// A backup of `paths`, tagged as this project's and the target's.
pub fn backup(
    repo: &Repo,
    password_file: &ManagedPath,
    target: &TargetName,
    paths: &[ManagedPath],
) -> HostCommand {
    let mut args = strings(["--json", "backup", "--tag", TAG, "--tag"]);
    args.push(target.tag());
    args.push("--".into());
    args.extend(paths.iter().map(|p| p.as_str().to_string()));
    restic(repo, password_file, args)
}

/// The target's snapshots, oldest first.
pub fn snapshots(repo: &Repo, password_file: &ManagedPath, target: &TargetName) -> HostCommand {
    let mut args = strings(["--json", "snapshots", "--tag"]);
    args.push(target.tag());
    restic(repo, password_file, args)
}

/// Every node of a snapshot, one JSON object per line.
pub fn ls(repo: &Repo, password_file: &ManagedPath, snapshot: &SnapshotId) -> HostCommand {
    let mut args = strings(["--json", "ls", "--"]);
    args.push(snapshot.as_str().to_string());
    restic(repo, password_file, args)
}

/// One file's bytes as the repository holds them.
pub fn dump(
    repo: &Repo,
    password_file: &ManagedPath,
    snapshot: &SnapshotId,
    file: &ManagedPath,
) -> HostCommand {
    let mut args = strings(["dump", "--"]);
    args.push(snapshot.as_str().to_string());
    args.push(file.as_str().to_string());
    restic(repo, password_file, args)
}

/// A snapshot restored under `into` (its paths recreated below it).
pub fn restore(
    repo: &Repo,
    password_file: &ManagedPath,
    snapshot: &SnapshotId,
    into: &ManagedPath,
) -> HostCommand {
    let mut args = strings(["restore", "--target"]);
    args.push(into.as_str().to_string());
    args.push("--".into());
    args.push(snapshot.as_str().to_string());
    restic(repo, password_file, args)
}

/// [`restore`], then restic re-reads every restored file and checks it against the
/// repository's content hashes.
pub fn restore_verified(
    repo: &Repo,
    password_file: &ManagedPath,
    snapshot: &SnapshotId,
    into: &ManagedPath,
) -> HostCommand {
    let mut args = strings(["restore", "--verify", "--target"]);
    args.push(into.as_str().to_string());
    args.push("--".into());
    args.push(snapshot.as_str().to_string());
    restic(repo, password_file, args)
}

/// The repository's structure, and the data of group `group` of `groups` (1-based), so that
/// rotating `group` reads all of it over `groups` runs.
pub fn check(repo: &Repo, password_file: &ManagedPath, group: u32, groups: u32) -> HostCommand {
    let groups = groups.max(1);
    let group = group.clamp(1, groups);
    let mut args = strings(["check"]);
    args.push(format!("--read-data-subset={group}/{groups}"));
    restic(repo, password_file, args)
}

/// Retention for the target's snapshots, then a prune of what nothing references.
pub fn forget(
    repo: &Repo,
    password_file: &ManagedPath,
    target: &TargetName,
    keep: Keep,
) -> HostCommand {
    let mut args = strings(["--json", "forget", "--tag"]);
    args.push(target.tag());
    for (flag, n) in [
        ("--keep-daily", keep.daily),
        ("--keep-weekly", keep.weekly),
        ("--keep-monthly", keep.monthly),
    ] {
        args.push(flag.into());
        args.push(n.to_string());
    }
    args.push("--prune".into());
    restic(repo, password_file, args)
}

/// A snapshot's size as restored.
pub fn stats(repo: &Repo, password_file: &ManagedPath, snapshot: &SnapshotId) -> HostCommand {
    let mut args = strings(["--json", "stats", "--"]);
    args.push(snapshot.as_str().to_string());
    restic(repo, password_file, args)
}

/// Why restic failed, as far as it says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResticError {
    #[error("there is no restic repository at that location (init it first)")]
    NoRepository,
    #[error("wrong repository password (or no key for it)")]
    WrongPassword,
    #[error("the repository is locked by another restic process: {0}")]
    Locked(String),
    #[error("restic's output could not be read: {0}")]
    Unreadable(String),
    #[error("restic failed: {0}")]
    Failed(String),
}

/// The error restic's stderr describes.
pub fn classify(stderr: &str) -> ResticError {
    let first = |needle: &str| stderr.lines().find(|l| l.contains(needle)).map(str::trim);
    if let Some(line) = first("already locked") {
        return ResticError::Locked(line.to_string());
    }
    if stderr.contains("wrong password") {
        return ResticError::WrongPassword;
    }
    if stderr.contains("Is there a repository at the following location?")
        || stderr.contains("unable to open config file")
    {
        return ResticError::NoRepository;
    }
    // restic (Go) crashes on some damaged trees: the panic line says what, not the stack.
    if let Some(line) = first("panic:") {
        return ResticError::Failed(
            format!("restic crashed: {line}")
                .chars()
                .take(300)
                .collect(),
        );
    }
    let fatal = first("Fatal:").unwrap_or_else(|| stderr.lines().last().unwrap_or("").trim());
    ResticError::Failed(fatal.chars().take(300).collect())
}

/// What a backup did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackupSummary {
    pub snapshot_id: String,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub data_added: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    pub total_duration: f64,
}

/// The summary line of `backup --json`.
pub fn parse_backup(stdout: &str) -> Result<BackupSummary, ResticError> {
    #[derive(Deserialize)]
    struct Line {
        message_type: String,
    }
    stdout
        .lines()
        .rev()
        .find(|l| serde_json::from_str::<Line>(l).is_ok_and(|line| line.message_type == "summary"))
        .ok_or_else(|| ResticError::Unreadable("no summary line in backup's output".into()))
        .and_then(|l| {
            serde_json::from_str(l).map_err(|e| ResticError::Unreadable(format!("summary: {e}")))
        })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub short_id: String,
    /// RFC 3339.
    pub time: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub hostname: String,
}

impl Snapshot {
    /// Unix milliseconds of `time`.
    pub fn time_ms(&self) -> Option<i64> {
        let parsed =
            time::OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339)
                .ok()?;
        Some((parsed.unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// `snapshots --json`: the snapshots, oldest first.
pub fn parse_snapshots(stdout: &str) -> Result<Vec<Snapshot>, ResticError> {
    serde_json::from_str(stdout.trim())
        .map_err(|e| ResticError::Unreadable(format!("snapshots: {e}")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    #[serde(other)]
    Other,
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    #[serde(default)]
    pub size: Option<u64>,
}

/// `ls --json`: every node of the snapshot (the snapshot's own line left out).
pub fn parse_ls(stdout: &str) -> Result<Vec<Node>, ResticError> {
    #[derive(Deserialize)]
    struct Kind {
        struct_type: String,
    }
    let mut nodes = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let kind: Kind =
            serde_json::from_str(line).map_err(|e| ResticError::Unreadable(format!("ls: {e}")))?;
        if kind.struct_type == "node" {
            nodes.push(
                serde_json::from_str(line)
                    .map_err(|e| ResticError::Unreadable(format!("ls node: {e}")))?,
            );
        }
    }
    Ok(nodes)
}

/// What `check` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckVerdict {
    pub ok: bool,
    /// The lines that name a problem (a pack whose hash does not match, a missing blob…).
    pub problems: Vec<String>,
}

/// `check`'s output (text: restic 0.14 has no JSON for it) and its exit code.
pub fn parse_check(output: &str, exit_code: Option<i32>) -> CheckVerdict {
    const PROGRESS: [&str; 9] = [
        "using temporary cache",
        "create exclusive lock",
        "load indexes",
        "check all packs",
        "check snapshots",
        "read group",
        "read all data",
        "no errors were found",
        "[",
    ];
    let problems: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !PROGRESS.iter().any(|p| l.starts_with(p)))
        .map(|l| l.chars().take(300).collect())
        .collect();
    let ok = exit_code == Some(0) && output.contains("no errors were found");
    CheckVerdict { ok, problems }
}

/// What `forget` kept and removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ForgetSummary {
    pub kept: usize,
    pub removed: usize,
}

/// `forget --json`: one group per host and paths.
pub fn parse_forget(stdout: &str) -> Result<ForgetSummary, ResticError> {
    #[derive(Deserialize)]
    struct Group {
        #[serde(default)]
        keep: Option<Vec<serde_json::Value>>,
        #[serde(default)]
        remove: Option<Vec<serde_json::Value>>,
    }
    // `--prune` prints its own report after the JSON.
    let json = stdout.lines().find(|l| l.starts_with('[')).unwrap_or("[]");
    let groups: Vec<Group> =
        serde_json::from_str(json).map_err(|e| ResticError::Unreadable(format!("forget: {e}")))?;
    let count = |v: &Option<Vec<serde_json::Value>>| v.as_ref().map_or(0, Vec::len);
    Ok(ForgetSummary {
        kept: groups.iter().map(|g| count(&g.keep)).sum(),
        removed: groups.iter().map(|g| count(&g.remove)).sum(),
    })
}

/// A snapshot's restore size: bytes, and files and directories together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub total_size: u64,
    pub total_file_count: u64,
}

pub fn parse_stats(stdout: &str) -> Result<SnapshotStats, ResticError> {
    serde_json::from_str(stdout.trim()).map_err(|e| ResticError::Unreadable(format!("stats: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Repo {
        Repository::Local {
            path: "/srv/backups".into(),
        }
        .checked()
        .unwrap()
    }

    #[test]
    fn the_password_is_a_file_and_positionals_follow_a_double_dash() {
        let password = ManagedPath::new("/etc/infrastructor/restic-password").unwrap();
        let target = TargetName::new("etc").unwrap();
        let paths = [ManagedPath::new("/etc").unwrap()];
        let command = backup(&local(), &password, &target, &paths);
        assert_eq!(
            command.argv(),
            [
                "restic",
                "--repo",
                "/srv/backups",
                "--password-file",
                "/etc/infrastructor/restic-password",
                "--no-cache",
                "--json",
                "backup",
                "--tag",
                "infrastructor",
                "--tag",
                "target=etc",
                "--",
                "/etc"
            ]
        );
        let snapshot = SnapshotId::new("0619cf5a").unwrap();
        let into = ManagedPath::new("/var/tmp/drill").unwrap();
        let argv = restore(&local(), &password, &snapshot, &into)
            .argv()
            .join(" ");
        assert!(
            argv.ends_with("restore --target /var/tmp/drill -- 0619cf5a"),
            "{argv}"
        );
        let argv = check(&local(), &password, 9, 4).argv().join(" ");
        assert!(argv.ends_with("check --read-data-subset=4/4"), "{argv}");
    }

    #[test]
    fn repositories_refuse_what_could_inject_or_leak() {
        let sftp = Repository::Sftp {
            user: "backup".into(),
            host: "nas.home".into(),
            port: 2222,
            path: "/tank/restic".into(),
            identity: Some("/etc/infrastructor/backup_ed25519".into()),
            known_hosts: "/etc/infrastructor/known_hosts".into(),
        }
        .checked()
        .unwrap();
        assert_eq!(sftp.location, "sftp:backup@nas.home:/tank/restic");
        assert_eq!(
            sftp.options[1],
            "sftp.command=ssh -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=yes \
             -o UserKnownHostsFile=/etc/infrastructor/known_hosts -o IdentitiesOnly=yes \
             -i /etc/infrastructor/backup_ed25519 backup@nas.home -s sftp"
        );
        let bad = |repo: Repository| repo.checked().unwrap_err().0;
        let sftp_with = |host: &str, known_hosts: &str| Repository::Sftp {
            user: "backup".into(),
            host: host.into(),
            port: 22,
            path: "/r".into(),
            identity: None,
            known_hosts: known_hosts.into(),
        };
        assert!(bad(sftp_with("nas -oProxyCommand=x", "/k")).contains("host"));
        assert!(bad(sftp_with("nas", "/my keys/kh")).contains("spaces"));
        let rest = |url: &str| Repository::Rest { url: url.into() };
        assert!(bad(rest("https://u:secret@backup.example.net/r")).contains("credentials"));
        assert!(bad(rest("http://backup.example.net/r")).contains("https://"));
        assert_eq!(
            rest("http://127.0.0.1:8000/r").checked().unwrap().location,
            "rest:http://127.0.0.1:8000/r"
        );
        assert!(bad(Repository::Local {
            path: "/srv/../etc".into()
        })
        .contains(".."));
        assert!(TargetName::new("-rf").is_err() && TargetName::new("etc/x").is_err());
        assert!(SnapshotId::new("latest").is_ok() && SnapshotId::new("--help").is_err());
    }

    #[test]
    fn errors_are_told_apart_by_what_restic_says() {
        assert_eq!(
            classify("Fatal: wrong password or no key found\n"),
            ResticError::WrongPassword
        );
        assert_eq!(
            classify(
                "Fatal: unable to open config file: stat /x/config: no such file or \
                 directory\nIs there a repository at the following location?\n/x\n"
            ),
            ResticError::NoRepository
        );
        assert!(matches!(
            classify("unable to create lock in backend: repository is already locked exclusively by PID 1"),
            ResticError::Locked(_)
        ));
        assert_eq!(
            classify("panic: runtime error: index out of range\n\ngoroutine 1:\nruntime/asm_amd64.s:1594\n"),
            ResticError::Failed("restic crashed: panic: runtime error: index out of range".into())
        );
        assert_eq!(
            classify("Fatal: repository contains errors\n"),
            ResticError::Failed("Fatal: repository contains errors".into())
        );
    }
}
