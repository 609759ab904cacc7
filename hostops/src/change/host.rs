//! Where a change is applied. The engine's logic is the same for this host (the agent) and for
//! an agentless host over SSH (the controller); only these primitives differ.

use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::journal::FileMeta;
use super::spec::MAX_FILE_BYTES;
use super::ChangeError;
use crate::checks::{CommandRunner, LocalRunner};
use crate::command::{CommandOutput, HostCommand};
use crate::fsutil::{ManagedDir, ReadFile};
use crate::names::ManagedPath;

/// A live file as found: absent, or a regular file (anything else is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveFile {
    Absent,
    Regular {
        content: Vec<u8>,
        meta: FileMeta,
        /// Hard links to the same content; the engine manages only files with one.
        links: u64,
    },
}

/// The primitives a change needs from a host. Commands (validators, unit actions, owner
/// lookups) go through [`CommandRunner`], so they are the same argv everywhere.
pub trait ChangeHost: CommandRunner + Send + Sync {
    /// `dir` with every symlink resolved; an error when it does not exist.
    fn canonical_dir(
        &self,
        dir: &ManagedPath,
    ) -> impl Future<Output = Result<ManagedPath, ChangeError>> + Send;

    /// The file at `path`, without following a final symlink. Symlinks, devices, FIFOs,
    /// sockets and directories are refused. `path`'s directory is the resolved one and must
    /// still be reachable without following a link.
    fn read(
        &self,
        path: &ManagedPath,
    ) -> impl Future<Output = Result<LiveFile, ChangeError>> + Send;

    /// Makes `content` readable by validators on the host and returns its path there.
    /// `local_copy` is the engine's own staged copy when its journal is on this machine's
    /// disk (already durable). With `reader`, the validators run as that `(uid, gid)`, and
    /// only it (and root) can read the copy.
    fn stage(
        &self,
        txn_id: &str,
        index: usize,
        local_copy: Option<&Path>,
        content: &[u8],
        reader: Option<(u32, u32)>,
    ) -> impl Future<Output = Result<ManagedPath, ChangeError>> + Send;

    /// Removes whatever [`stage`](Self::stage) put on the host.
    /// `local_dir` is the engine's directory of the transaction, as for `stage`.
    fn unstage(&self, txn_id: &str, local_dir: Option<&Path>) -> impl Future<Output = ()> + Send;

    /// Replaces `path` atomically: temp file in the same directory (created exclusively,
    /// never through a link) → fsync → rename → fsync the directory. The directory is checked
    /// again here, not only at prepare.
    fn install(
        &self,
        path: &ManagedPath,
        content: &[u8],
        meta: FileMeta,
    ) -> impl Future<Output = Result<(), ChangeError>> + Send;

    /// Removes `path` (rollback of a file that did not exist) and syncs the directory.
    fn remove(&self, path: &ManagedPath) -> impl Future<Output = Result<(), ChangeError>> + Send;

    /// The host's Docker engine, for container actions and health checks.
    fn docker(&self) -> impl Future<Output = Result<bollard::Docker, ChangeError>> + Send;

    /// A TCP connection opened *from the host* to `host:port`, for health probes: the agent
    /// connects itself; for an agentless host the connection is tunnelled over SSH, so
    /// "127.0.0.1" is the managed host's loopback, never the controller's.
    fn connect_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<ProbeStream, String>> + Send;
}

/// A probe's connection, whatever carries it.
pub type ProbeStream = Box<dyn ProbeIo>;

/// What a probe needs of a connection.
pub trait ProbeIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ProbeIo for T {}

/// This host, as seen by the agent.
pub struct LocalHost;

impl CommandRunner for LocalHost {
    async fn run(
        &self,
        command: &HostCommand,
        timeout: std::time::Duration,
    ) -> Result<CommandOutput, String> {
        LocalRunner.run(command, timeout).await
    }
}

impl ChangeHost for LocalHost {
    async fn canonical_dir(&self, dir: &ManagedPath) -> Result<ManagedPath, ChangeError> {
        let resolved = std::fs::canonicalize(dir.as_path()).map_err(|e| {
            ChangeError::Refused(format!("directory {dir} cannot be resolved: {e}"))
        })?;
        if !resolved.is_dir() {
            return Err(ChangeError::Refused(format!("{dir} is not a directory")));
        }
        managed(&resolved)
    }

    async fn read(&self, path: &ManagedPath) -> Result<LiveFile, ChangeError> {
        let dir = open_managed_dir(&path.parent())?;
        let file = dir
            .read(path.file_name(), MAX_FILE_BYTES)
            .map_err(|e| ChangeError::Refused(format!("{path}: {e}")))?;
        let Some(ReadFile { content, metadata }) = file else {
            return Ok(LiveFile::Absent);
        };
        if content.len() > MAX_FILE_BYTES {
            return Err(ChangeError::Refused(format!(
                "{path} is larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        Ok(LiveFile::Regular {
            content,
            meta: FileMeta {
                mode: metadata.permissions().mode() & 0o7777,
                owner: Some((metadata.uid(), metadata.gid())),
            },
            links: metadata.nlink(),
        })
    }

    async fn stage(
        &self,
        txn_id: &str,
        index: usize,
        local_copy: Option<&Path>,
        content: &[u8],
        reader: Option<(u32, u32)>,
    ) -> Result<ManagedPath, ChangeError> {
        let local_copy = local_copy.ok_or_else(|| {
            ChangeError::Internal("the local host stages from a journal on its own disk".into())
        })?;
        let Some(reader) = reader else {
            // The engine's staged copy is on this host already.
            return managed(local_copy);
        };
        // The journal is root's alone: the validator's account gets its own private copy, in
        // a directory named for this engine's transaction, created fresh (never one found).
        let dir = validate_dir(txn_id, local_copy);
        let opened = if index == 0 {
            crate::fsutil::private_dir_for(&dir, reader)
        } else {
            ManagedDir::open_owned_by(&dir, reader.0)
        }
        .map_err(|e| ChangeError::io("staging for validators in", &dir, e))?;
        opened
            .replace(&staged_name(index), content, 0o400, Some(reader))
            .map_err(|e| ChangeError::io("staging for validators in", &dir, e))?;
        managed(&dir.join(staged_name(index)))
    }

    async fn unstage(&self, txn_id: &str, local_dir: Option<&Path>) {
        let Some(local_dir) = local_dir else { return };
        let dir = validate_dir(txn_id, &local_dir.join("staged"));
        let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if is_dir {
            if let Err(error) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), %error, "validator staging not removed");
            }
        }
    }

    async fn install(
        &self,
        path: &ManagedPath,
        content: &[u8],
        meta: FileMeta,
    ) -> Result<(), ChangeError> {
        // The directory is opened again, without following links: one swapped for a symlink
        // since prepare is refused, not written through.
        open_managed_dir(&path.parent())?
            .replace(path.file_name(), content, meta.mode, meta.owner)
            .map_err(|e| ChangeError::io("installing", path.as_path(), e))
    }

    async fn remove(&self, path: &ManagedPath) -> Result<(), ChangeError> {
        open_managed_dir(&path.parent())?
            .remove(path.file_name())
            .map_err(|e| ChangeError::io("removing", path.as_path(), e))
    }

    async fn docker(&self) -> Result<bollard::Docker, ChangeError> {
        crate::docker::connect()
            .await
            .map_err(|e| ChangeError::Failed(e.to_string()))
    }

    async fn connect_tcp(&self, host: &str, port: u16) -> Result<ProbeStream, String> {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(stream))
    }
}

/// Where a transaction's files are staged for an unprivileged validator: in the temp
/// directory, named for the transaction and for the engine's own journal directory (several
/// engines may run one transaction on one machine).
fn validate_dir(txn_id: &str, local_copy: &Path) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let engine = local_copy.parent().unwrap_or(local_copy);
    let digest = hex::encode(Sha256::digest(engine.as_os_str().as_encoded_bytes()));
    std::env::temp_dir().join(format!("infrastructor-validate-{txn_id}-{}", &digest[..16]))
}

fn open_managed_dir(dir: &ManagedPath) -> Result<ManagedDir, ChangeError> {
    ManagedDir::open(dir.as_path()).map_err(|e| ChangeError::Refused(format!("{dir}: {e}")))
}

fn managed(path: &Path) -> Result<ManagedPath, ChangeError> {
    let text = path
        .to_str()
        .ok_or_else(|| ChangeError::Refused(format!("{} is not UTF-8", path.display())))?;
    ManagedPath::new(text).map_err(|e| ChangeError::Refused(e.to_string()))
}

/// Used by tests and the local CLI to see where the engine keeps a transaction.
pub fn staged_name(index: usize) -> String {
    format!("staged-{index}")
}

pub fn original_name(index: usize) -> String {
    format!("original-{index}")
}
