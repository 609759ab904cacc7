//! Durable jobs: the job rows (who asked for which operation, its state, result, lease), their
//! steps, their event stream, the devices they work on and the locks they hold.
//!
//! Every write a job's runner makes is conditional on it still owning the job's lease, so a
//! replica that lost its lease (paused, partitioned) cannot write over its successor.

use super::{on_pool, read, Store, StoreError, StoreResult};
use crate::domain::{JobState, StepState};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub operation: String,
    #[sqlx(try_from = "String")]
    pub state: JobState,
    pub surface: String,
    pub requested_by: String,
    pub requested_by_name: String,
    pub requested_scope: String,
    pub requested_owner: String,
    pub request_id: String,
    pub arguments: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub progress_done: i64,
    pub progress_total: i64,
    pub cancel_requested_at_ms: Option<i64>,
    pub owner: Option<String>,
    pub lease_expires_ms: Option<i64>,
    pub attempts: i64,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct JobStepRow {
    pub seq: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub state: StepState,
    pub error: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct JobEventRow {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub data: String,
}

/// A resource a job changes on a device (e.g. a file's path): one live job holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobLock {
    pub device_id: String,
    pub resource: String,
}

/// What one runner write records, in one transaction: a step's start or outcome, an event,
/// progress.
#[derive(Clone, Debug, Default)]
pub struct JobWrite<'a> {
    pub step: Option<StepWrite<'a>>,
    pub event: Option<EventWrite<'a>>,
    pub progress: Option<(i64, i64)>,
}

#[derive(Clone, Copy, Debug)]
pub enum StepWrite<'a> {
    Started {
        seq: i64,
        name: &'a str,
    },
    Finished {
        seq: i64,
        state: StepState,
        error: Option<&'a str>,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct EventWrite<'a> {
    pub seq: i64,
    pub kind: &'a str,
    pub data: &'a str,
}

/// How a job ended, as its owner records it.
#[derive(Clone, Debug)]
pub struct JobEnd<'a> {
    pub state: JobState,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    pub error_kind: Option<&'a str>,
    pub event: EventWrite<'a>,
}

/// Appends an event inside an open transaction (either backend's).
macro_rules! insert_event {
    ($tx:ident, $id:expr, $event:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO job_events (job_id, seq, at_ms, kind, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($id)
        .bind($event.seq)
        .bind($now)
        .bind($event.kind)
        .bind($event.data)
        .execute(&mut *$tx)
        .await?
    };
}

/// `jobs.state IN (...)` for the live states, as SQL.
const LIVE: &str = "('queued', 'running')";

impl Store {
    /// Records a new job (queued, owned by `owner` until `lease_expires_ms`), the devices it
    /// works on and the locks it takes, atomically. A lock another live job holds refuses
    /// the job with a conflict that names the holder.
    pub async fn insert_job(
        &self,
        job: &JobRow,
        devices: &[String],
        locks: &[JobLock],
    ) -> StoreResult<()> {
        let inserted: Result<(), sqlx::Error> = on_pool!(&self.writer, |p| async {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO jobs (id, operation, state, surface, requested_by, \
                 requested_by_name, requested_scope, requested_owner, request_id, arguments, \
                 owner, lease_expires_ms, attempts, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $13)",
            )
            .bind(&job.id)
            .bind(&job.operation)
            .bind(job.state.as_str())
            .bind(&job.surface)
            .bind(&job.requested_by)
            .bind(&job.requested_by_name)
            .bind(&job.requested_scope)
            .bind(&job.requested_owner)
            .bind(&job.request_id)
            .bind(&job.arguments)
            .bind(&job.owner)
            .bind(job.lease_expires_ms)
            .bind(job.created_at_ms)
            .execute(&mut *tx)
            .await?;
            for device in devices {
                sqlx::query("INSERT INTO job_devices (job_id, device_id) VALUES ($1, $2)")
                    .bind(&job.id)
                    .bind(device)
                    .execute(&mut *tx)
                    .await?;
            }
            for lock in locks {
                sqlx::query(
                    "INSERT INTO job_locks (device_id, resource, job_id) VALUES ($1, $2, $3)",
                )
                .bind(&lock.device_id)
                .bind(&lock.resource)
                .bind(&job.id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
        .await);
        match inserted {
            Ok(()) => Ok(()),
            // SQLite reports a duplicate primary key as its own code (1555).
            Err(sqlx::Error::Database(e))
                if (e.is_unique_violation() || e.code().as_deref() == Some("1555"))
                    && !locks.is_empty() =>
            {
                Err(StoreError::Conflict(self.lock_holder(locks).await?))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Names the live job holding one of `locks`, for a refusal.
    async fn lock_holder(&self, locks: &[JobLock]) -> StoreResult<String> {
        for lock in locks {
            let holder: Option<(String, String, String)> = read!(self, |p| sqlx::query_as(
                "SELECT j.id, j.operation, j.requested_by_name FROM job_locks l \
                 JOIN jobs j ON j.id = l.job_id WHERE l.device_id = $1 AND l.resource = $2"
            )
            .bind(&lock.device_id)
            .bind(&lock.resource)
            .fetch_optional(p)
            .await)?;
            if let Some((job, operation, by)) = holder {
                return Ok(format!(
                    "device {} is busy: {} is being changed by job {job} ({operation}, \
                     requested by {by}); wait for it to finish or cancel it",
                    lock.device_id, lock.resource
                ));
            }
        }
        Ok("another job holds a lock this job needs; retry".into())
    }

    /// Starts (or, after a takeover, restarts) a job its owner holds: `running`, one more
    /// attempt. `None` when the job is no longer this owner's to run.
    pub async fn start_job(
        &self,
        id: &str,
        owner: &str,
        lease_expires_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Option<JobRow>> {
        let started = on_pool!(&self.writer, |p| sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
             started_at_ms = COALESCE(started_at_ms, $4), lease_expires_ms = $3, \
             updated_at_ms = $4 WHERE id = $1 AND owner = $2 AND state IN {LIVE}"
        ))
        .bind(id)
        .bind(owner)
        .bind(lease_expires_ms)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|done| done.rows_affected() > 0))?;
        if started {
            self.job(id).await
        } else {
            Ok(None)
        }
    }

    /// Live jobs whose lease ran out before `now_ms` (every live job when `all`: a lone
    /// controller restarting owns whatever it finds).
    pub async fn orphaned_jobs(&self, now_ms: i64, all: bool) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = read!(self, |p| sqlx::query_as(&format!(
            "SELECT id FROM jobs WHERE state IN {LIVE} \
             AND ($2 OR lease_expires_ms IS NULL OR lease_expires_ms < $1) \
             ORDER BY created_at_ms"
        ))
        .bind(now_ms)
        .bind(all)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Takes over an orphaned job: true when this owner now holds it (no one else renewed
    /// or took it meanwhile).
    pub async fn take_over_job(
        &self,
        id: &str,
        owner: &str,
        lease_expires_ms: i64,
        now_ms: i64,
        all: bool,
    ) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(&format!(
            "UPDATE jobs SET owner = $2, lease_expires_ms = $3, updated_at_ms = $4 \
             WHERE id = $1 AND state IN {LIVE} \
             AND ($5 OR lease_expires_ms IS NULL OR lease_expires_ms < $4)"
        ))
        .bind(id)
        .bind(owner)
        .bind(lease_expires_ms)
        .bind(now_ms)
        .bind(all)
        .execute(p)
        .await
        .map(|done| done.rows_affected() > 0))?)
    }

    /// Renews the lease of every live job `owner` holds; returns them with whether a cancel
    /// was requested.
    pub async fn renew_job_leases(
        &self,
        owner: &str,
        lease_expires_ms: i64,
    ) -> StoreResult<Vec<(String, bool)>> {
        on_pool!(&self.writer, |p| sqlx::query(&format!(
            "UPDATE jobs SET lease_expires_ms = $2 WHERE owner = $1 AND state IN {LIVE}"
        ))
        .bind(owner)
        .bind(lease_expires_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        let rows: Vec<(String, Option<i64>)> = read!(self, |p| sqlx::query_as(&format!(
            "SELECT id, cancel_requested_at_ms FROM jobs WHERE owner = $1 AND state IN {LIVE}"
        ))
        .bind(owner)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(id, cancel)| (id, cancel.is_some()))
            .collect())
    }

    /// Records a step, an event and progress for a job `owner` holds, in one transaction;
    /// false (nothing written) when the job is no longer its to write.
    pub async fn write_job(
        &self,
        id: &str,
        owner: &str,
        write: &JobWrite<'_>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let (done, total) = write.progress.unzip();
        let written: Result<bool, sqlx::Error> = on_pool!(&self.writer, |p| async {
            let mut tx = p.begin().await?;
            let owned = sqlx::query(&format!(
                "UPDATE jobs SET progress_done = COALESCE($3, progress_done), \
                 progress_total = COALESCE($4, progress_total), updated_at_ms = $5 \
                 WHERE id = $1 AND owner = $2 AND state IN {LIVE}"
            ))
            .bind(id)
            .bind(owner)
            .bind(done)
            .bind(total)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if !owned {
                return Ok::<_, sqlx::Error>(false);
            }
            match write.step {
                Some(StepWrite::Started { seq, name }) => {
                    sqlx::query(
                        "INSERT INTO job_steps (job_id, seq, name, state, started_at_ms) \
                         VALUES ($1, $2, $3, 'running', $4)",
                    )
                    .bind(id)
                    .bind(seq)
                    .bind(name)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                Some(StepWrite::Finished { seq, state, error }) => {
                    sqlx::query(
                        "UPDATE job_steps SET state = $3, error = $4, finished_at_ms = $5 \
                         WHERE job_id = $1 AND seq = $2",
                    )
                    .bind(id)
                    .bind(seq)
                    .bind(state.as_str())
                    .bind(error)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {}
            }
            if let Some(event) = write.event {
                insert_event!(tx, id, event, now_ms);
            }
            tx.commit().await?;
            Ok(true)
        }
        .await);
        Ok(written?)
    }

    /// Ends a job `owner` holds and releases its locks; false when it was not its to end.
    pub async fn finish_job(
        &self,
        id: &str,
        owner: &str,
        end: &JobEnd<'_>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let written: Result<bool, sqlx::Error> = on_pool!(&self.writer, |p| async {
            let mut tx = p.begin().await?;
            let owned = sqlx::query(&format!(
                "UPDATE jobs SET state = $3, result = $4, error = $5, error_kind = $6, \
                 finished_at_ms = $7, updated_at_ms = $7, lease_expires_ms = NULL \
                 WHERE id = $1 AND owner = $2 AND state IN {LIVE}"
            ))
            .bind(id)
            .bind(owner)
            .bind(end.state.as_str())
            .bind(end.result)
            .bind(end.error)
            .bind(end.error_kind)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if !owned {
                return Ok::<_, sqlx::Error>(false);
            }
            // Steps a crash left running end with the job.
            sqlx::query(
                "UPDATE job_steps SET state = 'failed', finished_at_ms = $2, \
                 error = COALESCE(error, 'interrupted') WHERE job_id = $1 AND state = 'running'",
            )
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            insert_event!(tx, id, end.event, now_ms);
            sqlx::query("DELETE FROM job_locks WHERE job_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await);
        Ok(written?)
    }

    /// Marks a live job for cancellation (its owner acts on it); false when it is final.
    pub async fn request_job_cancel(&self, id: &str, now_ms: i64) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(&format!(
            "UPDATE jobs SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, $2), \
             updated_at_ms = $2 WHERE id = $1 AND state IN {LIVE}"
        ))
        .bind(id)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|done| done.rows_affected() > 0))?)
    }

    pub async fn job(&self, id: &str) -> StoreResult<Option<JobRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, JobRow>(
            "SELECT * FROM jobs WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await)?)
    }

    pub async fn job_steps(&self, id: &str) -> StoreResult<Vec<JobStepRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, JobStepRow>(
            "SELECT seq, name, state, error, started_at_ms, finished_at_ms FROM job_steps \
             WHERE job_id = $1 ORDER BY seq"
        )
        .bind(id)
        .fetch_all(p)
        .await)?)
    }

    /// Events after `after_seq`, oldest first.
    pub async fn job_events(
        &self,
        id: &str,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<JobEventRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, JobEventRow>(
            "SELECT seq, at_ms, kind, data FROM job_events WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        )
        .bind(id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(p)
        .await)?)
    }

    /// The next step and event numbers of a job (after a takeover, it goes on from there).
    pub async fn job_sequences(&self, id: &str) -> StoreResult<(i64, i64)> {
        let (steps, events): (Option<i64>, Option<i64>) = read!(self, |p| sqlx::query_as(
            "SELECT (SELECT MAX(seq) FROM job_steps WHERE job_id = $1), \
             (SELECT MAX(seq) FROM job_events WHERE job_id = $1)"
        )
        .bind(id)
        .fetch_one(p)
        .await)?;
        Ok((steps.unwrap_or(0) + 1, events.unwrap_or(0) + 1))
    }

    /// Newest first, optionally only those working on `device_id` or in `state`.
    pub async fn jobs(
        &self,
        device_id: Option<&str>,
        state: Option<JobState>,
        limit: i64,
    ) -> StoreResult<Vec<JobRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, JobRow>(
            "SELECT * FROM jobs j WHERE ($1 IS NULL OR EXISTS \
             (SELECT 1 FROM job_devices d WHERE d.job_id = j.id AND d.device_id = $1)) \
             AND ($2 IS NULL OR j.state = $2) \
             ORDER BY created_at_ms DESC, id DESC LIMIT $3"
        )
        .bind(device_id)
        .bind(state.map(JobState::as_str))
        .bind(limit)
        .fetch_all(p)
        .await)?)
    }
}
