//! Background upkeep: rollups (5 min, 1 h) of freshly ingested ranges, and retention.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Retention;
use crate::services::now_ms;
use crate::store::{RetentionCutoffs, Store};

const ROLLUP_BATCH: i64 = 1_000;
/// Retention deletes scan by time; once an hour is plenty.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

fn cutoffs(now: i64, retention: Retention) -> RetentionCutoffs {
    RetentionCutoffs {
        raw_before_ms: now - retention.raw.as_millis() as i64,
        rollup_5m_before_ms: now - retention.rollup_5m.as_millis() as i64,
        rollup_1h_before_ms: now - retention.rollup_1h.as_millis() as i64,
    }
}

/// One pass: roll up everything pending, then apply retention if `with_retention`.
pub async fn run_once(
    store: &Store,
    retention: Retention,
    with_retention: bool,
) -> Result<(), crate::store::StoreError> {
    let cutoffs = cutoffs(now_ms(), retention);
    while store
        .run_rollups(cutoffs.raw_before_ms, ROLLUP_BATCH)
        .await? as i64
        == ROLLUP_BATCH
    {}
    if with_retention {
        let (raw, five, hour) = store.apply_retention(cutoffs).await?;
        // Check history is kept as long as the 5-minute rollups.
        store.expire_checks(cutoffs.rollup_5m_before_ms).await?;
        // So are operation timings.
        store
            .delete_operation_metrics_before(cutoffs.rollup_5m_before_ms)
            .await?;
        // Delivered notifications too (dead letters stay until someone sends them again).
        store
            .expire_notifications(cutoffs.rollup_5m_before_ms)
            .await?;
        if raw + five + hour > 0 {
            tracing::info!(
                raw,
                rollup_5m = five,
                rollup_1h = hour,
                "retention deleted expired data"
            );
        }
    }
    Ok(())
}

pub async fn run(
    store: std::sync::Arc<Store>,
    retention: Retention,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut last_retention: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let with_retention = last_retention.is_none_or(|at| at.elapsed() >= RETENTION_EVERY);
        if with_retention {
            last_retention = Some(tokio::time::Instant::now());
        }
        if let Err(error) = run_once(&store, retention, with_retention).await {
            tracing::warn!(%error, "maintenance pass failed; will retry");
        }
    }
}
