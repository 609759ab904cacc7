//! The recovery policy: which failures are transient, and how often and how long to retry
//! them. A failed attempt is retried with exponential backoff and jitter (50 ms doubling to
//! 1 s, at most 3 retries), then the error goes to the caller as usual.
//!
//! Database: a deadlock, a serialization failure, a busy SQLite database or a pool timeout
//! never executed the statement (or rolled it back), so any operation may retry them. A reset
//! connection may have executed it, so only reads retry those: every query on the store's read
//! pool goes through [`retry_read`]; writes opt in with [`retry_write`].
//! Agent commands are covered in [`crate::fleet::AgentDriver`].

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::store::{StoreError, StoreResult};

/// How a database failure relates to the statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transience {
    /// Did not run (or was rolled back): safe to retry anything.
    NotExecuted,
    /// The connection failed; the statement may or may not have run.
    Unknown,
    /// Retrying would fail the same way.
    Permanent,
}

pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(3)
        .with_jitter()
}

pub fn transience(error: &StoreError) -> Transience {
    match error {
        StoreError::Database(error) => transience_of(error),
        _ => Transience::Permanent,
    }
}

pub fn transience_of(error: &sqlx::Error) -> Transience {
    match error {
        sqlx::Error::PoolTimedOut => Transience::NotExecuted,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => Transience::Unknown,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // PostgreSQL: serialization failure, deadlock (the transaction was rolled back).
            Some("40001" | "40P01") => Transience::NotExecuted,
            // PostgreSQL: connection exceptions, administrator shutdown, crash shutdown.
            Some(code) if code.starts_with("08") || code.starts_with("57P") => Transience::Unknown,
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            Some(code) => match code.parse::<i32>() {
                Ok(n) if matches!(n & 0xff, 5 | 6) => Transience::NotExecuted,
                _ => Transience::Permanent,
            },
            None => Transience::Permanent,
        },
        _ => Transience::Permanent,
    }
}

/// Runs a read (idempotent by nature), retrying every transient failure under the policy.
/// The store's `read!` wraps each of its queries on the read pool in this.
pub async fn retry_read<T, F, Fut>(query: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    query
        .retry(backoff())
        .when(|error| transience_of(error) != Transience::Permanent)
        .notify(|error, delay| {
            tracing::warn!(%error, ?delay, "transient database failure on a read; retrying");
        })
        .await
}

/// Runs a write, retrying only the failures that guarantee it did not run: a retry after a
/// reset connection could write the same row twice.
pub async fn retry_write<T, F, Fut>(what: &str, write: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    write
        .retry(backoff())
        .when(|error| transience(error) == Transience::NotExecuted)
        .notify(|error, delay| {
            tracing::warn!(operation = what, %error, ?delay, "transient database failure; retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn reset() -> sqlx::Error {
        sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())
    }

    #[tokio::test]
    async fn writes_retry_only_what_never_ran() {
        let attempts = AtomicU32::new(0);
        let value = retry_write("test", || async {
            if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(StoreError::Database(sqlx::Error::PoolTimedOut))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((value, attempts.load(Ordering::SeqCst)), (7, 3));

        // A reset connection may have run the write: not retried.
        let attempts = AtomicU32::new(0);
        let written = retry_write("write", || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(StoreError::Database(reset()))
        })
        .await;
        assert!(written.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);

        let attempts = AtomicU32::new(0);
        let permanent = retry_write("bad", || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(StoreError::Conflict("no".into()))
        })
        .await;
        assert!(permanent.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn reads_retry_every_transient_failure() {
        let attempts = AtomicU32::new(0);
        let read = retry_read(|| async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0 => Err(reset()),
                1 => Err(sqlx::Error::PoolTimedOut),
                _ => Ok("rows"),
            }
        })
        .await;
        assert_eq!(read.unwrap(), "rows");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);

        let attempts = AtomicU32::new(0);
        let read = retry_read(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(reset())
        })
        .await;
        assert!(read.is_err());
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1 + 3,
            "first try + 3 retries"
        );

        let attempts = AtomicU32::new(0);
        let read = retry_read(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(sqlx::Error::RowNotFound)
        })
        .await;
        assert!(read.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "permanent: no retry");
    }
}
