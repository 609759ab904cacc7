//! Alerts and what is said about them: each alert's persisted state, the notification outbox
//! (written in the same transaction as the alerts it is about), silences and maintenance
//! windows, devices in maintenance, and the leases that let one controller do work for all.

use super::{on_pool, read, Store, StoreResult};

/// The silence insert, on a pool or in a transaction of either backend.
macro_rules! insert_silence {
    ($executor:expr, $silence:expr) => {
        sqlx::query(
            "INSERT INTO silences (id, scope, schedule, reason, created_by, created_at_ms, \
             expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&$silence.id)
        .bind(&$silence.scope)
        .bind(&$silence.schedule)
        .bind(&$silence.reason)
        .bind(&$silence.created_by)
        .bind($silence.created_at_ms)
        .bind($silence.expires_at_ms)
        .execute($executor)
        .await
        .map(|_| ())
    };
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct AlertRow {
    pub alert_key: String,
    pub rule: String,
    pub device_id: String,
    pub subject: String,
    pub severity: String,
    pub summary: String,
    /// JSON object.
    pub labels: String,
    /// JSON: the state machine's record.
    pub record: String,
    pub announced: String,
    pub suppressed: Option<String>,
    pub updated_at_ms: i64,
}

/// A notification to queue: for one channel, about one device's alerts.
pub struct NewNotification {
    pub channel: String,
    pub device_id: String,
    pub body: String,
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct NotificationRow {
    pub id: i64,
    pub channel: String,
    pub device_id: String,
    pub body: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub sent_at_ms: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct SilenceRow {
    pub id: String,
    pub scope: String,
    pub schedule: String,
    pub reason: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub ended_by: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct MaintenanceRow {
    pub device_id: String,
    pub reason: String,
    pub started_by: String,
    pub started_at_ms: i64,
    pub until_ms: i64,
    /// JSON: what was stopped, in order.
    pub stopped: String,
    pub silence_id: String,
}

const ALERT_COLUMNS: &str = "alert_key, rule, device_id, subject, severity, summary, labels, \
     record, announced, suppressed, updated_at_ms";
const NOTIFICATION_COLUMNS: &str = "id, channel, device_id, body, state, attempts, \
     next_attempt_at_ms, last_error, created_at_ms, sent_at_ms";
const SILENCE_COLUMNS: &str = "id, scope, schedule, reason, created_by, created_at_ms, \
     expires_at_ms, ended_at_ms, ended_by";
const MAINTENANCE_COLUMNS: &str =
    "device_id, reason, started_by, started_at_ms, until_ms, stopped, silence_id";

impl Store {
    pub async fn alerts(&self) -> StoreResult<Vec<AlertRow>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts ORDER BY alert_key");
        Ok(read!(self, |p| sqlx::query_as::<_, AlertRow>(&sql)
            .fetch_all(p)
            .await)?)
    }

    /// One evaluation's outcome, atomically: the alerts that changed, those forgotten, and the
    /// notifications their changes call for. A crash before the commit leaves the previous
    /// evaluation in place, so the next one says the same things once.
    pub async fn save_evaluation(
        &self,
        changed: &[AlertRow],
        forgotten: &[String],
        outbox: &[NewNotification],
        now_ms: i64,
    ) -> StoreResult<()> {
        let upsert = format!(
            "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11) ON CONFLICT (alert_key) DO UPDATE SET severity = excluded.severity, \
             summary = excluded.summary, labels = excluded.labels, record = excluded.record, \
             announced = excluded.announced, suppressed = excluded.suppressed, \
             updated_at_ms = excluded.updated_at_ms"
        );
        on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            for row in changed {
                sqlx::query(&upsert)
                    .bind(&row.alert_key)
                    .bind(&row.rule)
                    .bind(&row.device_id)
                    .bind(&row.subject)
                    .bind(&row.severity)
                    .bind(&row.summary)
                    .bind(&row.labels)
                    .bind(&row.record)
                    .bind(&row.announced)
                    .bind(&row.suppressed)
                    .bind(row.updated_at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            for key in forgotten {
                sqlx::query("DELETE FROM alerts WHERE alert_key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
            for notification in outbox {
                sqlx::query(
                    "INSERT INTO notifications (channel, device_id, body, state, attempts, \
                     next_attempt_at_ms, created_at_ms) VALUES ($1, $2, $3, 'pending', 0, $4, $4)",
                )
                .bind(&notification.channel)
                .bind(&notification.device_id)
                .bind(&notification.body)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(())
    }

    /// Pending notifications due by `now_ms`, oldest first; each channel is a queue, so none
    /// is due while an older one of its channel waits for a retry.
    pub async fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRow>> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications n WHERE state = 'pending' \
             AND next_attempt_at_ms <= $1 AND NOT EXISTS (SELECT 1 FROM notifications e \
             WHERE e.channel = n.channel AND e.state = 'pending' AND e.id < n.id \
             AND e.next_attempt_at_ms > $1) ORDER BY id LIMIT $2"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, NotificationRow>(&sql)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(p)
            .await)?)
    }

    /// Notifications newest first, of one state (`pending`, `sent`, `dead`) or all.
    pub async fn notifications(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRow>> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE ($1 IS NULL OR state = $1) \
             ORDER BY id DESC LIMIT $2"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, NotificationRow>(&sql)
            .bind(state)
            .bind(limit)
            .fetch_all(p)
            .await)?)
    }

    pub async fn notification(&self, id: i64) -> StoreResult<Option<NotificationRow>> {
        let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1");
        Ok(read!(self, |p| sqlx::query_as::<_, NotificationRow>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    /// Records one delivery attempt: sent, to retry at `retry_at_ms`, or dead (neither).
    pub async fn record_delivery(
        &self,
        id: i64,
        attempts: i32,
        outcome: Delivery<'_>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (state, next, error, sent) = match outcome {
            Delivery::Sent => ("sent", now_ms, None, Some(now_ms)),
            Delivery::Retry { at_ms, error } => ("pending", at_ms, Some(error), None),
            Delivery::Dead { error } => ("dead", now_ms, Some(error), None),
            // A rate limit's wait is not an attempt.
            Delivery::Deferred { at_ms } => {
                return on_pool!(&self.writer, |p| sqlx::query(
                    "UPDATE notifications SET next_attempt_at_ms = $2 WHERE id = $1"
                )
                .bind(id)
                .bind(at_ms)
                .execute(p)
                .await
                .map(|_| ()))
                .map_err(Into::into)
            }
        };
        on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE notifications SET state = $2, attempts = $3, next_attempt_at_ms = $4, \
             last_error = $5, sent_at_ms = $6 WHERE id = $1"
        )
        .bind(id)
        .bind(state)
        .bind(attempts)
        .bind(next)
        .bind(error)
        .bind(sent)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Puts a dead notification back in the queue, due now; false if it is not dead.
    pub async fn requeue_notification(&self, id: i64, now_ms: i64) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at_ms = $2 \
             WHERE id = $1 AND state = 'dead'"
        )
        .bind(id)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected() == 1))?)
    }

    /// Deletes sent notifications older than `before_ms` (dead ones stay until retried).
    pub async fn expire_notifications(&self, before_ms: i64) -> StoreResult<u64> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "DELETE FROM notifications WHERE state = 'sent' AND created_at_ms < $1"
        )
        .bind(before_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
    }

    pub async fn insert_silence(&self, silence: &SilenceRow) -> StoreResult<()> {
        on_pool!(&self.writer, |p| insert_silence!(p, silence))?;
        Ok(())
    }

    /// Silences not ended early and not expired before `since_ms`, soonest expiry first.
    pub async fn silences(&self, since_ms: i64) -> StoreResult<Vec<SilenceRow>> {
        let sql = format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE ended_at_ms IS NULL \
             AND expires_at_ms > $1 ORDER BY expires_at_ms, id"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, SilenceRow>(&sql)
            .bind(since_ms)
            .fetch_all(p)
            .await)?)
    }

    pub async fn silence(&self, id: &str) -> StoreResult<Option<SilenceRow>> {
        let sql = format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = $1");
        Ok(read!(self, |p| sqlx::query_as::<_, SilenceRow>(&sql)
            .bind(id)
            .fetch_optional(p)
            .await)?)
    }

    /// Ends a silence early; false if it had already ended.
    pub async fn end_silence(&self, id: &str, by: &str, now_ms: i64) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE silences SET ended_at_ms = $3, ended_by = $2 \
             WHERE id = $1 AND ended_at_ms IS NULL"
        )
        .bind(id)
        .bind(by)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected() == 1))?)
    }

    /// Puts a device in maintenance with its silence, atomically (replacing an earlier entry,
    /// whose silence the caller has ended).
    pub async fn start_maintenance(
        &self,
        entry: &MaintenanceRow,
        silence: &SilenceRow,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO device_maintenance ({MAINTENANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, \
             $6, $7) ON CONFLICT (device_id) DO UPDATE SET reason = excluded.reason, \
             started_by = excluded.started_by, started_at_ms = excluded.started_at_ms, \
             until_ms = excluded.until_ms, stopped = excluded.stopped, \
             silence_id = excluded.silence_id"
        );
        on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            insert_silence!(&mut *tx, silence)?;
            sqlx::query(&sql)
                .bind(&entry.device_id)
                .bind(&entry.reason)
                .bind(&entry.started_by)
                .bind(entry.started_at_ms)
                .bind(entry.until_ms)
                .bind(&entry.stopped)
                .bind(&entry.silence_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(())
    }

    /// Records what the maintenance stopped so far (in order).
    pub async fn record_maintenance_stopped(
        &self,
        device_id: &str,
        stopped: &str,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE device_maintenance SET stopped = $2 WHERE device_id = $1"
        )
        .bind(device_id)
        .bind(stopped)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Takes a device out of maintenance; false if it was not in it.
    pub async fn end_maintenance(&self, device_id: &str) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "DELETE FROM device_maintenance WHERE device_id = $1"
        )
        .bind(device_id)
        .execute(p)
        .await
        .map(|r| r.rows_affected() == 1))?)
    }

    pub async fn maintenance(&self, device_id: &str) -> StoreResult<Option<MaintenanceRow>> {
        let sql =
            format!("SELECT {MAINTENANCE_COLUMNS} FROM device_maintenance WHERE device_id = $1");
        Ok(read!(self, |p| sqlx::query_as::<_, MaintenanceRow>(&sql)
            .bind(device_id)
            .fetch_optional(p)
            .await)?)
    }

    pub async fn all_maintenance(&self) -> StoreResult<Vec<MaintenanceRow>> {
        let sql = format!("SELECT {MAINTENANCE_COLUMNS} FROM device_maintenance ORDER BY until_ms");
        Ok(read!(self, |p| sqlx::query_as::<_, MaintenanceRow>(&sql)
            .fetch_all(p)
            .await)?)
    }

    /// Takes or renews lease `name` for `owner` until `until_ms`, if it is free, expired by
    /// `now_ms`, or already `owner`'s; true if `owner` holds it now.
    pub async fn hold_lease(
        &self,
        name: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO leases (name, owner, until_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms \
             WHERE leases.owner = excluded.owner OR leases.until_ms < $4"
        )
        .bind(name)
        .bind(owner)
        .bind(until_ms)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected() == 1))?)
    }
}

/// How one delivery attempt went.
pub enum Delivery<'a> {
    Sent,
    Retry {
        at_ms: i64,
        error: &'a str,
    },
    Dead {
        error: &'a str,
    },
    /// Held back by the channel's rate limit until `at_ms`.
    Deferred {
        at_ms: i64,
    },
}
