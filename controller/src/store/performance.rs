//! Flushed operation timings (`operation_metrics`): one row per flush and operation.

use std::collections::HashMap;

use super::{on_pool, read, Store, StoreResult};
use crate::performance::{Aggregate, OperationKey};

#[derive(sqlx::FromRow)]
struct Row {
    surface: String,
    operation: String,
    count: i64,
    errors: i64,
    sum_ms: f64,
    max_ms: f64,
    buckets: String,
}

impl Store {
    /// Writes one window's aggregates in one transaction.
    pub async fn insert_operation_metrics(
        &self,
        window_start_ms: i64,
        window_end_ms: i64,
        aggregates: &HashMap<OperationKey, Aggregate>,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            for (key, aggregate) in aggregates {
                let buckets = serde_json::to_string(&aggregate.buckets).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO operation_metrics (window_start_ms, window_end_ms, surface, \
                     operation, count, errors, sum_ms, max_ms, buckets) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(window_start_ms)
                .bind(window_end_ms)
                .bind(&key.surface)
                .bind(&key.operation)
                .bind(aggregate.count as i64)
                .bind(aggregate.errors as i64)
                .bind(aggregate.sum_ms)
                .bind(aggregate.max_ms)
                .bind(buckets)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every flushed window that ended after `since_ms`.
    pub async fn operation_metrics_since(
        &self,
        since_ms: i64,
    ) -> StoreResult<Vec<(OperationKey, Aggregate)>> {
        let rows = read!(self, |p| sqlx::query_as::<_, Row>(
            "SELECT surface, operation, count, errors, sum_ms, max_ms, buckets \
             FROM operation_metrics WHERE window_end_ms > $1"
        )
        .bind(since_ms)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let key = OperationKey {
                    surface: row.surface,
                    operation: row.operation,
                };
                let aggregate = Aggregate {
                    count: row.count.max(0) as u64,
                    errors: row.errors.max(0) as u64,
                    sum_ms: row.sum_ms,
                    max_ms: row.max_ms,
                    buckets: serde_json::from_str(&row.buckets).unwrap_or_default(),
                };
                (key, aggregate)
            })
            .collect())
    }

    /// Retention: drops windows that ended before `cutoff_ms`.
    pub async fn delete_operation_metrics_before(&self, cutoff_ms: i64) -> StoreResult<u64> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "DELETE FROM operation_metrics WHERE window_end_ms < $1"
        )
        .bind(cutoff_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
    }
}
