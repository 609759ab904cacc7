//! What happened to each backup target: every backup, check, drill and restore, with its
//! outcome. "Verified", the RPO and the RTO are all read from these rows.

use super::{on_pool, read, Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct BackupRunRow {
    pub id: String,
    pub target: String,
    /// backup, check, drill, restore.
    pub kind: String,
    pub device_id: String,
    pub job_id: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub passed: bool,
    pub snapshot: Option<String>,
    pub snapshot_at_ms: Option<i64>,
    pub restore_ms: Option<i64>,
    /// JSON.
    pub details: String,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, target, kind, device_id, job_id, started_at_ms, finished_at_ms, \
                       passed, snapshot, snapshot_at_ms, restore_ms, details, error";

impl Store {
    pub async fn record_backup_run(&self, run: &BackupRunRow) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO backup_runs ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        on_pool!(&self.writer, |p| sqlx::query(&sql)
            .bind(&run.id)
            .bind(&run.target)
            .bind(&run.kind)
            .bind(&run.device_id)
            .bind(&run.job_id)
            .bind(run.started_at_ms)
            .bind(run.finished_at_ms)
            .bind(run.passed)
            .bind(&run.snapshot)
            .bind(run.snapshot_at_ms)
            .bind(run.restore_ms)
            .bind(&run.details)
            .bind(&run.error)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A target's runs, newest first; only of `kind` when given.
    pub async fn backup_runs(
        &self,
        target: &str,
        kind: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<BackupRunRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backup_runs WHERE target = $1 \
             AND ($2 IS NULL OR kind = $2) ORDER BY finished_at_ms DESC, id DESC LIMIT $3"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, BackupRunRow>(&sql)
            .bind(target)
            .bind(kind)
            .bind(limit)
            .fetch_all(p)
            .await)?)
    }

    /// How many runs of `kind` a target has had (a check's rotation continues from it).
    pub async fn count_backup_runs(&self, target: &str, kind: &str) -> StoreResult<i64> {
        Ok(read!(self, |p| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM backup_runs WHERE target = $1 AND kind = $2"
        )
        .bind(target)
        .bind(kind)
        .fetch_one(p)
        .await)?)
    }

    /// The newest snapshot a passing drill verified: (snapshot, taken at, drilled at).
    pub async fn newest_verified(&self, target: &str) -> StoreResult<Option<BackupRunRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backup_runs WHERE target = $1 AND kind = 'drill' \
             AND passed AND snapshot_at_ms IS NOT NULL \
             ORDER BY snapshot_at_ms DESC, finished_at_ms DESC LIMIT 1"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, BackupRunRow>(&sql)
            .bind(target)
            .fetch_optional(p)
            .await)?)
    }
}
