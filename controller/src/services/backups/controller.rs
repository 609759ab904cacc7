//! The controller itself as a backup target: its database — SQLite by its online backup,
//! PostgreSQL by `pg_dump` with a passfile — with its CA (`pki/`) and SSH identity (`ssh/`),
//! backed up and drilled by the controller with restic on its own machine, through the same
//! host engine as any host (`hostops::backup::execute` over a local runner). Restoring a
//! controller is part of DR: a drill proves the copy opens and the keys are there.

use std::path::Path;
use std::str::FromStr;

use infrastructor_hostops::backup::source::{DatabaseName, PostgresSource};
use infrastructor_hostops::backup::Source;
use infrastructor_hostops::backup::{self, BackupAnswer, BackupPolicy, BackupRequest, SecretFile};
use infrastructor_hostops::checks::LocalRunner;
use infrastructor_hostops::names::{AccountName, ManagedPath};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fleet::host::backup_error;
use crate::services::Services;

/// `{"kind": "controller"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ControllerKind {
    Controller,
}

/// The controller's own data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControllerSource {
    pub kind: ControllerKind,
    /// With PostgreSQL: the passfile `pg_dump` reads, a name in `[controller_backups]`
    /// `password_dir` (the database URL's password is never written anywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passfile: Option<SecretFile>,
}

fn managed(path: &Path, what: &str) -> Result<ManagedPath> {
    let text = path
        .to_str()
        .ok_or_else(|| Error::invalid(format!("the {what} path is not UTF-8")))?;
    ManagedPath::new(text).map_err(|e| Error::invalid(format!("the {what} path: {e}")))
}

impl Services {
    /// The controller's data directory, absolute.
    fn data_dir(&self) -> Result<std::path::PathBuf> {
        std::fs::canonicalize(&self.config.data_dir)
            .map_err(|e| Error::Unavailable(format!("the data directory: {e}")))
    }

    /// What the controller's own backups may read and write: its data directory, the
    /// `[controller_backups]` password directory, its staging below the data directory.
    pub(super) fn controller_policy(&self) -> Result<BackupPolicy> {
        let data = self.data_dir()?;
        let mut policy = self.config.controller_backups.clone();
        policy.sources.push(managed(&data, "data directory")?);
        if policy.staging == BackupPolicy::default().staging {
            policy.staging = managed(&data.join("backup-staging"), "staging")?;
        }
        Ok(policy)
    }

    /// The host-side source the controller's data is: its database, with its keys.
    pub(super) fn controller_source(&self, source: &ControllerSource) -> Result<Source> {
        let data = self.data_dir()?;
        let with = vec![
            managed(&data.join("pki"), "CA")?,
            managed(&data.join("ssh"), "SSH identity")?,
        ];
        let Some(url) = &self.config.database_url else {
            let path = managed(&data.join("infrastructor.db"), "database")?;
            return Ok(Source::Sqlite { path, with });
        };
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("the database URL: {e}")))?;
        let passfile = source.passfile.clone().ok_or_else(|| {
            Error::invalid(
                "the controller's PostgreSQL database is dumped with a passfile: name one \
                 (`passfile`) in [controller_backups] password_dir",
            )
        })?;
        let user = AccountName::new(options.get_username())
            .map_err(|e| Error::invalid(format!("the database user: {e}")))?;
        let database = DatabaseName::new(options.get_database().unwrap_or("postgres"))
            .map_err(|e| Error::invalid(format!("the database name: {e}")))?;
        Ok(Source::Postgres(PostgresSource {
            host: options.get_host().to_string(),
            port: options.get_port(),
            user,
            database,
            passfile: Some(passfile),
            with,
        }))
    }

    /// One request about the controller's own data, run here.
    pub(super) async fn controller_backup(&self, request: &BackupRequest) -> Result<BackupAnswer> {
        let policy = self.controller_policy()?;
        backup::execute(&LocalRunner, &policy, request)
            .await
            .map_err(backup_error)
    }
}
