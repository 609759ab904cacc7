//! Check reports (history per device and check) and detected capabilities.

use super::{on_pool, read, Store, StoreResult};
use crate::domain::CheckStatus;

#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize, PartialEq)]
pub struct CheckRow {
    pub check_name: String,
    #[sqlx(try_from = "String")]
    pub status: CheckStatus,
    pub message: String,
    pub evidence: String,
    pub checked_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct CurrentCheck {
    device_id: String,
    #[sqlx(flatten)]
    check: CheckRow,
}

impl Store {
    /// Stores one round of reports and the capabilities detected with it, atomically.
    pub async fn record_checks(
        &self,
        device_id: &str,
        capabilities_json: &str,
        reports: &[CheckRow],
        now_ms: i64,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "UPDATE devices SET capabilities = $2, capabilities_at_ms = $3 WHERE id = $1",
            )
            .bind(device_id)
            .bind(capabilities_json)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            for report in reports {
                sqlx::query(
                    "INSERT INTO check_reports (device_id, check_name, status, message, evidence, checked_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(device_id)
                .bind(&report.check_name)
                .bind(report.status.as_str())
                .bind(&report.message)
                .bind(&report.evidence)
                .bind(report.checked_at_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO check_latest (device_id, check_name, status, message, evidence, \
                     checked_at_ms, recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (device_id, check_name) DO UPDATE SET status = excluded.status, \
                     message = excluded.message, evidence = excluded.evidence, \
                     checked_at_ms = excluded.checked_at_ms, recorded_at_ms = excluded.recorded_at_ms",
                )
                .bind(device_id)
                .bind(&report.check_name)
                .bind(report.status.as_str())
                .bind(&report.message)
                .bind(&report.evidence)
                .bind(report.checked_at_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The newest report of every check of the device.
    pub async fn latest_checks(&self, device_id: &str) -> StoreResult<Vec<CheckRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, CheckRow>(
            "SELECT check_name, status, message, evidence, checked_at_ms FROM check_latest \
             WHERE device_id = $1 ORDER BY check_name"
        )
        .bind(device_id)
        .fetch_all(p)
        .await)?)
    }

    /// The checks of every live device's latest round (a check its newest round no longer
    /// reports, like a destroyed pool's, is left out), with the device ID.
    pub async fn current_checks(&self) -> StoreResult<Vec<(String, CheckRow)>> {
        let rows = read!(self, |p| {
            sqlx::query_as::<_, CurrentCheck>(
            "SELECT c.device_id, c.check_name, c.status, c.message, c.evidence, c.checked_at_ms \
             FROM check_latest c JOIN devices d ON d.id = c.device_id \
             WHERE d.revoked_at_ms IS NULL AND c.recorded_at_ms = d.capabilities_at_ms \
             ORDER BY c.device_id, c.check_name"
        )
        .fetch_all(p)
        .await
        })?;
        Ok(rows.into_iter().map(|r| (r.device_id, r.check)).collect())
    }

    /// Reports newest first, optionally of one check, at most `limit`.
    pub async fn check_history(
        &self,
        device_id: &str,
        check: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<CheckRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, CheckRow>(
            "SELECT check_name, status, message, evidence, checked_at_ms FROM check_reports \
             WHERE device_id = $1 AND ($2 IS NULL OR check_name = $2) ORDER BY id DESC LIMIT $3"
        )
        .bind(device_id)
        .bind(check)
        .bind(limit)
        .fetch_all(p)
        .await)?)
    }

    /// Capabilities as stored JSON and when they were detected.
    pub async fn capabilities(&self, device_id: &str) -> StoreResult<(String, Option<i64>)> {
        Ok(read!(self, |p| {
            sqlx::query_as::<_, (String, Option<i64>)>(
                "SELECT capabilities, capabilities_at_ms FROM devices WHERE id = $1",
            )
            .bind(device_id)
            .fetch_optional(p)
            .await
        })?
        .unwrap_or_else(|| ("[]".to_string(), None)))
    }

    /// Deletes reports older than `before_ms`, the newest ones included.
    pub async fn expire_checks(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM check_latest WHERE checked_at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM check_reports WHERE checked_at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(deleted)
        })?)
    }
}
