//! Configuration changes on agentless hosts: the agent's own change engine, with its host
//! primitives carried out over SSH through the same argv builders (`stat`, `realpath`,
//! `mktemp`, `dd oflag=nofollow conv=fsync`, `chown -h`, `mv -T`, `sync`). The journal and the
//! originals live in the controllers' database ([`super::journals`]), so a change a crashed
//! controller left mid-way is finished by the next one alive, as an agent's would be.
//!
//! Without file descriptors across SSH, safety comes from who may write where: a managed
//! directory (and every directory above it) must be writable only by root or the SSH user,
//! and it must still resolve to itself when a file is installed; temp files and staging
//! directories are made by `mktemp` (exclusive, unpredictable names) and checked to be ours.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infrastructor_hostops::change::host::{staged_name, ProbeStream};
use infrastructor_hostops::change::journal::FileMeta;
use infrastructor_hostops::change::spec::MAX_FILE_BYTES;
use infrastructor_hostops::change::{
    ChangeEngine, ChangeError, ChangeHost, ChangePolicy, LiveFile,
};
use infrastructor_hostops::checks::CommandRunner;
use infrastructor_hostops::command::{self, CommandOutput, HostCommand, StatLine};
use infrastructor_hostops::names::ManagedPath;

use super::journals::DbJournals;
use super::routing::Routing;
use super::{SshDriver, SshTarget};
use crate::store::Store;

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where staging directories are made on agentless hosts.
fn staging_parent() -> ManagedPath {
    #[allow(clippy::expect_used)] // a constant absolute path
    ManagedPath::new("/var/tmp").expect("staging parent")
}

/// One agentless host, as the change engine sees it.
pub struct SshChangeHost {
    driver: Arc<SshDriver>,
    target: SshTarget,
    /// The user commands run as, once asked (`id -u`).
    user_id: tokio::sync::OnceCell<u32>,
    /// Each preparing transaction's staging directory (made by `mktemp -d`).
    staging: Mutex<HashMap<String, ManagedPath>>,
}

impl SshChangeHost {
    fn new(driver: Arc<SshDriver>, target: SshTarget) -> Self {
        Self {
            driver,
            target,
            user_id: tokio::sync::OnceCell::new(),
            staging: Mutex::default(),
        }
    }

    /// A command that must succeed; its stderr is the error otherwise.
    async fn checked(&self, command: HostCommand) -> Result<CommandOutput, ChangeError> {
        let output = self
            .run(&command, STEP_TIMEOUT)
            .await
            .map_err(ChangeError::Failed)?;
        if output.code == Some(0) {
            Ok(output)
        } else {
            Err(ChangeError::Failed(format!(
                "{} on {}: {}",
                command.program(),
                self.target.host,
                output.stderr.trim()
            )))
        }
    }

    async fn user_id(&self) -> Result<u32, ChangeError> {
        self.user_id
            .get_or_try_init(|| async {
                let output = self.checked(command::user_id()).await?;
                output.stdout.trim().parse().map_err(|_| {
                    ChangeError::Failed(format!("unexpected `id -u` output {:?}", output.stdout))
                })
            })
            .await
            .copied()
    }

    /// `stat` of each path, in order.
    async fn stat(&self, paths: &[&ManagedPath]) -> Result<Vec<StatLine>, ChangeError> {
        let output = self.checked(command::stat(paths)).await?;
        let lines: Vec<StatLine> = output
            .stdout
            .lines()
            .filter_map(command::parse_stat)
            .collect();
        if lines.len() != paths.len() {
            return Err(ChangeError::Failed(format!(
                "unexpected stat output on {}",
                self.target.host
            )));
        }
        Ok(lines)
    }

    /// The path a `mktemp` printed, checked to be a fresh entry of ours directly in `dir`.
    async fn made_temp(
        &self,
        output: CommandOutput,
        dir: &ManagedPath,
        want_dir: bool,
    ) -> Result<ManagedPath, ChangeError> {
        let path = ManagedPath::new(output.stdout.trim_end_matches('\n'))
            .map_err(|e| ChangeError::Failed(format!("mktemp printed a bad path: {e}")))?;
        if path.parent() != *dir {
            return Err(ChangeError::Failed(format!(
                "mktemp made {path} outside {dir}"
            )));
        }
        let me = self.user_id().await?;
        let stat = self.stat(&[&path]).await?.remove(0);
        let kind_ok = if want_dir {
            stat.kind == "directory"
        } else {
            stat.is_regular()
        };
        if !kind_ok || stat.uid != me || stat.mode & 0o077 != 0 || stat.links > 2 {
            let _ = self.run(&command::remove_file(&path), STEP_TIMEOUT).await;
            return Err(ChangeError::Refused(format!(
                "{path} on {} is not a private entry of ours; refusing to use it",
                self.target.host
            )));
        }
        Ok(path)
    }

    /// Refuses a directory whose entries someone else could plant or swap: every directory
    /// from `/` to `dir` must be owned by root or by us and not writable by others (sticky
    /// directories excepted), and `dir` must still resolve to itself.
    async fn check_writers(&self, dir: &ManagedPath) -> Result<(), ChangeError> {
        let resolved = self.resolve(dir).await?;
        if resolved != *dir {
            return Err(ChangeError::Refused(format!(
                "{dir} now resolves to {resolved}: a directory on its path was replaced"
            )));
        }
        let mut chain = vec![dir.clone()];
        while let Some(parent) = chain.last().and_then(|d| d.parent_if_any()) {
            chain.push(parent);
        }
        let me = self.user_id().await?;
        let refs: Vec<&ManagedPath> = chain.iter().collect();
        for (path, stat) in chain.iter().zip(self.stat(&refs).await?) {
            if stat.kind != "directory"
                || (stat.uid != 0 && stat.uid != me)
                || stat.writable_by_others()
            {
                return Err(ChangeError::Refused(format!(
                    "{path} on {} may be written by other users (owner {}, mode {:04o}); \
                     agentless changes need directories only root or the SSH user can write",
                    self.target.host, stat.uid, stat.mode
                )));
            }
        }
        Ok(())
    }

    async fn resolve(&self, dir: &ManagedPath) -> Result<ManagedPath, ChangeError> {
        let output = self
            .run(&command::realpath(dir), STEP_TIMEOUT)
            .await
            .map_err(ChangeError::Failed)?;
        if output.code != Some(0) {
            return Err(ChangeError::Refused(format!(
                "directory {dir} cannot be resolved: {}",
                output.stderr.trim()
            )));
        }
        ManagedPath::new(output.stdout.trim_end_matches('\n'))
            .map_err(|e| ChangeError::Refused(e.to_string()))
    }

    fn staging(&self) -> std::sync::MutexGuard<'_, HashMap<String, ManagedPath>> {
        match self.staging.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl CommandRunner for SshChangeHost {
    async fn run(&self, command: &HostCommand, timeout: Duration) -> Result<CommandOutput, String> {
        self.driver
            .run(&self.target, command, timeout)
            .await
            .map_err(|e| e.to_string())
    }
}

impl ChangeHost for SshChangeHost {
    async fn canonical_dir(&self, dir: &ManagedPath) -> Result<ManagedPath, ChangeError> {
        self.resolve(dir).await
    }

    async fn read(&self, path: &ManagedPath) -> Result<LiveFile, ChangeError> {
        self.check_writers(&path.parent()).await?;
        let stat = self
            .run(&command::stat(&[path]), STEP_TIMEOUT)
            .await
            .map_err(ChangeError::Failed)?;
        if stat.code != Some(0) {
            if stat.stderr.contains("No such file") {
                return Ok(LiveFile::Absent);
            }
            return Err(ChangeError::Failed(format!(
                "stat {path}: {}",
                stat.stderr.trim()
            )));
        }
        let line = command::parse_stat(&stat.stdout)
            .ok_or_else(|| ChangeError::Failed(format!("unexpected stat output for {path}")))?;
        if line.kind == "symbolic link" {
            return Err(ChangeError::Refused(format!(
                "{path} is a symbolic link; only regular files are managed"
            )));
        }
        if !line.is_regular() {
            return Err(ChangeError::Refused(format!(
                "{path} is not a regular file (directory, device, FIFO or socket)"
            )));
        }
        let content = self.checked(command::read_file(path)).await?;
        // Output travels as text: refuse what would not survive the trip byte for byte.
        if content.truncated || content.stdout.len() > MAX_FILE_BYTES {
            return Err(ChangeError::Refused(format!(
                "{path} is larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        if content.stdout.contains('\u{FFFD}') {
            return Err(ChangeError::Refused(format!(
                "{path} is not UTF-8 text; agentless hosts manage text files only"
            )));
        }
        Ok(LiveFile::Regular {
            content: content.stdout.into_bytes(),
            meta: FileMeta {
                mode: line.mode,
                owner: Some((line.uid, line.gid)),
            },
            links: line.links,
        })
    }

    async fn stage(
        &self,
        txn_id: &str,
        index: usize,
        _local_copy: Option<&Path>,
        content: &[u8],
        reader: Option<(u32, u32)>,
    ) -> Result<ManagedPath, ChangeError> {
        let existing = self.staging().get(txn_id).cloned();
        let dir = match existing {
            Some(dir) => dir,
            None => {
                // A fresh, unpredictable, private directory: never one someone prepared.
                let parent = staging_parent();
                let made = self
                    .checked(command::make_temp_dir(
                        &parent,
                        &format!("infrastructor-staging-{txn_id}"),
                    ))
                    .await?;
                let dir = self.made_temp(made, &parent, true).await?;
                self.staging().insert(txn_id.to_string(), dir.clone());
                dir
            }
        };
        let path = dir
            .join(&staged_name(index))
            .map_err(|e| ChangeError::Internal(e.to_string()))?;
        self.checked(command::write_file(&path, content.to_vec()))
            .await?;
        if let Some((uid, gid)) = reader {
            // Only the validator's account (and root) may read the staged copy.
            self.checked(command::chmod(0o400, &path)).await?;
            self.checked(command::chown(uid, gid, &path)).await?;
            self.checked(command::chown(uid, gid, &dir)).await?;
        }
        Ok(path)
    }

    async fn unstage(&self, txn_id: &str, _local_dir: Option<&Path>) {
        let dir = self.staging().remove(txn_id);
        if let Some(dir) = dir {
            let _ = self.run(&command::remove_dir(&dir), STEP_TIMEOUT).await;
        }
    }

    async fn install(
        &self,
        path: &ManagedPath,
        content: &[u8],
        meta: FileMeta,
    ) -> Result<(), ChangeError> {
        let dir = path.parent();
        // Checked again at commit: the directory is the one prepared, and only trusted users
        // can plant or swap entries in it.
        self.check_writers(&dir).await?;
        let made = self
            .checked(command::make_temp_file(
                &dir,
                &format!(".{}", path.file_name()),
            ))
            .await?;
        let temp = self.made_temp(made, &dir, false).await?;
        let swapped = async {
            self.checked(command::write_file(&temp, content.to_vec()))
                .await?;
            self.checked(command::chmod(meta.mode, &temp)).await?;
            if let Some((uid, gid)) = meta.owner {
                self.checked(command::chown(uid, gid, &temp)).await?;
            }
            self.checked(command::rename(&temp, path)).await?;
            self.checked(command::sync(&dir)).await
        };
        if let Err(error) = swapped.await {
            let _ = self.run(&command::remove_file(&temp), STEP_TIMEOUT).await;
            return Err(error);
        }
        Ok(())
    }

    async fn remove(&self, path: &ManagedPath) -> Result<(), ChangeError> {
        self.checked(command::remove_file(path)).await?;
        self.checked(command::sync(&path.parent())).await?;
        Ok(())
    }

    async fn connect_tcp(&self, host: &str, port: u16) -> Result<ProbeStream, String> {
        let stream = self
            .driver
            .tcp_stream(&self.target, host, port)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(stream))
    }

    async fn docker(&self) -> Result<bollard::Docker, ChangeError> {
        self.driver
            .docker(&self.target)
            .await
            .map_err(|e| ChangeError::Failed(e.to_string()))
    }
}

/// An agentless device's change engine.
pub type AgentlessEngine = ChangeEngine<SshChangeHost, DbJournals>;

/// One change engine per agentless device, opened on first use; each keeps its journal in
/// the database.
pub struct AgentlessChanges {
    driver: Arc<SshDriver>,
    policy: ChangePolicy,
    store: Arc<Store>,
    routing: Arc<Routing>,
    engines: Mutex<HashMap<String, Arc<AgentlessEngine>>>,
}

impl AgentlessChanges {
    pub fn new(
        driver: Arc<SshDriver>,
        policy: ChangePolicy,
        store: Arc<Store>,
        routing: Arc<Routing>,
    ) -> Self {
        Self {
            driver,
            policy,
            store,
            routing,
            engines: Mutex::default(),
        }
    }

    fn engines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AgentlessEngine>>> {
        match self.engines.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The device's engine, opened with its pinned SSH target.
    pub fn engine(
        &self,
        device_id: &str,
        target: SshTarget,
    ) -> Result<Arc<AgentlessEngine>, ChangeError> {
        let mut engines = self.engines();
        if let Some(engine) = engines.get(device_id) {
            return Ok(engine.clone());
        }
        let host = SshChangeHost::new(self.driver.clone(), target);
        let journals = DbJournals::new(
            self.store.clone(),
            self.routing.clone(),
            device_id.to_string(),
        );
        let engine = Arc::new(ChangeEngine::with_journals(
            host,
            self.policy.clone(),
            journals,
        )?);
        engines.insert(device_id.to_string(), engine.clone());
        Ok(engine)
    }

    /// Devices with a transaction that still holds its files, on any replica: the ones
    /// whose deadlines and interrupted steps must be watched.
    pub async fn devices_with_live_journals(&self) -> Result<Vec<String>, ChangeError> {
        self.store
            .devices_with_live_journals()
            .await
            .map_err(|e| ChangeError::Internal(format!("change journal store: {e}")))
    }
}
