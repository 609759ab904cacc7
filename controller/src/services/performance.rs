//! Operation performance: the summary at `GET /api/v1/performance/summary` and the periodic
//! flush of in-memory timings to `operation_metrics`.

use std::time::Duration;

use super::{now_ms, Services};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::performance::{summarize, PerformanceSummary};
use crate::recovery::retry_write;

/// Longest window a summary may cover.
const MAX_WINDOW: Duration = Duration::from_secs(90 * 86_400);

impl Services {
    /// Count, error rate and latency percentiles per operation over `window` (default 1h):
    /// the flushed windows plus what is not flushed yet.
    pub async fn performance_summary(
        &self,
        ctx: &Ctx,
        window: Option<&str>,
    ) -> Result<PerformanceSummary> {
        ctx.principal.require(Scope::Read)?;
        let text = window.unwrap_or("1h");
        let length = humantime::parse_duration(text)
            .map_err(|e| Error::invalid(format!("window {text:?}: {e}")))?;
        if length.is_zero() || length > MAX_WINDOW {
            return Err(Error::invalid("window must be between 1s and 90d"));
        }
        let since = now_ms() - length.as_millis() as i64;
        let stored = self.store.operation_metrics_since(since).await?;
        let current = self.timings.snapshot();
        Ok(summarize(
            text.to_string(),
            stored.into_iter().chain(current),
        ))
    }

    /// Writes what was recorded since the last flush; on failure it is put back, so the next
    /// flush carries it.
    pub async fn flush_operation_metrics(&self, window_start_ms: i64) -> i64 {
        let taken = self.timings.take();
        let now = now_ms();
        if taken.is_empty() {
            return now;
        }
        let stored = retry_write("flush operation metrics", || {
            self.store
                .insert_operation_metrics(window_start_ms, now, &taken)
        })
        .await;
        match stored {
            Ok(()) => now,
            Err(error) => {
                tracing::warn!(%error, "operation metrics not flushed; kept for the next flush");
                self.timings.restore(taken);
                window_start_ms
            }
        }
    }
}
