//! The steps of DR plan runs, each with its output, so later steps can use it and a resumed
//! run starts where the last one stopped.

use super::{on_pool, read, Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct DrStepRow {
    pub run_id: String,
    pub step_id: String,
    pub plan: String,
    pub revision: i64,
    pub position: i64,
    pub operation: String,
    pub state: String,
    /// JSON.
    pub output: String,
    pub error: Option<String>,
    pub job_id: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

const COLUMNS: &str = "run_id, step_id, plan, revision, position, operation, state, output, \
                       error, job_id, started_at_ms, finished_at_ms";

impl Store {
    /// Records a step's outcome (a step taken again after a crash replaces its record).
    pub async fn record_dr_step(&self, row: &DrStepRow) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO dr_steps ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (run_id, step_id) DO UPDATE SET state = excluded.state, \
             output = excluded.output, error = excluded.error, job_id = excluded.job_id, \
             started_at_ms = excluded.started_at_ms, finished_at_ms = excluded.finished_at_ms"
        );
        on_pool!(&self.writer, |p| sqlx::query(&sql)
            .bind(&row.run_id)
            .bind(&row.step_id)
            .bind(&row.plan)
            .bind(row.revision)
            .bind(row.position)
            .bind(&row.operation)
            .bind(&row.state)
            .bind(&row.output)
            .bind(&row.error)
            .bind(&row.job_id)
            .bind(row.started_at_ms)
            .bind(row.finished_at_ms)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A run's steps, in plan order.
    pub async fn dr_steps(&self, run_id: &str) -> StoreResult<Vec<DrStepRow>> {
        let sql = format!("SELECT {COLUMNS} FROM dr_steps WHERE run_id = $1 ORDER BY position");
        Ok(read!(self, |p| sqlx::query_as::<_, DrStepRow>(&sql)
            .bind(run_id)
            .fetch_all(p)
            .await)?)
    }
}
