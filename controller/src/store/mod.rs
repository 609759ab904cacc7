//! Persistent state behind one type, [`Store`], on SQLite (embedded default) or PostgreSQL.
//!
//! Queries are written once with `$N` parameters (both drivers bind them by number) and run
//! on either pool through [`on_pool!`]; only bulk sample inserts differ per backend (multi-row
//! `INSERT` on SQLite, `UNNEST` arrays on PostgreSQL). Times are Unix milliseconds (`i64`)
//! everywhere, so no type differs between the backends.

mod alerts;
mod analytics;
mod approvals;
mod audit;
mod backups;
mod change_journals;
mod changes;
mod checks;
mod devices;
mod dr;
mod jobs;
mod metrics;
mod performance;
mod routing;
mod tokens;
mod versioned;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use alerts::{
    AlertRow, Delivery, MaintenanceRow, NewNotification, NotificationRow, SilenceRow,
};
pub use analytics::{DayRow, NamedSeries, RollupRow, ShareRow, StoreUsage, TierUsage};
pub use approvals::ApprovalRow;
pub use audit::{AuditFilter, AuditRow};
pub use backups::BackupRunRow;
pub use change_journals::{ChangeJournalRow, JournalSave};
pub use changes::{ChangeRow, ChangeTargetRow, TargetUpdate};
pub use checks::CheckRow;
pub use devices::{DeviceRow, NewDevice};
pub use dr::DrStepRow;
pub use jobs::{EventWrite, JobEnd, JobEventRow, JobLock, JobRow, JobStepRow, JobWrite, StepWrite};
pub use metrics::{
    BatchToIngest, Bucket, IngestOutcome, IngestSample, LatestSample, Resolution, RetentionCutoffs,
    SeriesRow,
};
pub use routing::RoutedCallRow;
pub use tokens::{ApiTokenRow, IssuedCertificateRow, JoinTokenError, NewApiTokenRow};
pub use versioned::{ApplicationRow, Declared, DeclaredRow};

use crate::error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open database {location}: {message}")]
    Open { location: String, message: String },
    #[error("{0}")]
    Conflict(String),
    /// A failure shared by every batch of a group commit (the original error is logged once).
    #[error("{message}")]
    Group { kind: ErrorKind, message: String },
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => ErrorKind::Unavailable,
            Self::Database(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                ErrorKind::Conflict
            }
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Open { .. } => ErrorKind::Unavailable,
            Self::Group { kind, .. } => *kind,
            _ => ErrorKind::Internal,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to whichever pool (or connection) `$pool` holds; the body is
/// compiled once per backend.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// [`on_pool!`] on the read pool, retrying transient failures (a reset connection, a pool
/// timeout, a busy database) under [`crate::recovery`]'s policy: a read is always safe to repeat.
macro_rules! read {
    ($store:expr, |$p:ident| $body:expr) => {
        $crate::recovery::retry_read(|| async { on_pool!(&$store.reader, |$p| $body) }).await
    };
}
pub(crate) use read;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// device → series name → canonical labels → series id. Nested so a lookup borrows `&str` at
/// every level (no allocation per sample). Filled after commits, so a rolled-back insert is
/// never cached.
pub(crate) type SeriesIds = HashMap<String, HashMap<String, HashMap<String, i64>>>;
type SeriesCache = Mutex<SeriesIds>;

pub struct Store {
    /// SQLite allows one writer at a time; a one-connection write pool queues writers in the
    /// pool instead of failing with "database is locked". On PostgreSQL both are one pool.
    writer: Pool,
    reader: Pool,
    series_ids: SeriesCache,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it. The file is
    /// created 0600 (and tightened to it), so its `-wal` and `-shm` files, which SQLite
    /// creates with the database's mode, are private too.
    pub async fn open_sqlite(path: &Path) -> StoreResult<Self> {
        let private = |e: std::io::Error| StoreError::Open {
            location: path.display().to_string(),
            message: format!("making the database file private: {e}"),
        };
        infrastructor_hostops::fsutil::ensure_private_file(path).map_err(private)?;
        for suffix in ["-wal", "-shm"] {
            let companion = PathBuf::from(format!("{}{suffix}", path.display()));
            if companion.exists() {
                infrastructor_hostops::fsutil::ensure_private_file(&companion).map_err(private)?;
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged batch must survive power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let open_error = |e: sqlx::Error| StoreError::Open {
            location: path.display().to_string(),
            message: e.to_string(),
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await
            .map_err(open_error)?;
        Ok(Self::from_pools(Pool::Sqlite(writer), Pool::Sqlite(reader)))
    }

    /// Connects to PostgreSQL at `url` and migrates it.
    pub async fn open_postgres(url: &str) -> StoreResult<Self> {
        let open_error = |message: String| StoreError::Open {
            location: redact_url(url),
            message,
        };
        let options = PgConnectOptions::from_str(url).map_err(|e| open_error(e.to_string()))?;
        // One direct connection first: a pool would only say "timed out", this says why.
        {
            use sqlx::Connection;
            let probe = tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::PgConnection::connect_with(&options),
            )
            .await
            .map_err(|_| open_error("connection timed out after 10s".into()))?
            .map_err(|e| open_error(e.to_string()))?;
            let _ = probe.close().await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let pool = Pool::Postgres(pool);
        Ok(Self::from_pools(pool.clone(), pool))
    }

    fn from_pools(writer: Pool, reader: Pool) -> Self {
        Self {
            writer,
            reader,
            series_ids: Mutex::new(HashMap::new()),
        }
    }

    /// How many group-commit writers suit this backend: SQLite has one writer connection.
    pub fn ingest_writers(&self) -> usize {
        match self.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.writer {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(&self.reader, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Direct access for the benchmark's raw bulk-load baseline.
    pub fn write_pool(&self) -> &Pool {
        &self.writer
    }

    pub async fn close(&self) {
        on_pool!(&self.reader, |p| p.close().await);
        on_pool!(&self.writer, |p| p.close().await);
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl StoreError {
    /// A short, client-safe description (no hostnames, no SQL).
    pub fn kind_label(&self) -> &'static str {
        match self.kind() {
            ErrorKind::Unavailable => "connection failed or timed out",
            ErrorKind::Conflict => "conflict",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/infra"),
            "postgres://app:***@db:5432/infra"
        );
        assert_eq!(redact_url("postgres://db/infra"), "postgres://db/infra");
    }
}
