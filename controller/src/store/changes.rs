//! Configuration change transactions (who asked, what, when, how it ended) and each
//! device's part in them (state, diffs, health outcomes).

use super::{on_pool, read, Store, StoreResult};
use crate::domain::{ChangeState, TargetState};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct ChangeRow {
    pub id: String,
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub state: ChangeState,
    pub requested_by: String,
    pub request_id: String,
    pub change_set: String,
    pub options: String,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct ChangeTargetRow {
    pub device_id: String,
    #[sqlx(try_from = "String")]
    pub state: TargetState,
    pub prepare_report: Option<String>,
    pub commit_report: Option<String>,
    pub error: Option<String>,
    pub updated_at_ms: i64,
}

/// A change to one target's row; `None` fields keep their value.
#[derive(Clone, Debug, Default)]
pub struct TargetUpdate<'a> {
    pub state: TargetState,
    pub prepare_report: Option<&'a str>,
    pub commit_report: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl Store {
    /// Records a new transaction with every target `pending`, atomically.
    pub async fn insert_change(&self, change: &ChangeRow, devices: &[String]) -> StoreResult<()> {
        on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO change_transactions (id, kind, state, requested_by, request_id, \
                 change_set, options, error, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&change.id)
            .bind(&change.kind)
            .bind(change.state.as_str())
            .bind(&change.requested_by)
            .bind(&change.request_id)
            .bind(&change.change_set)
            .bind(&change.options)
            .bind(&change.error)
            .bind(change.created_at_ms)
            .bind(change.updated_at_ms)
            .execute(&mut *tx)
            .await?;
            for device in devices {
                sqlx::query(
                    "INSERT INTO change_targets (txn_id, device_id, state, updated_at_ms) \
                     VALUES ($1, $2, 'pending', $3)",
                )
                .bind(&change.id)
                .bind(device)
                .bind(change.created_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Moves a change to `state` if it is in one of the states that may precede it; `false`
    /// when it is not (someone else moved it first).
    pub async fn set_change_state(
        &self,
        id: &str,
        state: ChangeState,
        error: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let from = state.predecessors();
        if from.is_empty() {
            return Ok(false);
        }
        let params: Vec<String> = (0..from.len()).map(|n| format!("${}", n + 5)).collect();
        let sql = format!(
            "UPDATE change_transactions SET state = $2, error = COALESCE($3, error), \
             updated_at_ms = $4 WHERE id = $1 AND state IN ({})",
            params.join(", ")
        );
        let moved = on_pool!(&self.writer, |p| {
            let mut query = sqlx::query(&sql)
                .bind(id)
                .bind(state.as_str())
                .bind(error)
                .bind(now_ms);
            for predecessor in from {
                query = query.bind(predecessor.as_str());
            }
            query.execute(p).await.map(|done| done.rows_affected() > 0)
        })?;
        Ok(moved)
    }

    /// Updates a target if it is in `update.state` or a state that may precede it (see
    /// [`TargetState::predecessors`]); `false` when it had moved on.
    pub async fn update_change_target(
        &self,
        id: &str,
        device_id: &str,
        update: TargetUpdate<'_>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let from = update.state.predecessors();
        let params: Vec<String> = (0..=from.len()).map(|n| format!("${}", n + 8)).collect();
        let sql = format!(
            "UPDATE change_targets SET state = $3, \
             prepare_report = COALESCE($4, prepare_report), \
             commit_report = COALESCE($5, commit_report), \
             error = COALESCE($6, error), updated_at_ms = $7 \
             WHERE txn_id = $1 AND device_id = $2 AND state IN ({})",
            params.join(", ")
        );
        let moved = on_pool!(&self.writer, |p| {
            let mut query = sqlx::query(&sql)
                .bind(id)
                .bind(device_id)
                .bind(update.state.as_str())
                .bind(update.prepare_report)
                .bind(update.commit_report)
                .bind(update.error)
                .bind(now_ms)
                .bind(update.state.as_str());
            for predecessor in from {
                query = query.bind(predecessor.as_str());
            }
            query.execute(p).await.map(|done| done.rows_affected() > 0)
        })?;
        Ok(moved)
    }

    /// Changes in one of `states`, oldest first.
    pub async fn changes_in(
        &self,
        states: &[ChangeState],
        limit: i64,
    ) -> StoreResult<Vec<ChangeRow>> {
        let params: Vec<String> = (0..states.len()).map(|n| format!("${}", n + 2)).collect();
        let sql = format!(
            "SELECT * FROM change_transactions WHERE state IN ({}) \
             ORDER BY updated_at_ms LIMIT $1",
            params.join(", ")
        );
        Ok(read!(self, |p| {
            let mut query = sqlx::query_as::<_, ChangeRow>(&sql).bind(limit);
            for state in states {
                query = query.bind(state.as_str());
            }
            query.fetch_all(p).await
        })?)
    }

    pub async fn change(&self, id: &str) -> StoreResult<Option<(ChangeRow, Vec<ChangeTargetRow>)>> {
        let change = read!(self, |p| sqlx::query_as::<_, ChangeRow>(
            "SELECT * FROM change_transactions WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await)?;
        let Some(change) = change else {
            return Ok(None);
        };
        let targets = read!(self, |p| sqlx::query_as::<_, ChangeTargetRow>(
            "SELECT device_id, state, prepare_report, commit_report, error, updated_at_ms \
             FROM change_targets WHERE txn_id = $1 ORDER BY device_id"
        )
        .bind(id)
        .fetch_all(p)
        .await)?;
        Ok(Some((change, targets)))
    }

    /// Newest first, optionally only those touching `device_id`.
    pub async fn changes(
        &self,
        device_id: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ChangeRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, ChangeRow>(
            "SELECT * FROM change_transactions t WHERE $1 IS NULL OR EXISTS \
             (SELECT 1 FROM change_targets c WHERE c.txn_id = t.id AND c.device_id = $1) \
             ORDER BY created_at_ms DESC, id DESC LIMIT $2"
        )
        .bind(device_id)
        .bind(limit)
        .fetch_all(p)
        .await)?)
    }
}
