//! The audit log: one append-only row per mutation, from any surface.

use super::{on_pool, read, Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub principal: String,
    pub principal_name: String,
    pub surface: String,
    pub request_id: String,
    pub operation: String,
    pub arguments: String,
    pub outcome: String,
    pub status: i32,
    pub detail: Option<String>,
}

/// Filters for [`Store::audit_records`]; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter<'a> {
    pub principal: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// Only records with a smaller ID (paging backwards).
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Appends `record` (its `id` is assigned by the database).
    pub async fn append_audit(&self, record: &AuditRow) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO audit_log (at_ms, principal, principal_name, surface, request_id, \
             operation, arguments, outcome, status, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )
        .bind(record.at_ms)
        .bind(&record.principal)
        .bind(&record.principal_name)
        .bind(&record.surface)
        .bind(&record.request_id)
        .bind(&record.operation)
        .bind(&record.arguments)
        .bind(&record.outcome)
        .bind(record.status)
        .bind(&record.detail)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Newest first.
    pub async fn audit_records(&self, filter: &AuditFilter<'_>) -> StoreResult<Vec<AuditRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, AuditRow>(
            "SELECT * FROM audit_log WHERE ($1 IS NULL OR principal = $1) \
             AND ($2 IS NULL OR operation = $2) AND ($3 IS NULL OR request_id = $3) \
             AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        )
        .bind(filter.principal)
        .bind(filter.operation)
        .bind(filter.request_id)
        .bind(filter.before_id)
        .bind(filter.limit)
        .fetch_all(p)
        .await)?)
    }
}
