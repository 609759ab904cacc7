//! Configuration changes on agentless hosts: the agent's own change engine, with its host
//! primitives carried out over SSH through the same argv builders (`stat`, `realpath`, `dd
//! conv=fsync`, `mv -T`, `sync`). The journal and the originals live on the controller, so a
//! controller crash mid-change is finished on restart, as an agent's would be.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infrastructor_agent::change::host::{remote_staging_dir, staged_name};
use infrastructor_agent::change::journal::FileMeta;
use infrastructor_agent::change::spec::MAX_FILE_BYTES;
use infrastructor_agent::change::{ChangeEngine, ChangeError, ChangeHost, ChangePolicy, LiveFile};
use infrastructor_agent::checks::CommandRunner;
use infrastructor_agent::hostops::command::{self, CommandOutput, HostCommand};
use infrastructor_agent::hostops::names::ManagedPath;

use super::{SshDriver, SshTarget};

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One agentless host, as the change engine sees it.
pub struct SshChangeHost {
    driver: Arc<SshDriver>,
    target: SshTarget,
}

impl SshChangeHost {
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

    async fn read(&self, path: &ManagedPath) -> Result<LiveFile, ChangeError> {
        let stat = self
            .run(&command::stat(path), STEP_TIMEOUT)
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
        })
    }

    async fn stage(
        &self,
        txn_id: &str,
        index: usize,
        _local_copy: &Path,
        content: &[u8],
    ) -> Result<ManagedPath, ChangeError> {
        let dir = remote_staging_dir(txn_id)?;
        self.checked(command::make_private_dir(&dir)).await?;
        let path = dir
            .join(&staged_name(index))
            .map_err(|e| ChangeError::Internal(e.to_string()))?;
        self.checked(command::write_file(&path, content.to_vec()))
            .await?;
        Ok(path)
    }

    async fn unstage(&self, txn_id: &str) {
        if let Ok(dir) = remote_staging_dir(txn_id) {
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
        let temp = dir
            .join(&format!(".{}.infrastructor-tmp", path.file_name()))
            .map_err(|e| ChangeError::Internal(e.to_string()))?;
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

    async fn docker(&self) -> Result<bollard::Docker, ChangeError> {
        self.driver
            .docker(&self.target)
            .await
            .map_err(|e| ChangeError::Failed(e.to_string()))
    }
}

/// One change engine per agentless device, opened on first use; each keeps its journal under
/// `<data_dir>/changes/<device_id>`.
pub struct AgentlessChanges {
    driver: Arc<SshDriver>,
    policy: ChangePolicy,
    dir: PathBuf,
    engines: Mutex<HashMap<String, Arc<ChangeEngine<SshChangeHost>>>>,
}

impl AgentlessChanges {
    pub fn new(driver: Arc<SshDriver>, policy: ChangePolicy, dir: PathBuf) -> Self {
        Self {
            driver,
            policy,
            dir,
            engines: Mutex::default(),
        }
    }

    fn engines(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ChangeEngine<SshChangeHost>>>> {
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
    ) -> Result<Arc<ChangeEngine<SshChangeHost>>, ChangeError> {
        let mut engines = self.engines();
        if let Some(engine) = engines.get(device_id) {
            return Ok(engine.clone());
        }
        let host = SshChangeHost {
            driver: self.driver.clone(),
            target,
        };
        let engine = Arc::new(ChangeEngine::open(
            host,
            self.policy.clone(),
            &self.dir.join(device_id),
        )?);
        engines.insert(device_id.to_string(), engine.clone());
        Ok(engine)
    }

    /// Devices with a journal directory: transactions a previous run may have left open.
    pub fn devices_with_journals(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn open_engines(&self) -> Vec<(String, Arc<ChangeEngine<SshChangeHost>>)> {
        self.engines()
            .iter()
            .map(|(id, engine)| (id.clone(), engine.clone()))
            .collect()
    }
}
