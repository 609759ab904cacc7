//! Mutating requests held for a human's decision.

use super::{on_pool, read, Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct ApprovalRow {
    pub id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub operation: String,
    pub arguments: String,
    pub preview: String,
    pub requested_by: String,
    pub requested_by_name: String,
    pub requested_scope: String,
    pub requested_by_owner: String,
    /// Where it was asked: `rest` or `mcp`.
    pub surface: String,
    pub request_id: String,
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<i64>,
    pub result: Option<String>,
}

impl Store {
    pub async fn insert_approval(&self, row: &ApprovalRow) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO approvals (id, created_at_ms, expires_at_ms, operation, arguments, \
             preview, requested_by, requested_by_name, requested_scope, request_id, state, \
             requested_by_owner, surface) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12)"
        )
        .bind(&row.id)
        .bind(row.created_at_ms)
        .bind(row.expires_at_ms)
        .bind(&row.operation)
        .bind(&row.arguments)
        .bind(&row.preview)
        .bind(&row.requested_by)
        .bind(&row.requested_by_name)
        .bind(&row.requested_scope)
        .bind(&row.request_id)
        .bind(&row.requested_by_owner)
        .bind(&row.surface)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn approval(&self, id: &str) -> StoreResult<Option<ApprovalRow>> {
        Ok(read!(self, |p| {
            sqlx::query_as::<_, ApprovalRow>("SELECT * FROM approvals WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await
        })?)
    }

    /// Newest first, optionally only in `state`.
    pub async fn approvals(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ApprovalRow>> {
        Ok(read!(self, |p| {
            sqlx::query_as::<_, ApprovalRow>(
                "SELECT * FROM approvals WHERE ($1 IS NULL OR state = $1) \
             ORDER BY created_at_ms DESC, id DESC LIMIT $2",
            )
            .bind(state)
            .bind(limit)
            .fetch_all(p)
            .await
        })?)
    }

    /// Moves a pending approval to `state`; false if it was no longer pending (someone else
    /// decided first), so a request is executed at most once.
    pub async fn decide_approval(
        &self,
        id: &str,
        state: &str,
        decided_by: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE approvals SET state = $2, decided_by = $3, decided_at_ms = $4 \
             WHERE id = $1 AND state = 'pending'"
        )
        .bind(id)
        .bind(state)
        .bind(decided_by)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected() == 1))?)
    }

    pub async fn set_approval_result(&self, id: &str, result: &str) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE approvals SET result = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(result)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
